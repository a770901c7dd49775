//! The SMTP transport, the first implementation of the transport seam (`super`): the outbound
//! SMTP session to Exchange Online, on lettre: connect, STARTTLS (TLS ≥ 1.2,
//! host name verified against the webpki roots plus `ca_file`), EHLO again, `AUTH XOAUTH2`,
//! then any number of MAIL/RCPT/DATA transactions with RSET between them. `xoauth2` runs
//! the AUTH exchange itself (Gmail's error challenge needs an empty answer lettre cannot give).
//!
//! Invariants:
//! - The token is only ever sent after TLS is up (unless the account says `smtp_tls =
//!   "none"`, a test-only setting), and only with XOAUTH2 (`xoauth2`), so it can never be
//!   sent as a LOGIN password.
//! - Every network step has a timeout (RFC 5321 §4.5.3.2 values for the transaction).
//! - Every failure names its [`Stage`] and carries either the server's reply or the kind of
//!   broken connection, so `classify` can judge it and the log can explain.
//! - lettre's `tracing` feature stays off: it would log the AUTH line.

use std::str::FromStr;

use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, CertificateStore, TlsParameters, TlsVersion,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use tokio::net::TcpStream;

use crate::config::{AccountSettings, UpstreamTls};
use crate::oauth::token::AccessToken;
use crate::spool::Content;
use crate::vocab::address::Address;
use crate::vocab::envelope::Envelope;
use crate::vocab::provider::Provider;
use crate::vocab::verdict::{ConnectionFailure, Stage};

pub mod classify;
mod failure;
mod steps;
mod stream;
mod xoauth2;

use super::SendResult;
use failure::tls_failure;
pub use failure::{SmtpFailure, SmtpFailureKind};
pub use steps::{GOODBYE_TIMEOUT, Timeouts};
use steps::{abort_bounded, timed};
use stream::{BreakHandle, ImplicitTls};

/// How to reach one account's SMTP server; built once per account.
#[derive(Clone)]
pub struct SmtpTransport {
    host: String,
    port: u16,
    mode: UpstreamTls,
    tls: Option<TlsParameters>,
    client_id: ClientId,
    mailbox: String,
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub timeouts: Timeouts,
    /// Whose server this is: its failures are classified by that provider's catalogue.
    provider: Provider,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SmtpTransport({}:{}, {:?})",
            self.host, self.port, self.mode
        )
    }
}

impl SmtpTransport {
    /// Prepare the connection parameters of `account`; `hostname` is our EHLO name.
    ///
    /// # Errors
    /// When the TLS parameters cannot be built (an unusable `ca_file` certificate).
    pub fn new(account: &AccountSettings, hostname: &str) -> Result<SmtpTransport, String> {
        let tls = match account.smtp_tls {
            UpstreamTls::None => None,
            UpstreamTls::Starttls | UpstreamTls::Implicit => {
                let mut builder = TlsParameters::builder(account.smtp_host.clone())
                    .certificate_store(CertificateStore::WebpkiRoots)
                    .set_min_tls_version(TlsVersion::Tlsv12);
                for root in &account.extra_roots {
                    let certificate = Certificate::from_der(root.to_vec())
                        .map_err(|e| format!("ca_file: unusable certificate: {e}"))?;
                    builder = builder.add_root_certificate(certificate);
                }
                Some(
                    builder
                        .build_rustls()
                        .map_err(|e| format!("TLS setup failed: {e}"))?,
                )
            }
        };
        Ok(SmtpTransport {
            host: account.smtp_host.clone(),
            port: account.smtp_port,
            mode: account.smtp_tls,
            tls,
            client_id: ClientId::Domain(hostname.to_string()),
            mailbox: account.mailbox.to_string(),
            extra_roots: account.extra_roots.clone(),
            timeouts: Timeouts::default(),
            provider: account.provider,
        })
    }

