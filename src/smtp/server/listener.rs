//! The accept loop of one `[[listener]]`: connection limits, then one task per connection.
//!
//! Invariants: the limits of [`ConnectionLimits`] (the session registry) apply: at most
//! `max_connections` connections in total (shared by all listeners), a reserved share for
//! favoured clients, `max_connections_per_ip` per client address except for the addresses
//! `per_ip_limit_exempt` names, and the longest-idle session displaced when the slots are
//! full; a client refused gets `421 4.7.0` and is closed without touching the session code;
//! accept errors (e.g. out of file descriptors) back off instead of spinning; the loop ends
//! on cancellation and every connection task is tracked so shutdown can wait for them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::conn::{InboundContext, serve_connection};
pub use super::registry::ConnectionLimits;
use super::registry::Newcomer;
use crate::config::PerIpLimitExempt;
use crate::metrics::Metrics;

/// Accept connections until `cancel` fires.
pub async fn run_listener(
    listener: TcpListener,
    current: Arc<arc_swap::ArcSwap<InboundContext>>,
    limits: Arc<ConnectionLimits>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        // Each connection keeps the settings it started with; a reload affects new ones.
        let ctx = current.load_full();
        let newcomer = Newcomer {
            ip,
            favoured: favoured_by_address(&ctx, ip),
        };
        match limits.admit(newcomer) {
            Ok(slot) => {
                let span = tracing::info_span!("conn", id = %connection_id(), peer = %peer, listener = %local);
                let cancel = cancel.clone();
                let label = Metrics::listener(&local);
                ctx.metrics.connections.get_or_create(&label).inc();
                let active = ctx.metrics.connections_active.get_or_create(&label).clone();
                tracker.spawn(
                    async move {
                        active.inc();
                        tracing::debug!("connection accepted");
                        serve_connection(stream, peer, ctx, cancel, slot).await;
                        active.dec();
                    }
                    .instrument(span),
                );
            }
            Err(refusal) => {
                let reason = refusal.reason();
                tracing::warn!(%peer, reason, "connection refused");
                ctx.metrics
                    .connections_refused
                    .get_or_create(&Metrics::reason(reason))
                    .inc();
                tracker.spawn(refuse(stream, peer, reason, ctx.settings.hostname.clone()));
            }
        }
    }
}

/// Whether `ip` is exempt from the per-address limit and may use the reserved share.
fn favoured_by_address(ctx: &InboundContext, ip: IpAddr) -> bool {
    let in_network = || ctx.policy.network_grant(ip).is_some();
    match ctx.limits.per_ip_limit_exempt {
        PerIpLimitExempt::LoopbackAndNetworks => ip.is_loopback() || in_network(),
        PerIpLimitExempt::Networks => in_network(),
        PerIpLimitExempt::None => false,
    }
}

async fn refuse(mut stream: TcpStream, _peer: SocketAddr, reason: &'static str, hostname: String) {
    let reply =
        format!("421 4.7.0 {hostname} Service not available: {reason}, try again later\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply.as_bytes())).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
}

fn connection_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
