//! An Exchange-Online-like SMTP submission server (tokio + tokio-rustls) reproducing
//! `smtp.office365.com:587` as described in exchange-online.md §4.2 and §5: the greeting and
//! EHLO lists before/after STARTTLS, AUTH XOAUTH2 with real token checks against the shared
//! [`Directory`], the post-DATA SendAs and concurrency checks, and the replies relays meet.
//!
//! Layout: this file is the public handle (start, options, faults, observations);
//! `exchange_listener` accepts (and really refuses) connections, `exchange_session` runs one
//! SMTP conversation, `exchange_auth` checks XOAUTH2, `exchange_data` is the pure DATA/header
//! parsing, `exchange_replies` the reply table, `exchange_state` the shared bookkeeping.
//!
//! AUTH XOAUTH2 check order: payload syntax (`501 5.5.124`) → signature/format → expiry →
//! `aud` is Exchange → `tid` is the tenant → SMTP AUTH policy of the mailbox/tenant
//! (`535 5.7.139`) → `roles` has `SMTP.SendAsApp` → Exchange knows the service principal
//! (`oid` matches `New-ServicePrincipal`) → the mailbox exists → the SP has FullAccess;
//! every token failure is `535 5.7.3 Authentication unsuccessful [host]`, the reason is kept
//! in [`AuthAttempt`]. After the final dot: size (`552 5.3.4`) → bare LF (`550 5.6.11`) →
//! header value > 32768 (`554 5.6.211`) → injected 4xx faults → concurrency (`432 4.3.2` when
//! 3 sessions of the same mailbox that authenticated earlier are still open, i.e. for the
//! 4th) → SendAs for the envelope sender and every `From:` address (`554 5.2.252`) → store →
//! `250 2.0.0 OK`.
//!
//! Known deviations (unconfirmed or deliberately simplified):
//! - BDAT/CHUNKING is advertised like the real server but BDAT is answered `502 5.5.1` after
//!   its chunk is read and dropped (relays use DATA);
//! - a null reverse path `MAIL FROM:<>` fails the SendAs check (real behaviour unknown);
//! - a missing `From:` header is not checked (only the envelope sender is);
//! - no propagation delays, no 30 msg/min throttling (timestamps are recorded so tests can
//!   assert the relay's pacing), no recipient-rate quota, no TLS-version 421 (rustls never
//!   negotiates below TLS 1.2); texts marked unconfirmed in the reference use the documented
//!   codes with plausible wording.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::TestkitError;
use super::directory::Directory;
use super::exchange_listener;
use super::exchange_state::ExchangeShared;
use super::jwt::TokenVerifier;
use super::pki::TestPki;

/// Default host name in the banner and replies.
pub const DEFAULT_HOSTNAME: &str = "FAKE01CA0001.outlook.office365.com";
/// Default mailbox `MaxSendSize` (35 MB as Exchange counts it: 35 × 1024 × 1024 bytes).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 35 * 1024 * 1024;

/// Start-up options of [`FakeExchange`].
#[derive(Clone, Debug)]
pub struct ExchangeOptions {
    /// Host name in the greeting, EHLO and bracketed reply suffixes.
    pub hostname: String,
    /// Recipients accepted per transaction before `452 4.5.3` (default 500).
    pub max_recipients: usize,
    /// Mailbox send limit checked after DATA (default 35 MB); also settable at run time.
    pub max_message_size: usize,
    /// Open authenticated sessions per mailbox before `432 4.3.2` (default 3).
    pub max_concurrent_sessions_per_mailbox: usize,
    /// Longest accepted command line, AUTH lines included (default 32 KiB).
    pub max_command_line: usize,
    /// Idle timeout of a session (default 10 min).
    pub idle_timeout: Duration,
    /// Benchmark mode: messages are recorded (envelope, size, SHA-256) but their bodies are
    /// not kept, and verified tokens are cached by their string.
    pub fast_mode: bool,
    /// Also write each accepted message as `<time>-<id>.eml` into this directory.
    pub eml_dir: Option<PathBuf>,
}

impl Default for ExchangeOptions {
    fn default() -> Self {
        ExchangeOptions {
            hostname: DEFAULT_HOSTNAME.to_owned(),
            max_recipients: 500,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_concurrent_sessions_per_mailbox: 3,
            max_command_line: 32 * 1024,
            idle_timeout: Duration::from_secs(600),
            fast_mode: false,
            eml_dir: None,
        }
    }
}

