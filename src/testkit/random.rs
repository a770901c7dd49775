//! Random identifiers for the emulators: GUIDs (tenant, client, object, trace and correlation
//! ids), base64url noise for realistic token claims, and Entra-style client secret values.
//!
//! Invariant: these values are unique and unpredictable enough for tests, but they are not a
//! security boundary. Bytes come from ring's `SystemRandom`; if the OS generator ever fails,
//! a time-and-counter-seeded SplitMix64 stream is used instead, so that identifier creation
//! never has to fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

static FALLBACK_COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

/// Fills `out` with random bytes.
pub fn fill_random(out: &mut [u8]) {
    if SystemRandom::new().fill(out).is_ok() {
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Truncation is fine: this only seeds a mixer.
    let mut state =
        FALLBACK_COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ (nanos as u64);
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for (dst, src) in chunk.iter_mut().zip(z.to_le_bytes()) {
            *dst = src;
        }
    }
}

/// Returns `N` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// A random version-4 GUID in the lowercase hyphenated form Entra uses
/// (`8-4-4-4-12` hex digits).
pub fn new_guid() -> String {
    let mut bytes = random_bytes::<16>();
    if let Some(b) = bytes.get_mut(6) {
        *b = (*b & 0x0f) | 0x40;
    }
    if let Some(b) = bytes.get_mut(8) {
        *b = (*b & 0x3f) | 0x80;
    }
    let hex = hex_lower(&bytes);
    let part = |from: usize, to: usize| hex.get(from..to).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0, 8),
        part(8, 12),
        part(12, 16),
        part(16, 20),
        part(20, 32)
    )
}

/// Whether `text` has the hyphenated GUID shape (case-insensitive).
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths = [8usize, 4, 4, 4, 12];
    groups.len() == lengths.len()
        && groups
            .iter()
            .zip(lengths)
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Uppercase hex of `len` random bytes (session ids in SMTP banners, message ids).
pub fn random_hex_upper(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes);
    hex_lower(&bytes).to_ascii_uppercase()
}

/// base64url (no padding) of `len` random bytes.
pub fn random_b64url(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    fill_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A client secret value shaped like the ones the Entra portal shows today: 40 characters,
/// three random ones, the `8Q~` marker, then 34 characters from `[A-Za-z0-9._~-]`.
pub fn new_client_secret_value() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-";
    let mut raw = [0u8; 37];
    fill_random(&mut raw);
    let mut chars = raw.iter().map(|b| {
        let index = usize::from(*b) % ALPHABET.len();
        char::from(ALPHABET.get(index).copied().unwrap_or(b'A'))
    });
    let head: String = chars.by_ref().take(3).collect();
    let tail: String = chars.collect();
    format!("{head}8Q~{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_well_formed_and_distinct() {
        let a = new_guid();
        let b = new_guid();
        assert!(is_guid(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(!is_guid("contoso.onmicrosoft.com"));
    }

    #[test]
    fn secret_values_look_like_entra_secrets() {
        let s = new_client_secret_value();
        assert_eq!(s.len(), 40);
        assert_eq!(&s[3..6], "8Q~");
    }
}
