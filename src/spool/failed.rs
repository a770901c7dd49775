//! `failed/`: entries that will not be delivered, each with the envelope that records why.
//!
//! Invariants: the reason is written before the content moves, so a crash leaves the entry
//! queued (plus a `failed/` envelope without content, which listing ignores and purging
//! removes), never content without its reason; a `failed/` entry for some recipients of a
//! message that stays queued shares its body (a hard link, or a copy) under a new id; purging
//! leaves damaged entries alone.

use super::{Spool, SpoolError, format, fsio, lifecycle::list_envelopes, on_blocking_pool};
use crate::vocab::envelope::{Envelope, QueueId};

impl Spool {
    /// Move an entry to `failed/` with its final envelope (which records the reason).
    ///
    /// # Errors
    /// I/O errors.
    pub async fn fail(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let bytes = format::encode(envelope).map_err(|e| SpoolError::Corrupt {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?;
        let id = envelope.id.clone();
        let tmp = self.tmp.join(format!("{id}.env"));
        let failed_env = self.failed.join(format!("{id}.env"));
        let failed_body = self.failed.join(format!("{id}.msg"));
        let queued_env = self.envelope_path(&id);
        let queued_body = self.body_path(&id);
        let (failed_dir, queue_dir) = (self.failed.clone(), self.queue.clone());
        on_blocking_pool("move entry to failed", move || {
            // The reason first: a crash before the move leaves the entry queued (and a
            // `failed/` envelope without content, which listing ignores and purging removes).
            fsio::write_and_rename(&tmp, &failed_env, &bytes)?;
            fsio::rename(&queued_body, &failed_body)?;
            fsio::sync_dir(&failed_dir)?;
            fsio::remove_if_exists(&queued_env)?;
            fsio::sync_dir(&queue_dir)
        })
        .await
    }

    /// Record failed recipients of an entry that stays queued for its other recipients: a new
    /// `failed/` entry (new id) that shares the body (a hard link, or a copy). Returns its id.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn record_failed_recipients(&self, failed: &Envelope) -> Result<QueueId, SpoolError> {
        let mut failed = failed.clone();
        let original = failed.id.clone();
        failed.id = self.new_id();
        let bytes = format::encode(&failed).map_err(|e| SpoolError::Corrupt {
            id: original.clone(),
            reason: e.to_string(),
        })?;
        let source = self.body_path(&original);
        let body = self.failed.join(format!("{}.msg", failed.id));
        let env = self.failed.join(format!("{}.env", failed.id));
        let tmp = self.tmp.join(format!("{}.env", failed.id));
        let dir = self.failed.clone();
        on_blocking_pool("record failed recipients", move || {
            fsio::link_or_copy(&source, &body)?;
            fsio::write_and_rename(&tmp, &env, &bytes)?;
            fsio::sync_dir(&dir)
        })
        .await?;
        Ok(failed.id)
    }

    /// Delete `failed/` entries whose last failure is older than `cutoff` (unix seconds).
    /// Returns how many were deleted. Damaged entries there are left alone.
    ///
    /// # Errors
    /// I/O errors while listing the directory.
    pub async fn purge_failed(&self, cutoff: u64) -> Result<usize, SpoolError> {
        let dir = self.failed.clone();
        on_blocking_pool("purge failed entries", move || {
            let mut purged = 0;
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_none_or(|e| e != "env") {
                    continue;
                }
                let Ok(envelope) = std::fs::read(&path)
                    .map_err(|_| ())
                    .and_then(|b| format::decode(&b).map_err(|_| ()))
                else {
                    continue;
                };
                let failed_at = envelope
                    .failures
                    .iter()
                    .map(|f| f.at)
                    .chain(envelope.last_attempt.as_ref().map(|a| a.at))
                    .max()
                    .unwrap_or(envelope.received_at);
                if failed_at < cutoff {
                    fsio::remove_if_exists(&path)?;
                    fsio::remove_if_exists(&path.with_extension("msg"))?;
                    purged += 1;
                }
            }
            if purged > 0 {
                fsio::sync_dir(&dir)?;
            }
            Ok(purged)
        })
        .await
    }

    /// Every entry in `failed/` that decodes, oldest first.
    ///
    /// # Errors
    /// I/O errors while listing the directory.
    pub async fn list_failed(&self) -> Result<Vec<Envelope>, SpoolError> {
        list_envelopes(self.failed.clone()).await
    }
}