/// A fault the server can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeFault {
    /// Close the listening socket (connect() gets ECONNREFUSED); re-bind the same port when
    /// cleared. Persistent only.
    RefuseConnections,
    /// Greet with `421 4.3.2 Service not available, closing transmission channel` and close.
    Banner421,
    /// After the final dot: `451 4.7.0 Temporary server error. Please try again later. PRX4`.
    TempFailAfterData,
    /// AUTH XOAUTH2 answers `535 5.7.139 ... disabled for the Tenant` whatever the token.
    AuthDisabled,
    /// After the final dot: store the message, then close without replying.
    DropAfterDot,
    /// After the final dot: `430 4.2.0 STOREDRV; mailbox logon failure; ...`.
    MailboxLogonFailure,
    /// After the final dot: store the message, wait this long, then reply `250`.
    StallAfterDot(Duration),
}

/// Why an AUTH attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRejection {
    /// AUTH before STARTTLS (`504 5.7.4`).
    NotAdvertised,
    /// A mechanism other than XOAUTH2/LOGIN/PLAIN (`504 5.7.4`).
    UnsupportedMechanism,
    /// AUTH LOGIN or PLAIN (`535 5.7.139 ... basic authentication is disabled.`).
    BasicAuthDisabled,
    /// The client answered `*` to the challenge (`501`).
    Cancelled,
    /// The SASL payload is not `base64(user=..\x01auth=Bearer ..\x01\x01)` (`501 5.5.124`).
    InvalidXoauth2Data,
    /// Not a JWS, or not ES256.
    MalformedToken,
    /// Signed by another key or tampered with.
    BadSignature,
    /// `exp` passed.
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// `aud` is not Exchange (e.g. a Graph token).
    WrongAudience,
    /// `tid` is another tenant.
    WrongTenant,
    /// `roles` lacks `SMTP.SendAsApp` (permission or admin consent missing).
    MissingRole,
    /// Exchange has no service principal for `appid` (`New-ServicePrincipal` not run).
    NoServicePrincipal,
    /// The registered service principal has another object id than the token's `oid`.
    ServicePrincipalMismatch,
    /// `user=` is not a mailbox of the tenant.
    UnknownMailbox,
    /// The service principal has no FullAccess on the `user=` mailbox.
    MailboxNotGranted,
    /// SMTP AUTH disabled on the mailbox (`535 5.7.139 ... Mailbox`).
    SmtpAuthDisabledForMailbox,
    /// SMTP AUTH disabled tenant-wide (`535 5.7.139 ... Tenant`).
    SmtpAuthDisabledForTenant,
    /// The `AuthDisabled` fault answered.
    InjectedAuthDisabled,
}

/// One AUTH attempt, without the token (only its first 8 characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthAttempt {
    /// When.
    pub at: SystemTime,
    /// The mechanism named by the client (uppercase).
    pub mechanism: String,
    /// The XOAUTH2 `user=` value, if any.
    pub mailbox: Option<String>,
    /// The token's `appid`, if decodable.
    pub client_id: Option<String>,
    /// First 8 characters of the token.
    pub token_prefix: Option<String>,
    /// Success or the reason of the failure.
    pub result: Result<(), AuthRejection>,
}

/// An accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedMessage {
    /// The server's id for the message (`FAKE-n`).
    pub id: String,
    /// The `Message-ID` echoed in the 250 reply (the header's, or a generated one).
    pub message_id: String,
    /// Envelope sender (MAIL FROM).
    pub envelope_from: String,
    /// Envelope recipients (RCPT TO), as sent.
    pub recipients: Vec<String>,
    /// The XOAUTH2 `user=` mailbox of the session.
    pub auth_mailbox: String,
    /// The token's `appid`.
    pub client_id: String,
    /// The exact unstuffed bytes; `None` in fast mode.
    pub data: Option<Vec<u8>>,
    /// Size of the unstuffed message.
    pub size: usize,
    /// Lowercase hex SHA-256 of the unstuffed message.
    pub sha256: String,
    /// When it was accepted.
    pub accepted_at: SystemTime,
    /// Where the `.eml` copy was written, if enabled.
    pub eml_path: Option<PathBuf>,
}

impl AcceptedMessage {
    /// The stored bytes (empty in fast mode).
    pub fn body(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }
}

