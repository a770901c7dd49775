//! The state directory's lock: one relay per spool.
//!
//! Invariant: the relay holds an exclusive lock on `<state_dir>/relay.lock` (0600, in a 0700
//! directory) for its whole life (two relays on one spool would deliver twice); the lock is
//! released only when the file is closed, by the process ending or the [`super::Relay`] being
//! dropped. The offline queue commands take the same lock.

use super::StartError;

/// Create the state directory if needed (0700) and lock it through `relay.lock` (0600).
/// Blocking.
pub(super) fn lock_state_dir(state_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let spool_error = |source: std::io::Error| StartError::Spool {
        path: state_dir.display().to_string(),
        source: crate::spool::SpoolError::Io {
            operation: "lock the state directory",
            source,
        },
    };
    crate::spool::fsio::create_dir_if_missing(state_dir).map_err(spool_error)?;
    let file =
        crate::spool::fsio::open_private(&state_dir.join("relay.lock")).map_err(spool_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::Locked(state_dir.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(spool_error(e)),
    }
}
