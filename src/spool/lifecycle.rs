//! A committed entry's life in `queue/`: read (verified), its envelope replaced after a failed
//! attempt, removed once delivered, set aside in `corrupt/`, listed.
//!
//! Invariants: every read is verified (the envelope by its checksum, the content by length and
//! SHA-256); a replaced envelope is written beside the entry and renamed over the old one, so
//! a crash leaves the old or the new one; a delivered entry loses its content file first (a
//! crash in between leaves a lone envelope, which recovery sets aside, never a message
//! delivered twice on purpose); every change ends with a `queue/` directory fsync.

use std::io;
use std::path::PathBuf;

use super::{Content, Spool, SpoolError, entry, format, fsio, on_blocking_pool};
use crate::vocab::envelope::Envelope;

impl Spool {
    /// The [`SpoolError`] for an [`entry::EntryError`] of entry `id` during `operation`.
    pub(super) fn entry_error(
        id: &str,
        operation: &'static str,
    ) -> impl FnOnce(entry::EntryError) -> SpoolError {
        let id = id.to_string();
        move |error| match error {
            entry::EntryError::NotFound => SpoolError::NotFound(id),
            entry::EntryError::Corrupt(reason) => SpoolError::Corrupt { id, reason },
            entry::EntryError::Io(source) => SpoolError::Io { operation, source },
        }
    }

    /// Read and verify an entry's envelope (without reading its content).
    ///
    /// # Errors
    /// `NotFound` when it is gone, `Corrupt` when it does not verify.
    pub async fn load(&self, id: &str) -> Result<Envelope, SpoolError> {
        if !crate::vocab::envelope::is_valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let path = self.body_path(id);
        let result = tokio::task::spawn_blocking(move || entry::read_envelope(&path))
            .await
            .map_err(|e| SpoolError::Io {
                operation: "read envelope",
                source: io::Error::other(e),
            })?;
        result.map_err(Self::entry_error(id, "read envelope"))
    }

    /// Read an entry's envelope and its content, verified against the envelope's length and
    /// SHA-256 (content over [`super::content::IN_MEMORY_LIMIT`] stays in its file and is
    /// streamed).
    ///
    /// # Errors
    /// `NotFound` when it is gone, `Corrupt` when it does not verify, I/O errors otherwise.
    pub async fn load_entry(&self, id: &str) -> Result<(Envelope, Content), SpoolError> {
        if !crate::vocab::envelope::is_valid_id(id) {
            return Err(SpoolError::NotFound(id.to_string()));
        }
        let path = self.body_path(id);
        let result = tokio::task::spawn_blocking(move || entry::read_entry(&path))
            .await
            .map_err(|e| SpoolError::Io {
                operation: "read entry",
                source: io::Error::other(e),
            })?;
        result.map_err(Self::entry_error(id, "read entry"))
    }

    /// Durably replace an entry's envelope (after a failed attempt).
    ///
    /// # Errors
    /// I/O errors; the old envelope stays in place on failure.
    pub async fn update(&self, envelope: &Envelope) -> Result<(), SpoolError> {
        let bytes = format::encode(envelope).map_err(|e| SpoolError::Corrupt {
            id: envelope.id.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.tmp.join(format!("{}.env", envelope.id));
        let target = self.envelope_path(&envelope.id);
        on_blocking_pool("update envelope", move || {
            fsio::write_and_rename(&tmp, &target, &bytes)
        })
        .await?;
        self.queue_sync.sync().await
    }

    /// Remove a delivered entry (its content file first: a crash in between leaves a lone
    /// envelope, which recovery sets aside, never a message delivered twice on purpose).
    ///
    /// # Errors
    /// I/O errors.
    pub async fn remove(&self, id: &str) -> Result<(), SpoolError> {
        let envelope = self.envelope_path(id);
        let body = self.body_path(id);
        on_blocking_pool("remove entry", move || {
            fsio::remove_if_exists(&body)?;
            fsio::remove_if_exists(&envelope)
        })
        .await?;
        self.queue_sync.sync().await
    }

    /// Move whatever exists of an entry to `corrupt/`.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn quarantine(&self, id: &str) -> Result<(), SpoolError> {
        let moves = [
            (
                self.envelope_path(id),
                self.corrupt.join(format!("{id}.env")),
            ),
            (self.body_path(id), self.corrupt.join(format!("{id}.msg"))),
        ];
        let (corrupt_dir, queue_dir) = (self.corrupt.clone(), self.queue.clone());
        on_blocking_pool("quarantine entry", move || {
            for (from, to) in &moves {
                match fsio::rename(from, to) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fsio::sync_dir(&corrupt_dir)?;
            fsio::sync_dir(&queue_dir)
        })
        .await
    }

    /// Every entry in `queue/` that decodes, oldest first (a snapshot; safe while the relay
    /// runs, since envelopes are replaced atomically).
    ///
    /// # Errors
    /// I/O errors while listing the directory.
    pub async fn list_queued(&self) -> Result<Vec<Envelope>, SpoolError> {
        list_envelopes(self.queue.clone()).await
    }
}

/// Every entry file (`*.msg`) in `dir` whose envelope decodes, oldest first.
pub(super) async fn list_envelopes(dir: PathBuf) -> Result<Vec<Envelope>, SpoolError> {
    on_blocking_pool("list spool entries", move || {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "msg")
                && let Ok(envelope) = entry::read_envelope(&path)
            {
                entries.push(envelope);
            }
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(entries)
    })
    .await
}
