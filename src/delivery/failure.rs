//! The failure delivery acts on ([`ClassifiedFailure`]): a failure with its verdict and what
//! delivery needs to settle it (account-wide or not, not before when), and the ways to make
//! one: from a transport's raw failure ([`TransportError`], classified by its transport), from
//! the token provider, from the relay's own limits (the recipient budget, recipients left for
//! another transaction, outcomes too often unknown).
//!
//! Invariant: every failure carries its class, the reason in words and the administrator's fix,
//! so the log line, the queue listing and the DSN all say the same thing.

use crate::oauth::token::TokenError;
use crate::transport::TransportError;
use crate::vocab::address::Address;
use crate::vocab::envelope::FailedRecipient;
use crate::vocab::verdict::{Class, FollowUp, Stage, Verdict};

/// One failure, classified: what delivery decides on.
#[derive(Debug, Clone)]
pub struct ClassifiedFailure {
    pub stage: String,
    pub verdict: Verdict,
    /// The server's reply or what went wrong.
    pub detail: String,
    /// The whole account is failing, not just this message: pause its queue.
    pub account_wide: bool,
    /// Do not retry before this unix second (e.g. the recipient budget).
    pub not_before: Option<u64>,
    /// The SMTP reply code, when the server answered.
    pub code: Option<u16>,
}

/// After this many attempts whose outcome was unknown (connection lost after the final dot),
/// a message is not sent again: at most this many copies can reach Exchange.
pub const MAX_UNCERTAIN_ATTEMPTS: u32 = 3;
/// The stage recorded for recipients held back by [`MAX_UNCERTAIN_ATTEMPTS`].
pub(super) const OUTCOME_UNKNOWN_STAGE: &str = "outcome-unknown";

impl ClassifiedFailure {
    /// A failure of the transport, with the transport's verdict.
    pub fn from_transport(failure: &TransportError) -> ClassifiedFailure {
        let verdict = failure.verdict();
        let stage = failure.stage();
        ClassifiedFailure {
            code: failure.reply_code(),
            stage: stage.to_string(),
            detail: failure.to_string(),
            account_wide: matches!(
                stage,
                Stage::Connect
                    | Stage::Greeting
                    | Stage::Ehlo
                    | Stage::StartTls
                    | Stage::Tls
                    | Stage::Auth
            ) || matches!(
                // The mailbox's quota or its session limit: about the mailbox, not the message.
                verdict.follow_up,
                FollowUp::LongBackoff | FollowUp::ReduceConcurrency
            ) || failure.not_before().is_some(), // the server asked the account to wait
            verdict,
            not_before: failure.not_before(),
        }
    }

    pub fn from_token(error: &TokenError) -> ClassifiedFailure {
        let class = if error.is_configuration() {
            Class::Configuration
        } else {
            Class::Transient
        };
        let fix = error.fix();
        ClassifiedFailure {
            stage: "token".into(),
            verdict: Verdict {
                class,
                reason: "the token endpoint did not issue an access token",
                fix,
                duplicate_possible: false,
                follow_up: FollowUp::None,
            },
            detail: error.to_string(),
            account_wide: true,
            not_before: None,
            code: None,
        }
    }

    /// The mailbox's rolling 24-hour recipient budget is spent until `until`.
    pub fn budget_spent(used: u64, limit: u64, until: u64) -> ClassifiedFailure {
        ClassifiedFailure {
            stage: "budget".into(),
            verdict: Verdict {
                class: Class::Transient,
                reason: "the mailbox's 24-hour recipient budget is spent (the mail service would refuse more: Exchange Online with 554 5.2.0 SubmissionQuotaExceeded, Gmail with 550 5.4.5)",
                fix: "wait for the window to slide, spread the traffic over several mailboxes, or use HVE / Azure Communication Services for bulk mail",
                duplicate_possible: false,
                follow_up: FollowUp::LongBackoff,
            },
            detail: format!("{used} of {limit} recipients used in the last 24 hours"),
            account_wide: true,
            not_before: Some(until),
            code: None,
        }
    }

    /// The mailbox's rolling 24-hour message budget (`max_messages_per_day`) is spent until
    /// `until`.
    pub fn message_budget_spent(used: u64, limit: u64, until: u64) -> ClassifiedFailure {
        ClassifiedFailure {
            detail: format!("{used} of {limit} messages sent in the last 24 hours"),
            verdict: Verdict {
                reason: "the mailbox's 24-hour message budget is spent (max_messages_per_day; Gmail refuses more than 2,000 a day per user with 550 5.4.5)",
                fix: "wait for the window to slide, or spread the traffic over several mailboxes",
                ..ClassifiedFailure::budget_spent(used, limit, until).verdict
            },
            ..ClassifiedFailure::budget_spent(used, limit, until)
        }
    }

