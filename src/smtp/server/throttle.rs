//! Brute-force protection for AUTH that slows guessing down instead of locking anyone out.
//!
//! Every failed AUTH adds to a penalty for the client's address (IPv4 per address, IPv6 per
//! /64) and for the username tried (from any address). The next attempt that shares either
//! waits until the penalty after the last failure has passed: 1 s after one failure, then 2, 4,
//! 8 s…, capped at `auth_penalty_max` (10 s by default), like Dovecot's auth penalty. Attempts
//! run at most `auth_parallel_per_address` at a time per address and `auth_parallel_per_user`
//! per username (first come, first served), and the penalty is looked at when an attempt
//! gets its slots (not when it arrived), so parallel connections do not multiply an attacker's
//! rate. An outright refusal exists only as an opt-in, per (address, username):
//! `auth_lockout_after`.
//!
//! Invariants:
//! - Nothing here refuses a connection or a correct password: the worst a neighbour's failures
//!   do to a rightful client is a wait of at most the penalty cap once the guessing has stopped
//!   (and none at all for a credential proven in the last hour, see
//!   [`crate::policy::credential_cache`]). Trusted networks never AUTH and never wait.
//! - Memory is bounded: each table holds at most [`MAX_TRACKED`] keys; when one is full the
//!   entries whose failures left the window go first, then the stalest eighth, so new
//!   addresses are always tracked. The slot tables hold only keys with an attempt in progress.
//! - A success does not erase failures (knowing one password does not reset the count for
//!   guessing others); failures are forgotten `auth_failure_window` after the last one.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Upper bound on the keys tracked by each penalty table (addresses, usernames, pairs).
pub const MAX_TRACKED: usize = 16_384;
/// The penalty after the first failure; it doubles with each further one up to the cap.
pub const FIRST_PENALTY: Duration = Duration::from_secs(1);
/// Usernames are tracked by their first 64 bytes, ASCII-lowercased.
const USERNAME_KEY_BYTES: usize = 64;

/// The `[limits]` that drive the throttle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// How long a failure counts (`auth_failure_window`).
    pub failure_window: Duration,
    /// The longest wait one attempt gets (`auth_penalty_max`); zero disables the penalty.
    pub penalty_max: Duration,
    /// Attempts in progress at once from one address (`auth_parallel_per_address`).
    pub parallel_per_address: usize,
    /// Attempts in progress at once for one username (`auth_parallel_per_user`).
    pub parallel_per_user: usize,
    /// Failures of one username from one address before that pair is refused for the rest of
    /// the window (`auth_lockout_after`); zero (the default) never refuses.
    pub lockout_after: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            failure_window: Duration::from_secs(10 * 60),
            penalty_max: Duration::from_secs(10),
            parallel_per_address: 2,
            parallel_per_user: 2,
            lockout_after: 0,
        }
    }
}

impl ThrottleSettings {
    /// The wait owed after `failures` recent failures.
    pub fn penalty(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = failures.saturating_sub(1).min(20);
        FIRST_PENALTY
            .saturating_mul(1u32 << doublings)
            .min(self.penalty_max)
    }

    /// The most guesses per minute one address (or one username) gets once its penalty is at
    /// the cap, not counting the check's own time: what README states.
    pub fn max_guesses_per_minute(&self, parallel: usize) -> Option<u64> {
        let max_ms = u64::try_from(self.penalty_max.as_millis()).unwrap_or(u64::MAX);
        (max_ms > 0).then(|| (60_000 * parallel as u64).div_ceil(max_ms))
    }
}

/// Where an attempt comes from, as the throttle counts it: an IPv4 address, or an IPv6 /64
/// (one subscriber's prefix; counting per /128 would let one host rotate through 2^64 keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(std::net::Ipv4Addr),
    V6Prefix64(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> AddressKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4),
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                AddressKey::V6Prefix64(
                    (u64::from(a) << 48)
                        | (u64::from(b) << 32)
                        | (u64::from(c) << 16)
                        | u64::from(d),
                )
            }
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressKey::V4(v4) => write!(f, "{v4}"),
            AddressKey::V6Prefix64(prefix) => {
                let ip = std::net::Ipv6Addr::from(u128::from(*prefix) << 64);
                write!(f, "{ip}/64")
            }
        }
    }
}

/// The key a username is counted under.
fn username_key(username: &str) -> String {
    let mut end = username.len().min(USERNAME_KEY_BYTES);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    username.get(..end).unwrap_or_default().to_ascii_lowercase()
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
}

/// Recent failures per key, bounded.
#[derive(Debug)]
struct PenaltyTable<K> {
    records: HashMap<K, Record>,
}

impl<K: Eq + Hash + Clone> PenaltyTable<K> {
    fn new() -> Self {
        PenaltyTable {
            records: HashMap::new(),
        }
    }

