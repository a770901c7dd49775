//! The raw failure of the Graph transport: Graph's answer (HTTP status, `error.code`, its
//! message and `Retry-After`), a broken connection (before the request left, or after it was
//! sent, when the outcome is unknown), a message the MIME path cannot carry, the account's
//! own throttling wait, or the spool. [`GraphFailure::verdict`] classifies it (`classify`).
//!
//! Invariants: no token and no request body ever enters a failure's text; Graph's message is
//! kept as one bounded line; `not_before` is a unix second at or after the end of the wait
//! Graph asked for.

use std::time::{Duration, SystemTime};

use crate::vocab::verdict::{ConnectionFailure, Stage, Verdict};

/// The longest `Retry-After` the relay honours as given (a longer one is cut to this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What went wrong talking to Graph, at which stage; not yet classified.
#[derive(Debug, Clone)]
pub struct GraphFailure {
    pub stage: Stage,
    pub kind: GraphFailureKind,
}

/// The nature of a Graph failure.
#[derive(Debug, Clone)]
pub enum GraphFailureKind {
    /// Graph answered with an error status.
    Reply {
        status: u16,
        /// `error.code` of Graph's JSON error (empty when the body had none).
        code: String,
        /// `error.message`, one bounded line.
        message: String,
        /// `Retry-After`, as a unix second to wait for (429, 503).
        not_before: Option<u64>,
        /// True when the request could have sent the message (sendMail, or a draft's send).
        sends: bool,
    },
    /// No answer: the connection failed (before the request left, at [`Stage::Connect`] or
    /// [`Stage::Tls`]; after it was sent, at [`Stage::DataEnd`] for a sending request).
    Connection {
        failure: ConnectionFailure,
        detail: String,
    },
    /// The message's base64 MIME does not fit in one Graph request.
    TooLarge { bytes: u64 },
    /// Graph asked the account to wait (an earlier `Retry-After`) and the wait is not over:
    /// nothing was sent.
    Waiting { not_before: u64 },
    /// The relay could not express the request (e.g. Graph's answer to a draft had no id).
    Local(String),
    /// The relay could not read its spooled copy; nothing was sent.
    Spool(String),
}

impl std::fmt::Display for GraphFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            GraphFailureKind::Reply {
                status,
                code,
                message,
                ..
            } => write!(f, "Graph answered {status} {code}: {message}"),
            GraphFailureKind::Connection { detail, .. } => f.write_str(detail),
            GraphFailureKind::TooLarge { bytes } => write!(
                f,
                "the message is {bytes} bytes, {} as base64: more than one Graph request carries",
                base64_len(*bytes)
            ),
            GraphFailureKind::Waiting { not_before } => {
                write!(
                    f,
                    "waiting for Graph's Retry-After (until unix second {not_before})"
                )
            }
            GraphFailureKind::Local(detail) | GraphFailureKind::Spool(detail) => {
                f.write_str(detail)
            }
        }
    }
}

/// Length of `bytes` bytes encoded as padded base64.
pub fn base64_len(bytes: u64) -> u64 {
    bytes.div_ceil(3).saturating_mul(4)
}

impl GraphFailure {
    /// The classification of this failure (see [`super::classify`]).
    pub fn verdict(&self) -> Verdict {
        super::classify::classify_failure(self)
    }

    /// The HTTP status, when Graph answered.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            GraphFailureKind::Reply { status, .. } => Some(status),
            _ => None,
        }
    }

    /// Do not try again (for the whole account) before this unix second.
    pub fn not_before(&self) -> Option<u64> {
        match self.kind {
            GraphFailureKind::Reply { not_before, .. } => not_before,
            GraphFailureKind::Waiting { not_before } => Some(not_before),
            _ => None,
        }
    }

    /// Graph has no session: only a refused token makes the relay start afresh (with a new
    /// token); everything else leaves the HTTP client as it is.
    pub fn breaks_session(&self) -> bool {
        self.verdict().follow_up == crate::vocab::verdict::FollowUp::RefreshTokenOnce
    }

    /// A Send As refusal names the message's `From:` addresses (Graph checks those, not the
    /// envelope sender), so the log and the fix say which address needs the right.
    pub(super) fn naming_from(mut self, from: &[String]) -> GraphFailure {
        if let GraphFailureKind::Reply { code, message, .. } = &mut self.kind
            && code == "ErrorSendAsDenied"
            && !from.is_empty()
        {
            message.push_str(&format!(" (From: {})", from.join(", ")));
        }
        self
    }

    pub(super) fn local(stage: Stage, detail: impl Into<String>) -> GraphFailure {
        GraphFailure {
            stage,
            kind: GraphFailureKind::Local(detail.into()),
        }
    }
}

/// The wait a `Retry-After` value asks for (RFC 9110 §10.2.3): delay-seconds, which Graph
/// sends, or an HTTP-date, which a proxy or another gateway may send (a date already past is
/// no wait). `None` when the value is neither.
pub fn retry_after_wait(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        // 2026-12-04T22:00:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_421_600);
        let cases: [(&str, Option<u64>); 7] = [
            ("30", Some(30)),
            (" 5 ", Some(5)),
            ("0", Some(0)),
            ("Fri, 04 Dec 2026 22:01:30 GMT", Some(90)),
            ("Fri, 04 Dec 2026 21:59:00 GMT", Some(0)),
            ("soon", None),
            ("-3", None),
        ];
        for (value, wait) in cases {
            assert_eq!(
                retry_after_wait(value, now),
                wait.map(Duration::from_secs),
                "{value}"
            );
        }
    }
}
