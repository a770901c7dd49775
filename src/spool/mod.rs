//! The durable queue on disk. The only part of the relay that writes mail to disk.
//!
//! Layout under `<state_dir>/spool/`: `tmp/` (entries being received; wiped at start),
//! `queue/` (committed entries: `<ID>.msg` holds the content with the envelope as a trailer,
//! and `<ID>.env` the newer envelope once an attempt failed), `failed/` (entries that will not
//! be delivered, with their reason), `state/` (small state files), `corrupt/` (quarantine;
//! never deleted automatically).
//!
//! Invariants (rule 1 of the design, "accepted means safe"):
//! - [`SpoolWriter::commit`] returns only after the entry file (content and envelope) is
//!   fsynced, renamed into `queue/` in one step, and the `queue/` directory is fsynced (one
//!   directory fsync shared by the entries committed at the same moment). Only then may the
//!   relay answer `250`.
//! - An envelope rewritten later replaces `<ID>.env` atomically; a crash leaves the old or the
//!   new one, never a torn one.
//! - Every read is verified: the envelope by its checksum, the content by length and SHA-256.
//! - New mail from clients ([`Spool::create`]) is refused while the filesystem is below its
//!   disk reserve ([`reserve`]); nothing else the spool writes is (DSNs use
//!   [`Spool::create_bounce`]).
//! - State files are replaced the same way (fsync, rename, directory fsync).
//! - Everything the spool creates is private whatever the umask (directories 0700, files
//!   0600; see [`fsio`]), and nothing is left in `tmp/` by a failed write or probe.

mod bounded;
pub mod content;
mod dirsync;
mod entry;
pub mod format;
pub mod fsio;
mod recover;
mod requeue;
pub mod reserve;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::vocab::envelope::{Envelope, QueueId};
pub use bounded::BoundedCommit;
pub use content::Content;
pub use entry::{StoredIn, read_stored_entry};
pub use recover::Recovery;
pub use reserve::DiskReserve;
pub use writer::{SPILL_THRESHOLD, SpoolWriter};

/// A spool failure, mapped to `451 4.3.0` (or `452 4.3.1` when the disk is full).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error during {operation}: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("spool entry {id} is damaged: {reason}")]
    Corrupt { id: QueueId, reason: String },
    #[error("no spool entry {0}")]
    NotFound(QueueId),
}

impl SpoolError {
    fn io(operation: &'static str) -> impl FnOnce(io::Error) -> SpoolError {
        move |source| SpoolError::Io { operation, source }
    }

    /// True when the filesystem is out of space or quota.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }
}

/// The spool's folder under the state directory, and its queue and failed folders in it.
const SPOOL_DIR: &str = "spool";
const QUEUE_DIR: &str = "queue";
const FAILED_DIR: &str = "failed";

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The spool. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Spool {
    /// Group commit of `queue/` directory fsyncs.
    queue_sync: Arc<dirsync::DirSync>,
    state: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    failed: PathBuf,
    corrupt: PathBuf,
    sequence: AtomicU32,
    /// Free space on the spool's filesystem, sampled by [`reserve::watch`].
    reserve: Arc<DiskReserve>,
}

async fn blocking<T: Send + 'static>(
    operation: &'static str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SpoolError::Io {
            operation,
            source: io::Error::other(e),
        })?
        .map_err(SpoolError::io(operation))
}

impl Spool {
    /// Open (creating if needed) the spool under `state_dir`, wipe `tmp/` and recover the
    /// committed entries. Damaged entries are moved to `corrupt/` and reported, never fatal.
    ///
    /// # Errors
    /// When the directories cannot be created or read.
    pub fn open(state_dir: &Path) -> Result<(Spool, Recovery), SpoolError> {
        let root = state_dir.join(SPOOL_DIR);
        let spool = Spool {
            queue_sync: Arc::new(dirsync::DirSync::new(root.join(QUEUE_DIR))),
            state: root.join("state"),
            tmp: root.join("tmp"),
            queue: root.join(QUEUE_DIR),
            failed: root.join(FAILED_DIR),
            corrupt: root.join("corrupt"),
            sequence: AtomicU32::new(crate::vocab::random::unique_u32() & 0x000F_FFFF),
            reserve: Arc::new(DiskReserve::new(&root)),
        };
        for dir in [
            &root,
            &spool.state,
            &spool.tmp,
            &spool.queue,
            &spool.failed,
            &spool.corrupt,
        ] {
            fsio::create_private_dir(dir).map_err(SpoolError::io("create spool directories"))?;
        }
        let recovery = recover::recover(&spool)?;
        Ok((spool, recovery))
    }

    /// The disk reserve of the spool's filesystem.
    pub fn reserve(&self) -> &Arc<DiskReserve> {
        &self.reserve
    }

    /// The `queue/` directory.
    pub fn queue_dir(&self) -> &Path {
        &self.queue
    }

