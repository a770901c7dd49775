//! Reading one spool entry from disk (blocking; callers run it in `spawn_blocking`).
//!
//! An entry is `<ID>.msg` (content + envelope trailer, see [`format`]) and, once it has been
//! rewritten after a failed attempt, `<ID>.env` beside it, which wins over the trailer.
//!
//! Invariant: nothing is returned that does not verify: the envelope by its checksum and the
//! content by its length and SHA-256 against the envelope.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{self, Envelope, FOOTER_LEN};

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

/// The envelope and the verified content of an entry, in one read of its file.
pub(super) fn read_entry(msg: &Path) -> Result<(Envelope, Vec<u8>), EntryError> {
    let mut bytes = std::fs::read(msg)?;
    let (trailer, content) = format::split_entry(&bytes).map_err(corrupt)?;
    let content_len = content.len();
    let digest = format::hex(ring::digest::digest(&ring::digest::SHA256, content).as_ref());
    if digest != trailer.body_sha256 {
        return Err(EntryError::Corrupt("content checksum mismatch".into()));
    }
    let envelope = match override_envelope(msg)? {
        Some(envelope) => envelope,
        None => trailer,
    };
    if envelope.body_len != content_len as u64 || envelope.body_sha256 != digest {
        return Err(EntryError::Corrupt(
            "the envelope does not describe this content".into(),
        ));
    }
    bytes.truncate(content_len);
    Ok((envelope, bytes))
}
