//! The admin HTTP endpoint (`[admin] address`, loopback by default): `/healthz`, `/readyz`,
//! `/metrics` (Prometheus), the queue API the `queue` command uses, and the HTML status page
//! at `/` ([`status_page`], with the last hour's traffic from [`history`]).
//!
//! Invariants:
//! - it holds at most `[admin] max_connections` connections ([`slots`]); each serves one
//!   request, must send its headers within `request_timeout` and is closed after
//!   [`ADMIN_CONNECTION_LIFETIME_FACTOR`] × `request_timeout` in all, so it can never take the
//!   file descriptors or memory the SMTP side needs;
//! - every request passes the `Host` rule, and every change the `Origin` rule ([`access`]);
//! - `/healthz`, `/readyz` and `/metrics` then answer anyone who can reach the address (so a
//!   Kubernetes probe or a Prometheus server can use them); the status page and the queue API (listings, which
//!   name senders and recipients, and every change: retry, requeue, delete) answers only
//!   clients on the loopback interface, and only with the bearer token when `token_file` is
//!   set (`routes`);
//! - nothing here logs or returns a secret or message content.

pub mod access;
pub mod history;
mod routes;
pub mod slots;
pub mod status_page;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use access::AdminAccess;
pub use routes::entry_summary;

use crate::config::ADMIN_CONNECTION_LIFETIME_FACTOR;
use crate::delivery::worker::AccountDelivery;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::spool::Spool;
use slots::{Admission, Slots};

/// What the admin endpoint looks at.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub spool: Arc<Spool>,
    pub queue: Arc<Queue>,
    /// Swapped on configuration reload.
    pub deliveries: Arc<arc_swap::ArcSwap<Vec<Arc<AccountDelivery>>>>,
    /// An account failing as a whole for longer than this makes the relay not ready.
    pub failing_threshold: Duration,
    /// The `Host`, `Origin` and token rules; swapped on configuration reload.
    pub access: Arc<arc_swap::ArcSwap<AdminAccess>>,
    /// `[admin] max_connections`.
    pub max_connections: usize,
    /// `[admin] request_timeout`.
    pub request_timeout: Duration,
}

/// The answer to a connection the endpoint has no room for: written without waiting (the
/// socket's send buffer is empty), then the connection is closed.
const FULL_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 51\r\nconnection: close\r\nretry-after: 1\r\n\r\nthe admin endpoint is busy with other requests now\n";

/// Serve the admin endpoint on `listener` until `cancel`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Slots::new(state.max_connections);
    let header_timeout = state.request_timeout;
    let lifetime = header_timeout.saturating_mul(ADMIN_CONNECTION_LIFETIME_FACTOR);
    let history = Arc::new(history::History::default());
    tracker.spawn(history::sample(
        Arc::clone(&history),
        Arc::clone(&state.metrics),
        cancel.clone(),
    ));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match slots.admit(Instant::now()) {
            Admission::Admitted(slot) => Arc::new(slot),
            Admission::Full => {
                let _ = stream.try_write(FULL_ANSWER);
                continue;
            }
        };
        let state = Arc::clone(&state);
        let history = Arc::clone(&history);
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let closed = slot.closed();
            let in_service = Arc::clone(&slot);
            let service = hyper::service::service_fn(move |request| {
                in_service.mark_busy();
                let state = Arc::clone(&state);
                let history = Arc::clone(&history);
                async move {
                    Ok::<_, Infallible>(routes::handle(&state, &history, peer, request).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(lifetime, connection) => {}
                _ = closed.cancelled() => {}
                _ = cancel.cancelled() => {}
            }
            drop(slot);
        });
    }
}
