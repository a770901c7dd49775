//! The connection driver: socket I/O, timeouts, TLS and the DATA stream to the spool, around
//! the pure [`Session`] state machine.
//!
//! Invariants:
//! - Replies go out in command order; pipelined commands are answered together when the
//!   input buffer runs dry (RFC 2920), and immediately before any blocking action.
//! - The input buffer never grows beyond the line limit plus one read; DATA content streams to
//!   the spool in chunks and is never held whole in memory.
//! - `250` after DATA is sent only after [`SpoolWriter::commit`] returned (fsynced); any spool
//!   failure answers `451 4.3.0` (`452 4.3.1` for a full disk), never a 5xx.
//! - Bytes pipelined after STARTTLS are discarded (RFC 3207 §4.2, command injection).
//! - Every read has a timeout; the whole session has a maximum duration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthVerdict, authenticate};
use super::session::{Action, DataOutcome, DataRequest, Session, SessionSettings, Step};
use super::stream::ClientStream;
use super::throttle::AuthThrottle;
use crate::config::Limits;
use crate::message::{AssemblyError, MessageAssembler, SenderRules, TraceInfo, received_field};
use crate::ops::metrics::Metrics;
use crate::policy::Policy;
use crate::queue::{FirstOutcome, Queue};
use crate::smtp::proto::data::{DataReceiver, Feed};
use crate::smtp::proto::line::LineReader;
use crate::smtp::proto::reply::Reply;
use crate::spool::{ClientInfo, Envelope, Spool, unix_now};

/// How long a client in the middle of DATA may keep sending after shutdown began.
pub const SHUTDOWN_DATA_GRACE: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 16 * 1024;
const SPOOL_CHUNK: usize = 64 * 1024;

/// Everything a connection needs from the rest of the relay; shared per listener.
pub struct InboundContext {
    pub settings: Arc<SessionSettings>,
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    pub policy: Arc<Policy>,
    pub limits: Limits,
    pub spool: Arc<Spool>,
    pub queue: Arc<Queue>,
    /// Wait up to this long for Exchange's verdict before answering DATA.
    pub acknowledge_delivered: Option<Duration>,
    /// Failed AUTH attempts per client address and username (shared by all listeners).
    pub auth_throttle: Arc<AuthThrottle>,
    /// The argon2 workers (shared by all listeners).
    pub password_checker: Arc<crate::policy::PasswordChecker>,
    pub metrics: Arc<Metrics>,
}

/// Why a connection ended abnormally (logged, never sent to the client).
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("client closed the connection")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for the client")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("the session exceeded its maximum duration")]
    SessionTooLong,
    #[error("shutting down")]
    Shutdown,
}

struct Connection {
    stream: ClientStream,
    input: BytesMut,
    output: Vec<u8>,
    lines: LineReader,
    ctx: Arc<InboundContext>,
    cancel: CancellationToken,
    session_deadline: Instant,
    peer: SocketAddr,
}

/// Serve one accepted connection until it ends. Errors are logged here.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<InboundContext>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut connection = Connection {
        stream: ClientStream::Plain(stream),
        input: BytesMut::with_capacity(READ_CHUNK),
        output: Vec::with_capacity(1024),
        lines: LineReader::new(ctx.limits.max_line_length),
        session_deadline: Instant::now() + ctx.limits.session_timeout,
        ctx,
        cancel,
        peer,
    };
    match connection.run().await {
        Ok(()) | Err(ConnError::Closed) => tracing::debug!("connection closed"),
        Err(ConnError::Shutdown) => tracing::debug!("connection closed for shutdown"),
        Err(error) => tracing::info!(%error, "connection ended"),
    }
    let _ = connection.stream.shutdown().await;
}

impl Connection {
    async fn run(&mut self) -> Result<(), ConnError> {
        let implicit = self.ctx.settings.tls_mode == super::session::TlsMode::Implicit;
        if implicit {
            self.start_tls().await?;
        }
        let network_grant = self.ctx.policy.network_grant(self.peer.ip());
        let mut session = Session::new(
            Arc::clone(&self.ctx.settings),
            self.peer,
            network_grant,
            implicit,
        );
        session.greeting().write_to(&mut self.output);
        self.flush().await?;
        loop {
            while let Some(line) = self.lines.next_line(&mut self.input) {
                let step = match line {
                    Ok(line) => session.handle_line(&line),
                    Err(_) => session.line_too_long(),
                };
                if !self.perform(&mut session, step).await? {
                    return Ok(());
                }
            }
            self.flush().await?;
            self.read_command().await?;
        }
    }

