//! The disk reserve: new mail stops before the spool's filesystem is full, so that the relay
//! can still record what happens to the mail it already holds.
//!
//! A sampler task ([`watch`]) reads the filesystem's free space (`statvfs`, off the async
//! runtime) every [`SAMPLE_INTERVAL`] and caches it in atomics; every committed entry also
//! subtracts its size at once ([`DiskReserve::consume`]), so a burst between two samples
//! cannot run far past the reserve. The SMTP side and the spool only read the atomics: no
//! system call per command or per message.
//!
//! Invariants:
//! - Below the reserve (`[limits] min_free_space`), only *new mail from clients* is refused
//!   (`452 4.3.1` at MAIL FROM, and at commit if space ran out meanwhile). Everything the relay
//!   writes for mail it already accepted (envelope updates after an attempt, moves to
//!   `failed/`, state files, DSNs) never looks at the reserve: that is what it is kept for.
//! - The state changes only on a sample or a commit; a change is logged once (WARN when the
//!   reserve is reached, INFO when it is left). Leaving it needs 5% of the reserve (at most
//!   64 MiB) above it, so a spool hovering at the line does not flap.
//! - Nothing is known before the first sample, and a failing `statvfs` keeps the last state
//!   (logged once): the reserve never refuses mail on a guess. `ENOSPC` still answers
//!   `452 4.3.1` on its own.

use crate::vocab::reserve_status::ReserveStatus;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytesize::ByteSize;
use tokio_util::sync::CancellationToken;

use crate::config::free_space::MinFreeSpace;

/// How often the free space is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The most free space beyond the reserve needed to leave it again.
const MAX_HYSTERESIS: u64 = 64 * 1024 * 1024;

/// Marks "not sampled yet" in the byte counters.
const UNKNOWN: u64 = u64::MAX;

/// The shared state of the reserve of one spool.
#[derive(Debug)]
pub struct DiskReserve {
    /// A path on the spool's filesystem (the spool directory).
    path: PathBuf,
    setting: Mutex<MinFreeSpace>,
    free_bytes: AtomicU64,
    total_bytes: AtomicU64,
    required_bytes: AtomicU64,
    reached: AtomicBool,
    /// True after a failed sample, so the failure is logged once.
    sampling_failed: AtomicBool,
}

impl DiskReserve {
    /// A reserve for the filesystem holding `path`, with the default setting; nothing is
    /// refused before the first sample.
    pub fn new(path: impl Into<PathBuf>) -> DiskReserve {
        DiskReserve {
            path: path.into(),
            setting: Mutex::new(MinFreeSpace::Default),
            free_bytes: AtomicU64::new(UNKNOWN),
            total_bytes: AtomicU64::new(UNKNOWN),
            required_bytes: AtomicU64::new(0),
            reached: AtomicBool::new(false),
            sampling_failed: AtomicBool::new(false),
        }
    }

    /// The path whose filesystem is watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn setting(&self) -> MinFreeSpace {
        *self.setting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply `min_free_space` (at start and on reload); takes effect at once if the
    /// filesystem was sampled already.
    pub fn set_setting(&self, setting: MinFreeSpace) {
        *self.setting.lock().unwrap_or_else(PoisonError::into_inner) = setting;
        let (free, total) = (
            self.free_bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        );
        if free != UNKNOWN && total != UNKNOWN {
            self.record(free, total);
        }
    }

    /// True while new mail is refused.
    pub fn is_reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    /// Whether a new message of `declared_size` bytes (0 when unknown) may be accepted: the
    /// reserve is not reached and the message would not take the spool below it.
    pub fn admits(&self, declared_size: u64) -> bool {
        if self.is_reached() {
            return false;
        }
        let required = self.required_bytes.load(Ordering::Relaxed);
        let free = self.free_bytes.load(Ordering::Relaxed);
        required == 0 || free == UNKNOWN || free.saturating_sub(declared_size) >= required
    }

    /// Record a sample: `free_bytes` available of `total_bytes`.
    pub fn record(&self, free_bytes: u64, total_bytes: u64) {
        let setting = self.setting();
        let required = setting.required_bytes(total_bytes);
        self.total_bytes.store(total_bytes, Ordering::Relaxed);
        self.required_bytes.store(required, Ordering::Relaxed);
        self.free_bytes.store(free_bytes, Ordering::Relaxed);
        self.evaluate(free_bytes, required, setting);
    }

