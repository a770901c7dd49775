//! The mailbox's 24-hour budgets (recipients, and messages: `max_messages_per_day`) as the
//! delivery workers use them: a transaction's recipients and message are reserved before it
//! is sent, and the counts are saved in the state directory, at most every
//! [`BUDGET_SAVE_INTERVAL_SECS`] while delivering and always when the workers stop, under the
//! file names below.
//!
//! Invariant: what was reserved and then not taken (a message not sent, recipients refused)
//! is released by the caller (the worker), so the budgets count what the server may have
//! taken: a transaction whose outcome is uncertain (lost after the final dot) stays counted.

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
    /// Room for one more transaction of `recipients` in the mailbox's 24-hour budgets: its
    /// recipients and its message are reserved under each budget's lock, so that workers
    /// sending at once cannot all pass the last free places; the budget that is spent
    /// otherwise (nothing stays reserved then). Give back what was not used with
    /// [`release_budgets`](Self::release_budgets).
    pub(super) fn reserve_budgets(&self, recipients: usize) -> Result<(), ClassifiedFailure> {
        let now = unix_now();
        match self.budget.reserve(recipients, now) {
            Ok(crossed) => {
                if crossed {
                    tracing::warn!(
                        used = self.budget.used(now),
                        limit = self.budget.limit(),
                        "the mailbox has used 90% of its 24-hour recipient budget"
                    );
                }
            }
            Err(until) => {
                return Err(ClassifiedFailure::budget_spent(
                    self.budget.used(now),
                    self.budget.limit(),
                    until,
                ));
            }
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
            Err(until) => {
                self.budget.release(recipients);
                Err(ClassifiedFailure::message_budget_spent(
                    self.message_budget.used(now),
                    self.message_budget.limit(),
                    until,
                ))
            }
        }
    }

    /// Gives back what a reserved transaction did not use: `recipients` the server did not
    /// take and, when `message_unsent`, its message.
    pub(super) fn release_budgets(&self, recipients: usize, message_unsent: bool) {
        self.budget.release(recipients);
        if message_unsent {
            self.message_budget.release(1);
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
