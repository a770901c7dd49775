//! The transport seam: how delivery reaches the mail server of an account. Delivery only ever
//! speaks to these types; each transport is a module below (`smtp`: today's lettre session
//! to Exchange Online, STARTTLS and XOAUTH2).
//!
//! The seam is three enums with one variant per transport, dispatched by `match`:
//! - [`Transport`]: how to reach one account's server, built once per account;
//! - [`TransportSession`]: an open, authenticated session, reused for many messages; it sends one
//!   message to some recipients and says, per recipient, accepted or refused ([`SendResult`]);
//! - [`TransportError`]: the raw failure of a step, with its [`Stage`]; the transport that
//!   raised it also classifies it ([`TransportError::verdict`]), because only it knows its
//!   replies, but what then happens to the message is decided by `delivery` alone.
//!
//! Enums rather than a trait: the set of transports is closed and known at build time, the
//! methods are `async` (a trait with `async fn` is not object-safe, and a generic
//! `AccountDelivery<T>` would spread a type parameter into the app), and a new variant makes
//! the compiler point at every `match` that must learn it. A new transport (Microsoft Graph's
//! `sendMail`, say) adds a module here, a variant to each enum and its arms; the queue, the
//! spool, delivery and the inbound side do not change.
//!
//! Invariants:
//! - Every step of every transport is bounded in time and ends in a value or a
//!   [`TransportError`] naming its stage; no transport panics on what the server sends.
//! - A session that [`TransportError::breaks_session`] is dropped, never reused.

pub mod smtp;

use std::fmt;

use crate::config::AccountSettings;
use crate::oauth::token::AccessToken;
use crate::spool::Content;
use crate::vocab::address::Address;
use crate::vocab::envelope::Envelope;
use crate::vocab::verdict::{Stage, Verdict};

use self::smtp::{SmtpFailure, SmtpSession, SmtpTransport};

/// How to reach one account's mail server; built once per account.
#[derive(Debug, Clone)]
pub enum Transport {
    /// SMTP submission with STARTTLS (or implicit TLS) and `AUTH XOAUTH2`.
    Smtp(SmtpTransport),
}

/// An open, authenticated session with an account's mail server.
pub enum TransportSession {
    Smtp(SmtpSession),
}

/// The raw failure of one step of a transport, not yet turned into a delivery decision.
#[derive(Debug, Clone)]
pub enum TransportError {
    Smtp(SmtpFailure),
}

/// What sending one message to some recipients achieved.
#[derive(Debug)]
pub struct SendResult<F = TransportError> {
    /// Recipients the server accepted (they have the message when `reply` is set).
    pub accepted: Vec<Address>,
    /// Recipients the server refused, each with its refusal.
    pub rejected: Vec<(Address, F)>,
    /// The server's reply to the content; `None` when no recipient was accepted.
    pub reply: Option<String>,
}

impl<F> Default for SendResult<F> {
    fn default() -> Self {
        SendResult {
            accepted: Vec::new(),
            rejected: Vec::new(),
            reply: None,
        }
    }
}

impl<F> SendResult<F> {
    /// The same result with each refusal converted.
    fn map_refusals<G>(self, convert: impl Fn(F) -> G) -> SendResult<G> {
        SendResult {
            accepted: self.accepted,
            rejected: self
                .rejected
                .into_iter()
                .map(|(recipient, refusal)| (recipient, convert(refusal)))
                .collect(),
            reply: self.reply,
        }
    }
}

impl Transport {
    /// The transport `account` is configured for; `hostname` is the relay's own name.
    ///
    /// # Errors
    /// When the transport cannot be prepared (e.g. an unusable `ca_file` certificate).
    pub fn new(account: &AccountSettings, hostname: &str) -> Result<Transport, String> {
        Ok(Transport::Smtp(SmtpTransport::new(account, hostname)?))
    }

    /// The server, for logs and DSNs (`host:port`).
    pub fn server(&self) -> String {
        match self {
            Transport::Smtp(smtp) => smtp.server(),
        }
    }

    /// Connect, secure and authenticate a session with `token`.
    ///
    /// # Errors
    /// [`TransportError`] naming the stage that failed.
    pub async fn open(&self, token: &AccessToken) -> Result<TransportSession, TransportError> {
        match self {
            Transport::Smtp(smtp) => Ok(TransportSession::Smtp(smtp.open(token).await?)),
        }
    }
}

impl TransportSession {
    /// Messages sent (or attempted) on this session.
    pub fn messages_sent(&self) -> u32 {
        match self {
            TransportSession::Smtp(smtp) => smtp.transactions(),
        }
    }

    /// Send `content` to `recipients`: a recipient the server refuses does not stop the
    /// others.
    ///
    /// # Errors
    /// [`TransportError`] when the message as a whole was not accepted; after one that does
    /// not [`break the session`](TransportError::breaks_session), [`reset`](Self::reset)
    /// makes it usable again.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        recipients: &[Address],
        content: &Content,
    ) -> Result<SendResult, TransportError> {
        match self {
            TransportSession::Smtp(smtp) => Ok(smtp
                .send(envelope, recipients, content)
                .await?
                .map_refusals(TransportError::Smtp)),
        }
    }

    /// Make the session usable after a failed message; false when it is not.
    pub async fn reset(&mut self) -> bool {
        match self {
            TransportSession::Smtp(smtp) => smtp.reset().await,
        }
    }

    /// Close the session politely (bounded in time).
    pub async fn quit(self) {
        match self {
            TransportSession::Smtp(smtp) => smtp.quit().await,
        }
    }
}

impl TransportError {
    /// Where it happened.
    pub fn stage(&self) -> Stage {
        match self {
            TransportError::Smtp(failure) => failure.stage,
        }
    }

    /// The server's reply code, when the server answered (for metrics and the waiting client).
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            TransportError::Smtp(failure) => failure.reply_code(),
        }
    }

    /// The transport's classification of this failure.
    pub fn verdict(&self) -> Verdict {
        match self {
            TransportError::Smtp(failure) => failure.verdict(),
        }
    }

    /// True when the session must be dropped rather than reset and reused.
    pub fn breaks_session(&self) -> bool {
        match self {
            TransportError::Smtp(failure) => failure.breaks_session(),
        }
    }
}

impl From<SmtpFailure> for TransportError {
    fn from(failure: SmtpFailure) -> Self {
        TransportError::Smtp(failure)
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Smtp(failure) => failure.fmt(f),
        }
    }
}