    /// `bytes` were just written to the spool: count them before the next sample does.
    pub fn consume(&self, bytes: u64) {
        let previous = self
            .free_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |free| {
                (free != UNKNOWN).then(|| free.saturating_sub(bytes))
            });
        if let Ok(free) = previous {
            let required = self.required_bytes.load(Ordering::Relaxed);
            self.evaluate(free.saturating_sub(bytes), required, self.setting());
        }
    }

    fn evaluate(&self, free: u64, required: u64, setting: MinFreeSpace) {
        let was = self.is_reached();
        let now = if required == 0 {
            false
        } else if was {
            free < required.saturating_add((required / 20).min(MAX_HYSTERESIS))
        } else {
            free < required
        };
        if now == was
            || self
                .reached
                .compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (free, reserve) = (bytes(free), bytes(required));
        let path = self.path.display();
        if now {
            tracing::warn!(
                spool = %path,
                %free,
                %reserve,
                "the spool's filesystem is below its disk reserve ([limits] min_free_space = {setting}): new mail gets 452 4.3.1 until space is freed; delivery, queue updates and bounces go on"
            );
        } else {
            tracing::info!(
                spool = %path,
                %free,
                %reserve,
                "the spool's filesystem is above its disk reserve again: new mail is accepted"
            );
        }
    }

    /// Sample the filesystem now. A blocking system call (`statvfs`): call it off the async
    /// runtime ([`refresh`](Self::refresh)).
    ///
    /// # Errors
    /// The error of `statvfs` (logged once; the last state stays).
    pub fn sample(&self) -> io::Result<()> {
        match rustix::fs::statvfs(&self.path) {
            Ok(stat) => {
                let block = if stat.f_frsize > 0 {
                    stat.f_frsize
                } else {
                    stat.f_bsize
                };
                self.record(
                    stat.f_bavail.saturating_mul(block),
                    stat.f_blocks.saturating_mul(block),
                );
                if self.sampling_failed.swap(false, Ordering::Relaxed) {
                    tracing::info!(spool = %self.path.display(), "the spool's free space can be read again");
                }
                Ok(())
            }
            Err(errno) => {
                let error = io::Error::from(errno);
                if !self.sampling_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(spool = %self.path.display(), %error, "cannot read the free space of the spool's filesystem; the disk reserve keeps its last state");
                }
                Err(error)
            }
        }
    }

    /// [`sample`](Self::sample) on the blocking pool.
    pub async fn refresh(self: &Arc<Self>) {
        let reserve = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || reserve.sample()).await;
    }

    /// The current state.
    pub fn status(&self) -> ReserveStatus {
        let known = |value: u64| (value != UNKNOWN).then_some(value);
        ReserveStatus {
            free_bytes: known(self.free_bytes.load(Ordering::Relaxed)),
            total_bytes: known(self.total_bytes.load(Ordering::Relaxed)),
            required_bytes: self.required_bytes.load(Ordering::Relaxed),
            reached: self.is_reached(),
        }
    }

    /// Why the relay is not ready, while the reserve is reached (for `/readyz`).
    pub fn problem(&self) -> Option<String> {
        let status = self.status();
        status.reached.then(|| {
            format!(
                "the spool's filesystem is below its disk reserve: {} free, reserve {} ([limits] min_free_space = {}); new mail gets 452 4.3.1 until space is freed, delivery goes on",
                status.free_bytes.map_or_else(|| "?".to_string(), bytes),
                bytes(status.required_bytes),
                self.setting()
            )
        })
    }
}

impl fmt::Display for ReserveStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} free, reserve {}{}",
            self.free_bytes.map_or_else(|| "?".to_string(), bytes),
            bytes(self.required_bytes),
            if self.reached { " (reached)" } else { "" }
        )
    }
}

fn bytes(value: u64) -> String {
    ByteSize::b(value).display().iec().to_string()
}

/// Sample the reserve every [`SAMPLE_INTERVAL`] until `cancel`.
pub async fn watch(reserve: Arc<DiskReserve>, cancel: CancellationToken) {
    loop {
        reserve.refresh().await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
#[path = "reserve_tests.rs"]
mod tests;
