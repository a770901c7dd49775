//! Failures that are transient at first and a configuration fault once they persist: Exchange's
//! `430 4.2.0 … mailbox logon failure` (exchange-online.md §5) usually passes within minutes,
//! but after an hour without a success it means the service principal lacks FullAccess on the
//! mailbox, and the admin must be told instead of the queue quietly retrying.
//!
//! Invariant: the clock starts at the first such failure and stops at the next success; a
//! failure of any other kind neither starts nor escalates it.

use std::sync::Mutex;

use super::failure::ClassifiedFailure;
use crate::vocab::verdict::{Class, FollowUp};

/// How long a persistent mailbox logon failure is transient before it counts as configuration.
pub const LOGON_FAILURE_GRACE_SECS: u64 = 3600;

/// Since when one account's mailbox has failed to log on without a success in between.
#[derive(Debug, Default)]
pub struct LogonFailureClock {
    since: Mutex<Option<u64>>,
}

impl LogonFailureClock {
    /// Record `failure` at unix second `now`; once this kind of failure has lasted longer than
    /// [`LOGON_FAILURE_GRACE_SECS`], turn it into an account-wide configuration failure.
    pub fn observe(&self, failure: &mut ClassifiedFailure, now: u64) {
        if failure.verdict.follow_up != FollowUp::EscalateAfterOneHour {
            return;
        }
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        let first = *since.get_or_insert(now);
        if now.saturating_sub(first) > LOGON_FAILURE_GRACE_SECS {
            failure.verdict.class = Class::Configuration;
            failure.account_wide = true;
        }
    }

    /// A message went through: the mailbox logs on again.
    pub fn clear(&self) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::smtp::classify::classify_reply;
    use crate::vocab::verdict::Stage;

    fn failure(code: u16, text: &str) -> ClassifiedFailure {
        let verdict = classify_reply(Stage::DataEnd, code, text);
        ClassifiedFailure {
            stage: Stage::DataEnd.to_string(),
            verdict,
            detail: format!("{code} {text}"),
            account_wide: false,
            not_before: None,
            code: Some(code),
        }
    }

    const LOGON: (u16, &str) = (
        430,
        "4.2.0 STOREDRV; mailbox logon failure; STOREDRV.Submission.Exception:ConnectionFailedTransientException.MapiExceptionLogonFailed; Cannot open mailbox",
    );

    #[test]
    fn a_logon_failure_is_transient_for_an_hour_then_configuration() {
        let clock = LogonFailureClock::default();
        let start = 1_800_000_000;
        // (seconds after the first failure, class expected, account-wide expected)
        let table = [
            (0, Class::Transient, false),
            (600, Class::Transient, false),
            (LOGON_FAILURE_GRACE_SECS, Class::Transient, false),
            (LOGON_FAILURE_GRACE_SECS + 1, Class::Configuration, true),
            (5 * LOGON_FAILURE_GRACE_SECS, Class::Configuration, true),
        ];
        for (after, class, account_wide) in table {
            let mut seen = failure(LOGON.0, LOGON.1);
            assert_eq!(seen.verdict.class, Class::Transient, "classified transient");
            clock.observe(&mut seen, start + after);
            assert_eq!(
                seen.verdict.class, class,
                "{after} s after the first failure"
            );
            assert_eq!(seen.account_wide, account_wide, "{after} s");
        }
    }

    #[test]
    fn a_success_restarts_the_clock() {
        let clock = LogonFailureClock::default();
        let mut first = failure(LOGON.0, LOGON.1);
        clock.observe(&mut first, 1000);
        clock.clear();
        let mut later = failure(LOGON.0, LOGON.1);
        clock.observe(&mut later, 1000 + 2 * LOGON_FAILURE_GRACE_SECS);
        assert_eq!(later.verdict.class, Class::Transient);
        let mut an_hour_after_that = failure(LOGON.0, LOGON.1);
        clock.observe(
            &mut an_hour_after_that,
            1000 + 3 * LOGON_FAILURE_GRACE_SECS + 1,
        );
        assert_eq!(an_hour_after_that.verdict.class, Class::Configuration);
    }

    #[test]
    fn other_failures_neither_start_nor_escalate() {
        let clock = LogonFailureClock::default();
        let mut busy = failure(451, "4.7.500 Server busy. Please try again later.");
        clock.observe(&mut busy, 1000);
        let mut logon = failure(LOGON.0, LOGON.1);
        clock.observe(&mut logon, 1000 + 2 * LOGON_FAILURE_GRACE_SECS);
        assert_eq!(
            logon.verdict.class,
            Class::Transient,
            "the clock starts here"
        );
        let mut busy_later = failure(451, "4.7.500 Server busy. Please try again later.");
        clock.observe(&mut busy_later, 1000 + 9 * LOGON_FAILURE_GRACE_SECS);
        assert_eq!(busy_later.verdict.class, Class::Transient);
    }
}
