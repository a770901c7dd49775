//! Start-up and wiring: opens the spool (under the state directory's lock), schedules what it
//! recovered, starts one delivery pool per account and one accept loop per listener, and
//! serves the admin endpoint. The helpers that turn the configuration into each part's
//! settings live here too; a reload builds the same settings with them.
//!
//! Invariants: the spool is locked before it is opened; the disk reserve is sampled once
//! before any listener opens; every listener is bound before [`Relay::start`] returns, and a
//! listener that cannot bind fails the start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::accounts::{Occasion, prepare_account, start_account};
use super::purge::purge_failed;
use super::state_lock::lock_state_dir;
use super::{AdminLimits, ListenerRuntime, Relay, Shared, StartError};
use crate::config::{Config, ListenerSettings};
use crate::delivery::worker::DeliveryShared;
use crate::metrics::Metrics;
use crate::ops::admin::{AdminAccess, AdminState};
use crate::policy::PasswordChecker;
use crate::queue::Queue;
use crate::smtp::server::conn::InboundContext;
use crate::smtp::server::listener::{ConnectionLimits, run_listener};
use crate::smtp::server::session::SessionSettings;
use crate::smtp::server::throttle::{AuthThrottle, ThrottleSettings};
use crate::spool::Spool;

impl Relay {
    /// Start everything described by `config`.
    ///
    /// # Errors
    /// [`StartError`] when the spool, a listener or an account cannot be set up.
    pub async fn start(config: Config) -> Result<Relay, StartError> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let state_dir = config.relay.state_dir.clone();
        // Locking and the recovery scan read the disk: on the blocking pool, not the runtime.
        let dir = state_dir.clone();
        let (lock, spool, recovery) = tokio::task::spawn_blocking(move || {
            let lock = lock_state_dir(&dir)?;
            let (spool, recovery) = Spool::open(&dir).map_err(|source| StartError::Spool {
                path: dir.display().to_string(),
                source,
            })?;
            Ok::<_, StartError>((lock, spool, recovery))
        })
        .await
        .map_err(|e| StartError::Spool {
            path: state_dir.display().to_string(),
            source: crate::spool::SpoolError::Io {
                operation: "open the spool",
                source: std::io::Error::other(e),
            },
        })??;
        let spool = Arc::new(spool);
        let queue = Arc::new(Queue::new(config.accounts.iter().map(|a| a.name.clone())));
        let mut orphans: HashMap<String, usize> = HashMap::new();
        for envelope in &recovery.entries {
            if !queue.submit(envelope) {
                *orphans.entry(envelope.account.clone()).or_default() += 1;
            }
        }
        for (account, count) in &orphans {
            tracing::error!(%account, count, "queued messages belong to an account that is not configured; they stay in the spool until it is added back");
        }
        tracing::info!(
            recovered = recovery.entries.len(),
            quarantined = recovery.quarantined.len(),
            spool = %state_dir.display(),
            "spool opened"
        );

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Sampled once before the listeners open, then every second.
        spool.reserve().set_setting(config.limits.min_free_space);
        spool.reserve().refresh().await;
        tracker.spawn(crate::spool::reserve::watch(
            Arc::clone(spool.reserve()),
            cancel.clone(),
        ));
        let metrics = Arc::new(Metrics::new());
        let shared = Shared {
            spool: Arc::clone(&spool),
            queue: Arc::clone(&queue),
            metrics: Arc::clone(&metrics),
            auth_throttle: Arc::new(AuthThrottle::new(throttle_settings(&config.limits))),
            password_checker: Arc::new(PasswordChecker::start(
                crate::policy::checker::default_workers(),
            )),
            connection_limits: ConnectionLimits::counted(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
                metrics
                    .connections_evicted
                    .get_or_create(&Metrics::reason(Metrics::EVICTED_IDLE_UNDER_PRESSURE))
                    .clone(),
            ),
            deliveries: Arc::new(ArcSwap::from_pointee(Vec::new())),
        };
        let delivery_shared = delivery_shared(&config, &shared);
        let mut accounts = HashMap::new();
        let mut token_providers = crate::oauth::registry::TokenProviders::default();
        for account in &config.accounts {
            let prepared = prepare_account(
                account,
                &mut token_providers,
                &crate::oauth::registry::TokenProviders::default(),
                &shared.metrics,
                &config.relay.hostname,
            )?;
            let runtime = start_account(
                account,
                prepared,
                &shared,
                &delivery_shared,
                &cancel,
                None,
                Occasion::Start,
            )
            .await;
            accounts.insert(account.name.clone(), runtime);
        }
        shared.deliveries.store(Arc::new(
            accounts.values().map(|a| Arc::clone(&a.delivery)).collect(),
        ));
        tracker.spawn(purge_failed(
            Arc::clone(&spool),
            config.queue.failed_retention,
            cancel.clone(),
        ));

        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let bind_error = |source| StartError::Bind {
                address: listener.address,
                source,
            };
            let socket = TcpListener::bind(listener.address)
                .await
                .map_err(bind_error)?;
            let bound = socket.local_addr().map_err(bind_error)?;
            let context = Arc::new(ArcSwap::from_pointee(inbound_context(
                &config, listener, &shared,
            )));
            tracing::info!(address = %bound, tls = ?listener.tls, "listening");
            tracker.spawn(run_listener(
                socket,
                Arc::clone(&context),
                Arc::clone(&shared.connection_limits),
                cancel.clone(),
                tracker.clone(),
            ));
            listeners.push(ListenerRuntime {
                configured: listener.address,
                tls: listener.tls,
                bound,
                context,
            });
        }
        let mut admin_access = None;
        let admin = match config.admin.address {
            Some(address) => {
                let bind_error = |source| StartError::Bind { address, source };
                let socket = TcpListener::bind(address).await.map_err(bind_error)?;
                let local = socket.local_addr().map_err(bind_error)?;
                let access = Arc::new(ArcSwap::from_pointee(admin_rules(local, &config)));
                admin_access = Some(Arc::clone(&access));
                let admin_access = access;
                let state = Arc::new(AdminState {
                    metrics: Arc::clone(&shared.metrics),
                    spool: Arc::clone(&spool),
                    queue: Arc::clone(&queue),
                    deliveries: Arc::clone(&shared.deliveries),
                    failing_threshold: config.admin.ready_failing_after,
                    access: Arc::clone(&admin_access),
                    max_connections: config.admin.max_connections,
                    request_timeout: config.admin.request_timeout,
                });
                tracing::info!(address = %local, "admin endpoint listening (/healthz /readyz /metrics /queue)");
                tracker.spawn(crate::ops::admin::serve(
                    socket,
                    state,
                    cancel.clone(),
                    tracker.clone(),
                ));
                Some(local)
            }
            None => None,
        };
        if config.relay.instances > 1 {
            for account in &config.accounts {
                tracing::info!(
                    account = %account.name,
                    instances = config.relay.instances,
                    "instance share: {}",
                    account.instance_share().describe_share_of(account.mailbox_budget)
                );
            }
        }
        let (users, networks) = config.policy.counts();
        tracing::info!(
            accounts = config.accounts.len(),
            users,
            networks,
            queued = queue.depth(),
            "smtp-oauth-relay started"
        );
        Ok(Relay {
            cancel,
            tracker,
            shared,
            listeners,
            accounts: tokio::sync::Mutex::new(accounts),
            token_providers: std::sync::Mutex::new(token_providers),
            state_dir,
            admin_configured: config.admin.address,
            admin,
            admin_access,
            admin_limits: AdminLimits::of(&config),
            _lock: lock,
        })
    }
}

