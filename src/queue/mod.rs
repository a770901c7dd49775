//! The scheduler: which queued message each account's delivery workers take next, and when.
//!
//! It holds only ids and times; the spool holds the messages. Each account has its own
//! [`AccountQueue`]: entries ordered by their next attempt time, a set of entries being
//! delivered, and a pause used when the whole account is failing (token endpoint down,
//! Exchange unreachable, a configuration fault) so the workers wait instead of failing every
//! message in turn.
//!
//! Invariants: an entry is either waiting or in flight, never both, and never handed to two
//! workers; waiting is cancel-safe (dropping [`AccountQueue::next`] loses nothing); after a
//! pause, one message (the probe) is tried alone, so an account that is still broken costs
//! one attempt per retry step, not one per worker.

pub mod retry;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::vocab::envelope::{Envelope, QueueId};

/// What a worker gets from [`AccountQueue::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Deliver this entry now.
    Due(QueueId),
    /// Nothing became due within the idle time.
    Idle,
    /// The relay is shutting down.
    Shutdown,
}

#[derive(Debug, Default)]
struct State {
    waiting: BTreeSet<(u64, QueueId)>,
    scheduled: HashMap<QueueId, u64>,
    in_flight: HashSet<QueueId>,
    paused_until: u64,
    /// Set by a pause, cleared once the account is known to work again: when the pause ends,
    /// one worker tries one message (the probe) while the others wait for its outcome.
    probing: bool,
    /// The entry being tried as the probe.
    probe: Option<QueueId>,
}

/// How the first delivery attempt of a message ended, for a client that waits for it
/// (`acknowledge = "delivered"` on its listener).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstOutcome {
    /// Exchange accepted it (for at least one recipient); its reply.
    Delivered { reply: String },
    /// Exchange refused it for good for every recipient: this reply goes to the client, and
    /// the relay keeps no copy (the client knows).
    Rejected { code: u16, text: String },
    /// Not settled yet (temporary failure): it stays queued.
    Deferred,
}

/// The queue of one account.
#[derive(Debug, Default)]
pub struct AccountQueue {
    state: Mutex<State>,
    notify: Notify,
    waiters: Mutex<HashMap<QueueId, oneshot::Sender<FirstOutcome>>>,
}

