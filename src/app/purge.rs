//! The purge of `failed/`: entries past `[queue] failed_retention` are deleted, at start and
//! then every hour, until shutdown.
//!
//! Invariant: a purge that fails is logged and tried again at the next hour; it never stops
//! the relay.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::spool::Spool;

/// Delete `failed/` entries older than the retention, at start and then hourly.
pub(super) async fn purge_failed(
    spool: Arc<Spool>,
    retention: Duration,
    cancel: CancellationToken,
) {
    loop {
        let cutoff = crate::spool::unix_now().saturating_sub(retention.as_secs());
        match spool.purge_failed(cutoff).await {
            Ok(0) => {}
            Ok(purged) => {
                tracing::info!(purged, retention = %humantime::format_duration(retention), "old failed messages deleted")
            }
            Err(error) => tracing::warn!(%error, "cannot purge old failed messages"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
