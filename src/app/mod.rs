//! The running relay: [`Relay::start`] wires every part together, [`Relay::reload`] applies a
//! new configuration (SIGHUP), [`Relay::shutdown`] stops everything in order.
//!
//! One file per job: `start` (start-up and the wiring of settings), `accounts` (preparing and
//! starting an account's delivery, the same at start and on reload), `reload`, `shutdown`
//! (cancellation and task tracking), `state_lock` (one relay per state directory), `purge`
//! (old `failed/` entries), `signals` ([`wait_for_signal`]).
//!
//! Invariants: the spool directory is locked for the life of the relay (two relays on one
//! spool would deliver twice); every listener is bound before [`Relay::start`] returns; a
//! reload is all or nothing: the new configuration was fully validated before it is applied,
//! and one that changes what cannot change at run time (listener addresses or TLS modes, the
//! state directory, the admin address) is refused whole while the old one keeps running;
//! an account's new workers start only after its old ones have finished, so Exchange never
//! sees more sessions per mailbox than configured.

mod accounts;
mod purge;
mod reload;
mod shutdown;
mod signals;
mod start;
mod state_lock;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::delivery::worker::AccountDelivery;
use crate::metrics::Metrics;
use crate::ops::admin::AdminAccess;
use crate::policy::PasswordChecker;
use crate::queue::Queue;
use crate::smtp::server::conn::InboundContext;
use crate::smtp::server::listener::ConnectionLimits;
use crate::smtp::server::throttle::AuthThrottle;
use crate::spool::Spool;
use crate::vocab::tls_mode::TlsMode;
pub use signals::wait_for_signal;

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
    /// The address in the configuration (a reload finds the listener by it).
    configured: SocketAddr,
    tls: TlsMode,
    /// The address actually bound (port 0 in the configuration becomes a real port).
    bound: SocketAddr,
    /// What its new sessions start with; swapped on reload.
    context: Arc<ArcSwap<InboundContext>>,
}

/// One generation of an account's running delivery pool.
struct AccountRuntime {
    delivery: Arc<AccountDelivery>,
    /// A child of the relay's token: cancels this generation only.
    cancel: CancellationToken,
    /// This generation's workers, its credential-expiry watch and its hand-over task.
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
    /// One token provider per app of the running configuration (replaced by a reload, which
    /// takes over the unchanged ones); only touched with `accounts` locked.
    token_providers: std::sync::Mutex<crate::oauth::registry::TokenProviders>,
    state_dir: PathBuf,
    admin_configured: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    /// The admin endpoint's Host/Origin/token rules, swapped on reload.
    admin_access: Option<Arc<ArcSwap<AdminAccess>>>,
    /// `[admin] max_connections` and `request_timeout` as started (a change needs a restart).
    admin_limits: AdminLimits,
    /// The state directory's lock, held until the relay is dropped.
    _lock: std::fs::File,
}

/// The admin endpoint's limits as started: changing them needs a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdminLimits {
    /// `[admin] max_connections`.
    max_connections: usize,
    /// `[admin] request_timeout`.
    request_timeout: Duration,
}

impl AdminLimits {
    fn of(config: &Config) -> AdminLimits {
        AdminLimits {
            max_connections: config.admin.max_connections,
            request_timeout: config.admin.request_timeout,
        }
    }
}

impl Relay {
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

    /// Token requests sent so far by the token provider `account` uses (shared by every
    /// account of the same app).
    pub async fn token_requests(&self, account: &str) -> u64 {
        self.accounts
            .lock()
            .await
            .get(account)
            .map_or(0, |a| a.delivery.tokens.requests_sent())
    }

    /// How many token providers (distinct apps) the running configuration uses.
    pub fn token_provider_count(&self) -> usize {
        self.token_providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
