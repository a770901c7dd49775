//! The framed client connection: the one owner of an inbound socket, its input buffer and
//! the command-line and DATA framing, with every wait on the client bounded here.
//!
//! [`Connection`] offers what the driver (`conn.rs`) needs and nothing else: the next command
//! line, the next chunk of DATA content, writing a reply and flushing the replies, the TLS
//! upgrade, the deadlines of the waits the driver makes on the client's behalf (a password
//! check, a disk write), and the final close.
//!
//! Invariants (the deadlines; see the parent's `conn` module for the protocol ones):
//! - A command line must arrive whole within `command_timeout` of the previous reply
//!   (trickling bytes does not extend it; outside a transaction only [`BUSY_IDLE_TIMEOUT`]
//!   while the relay is near its connection limit). Lines pipelined together are answered
//!   together, when the input runs dry (RFC 2920).
//! - DATA must keep coming within `data_timeout` per read and, after the first `data_timeout`,
//!   at `min_data_rate` on average; once shutdown began, a client in DATA gets
//!   [`SHUTDOWN_DATA_GRACE`] to finish.
//! - Replies must be taken within `command_timeout`; the TLS handshake within
//!   [`TLS_HANDSHAKE_TIMEOUT`] (or `command_timeout` if shorter); a last reply and the closing
//!   of the connection within [`GOODBYE_TIMEOUT`].
//! - The session deadline (`session_timeout` from the connection's start) bounds every wait.
//! - The input buffer never grows beyond the line limit plus one read; DATA content leaves it
//!   chunk by chunk.
//! - Every wait that ends the connection sends its `421` (or `552` for a message that keeps
//!   coming far past its limit) before it returns the error.
//! - Bytes the client pipelined after STARTTLS are discarded (RFC 3207 §4.2).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::registry::{BUSY_IDLE_TIMEOUT, SessionSlot};
use super::stream::ClientStream;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::smtp::proto::line::{LineReader, LineTooLong};
use crate::smtp::proto::reply::Reply;

/// How long a client in the middle of DATA may keep sending after shutdown began.
pub const SHUTDOWN_DATA_GRACE: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take (at most; `command_timeout` if shorter).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a last reply (421, 552) and the closing of the connection may take.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much one read asks for.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection ended abnormally (logged, never sent to the client).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
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

/// The limits of [`crate::config::Limits`] that bound the waits on the client.
#[derive(Debug, Clone, Copy)]
struct WaitLimits {
    /// The longest command line (without its line ending).
    max_line_length: usize,
    /// For a whole command line, and for the client to take the replies.
    command_timeout: Duration,
    /// Per DATA read, and for each disk wait of the DATA phase.
    data_timeout: Duration,
    /// Bytes per second on average once DATA has been arriving for `data_timeout`; 0: none.
    min_data_rate: u64,
}

/// The framed connection to one client. See the module documentation.
pub(super) struct Connection {
    /// The socket: plain TCP, or TLS after STARTTLS or on an implicit-TLS listener.
    stream: ClientStream,
    /// Bytes read from the client and not yet framed into lines or DATA content.
    input: BytesMut,
    /// Replies written and not yet flushed (pipelined replies go out together).
    output: Vec<u8>,
    /// The command-line framing (remembers an overlong line being discarded).
    lines: LineReader,
    /// The bounds of every wait on the client.
    limits: WaitLimits,
    /// This listener's hostname, which opens the connection's last reply.
    hostname: String,
    /// The relay's shutdown: cancelled when the relay stops.
    shutdown: CancellationToken,
    /// For the count of sessions closed by the busy idle timeout.
    metrics: Arc<Metrics>,
    /// When the session must end, whatever it is doing (`session_timeout` from the start).
    session_deadline: Instant,
    /// When the wait for the next command line began (the end of the previous reply).
    line_started: Instant,
    /// A line was taken since the last read: the next wait for input starts a new line's
    /// time once the replies have gone out. True at the start, for the greeting.
    restart_line_clock: bool,
}

#[path = "framing_data.rs"]
mod data;
pub(super) use data::DataChunk;

/// What ended the wait for command input.
enum CommandWake {
    Read(std::io::Result<usize>),
    Evicted,
    Shutdown,
    Deadline,
    Pressure,
}

impl Connection {
    /// Frame `stream`, a connection accepted now, with the listener's limits.
    pub fn new(
        stream: ClientStream,
        limits: &Limits,
        hostname: String,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Connection {
        let now = Instant::now();
        Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(1024),
            lines: LineReader::new(limits.max_line_length),
            limits: WaitLimits {
                max_line_length: limits.max_line_length,
                command_timeout: limits.command_timeout,
                data_timeout: limits.data_timeout,
                min_data_rate: limits.min_data_rate,
            },
            hostname,
            shutdown,
            metrics,
            session_deadline: now + limits.session_timeout,
            line_started: now,
            restart_line_clock: true,
        }
    }

