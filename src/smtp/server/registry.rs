//! The registry of live inbound sessions: connection limits that fit who is connecting, and
//! room for new clients when idle or trickling connections hold every slot.
//!
//! Every accepted connection holds a [`SessionSlot`] for its whole life; the registry knows
//! for each one since when it has been idle (the end of its last complete command line, not
//! its last byte, so trickling does not count as activity), whether it is inside a mail
//! transaction, and whether it is *favoured* (its address is exempt by
//! `per_ip_limit_exempt`, or it authenticated).
//!
//! Invariants:
//! - At most `max_connections` slots in total. The last [`RESERVED_PERCENT`] % of them are
//!   only for favoured clients: an ordinary client is admitted while fewer than
//!   `max_connections - reserved` slots are in use.
//! - When the slots a newcomer may use are full, the longest-idle session outside a
//!   transaction is evicted (told through its [`SessionSlot::evicted`] token, it answers
//!   `421 4.7.0` and closes) and the newcomer takes its slot; an ordinary newcomer only ever
//!   displaces an ordinary session, never a favoured one. A session in a transaction (MAIL
//!   given, or DATA in progress) is never evicted.
//! - At most `max_connections_per_ip` slots per client address, IPv6 counted per /64;
//!   favoured-by-address clients are not counted.
//! - From [`PRESSURE_PERCENT`] % of `max_connections` in use, [`SessionSlot::under_pressure`]
//!   says so and sessions outside a transaction wait at most [`BUSY_IDLE_TIMEOUT`] for a
//!   command.
//! - Admission is O(1) unless an eviction is needed, then one O(n) scan over at most
//!   `max_connections` entries under the lock. Nothing here awaits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Share of `max_connections` kept for favoured clients (loopback / `[[network]]` per
/// `per_ip_limit_exempt`, and authenticated sessions).
pub const RESERVED_PERCENT: usize = 10;
/// From this share of `max_connections` in use, idle sessions get [`BUSY_IDLE_TIMEOUT`].
pub const PRESSURE_PERCENT: usize = 80;
/// How long a session outside a transaction may wait for a command while the relay is busy
/// (Postfix's `smtpd_timeout` under stress is 10 s too).
pub const BUSY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was refused at the door (not a policy [`super::session_io::Refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    TooManyConnections,
    TooManyFromAddress,
}

impl ConnectionRefusal {
    /// Short text for the 421 reply, the log and the metric label.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectionRefusal::TooManyConnections => "too many connections",
            ConnectionRefusal::TooManyFromAddress => "too many connections from your address",
        }
    }
}

/// What the listener knows about a new client before it says anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newcomer {
    pub ip: IpAddr,
    /// Exempt from the per-address limit and allowed into the reserved share.
    pub favoured: bool,
}

#[derive(Debug)]
struct Entry {
    /// `None` for clients exempt from the per-address count.
    address_key: Option<IpAddr>,
    idle_since: Instant,
    in_transaction: bool,
    favoured: bool,
    evict: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_ip: usize,
    sessions: HashMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// Connection counters and live sessions, shared by all listeners.
#[derive(Debug)]
pub struct ConnectionLimits {
    inner: Mutex<Inner>,
    pressure: watch::Sender<bool>,
    /// Sessions evicted for a newcomer (the relay's `connections_evicted` metric).
    evicted: Counter,
}

/// The key an address is counted under: IPv4 as is, IPv6 per /64 (one host usually owns a
/// whole /64, so counting /128s would give it 2^64 allowances).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

fn reserved(max_total: usize) -> usize {
    max_total * RESERVED_PERCENT / 100
}

fn pressure_threshold(max_total: usize) -> usize {
    (max_total * PRESSURE_PERCENT).div_ceil(100).max(1)
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Self::counted(max_total, max_per_ip, Counter::default())
    }

    /// Like [`new`](Self::new), counting every eviction in `evicted`.
    pub fn counted(max_total: usize, max_per_ip: usize, evicted: Counter) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            inner: Mutex::new(Inner {
                max_total,
                max_per_ip,
                sessions: HashMap::new(),
                per_address: HashMap::new(),
                next_id: 0,
            }),
            pressure: watch::channel(false).0,
            evicted,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply new limits (configuration reload). Lowering them takes effect as connections end.
    pub fn resize(&self, max_total: usize, max_per_ip: usize) {
        let mut inner = self.lock();
        inner.max_total = max_total;
        inner.max_per_ip = max_per_ip;
        self.update_pressure(&inner);
    }

    /// Sessions holding a slot now.
    pub fn in_use(&self) -> usize {
        self.lock().sessions.len()
    }

    fn update_pressure(&self, inner: &Inner) {
        let busy = inner.sessions.len() >= pressure_threshold(inner.max_total);
        self.pressure.send_if_modified(|current| {
            let changed = *current != busy;
            *current = busy;
            changed
        });
    }

    /// Admit `newcomer`, evicting the longest-idle session outside a transaction if the
    /// slots it may use are full, or say which limit it hit.
    ///
    /// # Errors
    /// The [`ConnectionRefusal`] when no slot can be had.
    pub fn admit(self: &Arc<Self>, newcomer: Newcomer) -> Result<SessionSlot, ConnectionRefusal> {
        let mut inner = self.lock();
        let address_key = (!newcomer.favoured).then(|| address_key(newcomer.ip));
        if let Some(key) = address_key
            && inner.per_address.get(&key).copied().unwrap_or(0) >= inner.max_per_ip
        {
            return Err(ConnectionRefusal::TooManyFromAddress);
        }
        let limit = if newcomer.favoured {
            inner.max_total
        } else {
            inner.max_total.saturating_sub(reserved(inner.max_total))
        };
        if inner.sessions.len() >= limit {
            let victim = inner
                .sessions
                .iter()
                .filter(|(_, e)| !e.in_transaction && (newcomer.favoured || !e.favoured))
                .min_by_key(|(_, e)| (e.favoured, e.idle_since))
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(ConnectionRefusal::TooManyConnections);
            };
            if let Some(entry) = inner.remove(victim) {
                tracing::info!(
                    idle_s = entry.idle_since.elapsed().as_secs(),
                    "all connection slots in use: closing the longest-idle session for a new client"
                );
                entry.evict.cancel();
                self.evicted.inc();
            }
        }
        if let Some(key) = address_key {
            *inner.per_address.entry(key).or_insert(0) += 1;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let evict = CancellationToken::new();
        inner.sessions.insert(
            id,
            Entry {
                address_key,
                idle_since: Instant::now(),
                in_transaction: false,
                favoured: newcomer.favoured,
                evict: evict.clone(),
            },
        );
        self.update_pressure(&inner);
        drop(inner);
        Ok(SessionSlot {
            limits: Arc::clone(self),
            id,
            evict,
            pressure: self.pressure.subscribe(),
        })
    }
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.sessions.remove(&id)?;
        if let Some(key) = entry.address_key
            && let Some(count) = self.per_address.get_mut(&key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_address.remove(&key);
            }
        }
        Some(entry)
    }
}

/// One connection's place in the registry; frees it when dropped.
#[derive(Debug)]
pub struct SessionSlot {
    limits: Arc<ConnectionLimits>,
    id: u64,
    evict: CancellationToken,
    pressure: watch::Receiver<bool>,
}

impl SessionSlot {
    /// Record the end of a command line and whether the session is now in a transaction.
    pub fn activity(&self, in_transaction: bool) {
        let mut inner = self.limits.lock();
        if let Some(entry) = inner.sessions.get_mut(&self.id) {
            entry.idle_since = Instant::now();
            entry.in_transaction = in_transaction;
        }
    }

    /// The session authenticated: it may use the reserved share and is displaced last.
    pub fn favour(&self) {
        let mut inner = self.limits.lock();
        if let Some(entry) = inner.sessions.get_mut(&self.id) {
            entry.favoured = true;
        }
    }

    /// Cancelled when the session was chosen to make room for a new client.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evict
    }

    /// True while the relay is near its connection limit.
    pub fn under_pressure(&self) -> bool {
        *self.pressure.borrow()
    }

    /// Resolves when the pressure state changes (cancel-safe).
    pub async fn pressure_changed(&mut self) {
        if self.pressure.changed().await.is_err() {
            // The registry is gone (never while a slot exists): wait forever.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut inner = self.limits.lock();
        inner.remove(self.id);
        self.limits.update_pressure(&inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordinary(ip: &str) -> Newcomer {
        Newcomer {
            ip: ip.parse().unwrap(),
            favoured: false,
        }
    }

    fn favoured(ip: &str) -> Newcomer {
        Newcomer {
            ip: ip.parse().unwrap(),
            favoured: true,
        }
    }

    #[test]
    fn ipv6_is_counted_per_slash_64_and_ipv4_per_address() {
        let cases = [
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"),
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
        ];
        for (ip, key) in cases {
            assert_eq!(
                address_key(ip.parse().unwrap()),
                key.parse::<IpAddr>().unwrap(),
                "{ip}"
            );
        }
    }

    #[tokio::test]
    async fn the_per_address_limit_counts_a_slash_64_and_spares_favoured_clients() {
        let limits = ConnectionLimits::new(100, 2);
        let _a = limits.admit(ordinary("2001:db8::1")).unwrap();
        let _b = limits.admit(ordinary("2001:db8::2")).unwrap();
        assert_eq!(
            limits.admit(ordinary("2001:db8::3")).unwrap_err(),
            ConnectionRefusal::TooManyFromAddress
        );
        let _other = limits.admit(ordinary("2001:db8:0:1::1")).unwrap();
        let pool: Vec<_> = (0..30)
            .map(|_| limits.admit(favoured("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(pool.len(), 30);
    }

    #[tokio::test]
    async fn when_full_the_longest_idle_ordinary_session_outside_a_transaction_is_evicted() {
        let evicted = Counter::default();
        let limits = ConnectionLimits::counted(10, 100, evicted.clone());
        // 9 ordinary slots (one is reserved).
        let mut slots: Vec<_> = (0..9)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(2));
                limits.admit(ordinary(&format!("192.0.2.{i}"))).unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2));
        // The oldest is in a transaction; the second oldest is the victim.
        slots[0].activity(true);
        for slot in &slots[2..] {
            slot.activity(false);
        }
        let newcomer = limits.admit(ordinary("198.51.100.1")).unwrap();
        assert!(!slots[0].evicted().is_cancelled());
        assert!(slots[1].evicted().is_cancelled());
        assert_eq!(evicted.get(), 1);
        assert_eq!(limits.in_use(), 9);
        // The reserved slot goes to a favoured client without evicting anyone.
        let trusted = limits.admit(favoured("10.0.0.1")).unwrap();
        assert_eq!(limits.in_use(), 10);
        assert!(slots[2..].iter().all(|s| !s.evicted().is_cancelled()));
        // Dropping an evicted slot does not free a second place.
        slots.remove(1);
        assert_eq!(limits.in_use(), 10);
        drop((newcomer, trusted));
        assert_eq!(limits.in_use(), 8);
    }

    #[tokio::test]
    async fn an_ordinary_newcomer_never_displaces_a_favoured_or_busy_session() {
        let limits = ConnectionLimits::new(10, 100);
        let mut favoured_slots: Vec<_> = (0..8)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(2));
                limits.admit(favoured("127.0.0.1")).unwrap()
            })
            .collect();
        let authenticated = limits.admit(ordinary("192.0.2.1")).unwrap();
        authenticated.favour();
        favoured_slots.push(limits.admit(favoured("127.0.0.1")).unwrap());
        assert_eq!(limits.in_use(), 10);
        assert_eq!(
            limits.admit(ordinary("192.0.2.2")).unwrap_err(),
            ConnectionRefusal::TooManyConnections
        );
        assert!(favoured_slots.iter().all(|s| !s.evicted().is_cancelled()));
        // A favoured newcomer may take the place of the longest-idle favoured one.
        let _trusted = limits.admit(favoured("10.0.0.1")).unwrap();
        assert!(favoured_slots[0].evicted().is_cancelled());
        // Nobody evictable at all: refused.
        let limits = ConnectionLimits::new(2, 100);
        let busy: Vec<_> = (0..2)
            .map(|_| limits.admit(favoured("127.0.0.1")).unwrap())
            .collect();
        for slot in &busy {
            slot.activity(true);
        }
        assert_eq!(
            limits.admit(favoured("127.0.0.1")).unwrap_err(),
            ConnectionRefusal::TooManyConnections
        );
    }

    #[tokio::test]
    async fn pressure_is_reported_from_eighty_percent_and_cleared_below() {
        let limits = ConnectionLimits::new(10, 100);
        let mut slots: Vec<_> = (0..7)
            .map(|_| limits.admit(favoured("127.0.0.1")).unwrap())
            .collect();
        assert!(!slots[0].under_pressure());
        slots.push(limits.admit(favoured("127.0.0.1")).unwrap());
        assert!(slots[0].under_pressure());
        slots.pop();
        assert!(!slots[0].under_pressure());
    }
}
