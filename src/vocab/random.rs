//! Random bytes from the operating system, with the two ways of using them made explicit.
//!
//! - [`secret_bytes`] is for values that must be unpredictable (password salts, keys): when the
//!   system generator fails, the caller gets the error and must not go on with a weak value.
//! - [`unique_bytes`] is for values that must only differ from one another (queue id suffixes,
//!   Message-ID and DSN boundaries, retry jitter): when the system generator fails, which on
//!   Linux does not happen once the kernel has booted, the bytes come from a hash of the clock,
//!   the process id and a process-wide counter, so they still differ from every other call.
//!
//! Invariant: no caller ignores a generator failure silently; each chose one of the two.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// The system random generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomUnavailable;

/// `N` unpredictable bytes, or the generator's failure.
pub fn secret_bytes<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomUnavailable)?;
    Ok(bytes)
}

/// `N` bytes that differ from every other call's: random when the system generator works,
/// else derived from the clock, the process id and a counter (see the module doc).
pub fn unique_bytes<const N: usize>() -> [u8; N] {
    secret_bytes().unwrap_or_else(|RandomUnavailable| fallback_bytes())
}

/// A `u32` for jitter and id suffixes (see [`unique_bytes`]).
pub fn unique_u32() -> u32 {
    u32::from_le_bytes(unique_bytes())
}

fn fallback_bytes<const N: usize>() -> [u8; N] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut out = [0u8; N];
    let call = COUNTER.fetch_add(1, Ordering::Relaxed);
    for (block, chunk) in (0u64..).zip(out.chunks_mut(32)) {
        let mut input = Vec::with_capacity(40);
        input.extend_from_slice(&nanos.to_le_bytes());
        input.extend_from_slice(&std::process::id().to_le_bytes());
        input.extend_from_slice(&call.to_le_bytes());
        input.extend_from_slice(&block.to_le_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        for (byte, digest_byte) in chunk.iter_mut().zip(digest.as_ref()) {
            *byte = *digest_byte;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{fallback_bytes, secret_bytes, unique_bytes};

    #[test]
    fn the_system_generator_gives_different_values() {
        let first: [u8; 16] = unique_bytes();
        let second: [u8; 16] = unique_bytes();
        assert_ne!(first, second);
        assert!(secret_bytes::<32>().is_ok());
    }

    #[test]
    fn the_fallback_differs_between_calls_and_fills_long_buffers() {
        let first: [u8; 48] = fallback_bytes();
        let second: [u8; 48] = fallback_bytes();
        assert_ne!(first, second);
        // Bytes past the first digest come from a second block, not zeros.
        assert_ne!(&first[32..], &[0u8; 16][..]);
    }
}
