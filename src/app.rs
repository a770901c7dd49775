//! Wiring: opens the spool, schedules what it recovered, starts one delivery pool per account
//! and one accept loop per listener, serves the admin endpoint, and owns the cancellation token
//! and task tracker that shut everything down in order. Also applies a new configuration at
//! run time (SIGHUP): users, networks, accounts, certificates and limits.
//!
//! Invariants: the spool directory is locked for the life of the relay (two relays on one
//! spool would deliver twice); every listener is bound before [`Relay::start`] returns; a
//! reload is all or nothing: the new configuration was fully validated before it is applied,
//! and one that changes what cannot change at run time (listener addresses or TLS modes, the
//! state directory, the admin address) is refused whole while the old one keeps running;
//! an account's new workers start only after its old ones have finished, so Exchange never
//! sees more sessions per mailbox than configured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AccountSettings, Config, ListenerSettings};
use crate::delivery::worker::{AccountDelivery, DeliveryShared, spawn_workers};
use crate::metrics::Metrics;
use crate::oauth::token::TokenProvider;
use crate::ops::admin::{AdminAccess, AdminState};
use crate::policy::PasswordChecker;
use crate::queue::Queue;
use crate::smtp::server::conn::InboundContext;
use crate::smtp::server::listener::{ConnectionLimits, run_listener};
use crate::smtp::server::session::SessionSettings;
use crate::smtp::server::throttle::{AuthThrottle, ThrottleSettings};
use crate::spool::Spool;
use crate::transport::Transport;
use crate::vocab::tls_mode::TlsMode;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the spool in {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: crate::spool::SpoolError,
    },
    #[error("another relay is already using the spool in {0} (its lock file is held)")]
    Locked(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("account {account}: {message}")]
    Account { account: String, message: String },
}

/// One running listener.
struct ListenerRuntime {
    configured: SocketAddr,
    tls: TlsMode,
    bound: SocketAddr,
    context: Arc<ArcSwap<InboundContext>>,
}

/// One account's running delivery pool.
struct AccountRuntime {
    settings: AccountSettings,
    delivery: Arc<AccountDelivery>,
    cancel: CancellationToken,
    workers: TaskTracker,
}

/// What is shared by every listener and account and survives reloads.
struct Shared {
    spool: Arc<Spool>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    auth_throttle: Arc<AuthThrottle>,
    password_checker: Arc<PasswordChecker>,
    connection_limits: Arc<ConnectionLimits>,
    deliveries: Arc<ArcSwap<Vec<Arc<AccountDelivery>>>>,
}

/// A running relay.
pub struct Relay {
    cancel: CancellationToken,
    tracker: TaskTracker,
    shared: Shared,
    listeners: Vec<ListenerRuntime>,
    accounts: tokio::sync::Mutex<HashMap<String, AccountRuntime>>,
    state_dir: PathBuf,
    admin_configured: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    /// The admin endpoint's Host/Origin/token rules, swapped on reload.
    admin_access: Option<Arc<ArcSwap<AdminAccess>>>,
    /// `[admin] max_connections` and `request_timeout` as started (a change needs a restart).
    admin_limits: (usize, Duration),
    _lock: std::fs::File,
}

/// The AUTH throttle's settings from `[limits]`.
fn throttle_settings(limits: &crate::config::Limits) -> ThrottleSettings {
    ThrottleSettings {
        failure_window: limits.auth_failure_window,
        penalty_max: limits.auth_penalty_max,
        parallel_per_address: limits.auth_parallel_per_address,
        parallel_per_user: limits.auth_parallel_per_user,
        lockout_after: limits.auth_lockout_after,
    }
}

/// The admin endpoint's Host/Origin/token rules for the endpoint bound at `bound`.
fn admin_rules(bound: SocketAddr, config: &Config) -> AdminAccess {
    AdminAccess::new(
        bound,
        config.admin.allowed_hosts.clone(),
        config.admin.token.as_ref(),
    )
}