/// The AUTH throttle's settings from `[limits]`.
pub(super) fn throttle_settings(limits: &crate::config::Limits) -> ThrottleSettings {
    ThrottleSettings {
        failure_window: limits.auth_failure_window,
        penalty_max: limits.auth_penalty_max,
        parallel_per_address: limits.auth_parallel_per_address,
        parallel_per_user: limits.auth_parallel_per_user,
        lockout_after: limits.auth_lockout_after,
    }
}

/// The admin endpoint's Host/Origin/token rules for the endpoint bound at `bound`.
pub(super) fn admin_rules(bound: SocketAddr, config: &Config) -> AdminAccess {
    AdminAccess::new(
        bound,
        config.admin.allowed_hosts.clone(),
        config.admin.token.as_ref(),
    )
}

/// What a listener's sessions work with, from `config` and the relay's shared parts.
pub(super) fn inbound_context(
    config: &Config,
    listener: &ListenerSettings,
    shared: &Shared,
) -> InboundContext {
    InboundContext {
        settings: Arc::new(SessionSettings {
            hostname: config.relay.hostname.clone(),
            tls_mode: listener.tls,
            allow_auth_without_tls: listener.allow_auth_without_tls,
            max_message_size: config.limits.max_message_size,
            max_recipients: config.limits.max_recipients,
            max_errors: config.limits.max_errors,
            max_auth_failures: config.limits.max_auth_failures,
            disk_reserve: Arc::clone(shared.spool.reserve()),
        }),
        tls_config: listener.tls_config.clone(),
        policy: Arc::clone(&config.policy),
        limits: config.limits.clone(),
        spool: Arc::clone(&shared.spool),
        queue: Arc::clone(&shared.queue),
        acknowledge_delivered: listener.acknowledge_delivered,
        auth_throttle: Arc::clone(&shared.auth_throttle),
        password_checker: Arc::clone(&shared.password_checker),
        metrics: Arc::clone(&shared.metrics),
    }
}

/// What every account's workers share, from `config`.
pub(super) fn delivery_shared(config: &Config, shared: &Shared) -> Arc<DeliveryShared> {
    Arc::new(DeliveryShared {
        spool: Arc::clone(&shared.spool),
        settings: config.queue.clone(),
        hostname: config.relay.hostname.clone(),
        metrics: Arc::clone(&shared.metrics),
    })
}