    /// The TCP connection (with `TCP_NODELAY`: lettre writes the final dot on its own, and
    /// without it each message waits out the server's delayed ACK, up to 200 ms on Windows),
    /// wrapped in TLS first for implicit TLS.
    async fn connect_stream(
        &self,
    ) -> Result<(Box<dyn AsyncTokioStream>, Option<BreakHandle>), SmtpFailure> {
        let transport = |failure: ConnectionFailure, detail: String| SmtpFailure {
            provider: self.provider,
            stage: Stage::Connect,
            kind: SmtpFailureKind::Connection { failure, detail },
        };
        let tcp = tokio::time::timeout(
            self.timeouts.connect,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SmtpFailure::timeout(Stage::Connect))?
        .map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectionFailure::Refused,
                std::io::ErrorKind::TimedOut => ConnectionFailure::Timeout,
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => {
                    ConnectionFailure::Dns
                }
                _ if e.to_string().contains("lookup") => ConnectionFailure::Dns,
                _ => ConnectionFailure::Reset,
            };
            transport(
                kind,
                format!("cannot connect to {}:{}: {e}", self.host, self.port),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        let breaker = BreakHandle::of(&tcp);
        if self.mode != UpstreamTls::Implicit {
            return Ok((Box::new(tcp), breaker));
        }
        let config = crate::tls::client_config(&self.extra_roots)
            .map_err(|e| SmtpFailure::local(Stage::Tls, e))?;
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| SmtpFailure::local(Stage::Tls, format!("{}: {e}", self.host)))?;
        let tls = tokio::time::timeout(
            self.timeouts.connect,
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| SmtpFailure::timeout(Stage::Tls))?
        .map_err(|e| SmtpFailure {
            provider: self.provider,
            stage: Stage::Tls,
            kind: SmtpFailureKind::Connection {
                failure: tls_failure(&e),
                detail: format!("TLS with {}: {e}", self.host),
            },
        })?;
        Ok((Box::new(ImplicitTls(tls)), breaker))
    }

    /// `host:port`, for logs.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connect, secure and authenticate a session with `token`.
    ///
    /// # Errors
    /// [`SmtpFailure`] naming the stage that failed.
    pub async fn open(&self, token: &AccessToken) -> Result<SmtpSession, SmtpFailure> {
        self.open_session(token)
            .await
            .map_err(|failure| failure.under(self.provider))
    }

    async fn open_session(&self, token: &AccessToken) -> Result<SmtpSession, SmtpFailure> {
        let (stream, breaker) = self.connect_stream().await?;
        let connect = AsyncSmtpConnection::connect_with_transport(stream, &self.client_id);
        let mut connection = timed(Stage::Greeting, self.timeouts.connect, connect).await?;
        if self.mode == UpstreamTls::Starttls {
            if !connection
                .server_info()
                .supports_feature(Extension::StartTls)
            {
                abort_bounded(&mut connection, self.timeouts.command).await;
                return Err(SmtpFailure::local(
                    Stage::StartTls,
                    "the server does not offer STARTTLS; refusing to send the token in clear",
                ));
            }
            let tls = self
                .tls
                .clone()
                .ok_or_else(|| SmtpFailure::local(Stage::StartTls, "no TLS parameters"))?;
            timed(
                Stage::StartTls,
                self.timeouts.connect,
                connection.starttls(tls, &self.client_id),
            )
            .await?;
        }
        if !connection
            .server_info()
            .supports_auth_mechanism(Mechanism::Xoauth2)
        {
            abort_bounded(&mut connection, self.timeouts.command).await;
            return Err(SmtpFailure::local(
                Stage::Auth,
                "the server does not offer AUTH XOAUTH2 (is smtp_server a submission endpoint such as smtp.office365.com:587 or smtp.gmail.com:587?)",
            ));
        }
        xoauth2::authenticate(
            &mut connection,
            &self.mailbox,
            token.secret().expose(),
            self.timeouts.command,
        )
        .await?;
        Ok(SmtpSession {
            connection,
            breaker,
            timeouts: self.timeouts.clone(),
            transactions: 0,
            provider: self.provider,
        })
    }
}

