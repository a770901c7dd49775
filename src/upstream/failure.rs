//! What went wrong upstream, at which [`Stage`]: the server's reply, a transport failure
//! (refused, reset, closed, TLS, DNS, not SMTP), a local limitation, or the spool. Built from
//! lettre's errors without ever carrying raw server bytes into a log line.

use crate::vocab::verdict::{Stage, TlsFailure, TransportFailure};

/// What went wrong, at which stage.
#[derive(Debug, Clone)]
pub struct UpstreamFailure {
    pub stage: Stage,
    pub kind: FailureKind,
}

/// The nature of an upstream failure.
#[derive(Debug, Clone)]
pub enum FailureKind {
    /// The server answered with a negative reply.
    Reply { code: u16, text: String },
    /// The conversation broke below SMTP.
    Transport {
        failure: TransportFailure,
        detail: String,
    },
    /// The relay itself could not go on (e.g. an address lettre cannot encode).
    Local(String),
    /// The relay could not read its own spooled copy of the message; nothing was delivered
    /// and the entry is verified again on the next attempt.
    Spool(String),
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            FailureKind::Reply { code, text } => write!(f, "{code} {text}"),
            FailureKind::Transport { detail, .. } => f.write_str(detail),
            FailureKind::Local(detail) | FailureKind::Spool(detail) => f.write_str(detail),
        }
    }
}

impl UpstreamFailure {
    pub(super) fn local(stage: Stage, detail: impl Into<String>) -> UpstreamFailure {
        UpstreamFailure {
            stage,
            kind: FailureKind::Local(detail.into()),
        }
    }

    pub(super) fn spool(stage: Stage, detail: impl Into<String>) -> UpstreamFailure {
        UpstreamFailure {
            stage,
            kind: FailureKind::Spool(detail.into()),
        }
    }

    pub(super) fn timeout(stage: Stage) -> UpstreamFailure {
        UpstreamFailure {
            stage,
            kind: FailureKind::Transport {
                failure: TransportFailure::Timeout,
                detail: format!("timed out during {stage}"),
            },
        }
    }

    /// Map a lettre error at `stage`.
    pub(super) fn from_lettre(
        stage: Stage,
        error: &lettre::transport::smtp::Error,
    ) -> UpstreamFailure {
        if let Some(code) = error.status() {
            let text = std::error::Error::source(error)
                .map(|source| crate::vocab::text::one_line_excerpt(&source.to_string(), 1000))
                .unwrap_or_default();
            return UpstreamFailure {
                stage,
                kind: FailureKind::Reply {
                    code: u16::from(code),
                    text,
                },
            };
        }
        // Never raw server bytes in a log line: one line, bounded.
        let detail = crate::vocab::text::one_line_excerpt(&error.to_string(), 1000);
        let failure = transport_failure(error);
        UpstreamFailure {
            stage: if error.is_tls() && stage == Stage::StartTls {
                Stage::Tls
            } else {
                stage
            },
            kind: FailureKind::Transport { failure, detail },
        }
    }
}

fn transport_failure(error: &lettre::transport::smtp::Error) -> TransportFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return TransportFailure::Tls(match tls {
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
                ErrorKind::ConnectionRefused => Some(TransportFailure::Refused),
                ErrorKind::TimedOut => Some(TransportFailure::Timeout),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => Some(TransportFailure::Reset),
                ErrorKind::UnexpectedEof => Some(TransportFailure::Closed),
                _ => None,
            };
            if let Some(kind) = kind {
                return kind;
            }
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return TransportFailure::Tls(match tls {
                    rustls::Error::InvalidCertificate(_) => TlsFailure::CertificateInvalid,
                    rustls::Error::PeerIncompatible(_) => TlsFailure::ProtocolVersion,
                    _ => TlsFailure::HandshakeFailed,
                });
            }
        }
        source = current.source();
    }
    if error.is_tls() {
        TransportFailure::Tls(TlsFailure::HandshakeFailed)
    } else if error.is_response() {
        TransportFailure::NotSmtp
    } else if error.is_timeout() {
        TransportFailure::Timeout
    } else {
        let text = error.to_string();
        if text.contains("failed to lookup") || text.contains("resolve") {
            TransportFailure::Dns
        } else {
            TransportFailure::Closed
        }
    }
}

/// The TLS failure behind an I/O error from a handshake.
pub(super) fn tls_failure(error: &std::io::Error) -> TransportFailure {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => {
            TransportFailure::Tls(TlsFailure::CertificateInvalid)
        }
        Some(rustls::Error::PeerIncompatible(_)) => {
            TransportFailure::Tls(TlsFailure::ProtocolVersion)
        }
        _ => TransportFailure::Tls(TlsFailure::HandshakeFailed),
    }
}
