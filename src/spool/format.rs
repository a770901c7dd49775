//! The envelope file format: versioned and self-validating. Pure, no I/O.
//!
//! ```text
//! smtp-oauth-relay envelope 1
//! {"id":"…","account":"…",…}
//! sha256 <hex of the JSON line>
//! ```
//!
//! A spool entry is one file, `<ID>.msg`: the message content, then its envelope in this
//! format as a trailer, then a fixed-size footer giving the trailer's length
//! ([`encode_trailer`], [`split_entry`]). One file means one create, one fsync and one rename
//! per accepted message. When the envelope changes later (a failed attempt), the new one is
//! written beside it as `<ID>.env`, which takes precedence over the trailer.
//!
//! Invariants: an envelope decodes only when the magic line, the version, the JSON and its
//! checksum all agree, so a torn or edited file is detected and quarantined instead of being
//! delivered. The envelope also records the body's length and SHA-256, so a truncated or
//! damaged body is detected before a single byte of it is sent. No secret is ever stored.

use crate::vocab::envelope::{Envelope, is_valid_id};
use crate::vocab::hex;

const MAGIC: &str = "smtp-oauth-relay envelope";
/// The version written by this build.
pub const VERSION: u32 = 1;

/// Why an envelope file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not an envelope file (bad first line)")]
    BadMagic,
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(String),
    #[error("truncated envelope")]
    Truncated,
    #[error("checksum mismatch (the file was damaged or edited)")]
    ChecksumMismatch,
    #[error("invalid envelope content: {0}")]
    BadContent(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::lower(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Serialize an envelope into its file form.
///
/// # Errors
/// Only if serde_json fails, which it does not for this type.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, DecodeError> {
    let json =
        serde_json::to_string(envelope).map_err(|e| DecodeError::BadContent(e.to_string()))?;
    let checksum = sha256_hex(json.as_bytes());
    Ok(format!("{MAGIC} {VERSION}\n{json}\nsha256 {checksum}\n").into_bytes())
}

/// The footer after the trailer: 8 magic bytes and the trailer length in 16 hex digits.
pub const FOOTER_LEN: usize = 24;
const FOOTER_MAGIC: &[u8; 8] = b"SORTRLR1";

/// The envelope trailer and footer appended to the content in an entry file.
///
/// # Errors
/// Only if serde_json fails, which it does not for this type.
pub fn encode_trailer(envelope: &Envelope) -> Result<Vec<u8>, DecodeError> {
    let mut trailer = encode(envelope)?;
    let length = trailer.len();
    trailer.extend_from_slice(FOOTER_MAGIC);
    trailer.extend_from_slice(format!("{length:016x}").as_bytes());
    Ok(trailer)
}

/// The length of the trailer announced by `footer` (the last [`FOOTER_LEN`] bytes).
///
/// # Errors
/// `Truncated` when the footer is not one.
pub fn trailer_len(footer: &[u8]) -> Result<usize, DecodeError> {
    let (magic, digits) = footer
        .split_at_checked(FOOTER_MAGIC.len())
        .ok_or(DecodeError::Truncated)?;
    if magic != FOOTER_MAGIC || digits.len() != 16 {
        return Err(DecodeError::Truncated);
    }
    let digits = std::str::from_utf8(digits).map_err(|_| DecodeError::Truncated)?;
    usize::from_str_radix(digits, 16).map_err(|_| DecodeError::Truncated)
}

/// Split a whole entry file into its envelope (from the trailer) and its content, checking
/// that the content has the length the envelope records. (The content's checksum is checked
/// by the caller that needs the content.)
///
/// # Errors
/// [`DecodeError`] when the file is not a complete, intact entry.
pub fn split_entry(file: &[u8]) -> Result<(Envelope, &[u8]), DecodeError> {
    let footer_start = file
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or(DecodeError::Truncated)?;
    let length = trailer_len(file.get(footer_start..).ok_or(DecodeError::Truncated)?)?;
    let trailer_start = footer_start
        .checked_sub(length)
        .ok_or(DecodeError::Truncated)?;
    let envelope = decode(
        file.get(trailer_start..footer_start)
            .ok_or(DecodeError::Truncated)?,
    )?;
    if u64::try_from(trailer_start).ok() != Some(envelope.body_len) {
        return Err(DecodeError::BadContent(
            "the content length does not match the envelope".into(),
        ));
    }
    Ok((
        envelope,
        file.get(..trailer_start).ok_or(DecodeError::Truncated)?,
    ))
}

/// Parse and verify an envelope file.
///
/// # Errors
/// [`DecodeError`] for anything that is not a complete, intact envelope of a known version.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadMagic)?;
    let mut lines = text.split('\n');
    let header = lines.next().ok_or(DecodeError::Truncated)?;
    let version = header
        .strip_prefix(MAGIC)
        .ok_or(DecodeError::BadMagic)?
        .trim();
    if version != VERSION.to_string() {
        return Err(DecodeError::UnsupportedVersion(
            version.chars().take(16).collect(),
        ));
    }
    let json = lines.next().ok_or(DecodeError::Truncated)?;
    let checksum_line = lines.next().ok_or(DecodeError::Truncated)?;
    let checksum = checksum_line
        .strip_prefix("sha256 ")
        .ok_or(DecodeError::Truncated)?;
    if lines.next() != Some("") || lines.next().is_some() {
        return Err(DecodeError::Truncated);
    }
    if sha256_hex(json.as_bytes()) != checksum {
        return Err(DecodeError::ChecksumMismatch);
    }
    let envelope: Envelope =
        serde_json::from_str(json).map_err(|e| DecodeError::BadContent(e.to_string()))?;
    if !is_valid_id(&envelope.id) {
        return Err(DecodeError::BadContent("invalid queue id".into()));
    }
    if envelope.recipients.is_empty() {
        return Err(DecodeError::BadContent("no recipients".into()));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::address::Address;
    use crate::vocab::envelope::ClientInfo;

    pub(crate) fn sample() -> Envelope {
        Envelope {
            id: "0000018F00ABCDEF".into(),
            account: "m365".into(),
            sender: Some(Address::parse("scanner@contoso.com").unwrap()),
            recipients: vec![Address::parse("a@x.example").unwrap()],
            received_at: 1_700_000_000,
            body_len: 42,
            body_sha256: "00".repeat(32),
            eight_bit: false,
            smtputf8: false,
            client: ClientInfo {
                peer: "192.0.2.1:1234".into(),
                helo: Some("printer".into()),
                principal: "network 192.0.2.0/24".into(),
            },
            attempts: 0,
            next_attempt: 1_700_000_000,
            last_attempt: None,
            delivered: Vec::new(),
            failures: Vec::new(),
            is_bounce: false,
            uncertain_attempts: 0,
            requeued_at: None,
        }
    }

    #[test]
    fn round_trip() {
        let envelope = sample();
        let bytes = encode(&envelope).unwrap();
        assert_eq!(decode(&bytes).unwrap(), envelope);
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncated to {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let bytes = encode(&sample()).unwrap();
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x01;
            assert!(
                decode(&damaged).is_err(),
                "flipped byte {index} was accepted"
            );
        }
    }

    #[test]
    fn envelopes_written_before_the_optional_fields_still_decode() {
        let json = r#"{"id":"0000018F00ABCDEF","account":"m365","sender":"scanner@contoso.com","recipients":["a@x.example"],"received_at":1,"body_len":1,"body_sha256":"00","eight_bit":false,"smtputf8":false,"client":{"peer":"p","helo":null,"principal":"u"},"attempts":0,"next_attempt":1,"last_attempt":null}"#;
        let checksum = sha256_hex(json.as_bytes());
        let file = format!("{MAGIC} 1\n{json}\nsha256 {checksum}\n");
        let envelope = decode(file.as_bytes()).unwrap();
        assert!(envelope.failures.is_empty() && !envelope.is_bounce);
    }

    #[test]
    fn entry_files_split_into_content_and_envelope_and_refuse_damage() {
        let mut envelope = sample();
        let content = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        envelope.body_len = content.len() as u64;
        let mut file = content.clone();
        file.extend_from_slice(&encode_trailer(&envelope).unwrap());
        let (decoded, body) = split_entry(&file).unwrap();
        assert_eq!(decoded, envelope);
        assert_eq!(body, content.as_slice());
        for len in 0..file.len() {
            assert!(
                split_entry(&file[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
        let mut longer = b"extra".to_vec();
        longer.extend_from_slice(&file);
        assert!(
            split_entry(&longer).is_err(),
            "a content of the wrong length is refused"
        );
    }

    #[test]
    fn future_versions_are_refused() {
        let text = String::from_utf8(encode(&sample()).unwrap()).unwrap();
        let future = text.replacen("envelope 1", "envelope 2", 1);
        assert_eq!(
            decode(future.as_bytes()),
            Err(DecodeError::UnsupportedVersion("2".into()))
        );
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("0000018F00ABCDEF"));
        assert!(!is_valid_id("../../etc/passwd"));
        assert!(!is_valid_id("0000018f00abcdef"));
        assert!(!is_valid_id("0000018F00ABCDE"));
    }
}
