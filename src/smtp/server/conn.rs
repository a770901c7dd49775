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
//! - Every await on the socket has a deadline: a command line must arrive whole within
//!   `command_timeout` of the previous reply (trickling bytes does not extend it; outside a
//!   transaction only [`BUSY_IDLE_TIMEOUT`] while the relay is near its connection limit);
//!   DATA must keep coming within `data_timeout` per read and, after `data_timeout`, at
//!   `min_data_rate` on average; replies must be taken within `command_timeout`; the TLS
//!   handshake and the final shutdown are bounded too; and the whole session ends at
//!   `session_timeout` in every phase.
//! - A message past `max_message_size` is drained (so the `552` lands in sync) for at most as
//!   many bytes again; then the connection gets `552` and is closed.
//! - A session the [`SessionSlot`] says was evicted to make room for a new client answers
//!   `421 4.7.0` and closes; it is only evicted outside a transaction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthVerdict, authenticate};
use super::registry::{BUSY_IDLE_TIMEOUT, SessionSlot};
use super::session::{Action, Session, SessionSettings, Step};
use super::stream::ClientStream;
use super::throttle::AuthThrottle;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::queue::Queue;
use crate::smtp::proto::line::LineReader;
use crate::smtp::proto::reply::Reply;
use crate::spool::Spool;

/// How long a client in the middle of DATA may keep sending after shutdown began.
pub const SHUTDOWN_DATA_GRACE: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take (at most; `command_timeout` if shorter).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a last reply (421, 552) and the closing of the connection may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);
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

#[path = "conn_data.rs"]
mod data;

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
    #[error("closed to make room for a new client")]
    Evicted,
    #[error("DATA arrived slower than min_data_rate")]
    TooSlow,
    #[error("the client kept sending far past max_message_size")]
    OversizeDrain,
}

/// What ended the wait for command input.
enum CommandWake {
    Read(std::io::Result<usize>),
    Evicted,
    Shutdown,
    Deadline,
    Pressure,
}

struct Connection {
    stream: ClientStream,
    input: BytesMut,
    output: Vec<u8>,
    lines: LineReader,
    ctx: Arc<InboundContext>,
    cancel: CancellationToken,
    session_deadline: Instant,
    /// When the wait for the next command line began (the end of the previous reply).
    line_started: Instant,
    peer: SocketAddr,
    slot: SessionSlot,
}

/// Serve one accepted connection until it ends. Errors are logged here.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<InboundContext>,
    cancel: CancellationToken,
    slot: SessionSlot,
) {
    let _ = stream.set_nodelay(true);
    let mut connection = Connection {
        stream: ClientStream::Plain(stream),
        input: BytesMut::with_capacity(READ_CHUNK),
        output: Vec::with_capacity(1024),
        lines: LineReader::new(ctx.limits.max_line_length),
        session_deadline: Instant::now() + ctx.limits.session_timeout,
        line_started: Instant::now(),
        ctx,
        cancel,
        peer,
        slot,
    };
    match connection.run().await {
        Ok(()) | Err(ConnError::Closed) => tracing::debug!("connection closed"),
        Err(ConnError::Shutdown) => tracing::debug!("connection closed for shutdown"),
        Err(error) => tracing::info!(%error, "connection ended"),
    }
    // A TLS close_notify is a write: a client that stopped reading must not hold the task.
    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, connection.stream.shutdown()).await;
}

