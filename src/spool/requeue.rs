//! Putting a failed message back in the queue, for when the admin has fixed what made it
//! fail (a SendAs permission, a recipient's mailbox, a tenant that was broken for longer than
//! `max_age`).
//!
//! Invariants:
//! - Only an entry whose content verifies goes back; it keeps its id and its content file.
//! - The move is crash-safe: the new queue envelope (`queue/<ID>.env`) is durable before the
//!   content file is renamed from `failed/` to `queue/`. A crash in between leaves the failed
//!   entry intact and a lone `.env` in `queue/`, which recovery sets aside; a crash after it
//!   leaves a lone `failed/<ID>.env`, which listing ignores and purging removes.
//! - The requeued envelope lists only the recipients that failed, starts a fresh retry
//!   schedule and a fresh `max_age` (`requeued_at`), and forgets the old failures.

use super::{Spool, SpoolError, entry, format, fsio, unix_now};
use crate::vocab::envelope::Envelope;

impl Spool {
    /// Move failed entry `id` back to the queue, due now. Returns its new envelope, for the
    /// scheduler.
    ///
    /// # Errors
    /// `NotFound` when there is no such failed entry, `Corrupt` when it does not verify, I/O
    /// errors otherwise (the entry then stays failed).
    pub async fn requeue(&self, id: &str) -> Result<Envelope, SpoolError> {
        if !crate::vocab::envelope::is_valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let failed_body = self.failed.join(format!("{id}.msg"));
        let failed_env = self.failed.join(format!("{id}.env"));
        let queued_body = self.body_path(id);
        let queued_env = self.envelope_path(id);
        let tmp = self.tmp.join(format!("{id}.requeue.env"));
        let (failed_dir, queue_dir) = (self.failed.clone(), self.queue.clone());
        let id_owned = id.to_string();
        tokio::task::spawn_blocking(move || {
            let (failed, _content) = entry::read_entry(&failed_body)
                .map_err(Spool::entry_error(&id_owned, "requeue"))?;
            let io = |operation| move |source| SpoolError::Io { operation, source };
            if queued_body.exists() {
                return Err(SpoolError::Io {
                    operation: "requeue",
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!("{id_owned} is already queued"),
                    ),
                });
            }
            let envelope = requeued(failed, unix_now());
            let bytes = format::encode(&envelope).map_err(|e| SpoolError::Corrupt {
                id: id_owned.clone(),
                reason: e.to_string(),
            })?;
            fsio::write_and_rename(&tmp, &queued_env, &bytes)
                .map_err(io("write requeued envelope"))?;
            fsio::sync_dir(&queue_dir).map_err(io("write requeued envelope"))?;
            fsio::rename(&failed_body, &queued_body).map_err(io("move entry back to the queue"))?;
            fsio::sync_dir(&queue_dir).map_err(io("move entry back to the queue"))?;
            fsio::remove_if_exists(&failed_env).map_err(io("remove failed envelope"))?;
            fsio::sync_dir(&failed_dir).map_err(io("remove failed envelope"))?;
            Ok(envelope)
        })
        .await
        .map_err(|e| SpoolError::Io {
            operation: "requeue",
            source: std::io::Error::other(e),
        })?
    }
}

/// The queue envelope for a failed one put back at `now`.
fn requeued(failed: Envelope, now: u64) -> Envelope {
    let recipients = if failed.failures.is_empty() {
        failed.recipients.clone()
    } else {
        failed
            .failures
            .iter()
            .map(|f| f.recipient.clone())
            .collect()
    };
    Envelope {
        recipients,
        attempts: 0,
        next_attempt: now,
        failures: Vec::new(),
        requeued_at: Some(now),
        ..failed
    }
}