    /// Queue a reply; it goes out with the next [`Connection::flush`] (or before the next
    /// wait for input).
    pub fn write_reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    /// The next command line (or the news that one was too long and discarded). When the
    /// buffered input holds no whole line, the replies written so far go out first, then
    /// input is awaited until the line's deadline; `in_transaction` (the session's state now)
    /// decides whether the busy idle timeout applies. Timeouts, shutdown, eviction and the
    /// session deadline are answered `421` here and end the connection.
    pub async fn next_line(
        &mut self,
        in_transaction: bool,
        slot: &mut SessionSlot,
    ) -> Result<Result<BytesMut, LineTooLong>, ConnError> {
        loop {
            if let Some(line) = self.lines.next_line(&mut self.input) {
                self.restart_line_clock = true;
                return Ok(line);
            }
            self.flush().await?;
            if self.restart_line_clock {
                // The next line's time starts now; a partial line does not restart it.
                self.line_started = Instant::now();
                self.restart_line_clock = false;
            }
            self.read_command(in_transaction, slot).await?;
        }
    }

    /// Send the pending replies; a client that does not take them within `command_timeout`
    /// (or past the session deadline plus [`GOODBYE_TIMEOUT`]) is given up.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.output.is_empty() {
            let deadline = (Instant::now() + self.limits.command_timeout)
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
    async fn read_command(
        &mut self,
        in_transaction: bool,
        slot: &mut SessionSlot,
    ) -> Result<(), ConnError> {
        self.input.reserve(READ_CHUNK);
        let command_timeout = self.limits.command_timeout;
        let idle_limit = if !in_transaction && slot.under_pressure() {
            BUSY_IDLE_TIMEOUT.min(command_timeout)
        } else {
            command_timeout
        };
        let deadline = (self.line_started + idle_limit).min(self.session_deadline);
        let hostname = self.hostname.clone();
        let evicted = slot.evicted().clone();
        // Biased: a passed deadline wins over more input, so a client that keeps bytes
        // coming without ever finishing a line is still bounded.
        let wake = tokio::select! {
            biased;
            _ = evicted.cancelled() => CommandWake::Evicted,
            _ = self.shutdown.cancelled() => CommandWake::Shutdown,
            _ = tokio::time::sleep_until(deadline) => CommandWake::Deadline,
            read = self.stream.read_buf(&mut self.input) => CommandWake::Read(read),
            _ = slot.pressure_changed() => CommandWake::Pressure,
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
                    if idle_limit < command_timeout {
                        self.metrics
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

    /// Send a last reply, within [`GOODBYE_TIMEOUT`]; the connection ends after it.
    async fn goodbye(&mut self, reply: Reply) {
        reply.write_to(&mut self.output);
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.flush()).await;
    }

    /// Run the TLS handshake (STARTTLS, or at once on an implicit-TLS listener), within
    /// [`TLS_HANDSHAKE_TIMEOUT`] (or `command_timeout` if shorter) and the session deadline.
    /// Input buffered before it was sent in clear and is discarded.
    pub async fn start_tls(
        &mut self,
        config: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<(), ConnError> {
        self.input.clear();
        let config = config.ok_or_else(|| ConnError::Tls("no certificate configured".into()))?;
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Upgrading)
        else {
            return Err(ConnError::Tls("TLS already active".into()));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let deadline = (Instant::now() + TLS_HANDSHAKE_TIMEOUT.min(self.limits.command_timeout))
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

    /// The deadline of a password check the client waits for: `command_timeout` from now,
    /// never past the session deadline.
    pub fn auth_deadline(&self) -> Instant {
        (Instant::now() + self.limits.command_timeout).min(self.session_deadline)
    }

    /// The deadline of one disk wait in the DATA phase: `data_timeout` from now, never past
    /// the session deadline.
    pub fn disk_deadline(&self) -> Instant {
        (Instant::now() + self.limits.data_timeout).min(self.session_deadline)
    }

    /// Completes when the client closes the connection (or it fails); bytes it pipelines
    /// meanwhile are kept, up to one line's worth, after which reading pauses. For waits
    /// that a client hanging up should cut short.
    pub async fn client_gone(&mut self) {
        loop {
            if self.input.len() > self.limits.max_line_length + READ_CHUNK {
                return std::future::pending().await;
            }
            self.input.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Close the connection (a TLS close_notify is a write: a client that stopped reading
    /// must not hold the task, so this takes at most [`GOODBYE_TIMEOUT`]).
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, self.stream.shutdown()).await;
    }
}