    /// The failures of `key` still inside the window.
    fn current(&mut self, key: &K, now: Instant, window: Duration) -> Option<Record> {
        let record = *self.records.get(key)?;
        if now.duration_since(record.last_failure) >= window {
            self.records.remove(key);
            return None;
        }
        Some(record)
    }

    /// Count a failure of `key`; returns the failures now inside the window.
    fn record(&mut self, key: K, now: Instant, window: Duration) -> u32 {
        let previous = self.current(&key, now, window).map_or(0, |r| r.failures);
        if previous == 0 && self.records.len() >= MAX_TRACKED {
            self.make_room(now, window);
        }
        let failures = previous.saturating_add(1);
        self.records.insert(
            key,
            Record {
                failures,
                last_failure: now,
            },
        );
        failures
    }

    /// Drop the expired entries, then the stalest eighth: amortised O(1) per insert.
    fn make_room(&mut self, now: Instant, window: Duration) {
        self.records
            .retain(|_, r| now.duration_since(r.last_failure) < window);
        let target = MAX_TRACKED - MAX_TRACKED / 8;
        if self.records.len() > target {
            let mut times: Vec<Instant> = self.records.values().map(|r| r.last_failure).collect();
            let excess = self.records.len() - target;
            let (_, cutoff, _) = times.select_nth_unstable(excess - 1);
            let cutoff = *cutoff;
            let mut to_drop = excess;
            self.records.retain(|_, r| {
                if to_drop > 0 && r.last_failure <= cutoff {
                    to_drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

/// Per-key limits on attempts in progress, first come first served. A key's entry exists
/// only while an attempt holds or waits for one of its slots.
#[derive(Debug)]
struct SlotTable<K> {
    slots: Mutex<HashMap<K, Arc<Semaphore>>>,
}

/// One attempt's place in a [`SlotTable`]; frees it (and the key's entry when last) on drop.
struct Slot<'a, K: Eq + Hash + Clone> {
    table: &'a SlotTable<K>,
    key: K,
    semaphore: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<K: Eq + Hash + Clone> SlotTable<K> {
    fn new() -> Self {
        SlotTable {
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<Semaphore>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn acquire(&self, key: K, limit: usize) -> Slot<'_, K> {
        let semaphore = Arc::clone(
            self.lock()
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(limit.max(1)))),
        );
        // The slot owns the only other handle before the wait, so a cancelled wait (deadline)
        // still cleans the entry up: the wait's own handle is dropped first.
        let mut slot = Slot {
            table: self,
            key,
            semaphore: Some(semaphore),
            permit: None,
        };
        let waiting = slot
            .semaphore
            .as_ref()
            .map(|semaphore| Arc::clone(semaphore).acquire_owned());
        if let Some(waiting) = waiting {
            slot.permit = waiting.await.ok();
        }
        slot
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<'_, K> {
    fn drop(&mut self) {
        self.permit.take();
        self.semaphore.take();
        let mut slots = self.table.lock();
        // Only the table holds the semaphore once nobody holds or waits for a permit (waiters
        // and holders all keep a clone, taken under this lock).
        if slots
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.key);
        }
    }
}

/// Why an attempt does not get its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// `auth_lockout_after` reached for this username from this address.
    LockedOut { retry_in: Duration },
    /// Its turn would come after the caller's deadline.
    DeadlinePassed,
}

/// An attempt allowed to run its check; holds its slots until dropped.
pub struct Admitted<'a> {
    _address_slot: Slot<'a, AddressKey>,
    _user_slot: Slot<'a, String>,
    /// How long the attempt waited for its turn.
    pub waited: Duration,
}

/// What a failure left behind, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCounts {
    pub from_address: u32,
    pub for_user: u32,
    /// The wait the next attempt from this address or for this user gets.
    pub next_penalty: Duration,
}

/// One username tried from one address: the key of the opt-in lockout
/// (`auth_lockout_after`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct UserFromAddress {
    address: AddressKey,
    /// The username as [`username_key`] folds it.
    user: String,
}

/// How many keys the throttle tracks now (its memory, for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedKeys {
    /// Addresses (IPv6: /64 prefixes) with recent failures.
    pub addresses: usize,
    /// Usernames with recent failures.
    pub usernames: usize,
    /// Addresses and usernames with an attempt in progress or waiting for its turn.
    pub slot_entries: usize,
}

