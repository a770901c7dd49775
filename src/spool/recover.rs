//! The startup scan: find every committed entry, quarantine what does not verify.
//!
//! Invariants: recovery never stops startup because of one bad entry; it never delivers a
//! half entry; it never deletes anything from `queue/` (damaged entries go to `corrupt/`
//! with a log line that says why); `tmp/` holds only entries that were never acknowledged,
//! so it is emptied.

use std::collections::BTreeMap;
use std::fs;

use super::format::{self, Envelope};
use super::{Spool, SpoolError, fsio};

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

#[derive(Default)]
struct Found {
    envelope: bool,
    body: bool,
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

    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for entry in fs::read_dir(&spool.queue).map_err(io("scan queue"))? {
        let entry = entry.map_err(io("scan queue"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (id, is_envelope) = match (name.strip_suffix(".env"), name.strip_suffix(".msg")) {
            (Some(id), _) => (id.to_string(), true),
            (_, Some(id)) => (id.to_string(), false),
            _ => {
                tracing::warn!(file = %name, "unexpected file in the spool queue directory, left alone");
                continue;
            }
        };
        if !format::is_valid_id(&id) {
            tracing::warn!(file = %name, "file with an invalid queue id in the spool, left alone");
            continue;
        }
        let slot = found.entry(id).or_default();
        if is_envelope {
            slot.envelope = true;
        } else {
            slot.body = true;
        }
    }

    for (id, found) in found {
        let problem = match (found.envelope, found.body) {
            (true, true) => match check_entry(spool, &id) {
                Ok(envelope) => {
                    recovery.entries.push(envelope);
                    None
                }
                Err(reason) => Some(reason),
            },
            (true, false) => Some("the body file is missing".to_string()),
            (false, true) => {
                Some("no envelope: the entry was never committed (never acknowledged)".to_string())
            }
            (false, false) => None,
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

fn check_entry(spool: &Spool, id: &str) -> Result<Envelope, String> {
    let bytes =
        fs::read(spool.envelope_path(id)).map_err(|e| format!("cannot read the envelope: {e}"))?;
    let envelope = format::decode(&bytes).map_err(|e| e.to_string())?;
    if envelope.id != id {
        return Err(format!(
            "the envelope names another entry ({})",
            envelope.id
        ));
    }
    let body_len = fs::metadata(spool.body_path(id))
        .map_err(|e| format!("cannot read the body: {e}"))?
        .len();
    if body_len != envelope.body_len {
        return Err(format!(
            "the body is {body_len} bytes, the envelope says {} (truncated)",
            envelope.body_len
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
