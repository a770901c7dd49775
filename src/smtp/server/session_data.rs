//! The DATA verb of the session state machine: the transaction handed to the driver as a
//! [`DataRequest`], and the driver's [`DataOutcome`] turned into the reply.
//!
//! Invariants: DATA needs a transaction with at least one recipient and a grant; the
//! transaction ends with the outcome, whatever it is. The reply to the content is `250` only
//! for a message stored (or delivered, with `acknowledge = "delivered"`); Exchange's own
//! refusal is passed on with its code, its text cut to one line.

use std::sync::Arc;

use super::Session;
use crate::smtp::proto::reply::Reply;
use crate::smtp::server::session_io::{Action, DataOutcome, DataRequest, Step};

impl Session {
    /// `DATA`: hand the transaction to the driver, which receives the content.
    pub(super) fn data(&mut self) -> Step {
        let Some(transaction) = self.transaction.as_ref() else {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL command first"));
        };
        if transaction.recipients.is_empty() {
            return self.error(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        let Some(grant) = self.grant() else {
            return self.error(Reply::new(530, "5.7.0", "Authentication required"));
        };
        let extended = self.helo.as_ref().is_some_and(|hello| hello.extended);
        let authenticated = self.user.is_some();
        let protocol = match (extended, self.tls_active, authenticated) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let request = DataRequest {
            account: transaction.account.clone(),
            principal: grant.principal.clone(),
            grant: Arc::clone(grant),
            sender: transaction.effective_sender.clone(),
            recipients: transaction.recipients.clone(),
            peer: self.peer,
            helo: self.helo.as_ref().map(|hello| hello.name.clone()),
            protocol,
            smtputf8: transaction.mail.smtputf8,
            max_size: self.settings.max_message_size,
        };
        Step::then(
            Reply::bare(354, vec!["End data with <CR><LF>.<CR><LF>".into()]),
            Action::ReceiveData(Box::new(request)),
        )
    }

    /// The driver finished receiving the content.
    pub fn data_finished(&mut self, outcome: DataOutcome) -> Step {
        self.transaction = None;
        let max = self.settings.max_message_size;
        Step::reply(match outcome {
            DataOutcome::Queued(id) => Reply::new(250, "2.0.0", format!("Ok: queued as {id}")),
            DataOutcome::Delivered { id, reply } => Reply::new(
                250,
                "2.0.0",
                format!(
                    "Ok: delivered as {id} ({})",
                    crate::vocab::text::one_line_excerpt(&reply, 200)
                ),
            ),
            DataOutcome::Rejected { code, text } => {
                Reply::new(code, "", crate::vocab::text::one_line_excerpt(&text, 400))
            }
            DataOutcome::TooLarge => Reply::new(
                552,
                "5.3.4",
                format!("Message size exceeds fixed maximum message size of {max} bytes"),
            ),
            DataOutcome::FromRefused(address) => Reply::new(
                550,
                "5.7.1",
                format!("From: header address <{address}> is not allowed for this client"),
            ),
            DataOutcome::HeaderTooLarge => {
                Reply::new(552, "5.3.4", "Message header section is too large")
            }
            DataOutcome::StorageFull => Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage, please try again later",
            ),
            DataOutcome::StorageFailed => Reply::new(
                451,
                "4.3.0",
                "Local error while storing the message, please try again later",
            ),
            DataOutcome::StorageTimeout => Reply::new(
                451,
                "4.3.0",
                "The relay's disk is too slow to store the message, please try again later",
            ),
        })
    }
}
