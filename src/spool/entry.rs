//! Reading one spool entry from disk (blocking; callers run it in `spawn_blocking`).
//!
//! An entry is `<ID>.msg` (content + envelope trailer, see [`format`]) and, once it has been
//! rewritten after a failed attempt, `<ID>.env` beside it, which wins over the trailer.
//!
//! Invariant: nothing is returned that does not verify: the envelope by its checksum (and a
//! newer `.env` by describing the same content as the trailer), the content by its length and
//! SHA-256 against the envelope.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::content::{self, Content};
use super::format::{self, FOOTER_LEN};
use crate::vocab::envelope::Envelope;

/// Why an entry could not be read.
#[derive(Debug)]
pub(super) enum EntryError {
    NotFound,
    Corrupt(String),
    Io(io::Error),
}

impl From<io::Error> for EntryError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::NotFound {
            EntryError::NotFound
        } else {
            EntryError::Io(error)
        }
    }
}

fn corrupt(error: format::DecodeError) -> EntryError {
    EntryError::Corrupt(error.to_string())
}

/// The `.env` beside `msg`, if there is one.
fn override_envelope(msg: &Path) -> Result<Option<Envelope>, EntryError> {
    match std::fs::read(msg.with_extension("env")) {
        Ok(bytes) => format::decode(&bytes).map(Some).map_err(corrupt),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EntryError::Io(e)),
    }
}

/// The envelope of the entry whose content file is `msg`, reading only its trailer (and the
/// `.env` beside it, which must describe the same content).
pub(super) fn read_envelope(msg: &Path) -> Result<Envelope, EntryError> {
    let mut file = File::open(msg)?;
    let size = file.metadata()?.len();
    let footer_at = size
        .checked_sub(FOOTER_LEN as u64)
        .ok_or_else(|| EntryError::Corrupt("truncated entry (no footer)".into()))?;
    file.seek(SeekFrom::Start(footer_at))?;
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact(&mut footer)?;
    let length = format::trailer_len(&footer).map_err(corrupt)?;
    let trailer_at = footer_at
        .checked_sub(length as u64)
        .ok_or_else(|| EntryError::Corrupt("truncated entry (short trailer)".into()))?;
    file.seek(SeekFrom::Start(trailer_at))?;
    let mut trailer = vec![0u8; length];
    file.read_exact(&mut trailer)?;
    let envelope = format::decode(&trailer).map_err(corrupt)?;
    if envelope.body_len != trailer_at {
        return Err(EntryError::Corrupt(format!(
            "the content is {trailer_at} bytes, the envelope says {} (truncated)",
            envelope.body_len
        )));
    }
    match override_envelope(msg)? {
        None => Ok(envelope),
        Some(newer) if describes_same_content(&newer, &envelope) => Ok(newer),
        Some(_) => Err(EntryError::Corrupt(
            "the envelope file does not describe this content".into(),
        )),
    }
}

fn describes_same_content(newer: &Envelope, original: &Envelope) -> bool {
    newer.body_len == original.body_len && newer.body_sha256 == original.body_sha256
}

/// The envelope and the verified content of an entry: read whole when small, otherwise
/// checked in one streaming pass and left in its file (see [`Content`]).
pub(super) fn read_entry(msg: &Path) -> Result<(Envelope, Content), EntryError> {
    let envelope = read_envelope(msg)?;
    if envelope.body_len > content::IN_MEMORY_LIMIT {
        let content = content::verify_streamed(msg, envelope.body_len, &envelope.body_sha256)?;
        return Ok((envelope, content));
    }
    let len = usize::try_from(envelope.body_len)
        .map_err(|_| EntryError::Corrupt("impossible content length".into()))?;
    let mut bytes = vec![0u8; len];
    File::open(msg)?.read_exact(&mut bytes).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            EntryError::Corrupt("the message file is shorter than its envelope says".into())
        } else {
            EntryError::Io(e)
        }
    })?;
    let digest =
        crate::vocab::hex::lower(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    if digest != envelope.body_sha256 {
        return Err(EntryError::Corrupt("content checksum mismatch".into()));
    }
    Ok((envelope, Content::in_memory(bytes)))
}

/// Which part of the spool an entry was found in by [`read_stored_entry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredIn {
    /// `queue/`: waiting for delivery.
    Queue,
    /// `failed/`: failed for good, kept for `failed_retention`.
    Failed,
}

/// Read and verify entry `id` straight from `state_dir` (queued first, then failed) without
/// opening the spool: nothing is recovered, moved or written, so it is safe beside a running
/// relay (committed content never changes). Blocking.
///
/// # Errors
/// `NotFound` when neither holds it, `Corrupt` when it does not verify, I/O errors otherwise.
pub fn read_stored_entry(
    state_dir: &Path,
    id: &str,
) -> Result<(Envelope, Content, StoredIn), super::SpoolError> {
    if !crate::vocab::envelope::is_valid_id(id) {
        return Err(super::SpoolError::NotFound(id.to_string()));
    }
    let root = state_dir.join(super::SPOOL_DIR);
    for (folder, stored_in) in [
        (super::QUEUE_DIR, StoredIn::Queue),
        (super::FAILED_DIR, StoredIn::Failed),
    ] {
        match read_entry(&root.join(folder).join(format!("{id}.msg"))) {
            Ok((envelope, content)) => return Ok((envelope, content, stored_in)),
            Err(EntryError::NotFound) => continue,
            Err(error) => return Err(super::Spool::entry_error(id, "read entry")(error)),
        }
    }
    Err(super::SpoolError::NotFound(id.to_string()))
}
