//! `[relay] instances = N`: several relays, each with its own spool, sending as the same
//! mailboxes. What they must share is Exchange's per-mailbox budget (3 sessions, 30 messages a
//! minute, 10,000 recipients a day), and they do not talk to each other, so each instance
//! takes a fixed share of every account's limits: the account's values divided by N.
//!
//! Invariants: the share is the floor of the division, but never below one session and one
//! message a minute (a relay that may not send is no instance), and a non-zero daily
//! recipient budget never becomes 0 (which would mean "no budget"); 0 (no limit) stays 0.
//! With at most [`MAX_INSTANCES`] instances, each with at least one session, N instances
//! together never open more than Exchange's 3 sessions per mailbox.

use serde::Serialize;

/// The most instances: each needs at least one of the mailbox's 3 Exchange sessions.
pub const MAX_INSTANCES: usize = 3;

/// The per-mailbox limits of one account: as configured (what all instances together may
/// use), or one instance's share of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MailboxBudget {
    /// Concurrent upstream sessions (`max_connections`).
    pub sessions: usize,
    /// `max_messages_per_minute`; 0 means no pacing.
    pub messages_per_minute: u32,
    /// `max_recipients_per_day`; 0 means no budget.
    pub recipients_per_day: u32,
    /// `max_messages_per_day`; 0 means no budget (Gmail accounts: 2,000).
    pub messages_per_day: u32,
}

impl MailboxBudget {
    /// One instance's share when `instances` relays send as the mailbox. See the module docs.
    pub fn share(self, instances: usize) -> MailboxBudget {
        let instances = instances.max(1);
        let divisor = u32::try_from(instances).unwrap_or(u32::MAX);
        let divide_rate = |value: u32| match value {
            0 => 0,
            value => (value / divisor).max(1),
        };
        MailboxBudget {
            sessions: (self.sessions / instances).max(1),
            messages_per_minute: divide_rate(self.messages_per_minute),
            recipients_per_day: divide_rate(self.recipients_per_day),
            messages_per_day: divide_rate(self.messages_per_day),
        }
    }

    /// "1 of 3 sessions, 15 of 30 messages a minute, 5000 of 10000 recipients a day": this
    /// share against the `whole` budget, for `check` and the start-up log.
    pub fn describe_share_of(self, whole: MailboxBudget) -> String {
        let part = |share: u32, whole: u32, what: &str| {
            if whole == 0 {
                format!("unlimited {what}")
            } else {
                format!("{share} of {whole} {what}")
            }
        };
        let messages_per_day = if whole.messages_per_day == 0 {
            String::new()
        } else {
            format!(
                ", {}",
                part(
                    self.messages_per_day,
                    whole.messages_per_day,
                    "messages a day"
                )
            )
        };
        format!(
            "{} of {} sessions, {}, {}{messages_per_day}",
            self.sessions,
            whole.sessions,
            part(
                self.messages_per_minute,
                whole.messages_per_minute,
                "messages a minute"
            ),
            part(
                self.recipients_per_day,
                whole.recipients_per_day,
                "recipients a day"
            ),
        )
    }
}

impl super::AccountSettings {
    /// The limits this instance runs on (its share of `mailbox_budget`).
    pub fn instance_share(&self) -> MailboxBudget {
        MailboxBudget {
            sessions: self.max_connections,
            messages_per_minute: self.max_messages_per_minute,
            recipients_per_day: self.max_recipients_per_day,
            messages_per_day: self.max_messages_per_day,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(sessions: usize, messages_per_minute: u32, recipients_per_day: u32) -> MailboxBudget {
        MailboxBudget {
            sessions,
            messages_per_minute,
            recipients_per_day,
            messages_per_day: 0,
        }
    }

    #[test]
    fn each_instance_gets_the_floor_of_its_share_and_never_nothing() {
        let cases = [
            // (whole, instances, share)
            (budget(3, 30, 10_000), 1, budget(3, 30, 10_000)),
            (budget(3, 30, 10_000), 2, budget(1, 15, 5_000)),
            (budget(3, 30, 10_000), 3, budget(1, 10, 3_333)),
            (budget(2, 6, 100), 2, budget(1, 3, 50)),
            (budget(2, 7, 101), 2, budget(1, 3, 50)),
            // At least one session, one message a minute and one recipient a day.
            (budget(1, 1, 1), 3, budget(1, 1, 1)),
            (budget(2, 2, 2), 3, budget(1, 1, 1)),
            // 0 means unlimited, and stays so.
            (budget(3, 0, 0), 2, budget(1, 0, 0)),
            // Defensive: 0 instances is treated as one (validation refuses it).
            (budget(3, 30, 10_000), 0, budget(3, 30, 10_000)),
        ];
        for (whole, instances, expected) in cases {
            assert_eq!(
                whole.share(instances),
                expected,
                "{whole:?} over {instances}"
            );
        }
    }

    #[test]
    fn together_the_instances_stay_within_exchanges_limits() {
        let exchange = budget(3, 30, 10_000);
        for instances in 1..=MAX_INSTANCES {
            let share = exchange.share(instances);
            assert!(share.sessions * instances <= 3, "{instances}");
            assert!(share.messages_per_minute as usize * instances <= 30);
            assert!(share.recipients_per_day as usize * instances <= 10_000);
        }
    }

    #[test]
    fn the_description_names_share_and_whole() {
        assert_eq!(
            budget(1, 15, 5_000).describe_share_of(budget(3, 30, 10_000)),
            "1 of 3 sessions, 15 of 30 messages a minute, 5000 of 10000 recipients a day"
        );
        assert_eq!(
            budget(1, 0, 0).describe_share_of(budget(3, 0, 0)),
            "1 of 3 sessions, unlimited messages a minute, unlimited recipients a day"
        );
    }
}