impl Connection {
    async fn run(&mut self) -> Result<(), ConnError> {
        let implicit = self.ctx.settings.tls_mode == crate::vocab::tls_mode::TlsMode::Implicit;
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
        self.line_started = Instant::now();
        loop {
            let mut answered = false;
            while let Some(line) = self.lines.next_line(&mut self.input) {
                answered = true;
                let step = match line {
                    Ok(line) => session.handle_line(&line),
                    Err(_) => session.line_too_long(),
                };
                let open = self.perform(&mut session, step).await?;
                self.slot.activity(session.in_transaction());
                if session.user().is_some() {
                    self.slot.favour();
                }
                if !open {
                    return Ok(());
                }
            }
            self.flush().await?;
            if answered {
                // The next line's time starts now; a partial line does not restart it.
                self.line_started = Instant::now();
            }
            self.read_command(session.in_transaction()).await?;
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

    /// Send the pending replies; a client that does not take them within `command_timeout`
    /// (or past the session deadline plus [`GOODBYE_TIMEOUT`]) is given up.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.output.is_empty() {
            let deadline = (Instant::now() + self.ctx.limits.command_timeout)
                .min(self.session_deadline + GOODBYE_TIMEOUT);
            let stream = &mut self.stream;
            let output = &self.output;
            let write = async move {
                stream.write_all(output).await?;
                stream.flush().await
            };
            tokio::time::timeout_at(deadline, write)
                .await
                .map_err(|_| ConnError::Timeout)??;
            self.output.clear();
        }
        Ok(())
    }

    /// Read more command input, answering 421 on timeout, shutdown, eviction or session
    /// expiry. Returns early (with nothing read) when the relay's load changes, so the caller
    /// recomputes the deadline.
    async fn read_command(&mut self, in_transaction: bool) -> Result<(), ConnError> {
        self.input.reserve(READ_CHUNK);
        let limits = &self.ctx.limits;
        let idle_limit = if !in_transaction && self.slot.under_pressure() {
            BUSY_IDLE_TIMEOUT.min(limits.command_timeout)
        } else {
            limits.command_timeout
        };
        let deadline = (self.line_started + idle_limit).min(self.session_deadline);
        let hostname = self.ctx.settings.hostname.clone();
        let evicted = self.slot.evicted().clone();
        // Biased: a passed deadline wins over more input, so a client that keeps bytes
        // coming without ever finishing a line is still bounded.
        let wake = tokio::select! {
            biased;
            _ = evicted.cancelled() => CommandWake::Evicted,
            _ = self.cancel.cancelled() => CommandWake::Shutdown,
            _ = tokio::time::sleep_until(deadline) => CommandWake::Deadline,
            read = self.stream.read_buf(&mut self.input) => CommandWake::Read(read),
            _ = self.slot.pressure_changed() => CommandWake::Pressure,
        };
        match wake {
            CommandWake::Read(read) => match read? {
                0 => Err(ConnError::Closed),
                _ => Ok(()),
            },
            CommandWake::Pressure => Ok(()),
            CommandWake::Evicted => {
                self.goodbye(Reply::new(
                    421,
                    "4.7.0",
                    format!("{hostname} Server too busy, closing idle connection; try again"),
                ))
                .await;
                Err(ConnError::Evicted)
            }
            CommandWake::Deadline => {
                let (reply, error) = if deadline >= self.session_deadline {
                    (
                        Reply::new(
                            421,
                            "4.4.2",
                            format!("{hostname} Session too long, closing connection"),
                        ),
                        ConnError::SessionTooLong,
                    )
                } else {
                    if idle_limit < limits.command_timeout {
                        self.ctx
                            .metrics
                            .connections_evicted
                            .get_or_create(&Metrics::reason(Metrics::EVICTED_BUSY_TIMEOUT))
                            .inc();
                    }
                    (
                        Reply::new(
                            421,
                            "4.4.2",
                            format!("{hostname} Timeout, closing connection"),
                        ),
                        ConnError::Timeout,
                    )
                };
                self.goodbye(reply).await;
                Err(error)
            }
            CommandWake::Shutdown => {
                self.goodbye(Reply::new(
                    421,
                    "4.3.2",
                    format!("{hostname} Service shutting down, closing connection"),
                ))
                .await;
                Err(ConnError::Shutdown)
            }
        }
    }

    async fn goodbye(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.flush()).await;
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
        let deadline = (Instant::now()
            + TLS_HANDSHAKE_TIMEOUT.min(self.ctx.limits.command_timeout))
        .min(self.session_deadline);
        let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
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