    /// The attempt used its share of transactions; the remaining recipients follow soon.
    /// The end of re-sending after `attempts` uncertain outcomes (see
    /// [`MAX_UNCERTAIN_ATTEMPTS`]).
    pub fn outcome_unknown(attempts: u32) -> ClassifiedFailure {
        ClassifiedFailure {
            stage: OUTCOME_UNKNOWN_STAGE.into(),
            verdict: Verdict {
                class: Class::Permanent,
                reason: "the connection was lost after the end of data again and again; Exchange probably has the message, so it is not sent again",
                fix: "look the message up in Exchange's message trace; if it is not there, `smtp-oauth-relay queue requeue ID` sends it again",
                duplicate_possible: false,
                follow_up: FollowUp::None,
            },
            detail: format!(
                "{attempts} attempts ended with the connection lost after the final dot"
            ),
            account_wide: false,
            not_before: None,
            code: None,
        }
    }

    pub fn more_to_send() -> ClassifiedFailure {
        ClassifiedFailure {
            stage: "split".into(),
            verdict: Verdict {
                class: Class::Transient,
                reason: "the envelope needs more transactions than one attempt may use",
                fix: "",
                duplicate_possible: false,
                follow_up: FollowUp::SplitRecipients,
            },
            detail: "more recipients to send in the next attempt".into(),
            account_wide: false,
            not_before: None,
            code: None,
        }
    }

    pub(super) fn record(&self, recipient: &Address, at: u64, fix: &str) -> FailedRecipient {
        FailedRecipient {
            recipient: recipient.clone(),
            at,
            class: self.verdict.class.to_string(),
            stage: self.stage.clone(),
            reply: self.detail.clone(),
            hint: fix.to_string(),
        }
    }

    /// The verdict's fix with its `<mailbox>` placeholder replaced by the account's `mailbox`
    /// and `<sender>` by the sender the reply names (Exchange's
    /// `… not allowed to send as <address>`), else the envelope `sender`: the admin gets the
    /// line to run as it is.
    pub fn fix_for(&self, sender: Option<&Address>, mailbox: &Address) -> String {
        let named = self
            .detail
            .split_once("not allowed to send as ")
            .and_then(|(_, rest)| rest.split([';', ' ', ',']).next())
            .map(|address| address.trim_matches(['<', '>']))
            .filter(|address| Address::parse(address).is_ok());
        let sender = named
            .map(str::to_string)
            .or_else(|| sender.map(ToString::to_string));
        let fix = self.verdict.fix.replace("<mailbox>", mailbox.as_str());
        match sender {
            Some(sender) => fix.replace("<sender>", &sender),
            None => fix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::verdict::Class;

    fn send_as_denied(detail: &str) -> ClassifiedFailure {
        ClassifiedFailure {
            stage: "data-end".into(),
            verdict: Verdict::new(
                Class::Permanent,
                "not allowed",
                "Add-RecipientPermission -Identity <sender> -Trustee <mailbox> -AccessRights SendAs",
            ),
            detail: detail.into(),
            account_wide: false,
            not_before: None,
            code: Some(554),
        }
    }

    #[test]
    fn the_fix_names_the_sender_and_the_mailbox() {
        let mailbox = Address::parse("relay@contoso.com").unwrap();
        let envelope = Address::parse("info@contoso.com").unwrap();
        // (Exchange's reply, the sender the fix names)
        let cases = [
            (
                "554 5.2.252 SendAsDenied; relay@contoso.com not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception",
                "ceo@contoso.com",
            ),
            (
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
                "info@contoso.com",
            ),
        ];
        for (reply, sender) in cases {
            assert_eq!(
                send_as_denied(reply).fix_for(Some(&envelope), &mailbox),
                format!(
                    "Add-RecipientPermission -Identity {sender} -Trustee relay@contoso.com -AccessRights SendAs"
                ),
                "{reply}"
            );
        }
        assert_eq!(
            send_as_denied("550 5.7.60 x").fix_for(None, &mailbox),
            "Add-RecipientPermission -Identity <sender> -Trustee relay@contoso.com -AccessRights SendAs"
        );
    }
}
