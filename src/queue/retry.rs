//! When to try again: the retry schedule. Pure.
//!
//! Transient failures walk the configured schedule (the last step repeats); configuration
//! failures (an admin must act: consent, permissions, SMTP AUTH) retry at a fixed, patient
//! interval so that fixing the tenant releases the backlog within minutes without hammering
//! Microsoft while it is broken. Nothing is retried past `max_age`.

use std::time::Duration;

/// Interval between attempts while an administrator must fix something.
pub const CONFIGURATION_RETRY: Duration = Duration::from_secs(15 * 60);

/// Delay when Exchange says the mailbox's quota is spent (the 24-hour window must slide).
pub const LONG_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// Spread retries: add up to a tenth of `delay`, so that a backlog released by one event
/// does not come back as one burst. Never shortens the delay.
pub fn with_jitter(delay: Duration) -> Duration {
    let fraction = f64::from(crate::vocab::random::unique_u32()) / f64::from(u32::MAX);
    delay + delay.mul_f64(0.1 * fraction)
}

/// The delay after the `attempts`-th failed attempt (1-based) on the transient schedule.
pub fn transient_delay(schedule: &[Duration], attempts: u32) -> Duration {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    schedule
        .get(index)
        .or_else(|| schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(60))
}

/// The delay for a configuration failure: the fixed interval, but never shorter than the
/// transient schedule's first step (so tests with a short schedule stay short).
pub fn configuration_delay(schedule: &[Duration], attempts: u32) -> Duration {
    let transient = transient_delay(schedule, attempts);
    let first = schedule.first().copied().unwrap_or(CONFIGURATION_RETRY);
    if first < Duration::from_secs(60) {
        transient
    } else {
        CONFIGURATION_RETRY.max(first)
    }
}

/// True when a message received at `received_at` (unix seconds) is older than `max_age`.
pub fn expired(received_at: u64, now: u64, max_age: Duration) -> bool {
    now.saturating_sub(received_at) > max_age.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    #[test]
    fn schedule_steps_then_repeats_the_last() {
        let schedule = secs(&[60, 300, 900]);
        let delays: Vec<u64> = (1..=5)
            .map(|a| transient_delay(&schedule, a).as_secs())
            .collect();
        assert_eq!(delays, vec![60, 300, 900, 900, 900]);
        assert_eq!(transient_delay(&schedule, 0).as_secs(), 60);
        assert_eq!(transient_delay(&[], 3).as_secs(), 60);
    }

    #[test]
    fn configuration_failures_wait_patiently() {
        assert_eq!(
            configuration_delay(&secs(&[60, 300]), 1),
            CONFIGURATION_RETRY
        );
        assert_eq!(configuration_delay(&secs(&[3600]), 1).as_secs(), 3600);
        assert_eq!(configuration_delay(&secs(&[1, 2]), 2).as_secs(), 2);
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        for _ in 0..100 {
            let delay = Duration::from_secs(600);
            let jittered = with_jitter(delay);
            assert!(jittered >= delay && jittered <= Duration::from_secs(660));
        }
    }

    #[test]
    fn expiry() {
        let day = Duration::from_secs(86_400);
        assert!(!expired(1_000, 1_000 + 86_400, day));
        assert!(expired(1_000, 1_001 + 86_400, day));
        assert!(!expired(2_000, 1_000, day));
    }
}
