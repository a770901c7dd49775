//! The verdict on one delivery outcome, as every part speaks of it: the [`Stage`] where it
//! happened, its [`Class`] (transient, configuration, permanent), the reason and the fix in
//! words, and the follow-up advice. Each transport's classifier (`transport::smtp::classify`)
//! decides verdicts and `delivery` acts on them; the spool stores their words, the queue and
//! the operator tools show them.
//!
//! Invariant: a verdict's text is static and never contains a secret; reply text from a server
//! enters an operator line only through [`super::text::one_line_excerpt`], cut to
//! [`MAX_QUOTED_REPLY_CHARS`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::text::one_line_excerpt;

/// Where in the upstream SMTP conversation an outcome happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// Opening the TCP connection (including name resolution).
    #[serde(rename = "connect")]
    Connect,
    /// Waiting for the server's 220 greeting.
    #[serde(rename = "greeting")]
    Greeting,
    /// EHLO, before or after TLS.
    #[serde(rename = "ehlo")]
    Ehlo,
    /// The STARTTLS command.
    #[serde(rename = "starttls")]
    StartTls,
    /// The TLS handshake after STARTTLS.
    #[serde(rename = "tls")]
    Tls,
    /// AUTH XOAUTH2.
    #[serde(rename = "auth")]
    Auth,
    /// MAIL FROM.
    #[serde(rename = "mail")]
    MailFrom,
    /// RCPT TO (the verdict is about one recipient).
    #[serde(rename = "rcpt")]
    RcptTo,
    /// The DATA command and sending the message body, before the final dot.
    #[serde(rename = "data")]
    Data,
    /// The reply to the final dot; the caller switches to this stage as soon as it starts
    /// writing the dot, because from then on Exchange may have the message.
    #[serde(rename = "data-end")]
    DataEnd,
    /// RSET between messages.
    #[serde(rename = "rset")]
    Rset,
    /// QUIT.
    #[serde(rename = "quit")]
    Quit,
}

impl Stage {
    /// The word used in log lines and the spool.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Greeting => "greeting",
            Self::Ehlo => "ehlo",
            Self::StartTls => "starttls",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::MailFrom => "mail",
            Self::RcptTo => "rcpt",
            Self::Data => "data",
            Self::DataEnd => "data-end",
            Self::Rset => "rset",
            Self::Quit => "quit",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the relay does with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// T: back off and retry until the queue lifetime ends.
    Transient,
    /// C: an admin must act; keep the mail queued, retry slowly (to cover propagation), alert,
    /// and bounce only when the queue lifetime ends.
    Configuration,
    /// P: fail this message (or this recipient) and bounce it.
    Permanent,
}

impl Class {
    /// The word used in log lines and the spool.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Configuration => "configuration",
            Self::Permanent => "permanent",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Extra advice for the caller, beyond the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowUp {
    /// Nothing beyond the class.
    None,
    /// §5.1: drop the cached token, fetch a fresh one and retry AUTH once; if that fails too,
    /// keep the configuration verdict (do not loop).
    RefreshTokenOnce,
    /// Transient now, but alert and treat as configuration if it persists for more than 1 h.
    EscalateAfterOneHour,
    /// A rolling 24-hour quota: retry with a long back-off (hours, not minutes).
    LongBackoff,
    /// Too many concurrent sessions for the mailbox: lower the account's concurrency.
    ReduceConcurrency,
    /// Too many recipients: send the remaining recipients in a new transaction.
    SplitRecipients,
    /// The session is unusable or out of step: close it and reconnect.
    Reconnect,
}

/// The verdict on one upstream outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What to do with the message.
    pub class: Class,
    /// What happened, in plain words (no final period).
    pub reason: &'static str,
    /// The admin action, with the PowerShell line where the doc gives one; empty when none.
    pub fix: &'static str,
    /// True when the final dot may have reached Exchange, so a retry can deliver twice.
    pub duplicate_possible: bool,
    /// Extra advice for the caller.
    pub follow_up: FollowUp,
}

impl Verdict {
    pub const fn new(class: Class, reason: &'static str, fix: &'static str) -> Self {
        Self {
            class,
            reason,
            fix,
            duplicate_possible: false,
            follow_up: FollowUp::None,
        }
    }

    /// A transient verdict.
    pub const fn transient(reason: &'static str, fix: &'static str) -> Self {
        Self::new(Class::Transient, reason, fix)
    }

    /// A configuration verdict.
    pub const fn configuration(reason: &'static str, fix: &'static str) -> Self {
        Self::new(Class::Configuration, reason, fix)
    }

    /// A permanent verdict.
    pub const fn permanent(reason: &'static str, fix: &'static str) -> Self {
        Self::new(Class::Permanent, reason, fix)
    }

    /// The same verdict with follow-up advice.
    pub const fn with(self, follow_up: FollowUp) -> Self {
        Self { follow_up, ..self }
    }

    /// The same verdict, marked as possibly delivered already.
    pub const fn possibly_delivered(self) -> Self {
        Self {
            duplicate_possible: true,
            ..self
        }
    }

    /// One human line: `<class>: <reason>. Fix: <fix>` (no fix part when there is none).
    pub fn operator_line(&self) -> String {
        format!("{}: {}", self.class, self.explanation())
    }

    /// The operator line for a reply, quoting what Exchange said (one line, at most
    /// [`MAX_QUOTED_REPLY_CHARS`] characters of its text):
    /// `<class> at <stage>: Exchange replied "<code> <text>": <reason>. Fix: <fix>`.
    pub fn reply_operator_line(&self, stage: Stage, code: u16, text: &str) -> String {
        let quoted = one_line_excerpt(text, MAX_QUOTED_REPLY_CHARS);
        format!(
            "{} at {stage}: Exchange replied \"{code} {quoted}\": {}",
            self.class,
            self.explanation()
        )
    }

    /// `<reason>. Fix: <fix>` (reasons of possible duplicates say so themselves).
    fn explanation(&self) -> String {
        let mut text = self.reason.to_owned();
        if !self.fix.is_empty() {
            text.push_str(". Fix: ");
            text.push_str(self.fix);
        }
        text
    }
}

/// Longest piece of reply text quoted in an operator line, in characters.
pub const MAX_QUOTED_REPLY_CHARS: usize = 200;

/// What went wrong below the mail protocol: the connection itself failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionFailure {
    /// The TCP connection was refused.
    Refused,
    /// No answer within the stage's timeout.
    Timeout,
    /// The connection was reset.
    Reset,
    /// The server closed the connection (EOF) without a reply.
    Closed,
    /// The server answered something that is not an SMTP reply.
    NotSmtp,
    /// TLS failed.
    Tls(TlsFailure),
    /// The server's host name could not be resolved.
    Dns,
}

/// Why TLS failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The certificate is not trusted or does not match the host name.
    CertificateInvalid,
    /// The handshake failed for another reason.
    HandshakeFailed,
    /// No common protocol version (the relay requires TLS 1.2 or later).
    ProtocolVersion,
}
