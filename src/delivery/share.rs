//! How many of an account's workers may hold an upstream session right now. Normally all of
//! them (`max_connections`); after Exchange refuses a session with `432 4.3.2` (another client
//! is using the mailbox's 3 sessions) one fewer, for a while, so the relay stops competing for
//! a slot it cannot have and retrying into the same refusal.
//!
//! Invariants: never fewer than one session; at most one session fewer per 30 seconds of
//! refusals; the full share comes back by itself once [`SHARE_RESTORED_AFTER_SECS`] pass
//! without another refusal.

use std::sync::Mutex;

/// How long a reduced share lasts after the last `432`.
pub const SHARE_RESTORED_AFTER_SECS: u64 = 600;
/// Refusals this soon after a reduction are echoes of the same crowding (a session being
/// closed for the reduction still counts at Exchange): they do not reduce again.
const SETTLE_SECS: u64 = 30;

#[derive(Debug)]
struct State {
    allowed: usize,
    restore_at: Option<u64>,
    reduced_at: Option<u64>,
}

/// The account's share of the mailbox's sessions.
#[derive(Debug)]
pub struct SessionShare {
    configured: usize,
    state: Mutex<State>,
    shrunk: tokio::sync::Notify,
}

impl SessionShare {
    /// A full share of `configured` sessions.
    pub fn new(configured: usize) -> SessionShare {
        SessionShare {
            configured: configured.max(1),
            state: Mutex::new(State {
                allowed: configured.max(1),
                restore_at: None,
                reduced_at: None,
            }),
            shrunk: tokio::sync::Notify::new(),
        }
    }

    /// Sessions the account may hold at unix second `now`.
    pub fn allowed(&self, now: u64) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.restore_at.is_some_and(|at| now >= at) {
            state.allowed = self.configured;
            state.restore_at = None;
        }
        state.allowed
    }

    /// Exchange refused a session for the mailbox: one session fewer (at least one) until
    /// `now` + [`SHARE_RESTORED_AFTER_SECS`]. Returns the new share.
    pub fn back_off(&self, now: u64) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let settling = state
            .reduced_at
            .is_some_and(|at| now.saturating_sub(at) < SETTLE_SECS);
        if !settling {
            state.allowed = state.allowed.saturating_sub(1).max(1);
            state.reduced_at = Some(now);
            self.shrunk.notify_waiters();
        }
        state.restore_at = Some(now + SHARE_RESTORED_AFTER_SECS);
        state.allowed
    }

    /// Completes when the share shrinks (for workers waiting idle with a session).
    pub fn shrunk(&self) -> tokio::sync::futures::Notified<'_> {
        self.shrunk.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_shrink_the_share_to_one_and_time_restores_it() {
        let share = SessionShare::new(3);
        assert_eq!(share.allowed(1000), 3);
        assert_eq!(share.back_off(1000), 2);
        assert_eq!(share.allowed(1001), 2);
        assert_eq!(share.back_off(1005), 2, "an echo of the same crowding");
        assert_eq!(share.back_off(1100), 1);
        assert_eq!(share.back_off(1200), 1, "never below one");
        // Restored a full period after the last refusal, not the first.
        assert_eq!(share.allowed(1000 + SHARE_RESTORED_AFTER_SECS), 1);
        assert_eq!(share.allowed(1200 + SHARE_RESTORED_AFTER_SECS), 3);
    }
}
