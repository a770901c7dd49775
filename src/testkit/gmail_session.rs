//! One SMTP conversation with the fake Gmail server: greeting, EHLO/HELO, STARTTLS (the
//! session is rebuilt on the TLS stream and pipelined plaintext is dropped), AUTH (XOAUTH2
//! checked against the workspace's issued tokens; LOGIN/PLAIN always refused), MAIL, RCPT,
//! DATA with the post-dot checks, and the faults of each stage.
//!
//! Invariants: before TLS only EHLO/HELO/STARTTLS/NOOP/RSET/QUIT are served, everything else
//! gets `530 5.7.0 Must issue a STARTTLS command first.`; MAIL needs a successful AUTH; a
//! transaction ends after every DATA outcome; AUTH lines are never logged; every loop is
//! bounded (commands per session, errors per session).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::exchange_auth::parse_xoauth2;
use super::exchange_data::{DataProgress, DataReceiver, parse_path_argument, size_parameter};
use super::exchange_io::{ConnError, Line, SmtpStream};
use super::exchange_replies::multiline;
use super::gmail::{GmailFault, GmailMessage, GmailShared, GmailStage};
use super::gmail_replies as replies;
use super::google_workspace::GMAIL_FULL_SCOPE;
use super::jwt::unix_seconds;
use super::random::{hex_lower, random_bytes, random_hex_upper};

const MAX_COMMANDS_PER_SESSION: u32 = 100_000;
const MAX_ERRORS: u32 = 10;
const DATA_SEGMENT: usize = 64 * 1024;
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

enum Step {
    Continue,
    StartTls,
    Close,
}

struct Transaction {
    from: String,
    recipients: Vec<String>,
}

struct Session {
    shared: Arc<GmailShared>,
    id: String,
    peer_ip: String,
    tls: bool,
    greeted: bool,
    user: Option<String>,
    transaction: Option<Transaction>,
    errors: u32,
}

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(
    shared: Arc<GmailShared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let idle = shared.options.idle_timeout;
    let mut plain = SmtpStream::new(tcp, idle, cancel.clone());
    let mut session = Session {
        id: format!(
            "{}sm{}",
            hex_lower(&random_bytes::<8>()),
            random_hex_upper(3).to_ascii_lowercase()
        ),
        shared: Arc::clone(&shared),
        peer_ip: peer.ip().to_string(),
        tls: false,
        greeted: false,
        user: None,
        transaction: None,
        errors: 0,
    };
    let greeting = if shared.take_fault(GmailStage::Connect) == Some(GmailFault::Banner421) {
        replies::try_again_later(&session.id)
    } else {
        replies::greeting(&shared.options.hostname, &session.id)
    };
    let refused = greeting.starts_with("421");
    if session.send(&mut plain, &greeting).await.is_err() || refused {
        plain.shutdown().await;
        return;
    }
    if !matches!(session.run(&mut plain).await, Step::StartTls) {
        plain.shutdown().await;
        return;
    }
    let tcp = plain.into_inner();
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        () = cancel.cancelled() => return,
        handshake = handshake => match handshake {
            Ok(Ok(tls)) => tls,
            _ => return,
        },
    };
    session.tls = true;
    session.greeted = false;
    session.transaction = None;
    let mut secure = SmtpStream::new(tls, idle, cancel);
    session.run(&mut secure).await;
    secure.shutdown().await;
}

