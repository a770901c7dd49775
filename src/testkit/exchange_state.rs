//! Shared bookkeeping of the fake Exchange server: run-time settings, armed faults, the
//! per-mailbox registry of open authenticated sessions (for the 3-session limit), accepted
//! messages and counters, the verified-token cache of fast mode, and the watch channels that
//! connect the handle with the listener (refuse / listening) and with waiters (accepted count).
//!
//! Invariants: one `std::sync::Mutex` guards all mutable state and is never held across an
//! `.await`; a [`SessionSlot`] removes its session from the registry when dropped, so the
//! concurrency count is exact even when a connection dies mid-transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::TestkitError;
use super::directory::Directory;
use super::exchange::{
    AcceptedMessage, AuthAttempt, ExchangeFault, ExchangeOptions, ExchangeStats,
};
use super::jwt::{Claims, TokenVerifier};

const AUTH_ATTEMPTS_CAPACITY: usize = 1024;
const TOKEN_CACHE_CAPACITY: usize = 4096;

/// Where a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStage {
    Listener,
    Connect,
    Auth,
    EndOfData,
}

impl ExchangeFault {
    pub(crate) fn stage(self) -> FaultStage {
        match self {
            ExchangeFault::RefuseConnections => FaultStage::Listener,
            ExchangeFault::Banner421 => FaultStage::Connect,
            ExchangeFault::AuthDisabled => FaultStage::Auth,
            ExchangeFault::TempFailAfterData
            | ExchangeFault::DropAfterDot
            | ExchangeFault::MailboxLogonFailure
            | ExchangeFault::StallAfterDot(_) => FaultStage::EndOfData,
        }
    }
}

#[derive(Debug)]
struct ArmedFault {
    fault: ExchangeFault,
    /// `None`: until cleared.
    remaining: Option<u32>,
}

/// State of the listening socket, reported by the listener task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerState {
    Listening,
    Refusing,
    Failed(String),
}

/// Mutable state behind the mutex.
#[derive(Debug)]
pub struct Runtime {
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub recipient_rejections: BTreeMap<String, String>,
    faults: Vec<ArmedFault>,
    pub stats: ExchangeStats,
    pub messages: Vec<AcceptedMessage>,
    /// Open authenticated sessions per mailbox, by authentication sequence number.
    pub sessions: BTreeMap<String, BTreeSet<u64>>,
    pub acceptances: BTreeMap<String, Vec<SystemTime>>,
}

/// Everything the handle, the listener and the sessions share.
#[derive(Debug)]
pub struct ExchangeShared {
    pub options: ExchangeOptions,
    pub directory: Directory,
    pub verifier: TokenVerifier,
    runtime: Mutex<Runtime>,
    token_cache: Mutex<HashMap<String, Claims>>,
    accepted_tx: watch::Sender<u64>,
    refuse_tx: watch::Sender<bool>,
    listener_tx: watch::Sender<ListenerState>,
    sequence: AtomicU64,
}

impl ExchangeShared {
    pub fn new(
        directory: Directory,
        verifier: TokenVerifier,
        options: ExchangeOptions,
    ) -> ExchangeShared {
        ExchangeShared {
            runtime: Mutex::new(Runtime {
                max_message_size: options.max_message_size,
                max_recipients: options.max_recipients,
                recipient_rejections: BTreeMap::new(),
                faults: Vec::new(),
                stats: ExchangeStats::default(),
                messages: Vec::new(),
                sessions: BTreeMap::new(),
                acceptances: BTreeMap::new(),
            }),
            options,
            directory,
            verifier,
            token_cache: Mutex::new(HashMap::new()),
            accepted_tx: watch::Sender::new(0),
            refuse_tx: watch::Sender::new(false),
            listener_tx: watch::Sender::new(ListenerState::Listening),
            sequence: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock.
    pub fn with_runtime<T>(&self, f: impl FnOnce(&mut Runtime) -> T) -> T {
        f(&mut self.lock())
    }

    /// A process-unique sequence number (session order, message ids).
    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    // ----- faults -----------------------------------------------------------------------------

    pub fn arm_fault(&self, fault: ExchangeFault, remaining: Option<u32>) {
        let mut runtime = self.lock();
        if remaining.is_none() {
            runtime
                .faults
                .retain(|armed| armed.remaining.is_some() || armed.fault != fault);
            runtime.faults.push(ArmedFault { fault, remaining });
        } else {
            // Counted faults go before persistent ones so they fire first.
            let position = runtime
                .faults
                .iter()
                .position(|armed| armed.remaining.is_none())
                .unwrap_or(runtime.faults.len());
            runtime
                .faults
                .insert(position, ArmedFault { fault, remaining });
        }
    }

    /// Removes every fault; returns whether connections were being refused.
    pub fn clear_faults(&self) -> bool {
        let mut runtime = self.lock();
        let refusing = runtime
            .faults
            .iter()
            .any(|armed| armed.fault == ExchangeFault::RefuseConnections);
        runtime.faults.clear();
        refusing
    }

    /// The fault to apply at `stage` now, consuming one count of a counted fault.
    pub fn take_fault(&self, stage: FaultStage) -> Option<ExchangeFault> {
        let mut runtime = self.lock();
        let index = runtime
            .faults
            .iter()
            .position(|armed| armed.fault.stage() == stage)?;
        let armed = runtime.faults.get_mut(index)?;
        let fault = armed.fault;
        if let Some(remaining) = armed.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                runtime.faults.remove(index);
            }
        }
        Some(fault)
    }