/// The AUTH throttle shared by every listener; survives reloads.
#[derive(Debug)]
pub struct AuthThrottle {
    /// The `[limits] auth_*` settings in force (a reload replaces them).
    settings: Mutex<ThrottleSettings>,
    /// Recent failures per address (IPv6: per /64).
    addresses: Mutex<PenaltyTable<AddressKey>>,
    /// Recent failures per username, from anywhere.
    users: Mutex<PenaltyTable<String>>,
    /// Recent failures per username and address, for the opt-in lockout.
    pairs: Mutex<PenaltyTable<UserFromAddress>>,
    /// Attempts in progress per address (`auth_parallel_per_address`).
    address_slots: SlotTable<AddressKey>,
    /// Attempts in progress per username (`auth_parallel_per_user`).
    user_slots: SlotTable<String>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuthThrottle {
    pub fn new(settings: ThrottleSettings) -> AuthThrottle {
        AuthThrottle {
            settings: Mutex::new(settings),
            addresses: Mutex::new(PenaltyTable::new()),
            users: Mutex::new(PenaltyTable::new()),
            pairs: Mutex::new(PenaltyTable::new()),
            address_slots: SlotTable::new(),
            user_slots: SlotTable::new(),
        }
    }

    /// Apply new settings (configuration reload); counted failures are kept.
    pub fn reconfigure(&self, settings: ThrottleSettings) {
        *locked(&self.settings) = settings;
    }

    pub fn settings(&self) -> ThrottleSettings {
        locked(&self.settings).clone()
    }

    /// Wait for this attempt's turn: a free slot for its address and its username, and the
    /// penalty of both passed. Gives up when the turn would come after `deadline`.
    pub async fn admit(
        &self,
        ip: IpAddr,
        username: &str,
        deadline: Instant,
    ) -> Result<Admitted<'_>, NotAdmitted> {
        let started = Instant::now();
        let settings = self.settings();
        let address = AddressKey::from(ip);
        let user = username_key(username);
        self.check_lockout(&settings, address, &user)?;
        let turn = async {
            let address_slot = self
                .address_slots
                .acquire(address, settings.parallel_per_address)
                .await;
            let user_slot = self
                .user_slots
                .acquire(user.clone(), settings.parallel_per_user)
                .await;
            (address_slot, user_slot)
        };
        let (address_slot, user_slot) = tokio::time::timeout_at(deadline, turn)
            .await
            .map_err(|_| NotAdmitted::DeadlinePassed)?;
        // Looked at again now that the attempt holds its slots: failures recorded while it
        // waited for them count. Once computed, its turn is fixed: re-reading the penalty after
        // the sleep would let every attempt that finished first push a late waker back again
        // and again (starvation on a busy machine); the slots already bound how many attempts
        // run per penalty period.
        let settings = self.settings();
        self.check_lockout(&settings, address, &user)?;
        let now = Instant::now();
        let not_before = self.not_before(&settings, address, &user, now);
        if not_before > deadline {
            return Err(NotAdmitted::DeadlinePassed);
        }
        tokio::time::sleep_until(not_before).await;
        self.check_lockout(&settings, address, &user)?;
        Ok(Admitted {
            _address_slot: address_slot,
            _user_slot: user_slot,
            waited: started.elapsed(),
        })
    }

    fn check_lockout(
        &self,
        settings: &ThrottleSettings,
        address: AddressKey,
        user: &str,
    ) -> Result<(), NotAdmitted> {
        if settings.lockout_after == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let window = settings.failure_window;
        let pair = UserFromAddress {
            address,
            user: user.to_string(),
        };
        match locked(&self.pairs).current(&pair, now, window) {
            Some(record) if record.failures >= settings.lockout_after => {
                Err(NotAdmitted::LockedOut {
                    retry_in: window.saturating_sub(now.duration_since(record.last_failure)),
                })
            }
            _ => Ok(()),
        }
    }

    fn not_before(
        &self,
        settings: &ThrottleSettings,
        address: AddressKey,
        user: &String,
        now: Instant,
    ) -> Instant {
        let window = settings.failure_window;
        let due = |record: Option<Record>| {
            record.map_or(now, |r| r.last_failure + settings.penalty(r.failures))
        };
        let by_address = due(locked(&self.addresses).current(&address, now, window));
        let by_user = due(locked(&self.users).current(user, now, window));
        by_address.max(by_user)
    }

    /// Count a failed AUTH of `username` from `ip`.
    pub fn record_failure(&self, ip: IpAddr, username: &str) -> FailureCounts {
        let settings = self.settings();
        let now = Instant::now();
        let window = settings.failure_window;
        let address = AddressKey::from(ip);
        let user = username_key(username);
        let from_address = locked(&self.addresses).record(address, now, window);
        let for_user = locked(&self.users).record(user.clone(), now, window);
        if settings.lockout_after > 0 {
            locked(&self.pairs).record(UserFromAddress { address, user }, now, window);
        }
        FailureCounts {
            from_address,
            for_user,
            next_penalty: settings.penalty(from_address.max(for_user)),
        }
    }

    /// The keys tracked now.
    pub fn tracked(&self) -> TrackedKeys {
        TrackedKeys {
            addresses: locked(&self.addresses).len(),
            usernames: locked(&self.users).len(),
            slot_entries: self.address_slots.len() + self.user_slots.len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