impl Session {
    async fn send<S>(&self, conn: &mut SmtpStream<S>, reply: &str) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(code) = reply.get(..3).and_then(|c| c.parse::<u16>().ok()) {
            self.shared.record_reply(code);
        }
        if reply.ends_with("\r\n") {
            conn.write_all(reply.as_bytes()).await
        } else {
            conn.write_all(format!("{reply}\r\n").as_bytes()).await
        }
    }

    async fn reply<S>(&self, conn: &mut SmtpStream<S>, reply: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.send(conn, reply).await?;
        Ok(Step::Continue)
    }

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
            self.send(conn, &replies::too_many_errors(&self.id)).await?;
            return Ok(Step::Close);
        }
        self.reply(conn, reply).await
    }

    async fn run<S>(&mut self, conn: &mut SmtpStream<S>) -> Step
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        for _ in 0..MAX_COMMANDS_PER_SESSION {
            let step = match self.next_command(conn).await {
                Ok(step) => step,
                Err(ConnError::Shutdown) => {
                    let _ = self.send(conn, &replies::try_again_later(&self.id)).await;
                    Step::Close
                }
                Err(ConnError::IdleTimeout) => {
                    let _ = self.send(conn, &replies::idle_timeout(&self.id)).await;
                    Step::Close
                }
                Err(ConnError::Io(_) | ConnError::Closed) => Step::Close,
            };
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        Step::Close
    }

    async fn next_command<S>(&mut self, conn: &mut SmtpStream<S>) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let id = self.id.clone();
        let line = match conn.read_line(self.shared.options.max_command_line).await? {
            Line::Complete(line) => line,
            Line::TooLong => return self.protocol_error(conn, &replies::syntax_error(&id)).await,
        };
        let text = String::from_utf8_lossy(&line);
        let (verb, argument) = text
            .split_once(' ')
            .map_or((text.as_ref(), ""), |(v, a)| (v, a.trim()));
        let verb = verb.to_ascii_uppercase();
        tracing::debug!(verb = %verb.chars().take(8).collect::<String>(), "fake Gmail command");
        let before_tls_allowed = ["EHLO", "HELO", "STARTTLS", "NOOP", "RSET", "QUIT"];
        if !self.tls && !before_tls_allowed.contains(&verb.as_str()) {
            return self.reply(conn, &replies::must_starttls(&id)).await;
        }
        match verb.as_str() {
            "EHLO" | "HELO" if argument.is_empty() => {
                self.protocol_error(conn, &replies::syntax_error(&id)).await
            }
            "EHLO" => {
                self.greeted = true;
                self.transaction = None;
                let host = &self.shared.options.hostname;
                let lines = replies::ehlo_lines(host, &self.peer_ip, self.tls);
                self.reply(conn, &multiline(250, &lines)).await
            }
            "HELO" => {
                self.greeted = true;
                self.transaction = None;
                let reply = replies::helo(&self.shared.options.hostname);
                self.reply(conn, &reply).await
            }
            "STARTTLS" if self.tls => {
                self.protocol_error(conn, &replies::bad_sequence("TLS already active.", &id))
                    .await
            }
            "STARTTLS" => {
                self.send(conn, replies::STARTTLS_READY).await?;
                Ok(Step::StartTls)
            }
            "AUTH" => self.auth(conn, argument).await,
            "MAIL" => self.mail(conn, argument).await,
            "RCPT" => self.rcpt(conn, argument).await,
            "DATA" => self.data(conn).await,
            "RSET" => {
                self.transaction = None;
                self.reply(conn, &format!("250 2.1.5 Flushed {id} - gsmtp"))
                    .await
            }
            "NOOP" => {
                self.reply(conn, &format!("250 2.0.0 OK {id} - gsmtp"))
                    .await
            }
            "QUIT" => {
                self.send(conn, replies::CLOSING).await?;
                Ok(Step::Close)
            }
            _ => {
                self.protocol_error(conn, &replies::unrecognized_command(&id))
                    .await
            }
        }
    }

    async fn read_answer<S>(&mut self, conn: &mut SmtpStream<S>) -> Result<String, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        Ok(
            match conn.read_line(self.shared.options.max_command_line).await? {
                Line::Complete(line) => String::from_utf8_lossy(&line).trim().to_owned(),
                Line::TooLong => String::new(),
            },
        )
    }

    async fn auth<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let id = self.id.clone();
        if self.user.is_some() {
            return self
                .protocol_error(conn, &replies::already_authenticated(&id))
                .await;
        }
        let mut parts = argument.split_whitespace();
        let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(str::to_owned);
        let fault = self.shared.take_fault(GmailStage::Auth);
        let temporary = match fault {
            Some(GmailFault::AuthTemporary454) => Some(replies::temporary_auth_problem(&id)),
            Some(GmailFault::TooManyLogins454) => Some(replies::too_many_logins(&id)),
            _ => None,
        };
        if let Some(reply) = temporary {
            self.shared.record_auth(false);
            return self.reply(conn, &reply).await;
        }
        match mechanism.as_str() {
            "XOAUTH2" => {}
            "LOGIN" | "PLAIN" => {
                let challenges: &[&str] = match (mechanism.as_str(), initial.is_some()) {
                    ("LOGIN", false) => {
                        &[replies::AUTH_LOGIN_USERNAME, replies::AUTH_LOGIN_PASSWORD]
                    }
                    ("LOGIN", true) => &[replies::AUTH_LOGIN_PASSWORD],
                    (_, false) => &[replies::AUTH_CONTINUE_EMPTY],
                    (_, true) => &[],
                };
                for challenge in challenges {
                    self.send(conn, challenge).await?;
                    let _ = self.read_answer(conn).await?;
                }
                self.shared.record_auth(false);
                return self.reply(conn, &replies::bad_credentials(&id)).await;
            }
            _ => {
                self.shared.record_auth(false);
                return self.reply(conn, &replies::unrecognized_auth(&id)).await;
            }
        }
        let encoded = match initial {
            Some(initial) => initial,
            None => {
                self.send(conn, replies::AUTH_CONTINUE_EMPTY).await?;
                self.read_answer(conn).await?
            }
        };
        let Some(payload) = parse_xoauth2(&encoded) else {
            self.shared.record_auth(false);
            return self.reply(conn, &replies::cannot_decode(&id)).await;
        };
        let checked = if fault == Some(GmailFault::RefuseXoauth2) {
            Err(400)
        } else {
            self.check_token(&payload.user, &payload.token)
        };
        match checked {
            Ok(user) => {
                self.shared.record_auth(true);
                self.user = Some(user);
                self.reply(conn, replies::AUTH_OK).await
            }
            Err(status) => {
                self.shared.record_auth(false);
                self.send(conn, &replies::xoauth2_error_challenge(status))
                    .await?;
                // The client must answer the challenge (normally with an empty line).
                let _ = self.read_answer(conn).await?;
                self.reply(conn, &replies::bad_credentials(&id)).await
            }
        }
    }

    /// `Ok(user)` when `token` was issued for `user` with the full mail scope, is unexpired
    /// and the user is active; else the challenge's `status` (401 token, 400 scope/user).
    fn check_token(&self, user: &str, token: &str) -> Result<String, u16> {
        let workspace = &self.shared.workspace;
        let issued = workspace.issued_token(token).ok_or(401u16)?;
        if issued.expires_at <= SystemTime::now() {
            return Err(401);
        }
        if !issued.scopes.iter().any(|s| s == GMAIL_FULL_SCOPE) {
            return Err(400);
        }
        let user = user.to_ascii_lowercase();
        if issued.subject.as_deref() != Some(user.as_str()) {
            return Err(400);
        }
        match workspace.user(&user) {
            Some(active) if !active.suspended => Ok(user),
            _ => Err(400),
        }
    }

    async fn mail<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let id = self.id.clone();
        let Some(user) = self.user.clone() else {
            return self
                .reply(conn, &replies::authentication_required(&id))
                .await;
        };
        if !self.greeted {
            let reply = replies::bad_sequence("EHLO/HELO first.", &id);
            return self.protocol_error(conn, &reply).await;
        }
        if self.transaction.is_some() {
            let reply = replies::bad_sequence("Nested MAIL command.", &id);
            return self.protocol_error(conn, &reply).await;
        }
        let Some((from, params)) = parse_path_argument(argument, "FROM") else {
            return self.protocol_error(conn, &replies::syntax_error(&id)).await;
        };
        let max = u64::try_from(self.shared.options.max_message_size).unwrap_or(u64::MAX);
        if size_parameter(params).is_some_and(|size| size > max) {
            return self.reply(conn, &replies::message_too_big(&id)).await;
        }
        if !self.shared.within_daily_limits(&user, 0, false) {
            return self.reply(conn, &replies::daily_limit_exceeded(&id)).await;
        }
        self.transaction = Some(Transaction {
            from,
            recipients: Vec::new(),
        });
        self.reply(conn, &replies::ok(&id)).await
    }

    async fn rcpt<S>(&mut self, conn: &mut SmtpStream<S>, argument: &str) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let id = self.id.clone();
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            let reply = replies::bad_sequence("sender not yet given", &id);
            return self.protocol_error(conn, &reply).await;
        };
        let Some((address, _)) =
            parse_path_argument(argument, "TO").filter(|(a, _)| a.contains('@'))
        else {
            return self.protocol_error(conn, &replies::syntax_error(&id)).await;
        };
        if count >= self.shared.options.max_recipients {
            return self.reply(conn, &replies::too_many_recipients(&id)).await;
        }
        if let Some(transaction) = self.transaction.as_mut() {
            transaction.recipients.push(address);
        }
        self.reply(conn, &replies::recipient_ok(&id)).await
    }

    async fn data<S>(&mut self, conn: &mut SmtpStream<S>) -> Result<Step, ConnError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let id = self.id.clone();
        match &self.transaction {
            Some(t) if !t.recipients.is_empty() => {}
            _ => {
                let reply = replies::bad_sequence("valid RCPT command must precede DATA", &id);
                return self.protocol_error(conn, &reply).await;
            }
        }
        self.send(conn, replies::START_MAIL_INPUT).await?;
        let limit = self.shared.options.max_message_size;
        let mut receiver = DataReceiver::new(limit, true);
        loop {
            let segment = conn.read_segment(DATA_SEGMENT).await?;
            if receiver.push_segment(&segment) == DataProgress::Complete {
                break;
            }
        }
        let received = receiver.finish();
        let (Some(transaction), Some(user)) = (self.transaction.take(), self.user.clone()) else {
            return Ok(Step::Continue);
        };
        let Some(body) = received.body.filter(|_| !received.oversize) else {
            return self.reply(conn, &replies::message_too_big(&id)).await;
        };
        let fault = self.shared.take_fault(GmailStage::EndOfData);
        match fault {
            Some(GmailFault::TempFailAfterData) => {
                self.send(conn, &replies::try_again_later(&id)).await?;
                return Ok(Step::Close);
            }
            Some(GmailFault::PolicyAfterData) => {
                let domain = user.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
                return self
                    .reply(conn, &replies::policy_violation(&domain, &id))
                    .await;
            }
            _ => {}
        }
        if replies::blocked_attachment_name(&body).is_some() {
            return self.reply(conn, &replies::blocked_attachment(&id)).await;
        }
        if !self
            .shared
            .within_daily_limits(&user, transaction.recipients.len(), true)
        {
            return self.reply(conn, &replies::daily_limit_exceeded(&id)).await;
        }
        let accepted_at = SystemTime::now();
        self.shared
            .store_message(GmailMessage {
                id: String::new(),
                auth_user: user,
                envelope_from: transaction.from,
                recipients: transaction.recipients,
                size: body.len(),
                data: body,
                accepted_at,
            })
            .await;
        if fault == Some(GmailFault::DropAfterDot) {
            return Ok(Step::Close);
        }
        self.reply(conn, &replies::queued(&id, unix_seconds(accepted_at)))
            .await
    }
}
