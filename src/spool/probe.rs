//! The readiness probe: can the spool take new mail right now?
//!
//! Invariant: the probe leaves nothing behind in `tmp/`, whatever happened (a full disk lets
//! the file be created but not written).

use super::{Spool, SpoolError, fsio, on_blocking_pool};

impl Spool {
    /// Check that a file can be created, written and removed in `tmp/` (readiness). The probe
    /// file is removed whatever happened (a full disk lets it be created but not written).
    ///
    /// # Errors
    /// The I/O error that stopped it.
    pub async fn probe_writable(&self) -> Result<(), SpoolError> {
        let path = self.tmp.join(format!("probe-{}", std::process::id()));
        on_blocking_pool("probe the spool", move || {
            let written = fsio::write_private(&path, b"probe");
            let removed = fsio::remove_if_exists(&path);
            written.and(removed)
        })
        .await
    }
}
