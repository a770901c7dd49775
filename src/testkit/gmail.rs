//! A Gmail-like SMTP submission server reproducing `smtp.gmail.com:587` (google-workspace.md
//! §4, §6, §7): the `gsmtp` greeting, EHLO without AUTH before STARTTLS, `530 5.7.0 Must issue
//! a STARTTLS command first.`, AUTH XOAUTH2 against the tokens the
//! [`FakeGoogleToken`](super::FakeGoogleToken) issued into the shared [`GoogleWorkspace`]
//! (only tokens with `https://mail.google.com/` for the same user pass; a failure answers the
//! `334` base64 JSON challenge, waits for the client's line, then `535 5.7.8`), Gmail's limits
//! and replies, and injectable faults.
//!
//! Layout: this file is the public handle (start, options, faults, observations) and the
//! shared state; `gmail_session` runs one conversation; `gmail_replies` is the reply table.
//! The socket reader, DATA receiver, path parsing and XOAUTH2 payload decoding are the Exchange
//! emulator's (`exchange_io`, `exchange_data`, `exchange_auth::parse_xoauth2`).
//!
//! Limits: recipients per message (default 100, then `452 4.5.3`), per-user messages and
//! recipients per rolling window (defaults 2,000 and 10,000 per 24 h, support.google.com/a/
//! answer/166852): the message limit is checked at MAIL, the recipient limit at the end of
//! DATA (the whole message is refused), both with `550 5.4.5`; where Gmail checks them is not
//! documented. Size: `552 5.3.4` above the advertised `SIZE 35882577`.
//!
//! Known departures: CHUNKING/BDAT is not advertised; OAUTHBEARER and XOAUTH are advertised
//! but answered `504`; LOGIN/PLAIN always fail with `535 5.7.8` (no app passwords);
//! the challenge JSON `status` is `401` for an unknown or expired token and `400` for a
//! wrong scope or user (inferred from reports); no port 465, no sender rewriting.
//!
//! Invariants: tokens are never logged or recorded (8 characters at most); a message is
//! recorded only after every check passed; one `std::sync::Mutex` guards the state and is
//! never held across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::TestkitError;
use super::gmail_replies::GMAIL_ADVERTISED_SIZE;
use super::gmail_session;
use super::google_workspace::GoogleWorkspace;
use super::pki::TestPki;

/// Start-up options of [`FakeGmail`].
#[derive(Clone, Debug)]
pub struct GmailOptions {
    /// Host name in the greeting and EHLO.
    pub hostname: String,
    /// Recipients per message over SMTP (Google: 100).
    pub max_recipients: usize,
    /// Messages per user per window (Google: 2,000 per 24 h).
    pub daily_message_limit: usize,
    /// Recipients per user per window (Google: 10,000 per 24 h).
    pub daily_recipient_limit: usize,
    /// The rolling window of the daily limits (24 h; shorten in tests).
    pub daily_window: Duration,
    /// Largest accepted message (the advertised SIZE).
    pub max_message_size: usize,
    /// Longest command line, AUTH lines included.
    pub max_command_line: usize,
    /// Idle timeout of a session.
    pub idle_timeout: Duration,
    /// When set, every accepted message is also written there as `<unix>-<id>.eml` (for
    /// `demo`): a temporary file renamed into place.
    pub eml_dir: Option<std::path::PathBuf>,
}

impl Default for GmailOptions {
    fn default() -> Self {
        GmailOptions {
            hostname: "smtp.gmail.com".to_owned(),
            max_recipients: 100,
            daily_message_limit: 2000,
            daily_recipient_limit: 10_000,
            daily_window: Duration::from_secs(24 * 3600),
            max_message_size: GMAIL_ADVERTISED_SIZE,
            max_command_line: 32 * 1024,
            idle_timeout: Duration::from_secs(300),
            eml_dir: None,
        }
    }
}

/// A fault the server can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GmailFault {
    /// Greet with `421 4.7.0 Try again later, closing connection.` and close.
    Banner421,
    /// AUTH answers `454 4.7.0 Cannot authenticate due to temporary system problem.`
    AuthTemporary454,
    /// AUTH answers `454 4.7.0 Too many login attempts, please try again later.`
    TooManyLogins454,
    /// XOAUTH2 is refused whatever the token (the JSON challenge with status 400, then
    /// `535 5.7.8`), as while a delegation change has not reached Gmail yet.
    RefuseXoauth2,
    /// After the final dot: `421 4.7.0 Try again later, closing connection.`, then close.
    TempFailAfterData,
    /// After the final dot: `550 5.7.1 … violates <domain> email policy` (an admin rule).
    PolicyAfterData,
    /// After the final dot: record the message, then close without replying.
    DropAfterDot,
}