/// An authenticated upstream session, reused for many messages.
pub struct SmtpSession {
    connection: AsyncSmtpConnection,
    /// Breaks the connection off mid-DATA if streamed content fails (see [`Content::chunks`]).
    breaker: Option<BreakHandle>,
    timeouts: Timeouts,
    transactions: u32,
    provider: Provider,
}

impl SmtpSession {
    /// Messages sent (or attempted) on this session.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// One transaction: MAIL, RCPT for each of `recipients`, then DATA and the content if at
    /// least one recipient was accepted. A recipient the server refuses does not stop the
    /// others; the caller decides what its refusal means.
    ///
    /// # Errors
    /// [`SmtpFailure`] at the stage that failed (MAIL, DATA, the final dot, or the
    /// connection); after a reply failure the session is usable again once
    /// [`reset`](Self::reset) succeeds.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        recipients: &[Address],
        content: &Content,
    ) -> Result<SendResult<SmtpFailure>, SmtpFailure> {
        let provider = self.provider;
        match self.send_transaction(envelope, recipients, content).await {
            Ok(mut result) => {
                result.rejected = result
                    .rejected
                    .into_iter()
                    .map(|(recipient, failure)| (recipient, failure.under(provider)))
                    .collect();
                Ok(result)
            }
            Err(failure) => Err(failure.under(provider)),
        }
    }

    async fn send_transaction(
        &mut self,
        envelope: &Envelope,
        recipients: &[Address],
        content: &Content,
    ) -> Result<SendResult<SmtpFailure>, SmtpFailure> {
        self.transactions += 1;
        let info = self.connection.server_info();
        let size = usize::try_from(content.len()).unwrap_or(usize::MAX);
        let mut parameters = vec![MailParameter::Size(size)];
        if envelope.eight_bit {
            if !info.supports_feature(Extension::EightBitMime) {
                // RFC 6152: 8-bit content only to a server that offers 8BITMIME.
                return Err(SmtpFailure::local(
                    Stage::Data,
                    "the message has 8-bit content and the server does not offer 8BITMIME",
                ));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        if envelope.smtputf8 {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(SmtpFailure::local(
                    Stage::MailFrom,
                    "the message needs SMTPUTF8 (non-ASCII addresses) and the server does not offer it",
                ));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        // Everything that can fail locally is settled before MAIL FROM: once the server has
        // said 354, the only clean way out is the final dot.
        if content.is_streamed() && self.breaker.is_none() {
            // Without a way to break off, a read failure would end in a truncated message.
            return Err(SmtpFailure::spool(
                Stage::MailFrom,
                "cannot stream this message safely on this connection (no socket handle)",
            ));
        }
        // lettre always ends with "\r\n.\r\n"; the CRLF of our last line is that CRLF, so
        // `chunks` leaves it out (otherwise every message would gain an empty last line).
        let broken_off = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let abort = {
            let breaker = self.breaker.clone();
            let broken_off = broken_off.clone();
            Box::new(move || {
                broken_off.store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(breaker) = &breaker {
                    breaker.break_off();
                }
            })
        };
        let chunks = content.chunks(abort).map_err(|e| {
            SmtpFailure::spool(
                Stage::MailFrom,
                format!("cannot read the spooled message: {e}"),
            )
        })?;
        let sender = match &envelope.sender {
            Some(sender) => Some(lettre::Address::from_str(sender.as_str()).map_err(|e| {
                SmtpFailure::local(
                    Stage::MailFrom,
                    format!("sender <{sender}> cannot be sent: {e}"),
                )
            })?),
            None => None,
        };
        let mail = Mail::new(sender, parameters);
        timed(
            Stage::MailFrom,
            self.timeouts.command,
            self.connection.command(mail),
        )
        .await?;
        let mut result = SendResult::default();
        for recipient in recipients {
            let address = match lettre::Address::from_str(recipient.as_str()) {
                Ok(address) => address,
                Err(e) => {
                    let failure = SmtpFailure::local(
                        Stage::RcptTo,
                        format!("recipient <{recipient}> cannot be sent: {e}"),
                    );
                    result.rejected.push((recipient.clone(), failure));
                    continue;
                }
            };
            let rcpt = self.connection.command(Rcpt::new(address, vec![]));
            match timed(Stage::RcptTo, self.timeouts.command, rcpt).await {
                Ok(_) => result.accepted.push(recipient.clone()),
                // 421: the server is closing the session; that is about the session, not
                // about this recipient (RFC 5321 §3.8).
                Err(
                    failure @ SmtpFailure {
                        kind: SmtpFailureKind::Reply { code: 421, .. },
                        ..
                    },
                ) => return Err(failure),
                Err(
                    failure @ SmtpFailure {
                        kind: SmtpFailureKind::Reply { .. },
                        ..
                    },
                ) => {
                    result.rejected.push((recipient.clone(), failure));
                }
                Err(failure) => return Err(failure),
            }
        }
        if result.accepted.is_empty() {
            self.try_reset().await?;
            return Ok(result);
        }
        timed(
            Stage::Data,
            self.timeouts.data_start,
            self.connection.command(Data),
        )
        .await?;
        let sent = timed(
            Stage::DataEnd,
            self.timeouts.data_end,
            self.connection.message_iter(chunks),
        )
        .await;
        if broken_off.load(std::sync::atomic::Ordering::SeqCst) {
            // The final dot never left: nothing was delivered, so this is no uncertain outcome.
            return Err(SmtpFailure::spool(
                Stage::Data,
                "the spooled message changed or could not be read while it was sent; the connection was broken off before the end of data",
            ));
        }
        let response = sent?;
        result.reply = Some(crate::vocab::text::one_line_excerpt(
            &response.message().collect::<Vec<_>>().join(" "),
            1000,
        ));
        Ok(result)
    }

    /// `MAIL FROM:<sender>` then `RSET`: does the server take this sender? Sends no mail.
    /// (Exchange checks SendAs permissions only after DATA, so this cannot catch those.)
    ///
    /// # Errors
    /// [`SmtpFailure`] for a refused sender or a broken connection.
    pub async fn probe_sender(&mut self, sender: &Address) -> Result<String, SmtpFailure> {
        let provider = self.provider;
        self.probe(sender)
            .await
            .map_err(|failure| failure.under(provider))
    }

    async fn probe(&mut self, sender: &Address) -> Result<String, SmtpFailure> {
        let address = lettre::Address::from_str(sender.as_str()).map_err(|e| {
            SmtpFailure::local(
                Stage::MailFrom,
                format!("sender <{sender}> cannot be sent: {e}"),
            )
        })?;
        let mail = Mail::new(Some(address), vec![]);
        let response = timed(
            Stage::MailFrom,
            self.timeouts.command,
            self.connection.command(mail),
        )
        .await?;
        let _ = self.reset().await;
        Ok(format!(
            "{} {}",
            u16::from(response.code()),
            response.message().collect::<Vec<_>>().join(" ")
        ))
    }

    /// RSET after a failed transaction; false when the session is no longer usable.
    pub async fn reset(&mut self) -> bool {
        self.try_reset().await.is_ok()
    }

    /// RSET, with the reason when it fails.
    async fn try_reset(&mut self) -> Result<(), SmtpFailure> {
        timed(
            Stage::Rset,
            self.timeouts.command,
            self.connection.command(Rset),
        )
        .await
        .map(|_| ())
    }

    /// Say goodbye politely (bounded in time).
    pub async fn quit(mut self) {
        let limit = self.timeouts.command.min(GOODBYE_TIMEOUT);
        let _ = tokio::time::timeout(limit, self.connection.quit()).await;
    }
}
