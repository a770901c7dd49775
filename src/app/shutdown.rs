//! Shutdown: one cancellation token for the whole relay, one task tracker for what the relay
//! spawned (accept loops, sessions, the admin endpoint, the disk-reserve sampler, the purge),
//! and one tracker per account generation for its delivery workers.
//!
//! Invariants: cancelling the relay's token stops every listener and worker (account tokens
//! are its children); shutdown waits for sessions and deliveries at most `grace`, after which
//! what did not finish stays queued in the spool (a delivery abandoned half-way is retried,
//! never lost).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Relay;

impl Relay {
    /// A token that fires when shutdown begins.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stop accepting, let sessions and deliveries finish (up to `grace`), then return.
    pub async fn shutdown(self, grace: Duration) {
        tracing::info!("shutting down");
        self.cancel.cancel();
        self.tracker.close();
        let accounts = std::mem::take(&mut *self.accounts.lock().await);
        let drained = async {
            self.tracker.wait().await;
            for account in accounts.values() {
                account.workers.close();
                account.workers.wait().await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                "some sessions or deliveries did not finish in time; their messages stay queued"
            );
        }
        tracing::info!(queued = self.shared.queue.depth(), "stopped");
    }
}
