//! Shared bookkeeping of the fake Graph: run-time settings, queued faults, the per
//! (app, mailbox) concurrency and request-rate accounting, drafts and upload sessions,
//! delivered messages, the request log, and the gate that holds requests for tests.
//!
//! Invariants: one `std::sync::Mutex` guards all mutable state and is never held across an
//! `.await`; a [`ConcurrencySlot`] is taken for every request whose (app, mailbox) is known
//! and gives its place back when dropped, so in-flight counts stay exact even when a
//! connection dies; the observed maximum per mailbox counts the request that was refused
//! with 429 too (that is what "never a 5th concurrent request" must be checked against);
//! the request log and the per-key request times are bounded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::TestkitError;
use super::directory::Directory;
use super::graph::{
    DeliveredMessage, GraphAttachment, GraphFault, GraphOperation, GraphOptions,
    GraphRequestRecord, GraphStats,
};
use super::jwt::TokenVerifier;
use super::random::random_b64url;

/// How many request records the log keeps.
const LOG_CAPACITY: usize = 20_000;

/// What a draft was created from.
#[derive(Clone, Debug)]
pub(crate) enum DraftContent {
    /// `POST /messages` with base64 MIME.
    Mime(Vec<u8>),
    /// `POST /messages` with a JSON message resource.
    Json(serde_json::Value),
}

/// A message in the Drafts folder of a mailbox.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    pub mailbox: String,
    pub content: DraftContent,
    pub attachments: Vec<GraphAttachment>,
    /// Recipient collections set with `PATCH` (MIME drafts; JSON drafts are edited in place).
    pub overrides: super::graph_mime::RecipientOverrides,
}

/// What `createUploadSession` was told about the attachment.
#[derive(Clone, Debug)]
pub(crate) struct AttachmentItem {
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub is_inline: bool,
    pub content_id: Option<String>,
}

/// An open upload session; its bytes go to a temporary file, never to memory.
pub(crate) struct UploadSession {
    pub authtoken: String,
    pub mailbox: String,
    pub client_id: String,
    pub message_id: String,
    pub item: AttachmentItem,
    pub file: Arc<tempfile::NamedTempFile>,
    pub received: u64,
    pub expires_at: SystemTime,
    /// The running SHA-256; `None` while a chunk is being written.
    pub digest: Option<ring::digest::Context>,
}