    /// Send the step's reply and carry out its action, feeding results back into the
    /// session. Returns false when the connection must close.
    async fn perform(&mut self, session: &mut Session, mut step: Step) -> Result<bool, ConnError> {
        loop {
            if let Some(reply) = &step.reply {
                reply.write_to(&mut self.output);
            }
            if let Some(refusal) = step.refusal.take() {
                tracing::warn!(reason = refusal.reason, "refused: {}", refusal.detail);
                self.ctx
                    .metrics
                    .messages_refused
                    .get_or_create(&Metrics::reason(refusal.reason))
                    .inc();
            }
            step = match step.action {
                Action::None => return Ok(true),
                Action::Close => {
                    self.flush().await?;
                    return Ok(false);
                }
                Action::StartTls => {
                    self.flush().await?;
                    // Anything pipelined after STARTTLS was sent in clear: drop it.
                    self.input.clear();
                    self.start_tls().await?;
                    session.tls_established();
                    return Ok(true);
                }
                Action::VerifyPassword { username, password } => {
                    self.flush().await?;
                    let deadline = (Instant::now() + self.ctx.limits.command_timeout)
                        .min(self.session_deadline);
                    let ctx = Arc::clone(&self.ctx);
                    let attempt = authenticate(&ctx, self.peer, &username, password, deadline);
                    // A client that hangs up while its attempt waits for its turn gives the
                    // turn up (an attacker cannot queue attempts and leave).
                    let verdict = tokio::select! {
                        verdict = attempt => verdict,
                        () = client_gone(&mut self.stream, &mut self.input, self.ctx.limits.max_line_length) => {
                            return Err(ConnError::Closed);
                        }
                    };
                    match verdict {
                        AuthVerdict::Granted(grant) => session.auth_finished(Some(grant)),
                        AuthVerdict::Denied => session.auth_finished(None),
                        AuthVerdict::TryLater(reply) => session.auth_deferred(reply),
                    }
                }
                Action::ReceiveData(request) => {
                    self.flush().await?;
                    let outcome = self.receive_data(&request).await?;
                    session.data_finished(outcome)
                }
            };
        }
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.output.is_empty() {
            let write = self.stream.write_all(&self.output);
            tokio::time::timeout(self.ctx.limits.command_timeout, write)
                .await
                .map_err(|_| ConnError::Timeout)??;
            self.stream.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Read more command input, answering 421 on timeout, shutdown or session expiry.
    async fn read_command(&mut self) -> Result<(), ConnError> {
        self.input.reserve(READ_CHUNK);
        let deadline =
            (Instant::now() + self.ctx.limits.command_timeout).min(self.session_deadline);
        let hostname = self.ctx.settings.hostname.clone();
        tokio::select! {
            read = self.stream.read_buf(&mut self.input) => match read? {
                0 => Err(ConnError::Closed),
                _ => Ok(()),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let (reply, error) = if deadline >= self.session_deadline {
                    (Reply::new(421, "4.4.2", format!("{hostname} Session too long, closing connection")), ConnError::SessionTooLong)
                } else {
                    (Reply::new(421, "4.4.2", format!("{hostname} Timeout, closing connection")), ConnError::Timeout)
                };
                self.goodbye(reply).await;
                Err(error)
            }
            _ = self.cancel.cancelled() => {
                self.goodbye(Reply::new(421, "4.3.2", format!("{hostname} Service shutting down, closing connection"))).await;
                Err(ConnError::Shutdown)
            }
        }
    }

    async fn goodbye(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
    }

    async fn start_tls(&mut self) -> Result<(), ConnError> {
        let config = self
            .ctx
            .tls_config
            .clone()
            .ok_or_else(|| ConnError::Tls("no certificate configured".into()))?;
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Upgrading)
        else {
            return Err(ConnError::Tls("TLS already active".into()));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| ConnError::Timeout)?
            .map_err(|e| {
                let incompatible = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|tls| matches!(tls, rustls::Error::PeerIncompatible(_)));
                if incompatible {
                    // Old printers: say what it is and what to do, once per connection.
                    tracing::warn!(
                        error = %e,
                        "a client could not agree on TLS: it most likely offers only TLS 1.0/1.1, which the relay does not speak; see README \"TLS 1.0/1.1 devices\" for a plaintext listener limited to that device's address"
                    );
                }
                ConnError::Tls(e.to_string())
            })?;
        self.stream = ClientStream::Tls(Box::new(tls));
        tracing::debug!(
            tls = self.stream.tls_description().unwrap_or_default(),
            "TLS established"
        );
        Ok(())
    }

