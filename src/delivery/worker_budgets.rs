//! The mailbox's 24-hour budgets (recipients, and messages: `max_messages_per_day`) as the
//! delivery workers use them: room is checked and one message reserved before each
//! transaction, and the counts are saved in the state directory, at most every
//! [`BUDGET_SAVE_INTERVAL_SECS`] while delivering and always when the workers stop, under the
//! file names below.
//!
//! Invariant: a message reserved and then not sent is released by the caller (the worker), so
//! the budget counts only what the server may have taken.

use super::failure::ClassifiedFailure;
use super::worker::AccountDelivery;
use crate::spool::unix_now;

/// How often the 24-hour budgets are saved while delivering.
const BUDGET_SAVE_INTERVAL_SECS: u64 = 10;

pub(super) fn budget_file(account: &str) -> String {
    format!("{account}.recipients.json")
}

pub(super) fn message_budget_file(account: &str) -> String {
    format!("{account}.messages.json")
}

impl AccountDelivery {
    /// Room for one more transaction of `recipients` in the mailbox's 24-hour budgets: the
    /// recipients are checked (counted once sent), one message is reserved (released if it
    /// is not sent); the budget that is spent otherwise.
    pub(super) fn reserve_budgets(&self, recipients: usize) -> Result<(), ClassifiedFailure> {
        let now = unix_now();
        if let Err(until) = self.budget.check(recipients, now) {
            return Err(ClassifiedFailure::budget_spent(
                self.budget.used(now),
                self.budget.limit(),
                until,
            ));
        }
        match self.message_budget.reserve(1, now) {
            Ok(crossed) => {
                if crossed {
                    tracing::warn!(
                        used = self.message_budget.used(now),
                        limit = self.message_budget.limit(),
                        "the mailbox has used 90% of its 24-hour message budget"
                    );
                }
                Ok(())
            }
            Err(until) => Err(ClassifiedFailure::message_budget_spent(
                self.message_budget.used(now),
                self.message_budget.limit(),
                until,
            )),
        }
    }

    /// Persist the recipient counts: at most every few seconds while delivering (a crash
    /// loses only the last seconds of counts), and always when the workers stop.
    pub(super) async fn save_budget(&self, force: bool) {
        use std::sync::atomic::Ordering;
        if self.budget.limit() == 0 && self.message_budget.limit() == 0 {
            return;
        }
        let now = unix_now();
        let last = self.budget_saved_at.load(Ordering::Relaxed);
        if !force && now.saturating_sub(last) < BUDGET_SAVE_INTERVAL_SECS {
            return;
        }
        // Only one worker saves per interval.
        if self
            .budget_saved_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
            && !force
        {
            return;
        }
        for (file, budget) in [
            (budget_file(&self.account.name), &self.budget),
            (
                message_budget_file(&self.account.name),
                &self.message_budget,
            ),
        ] {
            if budget.limit() == 0 {
                continue;
            }
            if let Err(error) = self
                .shared
                .spool
                .write_state(&file, budget.snapshot())
                .await
            {
                tracing::warn!(%error, "cannot save the 24-hour budget");
            }
        }
    }
}
