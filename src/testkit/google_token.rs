//! A Google-like OAuth 2.0 token endpoint (`POST https://127.0.0.1:PORT/token`, the
//! emulator's stand-in for `https://oauth2.googleapis.com/token`) for the JWT bearer grant of
//! service accounts with domain-wide delegation (google-workspace.md §2). Served by the shared
//! HTTPS loop (`https_server`) with the kit's PKI certificate; the grant checks are in
//! `google_assertion`, the HTTP handling in `google_token_http`. This file owns the server
//! lifecycle, run-time faults and counters.
//!
//! Success: `200 {"access_token":"ya29.…","expires_in":3599,"token_type":"Bearer"}` (no
//! refresh token, no `scope`: the fact sheet leaves `scope` unverified). Errors:
//! `{"error","error_description"}` with the status of the table in `google_assertion`.
//!
//! Known departures: tokens are opaque random strings checked against the shared
//! [`GoogleWorkspace`] registry (real ones are also opaque); no propagation delay;
//! `admin_policy_enforced`, `org_internal`, `deleted_client`/`disabled_client` are not
//! modelled; 500/503 fault bodies are plain text.
//!
//! Invariants: the assertion and issued tokens are never logged or recorded (records keep the
//! key id, issuer, subject and scope only); the server stops when the handle is dropped or
//! [`FakeGoogleToken::shutdown`] is awaited.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::TestkitError;
use super::google_token_http;
use super::google_workspace::GoogleWorkspace;
use super::https_server;
use super::pki::TestPki;

/// Default `expires_in` of issued tokens, as Google answers.
pub const DEFAULT_GOOGLE_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// How many request records are kept.
const RECENT_CAPACITY: usize = 256;

/// A fault the token endpoint can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoogleTokenFault {
    /// HTTP 500 with a plain-text body.
    ServerError,
    /// HTTP 503 with a plain-text body.
    Unavailable,
    /// Close the connection without any HTTP response.
    CloseWithoutResponse,
    /// Wait this long, then answer normally.
    Delay(Duration),
}

/// What happened to one token request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoogleTokenOutcome {
    /// A token was issued with this `expires_in`.
    Issued {
        /// `expires_in` of the response.
        expires_in: u64,
    },
    /// An OAuth error response.
    Rejected {
        /// HTTP status.
        status: u16,
        /// OAuth `error`.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// An injected fault answered (a `Delay` is not recorded as a fault).
    Fault(GoogleTokenFault),
}

/// One request to `/token`, without the assertion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoogleTokenRecord {
    /// When it arrived.
    pub at: SystemTime,
    /// `kid` of the assertion header, if readable.
    pub key_id: Option<String>,
    /// `iss`, if readable.
    pub issuer: Option<String>,
    /// `sub` (lowercase), if any.
    pub subject: Option<String>,
    /// `scope`, if readable.
    pub scope: Option<String>,
    /// The answer.
    pub outcome: GoogleTokenOutcome,
}

/// Counters of the token endpoint.
#[derive(Clone, Debug, Default)]
pub struct GoogleTokenStats {
    /// Requests to `/token` (any method, any outcome).
    pub token_requests: u64,
    /// Tokens issued.
    pub issued: u64,
    /// OAuth error responses.
    pub rejected: u64,
    /// Requests answered by an injected fault (other than `Delay`).
    pub faults: u64,
    /// Requests per (`kid`, `sub`) as read from the assertion (empty string when absent).
    pub per_key_and_subject: BTreeMap<(String, String), u64>,
    /// The most recent requests, oldest first (bounded).
    pub recent: VecDeque<GoogleTokenRecord>,
}

#[derive(Debug)]
struct GoogleTokenRuntime {
    token_lifetime: Duration,
    /// How far the endpoint's clock is ahead of the machine's (negative: behind), seconds.
    clock_offset_secs: i64,
    fault: Option<GoogleTokenFault>,
    queued_faults: VecDeque<(GoogleTokenFault, u32)>,
    stats: GoogleTokenStats,
}

/// State shared by the handle and the request handlers.
#[derive(Debug)]
pub(crate) struct GoogleTokenShared {
    pub workspace: GoogleWorkspace,
    pub token_url: String,
    runtime: Mutex<GoogleTokenRuntime>,
}