fn until(at_secs: u64) -> Duration {
    (UNIX_EPOCH + Duration::from_secs(at_secs))
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

fn now_secs() -> u64 {
    crate::spool::unix_now()
}

impl AccountQueue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Schedule (or reschedule) an entry for `at` (unix seconds) and wake a worker.
    pub fn schedule(&self, id: &str, at: u64) {
        let probe_ended = {
            let mut state = self.lock();
            let probe_ended = end_probe(&mut state, id);
            if let Some(previous) = state.scheduled.remove(id) {
                state.waiting.remove(&(previous, id.to_string()));
            }
            state.in_flight.remove(id);
            state.waiting.insert((at, id.to_string()));
            state.scheduled.insert(id.to_string(), at);
            probe_ended
        };
        if probe_ended {
            self.notify.notify_waiters();
        } else {
            self.notify.notify_one();
        }
    }

    /// The entry left the queue (delivered, failed or quarantined).
    pub fn finish(&self, id: &str) {
        let probe_ended = {
            let mut state = self.lock();
            state.in_flight.remove(id);
            if let Some(at) = state.scheduled.remove(id) {
                state.waiting.remove(&(at, id.to_string()));
            }
            end_probe(&mut state, id)
        };
        if probe_ended {
            self.notify.notify_waiters();
        }
    }

    /// Let no worker take an entry before `at` (unix seconds): the account is failing. When
    /// the pause ends, one message goes first; the rest follow once it got through.
    pub fn pause_until(&self, at: u64) {
        let mut state = self.lock();
        state.paused_until = state.paused_until.max(at);
        state.probing = true;
        state.probe = None;
    }

    /// Lift a pause (e.g. after a delivery succeeded).
    pub fn resume(&self) {
        {
            let mut state = self.lock();
            state.paused_until = 0;
            state.probing = false;
            state.probe = None;
        }
        self.notify.notify_waiters();
    }

    /// Make every waiting entry due now and lift a pause (after a configuration reload, which
    /// may have fixed what the account was failing on). Returns how many entries were waiting.
    pub fn retry_now(&self) -> usize {
        let count = {
            let mut state = self.lock();
            let now = now_secs();
            let waiting = std::mem::take(&mut state.waiting);
            let count = waiting.len();
            for (_, id) in waiting {
                state.scheduled.insert(id.clone(), now);
                state.waiting.insert((now, id));
            }
            state.paused_until = 0;
            count
        };
        self.notify.notify_waiters();
        count
    }

    /// Ask to hear how the first attempt of `id` ends. Register before scheduling the entry.
    pub fn watch(&self, id: &str) -> oneshot::Receiver<FirstOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), sender);
        receiver
    }

    /// Stop waiting for `id` (the client's patience ran out).
    pub fn unwatch(&self, id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The waiter of `id`, if a client is still waiting; taken once.
    pub fn take_waiter(&self, id: &str) -> Option<oneshot::Sender<FirstOutcome>> {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .filter(|sender| !sender.is_closed())
    }

    /// True while a worker is delivering `id`.
    pub fn is_in_flight(&self, id: &str) -> bool {
        self.lock().in_flight.contains(id)
    }

    /// True when `id` is waiting or in flight here.
    pub fn contains(&self, id: &str) -> bool {
        let state = self.lock();
        state.in_flight.contains(id) || state.scheduled.contains_key(id)
    }

    /// The oldest entry (ids sort by creation time).
    pub fn oldest(&self) -> Option<QueueId> {
        let state = self.lock();
        state
            .in_flight
            .iter()
            .chain(state.scheduled.keys())
            .min()
            .cloned()
    }

    /// Entries waiting or in flight.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.waiting.len() + state.in_flight.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_due(&self) -> Result<QueueId, Option<Duration>> {
        let mut state = self.lock();
        let now = now_secs();
        if state.paused_until > now {
            return Err(Some(until(state.paused_until)));
        }
        if state.probing && state.probe.is_some() {
            // After a pause, one message at a time until one gets through.
            return Err(None);
        }
        match state.waiting.first().cloned() {
            Some((at, id)) if at <= now => {
                state.waiting.remove(&(at, id.clone()));
                state.scheduled.remove(&id);
                state.in_flight.insert(id.clone());
                if state.probing {
                    state.probe = Some(id.clone());
                }
                Ok(id)
            }
            Some((at, _)) => Err(Some(until(at))),
            None => Err(None),
        }
    }

    /// Wait for the next due entry. With `idle = Some(d)`, give up after `d` without one
    /// (the worker then closes its idle upstream session). Cancel-safe.
    pub async fn next(&self, cancel: &CancellationToken, idle: Option<Duration>) -> Next {
        let idle_deadline = idle.map(|d| tokio::time::Instant::now() + d);
        loop {
            // A worker of a replaced generation takes nothing more (it would use the old
            // configuration).
            if cancel.is_cancelled() {
                return Next::Shutdown;
            }
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = match self.take_due() {
                Ok(id) => return Next::Due(id),
                Err(wait) => wait,
            };
            // Sleep at most a minute at a time so wall-clock jumps are noticed.
            let wait = wait
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            let timer = tokio::time::sleep(wait + Duration::from_millis(5));
            let idle_timer = async {
                match idle_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return Next::Shutdown,
                _ = &mut notified => {}
                _ = timer => {}
                _ = idle_timer => return Next::Idle,
            }
        }
    }
}

/// The probe `id` is settled (rescheduled or gone). Unless its attempt paused the account
/// again (the pause is then in the future), the account works: the others may go. Returns
/// true when waiting workers must be woken.
fn end_probe(state: &mut State, id: &str) -> bool {
    if state.probe.as_deref() != Some(id) {
        return false;
    }
    state.probe = None;
    if state.paused_until <= now_secs() {
        state.probing = false;
    }
    true
}

/// All accounts' queues. Accounts can be added while the relay runs (configuration reload).
#[derive(Debug, Default)]
pub struct Queue {
    accounts: std::sync::RwLock<HashMap<String, Arc<AccountQueue>>>,
}