fn inbound_context(
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
        for account in &config.accounts {
            let runtime =
                start_account(account, &shared, &delivery_shared, &config, &cancel).await?;
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
            state_dir,
            admin_configured: config.admin.address,
            admin,
            admin_access,
            admin_limits: (config.admin.max_connections, config.admin.request_timeout),
            _lock: lock,
        })
    }

    /// Apply a new, already validated configuration: users, networks, accounts, listener
    /// certificates and options, limits, queue settings. Sessions in progress keep the old
    /// settings; new sessions and the next deliveries use the new ones.
    ///
    /// # Errors
    /// A description of what cannot change without a restart; nothing was applied.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        self.reloadable(&config)?;
        // Prepare every account first, so a failure leaves everything as it was.
        let delivery_shared = delivery_shared(&config, &self.shared);
        let mut accounts = self.accounts.lock().await;
        let mut prepared = HashMap::new();
        for account in &config.accounts {
            let previous = accounts.get(&account.name);
            let tokens = match previous {
                Some(old) if same_identity(&old.settings, account) => {
                    Arc::clone(&old.delivery.tokens)
                }
                _ => TokenProvider::new(&account.client_app(), Arc::clone(&self.shared.metrics))
                    .map_err(|e| format!("account {}: {e}", account.name))?,
            };
            let upstream = Transport::new(account, &config.relay.hostname)
                .map_err(|e| format!("account {}: {e}", account.name))?;
            prepared.insert(account.name.clone(), (tokens, upstream));
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        if let (Some(access), Some(bound)) = (&self.admin_access, self.admin) {
            access.store(Arc::new(admin_rules(bound, &config)));
        }
        // Inbound: new sessions get the new users, networks, certificates and limits.
        self.shared
            .auth_throttle
            .reconfigure(throttle_settings(&config.limits));
        self.shared.connection_limits.resize(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        );
        self.shared
            .spool
            .reserve()
            .set_setting(config.limits.min_free_space);
        for runtime in &self.listeners {
            if let Some(listener) = config
                .listeners
                .iter()
                .find(|l| l.address == runtime.configured)
            {
                runtime
                    .context
                    .store(Arc::new(inbound_context(&config, listener, &self.shared)));
            }
        }
        // Outbound: every account's workers are replaced once the old ones have finished.
        let mut next = HashMap::new();
        for account in &config.accounts {
            let Some((tokens, upstream)) = prepared.remove(&account.name) else {
                continue;
            };
            let old = accounts.remove(&account.name);
            let (queue, new_account) = self.shared.queue.add_account(&account.name);
            let queue_for_retry = Arc::clone(&queue);
            let mut delivery = AccountDelivery::new(
                Arc::new(account.clone()),
                queue,
                tokens,
                upstream,
                Arc::clone(&delivery_shared),
            )
            .await;
            if let Some(old) = &old {
                // Keep counting against the same 24-hour window.
                delivery.budget = Arc::clone(&old.delivery.budget);
                delivery.budget.set_limit(account.max_recipients_per_day);
            }
            let delivery = Arc::new(delivery);
            let runtime = AccountRuntime {
                settings: account.clone(),
                delivery: Arc::clone(&delivery),
                cancel: self.cancel.child_token(),
                workers: TaskTracker::new(),
            };
            let (cancel, workers) = (runtime.cancel.clone(), runtime.workers.clone());
            let old_workers = old.map(|old| {
                old.cancel.cancel();
                old.workers.close();
                old.workers
            });
            let credential = account.credential.clone();
            let name = account.name.clone();
            // The hand-over runs in the new generation's own tracker: a reload that comes
            // before it is done waits for it (and so for every older generation) too. Never
            // two generations' sessions at once: Exchange refuses a 4th per mailbox.
            let generation = workers.clone();
            let retry_backlog = !new_account;
            workers.spawn(async move {
                if let Some(old_workers) = old_workers {
                    old_workers.wait().await;
                }
                if cancel.is_cancelled() {
                    return;
                }
                // The reload may be the fix the account was waiting for: try its backlog now.
                // Only now: an attempt of the old generation still running during the reload
                // settles before, and would otherwise defer its message (and pause the
                // account) again after the retry.
                if retry_backlog {
                    let retried = queue_for_retry.retry_now();
                    if retried > 0 {
                        tracing::info!(account = %name, retried, "queued messages are retried now with the new configuration");
                    }
                }
                spawn_workers(delivery, &cancel, &generation);
                generation.spawn(crate::oauth::token::watch_certificate_expiry(
                    name,
                    credential,
                    cancel.clone(),
                ));
            });
            if new_account {
                self.schedule_orphans(&account.name).await;
            }
            next.insert(account.name.clone(), runtime);
        }
        for (name, removed) in accounts.drain() {
            removed.cancel.cancel();
            removed.workers.close();
            tracing::warn!(account = %name, queued = self.shared.queue.account(&name).map_or(0, |q| q.len()), "account removed from the configuration; its queued messages stay in the spool");
        }
        *accounts = next;
        self.shared.deliveries.store(Arc::new(
            accounts.values().map(|a| Arc::clone(&a.delivery)).collect(),
        ));
        let (users, networks) = config.policy.counts();
        tracing::info!(
            accounts = config.accounts.len(),
            users,
            networks,
            "configuration reloaded"
        );
        Ok(())
    }

    /// Refuse a configuration that changes what needs a restart.
    fn reloadable(&self, config: &Config) -> Result<(), String> {
        let mut problems = Vec::new();
        if config.relay.state_dir != self.state_dir {
            problems.push("relay.state_dir changed".to_string());
        }
        if config.admin.address != self.admin_configured {
            problems.push("admin.address changed".to_string());
        }
        if (config.admin.max_connections, config.admin.request_timeout) != self.admin_limits {
            problems.push("admin.max_connections or admin.request_timeout changed".to_string());
        }
        let old: Vec<(SocketAddr, TlsMode)> = self
            .listeners
            .iter()
            .map(|l| (l.configured, l.tls))
            .collect();
        let new: Vec<(SocketAddr, TlsMode)> = config
            .listeners
            .iter()
            .map(|l| (l.address, l.tls))
            .collect();
        if old.len() != new.len() || old.iter().any(|l| !new.contains(l)) {
            problems.push("the listeners' addresses or TLS modes changed".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}; restart the relay to apply that",
                problems.join(", ")
            ))
        }
    }

    /// Schedule spool entries of an account that was just added back.
    async fn schedule_orphans(&self, account: &str) {
        if let Ok(entries) = self.shared.spool.list_queued().await {
            let mut count = 0;
            for entry in entries.iter().filter(|e| e.account == account) {
                if self.shared.queue.find(&entry.id).is_none() && self.shared.queue.submit(entry) {
                    count += 1;
                }
            }
            if count > 0 {
                tracing::info!(%account, count, "queued messages of the account are scheduled again");
            }
        }
    }

    /// The bound address of each listener, in config order.
    pub fn listener_addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.bound).collect()
    }

    /// The bound address of the admin endpoint, if enabled.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Messages waiting or being delivered.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }

    /// Token requests sent for `account` so far.
    pub async fn token_requests(&self, account: &str) -> u64 {
        self.accounts
            .lock()
            .await
            .get(account)
            .map_or(0, |a| a.delivery.tokens.requests_sent())
    }

    /// A token that fires when shutdown begins.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop accepting, let sessions and deliveries finish (up to `grace`), then return.
    pub async fn shutdown(self, grace: Duration) {
        tracing::info!("shutting down");
        self.cancel.cancel();
        self.tracker.close();
        let accounts = std::mem::take(&mut *self.accounts.lock().await);
        let drained = async {
            self.tracker.wait().await;
            for account in accounts.values() {
                account.workers.close();
                account.workers.wait().await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                "some sessions or deliveries did not finish in time; their messages stay queued"
            );
        }
        tracing::info!(queued = self.shared.queue.depth(), "stopped");
    }
}

