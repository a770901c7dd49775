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
//!
//! [`Spool`]'s methods are spread by job: `writer` (new entries: [`Spool::create`], the
//! [`SpoolWriter`] and its commit), `lifecycle` (a committed entry: load, envelope update,
//! removal, quarantine, listing), `failed` (moving entries or some of their recipients to
//! `failed/`, listing and purging it), `state_files`, and `probe` (readiness). This file holds
//! the layout, the error type and the one helper that runs file work off the runtime.

mod bounded;
pub mod content;
mod dirsync;
mod entry;
mod failed;
pub mod format;
pub mod fsio;
mod lifecycle;
mod probe;
mod recover;
mod requeue;
pub mod reserve;
mod state_files;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::vocab::envelope::QueueId;
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

/// Run file work on tokio's blocking pool, off the runtime's threads, and turn its I/O error
/// (or a failed blocking task) into a [`SpoolError`] naming `operation`. No deadline: callers
/// that need one wrap the call (see [`bounded`]).
async fn on_blocking_pool<T: Send + 'static>(
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_support;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
