//! The admin endpoint's connection slots: at most `[admin] max_connections` connections are
//! open at once, so the endpoint can never take the file descriptors SMTP needs.
//!
//! When every slot is taken, a new connection takes the slot of the connection that has been
//! waiting longest without sending a request (that one is closed): idle connections cannot
//! lock probes and the `queue` command out. Only when every open connection is in the middle
//! of a request is the new one refused (503). Connections serve one request each, so "busy"
//! never turns back into "waiting".
//!
//! Invariant: the table never holds more than `capacity` entries; an entry leaves it when its
//! [`Slot`] is dropped, whatever ends the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often at most the endpoint logs that it is full.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(60);

struct Entry {
    /// `Some(since)` until the connection's request starts.
    waiting_since: Option<Instant>,
    /// Cancelled to close the connection when a newer one takes its slot.
    close: CancellationToken,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    entries: HashMap<u64, Entry>,
}

/// What happened to a new connection.
pub enum Admission {
    /// Serve it; it holds this slot.
    Admitted(Slot),
    /// Every slot is in the middle of a request: answer 503 and close.
    Full,
}

/// The slot table shared by the accept loop and the connections.
pub struct Slots {
    capacity: usize,
    table: Mutex<Table>,
    /// Connections closed or refused because the endpoint was full, since the last warning.
    crowded: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Slots {
    pub fn new(capacity: usize) -> Arc<Slots> {
        Arc::new(Slots {
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
            crowded: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.table().entries.len()
    }

    /// Give a new connection a slot, closing the longest-waiting idle one if all are taken.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Admission {
        let mut table = self.table();
        if table.entries.len() >= self.capacity {
            let oldest_waiting = table
                .entries
                .iter()
                .filter_map(|(id, entry)| entry.waiting_since.map(|since| (since, *id)))
                .min();
            let Some((_, victim)) = oldest_waiting else {
                drop(table);
                self.note_crowded();
                return Admission::Full;
            };
            if let Some(entry) = table.entries.remove(&victim) {
                entry.close.cancel();
            }
            drop(table);
            self.note_crowded();
            table = self.table();
        }
        let id = table.next_id;
        table.next_id = table.next_id.wrapping_add(1);
        let close = CancellationToken::new();
        table.entries.insert(
            id,
            Entry {
                waiting_since: Some(now),
                close: close.clone(),
            },
        );
        Admission::Admitted(Slot {
            slots: Arc::clone(self),
            id,
            close,
        })
    }

    fn note_crowded(&self) {
        let count = self.crowded.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= FULL_WARNING_INTERVAL) {
            *last = Some(Instant::now());
            self.crowded.store(0, Ordering::Relaxed);
            tracing::warn!(
                connections = count,
                max_connections = self.capacity,
                "admin endpoint full: idle connections closed or new ones refused (raise [admin] max_connections if this is not an attack)"
            );
        }
    }
}

/// One open connection's place in the table.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    close: CancellationToken,
}

impl Slot {
    /// Cancelled when a newer connection took this slot.
    pub fn closed(&self) -> CancellationToken {
        self.close.clone()
    }

    /// The connection's request has started: it may no longer be closed for a newer one.
    pub fn mark_busy(&self) {
        if let Some(entry) = self.slots.table().entries.get_mut(&self.id) {
            entry.waiting_since = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table().entries.remove(&self.id);
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> Slot {
        match admission {
            Admission::Admitted(slot) => slot,
            Admission::Full => panic!("refused"),
        }
    }

    #[test]
    fn the_longest_waiting_idle_connection_makes_room_and_busy_ones_are_kept() {
        let slots = Slots::new(3);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let first = admitted(slots.admit(at(0)));
        let second = admitted(slots.admit(at(1)));
        let third = admitted(slots.admit(at(2)));
        first.mark_busy();
        // Full: the oldest waiting one (second) gives way, not the busy first.
        let fourth = admitted(slots.admit(at(3)));
        assert!(!first.closed().is_cancelled());
        assert!(second.closed().is_cancelled());
        assert!(!third.closed().is_cancelled());
        assert_eq!(slots.open(), 3);
        // Dropping the closed connection's slot later does not free anyone else's.
        drop(second);
        assert_eq!(slots.open(), 3);
        third.mark_busy();
        fourth.mark_busy();
        assert!(matches!(slots.admit(at(4)), Admission::Full));
        assert_eq!(slots.open(), 3);
        drop(first);
        let fifth = admitted(slots.admit(at(5)));
        assert_eq!(slots.open(), 3);
        drop((third, fourth, fifth));
        assert_eq!(slots.open(), 0);
    }
}
