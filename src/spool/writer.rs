//! A spool entry being received: content in memory up to [`SPILL_THRESHOLD`], then streamed
//! to a file in `tmp/`; [`SpoolWriter::commit`] makes it durable in `queue/`.
//!
//! Invariants: nothing reaches `queue/` before the commit's fsync and rename; a writer
//! dropped without a commit leaves nothing in `tmp/`, also when blocking work it started
//! finishes later.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;

use super::{DiskReserve, Spool, SpoolError, dirsync, format, fsio, on_blocking_pool};
use crate::vocab::envelope::{Envelope, QueueId};

/// Content up to this size is kept in memory until commit (one file write, one sync, no
/// temporary file churn); larger content is streamed to a file in `tmp/` as it arrives.
pub const SPILL_THRESHOLD: usize = 64 * 1024;

/// A spool entry being written. Dropping it without [`commit`](SpoolWriter::commit) removes
/// the temporary file (in the background, off the runtime): nothing half-received ever
/// reaches `queue/`.
pub struct SpoolWriter {
    pub(super) id: QueueId,
    pub(super) tmp_body: PathBuf,
    pub(super) queue_dir: PathBuf,
    pub(super) queue_sync: Arc<dirsync::DirSync>,
    /// Content not yet in a file.
    pub(super) memory: Vec<u8>,
    pub(super) file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    pub(super) file_created: bool,
    /// Set by `Drop`: a file created by blocking work that finishes after the writer was
    /// dropped (a write given up at its deadline) is removed by that work itself.
    pub(super) abandoned: Arc<AtomicBool>,
    pub(super) digest: ring::digest::Context,
    pub(super) len: u64,
    pub(super) reserve: Arc<DiskReserve>,
    /// True for mail from clients: refused at commit if the disk reserve was reached meanwhile.
    pub(super) keeps_reserve: bool,
}

impl Spool {
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
            if on_blocking_pool("check queue id", move || {
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

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("id", &self.id)
            .field("len", &self.len)
            .finish()
    }
}

impl SpoolWriter {
    /// The queue id this entry will have.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append body bytes.
    ///
    /// # Errors
    /// I/O errors (`is_storage_full` tells a full disk).
    ///
    /// # Cancel safety
    /// The entry is then unusable (drop it); dropping it leaves nothing in `tmp/`, also when
    /// the file creation or a write it started is still running.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.digest.update(bytes);
        self.len += bytes.len() as u64;
        if let Some(file) = self.file.as_mut() {
            return file
                .write_all(bytes)
                .await
                .map_err(SpoolError::io("write body"));
        }
        self.memory.extend_from_slice(bytes);
        if self.memory.len() > SPILL_THRESHOLD {
            let path = self.tmp_body.clone();
            let abandoned = Arc::clone(&self.abandoned);
            // From here the file may exist: Drop removes it, and if Drop ran before the
            // creation below, the creation removes it again (cancel-safe, no debris).
            self.file_created = true;
            let file = on_blocking_pool("create spool file", move || {
                let file = fsio::create_new(&path)?;
                if abandoned.load(Ordering::SeqCst) {
                    drop(file);
                    fsio::remove_if_exists(&path)?;
                    return Err(io::Error::other("the spool entry was abandoned"));
                }
                Ok(file)
            })
            .await?;
            let mut file =
                tokio::io::BufWriter::with_capacity(64 * 1024, tokio::fs::File::from_std(file));
            file.write_all(&self.memory)
                .await
                .map_err(SpoolError::io("write body"))?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        Ok(())
    }

    /// Make the entry durable in `queue/`. `envelope.id`, `body_len` and `body_sha256` are
    /// filled in here. Returns only when the entry survives a crash: body and envelope
    /// fsynced, renamed into `queue/`, and the directory fsynced (shared with the entries
    /// committed at the same moment).
    ///
    /// # Errors
    /// I/O errors, or (for mail from clients) the disk reserve reached meanwhile; the entry is
    /// then not committed and its temporary files are removed.
    pub async fn commit(mut self, mut envelope: Envelope) -> Result<Envelope, SpoolError> {
        if self.keeps_reserve && self.reserve.is_reached() {
            return Err(below_reserve());
        }
        let spilled = match self.file.take() {
            Some(mut file) => {
                file.flush().await.map_err(SpoolError::io("flush body"))?;
                Some(file.into_inner().into_std().await)
            }
            None => None,
        };
        envelope.id = self.id.clone();
        envelope.body_len = self.len;
        envelope.body_sha256 = crate::vocab::hex::lower(self.digest.clone().finish().as_ref());
        let trailer = format::encode_trailer(&envelope).map_err(|e| SpoolError::Corrupt {
            id: self.id.clone(),
            reason: e.to_string(),
        })?;
        let entry_len = self.len + trailer.len() as u64;
        let mut memory = std::mem::take(&mut self.memory);
        let tmp_body = self.tmp_body.clone();
        let body = self.queue_dir.join(format!("{}.msg", self.id));
        // The file exists from here on (if the closure fails, Drop removes it).
        self.file_created = true;
        on_blocking_pool("commit entry", move || {
            let mut file = match spilled {
                Some(file) => file,
                None => fsio::create_new(&tmp_body)?,
            };
            memory.extend_from_slice(&trailer);
            std::io::Write::write_all(&mut file, &memory)?;
            fsio::sync_file(&file)?;
            drop(file);
            fsio::rename(&tmp_body, &body)
        })
        .await?;
        // Renamed: nothing left in tmp/ for Drop to clean.
        self.file_created = false;
        self.reserve.consume(entry_len);
        if let Err(e) = self.queue_sync.sync().await {
            // Not durable: take the entry back out rather than acknowledge it.
            let body = self.queue_dir.join(format!("{}.msg", self.id));
            let _ = on_blocking_pool("undo commit", move || fsio::remove_if_exists(&body)).await;
            return Err(e);
        }
        Ok(envelope)
    }
}

impl Drop for SpoolWriter {
    /// Removes the temporary file on tokio's blocking pool when a runtime is running (a drop
    /// happens on a runtime worker, which must not wait for the disk), in place otherwise.
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::SeqCst);
        if self.file_created {
            let path = std::mem::take(&mut self.tmp_body);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    drop(runtime.spawn_blocking(move || fsio::remove_if_exists(&path)));
                }
                Err(_) => {
                    let _ = fsio::remove_if_exists(&path);
                }
            }
        }
    }
}
