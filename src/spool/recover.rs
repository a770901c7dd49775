//! The startup scan: find every committed entry, quarantine what does not verify.
//!
//! Invariants: recovery never stops startup because of one bad entry; it never delivers a
//! half entry; it never deletes anything from `queue/` (damaged entries go to `corrupt/`
//! with a log line that says why); `tmp/` holds only entries that were never acknowledged,
//! so it is emptied.
//!
//! An entry is committed exactly when `<ID>.msg` is in `queue/` (it is renamed there whole,
//! with its envelope trailer). A lone `<ID>.env` is what a crash while removing a delivered
//! entry leaves (the content file goes first); it is set aside too, never deleted unseen.

use std::collections::BTreeMap;
use std::fs;

use super::entry::{self, EntryError};
use super::{Spool, SpoolError, fsio};
use crate::vocab::envelope::Envelope;

/// What the startup scan found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Committed entries, ready to be scheduled.
    pub entries: Vec<Envelope>,
    /// `(id, reason)` of every entry moved to `corrupt/`.
    pub quarantined: Vec<(String, String)>,
    /// Unacknowledged leftovers removed from `tmp/`.
    pub tmp_removed: usize,
}

pub(super) fn recover(spool: &Spool) -> Result<Recovery, SpoolError> {
    let mut recovery = Recovery::default();
    let io = |operation| move |source| SpoolError::Io { operation, source };

    for entry in fs::read_dir(&spool.tmp).map_err(io("scan tmp"))? {
        let entry = entry.map_err(io("scan tmp"))?;
        if fsio::remove_if_exists(&entry.path()).is_ok() {
            recovery.tmp_removed += 1;
        }
    }

    // id → whether its content file exists (ids seen only through a `.env` map to false).
    let mut found: BTreeMap<String, bool> = BTreeMap::new();
    for entry in fs::read_dir(&spool.queue).map_err(io("scan queue"))? {
        let entry = entry.map_err(io("scan queue"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (id, is_content) = match (name.strip_suffix(".msg"), name.strip_suffix(".env")) {
            (Some(id), _) => (id.to_string(), true),
            (_, Some(id)) => (id.to_string(), false),
            _ => {
                tracing::warn!(file = %name, "unexpected file in the spool queue directory, left alone");
                continue;
            }
        };
        if !crate::vocab::envelope::is_valid_id(&id) {
            tracing::warn!(file = %name, "file with an invalid queue id in the spool, left alone");
            continue;
        }
        *found.entry(id).or_default() |= is_content;
    }

    for (id, has_content) in found {
        let problem = if has_content {
            match check_entry(spool, &id) {
                Ok(envelope) => {
                    recovery.entries.push(envelope);
                    None
                }
                Err(reason) => Some(reason),
            }
        } else {
            Some(
                "an envelope without its message file (left by a crash while removing a \
                 delivered entry, or the file was deleted)"
                    .to_string(),
            )
        };
        if let Some(reason) = problem {
            quarantine_now(spool, &id)?;
            tracing::error!(queue_id = %id, reason = %reason, "damaged spool entry moved to the corrupt/ directory; it will not be delivered");
            recovery.quarantined.push((id, reason));
        }
    }
    recovery.entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(recovery)
}

/// The entry's envelope if its trailer (and any newer `.env`) verifies and names this entry.
/// The content's checksum is verified when it is read for delivery, not here, so a start
/// with a large backlog does not read every message.
fn check_entry(spool: &Spool, id: &str) -> Result<Envelope, String> {
    let envelope = entry::read_envelope(&spool.body_path(id)).map_err(|error| match error {
        EntryError::NotFound => "the message file vanished during the scan".to_string(),
        EntryError::Corrupt(reason) => reason,
        EntryError::Io(e) => format!("cannot read the entry: {e}"),
    })?;
    if envelope.id != id {
        return Err(format!(
            "the envelope names another entry ({})",
            envelope.id
        ));
    }
    Ok(envelope)
}

fn quarantine_now(spool: &Spool, id: &str) -> Result<(), SpoolError> {
    let io = |source| SpoolError::Io {
        operation: "quarantine entry",
        source,
    };
    for (from, to) in [
        (
            spool.envelope_path(id),
            spool.corrupt.join(format!("{id}.env")),
        ),
        (spool.body_path(id), spool.corrupt.join(format!("{id}.msg"))),
    ] {
        if from.exists() {
            fsio::rename(&from, &to).map_err(io)?;
        }
    }
    fsio::sync_dir(&spool.corrupt).map_err(io)?;
    fsio::sync_dir(&spool.queue).map_err(io)
}
