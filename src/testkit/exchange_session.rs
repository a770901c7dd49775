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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::exchange::{AcceptedMessage, AuthAttempt, AuthRejection, ExchangeFault};
use super::exchange_auth::{Identity, authorize, parse_xoauth2, rejection_reply};
use super::exchange_data::{
    DataProgress, DataReceiver, ReceivedData, header_fields, header_value, mailbox_list_addresses,
    oversized_header, parse_path_argument, size_parameter,
};
use super::exchange_io::{ConnError, Line, SmtpStream};
use super::exchange_replies as replies;
use super::exchange_state::{ExchangeShared, FaultStage, SessionSlot};
use super::jwt::{decode_claims_unverified, token_prefix};
use super::random::{hex_lower, random_hex_upper};

/// Commands per connection before the server gives up (bounds every session loop).
const MAX_COMMANDS_PER_SESSION: u32 = 100_000;
/// Protocol errors per connection before `421 4.7.0 Too many errors`.
const MAX_ERRORS: u32 = 10;
/// Longest DATA segment handed to the receiver at once.
const DATA_SEGMENT: usize = 64 * 1024;
/// Longest header value Exchange accepts.
const MAX_HEADER_VALUE: usize = 32_768;
/// STARTTLS handshake deadline.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the command loop asks the connection driver to do next.
enum Next {
    StartTls,
    Close,
}

/// What one command handler asks the loop to do.
enum Step {
    Continue,
    StartTls,
    Close,
}

struct Authenticated {
    mailbox: String,
    client_id: String,
    slot: SessionSlot,
}

struct Transaction {
    from: String,
    recipients: Vec<String>,
}

struct Session {
    shared: Arc<ExchangeShared>,
    peer_ip: String,
    tls: bool,
    greeted: bool,
    auth: Option<Authenticated>,
    transaction: Option<Transaction>,
    errors: u32,
    cancel: CancellationToken,
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
    fn host(&self) -> &str {
        &self.shared.options.hostname
    }

