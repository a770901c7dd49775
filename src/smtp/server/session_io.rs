//! What the session state machine and its connection driver exchange: the listener settings
//! it is built with, the [`Step`]s it returns (a reply, an [`Action`] for the driver, and a
//! [`Refusal`] to log and count), and what the driver reports back ([`DataOutcome`]).
//!
//! Invariant: plain data, no behaviour beyond constructors; all protocol decisions stay in
//! `session.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::policy::{Grant, Principal};
use crate::smtp::proto::reply::Reply;
use crate::spool::DiskReserve;
use crate::vocab::address::Address;
use crate::vocab::secret::Secret;
use crate::vocab::tls_mode::TlsMode;

/// Per-listener settings the session needs.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub hostname: String,
    pub tls_mode: TlsMode,
    pub allow_auth_without_tls: bool,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Errors (5xx answers to commands) tolerated before the connection is closed.
    pub max_errors: u32,
    /// Failed AUTH attempts tolerated in one session before it is closed.
    pub max_auth_failures: u32,
    /// The spool's disk reserve: below it MAIL gets `452 4.3.1` (an atomic read, no I/O).
    pub disk_reserve: Arc<DiskReserve>,
}

/// What the driver must do after sending the [`Step`]'s reply.
#[derive(Debug)]
pub enum Action {
    None,
    /// Read the message content, store it, then call
    /// [`Session::data_finished`](super::session::Session::data_finished).
    ReceiveData(Box<DataRequest>),
    /// Run the TLS handshake, then call
    /// [`Session::tls_established`](super::session::Session::tls_established).
    StartTls,
    /// Check these credentials off the reactor, then call
    /// [`Session::auth_finished`](super::session::Session::auth_finished).
    VerifyPassword {
        username: String,
        password: Secret,
    },
    /// Close the connection.
    Close,
}

/// One reply (or none) and the action that follows it.
#[derive(Debug)]
pub struct Step {
    pub reply: Option<Reply>,
    pub action: Action,
    /// Set when the access policy turned the client away: the driver logs and counts it, so
    /// an admin can see why a device's mail never arrives.
    pub refusal: Option<Refusal>,
}

/// A transaction refused by the access policy (not a protocol error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Metric label: `not authenticated` or `sender not allowed`.
    pub reason: &'static str,
    /// What was refused and by which rule, for the log line.
    pub detail: String,
}

impl Step {
    pub(super) fn reply(reply: Reply) -> Step {
        Step {
            reply: Some(reply),
            action: Action::None,
            refusal: None,
        }
    }

    pub(super) fn then(reply: Reply, action: Action) -> Step {
        Step {
            reply: Some(reply),
            action,
            refusal: None,
        }
    }

    pub(super) fn refused(mut self, reason: &'static str, detail: String) -> Step {
        self.refusal = Some(Refusal { reason, detail });
        self
    }
}

/// Everything the driver needs to receive and store one message.
#[derive(Debug, Clone)]
pub struct DataRequest {
    /// The account chosen at MAIL by the envelope sender; the `From:` header decides the
    /// final one (see [`crate::message::sender::route`]).
    pub account: String,
    pub principal: Principal,
    /// The client's grant: its sender rules apply to the `From:` header.
    pub grant: Arc<Grant>,
    pub sender: Option<Address>,
    pub recipients: Vec<Address>,
    pub peer: SocketAddr,
    pub helo: Option<String>,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA` or `ESMTPSA` (RFC 3848), for the Received header.
    pub protocol: &'static str,
    pub smtputf8: bool,
    pub max_size: u64,
}

/// How receiving and storing a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOutcome {
    /// Stored durably under this queue id.
    Queued(String),
    /// Stored, and Exchange already accepted it (`acknowledge = "delivered"`).
    Delivered { id: String, reply: String },
    /// Exchange refused it for good; this is its reply (`acknowledge = "delivered"`).
    Rejected { code: u16, text: String },
    /// The content was larger than the limit.
    TooLarge,
    /// The header section was larger than the limit.
    HeaderTooLarge,
    /// The `From:` header names a sender the client may not use.
    FromRefused(String),
    /// The spool's disk is full.
    StorageFull,
    /// The spool could not store the message.
    StorageFailed,
    /// The spool's disk did not answer before the DATA deadline.
    StorageTimeout,
}