    /// Read DATA content until CRLF.CRLF, streaming it through the header assembler into a
    /// spool entry; commit it only when everything went well.
    async fn receive_data(&mut self, request: &DataRequest) -> Result<DataOutcome, ConnError> {
        let spool = Arc::clone(&self.ctx.spool);
        let mut failure: Option<DataOutcome> = None;
        let mut writer = match spool.create().await {
            Ok(writer) => Some(writer),
            Err(error) => {
                tracing::error!(%error, "cannot create a spool entry");
                failure = Some(spool_failure(&error));
                None
            }
        };
        let queue_id = writer
            .as_ref()
            .map(|w| w.id().to_string())
            .unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let single_recipient = match request.recipients.as_slice() {
            [only] => Some(only.as_str()),
            _ => None,
        };
        let received = received_field(&TraceInfo {
            helo: request.helo.as_deref(),
            peer: request.peer,
            hostname: &self.ctx.settings.hostname,
            protocol: request.protocol,
            queue_id: &queue_id,
            single_recipient,
            now,
        });
        let mut assembler = MessageAssembler::new(
            received,
            &self.ctx.settings.hostname,
            &queue_id,
            now,
            self.ctx.limits.max_header_size,
        )
        .with_sender_rules(SenderRules {
            grant: Arc::clone(&request.grant),
            envelope_sender: request.sender.clone(),
        });
        let mut receiver = DataReceiver::new(request.max_size);
        let mut content = Vec::with_capacity(READ_CHUNK);
        let mut pending = Vec::with_capacity(SPOOL_CHUNK);
        let mut grace_deadline: Option<Instant> = None;
        loop {
            let feed = receiver.feed(&self.input, &mut content);
            let consumed = match feed {
                Feed::NeedMore => self.input.len(),
                Feed::Finished { consumed } => consumed,
            };
            self.input.advance(consumed);
            if receiver.exceeded() && failure.is_none() {
                failure = Some(DataOutcome::TooLarge);
            }
            if failure.is_none()
                && let Err(error) = assembler.push(&content, &mut pending)
            {
                failure = Some(assembly_failure(error));
            }
            content.clear();
            let finished = matches!(feed, Feed::Finished { .. });
            if finished
                && failure.is_none()
                && let Err(error) = assembler.finish(&mut pending)
            {
                failure = Some(assembly_failure(error));
            }
            if failure.is_some() {
                // Stop storing; keep reading to the end so the reply lands in sync.
                writer = None;
                pending.clear();
            } else if (pending.len() >= SPOOL_CHUNK || finished)
                && let Some(w) = writer.as_mut()
            {
                if let Err(error) = w.write(&pending).await {
                    tracing::error!(%error, "cannot write to the spool");
                    failure = Some(spool_failure(&error));
                    writer = None;
                }
                pending.clear();
            }
            if finished {
                break;
            }
            self.read_data(&mut grace_deadline).await?;
        }
        if let Some(outcome) = failure {
            let reason = match &outcome {
                DataOutcome::TooLarge | DataOutcome::HeaderTooLarge => "too large",
                DataOutcome::FromRefused(_) => "From header not allowed",
                _ => "storage",
            };
            match &outcome {
                DataOutcome::FromRefused(address) => tracing::warn!(
                    size = receiver.size(),
                    reason,
                    "refused: the From: header <{address}> is not in the allowed_senders of {}",
                    request.principal
                ),
                _ => tracing::warn!(size = receiver.size(), reason, "message refused"),
            }
            self.ctx
                .metrics
                .messages_refused
                .get_or_create(&Metrics::reason(reason))
                .inc();
            return Ok(outcome);
        }
        let Some(writer) = writer else {
            return Ok(DataOutcome::StorageFailed);
        };
        let mut envelope = Envelope::new(
            &request.account,
            request.sender.clone(),
            request.recipients.clone(),
            ClientInfo {
                peer: request.peer.to_string(),
                helo: request.helo.clone(),
                principal: request.principal.to_string(),
            },
            unix_now(),
        );
        envelope.eight_bit = receiver.eight_bit();
        envelope.smtputf8 |= request.smtputf8;
        match writer.commit(envelope).await {
            Ok(envelope) => {
                let account = Metrics::account(&envelope.account);
                self.ctx.metrics.accepted.get_or_create(&account).inc();
                self.ctx
                    .metrics
                    .accepted_bytes
                    .get_or_create(&account)
                    .inc_by(envelope.body_len);
                tracing::info!(
                    queue_id = %envelope.id,
                    account = %envelope.account,
                    sender = %envelope.sender.as_ref().map(|s| s.as_str()).unwrap_or(""),
                    recipients = envelope.recipients.len(),
                    size = envelope.body_len,
                    principal = %envelope.client.principal,
                    "message accepted"
                );
                let account_queue = self.ctx.queue.account(&envelope.account);
                let waiter = match (self.ctx.acknowledge_delivered, &account_queue) {
                    (Some(timeout), Some(queue)) => Some((queue.watch(&envelope.id), timeout)),
                    _ => None,
                };
                if !self.ctx.queue.submit(&envelope) {
                    tracing::error!(queue_id = %envelope.id, account = %envelope.account, "no such account; the message stays in the spool");
                }
                let Some((receiver, timeout)) = waiter else {
                    return Ok(DataOutcome::Queued(envelope.id));
                };
                let verdict = tokio::select! {
                    verdict = tokio::time::timeout(timeout, receiver) => verdict.ok().and_then(Result::ok),
                    _ = self.cancel.cancelled() => None,
                };
                Ok(match verdict {
                    Some(FirstOutcome::Delivered { reply }) => DataOutcome::Delivered {
                        id: envelope.id,
                        reply,
                    },
                    Some(FirstOutcome::Rejected { code, text }) => {
                        DataOutcome::Rejected { code, text }
                    }
                    Some(FirstOutcome::Deferred) | None => {
                        if let Some(queue) = account_queue {
                            queue.unwatch(&envelope.id);
                        }
                        DataOutcome::Queued(envelope.id)
                    }
                })
            }
            Err(error) => {
                tracing::error!(%error, "cannot commit the message to the spool");
                Ok(spool_failure(&error))
            }
        }
    }