impl GoogleTokenShared {
    fn lock(&self) -> MutexGuard<'_, GoogleTokenRuntime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request to `/token` and returns the fault to apply, if any.
    pub fn begin_request(&self) -> Option<GoogleTokenFault> {
        let mut runtime = self.lock();
        runtime.stats.token_requests += 1;
        if let Some((fault, remaining)) = runtime.queued_faults.front_mut() {
            let fault = *fault;
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                runtime.queued_faults.pop_front();
            }
            return Some(fault);
        }
        runtime.fault
    }

    pub fn token_lifetime(&self) -> Duration {
        self.lock().token_lifetime
    }

    /// "Now" on the endpoint's clock: the machine's, moved by the configured offset.
    pub fn now(&self) -> std::time::SystemTime {
        let offset = self.lock().clock_offset_secs;
        let shift = Duration::from_secs(offset.unsigned_abs());
        let now = std::time::SystemTime::now();
        if offset >= 0 {
            now + shift
        } else {
            now.checked_sub(shift).unwrap_or(now)
        }
    }

    pub fn record(&self, record: GoogleTokenRecord) {
        let mut runtime = self.lock();
        let stats = &mut runtime.stats;
        match record.outcome {
            GoogleTokenOutcome::Issued { .. } => stats.issued += 1,
            GoogleTokenOutcome::Rejected { .. } => stats.rejected += 1,
            GoogleTokenOutcome::Fault(_) => stats.faults += 1,
        }
        let key = (
            record.key_id.clone().unwrap_or_default(),
            record.subject.clone().unwrap_or_default(),
        );
        *stats.per_key_and_subject.entry(key).or_default() += 1;
        if stats.recent.len() >= RECENT_CAPACITY {
            stats.recent.pop_front();
        }
        stats.recent.push_back(record);
    }
}

/// A running fake Google token endpoint. Dropping it stops the server.
pub struct FakeGoogleToken {
    addr: SocketAddr,
    shared: Arc<GoogleTokenShared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl std::fmt::Debug for FakeGoogleToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGoogleToken")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGoogleToken {
    /// Starts the endpoint on `127.0.0.1:0` with the PKI's server certificate.
    ///
    /// # Errors
    /// Fails if the TLS configuration cannot be built or the socket cannot be bound.
    pub async fn start(
        workspace: GoogleWorkspace,
        pki: &TestPki,
    ) -> Result<FakeGoogleToken, TestkitError> {
        let mut tls = (*pki.server_config()?).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(GoogleTokenShared {
            workspace,
            token_url: format!("https://{addr}/token"),
            runtime: Mutex::new(GoogleTokenRuntime {
                token_lifetime: DEFAULT_GOOGLE_TOKEN_LIFETIME,
                clock_offset_secs: 0,
                fault: None,
                queued_faults: VecDeque::new(),
                stats: GoogleTokenStats::default(),
            }),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let handler_state = Arc::clone(&shared);
        tracker.spawn(https_server::accept_loop(
            listener,
            acceptor,
            "fake Google token endpoint",
            move |request| google_token_http::handle(Arc::clone(&handler_state), request),
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, "fake Google token endpoint listening");
        Ok(FakeGoogleToken {
            addr,
            shared,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
            tracker,
        })
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT/token`: the key file's `token_uri` and a valid `aud`.
    pub fn token_url(&self) -> String {
        self.shared.token_url.clone()
    }

    /// The shared workspace.
    pub fn workspace(&self) -> &GoogleWorkspace {
        &self.shared.workspace
    }

    /// Sets `expires_in` of tokens issued from now on (e.g. 2 s for renewal tests).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = lifetime;
    }

    /// Moves the endpoint's clock `seconds` ahead of this machine's (negative: behind), as if
    /// the relay's host clock were off by as much the other way: assertions then fall outside
    /// Google's time window ("Invalid JWT: Token must be a short-lived token…").
    pub fn set_clock_offset(&self, seconds: i64) {
        self.shared.lock().clock_offset_secs = seconds;
    }

    /// Sets (or with `None` clears) a fault applied to every request.
    pub fn set_fault(&self, fault: Option<GoogleTokenFault>) {
        self.shared.lock().fault = fault;
    }

    /// Makes the next `count` requests fail with `fault` (before any persistent fault).
    pub fn fail_next(&self, count: u32, fault: GoogleTokenFault) {
        if count > 0 {
            self.shared.lock().queued_faults.push_back((fault, count));
        }
    }

    /// Clears the persistent fault and every queued one.
    pub fn clear_faults(&self) {
        let mut runtime = self.shared.lock();
        runtime.fault = None;
        runtime.queued_faults.clear();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> GoogleTokenStats {
        self.shared.lock().stats.clone()
    }

    /// Requests to `/token` so far.
    pub fn token_requests(&self) -> u64 {
        self.shared.lock().stats.token_requests
    }

    /// Tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.lock().stats.issued
    }

    /// Requests whose assertion named key `key_id` and subject `subject` (any outcome).
    pub fn requests_for(&self, key_id: &str, subject: &str) -> u64 {
        let key = (key_id.to_owned(), subject.to_ascii_lowercase());
        self.shared
            .lock()
            .stats
            .per_key_and_subject
            .get(&key)
            .copied()
            .unwrap_or_default()
    }

    /// The most recent request's outcome.
    pub fn last_outcome(&self) -> Option<GoogleTokenOutcome> {
        self.shared
            .lock()
            .stats
            .recent
            .back()
            .map(|record| record.outcome.clone())
    }

    /// Stops accepting, closes connections and waits (at most 5 s) for every task.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}
