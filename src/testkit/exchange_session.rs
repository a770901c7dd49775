//! One SMTP conversation with the fake Exchange server: greeting, EHLO/HELO, STARTTLS (the
//! session is rebuilt on the TLS stream and pipelined plaintext is dropped), AUTH, MAIL,
//! RCPT, DATA with the post-dot checks, and the injected faults of each stage.
//!
//! Invariants:
//! - the session state is reset by STARTTLS: the client must EHLO again, nothing sent before
//!   the handshake survives;
//! - AUTH is only possible under TLS, MAIL only after a successful AUTH;
//! - a transaction ends after every DATA outcome (accepted or refused);
//! - an authenticated session holds a [`SessionSlot`] until the connection ends;
//! - AUTH lines are never logged (only the mechanism), the token at most as 8 characters.
//!
//! The AUTH dialogue is in `exchange_session_auth`, the post-dot checks and storage in
//! `exchange_submit`; both are further `impl Session` blocks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::exchange::ExchangeFault;
use super::exchange_data::{DataProgress, DataReceiver, parse_path_argument, size_parameter};
use super::exchange_io::{ConnError, Line, SmtpStream};
use super::exchange_replies as replies;
use super::exchange_state::{ExchangeShared, FaultStage, SessionSlot};
use super::random::random_hex_upper;

/// Commands per connection before the server gives up (bounds every session loop).
const MAX_COMMANDS_PER_SESSION: u32 = 100_000;
/// Protocol errors per connection before `421 4.7.0 Too many errors`.
const MAX_ERRORS: u32 = 10;
/// Longest DATA segment handed to the receiver at once.
const DATA_SEGMENT: usize = 64 * 1024;
/// STARTTLS handshake deadline.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the command loop asks the connection driver to do next.
enum Next {
    StartTls,
    Close,
}

/// What one command handler asks the loop to do.
pub(super) enum Step {
    Continue,
    StartTls,
    Close,
}

pub(super) struct Authenticated {
    pub(super) mailbox: String,
    pub(super) client_id: String,
    pub(super) slot: SessionSlot,
}

pub(super) struct Transaction {
    pub(super) from: String,
    pub(super) recipients: Vec<String>,
}

pub(super) struct Session {
    pub(super) shared: Arc<ExchangeShared>,
    pub(super) peer_ip: String,
    pub(super) tls: bool,
    pub(super) greeted: bool,
    pub(super) auth: Option<Authenticated>,
    pub(super) transaction: Option<Transaction>,
    pub(super) errors: u32,
    pub(super) cancel: CancellationToken,
}

/// Serves one accepted connection until it ends.
pub async fn serve(
    shared: Arc<ExchangeShared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    shared.record_connection();
    let _ = tcp.set_nodelay(true);
    let idle = shared.options.idle_timeout;
    let mut plain = SmtpStream::new(tcp, idle, cancel.clone());
    let mut session = Session {
        shared: Arc::clone(&shared),
        peer_ip: peer.ip().to_string(),
        tls: false,
        greeted: false,
        auth: None,
        transaction: None,
        errors: 0,
        cancel: cancel.clone(),
    };
    if shared.take_fault(FaultStage::Connect) == Some(ExchangeFault::Banner421) {
        let _ = session
            .send(&mut plain, replies::SERVICE_NOT_AVAILABLE)
            .await;
        plain.shutdown().await;
        return;
    }
    let greeting = replies::greeting(
        &shared.options.hostname,
        SystemTime::now(),
        &random_hex_upper(8),
    );
    if session.send(&mut plain, &greeting).await.is_err() {
        return;
    }
    match session.run(&mut plain).await {
        Next::Close => {
            plain.shutdown().await;
            return;
        }
        Next::StartTls => {}
    }
    // Dropping the plain stream's buffer discards anything pipelined after STARTTLS.
    let tcp = plain.into_inner();
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        () = cancel.cancelled() => return,
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, "fake Exchange STARTTLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    session.tls = true;
    session.greeted = false;
    session.transaction = None;
    let mut secure = SmtpStream::new(tls, idle, cancel);
    if let Next::Close = session.run(&mut secure).await {
        secure.shutdown().await;
    }
}

impl Session {
    pub(super) fn host(&self) -> &str {
        &self.shared.options.hostname
    }

