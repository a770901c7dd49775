//! Brute-force protection for AUTH: failed attempts are counted per client address; an
//! address with too many failures in the window is refused (`421 4.7.0`) until the window has
//! passed, while every other address is served as usual. Password hashing is bounded too: at
//! most a few argon2 checks run at once, so a flood of AUTH lines cannot exhaust memory or the
//! blocking thread pool, and never runs on the async reactor.
//!
//! Invariants: memory is bounded (addresses whose failures have all left the window are
//! forgotten; at most [`MAX_TRACKED_ADDRESSES`] are tracked); a success does not erase earlier
//! failures (an attacker who knows one password cannot reset the counter for guessing others).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Upper bound on the number of addresses tracked at once.
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Per-address AUTH failure counter. `max_failures = 0` disables it.
#[derive(Debug)]
pub struct AuthThrottle {
    settings: Mutex<(usize, Duration)>,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl AuthThrottle {
    pub fn new(max_failures: u32, window: Duration) -> AuthThrottle {
        AuthThrottle {
            settings: Mutex::new((usize::try_from(max_failures).unwrap_or(usize::MAX), window)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Apply new settings (configuration reload); counted failures are kept.
    pub fn reconfigure(&self, max_failures: u32, window: Duration) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) =
            (usize::try_from(max_failures).unwrap_or(usize::MAX), window);
    }

    fn settings(&self) -> (usize, Duration) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(remaining)` when `ip` is blocked, with how long until it may try again.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let (max_failures, window) = self.settings();
        if max_failures == 0 {
            return None;
        }
        let now = Instant::now();
        let mut failures = self.lock();
        let entry = failures.get_mut(&ip.to_canonical())?;
        while entry
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            entry.pop_front();
        }
        if entry.is_empty() {
            failures.remove(&ip.to_canonical());
            return None;
        }
        (entry.len() >= max_failures).then(|| {
            entry.front().map_or(window, |&oldest| {
                window.saturating_sub(now.duration_since(oldest))
            })
        })
    }

    /// Count a failed AUTH from `ip`; returns true when the address is now blocked.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let (max_failures, window) = self.settings();
        if max_failures == 0 {
            return false;
        }
        let now = Instant::now();
        {
            let mut failures = self.lock();
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                failures.retain(|_, times| {
                    times
                        .back()
                        .is_some_and(|&t| now.duration_since(t) < window)
                });
            }
            if failures.len() < MAX_TRACKED_ADDRESSES {
                let entry = failures.entry(ip.to_canonical()).or_default();
                entry.push_back(now);
                while entry.len() > max_failures {
                    entry.pop_front();
                }
            }
        }
        self.blocked(ip).is_some()
    }
}

/// How many argon2 password checks may run at once.
pub fn password_check_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_after_the_limit_and_only_that_address_until_the_window_passes() {
        let throttle = AuthThrottle::new(3, Duration::from_secs(600));
        let attacker: IpAddr = "192.0.2.66".parse().unwrap();
        let user: IpAddr = "192.0.2.10".parse().unwrap();
        assert!(!throttle.record_failure(attacker));
        assert!(!throttle.record_failure(attacker));
        assert!(throttle.record_failure(attacker));
        assert!(throttle.blocked(attacker).is_some());
        assert!(throttle.blocked(user).is_none());
        let mapped: IpAddr = "::ffff:192.0.2.66".parse().unwrap();
        assert!(
            throttle.blocked(mapped).is_some(),
            "IPv4-mapped form is the same client"
        );
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(throttle.blocked(attacker).is_none());
    }

    #[test]
    fn zero_disables() {
        let throttle = AuthThrottle::new(0, Duration::from_secs(600));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..100 {
            assert!(!throttle.record_failure(ip));
        }
        assert!(throttle.blocked(ip).is_none());
    }
}
