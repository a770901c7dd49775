//! A small, read-only SMTP probe for `check`: connect, greeting, EHLO, STARTTLS, the TLS
//! handshake (version, cipher, certificate), EHLO again, QUIT. It sends no credentials and no
//! mail; authentication is checked separately through the relay's own upstream client.
//! [`https_probe`] does the connect and the handshake alone, for the Graph host.

use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::UpstreamTls;

const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What the probe learned.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TlsReport {
    pub greeting: String,
    pub starttls_offered: bool,
    pub tls_version: String,
    pub cipher: String,
    pub certificate_subject: String,
    /// Unix seconds.
    pub certificate_not_after: Option<u64>,
    /// The mechanisms of the AUTH line after TLS.
    pub auth_mechanisms: Vec<String>,
}

/// Where and why the probe stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {detail}")]
pub struct ProbeError {
    /// `connect`, `greeting`, `ehlo`, `starttls` or `tls`.
    pub stage: &'static str,
    pub detail: String,
}

fn fail(stage: &'static str, detail: impl Into<String>) -> ProbeError {
    ProbeError {
        stage,
        detail: detail.into(),
    }
}

async fn reply<S: AsyncRead + Unpin>(
    reader: &mut BufReader<S>,
    stage: &'static str,
) -> Result<(u16, Vec<String>), ProbeError> {
    let mut lines = Vec::new();
    for _ in 0..100 {
        let mut line = String::new();
        let read = tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut line))
            .await
            .map_err(|_| fail(stage, "timed out waiting for the server"))?
            .map_err(|e| fail(stage, e.to_string()))?;
        if read == 0 {
            return Err(fail(stage, "the server closed the connection"));
        }
        let line = line.trim_end().to_string();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| fail(stage, format!("not an SMTP reply: {line}")))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or("").to_string());
        if last {
            return Ok((code, lines));
        }
    }
    Err(fail(stage, "the reply is too long"))
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut BufReader<S>,
    line: &str,
    stage: &'static str,
) -> Result<(u16, Vec<String>), ProbeError> {
    reader
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| fail(stage, e.to_string()))?;
    reply(reader, stage).await
}

/// Run the probe against `host:port`.
///
/// # Errors
/// [`ProbeError`] naming the step that failed.
pub async fn probe(
    host: &str,
    port: u16,
    mode: UpstreamTls,
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
    ehlo_name: &str,
) -> Result<TlsReport, ProbeError> {
    let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            fail(
                "connect",
                format!(
                    "no answer from {host}:{port} within {}s",
                    STEP_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| fail("connect", format!("{host}:{port}: {e}")))?;
    let config = crate::tls::client_config(extra_roots).map_err(|e| fail("tls", e))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| fail("tls", e.to_string()))?;
    let mut report = TlsReport::default();
    let tls = match mode {
        UpstreamTls::Implicit => {
            let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| fail("tls", "the handshake timed out"))?
                .map_err(|e| fail("tls", e.to_string()))?;
            let mut reader = BufReader::new(tls);
            report.greeting = greeting(&mut reader).await?;
            reader.into_inner()
        }
        UpstreamTls::Starttls | UpstreamTls::None => {
            let mut reader = BufReader::new(tcp);
            report.greeting = greeting(&mut reader).await?;
            let (code, caps) = command(&mut reader, &format!("EHLO {ehlo_name}"), "ehlo").await?;
            if code != 250 {
                return Err(fail("ehlo", format!("{code} {}", caps.join(" "))));
            }
            report.starttls_offered = caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS"));
            if mode == UpstreamTls::None {
                report.auth_mechanisms = auth_mechanisms(&caps);
                let _ = command(&mut reader, "QUIT", "quit").await;
                return Ok(report);
            }
            if !report.starttls_offered {
                return Err(fail("starttls", "the server does not offer STARTTLS"));
            }
            let (code, text) = command(&mut reader, "STARTTLS", "starttls").await?;
            if code != 220 {
                return Err(fail("starttls", format!("{code} {}", text.join(" "))));
            }
            tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, reader.into_inner()))
                .await
                .map_err(|_| fail("tls", "the handshake timed out"))?
                .map_err(|e| fail("tls", e.to_string()))?
        }
    };
    describe_tls(&mut report, tls.get_ref().1);
    let mut reader = BufReader::new(tls);
    let (code, caps) = command(&mut reader, &format!("EHLO {ehlo_name}"), "ehlo").await?;
    if code != 250 {
        return Err(fail("ehlo", format!("{code} {}", caps.join(" "))));
    }
    report.auth_mechanisms = auth_mechanisms(&caps);
    let _ = command(&mut reader, "QUIT", "quit").await;
    Ok(report)
}

/// The version, cipher and certificate of an established TLS connection.
fn describe_tls(report: &mut TlsReport, connection: &rustls::ClientConnection) {
    report.tls_version = connection
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    report.cipher = connection
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    if let Some(leaf) = connection.peer_certificates().and_then(|c| c.first())
        && let Ok((_, certificate)) = x509_parser::parse_x509_certificate(leaf.as_ref())
    {
        report.certificate_subject = certificate.subject().to_string();
        report.certificate_not_after =
            u64::try_from(certificate.validity().not_after.timestamp()).ok();
    }
}

/// Connect to `host:port` and complete a TLS handshake (nothing is sent over it): version,
/// cipher and certificate of an HTTPS host such as Graph's.
///
/// # Errors
/// The stage (`connect` or `tls`) and what went wrong.
pub async fn https_probe(
    host: &str,
    port: u16,
    extra_roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<TlsReport, ProbeError> {
    let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| fail("connect", format!("no answer from {host}:{port}")))?
        .map_err(|e| fail("connect", format!("{host}:{port}: {e}")))?;
    let config = crate::tls::client_config(extra_roots).map_err(|e| fail("tls", e))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| fail("tls", e.to_string()))?;
    let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| fail("tls", "the handshake timed out"))?
        .map_err(|e| fail("tls", e.to_string()))?;
    let mut report = TlsReport::default();
    describe_tls(&mut report, tls.get_ref().1);
    Ok(report)
}

async fn greeting<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> Result<String, ProbeError> {
    let (code, lines) = reply(reader, "greeting").await?;
    if code != 220 {
        return Err(fail("greeting", format!("{code} {}", lines.join(" "))));
    }
    Ok(lines.join(" "))
}

fn auth_mechanisms(caps: &[String]) -> Vec<String> {
    caps.iter()
        .find_map(|c| {
            let upper = c.to_ascii_uppercase();
            upper
                .strip_prefix("AUTH ")
                .map(|m| m.split_whitespace().map(str::to_string).collect())
        })
        .unwrap_or_default()
}

/// Days from now until `not_after` (negative when expired).
pub fn days_left(not_after: u64) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (i64::try_from(not_after).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0)) / 86_400
}