/// Where a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GmailStage {
    Connect,
    Auth,
    EndOfData,
}

impl GmailFault {
    fn stage(self) -> GmailStage {
        match self {
            GmailFault::Banner421 => GmailStage::Connect,
            GmailFault::AuthTemporary454
            | GmailFault::TooManyLogins454
            | GmailFault::RefuseXoauth2 => GmailStage::Auth,
            GmailFault::TempFailAfterData
            | GmailFault::PolicyAfterData
            | GmailFault::DropAfterDot => GmailStage::EndOfData,
        }
    }
}

/// A delivered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GmailMessage {
    /// The server's id (`GMAIL-n`).
    pub id: String,
    /// The XOAUTH2 user of the session.
    pub auth_user: String,
    /// MAIL FROM.
    pub envelope_from: String,
    /// RCPT TO, as sent.
    pub recipients: Vec<String>,
    /// The unstuffed bytes.
    pub data: Vec<u8>,
    /// `data.len()`.
    pub size: usize,
    /// When it was accepted.
    pub accepted_at: SystemTime,
}

/// Counters of the server.
#[derive(Clone, Debug, Default)]
pub struct GmailStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Successful AUTHs.
    pub auth_successes: u64,
    /// Failed AUTHs (any mechanism, faults included).
    pub auth_failures: u64,
    /// Messages accepted.
    pub messages_accepted: u64,
    /// Bytes accepted.
    pub bytes_accepted: u64,
    /// `550 5.4.5` replies given.
    pub daily_limit_rejections: u64,
    /// Replies given, by code.
    pub replies_by_code: BTreeMap<u16, u64>,
}

#[derive(Debug)]
pub(crate) struct GmailRuntime {
    faults: Vec<(GmailFault, Option<u32>)>,
    pub stats: GmailStats,
    pub messages: Vec<GmailMessage>,
    /// Per user: (accepted at, recipients) inside the rolling window.
    usage: BTreeMap<String, VecDeque<(SystemTime, usize)>>,
    /// Message ids handed out (`GMAIL-n`).
    ids_issued: u64,
}

/// Everything the handle and the sessions share.
#[derive(Debug)]
pub(crate) struct GmailShared {
    pub options: GmailOptions,
    pub workspace: GoogleWorkspace,
    runtime: Mutex<GmailRuntime>,
    accepted_tx: watch::Sender<u64>,
}

impl GmailShared {
    fn lock(&self) -> MutexGuard<'_, GmailRuntime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn with_runtime<T>(&self, f: impl FnOnce(&mut GmailRuntime) -> T) -> T {
        f(&mut self.lock())
    }

    /// The fault to apply at `stage` now, consuming one count of a counted fault.
    pub fn take_fault(&self, stage: GmailStage) -> Option<GmailFault> {
        let mut runtime = self.lock();
        let index = runtime
            .faults
            .iter()
            .position(|(f, _)| f.stage() == stage)?;
        let (fault, remaining) = runtime.faults.get_mut(index)?;
        let fault = *fault;
        if let Some(remaining) = remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                runtime.faults.remove(index);
            }
        }
        Some(fault)
    }

    /// Whether `user` may send one more message with `recipients` more recipients now (0 at
    /// MAIL); when `consume` and allowed, the message is counted.
    pub fn within_daily_limits(&self, user: &str, recipients: usize, consume: bool) -> bool {
        let now = SystemTime::now();
        let window = self.options.daily_window;
        let mut runtime = self.lock();
        let usage = runtime.usage.entry(user.to_ascii_lowercase()).or_default();
        while usage
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).unwrap_or_default() >= window)
        {
            usage.pop_front();
        }
        let sent_recipients: usize = usage.iter().map(|(_, n)| n).sum();
        let allowed = usage.len() < self.options.daily_message_limit
            && sent_recipients.saturating_add(recipients) <= self.options.daily_recipient_limit;
        if allowed && consume {
            usage.push_back((now, recipients));
        }
        if !allowed {
            runtime.stats.daily_limit_rejections += 1;
        }
        allowed
    }

    pub fn record_reply(&self, code: u16) {
        *self.lock().stats.replies_by_code.entry(code).or_default() += 1;
    }

    pub fn record_auth(&self, success: bool) {
        let mut runtime = self.lock();
        if success {
            runtime.stats.auth_successes += 1;
        } else {
            runtime.stats.auth_failures += 1;
        }
    }

    /// Stores an accepted message (and its `.eml` copy, if asked) and wakes waiters.
    pub async fn store_message(&self, mut message: GmailMessage) {
        message.id = self.with_runtime(|r| {
            r.ids_issued += 1;
            format!("GMAIL-{}", r.ids_issued)
        });
        if let Some(dir) = &self.options.eml_dir {
            let stamp = super::jwt::unix_seconds(message.accepted_at);
            let name = format!("{stamp}-{}.eml", message.id);
            let temp = dir.join(format!(".{name}.tmp"));
            let written = async {
                tokio::fs::write(&temp, &message.data).await?;
                tokio::fs::rename(&temp, dir.join(&name)).await
            };
            if let Err(error) = written.await {
                tracing::warn!(%error, "fake Gmail could not write .eml");
            }
        }
        let count = {
            let mut runtime = self.lock();
            runtime.stats.messages_accepted += 1;
            runtime.stats.bytes_accepted = runtime
                .stats
                .bytes_accepted
                .saturating_add(u64::try_from(message.size).unwrap_or(u64::MAX));
            runtime.messages.push(message);
            runtime.stats.messages_accepted
        };
        self.accepted_tx.send_replace(count);
    }
}

