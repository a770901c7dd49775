//! Small state files under `state/` (e.g. an account's recipient counts for the last 24 hours).
//!
//! Invariants: a state file is replaced, never rewritten in place (written to a uniquely named
//! temporary file in `tmp/`, fsynced, renamed, then `state/` fsynced), so a crash leaves the
//! old or the new file, never a torn one; only plain file names are accepted, so no name
//! reaches outside `state/`.

use std::io;
use std::path::PathBuf;

use super::{Spool, SpoolError, fsio, on_blocking_pool};

impl Spool {
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
        on_blocking_pool("write state file", move || {
            fsio::write_and_rename(&tmp, &target, &bytes)?;
            fsio::sync_dir(&state_dir)
        })
        .await
    }

    /// Read a state file written by [`write_state`](Self::write_state), if it exists and can
    /// be read (on the blocking pool, off the runtime).
    pub async fn read_state(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.state_path(name).ok()?;
        on_blocking_pool("read state file", move || std::fs::read(path))
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
}
