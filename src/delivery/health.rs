//! An account's health as the admin endpoint shows it: since when the account as a whole has
//! been failing (the first failure of the current failing streak: token, connection, AUTH)
//! and when it last delivered a message.
//!
//! Invariants: "failing since" is set by the first account-wide failure of a streak and kept
//! by the following ones, and cleared by the next delivery; both are unix seconds; the value
//! is shared by an account's generations (a reload carries it over), so a reload neither
//! hides nor restarts a failing streak.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the status page, `/readyz` and `/metrics` read about one account's delivery.
#[derive(Debug, Default)]
pub struct AccountHealth {
    failing_since: Mutex<Option<u64>>,
    /// 0 until the first delivery since the relay started.
    last_delivered: AtomicU64,
}

impl AccountHealth {
    /// Since when (unix seconds) the account as a whole has been failing, if it is.
    pub fn failing_since(&self) -> Option<u64> {
        *self.failing_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When (unix seconds) the account last delivered a message since the relay started.
    pub fn last_delivered(&self) -> Option<u64> {
        match self.last_delivered.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// An account-wide failure at `now` (`true`) starts a failing streak unless one runs;
    /// `false` ends it.
    pub fn set_failing(&self, failing: bool, now: u64) {
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        match (failing, *since) {
            (true, None) => *since = Some(now),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }

    /// A message was delivered at `now`: the streak ends.
    pub fn delivered(&self, now: u64) {
        self.last_delivered.fetch_max(now.max(1), Ordering::Relaxed);
        self.set_failing(false, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_starts_at_its_first_failure_and_a_delivery_ends_it() {
        let health = AccountHealth::default();
        assert_eq!(
            (health.failing_since(), health.last_delivered()),
            (None, None)
        );
        health.set_failing(true, 100);
        health.set_failing(true, 160);
        assert_eq!(health.failing_since(), Some(100), "kept by later failures");
        health.delivered(200);
        assert_eq!(health.failing_since(), None);
        assert_eq!(health.last_delivered(), Some(200));
        health.set_failing(true, 300);
        assert_eq!(health.failing_since(), Some(300), "a new streak");
        assert_eq!(health.last_delivered(), Some(200));
    }
}