fn delivery_shared(config: &Config, shared: &Shared) -> Arc<DeliveryShared> {
    Arc::new(DeliveryShared {
        spool: Arc::clone(&shared.spool),
        settings: config.queue.clone(),
        hostname: config.relay.hostname.clone(),
        metrics: Arc::clone(&shared.metrics),
    })
}

/// Same token endpoint, app, credential and scope: the cached token stays valid.
fn same_identity(old: &AccountSettings, new: &AccountSettings) -> bool {
    let credential = |a: &AccountSettings| match &a.credential {
        crate::oauth::app::ClientCredential::Secret(secret) => format!(
            "secret:{}",
            crate::vocab::hex::lower(
                ring::digest::digest(&ring::digest::SHA256, secret.expose().as_bytes()).as_ref()
            )
        ),
        crate::oauth::app::ClientCredential::Certificate {
            certificate,
            algorithm,
        } => {
            format!(
                "certificate:{}:{}",
                certificate.sha256_thumbprint_hex(),
                algorithm.jws_name()
            )
        }
    };
    old.token_endpoint() == new.token_endpoint()
        && old.client_id == new.client_id
        && old.scope == new.scope
        && old.renew_before == new.renew_before
        && credential(old) == credential(new)
        && old.extra_roots == new.extra_roots
}