    /// Writes one reply (CRLF appended unless already present) and counts its code.
    async fn send<S>(&self, conn: &mut SmtpStream<S>, reply: &str) -> Result<(), ConnError>
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
    async fn protocol_error<S>(
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
        if verb_upper == "AUTH" {
            tracing::debug!(mechanism = %argument.split(' ').next().unwrap_or_default(), "AUTH");
        } else {
            tracing::debug!(command = %text, "fake Exchange command");
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

    async fn auth<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut parts = argument.split_whitespace();
        let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(str::to_owned);
        if self.auth.is_some() {
            return self.protocol_error(conn, replies::AUTH_ALREADY).await;
        }
        let mut attempt = AuthAttempt {
            at: SystemTime::now(),
            mechanism: mechanism.clone(),
            mailbox: None,
            client_id: None,
            token_prefix: None,
            result: Err(AuthRejection::UnsupportedMechanism),
        };
        let outcome = if !self.tls {
            Err(AuthRejection::NotAdvertised)
        } else {
            match mechanism.as_str() {
                "XOAUTH2" => self.xoauth2(conn, initial, &mut attempt).await?,
                "LOGIN" => self.basic_login(conn, initial).await?,
                "PLAIN" => self.basic_plain(conn, initial).await?,
                _ => Err(AuthRejection::UnsupportedMechanism),
            }
        };
        attempt.result = outcome.as_ref().map(|_| ()).map_err(|r| *r);
        self.shared.record_auth(attempt);
        match outcome {
            Ok(identity) => {
                let slot = self.shared.open_slot(&identity.mailbox);
                self.auth = Some(Authenticated {
                    mailbox: identity.mailbox,
                    client_id: identity.client_id,
                    slot,
                });
                self.send(conn, replies::AUTH_OK).await?;
            }
            Err(rejection) => {
                let reply = rejection_reply(rejection, self.host());
                self.send(conn, &reply).await?;
            }
        }
        Ok(Step::Continue)
    }

    /// Reads the answer to a `334` challenge.
    async fn challenge<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        challenge: &str,
    ) -> Result<Option<String>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.send(conn, challenge).await?;
        match conn.read_line(self.shared.options.max_command_line).await? {
            Line::Complete(line) => {
                let answer = String::from_utf8_lossy(&line).trim().to_owned();
                Ok((answer != "*").then_some(answer))
            }
            Line::TooLong => Ok(Some(String::new())),
        }
    }

    async fn xoauth2<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        initial: Option<String>,
        attempt: &mut AuthAttempt,
    ) -> Result<Result<Identity, AuthRejection>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let encoded = match initial {
            Some(initial) => initial,
            None => match self.challenge(conn, replies::AUTH_CONTINUE_EMPTY).await? {
                Some(answer) => answer,
                None => return Ok(Err(AuthRejection::Cancelled)),
            },
        };
        let Some(payload) = parse_xoauth2(&encoded) else {
            return Ok(Err(AuthRejection::InvalidXoauth2Data));
        };
        attempt.mailbox = Some(payload.user.clone());
        attempt.token_prefix = Some(token_prefix(&payload.token));
        attempt.client_id = decode_claims_unverified(&payload.token)
            .ok()
            .map(|claims| claims.appid);
        Ok(authorize(&self.shared, &payload, SystemTime::now()))
    }

    /// AUTH LOGIN: the username/password dialogue, then the Basic-auth-disabled refusal.
    async fn basic_login<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        initial: Option<String>,
    ) -> Result<Result<Identity, AuthRejection>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if initial.is_none()
            && self
                .challenge(conn, replies::AUTH_LOGIN_USERNAME)
                .await?
                .is_none()
        {
            return Ok(Err(AuthRejection::Cancelled));
        }
        if self
            .challenge(conn, replies::AUTH_LOGIN_PASSWORD)
            .await?
            .is_none()
        {
            return Ok(Err(AuthRejection::Cancelled));
        }
        Ok(Err(AuthRejection::BasicAuthDisabled))
    }

    /// AUTH PLAIN (not advertised): optional empty challenge, then the Basic refusal.
    async fn basic_plain<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        initial: Option<String>,
    ) -> Result<Result<Identity, AuthRejection>, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if initial.is_none()
            && self
                .challenge(conn, replies::AUTH_CONTINUE_EMPTY)
                .await?
                .is_none()
        {
            return Ok(Err(AuthRejection::Cancelled));
        }
        Ok(Err(AuthRejection::BasicAuthDisabled))
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
            return Ok(Step::Continue);
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
        }
        let received = receiver.finish();
        let Some(transaction) = self.transaction.take() else {
            return Ok(Step::Continue);
        };
        self.finish_data(conn, transaction, received).await
    }

    /// The checks Exchange runs after the final dot, then storage and the reply.
    async fn finish_data<S>(
        &mut self,
        conn: &mut SmtpStream<S>,
        transaction: Transaction,
        received: ReceivedData,
    ) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let host = self.host().to_owned();
        if received.oversize {
            self.send(conn, replies::MESSAGE_TOO_BIG).await?;
            return Ok(Step::Continue);
        }
        if received.bare_lf {
            self.send(conn, replies::BARE_LINEFEEDS).await?;
            return Ok(Step::Continue);
        }
        let fields = header_fields(&received.header_block);
        if let Some((size, name)) = oversized_header(&fields, MAX_HEADER_VALUE) {
            self.send(conn, &replies::header_too_long(size, &name))
                .await?;
            return Ok(Step::Continue);
        }
        let fault = self.shared.take_fault(FaultStage::EndOfData);
        match fault {
            Some(ExchangeFault::TempFailAfterData) => {
                self.send(conn, &replies::temporary_server_error(&host))
                    .await?;
                return Ok(Step::Continue);
            }
            Some(ExchangeFault::MailboxLogonFailure) => {
                self.send(conn, &replies::mailbox_logon_failure(&host))
                    .await?;
                return Ok(Step::Continue);
            }
            _ => {}
        }
        let Some(auth) = self.auth.as_ref() else {
            self.send(conn, &replies::not_authenticated(&host)).await?;
            return Ok(Step::Continue);
        };
        let limit = self.shared.options.max_concurrent_sessions_per_mailbox;
        if auth.slot.earlier_open_sessions() >= limit {
            self.shared.record_throttled();
            self.send(conn, &replies::concurrency_exceeded(&host))
                .await?;
            return Ok(Step::Continue);
        }
        let from_header = header_value(&fields, "From")
            .map(mailbox_list_addresses)
            .unwrap_or_default();
        let envelope = if transaction.from.is_empty() {
            "<>".to_owned()
        } else {
            transaction.from.clone()
        };
        let denied = std::iter::once(&envelope)
            .chain(from_header.iter())
            .find(|sender| !self.shared.directory.may_send_as(&auth.mailbox, sender));
        if let Some(sender) = denied {
            let reply = replies::send_as_denied(&auth.mailbox, sender, &host);
            self.send(conn, &reply).await?;
            return Ok(Step::Continue);
        }
        let message_id = header_value(&fields, "Message-ID")
            .map(str::trim)
            .filter(|id| id.starts_with('<') && id.ends_with('>'))
            .map_or_else(
                || format!("<{}@{host}>", random_hex_upper(16)),
                str::to_owned,
            );
        let message = AcceptedMessage {
            id: format!("FAKE-{}", self.shared.next_sequence()),
            message_id: message_id.clone(),
            envelope_from: transaction.from,
            recipients: transaction.recipients,
            auth_mailbox: auth.mailbox.clone(),
            client_id: auth.client_id.clone(),
            data: received.body,
            size: received.size,
            sha256: hex_lower(&received.sha256),
            accepted_at: SystemTime::now(),
            eml_path: None,
        };
        let message = self.write_eml(message).await;
        self.shared.store_message(message);
        match fault {
            Some(ExchangeFault::DropAfterDot) => return Ok(Step::Close),
            Some(ExchangeFault::StallAfterDot(stall)) => {
                tokio::select! {
                    () = self.cancel.cancelled() => return Err(ConnError::Shutdown),
                    () = tokio::time::sleep(stall) => {}
                }
            }
            _ => {}
        }
        self.send(conn, &replies::queued(&message_id, &host))
            .await?;
        Ok(Step::Continue)
    }

    /// Writes the `.eml` copy if enabled (temp file + rename, so watchers never see a partial
    /// file). A write failure is logged and leaves `eml_path` empty.
    async fn write_eml(&self, mut message: AcceptedMessage) -> AcceptedMessage {
        let (Some(dir), Some(data)) = (&self.shared.options.eml_dir, &message.data) else {
            return message;
        };
        let stamp = super::jwt::unix_seconds(message.accepted_at);
        let name = format!("{stamp}-{}.eml", message.id);
        let final_path = dir.join(&name);
        let temp_path = dir.join(format!(".{name}.tmp"));
        let written = async {
            tokio::fs::write(&temp_path, data).await?;
            tokio::fs::rename(&temp_path, &final_path).await
        };
        match written.await {
            Ok(()) => message.eml_path = Some(final_path),
            Err(error) => tracing::warn!(%error, "fake Exchange could not write .eml"),
        }
        message
    }
}
