//! Per-account pacing: at most N messages in any 60-second window (Exchange Online allows 30
//! a minute per mailbox and throttles beyond). Shared by all workers of an account.
//!
//! A message counts from the moment its send ended (when the worker drops its [`PaceSlot`]),
//! not from when it was allowed to start: Exchange counts a message when it accepts it, which
//! is before the relay reads the reply but after a slow first send (connect, TLS, AUTH) began.
//! Counting from the start would let the next message of the slot reach Exchange less than a
//! minute after the previous one. A send still in flight always counts.
//!
//! Invariants: a message may start only while fewer than N messages are in flight or ended
//! less than a minute ago; the lock is never held across an `.await`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);
/// How often a full window of sends still in flight is looked at again.
const IN_FLIGHT_RECHECK: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Window {
    next_id: u64,
    /// Each counted message: its id and when its send ended (`None`: still in flight).
    sends: Vec<(u64, Option<Instant>)>,
}

/// A sliding-window limiter; `per_minute = 0` disables it.
#[derive(Debug)]
pub struct Pacer {
    per_minute: usize,
    window: Mutex<Window>,
}

/// One message's place in the window; the send ends (and its minute starts) when it is dropped.
#[derive(Debug)]
pub struct PaceSlot<'a> {
    pacer: &'a Pacer,
    /// `None` when pacing is off.
    id: Option<u64>,
}

impl Drop for PaceSlot<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut window = self.pacer.lock();
            if let Some(send) = window.sends.iter_mut().find(|(sent, _)| *sent == id) {
                send.1 = Some(Instant::now());
            }
        }
    }
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            per_minute: usize::try_from(per_minute).unwrap_or(usize::MAX),
            window: Mutex::new(Window::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until one more message may be sent, and count it; hold the slot while sending.
    /// Cancel-safe (nothing is counted until it returns).
    pub async fn acquire(&self) -> PaceSlot<'_> {
        if self.per_minute == 0 {
            return PaceSlot {
                pacer: self,
                id: None,
            };
        }
        loop {
            let wait = {
                let mut window = self.lock();
                let now = Instant::now();
                window
                    .sends
                    .retain(|(_, ended)| ended.is_none_or(|t| now.duration_since(t) < WINDOW));
                if window.sends.len() < self.per_minute {
                    let id = window.next_id;
                    window.next_id += 1;
                    window.sends.push((id, None));
                    return PaceSlot {
                        pacer: self,
                        id: Some(id),
                    };
                }
                window
                    .sends
                    .iter()
                    .filter_map(|(_, ended)| *ended)
                    .min()
                    .map_or(IN_FLIGHT_RECHECK, |oldest| oldest + WINDOW - now)
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
            drop(pacer.acquire().await);
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
            drop(pacer.acquire().await);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_counts_from_the_end_of_its_send() {
        let pacer = Pacer::new(1);
        let start = Instant::now();
        let slot = pacer.acquire().await;
        // A slow first send (connect, TLS, AUTH): Exchange accepts it at about 10 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(slot);
        drop(pacer.acquire().await);
        assert_eq!(start.elapsed(), Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_in_flight_keeps_its_place_past_the_minute() {
        let pacer = Pacer::new(1);
        let start = Instant::now();
        let slot = pacer.acquire().await;
        let waiter = pacer.acquire();
        tokio::pin!(waiter);
        // Still sending after two minutes: the next one waits.
        assert!(
            tokio::time::timeout(Duration::from_secs(120), &mut waiter)
                .await
                .is_err()
        );
        drop(slot);
        let ended = start.elapsed();
        drop(waiter.await);
        assert!(start.elapsed() >= ended + WINDOW, "{:?}", start.elapsed());
    }
}