async fn start_account(
    account: &AccountSettings,
    shared: &Shared,
    delivery_shared: &Arc<DeliveryShared>,
    config: &Config,
    cancel: &CancellationToken,
) -> Result<AccountRuntime, StartError> {
    let failed = |message: String| StartError::Account {
        account: account.name.clone(),
        message,
    };
    let tokens =
        TokenProvider::new(&account.client_app(), Arc::clone(&shared.metrics)).map_err(failed)?;
    let upstream = Transport::new(account, &config.relay.hostname).map_err(failed)?;
    let (queue, _) = shared.queue.add_account(&account.name);
    let delivery = Arc::new(
        AccountDelivery::new(
            Arc::new(account.clone()),
            queue,
            tokens,
            upstream,
            Arc::clone(delivery_shared),
        )
        .await,
    );
    let runtime = AccountRuntime {
        settings: account.clone(),
        delivery: Arc::clone(&delivery),
        cancel: cancel.child_token(),
        workers: TaskTracker::new(),
    };
    spawn_workers(delivery, &runtime.cancel, &runtime.workers);
    runtime
        .workers
        .spawn(crate::oauth::token::watch_certificate_expiry(
            account.name.clone(),
            account.credential.clone(),
            runtime.cancel.clone(),
        ));
    Ok(runtime)
}

/// Delete `failed/` entries older than the retention, at start and then hourly.
async fn purge_failed(spool: Arc<Spool>, retention: Duration, cancel: CancellationToken) {
    loop {
        let cutoff = crate::spool::unix_now().saturating_sub(retention.as_secs());
        match spool.purge_failed(cutoff).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(purged, retention = %humantime::format_duration(retention), "old failed messages deleted")
            }
            Err(error) => tracing::warn!(%error, "cannot purge old failed messages"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Create the state directory if needed (0700) and lock it through `relay.lock` (0600).
/// Blocking.
fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let spool_error = |source: std::io::Error| StartError::Spool {
        path: state_dir.display().to_string(),
        source: crate::spool::SpoolError::Io {
            operation: "lock the state directory",
            source,
        },
    };
    crate::spool::fsio::create_dir_if_missing(state_dir).map_err(spool_error)?;
    let file =
        crate::spool::fsio::open_private(&state_dir.join("relay.lock")).map_err(spool_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::Locked(state_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(spool_error(e)),
    }
}

/// Wait for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