/// A running fake Gmail SMTP server. Dropping it stops the server.
pub struct FakeGmail {
    addr: SocketAddr,
    shared: Arc<GmailShared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl std::fmt::Debug for FakeGmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGmail")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGmail {
    /// Starts the server on `127.0.0.1:0` (plain, STARTTLS with the PKI's certificate).
    ///
    /// # Errors
    /// Fails if the TLS configuration cannot be built or the socket cannot be bound.
    pub async fn start(
        workspace: GoogleWorkspace,
        pki: &TestPki,
        options: GmailOptions,
    ) -> Result<FakeGmail, TestkitError> {
        if let Some(dir) = &options.eml_dir {
            tokio::fs::create_dir_all(dir).await?;
        }
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(GmailShared {
            options,
            workspace,
            runtime: Mutex::new(GmailRuntime {
                faults: Vec::new(),
                stats: GmailStats::default(),
                messages: Vec::new(),
                usage: BTreeMap::new(),
                ids_issued: 0,
            }),
            accepted_tx: watch::Sender::new(0),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            acceptor,
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, "fake Gmail listening");
        Ok(FakeGmail {
            addr,
            shared,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
            tracker,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared workspace.
    pub fn workspace(&self) -> &GoogleWorkspace {
        &self.shared.workspace
    }

    /// Activates `fault` until [`FakeGmail::clear_faults`].
    pub fn set_fault(&self, fault: GmailFault) {
        self.shared.with_runtime(|r| {
            r.faults.retain(|(f, count)| count.is_some() || *f != fault);
            r.faults.push((fault, None));
        });
    }

    /// Makes the next `count` occurrences of `fault` happen (at its stage), before any
    /// persistent fault of the same stage.
    pub fn fail_next(&self, count: u32, fault: GmailFault) {
        if count == 0 {
            return;
        }
        self.shared.with_runtime(|r| {
            let position = r
                .faults
                .iter()
                .position(|(_, remaining)| remaining.is_none())
                .unwrap_or(r.faults.len());
            r.faults.insert(position, (fault, Some(count)));
        });
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        self.shared.with_runtime(|r| r.faults.clear());
    }

    /// Accepted messages, oldest first.
    pub fn messages(&self) -> Vec<GmailMessage> {
        self.shared.with_runtime(|r| r.messages.clone())
    }

    /// Waits until at least `count` messages were accepted, then returns them.
    ///
    /// # Errors
    /// [`TestkitError::Timeout`] if fewer arrived within `timeout`.
    pub async fn wait_for_messages(
        &self,
        count: u64,
        timeout: Duration,
    ) -> Result<Vec<GmailMessage>, TestkitError> {
        let mut receiver = self.shared.accepted_tx.subscribe();
        match tokio::time::timeout(timeout, receiver.wait_for(|n| *n >= count)).await {
            Ok(Ok(_)) => Ok(self.messages()),
            _ => Err(TestkitError::Timeout {
                what: format!("{count} messages accepted by fake Gmail"),
                waited: timeout,
            }),
        }
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> GmailStats {
        self.shared.with_runtime(|r| r.stats.clone())
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

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<GmailShared>,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                shared.with_runtime(|r| r.stats.connections += 1);
                tracker.spawn(gmail_session::serve(
                    Arc::clone(&shared),
                    acceptor.clone(),
                    tcp,
                    peer,
                    cancel.child_token(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "fake Gmail accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