/// Counters of the server.
#[derive(Clone, Debug, Default)]
pub struct ExchangeStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// AUTH attempts, oldest first (bounded to the last 1024).
    pub auth_attempts: Vec<AuthAttempt>,
    /// Successful AUTHs.
    pub auth_successes: u64,
    /// Failed AUTHs.
    pub auth_failures: u64,
    /// `432 4.3.2` replies given.
    pub throttled_432: u64,
    /// Messages accepted (also in fast mode).
    pub messages_accepted: u64,
    /// Bytes accepted (unstuffed).
    pub bytes_accepted: u64,
    /// Highest number of simultaneously open authenticated sessions, per mailbox.
    pub max_concurrent_sessions: BTreeMap<String, usize>,
    /// Replies given, by code.
    pub replies_by_code: BTreeMap<u16, u64>,
}

/// A running fake Exchange server. Dropping it stops the server.
pub struct FakeExchange {
    addr: SocketAddr,
    shared: Arc<ExchangeShared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl std::fmt::Debug for FakeExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeExchange")
            .field("addr", &self.addr)
            .field("hostname", &self.shared.options.hostname)
            .finish_non_exhaustive()
    }
}

impl FakeExchange {
    /// Starts the server on `127.0.0.1:0`. `verifier` checks token signatures (normally
    /// `directory.token_verifier()`, i.e. tokens from the [`FakeEntra`](super::FakeEntra) of
    /// the same directory).
    ///
    /// # Errors
    /// Fails if the TLS configuration cannot be built, the socket cannot be bound, or the
    /// `.eml` directory cannot be created.
    pub async fn start(
        directory: Directory,
        pki: &TestPki,
        verifier: TokenVerifier,
        options: ExchangeOptions,
    ) -> Result<FakeExchange, TestkitError> {
        if let Some(dir) = &options.eml_dir {
            tokio::fs::create_dir_all(dir).await?;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let listener = exchange_listener::bind_reusable(None)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ExchangeShared::new(directory, verifier, options));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(exchange_listener::run(
            listener,
            addr,
            Arc::clone(&shared),
            acceptor,
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, "fake Exchange listening");
        Ok(FakeExchange {
            addr,
            shared,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
            tracker,
        })
    }

    /// The listening address (`127.0.0.1:PORT`), stable across `RefuseConnections`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host name used in replies.
    pub fn hostname(&self) -> &str {
        &self.shared.options.hostname
    }

    /// The shared directory.
    pub fn directory(&self) -> &Directory {
        &self.shared.directory
    }

    // ----- faults and run-time settings -------------------------------------------------------

    /// Activates `fault` until [`FakeExchange::clear_faults`]. For `RefuseConnections` this
    /// returns once the listening socket is closed.
    ///
    /// # Errors
    /// [`TestkitError::Timeout`] if the listener did not close within 5 s.
    pub async fn set_fault(&self, fault: ExchangeFault) -> Result<(), TestkitError> {
        self.shared.arm_fault(fault, None);
        if fault == ExchangeFault::RefuseConnections {
            self.shared.set_refusing(true);
            self.shared.wait_listener(false).await?;
        }
        Ok(())
    }

    /// Makes the next `count` occurrences of `fault` happen (per injection point: connection
    /// for `Banner421`, AUTH for `AuthDisabled`, end of DATA for the others), before any
    /// persistent fault of the same stage.
    ///
    /// # Errors
    /// [`TestkitError::UnsupportedFault`] for `RefuseConnections` (a refused connection never
    /// reaches the server, so it cannot be counted).
    pub fn fail_next(&self, count: u32, fault: ExchangeFault) -> Result<(), TestkitError> {
        if fault == ExchangeFault::RefuseConnections {
            return Err(TestkitError::UnsupportedFault(
                "RefuseConnections cannot be limited to a count; use set_fault/clear_faults"
                    .to_owned(),
            ));
        }
        if count > 0 {
            self.shared.arm_fault(fault, Some(count));
        }
        Ok(())
    }

    /// Clears every fault; if connections were refused, returns once the same port listens
    /// again.
    ///
    /// # Errors
    /// [`TestkitError::Server`] if the port could not be re-bound, or a timeout.
    pub async fn clear_faults(&self) -> Result<(), TestkitError> {
        let was_refusing = self.shared.clear_faults();
        if was_refusing {
            self.shared.set_refusing(false);
            self.shared.wait_listener(true).await?;
        }
        Ok(())
    }

    /// Changes the mailbox size limit checked after DATA.
    pub fn set_max_message_size(&self, bytes: usize) {
        self.shared.with_runtime(|r| r.max_message_size = bytes);
    }

    /// Changes the recipient limit per transaction.
    pub fn set_max_recipients(&self, count: usize) {
        self.shared.with_runtime(|r| r.max_recipients = count);
    }

    /// Answers RCPT TO for `address` with `reply` (a full reply line such as
    /// `550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup`);
    /// a `421` reply closes the session after it, as Exchange does.
    pub fn reject_recipient(&self, address: &str, reply: &str) {
        let (address, reply) = (address.to_ascii_lowercase(), reply.to_owned());
        self.shared.with_runtime(|r| {
            r.recipient_rejections.insert(address, reply);
        });
    }

    /// Removes every per-recipient rejection.
    pub fn clear_recipient_rejections(&self) {
        self.shared.with_runtime(|r| r.recipient_rejections.clear());
    }

    // ----- observations -----------------------------------------------------------------------

    /// Accepted messages, oldest first.
    pub fn messages(&self) -> Vec<AcceptedMessage> {
        self.shared.with_runtime(|r| r.messages.clone())
    }

    /// Number of accepted messages (also in fast mode).
    pub fn message_count(&self) -> u64 {
        self.shared.with_runtime(|r| r.stats.messages_accepted)
    }

    /// Waits until at least `count` messages were accepted, then returns them.
    ///
    /// # Errors
    /// [`TestkitError::Timeout`] if fewer arrived within `timeout`.
    pub async fn wait_for_messages(
        &self,
        count: u64,
        timeout: Duration,
    ) -> Result<Vec<AcceptedMessage>, TestkitError> {
        self.shared.wait_accepted(count, timeout).await?;
        Ok(self.messages())
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> ExchangeStats {
        self.shared.with_runtime(|r| r.stats.clone())
    }

    /// TCP connections accepted so far.
    pub fn connection_count(&self) -> u64 {
        self.shared.with_runtime(|r| r.stats.connections)
    }

    /// AUTH attempts so far (bounded to the last 1024).
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.shared.with_runtime(|r| r.stats.auth_attempts.clone())
    }

    /// The result of the most recent AUTH attempt.
    pub fn last_auth_result(&self) -> Option<Result<(), AuthRejection>> {
        self.shared
            .with_runtime(|r| r.stats.auth_attempts.last().map(|a| a.result))
    }

    /// `432 4.3.2` replies given so far.
    pub fn throttled_count(&self) -> u64 {
        self.shared.with_runtime(|r| r.stats.throttled_432)
    }

    /// Authenticated sessions currently open for `mailbox`.
    pub fn current_sessions(&self, mailbox: &str) -> usize {
        let mailbox = mailbox.to_ascii_lowercase();
        self.shared
            .with_runtime(|r| r.sessions.get(&mailbox).map_or(0, |s| s.len()))
    }

    /// Highest number of simultaneously open authenticated sessions seen for `mailbox`.
    pub fn max_concurrent_sessions(&self, mailbox: &str) -> usize {
        let mailbox = mailbox.to_ascii_lowercase();
        self.shared.with_runtime(|r| {
            r.stats
                .max_concurrent_sessions
                .get(&mailbox)
                .copied()
                .unwrap_or_default()
        })
    }

    /// When each message of `mailbox` was accepted, oldest first.
    pub fn acceptance_times(&self, mailbox: &str) -> Vec<SystemTime> {
        let mailbox = mailbox.to_ascii_lowercase();
        self.shared
            .with_runtime(|r| r.acceptances.get(&mailbox).cloned().unwrap_or_default())
    }

    /// The most messages of `mailbox` accepted within any sliding `window` (e.g. 60 s, to
    /// assert the relay paces at ≤ 30/min).
    pub fn max_accepted_in_window(&self, mailbox: &str, window: Duration) -> usize {
        let times = self.acceptance_times(mailbox);
        times
            .iter()
            .enumerate()
            .map(|(start, first)| {
                times
                    .iter()
                    .skip(start)
                    .take_while(|t| t.duration_since(*first).unwrap_or_default() < window)
                    .count()
            })
            .max()
            .unwrap_or_default()
    }

    /// How many replies with `code` were given.
    pub fn replies_with_code(&self, code: u16) -> u64 {
        self.shared.with_runtime(|r| {
            r.stats
                .replies_by_code
                .get(&code)
                .copied()
                .unwrap_or_default()
        })
    }

    /// Stops accepting, ends sessions (`421` to idle ones) and waits at most 5 s for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}
