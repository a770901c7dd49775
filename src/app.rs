//! Wiring: opens the spool, schedules what it recovered, starts one delivery pool per account
//! and one accept loop per listener, and owns the cancellation token and task tracker that
//! shut everything down in order.
//!
//! Invariants: the spool directory is locked for the life of the relay (two relays on one
//! spool would deliver twice); every listener is bound before [`Relay::start`] returns, so a
//! caller (a test, `demo`) can connect immediately; shutdown stops accepting first, then waits
//! for sessions and workers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::worker::{AccountDelivery, DeliveryShared, spawn_workers};
use crate::oauth::token::TokenProvider;
use crate::ops::admin::AdminState;
use crate::ops::metrics::Metrics;
use crate::queue::Queue;
use crate::smtp::server::conn::InboundContext;
use crate::smtp::server::listener::{ConnectionLimits, run_listener};
use crate::smtp::server::session::SessionSettings;
use crate::smtp::server::throttle::{AuthThrottle, password_check_concurrency};
use crate::spool::Spool;
use crate::upstream::Upstream;

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

/// A running relay.
pub struct Relay {
    cancel: CancellationToken,
    tracker: TaskTracker,
    listeners: Vec<SocketAddr>,
    queue: Arc<Queue>,
    tokens: HashMap<String, Arc<TokenProvider>>,
    admin: Option<SocketAddr>,
    _lock: std::fs::File,
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
        let lock = lock_state_dir(&state_dir)?;
        let (spool, recovery) = Spool::open(&state_dir).map_err(|source| StartError::Spool {
            path: state_dir.display().to_string(),
            source,
        })?;
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
        let metrics = Arc::new(Metrics::new());
        let mut tokens = HashMap::new();
        let mut deliveries = Vec::new();
        let shared = Arc::new(DeliveryShared {
            spool: Arc::clone(&spool),
            settings: config.queue.clone(),
            hostname: config.relay.hostname.clone(),
            metrics: Arc::clone(&metrics),
        });
        for account in &config.accounts {
            let failed = |message: String| StartError::Account {
                account: account.name.clone(),
                message,
            };
            let provider = TokenProvider::new(account, Arc::clone(&metrics)).map_err(failed)?;
            let upstream = Upstream::new(account, &config.relay.hostname).map_err(failed)?;
            let Some(account_queue) = queue.account(&account.name) else {
                continue;
            };
            let delivery = Arc::new(AccountDelivery::new(
                Arc::new(account.clone()),
                Arc::clone(account_queue),
                Arc::clone(&provider),
                upstream,
                Arc::clone(&shared),
            ));
            deliveries.push(Arc::clone(&delivery));
            spawn_workers(delivery, &cancel, &tracker);
            tracker.spawn(crate::oauth::token::watch_certificate_expiry(
                account.name.clone(),
                account.credential.clone(),
                cancel.clone(),
            ));
            tokens.insert(account.name.clone(), provider);
        }

        tracker.spawn(purge_failed(
            Arc::clone(&spool),
            config.queue.failed_retention,
            cancel.clone(),
        ));

        let auth_throttle = Arc::new(AuthThrottle::new(
            config.limits.max_auth_failures_per_address,
            config.limits.auth_failure_window,
        ));
        let password_checks = Arc::new(tokio::sync::Semaphore::new(password_check_concurrency()));
        let limits = ConnectionLimits::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        );
        let mut addresses = Vec::new();
        for listener in &config.listeners {
            let socket = TcpListener::bind(listener.address)
                .await
                .map_err(|source| StartError::Bind {
                    address: listener.address,
                    source,
                })?;
            let local = socket.local_addr().map_err(|source| StartError::Bind {
                address: listener.address,
                source,
            })?;
            let settings = Arc::new(SessionSettings {
                hostname: config.relay.hostname.clone(),
                tls_mode: listener.tls,
                allow_auth_without_tls: listener.allow_auth_without_tls,
                max_message_size: config.limits.max_message_size,
                max_recipients: config.limits.max_recipients,
                max_errors: config.limits.max_errors,
                max_auth_failures: config.limits.max_auth_failures,
            });
            let ctx = Arc::new(InboundContext {
                settings,
                tls_config: listener.tls_config.clone(),
                policy: Arc::clone(&config.policy),
                limits: config.limits.clone(),
                spool: Arc::clone(&spool),
                queue: Arc::clone(&queue),
                acknowledge_delivered: listener.acknowledge_delivered,
                auth_throttle: Arc::clone(&auth_throttle),
                password_checks: Arc::clone(&password_checks),
                metrics: Arc::clone(&metrics),
            });
            tracing::info!(address = %local, tls = ?listener.tls, "listening");
            tracker.spawn(run_listener(
                socket,
                ctx,
                Arc::clone(&limits),
                cancel.clone(),
                tracker.clone(),
            ));
            addresses.push(local);
        }
        let admin = match config.admin.address {
            Some(address) => {
                let socket = TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind { address, source })?;
                let local = socket
                    .local_addr()
                    .map_err(|source| StartError::Bind { address, source })?;
                let state = Arc::new(AdminState {
                    metrics: Arc::clone(&metrics),
                    spool: Arc::clone(&spool),
                    queue: Arc::clone(&queue),
                    deliveries,
                    failing_threshold: config.admin.ready_failing_after,
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
            listeners: addresses,
            queue,
            tokens,
            admin,
            _lock: lock,
        })
    }

    /// The bound address of each listener, in config order.
    pub fn listener_addresses(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// The bound address of the admin endpoint, if enabled.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Messages waiting or being delivered.
    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    /// Token requests sent for `account` so far.
    pub fn token_requests(&self, account: &str) -> u64 {
        self.tokens.get(account).map_or(0, |t| t.requests_sent())
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
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "some sessions or deliveries did not finish in time; their messages stay queued"
            );
        }
        tracing::info!(queued = self.queue.depth(), "stopped");
    }
}

fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let spool_error = |source: std::io::Error| StartError::Spool {
        path: state_dir.display().to_string(),
        source: crate::spool::SpoolError::Io {
            operation: "lock the state directory",
            source,
        },
    };
    std::fs::create_dir_all(state_dir).map_err(spool_error)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join("relay.lock"))
        .map_err(spool_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::Locked(state_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(spool_error(e)),
    }
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