    /// Writes one reply (CRLF appended unless already present) and counts its code.
    pub(super) async fn send<S>(
        &self,
        conn: &mut SmtpStream<S>,
        reply: &str,
    ) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(code) = reply.get(..3).and_then(|c| c.parse::<u16>().ok()) {
            self.shared.record_reply(code);
        }
        tracing::trace!(reply = %reply.lines().next().unwrap_or_default(), "fake Exchange reply");
        if reply.ends_with("\r\n") {
            conn.write_all(reply.as_bytes()).await
        } else {
            conn.write_all(format!("{reply}\r\n").as_bytes()).await
        }
    }

    /// Replies with a protocol error; closes after too many.
    pub(super) async fn protocol_error<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        reply: &str,
    ) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.send(conn, replies::TOO_MANY_ERRORS).await?;
            return Ok(Step::Close);
        }
        self.send(conn, reply).await?;
        Ok(Step::Continue)
    }

    async fn run<S>(&mut self, conn: &mut SmtpStream<S>) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        for _ in 0..MAX_COMMANDS_PER_SESSION {
            let step = match self.next_command(conn).await {
                Ok(step) => step,
                Err(ConnError::Shutdown) => {
                    let _ = self.send(conn, replies::SERVICE_NOT_AVAILABLE).await;
                    Step::Close
                }
                Err(ConnError::IdleTimeout) => {
                    let _ = self.send(conn, replies::IDLE_TIMEOUT).await;
                    Step::Close
                }
                Err(ConnError::Io(error)) => {
                    tracing::debug!(%error, "fake Exchange connection error");
                    Step::Close
                }
                Err(ConnError::Closed) => Step::Close,
            };
            match step {
                Step::Continue => {}
                Step::StartTls => return Next::StartTls,
                Step::Close => return Next::Close,
            }
        }
        Next::Close
    }

    async fn next_command<S>(&mut self, conn: &mut SmtpStream<S>) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let line = match conn.read_line(self.shared.options.max_command_line).await? {
            Line::Complete(line) => line,
            Line::TooLong => return self.protocol_error(conn, replies::LINE_TOO_LONG).await,
        };
        let text = String::from_utf8_lossy(&line);
        let (verb, argument) = text
            .split_once(' ')
            .map_or((text.as_ref(), ""), |(v, a)| (v, a.trim()));
        let verb_upper = verb.to_ascii_uppercase();
        // Only known, secret-free commands are logged in full: a stray SASL line (which
        // carries the token) must never reach the log.
        const LOGGABLE: [&str; 11] = [
            "EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
            "VRFY",
        ];
        if verb_upper == "AUTH" {
            tracing::debug!(mechanism = %argument.split(' ').next().unwrap_or_default(), "AUTH");
        } else if LOGGABLE.contains(&verb_upper.as_str()) {
            tracing::debug!(command = %text, "fake Exchange command");
        } else {
            let prefix: String = verb.chars().take(8).collect();
            tracing::debug!(%prefix, "fake Exchange unrecognized command");
        }
        match verb_upper.as_str() {
            "EHLO" => self.ehlo(conn, argument).await,
            "HELO" => self.helo(conn, argument).await,
            "STARTTLS" => self.starttls(conn, argument).await,
            "AUTH" => self.auth(conn, argument).await,
            "MAIL" => self.mail(conn, argument).await,
            "RCPT" => self.rcpt(conn, argument).await,
            "DATA" => self.data(conn).await,
            "BDAT" => self.bdat(conn, argument).await,
            "RSET" => {
                self.transaction = None;
                self.send(conn, replies::RESET_OK).await?;
                Ok(Step::Continue)
            }
            "NOOP" => {
                self.send(conn, replies::NOOP_OK).await?;
                Ok(Step::Continue)
            }
            "VRFY" => {
                self.send(conn, replies::VRFY_CANNOT).await?;
                Ok(Step::Continue)
            }
            "QUIT" => {
                self.send(conn, replies::CLOSING).await?;
                Ok(Step::Close)
            }
            _ => {
                let reply = replies::unrecognized_command(verb);
                self.protocol_error(conn, &reply).await
            }
        }
    }

    async fn ehlo<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if argument.is_empty() {
            return self.protocol_error(conn, replies::INVALID_DOMAIN).await;
        }
        self.greeted = true;
        self.transaction = None;
        let lines = replies::ehlo_lines(self.host(), &self.peer_ip, self.tls);
        self.send(conn, &replies::multiline(250, &lines)).await?;
        Ok(Step::Continue)
    }

    async fn helo<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if argument.is_empty() {
            return self.protocol_error(conn, replies::INVALID_DOMAIN).await;
        }
        self.greeted = true;
        self.transaction = None;
        self.send(conn, &replies::helo(self.host(), &self.peer_ip))
            .await?;
        Ok(Step::Continue)
    }

    async fn starttls<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        argument: &str,
    ) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.tls {
            return self.protocol_error(conn, replies::TLS_ALREADY_ACTIVE).await;
        }
        if !argument.is_empty() {
            return self.protocol_error(conn, replies::INVALID_ARGUMENTS).await;
        }
        self.send(conn, replies::STARTTLS_READY).await?;
        Ok(Step::StartTls)
    }

    async fn mail<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.greeted {
            return self.protocol_error(conn, replies::SEND_HELLO_FIRST).await;
        }
        if self.auth.is_none() {
            let reply = replies::not_authenticated(self.host());
            self.send(conn, &reply).await?;
            return Ok(Step::Continue);
        }
        if self.transaction.is_some() {
            return self
                .protocol_error(conn, replies::SENDER_ALREADY_SPECIFIED)
                .await;
        }
        let Some((from, params)) = parse_path_argument(argument, "FROM") else {
            return self.protocol_error(conn, replies::INVALID_ARGUMENTS).await;
        };
        let advertised = u64::try_from(replies::ADVERTISED_SIZE).unwrap_or(u64::MAX);
        if size_parameter(params).is_some_and(|size| size > advertised) {
            self.send(conn, replies::MESSAGE_TOO_BIG).await?;
            return Ok(Step::Continue);
        }
        self.transaction = Some(Transaction {
            from,
            recipients: Vec::new(),
        });
        self.send(conn, replies::SENDER_OK).await?;
        Ok(Step::Continue)
    }

    async fn rcpt<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            return self.protocol_error(conn, replies::NEED_MAIL).await;
        };
        let Some((address, _params)) =
            parse_path_argument(argument, "TO").filter(|(a, _)| a.contains('@'))
        else {
            return self.protocol_error(conn, replies::INVALID_ARGUMENTS).await;
        };
        let (limit, rejection) = self.shared.with_runtime(|r| {
            let rejection = r
                .recipient_rejections
                .get(&address.to_ascii_lowercase())
                .cloned();
            (r.max_recipients, rejection)
        });
        if count >= limit {
            self.send(conn, replies::TOO_MANY_RECIPIENTS).await?;
            return Ok(Step::Continue);
        }
        if let Some(reply) = rejection {
            self.send(conn, &reply).await?;
            // A 421 closes the session (RFC 5321 §3.8), as Exchange does.
            return Ok(if reply.starts_with("421") {
                Step::Close
            } else {
                Step::Continue
            });
        }
        if let Some(transaction) = self.transaction.as_mut() {
            transaction.recipients.push(address);
        }
        self.send(conn, replies::RECIPIENT_OK).await?;
        Ok(Step::Continue)
    }

    async fn bdat<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let size = argument
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        let Some(size) = size else {
            return self.protocol_error(conn, replies::INVALID_ARGUMENTS).await;
        };
        if size > u64::try_from(replies::ADVERTISED_SIZE).unwrap_or(u64::MAX) {
            self.send(conn, replies::MESSAGE_TOO_BIG).await?;
            return Ok(Step::Close);
        }
        conn.discard_exact(size).await?;
        self.transaction = None;
        self.send(conn, replies::BDAT_NOT_SUPPORTED).await?;
        Ok(Step::Continue)
    }

    async fn data<S>(&mut self, conn: &mut SmtpStream<S>) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.transaction {
            None => return self.protocol_error(conn, replies::NEED_MAIL).await,
            Some(t) if t.recipients.is_empty() => {
                return self.protocol_error(conn, replies::NEED_RCPT).await;
            }
            Some(_) => {}
        }
        self.send(conn, replies::START_MAIL_INPUT).await?;
        let limit = self.shared.with_runtime(|r| r.max_message_size);
        let mut receiver = DataReceiver::new(limit, !self.shared.options.fast_mode);
        loop {
            let segment = conn.read_segment(DATA_SEGMENT).await?;
            if receiver.push_segment(&segment) == DataProgress::Complete {
                break;
            }
            if receiver.size() > replies::ADVERTISED_SIZE {
                // Past the service-wide ceiling: stop reading, as the real front end does.
                self.transaction = None;
                self.send(conn, replies::MESSAGE_TOO_BIG).await?;
                return Ok(Step::Close);
            }
        }
        let received = receiver.finish();
        let Some(transaction) = self.transaction.take() else {
            return Ok(Step::Continue);
        };
        self.finish_data(conn, transaction, received).await
    }
}
