//! A rolling 24-hour budget of one mailbox: its recipients (Exchange Online allows 10,000
//! recipients a day per mailbox and then refuses everything with `554 5.2.0
//! …SubmissionQuotaExceeded` until the window slides; Gmail 10,000 too, then `550 5.4.5`) or,
//! counting one per transaction, its messages (`max_messages_per_day`: Gmail's 2,000).
//!
//! Invariants: counts are kept per minute, so memory is bounded (at most 1,440 buckets);
//! a message that does not fit waits until enough of the window has slid, it is never sent
//! to be refused; the counts survive a restart through a small state file (written without
//! fsync: losing the last seconds of counts in a crash errs by a handful of recipients).

use std::collections::VecDeque;
use std::sync::Mutex;

const WINDOW_SECS: u64 = 24 * 3600;

/// See the module docs. `limit = 0` disables the budget.
#[derive(Debug)]
pub struct RecipientBudget {
    limit: std::sync::atomic::AtomicU64,
    buckets: Mutex<VecDeque<(u64, u64)>>,
}

impl RecipientBudget {
    /// A budget of `limit` recipients per rolling 24 hours, starting from `saved` counts
    /// (`[[minute, count], …]` as written by [`snapshot`](Self::snapshot)).
    pub fn new(limit: u32, saved: Option<&[u8]>) -> RecipientBudget {
        let buckets: VecDeque<(u64, u64)> = saved
            .and_then(|bytes| serde_json::from_slice::<Vec<(u64, u64)>>(bytes).ok())
            .unwrap_or_default()
            .into_iter()
            .take(2 * 1440)
            .collect();
        RecipientBudget {
            limit: std::sync::atomic::AtomicU64::new(u64::from(limit)),
            buckets: Mutex::new(buckets),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64)>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expire(buckets: &mut VecDeque<(u64, u64)>, now: u64) {
        let oldest_kept = now.saturating_sub(WINDOW_SECS) / 60;
        while buckets
            .front()
            .is_some_and(|&(minute, _)| minute < oldest_kept)
        {
            buckets.pop_front();
        }
    }

    /// Recipients counted in the last 24 hours.
    pub fn used(&self, now: u64) -> u64 {
        let mut buckets = self.lock();
        Self::expire(&mut buckets, now);
        buckets.iter().map(|&(_, count)| count).sum()
    }

    /// The configured limit (0 = none).
    pub fn limit(&self) -> u64 {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Change the limit (configuration reload); the counts are kept.
    pub fn set_limit(&self, limit: u32) {
        self.limit
            .store(u64::from(limit), std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks and counts `count` under one lock, so that workers sending at once cannot all
    /// pass the last free place: `Ok(crossed 90 %)` when `count` fit and was counted, else
    /// the unix second from which it will fit (walking the window from its oldest minute
    /// until enough has slid out). A message with more recipients than the whole budget is let
    /// through once the window is empty (the server will judge it). Give back with
    /// [`release`](Self::release) what was not sent after all.
    pub fn reserve(&self, count: usize, now: u64) -> Result<bool, u64> {
        let limit = self.limit();
        if limit == 0 {
            return Ok(false);
        }
        let wanted = count as u64;
        let mut buckets = self.lock();
        Self::expire(&mut buckets, now);
        let used: u64 = buckets.iter().map(|&(_, c)| c).sum();
        if used + wanted > limit && used != 0 {
            let mut left = used;
            for &(minute, c) in buckets.iter() {
                left -= c;
                if left + wanted <= limit || left == 0 {
                    return Err((minute + 1) * 60 + WINDOW_SECS);
                }
            }
            return Err(now + 60);
        }
        let minute = now / 60;
        match buckets.back_mut() {
            Some((last, c)) if *last == minute => *c += wanted,
            _ => buckets.push_back((minute, wanted)),
        }
        let after = used + wanted;
        Ok(used * 10 < limit * 9 && after * 10 >= limit * 9)
    }

    /// Gives back `count` reserved but not sent (from the newest counts).
    pub fn release(&self, count: usize) {
        let mut left = count as u64;
        let mut buckets = self.lock();
        while left > 0 {
            let Some((_, c)) = buckets.back_mut() else {
                break;
            };
            let taken = left.min(*c);
            *c -= taken;
            left -= taken;
            if *c == 0 {
                buckets.pop_back();
            }
        }
    }

    /// The counts for the state file.
    pub fn snapshot(&self) -> Vec<u8> {
        let buckets: Vec<(u64, u64)> = self.lock().iter().copied().collect();
        serde_json::to_vec(&buckets).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn fits_until_the_limit_then_waits_for_the_window_to_slide() {
        let budget = RecipientBudget::new(10, None);
        assert!(budget.reserve(6, T0).is_ok());
        assert!(budget.reserve(4, T0 + 3600).is_ok());
        assert_eq!(budget.used(T0 + 3600), 10);
        // The 6 from T0 leave the window 24 h after their minute.
        let wait = budget.reserve(1, T0 + 7200).unwrap_err();
        assert!(
            wait > T0 + WINDOW_SECS && wait <= T0 + WINDOW_SECS + 120,
            "{wait}"
        );
        assert!(budget.reserve(1, wait).is_ok());
        // The 4 from T0 + 1 h have left too; the 1 just counted has not.
        assert_eq!(budget.used(T0 + WINDOW_SECS + 3600 + 120), 1);
    }

    #[test]
    fn ninety_percent_is_reported_once() {
        let budget = RecipientBudget::new(100, None);
        assert_eq!(budget.reserve(89, T0), Ok(false));
        assert_eq!(budget.reserve(1, T0), Ok(true));
        assert_eq!(budget.reserve(5, T0), Ok(false));
    }

    #[test]
    fn survives_a_restart_and_zero_means_unlimited() {
        let budget = RecipientBudget::new(5, None);
        assert!(budget.reserve(5, T0).is_ok());
        let restored = RecipientBudget::new(5, Some(&budget.snapshot()));
        assert!(restored.reserve(1, T0 + 10).is_err());
        let unlimited = RecipientBudget::new(0, None);
        assert_eq!(unlimited.reserve(1_000_000, T0), Ok(false));
        assert_eq!(unlimited.reserve(1_000_000, T0), Ok(false));
        assert_eq!(RecipientBudget::new(5, Some(b"garbage")).used(T0), 0);
    }

    #[test]
    fn a_reservation_takes_the_last_place_once_and_can_be_given_back() {
        let budget = RecipientBudget::new(2, None);
        assert_eq!(budget.reserve(1, T0), Ok(false));
        assert_eq!(budget.reserve(1, T0), Ok(true), "90 % crossed");
        let wait = budget.reserve(1, T0 + 5).unwrap_err();
        assert!(wait > T0 + WINDOW_SECS, "{wait}");
        budget.release(1);
        assert_eq!(budget.used(T0 + 5), 1);
        assert_eq!(budget.reserve(1, T0 + 5), Ok(true));
        budget.release(5);
        assert_eq!(budget.used(T0 + 5), 0);
        assert_eq!(RecipientBudget::new(0, None).reserve(9, T0), Ok(false));
    }

    #[test]
    fn an_oversized_message_is_let_through_on_an_empty_window() {
        let budget = RecipientBudget::new(10, None);
        assert!(budget.reserve(50, T0).is_ok());
        assert!(budget.reserve(1, T0).is_err(), "then the window is full");
    }
}
