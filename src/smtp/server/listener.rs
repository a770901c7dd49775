//! The accept loop of one `[[listener]]`: connection limits, then one task per connection.
//!
//! Invariants: at most `max_connections` connections in total (shared by all listeners) and
//! `max_connections_per_ip` per client address; a client over a limit gets
//! `421 4.7.0` and is closed without touching the session code; accept errors (e.g. out of
//! file descriptors) back off instead of spinning; the loop ends on cancellation and every
//! connection task is tracked so shutdown can wait for them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::conn::{InboundContext, serve_connection};
use crate::ops::metrics::Metrics;

/// Connection counters shared by all listeners.
#[derive(Debug)]
pub struct ConnectionLimits {
    total: Arc<Semaphore>,
    max_total: std::sync::atomic::AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: std::sync::atomic::AtomicUsize,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(max_total)),
            max_total: std::sync::atomic::AtomicUsize::new(max_total),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: std::sync::atomic::AtomicUsize::new(max_per_ip),
        })
    }

    /// Apply new limits (configuration reload). Lowering the total takes effect as
    /// connections end.
    pub fn resize(&self, max_total: usize, max_per_ip: usize) {
        use std::sync::atomic::Ordering;
        let old = self.max_total.swap(max_total, Ordering::SeqCst);
        if max_total > old {
            self.total.add_permits(max_total - old);
        } else if old > max_total {
            let mut to_forget = old - max_total;
            while to_forget > 0 {
                let forgotten = self.total.forget_permits(to_forget);
                if forgotten == 0 {
                    // Busy permits come back later: take them out as they return.
                    let total = Arc::clone(&self.total);
                    tokio::spawn(async move {
                        if let Ok(permits) = total
                            .acquire_many_owned(u32::try_from(to_forget).unwrap_or(u32::MAX))
                            .await
                        {
                            permits.forget();
                        }
                    });
                    break;
                }
                to_forget -= forgotten;
            }
        }
        self.max_per_ip.store(max_per_ip, Ordering::SeqCst);
    }

    /// Admit a connection from `ip`, or say which limit it hit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, &'static str> {
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| "too many connections")?;
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("too many connections from your address");
        }
        *count += 1;
        Ok(Admission {
            _permit: permit,
            limits: Arc::clone(self),
            ip,
        })
    }
}

/// Held for the life of a connection; releases both counters when dropped.
struct Admission {
    _permit: OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

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
        match limits.admit(ip) {
            Ok(admission) => {
                let span = tracing::info_span!("conn", id = %connection_id(), peer = %peer, listener = %local);
                let cancel = cancel.clone();
                let label = Metrics::listener(&local);
                ctx.metrics.connections.get_or_create(&label).inc();
                let active = ctx.metrics.connections_active.get_or_create(&label).clone();
                tracker.spawn(
                    async move {
                        let _admission = admission;
                        active.inc();
                        tracing::debug!("connection accepted");
                        serve_connection(stream, peer, ctx, cancel).await;
                        active.dec();
                    }
                    .instrument(span),
                );
            }
            Err(reason) => {
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

async fn refuse(mut stream: TcpStream, _peer: SocketAddr, reason: &'static str, hostname: String) {
    let reply =
        format!("421 4.7.0 {hostname} Service not available: {reason}, try again later\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn connection_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
