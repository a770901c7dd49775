//! The connection driver: runs the pure [`Session`] state machine over a framed client
//! `Connection` (`framing.rs`), carrying out the actions it asks for (TLS, a password check,
//! receiving a message into the spool) and logging and counting policy refusals.
//!
//! Invariants:
//! - Replies go out in command order; pipelined commands are answered together when the
//!   input buffer runs dry (RFC 2920), and immediately before any blocking action.
//! - `250` after DATA is sent only after [`crate::spool::SpoolWriter::commit`] returned
//!   (fsynced); any spool failure answers `451 4.3.0` (`452 4.3.1` for a full disk), never a
//!   5xx.
//! - Every wait on the client is bounded, by the `Connection` (see `framing.rs`: command,
//!   DATA, reply, TLS and session deadlines, the shutdown grace); the waits the driver makes
//!   for the client (a password check, the disk) take their deadlines from it too.
//! - A message past `max_message_size` is drained (so the `552` lands in sync) for at most as
//!   many bytes again; then the connection gets `552` and is closed.
//! - A session the [`SessionSlot`] says was evicted to make room for a new client answers
//!   `421 4.7.0` and closes; it is only evicted outside a transaction.
//! - A client that hangs up while its AUTH attempt waits for its turn gives the turn up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthVerdict, authenticate};
use super::framing::{ConnError, Connection};
use super::registry::SessionSlot;
use super::session::{Action, Session, SessionSettings, Step};
use super::stream::ClientStream;
use super::throttle::AuthThrottle;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::queue::Queue;
use crate::spool::Spool;
use crate::vocab::tls_mode::TlsMode;

/// Everything a connection needs from the rest of the relay; shared per listener.
pub struct InboundContext {
    /// What the session state machine needs of the listener (hostname, TLS mode, limits).
    pub settings: Arc<SessionSettings>,
    /// The listener's certificate, for STARTTLS or implicit TLS; `None` without one.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Users and trusted networks: who may send, as whom.
    pub policy: Arc<Policy>,
    /// The `[limits]` in force when the connection started.
    pub limits: Limits,
    /// Where accepted messages are stored.
    pub spool: Arc<Spool>,
    /// Where accepted messages are scheduled for delivery.
    pub queue: Arc<Queue>,
    /// Wait up to this long for Exchange's verdict before answering DATA.
    pub acknowledge_delivered: Option<Duration>,
    /// Failed AUTH attempts per client address and username (shared by all listeners).
    pub auth_throttle: Arc<AuthThrottle>,
    /// The argon2 workers (shared by all listeners).
    pub password_checker: Arc<crate::policy::PasswordChecker>,
    /// The relay's counters.
    pub metrics: Arc<Metrics>,
}

#[path = "conn_data.rs"]
mod data;

/// Whether the connection stays open after a [`Step`] was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStep {
    /// Go on with the next command line.
    Continue,
    /// The session ended (QUIT, too many errors, …): the replies went out, close.
    Close,
}

/// The driver of one connection: the session and everything its actions need.
struct Driver {
    /// The client's framed connection (socket, buffers, deadlines).
    connection: Connection,
    /// The listener's share of the relay.
    ctx: Arc<InboundContext>,
    /// The relay's shutdown (the wait for Exchange's verdict ends with it).
    cancel: CancellationToken,
    /// The client's address.
    peer: SocketAddr,
    /// This connection's place in the registry (activity, favour, eviction, pressure).
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
    let connection = Connection::new(
        ClientStream::Plain(stream),
        &ctx.limits,
        ctx.settings.hostname.clone(),
        cancel.clone(),
        Arc::clone(&ctx.metrics),
    );
    let mut driver = Driver {
        connection,
        ctx,
        cancel,
        peer,
        slot,
    };
    match driver.run().await {
        Ok(()) | Err(ConnError::Closed) => tracing::debug!("connection closed"),
        Err(ConnError::Shutdown) => tracing::debug!("connection closed for shutdown"),
        Err(error) => tracing::info!(%error, "connection ended"),
    }
    driver.connection.close().await;
}

impl Driver {
    async fn run(&mut self) -> Result<(), ConnError> {
        let implicit = self.ctx.settings.tls_mode == TlsMode::Implicit;
        if implicit {
            self.connection
                .start_tls(self.ctx.tls_config.clone())
                .await?;
        }
        let network_grant = self.ctx.policy.network_grant(self.peer.ip());
        let mut session = Session::new(
            Arc::clone(&self.ctx.settings),
            self.peer,
            network_grant,
            implicit,
        );
        self.connection.write_reply(&session.greeting());
        loop {
            let line = self
                .connection
                .next_line(session.in_transaction(), &mut self.slot)
                .await?;
            let step = match line {
                Ok(line) => session.handle_line(&line),
                Err(_) => session.line_too_long(),
            };
            let after = self.perform(&mut session, step).await?;
            self.slot.activity(session.in_transaction());
            if session.is_authenticated() {
                self.slot.favour();
            }
            if after == AfterStep::Close {
                return Ok(());
            }
        }
    }

    /// Send the step's reply and carry out its action, feeding results back into the
    /// session, until a step needs nothing more.
    async fn perform(
        &mut self,
        session: &mut Session,
        mut step: Step,
    ) -> Result<AfterStep, ConnError> {
        loop {
            if let Some(reply) = &step.reply {
                self.connection.write_reply(reply);
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
                Action::None => return Ok(AfterStep::Continue),
                Action::Close => {
                    self.connection.flush().await?;
                    return Ok(AfterStep::Close);
                }
                Action::StartTls => {
                    self.connection.flush().await?;
                    // Anything pipelined after STARTTLS was sent in clear: start_tls drops it.
                    self.connection
                        .start_tls(self.ctx.tls_config.clone())
                        .await?;
                    session.tls_established();
                    return Ok(AfterStep::Continue);
                }
                Action::VerifyPassword { username, password } => {
                    self.connection.flush().await?;
                    let deadline = self.connection.auth_deadline();
                    let ctx = Arc::clone(&self.ctx);
                    let attempt = authenticate(&ctx, self.peer, &username, password, deadline);
                    // A client that hangs up while its attempt waits for its turn gives the
                    // turn up (an attacker cannot queue attempts and leave).
                    let verdict = tokio::select! {
                        verdict = attempt => verdict,
                        () = self.connection.client_gone() => return Err(ConnError::Closed),
                    };
                    match verdict {
                        AuthVerdict::Granted(grant) => session.auth_finished(Some(grant)),
                        AuthVerdict::Denied => session.auth_finished(None),
                        AuthVerdict::TryLater(reply) => session.auth_deferred(reply),
                    }
                }
                Action::ReceiveData(request) => {
                    self.connection.flush().await?;
                    let outcome = self.receive_data(&request).await?;
                    session.data_finished(outcome)
                }
            };
        }
    }
}