impl Queue {
    /// One queue per account name.
    pub fn new(accounts: impl IntoIterator<Item = String>) -> Queue {
        Queue {
            accounts: std::sync::RwLock::new(
                accounts
                    .into_iter()
                    .map(|name| (name, Arc::new(AccountQueue::default())))
                    .collect(),
            ),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<AccountQueue>>> {
        self.accounts.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The queue of one account.
    pub fn account(&self, name: &str) -> Option<Arc<AccountQueue>> {
        self.read().get(name).cloned()
    }

    /// The queue of `name`, created if the account is new. Returns it and whether it is new.
    pub fn add_account(&self, name: &str) -> (Arc<AccountQueue>, bool) {
        let mut accounts = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        match accounts.get(name) {
            Some(queue) => (Arc::clone(queue), false),
            None => {
                let queue = Arc::new(AccountQueue::default());
                accounts.insert(name.to_string(), Arc::clone(&queue));
                (queue, true)
            }
        }
    }

    /// Every account's queue, by name (a snapshot).
    pub fn accounts(&self) -> Vec<(String, Arc<AccountQueue>)> {
        self.read()
            .iter()
            .map(|(name, queue)| (name.clone(), Arc::clone(queue)))
            .collect()
    }

    /// The queue holding `id`, if any.
    pub fn find(&self, id: &str) -> Option<Arc<AccountQueue>> {
        self.read()
            .values()
            .find(|queue| queue.contains(id))
            .cloned()
    }

    /// Schedule a stored entry. Returns false when its account is not configured (the entry
    /// then stays in the spool until the account comes back).
    pub fn submit(&self, envelope: &Envelope) -> bool {
        match self.account(&envelope.account) {
            Some(queue) => {
                queue.schedule(&envelope.id, envelope.next_attempt);
                true
            }
            None => false,
        }
    }

    /// Entries queued across all accounts.
    pub fn depth(&self) -> usize {
        self.read().values().map(|q| q.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn due_entries_come_out_in_time_order_once() {
        let queue = AccountQueue::default();
        let now = now_secs();
        queue.schedule("B", now - 1);
        queue.schedule("A", now - 2);
        queue.schedule("C", now + 3600);
        let cancel = CancellationToken::new();
        let idle = Some(Duration::from_millis(50));
        assert_eq!(queue.next(&cancel, idle).await, Next::Due("A".into()));
        assert_eq!(queue.next(&cancel, idle).await, Next::Due("B".into()));
        assert_eq!(queue.next(&cancel, idle).await, Next::Idle);
        assert_eq!(queue.len(), 3);
        queue.finish("A");
        queue.finish("B");
        queue.finish("C");
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_new_entry_wakes_a_waiting_worker() {
        let queue = Arc::new(AccountQueue::default());
        let cancel = CancellationToken::new();
        let waiter = {
            let queue = Arc::clone(&queue);
            let cancel = cancel.clone();
            tokio::spawn(async move { queue.next(&cancel, None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.schedule("X", now_secs());
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Next::Due("X".into()));
    }

    #[tokio::test]
    async fn rescheduling_replaces_and_pause_holds_back() {
        let queue = AccountQueue::default();
        let cancel = CancellationToken::new();
        let now = now_secs();
        queue.schedule("X", now + 3600);
        queue.schedule("X", now);
        assert_eq!(queue.len(), 1);
        queue.pause_until(now + 3600);
        assert_eq!(
            queue.next(&cancel, Some(Duration::from_millis(30))).await,
            Next::Idle
        );
        queue.resume();
        assert_eq!(
            queue.next(&cancel, Some(Duration::from_millis(30))).await,
            Next::Due("X".into())
        );
    }

    #[test]
    fn after_a_pause_one_message_goes_first_and_the_rest_follow_once_it_gets_through() {
        let queue = AccountQueue::default();
        let now = now_secs();
        for id in ["A", "B", "C", "D"] {
            queue.schedule(id, now - 1);
        }
        // A pause that has already ended: the probe rule still applies.
        queue.pause_until(now - 1);
        assert_eq!(queue.take_due(), Ok("A".into()));
        assert_eq!(queue.take_due(), Err(None), "the others wait for the probe");
        // The probe failed for the whole account again: a new pause, a new probe after it.
        queue.pause_until(now + 3600);
        queue.schedule("A", now + 3600);
        assert!(matches!(queue.take_due(), Err(Some(_))));
        // Fixed: a delivery succeeds (resume) and everyone goes.
        queue.resume();
        assert_eq!(queue.take_due(), Ok("B".into()));
        assert_eq!(queue.take_due(), Ok("C".into()));

        // A probe that fails only for itself (not the account) also releases the others.
        queue.pause_until(now - 1);
        queue.schedule("E", now - 1);
        assert_eq!(queue.take_due(), Ok("D".into()));
        assert_eq!(queue.take_due(), Err(None));
        queue.schedule("D", now + 60);
        assert_eq!(queue.take_due(), Ok("E".into()));
        // And one that left the queue (delivered or failed) too.
        queue.pause_until(now - 1);
        queue.schedule("F", now - 1);
        queue.schedule("G", now - 1);
        assert_eq!(queue.take_due(), Ok("F".into()));
        assert_eq!(queue.take_due(), Err(None));
        queue.finish("F");
        assert_eq!(queue.take_due(), Ok("G".into()));
    }

    #[test]
    fn retry_now_makes_everything_due_and_lifts_the_pause() {
        let queue = AccountQueue::default();
        let now = now_secs();
        queue.schedule("A", now + 900);
        queue.schedule("B", now + 3600);
        queue.pause_until(now + 900);
        assert!(matches!(queue.take_due(), Err(Some(_))));
        assert_eq!(queue.retry_now(), 2);
        assert_eq!(queue.take_due(), Ok("A".into()));
        // A pause still means one message goes first.
        assert_eq!(queue.take_due(), Err(None));
        queue.resume();
        assert_eq!(queue.take_due(), Ok("B".into()));
        assert_eq!(queue.len(), 2);
    }

    #[tokio::test]
    async fn shutdown_interrupts_waiting() {
        let queue = AccountQueue::default();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert_eq!(queue.next(&cancel, None).await, Next::Shutdown);
    }
}