    fn body_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }

    fn envelope_path(&self, id: &str) -> PathBuf {
        self.queue.join(format!("{id}.env"))
    }

    fn new_id(&self) -> QueueId {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()) as u64;
        let sequence = u64::from(self.sequence.fetch_add(1, Ordering::Relaxed) & 0x000F_FFFF);
        format!("{:011X}{:05X}", millis & 0x0FFF_FFFF_FFFF, sequence)
    }

    /// Start a new entry for a message from a client, with a fresh queue id. Content is kept
    /// in memory up to [`SPILL_THRESHOLD`] and then streamed to a file in `tmp/`; either way
    /// nothing reaches `queue/` before [`SpoolWriter::commit`].
    ///
    /// # Errors
    /// When no free queue id can be found, or the filesystem is below its disk reserve (then
    /// [`SpoolError::is_storage_full`] is true; the commit checks the reserve again).
    pub async fn create(&self) -> Result<SpoolWriter, SpoolError> {
        if self.reserve.is_reached() {
            return Err(below_reserve());
        }
        self.create_entry(true).await
    }

    /// Start an entry the relay writes itself (a delivery status notification): like
    /// [`create`](Self::create), but it may use the disk reserve.
    ///
    /// # Errors
    /// When no free queue id can be found.
    pub async fn create_bounce(&self) -> Result<SpoolWriter, SpoolError> {
        self.create_entry(false).await
    }

    async fn create_entry(&self, keeps_reserve: bool) -> Result<SpoolWriter, SpoolError> {
        for _ in 0..8 {
            let id = self.new_id();
            let (envelope, body) = (self.envelope_path(&id), self.body_path(&id));
            if blocking("check queue id", move || {
                Ok(envelope.exists() || body.exists())
            })
            .await?
            {
                continue;
            }
            return Ok(SpoolWriter {
                tmp_body: self.tmp.join(format!("{id}.msg")),
                id,
                queue_dir: self.queue.clone(),
                queue_sync: Arc::clone(&self.queue_sync),
                memory: Vec::new(),
                file: None,
                file_created: false,
                abandoned: Arc::new(AtomicBool::new(false)),
                digest: ring::digest::Context::new(&ring::digest::SHA256),
                len: 0,
                reserve: Arc::clone(&self.reserve),
                keeps_reserve,
            });
        }
        Err(SpoolError::Io {
            operation: "create spool entry",
            source: io::Error::other("could not find a free queue id"),
        })
    }

    fn entry_error(
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
    /// SHA-256 (content over [`content::IN_MEMORY_LIMIT`] stays in its file and is streamed).
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
        blocking("update envelope", move || {
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
        blocking("remove entry", move || {
            fsio::remove_if_exists(&body)?;
            fsio::remove_if_exists(&envelope)
        })
        .await?;
        self.queue_sync.sync().await
    }

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
        blocking("move entry to failed", move || {
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
    pub async fn fail_part(&self, failed: &Envelope) -> Result<QueueId, SpoolError> {
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
        blocking("record failed recipients", move || {
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
        blocking("purge failed entries", move || {
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

    /// Every entry in `queue/` that decodes, oldest first (a snapshot; safe while the relay
    /// runs, since envelopes are replaced atomically).
    ///
    /// # Errors
    /// I/O errors while listing the directory.
    pub async fn list_queued(&self) -> Result<Vec<Envelope>, SpoolError> {
        list_envelopes(self.queue.clone()).await
    }

    /// Check that a file can be created, written and removed in `tmp/` (readiness). The probe
    /// file is removed whatever happened (a full disk lets it be created but not written).
    ///
    /// # Errors
    /// The I/O error that stopped it.
    pub async fn probe_writable(&self) -> Result<(), SpoolError> {
        let path = self.tmp.join(format!("probe-{}", std::process::id()));
        blocking("probe the spool", move || {
            let written = fsio::write_private(&path, b"probe");
            let removed = fsio::remove_if_exists(&path);
            written.and(removed)
        })
        .await
    }

    /// Replace a small state file (`state/<name>`, e.g. an account's recipient counts):
    /// written to a temporary file, fsynced, renamed, and the `state/` directory fsynced, so a
    /// crash leaves the old or the new file, never a torn one.
    ///
    /// # Errors
    /// I/O errors, or a name that is not a plain file name.
    pub async fn write_state(&self, name: &str, bytes: Vec<u8>) -> Result<(), SpoolError> {
        let target = self.state_path(name)?;
        // A unique temporary name: concurrent writers must not rename each other's file away.
        let tmp = self.tmp.join(format!(
            "state-{name}-{:08x}",
            crate::vocab::random::unique_u32()
        ));
        let state_dir = self.state.clone();
        blocking("write state file", move || {
            fsio::write_and_rename(&tmp, &target, &bytes)?;
            fsio::sync_dir(&state_dir)
        })
        .await
    }

    /// Read a state file written by [`write_state`](Self::write_state), if it exists and can
    /// be read (on the blocking pool, off the runtime).
    pub async fn read_state(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.state_path(name).ok()?;
        blocking("read state file", move || std::fs::read(path))
            .await
            .ok()
    }

    fn state_path(&self, name: &str) -> Result<PathBuf, SpoolError> {
        let plain = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if plain {
            Ok(self.state.join(name))
        } else {
            Err(SpoolError::Io {
                operation: "state file name",
                source: io::Error::other(format!("{name:?} is not a plain file name")),
            })
        }
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
        blocking("quarantine entry", move || {
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
}

async fn list_envelopes(dir: PathBuf) -> Result<Vec<Envelope>, SpoolError> {
    blocking("list spool entries", move || {
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

/// The error of new mail below the disk reserve: "storage full", so it answers `452 4.3.1`.
fn below_reserve() -> SpoolError {
    SpoolError::Io {
        operation: "store new mail",
        source: io::Error::new(
            io::ErrorKind::StorageFull,
            "the spool's filesystem is below its disk reserve ([limits] min_free_space)",
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_support;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
