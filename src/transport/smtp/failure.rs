//! The raw failure of the SMTP transport: what went wrong at which [`Stage`] (the server's
//! reply, a broken connection (refused, reset, closed, TLS, DNS, not SMTP), a local
//! limitation, or the spool), before any classification. Built from lettre's errors without
//! ever carrying raw server bytes into a log line; [`SmtpFailure::verdict`] classifies it
//! (`classify`).

use crate::vocab::provider::Provider;
use crate::vocab::verdict::{ConnectionFailure, Stage, TlsFailure, Verdict};

/// What went wrong in the SMTP conversation, at which stage; not yet classified.
#[derive(Debug, Clone)]
pub struct SmtpFailure {
    pub stage: Stage,
    pub kind: SmtpFailureKind,
    /// Whose mail server answered: chooses the reply catalogue. Built as Microsoft; the
    /// transport stamps its account's provider on every failure it returns.
    pub provider: Provider,
}

/// The nature of an SMTP failure.
#[derive(Debug, Clone)]
pub enum SmtpFailureKind {
    /// The server answered with a negative reply.
    Reply { code: u16, text: String },
    /// The conversation broke below SMTP.
    Connection {
        failure: ConnectionFailure,
        detail: String,
    },
    /// The relay itself could not go on (e.g. an address lettre cannot encode).
    Local(String),
    /// The relay could not read its own spooled copy of the message; nothing was delivered
    /// and the entry is verified again on the next attempt.
    Spool(String),
}

impl std::fmt::Display for SmtpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            SmtpFailureKind::Reply { code, text } => write!(f, "{code} {text}"),
            SmtpFailureKind::Connection { detail, .. } => f.write_str(detail),
            SmtpFailureKind::Local(detail) | SmtpFailureKind::Spool(detail) => f.write_str(detail),
        }
    }
}

impl SmtpFailure {
    /// The classification of this failure (see [`super::classify`]).
    pub fn verdict(&self) -> Verdict {
        super::classify::classify_failure(self)
    }

    /// The server's reply code, when the server answered.
    pub fn reply_code(&self) -> Option<u16> {
        match self.kind {
            SmtpFailureKind::Reply { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when the session cannot carry another transaction after this failure: the
    /// connection broke, the relay stopped on its own side, or the verdict says reconnect.
    /// (After a refusing reply the session may be reset and reused.)
    pub fn breaks_session(&self) -> bool {
        !matches!(self.kind, SmtpFailureKind::Reply { .. })
            || self.verdict().follow_up == crate::vocab::verdict::FollowUp::Reconnect
    }

    /// The same failure, classified by `provider`'s catalogue.
    pub fn under(self, provider: Provider) -> SmtpFailure {
        SmtpFailure { provider, ..self }
    }

    pub(super) fn local(stage: Stage, detail: impl Into<String>) -> SmtpFailure {
        SmtpFailure {
            provider: Provider::Microsoft,
            stage,
            kind: SmtpFailureKind::Local(detail.into()),
        }
    }

    pub(super) fn spool(stage: Stage, detail: impl Into<String>) -> SmtpFailure {
        SmtpFailure {
            provider: Provider::Microsoft,
            stage,
            kind: SmtpFailureKind::Spool(detail.into()),
        }
    }

    pub(super) fn timeout(stage: Stage) -> SmtpFailure {
        SmtpFailure {
            provider: Provider::Microsoft,
            stage,
            kind: SmtpFailureKind::Connection {
                failure: ConnectionFailure::Timeout,
                detail: format!("timed out during {stage}"),
            },
        }
    }

    /// Map a lettre error at `stage`.
    pub(super) fn from_lettre(stage: Stage, error: &lettre::transport::smtp::Error) -> SmtpFailure {
        if let Some(code) = error.status() {
            let text = std::error::Error::source(error)
                .map(|source| crate::vocab::text::one_line_excerpt(&source.to_string(), 1000))
                .unwrap_or_default();
            return SmtpFailure {
                provider: Provider::Microsoft,
                stage,
                kind: SmtpFailureKind::Reply {
                    code: u16::from(code),
                    text,
                },
            };
        }
        // Never raw server bytes in a log line: one line, bounded.
        let detail = crate::vocab::text::one_line_excerpt(&error.to_string(), 1000);
        let failure = connection_failure(error);
        SmtpFailure {
            provider: Provider::Microsoft,
            stage: if error.is_tls() && stage == Stage::StartTls {
                Stage::Tls
            } else {
                stage
            },
            kind: SmtpFailureKind::Connection { failure, detail },
        }
    }
}

fn connection_failure(error: &lettre::transport::smtp::Error) -> ConnectionFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return ConnectionFailure::Tls(match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    TlsFailure::CertificateInvalid
                }
                rustls::Error::PeerIncompatible(_) => TlsFailure::ProtocolVersion,
                _ => TlsFailure::HandshakeFailed,
            });
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            let kind = match io.kind() {
                ErrorKind::ConnectionRefused => Some(ConnectionFailure::Refused),
                ErrorKind::TimedOut => Some(ConnectionFailure::Timeout),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Some(ConnectionFailure::Reset),
                ErrorKind::UnexpectedEof => Some(ConnectionFailure::Closed),
                _ => None,
            };
            if let Some(kind) = kind {
                return kind;
            }
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return ConnectionFailure::Tls(match tls {
                    rustls::Error::InvalidCertificate(_) => TlsFailure::CertificateInvalid,
                    rustls::Error::PeerIncompatible(_) => TlsFailure::ProtocolVersion,
                    _ => TlsFailure::HandshakeFailed,
                });
            }
        }
        source = current.source();
    }
    if error.is_tls() {
        ConnectionFailure::Tls(TlsFailure::HandshakeFailed)
    } else if error.is_response() {
        ConnectionFailure::NotSmtp
    } else if error.is_timeout() {
        ConnectionFailure::Timeout
    } else {
        let text = error.to_string();
        if text.contains("failed to lookup") || text.contains("resolve") {
            ConnectionFailure::Dns
        } else {
            ConnectionFailure::Closed
        }
    }
}

/// The TLS failure behind an I/O error from a handshake.
pub(super) fn tls_failure(error: &std::io::Error) -> ConnectionFailure {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => {
            ConnectionFailure::Tls(TlsFailure::CertificateInvalid)
        }
        Some(rustls::Error::PeerIncompatible(_)) => {
            ConnectionFailure::Tls(TlsFailure::ProtocolVersion)
        }
        _ => ConnectionFailure::Tls(TlsFailure::HandshakeFailed),
    }
}
