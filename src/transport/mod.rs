//! The transport seam: how delivery reaches the mail server of an account. Delivery only ever
//! speaks to these types; each transport is a module below (`smtp`: today's lettre session
//! to Exchange Online, STARTTLS and XOAUTH2; `graph`: Microsoft Graph `sendMail` over HTTPS).
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

pub mod graph;
pub mod smtp;

use std::fmt;

use crate::config::{AccountSettings, TransportKind};
use crate::oauth::token::AccessToken;
use crate::spool::Content;
use crate::vocab::address::Address;
use crate::vocab::envelope::Envelope;
use crate::vocab::verdict::{Stage, Verdict};

use self::graph::{GraphFailure, GraphSession, GraphTransport};
use self::smtp::{SmtpFailure, SmtpSession, SmtpTransport};

/// How to reach one account's mail server; built once per account.
#[derive(Debug, Clone)]
pub enum Transport {
    /// SMTP submission with STARTTLS (or implicit TLS) and `AUTH XOAUTH2`.
    Smtp(SmtpTransport),
    /// Microsoft Graph `sendMail` over HTTPS with the token as bearer.
    Graph(GraphTransport),
}

/// An open, authenticated session with an account's mail server.
pub enum TransportSession {
    /// Boxed: an SMTP session holds lettre's buffers, ten times a Graph session's size.
    Smtp(Box<SmtpSession>),
    Graph(GraphSession),
}

/// The raw failure of one step of a transport, not yet turned into a delivery decision.
#[derive(Debug, Clone)]
pub enum TransportError {
    Smtp(SmtpFailure),
    Graph(GraphFailure),
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
        Ok(match account.transport {
            TransportKind::Smtp => Transport::Smtp(SmtpTransport::new(account, hostname)?),
            TransportKind::Graph => Transport::Graph(GraphTransport::new(account)?),
        })
    }

    /// The server, for logs and DSNs (`host:port`).
    pub fn server(&self) -> String {
        match self {
            Transport::Smtp(smtp) => smtp.server(),
            Transport::Graph(graph) => graph.server(),
        }
    }

    /// Connect, secure and authenticate a session with `token`.
    ///
    /// # Errors
    /// [`TransportError`] naming the stage that failed.
    pub async fn open(&self, token: &AccessToken) -> Result<TransportSession, TransportError> {
        match self {
            Transport::Smtp(smtp) => Ok(TransportSession::Smtp(Box::new(smtp.open(token).await?))),
            Transport::Graph(graph) => Ok(TransportSession::Graph(graph.open(token))),
        }
    }
}

impl TransportSession {
    /// Messages sent (or attempted) on this session.
    pub fn messages_sent(&self) -> u32 {
        match self {
            TransportSession::Smtp(smtp) => smtp.transactions(),
            TransportSession::Graph(graph) => graph.transactions(),
        }
    }

    /// The token a session sends with every request (Graph), so that a refused one can be
    /// dropped; `None` for SMTP, which used its token once at AUTH.
    pub fn request_token(&self) -> Option<&AccessToken> {
        match self {
            TransportSession::Smtp(_) => None,
            TransportSession::Graph(graph) => Some(graph.token()),
        }
    }

    /// True when the session should not be used any more because its token is due for
    /// renewal (only a session that sends its token with every request).
    pub fn token_due_for_renewal(&self) -> bool {
        match self {
            TransportSession::Smtp(_) => false,
            TransportSession::Graph(graph) => graph.token_due_for_renewal(),
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
            TransportSession::Graph(graph) => Ok(graph
                .send(envelope, recipients, content)
                .await?
                .map_refusals(TransportError::Graph)),
        }
    }

    /// Make the session usable after a failed message; false when it is not.
    pub async fn reset(&mut self) -> bool {
        match self {
            TransportSession::Smtp(smtp) => smtp.reset().await,
            // Graph has no transaction state to reset.
            TransportSession::Graph(_) => true,
        }
    }

    /// Close the session politely (bounded in time).
    pub async fn quit(self) {
        match self {
            TransportSession::Smtp(smtp) => smtp.quit().await,
            TransportSession::Graph(_) => {}
        }
    }
}

impl TransportError {
    /// Where it happened.
    pub fn stage(&self) -> Stage {
        match self {
            TransportError::Smtp(failure) => failure.stage,
            TransportError::Graph(failure) => failure.stage,
        }
    }

    /// The server's reply code, when the server answered (for metrics and the waiting client).
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            TransportError::Smtp(failure) => failure.reply_code(),
            TransportError::Graph(failure) => failure.status(),
        }
    }

    /// The transport's classification of this failure.
    pub fn verdict(&self) -> Verdict {
        match self {
            TransportError::Smtp(failure) => failure.verdict(),
            TransportError::Graph(failure) => failure.verdict(),
        }
    }

    /// True when the session must be dropped rather than reset and reused.
    pub fn breaks_session(&self) -> bool {
        match self {
            TransportError::Smtp(failure) => failure.breaks_session(),
            TransportError::Graph(failure) => failure.breaks_session(),
        }
    }

    /// Not before this unix second, for the whole account: the server asked the account to
    /// wait (Graph's `Retry-After`).
    pub fn not_before(&self) -> Option<u64> {
        match self {
            TransportError::Smtp(_) => None,
            TransportError::Graph(failure) => failure.not_before(),
        }
    }
}

impl From<SmtpFailure> for TransportError {
    fn from(failure: SmtpFailure) -> Self {
        TransportError::Smtp(failure)
    }
}

impl From<GraphFailure> for TransportError {
    fn from(failure: GraphFailure) -> Self {
        TransportError::Graph(failure)
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Smtp(failure) => failure.fmt(f),
            TransportError::Graph(failure) => failure.fmt(f),
        }
    }
}
