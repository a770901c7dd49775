//! Per-account pacing: at most N messages in any 60-second window (Exchange Online allows 30
//! a minute per mailbox and throttles beyond). Shared by all workers of an account.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

/// A sliding-window limiter; `per_minute = 0` disables it.
#[derive(Debug)]
pub struct Pacer {
    per_minute: usize,
    sent: Mutex<VecDeque<Instant>>,
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            per_minute: usize::try_from(per_minute).unwrap_or(usize::MAX),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Wait until one more message may be sent, and count it. Cancel-safe.
    pub async fn acquire(&self) {
        if self.per_minute == 0 {
            return;
        }
        loop {
            let wait = {
                let mut sent = self.sent.lock().await;
                let now = Instant::now();
                while sent
                    .front()
                    .is_some_and(|&t| now.duration_since(t) >= WINDOW)
                {
                    sent.pop_front();
                }
                match sent.front() {
                    Some(&oldest) if sent.len() >= self.per_minute => oldest + WINDOW - now,
                    _ => {
                        sent.push_back(now);
                        return;
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_minute() {
        let pacer = Pacer::new(3);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..7 {
            pacer.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times
                .iter()
                .filter(|u| **u >= *t && **u < *t + WINDOW)
                .count();
            assert!(
                in_window <= 3,
                "{in_window} sends in the minute after send {i}: {times:?}"
            );
        }
        assert!(times[6] >= Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let pacer = Pacer::new(0);
        let start = Instant::now();
        for _ in 0..1000 {
            pacer.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