    /// Read more DATA content. After shutdown began, the client gets a grace period.
    async fn read_data(&mut self, grace_deadline: &mut Option<Instant>) -> Result<(), ConnError> {
        self.input.reserve(READ_CHUNK);
        let mut deadline = Instant::now() + self.ctx.limits.data_timeout;
        if let Some(grace) = grace_deadline {
            deadline = deadline.min(*grace);
        }
        let shutting_down = grace_deadline.is_some();
        tokio::select! {
            read = self.stream.read_buf(&mut self.input) => match read? {
                0 => Err(ConnError::Closed),
                _ => Ok(()),
            },
            _ = tokio::time::sleep_until(deadline) => {
                let hostname = self.ctx.settings.hostname.clone();
                let reply = if shutting_down {
                    Reply::new(421, "4.3.2", format!("{hostname} Service shutting down, closing connection"))
                } else {
                    Reply::new(421, "4.4.2", format!("{hostname} Timeout during DATA, closing connection"))
                };
                self.goodbye(reply).await;
                Err(ConnError::Timeout)
            }
            _ = self.cancel.cancelled(), if !shutting_down => {
                *grace_deadline = Some(Instant::now() + SHUTDOWN_DATA_GRACE);
                Ok(())
            }
        }
    }
}

/// Completes when the client closes the connection (or it fails); bytes it pipelines
/// meanwhile are kept in `input`, up to one line's worth, after which reading pauses.
async fn client_gone(stream: &mut ClientStream, input: &mut BytesMut, max_line: usize) {
    loop {
        if input.len() > max_line + READ_CHUNK {
            return std::future::pending().await;
        }
        input.reserve(READ_CHUNK);
        match stream.read_buf(input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn spool_failure(error: &crate::spool::SpoolError) -> DataOutcome {
    if error.is_storage_full() {
        DataOutcome::StorageFull
    } else {
        DataOutcome::StorageFailed
    }
}

fn assembly_failure(error: AssemblyError) -> DataOutcome {
    match error {
        AssemblyError::HeaderTooLarge => DataOutcome::HeaderTooLarge,
        AssemblyError::FromRefused(refused) => DataOutcome::FromRefused(refused.0),
    }
}