    // ----- listener coordination --------------------------------------------------------------

    pub fn set_refusing(&self, refusing: bool) {
        self.refuse_tx.send_replace(refusing);
    }

    pub fn refuse_receiver(&self) -> watch::Receiver<bool> {
        self.refuse_tx.subscribe()
    }

    pub fn report_listener(&self, state: ListenerState) {
        self.listener_tx.send_replace(state);
    }

    /// Waits until the listener reports listening (`true`) or refusing (`false`).
    pub async fn wait_listener(&self, listening: bool) -> Result<(), TestkitError> {
        let mut receiver = self.listener_tx.subscribe();
        let wait = receiver.wait_for(|state| match state {
            ListenerState::Listening => listening,
            ListenerState::Refusing => !listening,
            ListenerState::Failed(_) => true,
        });
        let waited = Duration::from_secs(5);
        let state = match tokio::time::timeout(waited, wait).await {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) => return Err(TestkitError::Server("listener task ended".to_owned())),
            Err(_) => {
                return Err(TestkitError::Timeout {
                    what: format!("the SMTP listener to be listening={listening}"),
                    waited,
                });
            }
        };
        match state {
            ListenerState::Failed(reason) => Err(TestkitError::Server(reason)),
            ListenerState::Listening | ListenerState::Refusing => Ok(()),
        }
    }

    // ----- sessions and records ---------------------------------------------------------------

    /// Registers an authenticated session of `mailbox`.
    pub fn open_slot(self: &Arc<Self>, mailbox: &str) -> SessionSlot {
        let mailbox = mailbox.to_ascii_lowercase();
        let sequence = self.next_sequence();
        let mut runtime = self.lock();
        let open = runtime.sessions.entry(mailbox.clone()).or_default();
        open.insert(sequence);
        let now_open = open.len();
        let max = runtime
            .stats
            .max_concurrent_sessions
            .entry(mailbox.clone())
            .or_default();
        *max = (*max).max(now_open);
        SessionSlot {
            shared: Arc::clone(self),
            mailbox,
            sequence,
        }
    }

    pub fn record_connection(&self) {
        self.lock().stats.connections += 1;
    }

    pub fn record_reply(&self, code: u16) {
        *self.lock().stats.replies_by_code.entry(code).or_default() += 1;
    }

    pub fn record_auth(&self, attempt: AuthAttempt) {
        let mut runtime = self.lock();
        let stats = &mut runtime.stats;
        if attempt.result.is_ok() {
            stats.auth_successes += 1;
        } else {
            stats.auth_failures += 1;
        }
        if stats.auth_attempts.len() >= AUTH_ATTEMPTS_CAPACITY {
            stats.auth_attempts.remove(0);
        }
        stats.auth_attempts.push(attempt);
    }

    pub fn record_throttled(&self) {
        self.lock().stats.throttled_432 += 1;
    }

    /// Stores an accepted message and wakes waiters.
    pub fn store_message(&self, message: AcceptedMessage) {
        let count = {
            let mut runtime = self.lock();
            runtime.stats.messages_accepted += 1;
            runtime.stats.bytes_accepted = runtime
                .stats
                .bytes_accepted
                .saturating_add(u64::try_from(message.size).unwrap_or(u64::MAX));
            runtime
                .acceptances
                .entry(message.auth_mailbox.to_ascii_lowercase())
                .or_default()
                .push(message.accepted_at);
            runtime.messages.push(message);
            runtime.stats.messages_accepted
        };
        self.accepted_tx.send_replace(count);
    }

    /// Waits until at least `count` messages were accepted.
    pub async fn wait_accepted(&self, count: u64, timeout: Duration) -> Result<(), TestkitError> {
        let mut receiver = self.accepted_tx.subscribe();
        match tokio::time::timeout(timeout, receiver.wait_for(|n| *n >= count)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(TestkitError::Timeout {
                what: format!(
                    "{count} accepted messages (have {})",
                    *self.accepted_tx.borrow()
                ),
                waited: timeout,
            }),
        }
    }

    // ----- fast-mode token cache --------------------------------------------------------------

    pub fn cached_claims(&self, token: &str) -> Option<Claims> {
        if !self.options.fast_mode {
            return None;
        }
        self.token_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    pub fn cache_claims(&self, token: &str, claims: &Claims) {
        if !self.options.fast_mode {
            return;
        }
        let mut cache = self
            .token_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= TOKEN_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(token.to_owned(), claims.clone());
    }
}

/// An open authenticated session of one mailbox; leaves the registry when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    shared: Arc<ExchangeShared>,
    mailbox: String,
    sequence: u64,
}

impl SessionSlot {
    /// How many sessions of the same mailbox authenticated earlier and are still open.
    pub fn earlier_open_sessions(&self) -> usize {
        self.shared.with_runtime(|runtime| {
            runtime
                .sessions
                .get(&self.mailbox)
                .map_or(0, |open| open.range(..self.sequence).count())
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.shared.with_runtime(|runtime| {
            if let Some(open) = runtime.sessions.get_mut(&self.mailbox) {
                open.remove(&self.sequence);
                if open.is_empty() {
                    runtime.sessions.remove(&self.mailbox);
                }
            }
        });
    }
}
