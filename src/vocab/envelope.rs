//! What the relay knows about one queued message besides its content: who sent it, to whom,
//! through which account, and how its delivery went so far. The spool stores it
//! (`spool::format` encodes and checks it), the queue schedules by it, delivery updates it and
//! the operator tools show it.
//!
//! Invariant: no secret is ever part of an envelope.

use serde::{Deserialize, Serialize};

use super::address::Address;

/// A queue id: 16 upper-case hex digits, safe as a file name and sortable by creation time.
pub type QueueId = String;

/// When the entry was created (unix milliseconds), read from its id.
pub fn id_created_millis(id: &str) -> Option<u64> {
    id.get(..11)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}

/// True when `id` has the shape of a queue id (so it can never escape the spool directory).
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Who handed the message to the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Peer address `ip:port`.
    pub peer: String,
    /// The name given in EHLO/HELO.
    pub helo: Option<String>,
    /// `user NAME` or `network CIDR`.
    pub principal: String,
}

/// The last failed delivery attempt, for operators and for the retry logic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastAttempt {
    /// Unix seconds.
    pub at: u64,
    /// `transient`, `configuration` or `permanent`.
    pub class: String,
    /// Where it failed (`connect`, `auth`, `data-end`, …).
    pub stage: String,
    /// What the server said or what went wrong (never a secret).
    pub reply: String,
    /// What the administrator can do about it.
    pub hint: String,
}

/// A recipient that will not get the message, and why: the record kept in `failed/` entries
/// and reported in DSNs (the classified failure it came from is `delivery`'s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRecipient {
    pub recipient: Address,
    /// Unix seconds.
    pub at: u64,
    /// `permanent`, or the class of the last attempt for an expired message.
    pub class: String,
    pub stage: String,
    /// What the server said or what went wrong (never a secret).
    pub reply: String,
    /// What the administrator can do about it.
    pub hint: String,
}

/// Everything the relay knows about one queued message, besides its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    /// The `[[account]]` that delivers it.
    pub account: String,
    /// `None` is the null reverse-path `<>`.
    pub sender: Option<Address>,
    pub recipients: Vec<Address>,
    /// Unix seconds.
    pub received_at: u64,
    pub body_len: u64,
    /// Lower-case hex SHA-256 of the body file.
    pub body_sha256: String,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub client: ClientInfo,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: u64,
    pub last_attempt: Option<LastAttempt>,
    /// Recipients that already have the message (a partial delivery).
    #[serde(default)]
    pub delivered: Vec<Address>,
    /// In `failed/` entries: why each recipient failed.
    #[serde(default)]
    pub failures: Vec<FailedRecipient>,
    /// This message is a delivery status notification made by the relay: it is never
    /// bounced itself.
    #[serde(default)]
    pub is_bounce: bool,
    /// Attempts whose outcome was unknown (the connection was lost after the final dot): a
    /// later delivery may be a duplicate.
    #[serde(default)]
    pub uncertain_attempts: u32,
    /// Unix seconds when an administrator put this failed message back in the queue; its
    /// `max_age` then counts from here instead of from `received_at`.
    #[serde(default)]
    pub requeued_at: Option<u64>,
}

impl Envelope {
    /// A fresh envelope for a message being received now; the spool fills in the id and the
    /// body's length and checksum at commit.
    pub fn new(
        account: &str,
        sender: Option<Address>,
        recipients: Vec<Address>,
        client: ClientInfo,
        now: u64,
    ) -> Envelope {
        let smtputf8 = recipients.iter().any(|r| !r.is_ascii())
            || sender.as_ref().is_some_and(|s| !s.is_ascii());
        Envelope {
            id: String::new(),
            account: account.to_string(),
            sender,
            recipients,
            received_at: now,
            body_len: 0,
            body_sha256: String::new(),
            eight_bit: false,
            smtputf8,
            client,
            attempts: 0,
            next_attempt: now,
            last_attempt: None,
            delivered: Vec::new(),
            failures: Vec::new(),
            is_bounce: false,
            uncertain_attempts: 0,
            requeued_at: None,
        }
    }

    /// Where the message's queue lifetime (`max_age`) starts: its arrival, or the moment it
    /// was requeued by an administrator.
    pub fn queue_lifetime_start(&self) -> u64 {
        self.requeued_at.unwrap_or(self.received_at)
    }
}