impl std::fmt::Debug for UploadSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSession")
            .field("mailbox", &self.mailbox)
            .field("message_id", &self.message_id)
            .field("size", &self.item.size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct QueuedFault {
    fault: GraphFault,
    only: Option<GraphOperation>,
    remaining: u32,
}

/// Mutable state behind the mutex.
#[derive(Debug)]
pub(crate) struct GraphRuntime {
    pub max_concurrent: usize,
    pub requests_per_window: usize,
    pub request_window: Duration,
    pub size_limits: BTreeMap<String, usize>,
    faults: VecDeque<QueuedFault>,
    in_flight: BTreeMap<(String, String), usize>,
    in_flight_by_mailbox: BTreeMap<String, usize>,
    max_concurrency: BTreeMap<String, usize>,
    request_times: BTreeMap<(String, String), VecDeque<Instant>>,
    pub drafts: BTreeMap<String, Draft>,
    pub uploads: BTreeMap<String, UploadSession>,
    pub delivered: Vec<DeliveredMessage>,
    pub log: VecDeque<GraphRequestRecord>,
    pub stats: GraphStats,
}

/// Everything the handle and the request handlers share.
#[derive(Debug)]
pub(crate) struct GraphShared {
    pub directory: Directory,
    pub verifier: TokenVerifier,
    pub options: GraphOptions,
    pub base_url: String,
    runtime: Mutex<GraphRuntime>,
    delivered_tx: watch::Sender<u64>,
    hold_tx: watch::Sender<bool>,
    sequence: AtomicU64,
}

impl GraphShared {
    pub fn new(directory: Directory, options: GraphOptions, base_url: String) -> GraphShared {
        GraphShared {
            verifier: directory.token_verifier(),
            directory,
            runtime: Mutex::new(GraphRuntime {
                max_concurrent: options.max_concurrent_per_mailbox,
                requests_per_window: options.requests_per_window,
                request_window: options.request_window,
                size_limits: BTreeMap::new(),
                faults: VecDeque::new(),
                in_flight: BTreeMap::new(),
                in_flight_by_mailbox: BTreeMap::new(),
                max_concurrency: BTreeMap::new(),
                request_times: BTreeMap::new(),
                drafts: BTreeMap::new(),
                uploads: BTreeMap::new(),
                delivered: Vec::new(),
                log: VecDeque::new(),
                stats: GraphStats::default(),
            }),
            options,
            base_url,
            delivered_tx: watch::Sender::new(0),
            hold_tx: watch::Sender::new(false),
            sequence: AtomicU64::new(1),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, GraphRuntime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An Exchange-style item id (`AAMkAD…=`), unique within the emulator.
    pub fn new_item_id(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("AAMkAD{}{n:06}-AAA=", random_b64url(30))
    }

    /// The size limit of `mailbox` (the emulator's default unless set).
    pub fn size_limit(&self, mailbox: &str) -> usize {
        self.lock()
            .size_limits
            .get(mailbox)
            .copied()
            .unwrap_or(self.options.default_max_message_size)
    }

    // ----- faults ----------------------------------------------------------------------------

    pub fn queue_fault(&self, count: u32, fault: GraphFault, only: Option<GraphOperation>) {
        if count > 0 {
            self.lock().faults.push_back(QueuedFault {
                fault,
                only,
                remaining: count,
            });
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Takes the first queued fault that applies to `operation`.
    pub fn take_fault(&self, operation: GraphOperation) -> Option<GraphFault> {
        let mut runtime = self.lock();
        let index = runtime
            .faults
            .iter()
            .position(|q| q.only.is_none_or(|only| only == operation))?;
        let queued = runtime.faults.get_mut(index)?;
        let fault = queued.fault;
        queued.remaining = queued.remaining.saturating_sub(1);
        if queued.remaining == 0 {
            runtime.faults.remove(index);
        }
        runtime.stats.faults += 1;
        Some(fault)
    }

    // ----- concurrency and rate ---------------------------------------------------------------

    /// Counts a request of (`client_id`, `mailbox`) as in flight; the flag says whether it is
    /// over the concurrency limit (the caller then answers 429 and drops the slot).
    pub fn enter(self: &Arc<Self>, client_id: &str, mailbox: &str) -> (ConcurrencySlot, bool) {
        let key = (client_id.to_ascii_lowercase(), mailbox.to_ascii_lowercase());
        let mut runtime = self.lock();
        let limit = runtime.max_concurrent;
        let for_key = runtime.in_flight.entry(key.clone()).or_default();
        *for_key += 1;
        let over = *for_key > limit;
        let for_mailbox = runtime
            .in_flight_by_mailbox
            .entry(key.1.clone())
            .or_default();
        *for_mailbox += 1;
        let now = *for_mailbox;
        let max = runtime.max_concurrency.entry(key.1.clone()).or_default();
        *max = (*max).max(now);
        drop(runtime);
        (
            ConcurrencySlot {
                shared: Arc::clone(self),
                key,
            },
            over,
        )
    }

    /// Records a request of (`client_id`, `mailbox`) against the sliding-window limit, or
    /// returns how long until the window has room.
    pub fn check_rate(&self, client_id: &str, mailbox: &str) -> Result<(), Duration> {
        let key = (client_id.to_ascii_lowercase(), mailbox.to_ascii_lowercase());
        let now = Instant::now();
        let mut runtime = self.lock();
        let (limit, window) = (runtime.requests_per_window, runtime.request_window);
        let times = runtime.request_times.entry(key).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= limit {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }

    pub fn max_concurrency(&self, mailbox: &str) -> usize {
        self.lock()
            .max_concurrency
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    pub fn in_flight(&self, mailbox: &str) -> usize {
        self.lock()
            .in_flight_by_mailbox
            .get(&mailbox.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    // ----- holding requests ------------------------------------------------------------------

    pub fn set_hold(&self, hold: bool) {
        self.hold_tx.send_replace(hold);
    }

    /// Waits while requests are held (returns at once otherwise).
    pub async fn wait_released(&self) {
        let mut rx = self.hold_tx.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    // ----- observations ----------------------------------------------------------------------

    pub fn record(&self, record: GraphRequestRecord) {
        let mut runtime = self.lock();
        runtime.stats.requests += 1;
        match record.status {
            429 => runtime.stats.throttled_429 += 1,
            0 => runtime.stats.dropped += 1,
            _ => {}
        }
        if let Some(code) = &record.error_code {
            *runtime
                .stats
                .errors_by_code
                .entry(code.clone())
                .or_default() += 1;
        }
        if runtime.log.len() >= LOG_CAPACITY {
            runtime.log.pop_front();
        }
        runtime.log.push_back(record);
    }

    pub fn deliver(&self, message: DeliveredMessage) {
        let count = {
            let mut runtime = self.lock();
            runtime.stats.delivered += 1;
            runtime.delivered.push(message);
            runtime.stats.delivered
        };
        self.delivered_tx.send_replace(count);
    }

    /// Waits until at least `count` messages were delivered.
    pub async fn wait_delivered(&self, count: u64, timeout: Duration) -> Result<(), TestkitError> {
        let mut rx = self.delivered_tx.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(TestkitError::Server("fake Graph stopped".to_owned())),
            Err(_) => Err(TestkitError::Timeout {
                what: format!("{count} messages delivered through Graph"),
                waited: timeout,
            }),
        }
    }
}

/// One request's place in the concurrency count; released on drop.
#[derive(Debug)]
pub(crate) struct ConcurrencySlot {
    shared: Arc<GraphShared>,
    key: (String, String),
}

impl Drop for ConcurrencySlot {
    fn drop(&mut self) {
        let mut runtime = self.shared.lock();
        if let Some(count) = runtime.in_flight.get_mut(&self.key) {
            *count = count.saturating_sub(1);
        }
        if let Some(count) = runtime.in_flight_by_mailbox.get_mut(&self.key.1) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(options: GraphOptions) -> Arc<GraphShared> {
        let directory = Directory::contoso_with_app("app", "s", "relay@contoso.com").unwrap();
        Arc::new(GraphShared::new(directory, options, "https://x".to_owned()))
    }

    #[test]
    fn concurrency_is_counted_per_app_and_mailbox_and_released_on_drop() {
        let shared = shared(GraphOptions::default());
        let slots: Vec<_> = (0..4).map(|_| shared.enter("app", "m@x.com")).collect();
        assert!(slots.iter().all(|(_, over)| !over));
        let (fifth, over) = shared.enter("APP", "M@x.com");
        assert!(over);
        assert_eq!(shared.in_flight("m@x.com"), 5);
        let (_other_app, over) = shared.enter("other", "m@x.com");
        assert!(!over, "another app has its own budget");
        drop(fifth);
        drop(slots);
        assert_eq!(shared.in_flight("m@x.com"), 1);
        assert_eq!(shared.max_concurrency("m@x.com"), 6);
        let (_again, over) = shared.enter("app", "m@x.com");
        assert!(!over);
    }

    #[test]
    fn sliding_window_refuses_over_the_limit() {
        let shared = shared(GraphOptions {
            requests_per_window: 3,
            request_window: Duration::from_secs(60),
            ..GraphOptions::default()
        });
        for _ in 0..3 {
            shared.check_rate("app", "m@x.com").unwrap();
        }
        let wait = shared.check_rate("app", "m@x.com").unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        shared.check_rate("app", "n@x.com").unwrap();
    }

    #[test]
    fn faults_are_taken_in_order_and_by_operation() {
        let shared = shared(GraphOptions::default());
        shared.queue_fault(
            1,
            GraphFault::GatewayTimeout,
            Some(GraphOperation::SendDraft),
        );
        shared.queue_fault(
            2,
            GraphFault::Throttle {
                retry_after: Duration::from_secs(1),
            },
            None,
        );
        assert_eq!(
            shared.take_fault(GraphOperation::SendDraft),
            Some(GraphFault::GatewayTimeout)
        );
        assert!(matches!(
            shared.take_fault(GraphOperation::SendDraft),
            Some(GraphFault::Throttle { .. })
        ));
        assert!(shared.take_fault(GraphOperation::SendMail).is_some());
        assert_eq!(shared.take_fault(GraphOperation::SendMail), None);
        assert_eq!(shared.lock().stats.faults, 3);
    }

    #[test]
    fn item_ids_look_like_exchange_ids() {
        let shared = shared(GraphOptions::default());
        let (a, b) = (shared.new_item_id(), shared.new_item_id());
        assert_ne!(a, b);
        assert!(a.starts_with("AAMkAD") && a.ends_with('='));
    }
}
