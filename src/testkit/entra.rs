//! An Entra-like OAuth 2.0 token endpoint over HTTPS (hyper http1 on tokio-rustls), serving
//! `POST {authority}/{tenant}/oauth2/v2.0/token` for the client-credentials grant
//! (exchange-online.md §1). Request checks live in `entra_http`, the AADSTS catalogue in
//! `entra_errors`; this file owns the server lifecycle, run-time faults and counters.
//!
//! Check order (the real order is not documented; this one reports the most specific
//! configuration error first): path → method → tenant → `grant_type` → `client_id` → a
//! credential is present → `scope` → the credential is valid → issue.
//!
//! Known deviations from the real service:
//! - certificate credentials (`client_assertion`) are verified against the app's registered
//!   certificates (`entra_assertion`), but some AADSTS codes for assertion errors are guesses
//!   (listed there) and `jti` replay is not detected;
//! - `expires_in` is fixed (default 3599 s, settable) instead of Entra's 60–90 min random;
//! - tokens are ES256, not RS256; conditional access, throttling (AADSTS50196) and
//!   propagation delays are not modelled.
//!
//! Invariants: secrets are never logged or stored in [`TokenRequestRecord`]s; the server stops
//! when the handle is dropped or [`FakeEntra::shutdown`] is awaited.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::TestkitError;
use super::directory::Directory;
use super::entra_http;
use super::https_server;
use super::issuance::{CredentialKind, Resource};
use super::pki::TestPki;

/// Default `expires_in` of issued tokens, as commonly observed for client credentials.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// How many request records [`EntraStats::recent`] keeps.
const RECENT_CAPACITY: usize = 256;

/// A fault the token endpoint can be told to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntraFault {
    /// HTTP 503 `temporarily_unavailable` (AADSTS90033, a transient STS error).
    TemporarilyUnavailable,
    /// HTTP 500 with a plain-text body (no JSON), like a failing front end.
    ServerError,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without any HTTP response.
    CloseWithoutResponse,
}

/// What happened to one token request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// A token was issued.
    Issued {
        /// The resource the token is for.
        resource: Resource,
        /// `expires_in` of the response.
        expires_in: u64,
        /// The `roles` claim (empty when absent).
        roles: Vec<String>,
    },
    /// An OAuth error response.
    Rejected {
        /// HTTP status.
        status: u16,
        /// OAuth `error` value.
        error: String,
        /// AADSTS number.
        code: u32,
    },
    /// An injected fault answered instead (a `Delay` is not recorded as a fault).
    Fault(EntraFault),
}

/// One token request, without any secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequestRecord {
    /// When it arrived.
    pub at: SystemTime,
    /// The `{tenant}` path segment.
    pub tenant: String,
    /// `client_id`, if sent.
    pub client_id: Option<String>,
    /// `scope`, if sent.
    pub scope: Option<String>,
    /// Which kind of credential was presented.
    pub credential: Option<CredentialKind>,
    /// The answer.
    pub outcome: TokenOutcome,
}

/// Counters of the token endpoint.
#[derive(Clone, Debug, Default)]
pub struct EntraStats {
    /// Requests to a `/{tenant}/oauth2/v2.0/token` path (any method, any outcome).
    pub token_requests: u64,
    /// Tokens issued.
    pub issued: u64,
    /// OAuth error responses.
    pub rejected: u64,
    /// Requests answered by an injected fault (other than `Delay`).
    pub faults: u64,
    /// Token requests per `client_id` (lowercase).
    pub per_client: BTreeMap<String, u64>,
    /// The most recent requests, oldest first (bounded).
    pub recent: VecDeque<TokenRequestRecord>,
}

#[derive(Debug)]
struct EntraRuntime {
    token_lifetime: Duration,
    fault: Option<EntraFault>,
    queued_faults: VecDeque<(EntraFault, u32)>,
    stats: EntraStats,
}

/// State shared by the handle and the request handlers.
#[derive(Debug)]
pub(crate) struct EntraShared {
    pub directory: Directory,
    runtime: Mutex<EntraRuntime>,
}

impl EntraShared {
    fn lock(&self) -> MutexGuard<'_, EntraRuntime> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a request to the token path and returns the fault to apply, if any.
    pub fn begin_token_request(&self) -> Option<EntraFault> {
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

    pub fn record(&self, record: TokenRequestRecord) {
        let mut runtime = self.lock();
        let stats = &mut runtime.stats;
        match record.outcome {
            TokenOutcome::Issued { .. } => stats.issued += 1,
            TokenOutcome::Rejected { .. } => stats.rejected += 1,
            TokenOutcome::Fault(_) => stats.faults += 1,
        }
        if let Some(client_id) = &record.client_id {
            *stats
                .per_client
                .entry(client_id.to_ascii_lowercase())
                .or_default() += 1;
        }
        if stats.recent.len() >= RECENT_CAPACITY {
            stats.recent.pop_front();
        }
        stats.recent.push_back(record);
    }
}

/// A running fake token endpoint. Dropping it stops the server.
pub struct FakeEntra {
    addr: SocketAddr,
    shared: Arc<EntraShared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl std::fmt::Debug for FakeEntra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEntra")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeEntra {
    /// Starts the endpoint on `127.0.0.1:0` with the PKI's server certificate.
    ///
    /// # Errors
    /// Fails if the TLS configuration cannot be built or the socket cannot be bound.
    pub async fn start(directory: Directory, pki: &TestPki) -> Result<FakeEntra, TestkitError> {
        let mut tls = (*pki.server_config()?).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(EntraShared {
            directory,
            runtime: Mutex::new(EntraRuntime {
                token_lifetime: DEFAULT_TOKEN_LIFETIME,
                fault: None,
                queued_faults: VecDeque::new(),
                stats: EntraStats::default(),
            }),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let handler_state = Arc::clone(&shared);
        tracker.spawn(https_server::accept_loop(
            listener,
            acceptor,
            "fake Entra",
            move |request| entra_http::handle(Arc::clone(&handler_state), request),
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::debug!(%addr, "fake Entra listening");
        Ok(FakeEntra {
            addr,
            shared,
            _stop_on_drop: cancel.clone().drop_guard(),
            cancel,
            tracker,
        })
    }

    /// The socket address the endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`; the relay POSTs to `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn authority(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The full token URL for `tenant`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority())
    }

    /// The shared directory.
    pub fn directory(&self) -> &Directory {
        &self.shared.directory
    }

    /// Sets `expires_in` (and `exp`) of tokens issued from now on, e.g. 2 s for renewal tests.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = lifetime;
    }

    /// The current token lifetime.
    pub fn token_lifetime(&self) -> Duration {
        self.shared.token_lifetime()
    }

    /// Sets (or with `None` clears) a fault applied to every token request.
    pub fn set_fault(&self, fault: Option<EntraFault>) {
        self.shared.lock().fault = fault;
    }

    /// Makes the next `count` token requests fail with `fault` (before any persistent fault).
    pub fn fail_next(&self, count: u32, fault: EntraFault) {
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
    pub fn stats(&self) -> EntraStats {
        self.shared.lock().stats.clone()
    }

    /// Number of requests to the token path so far.
    pub fn token_requests(&self) -> u64 {
        self.shared.lock().stats.token_requests
    }

    /// Number of tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.lock().stats.issued
    }

    /// Number of token requests made by `client_id`.
    pub fn requests_for_client(&self, client_id: &str) -> u64 {
        self.shared
            .lock()
            .stats
            .per_client
            .get(&client_id.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    /// Stops accepting, closes connections and waits (at most 5 s) for every task.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}
