//! Argon2 password hashes: verifying a PHC string into memory the caller owns, hashing new
//! passwords for `hash-password`, and the decoy hash that makes an unknown user cost the same
//! work as a known one.
//!
//! Invariants: verification never allocates the argon2 work area itself; it uses an
//! [`Argon2Scratch`] that a long-lived worker keeps and reuses, so a flood of AUTH attempts
//! costs the same resident memory as one (the allocator never sees the 19 MiB blocks come and
//! go, which is what grew glibc arenas to 868 MB). A hash whose parameters need more than
//! [`MAX_HASH_MEMORY_KIB`] is refused, never computed. Outputs are compared in constant time.

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::vocab::secret::Secret;

/// The largest argon2 memory cost (`m=`, in KiB) a configured hash may ask for: 64 MiB.
/// The default of `hash-password` is 19 MiB (argon2's OWASP-recommended default).
pub const MAX_HASH_MEMORY_KIB: u32 = 64 * 1024;
/// The most passes over that memory (`t`): about a second of CPU at 64 MiB.
pub const MAX_HASH_ITERATIONS: u32 = 10;
/// The most lanes (`p`); RFC 9106 recommends 4.
pub const MAX_HASH_PARALLELISM: u32 = 4;

/// Capacity reserved for a work area, in blocks of 1 KiB: just above 32 MiB, glibc's largest
/// dynamic mmap threshold, so the area is always its own mapping and freeing it returns the
/// memory to the system (a smaller area would end up in a thread arena that is never
/// trimmed). Only the blocks in use become resident.
const RESERVED_BLOCKS: usize = 32 * 1024 + 1;

/// An argon2 work area kept by one password-check worker and reused for every check.
#[derive(Default)]
pub struct Argon2Scratch {
    blocks: Vec<Block>,
}

impl Argon2Scratch {
    /// The work area for `block_count` blocks, grown (never shrunk) on first need.
    fn blocks(&mut self, block_count: usize) -> Option<&mut [Block]> {
        if self.blocks.capacity() < block_count {
            let mut blocks = Vec::with_capacity(block_count.max(RESERVED_BLOCKS));
            blocks.resize(block_count, Block::default());
            self.blocks = blocks;
        } else if self.blocks.len() < block_count {
            self.blocks.resize(block_count, Block::default());
        }
        self.blocks.get_mut(..block_count)
    }

    /// Give the work area back (an idle worker); the next check allocates it again.
    pub fn release(&mut self) {
        self.blocks = Vec::new();
    }

    /// Bytes held by the work area.
    pub fn held_bytes(&self) -> usize {
        self.blocks.len() * Block::SIZE
    }
}

/// True when `password` matches the PHC string `phc`, computed in `scratch`.
pub fn verify_phc(phc: &str, password: &Secret, scratch: &mut Argon2Scratch) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_HASH_MEMORY_KIB || params.t_cost() > MAX_HASH_ITERATIONS {
        return false;
    }
    let mut salt_buffer = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buffer) else {
        return false;
    };
    let block_count = params.block_count();
    let hasher = Argon2::new(algorithm, version, params);
    let Some(blocks) = scratch.blocks(block_count) else {
        return false;
    };
    let mut computed = [0u8; Output::MAX_LENGTH];
    let Some(computed) = computed.get_mut(..expected.len()) else {
        return false;
    };
    if hasher
        .hash_password_into_with_memory(password.expose().as_bytes(), salt, computed, blocks)
        .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(computed).is_ok_and(|computed| computed == expected)
}

/// Whether `phc` is an argon2 hash whose cost stays within the bounds above: every AUTH (and
/// every AUTH for an unknown user, which spends the same work) pays it, two at once on the
/// password-check workers, so an extreme hash would let one client exhaust a 512 MiB pod or the
/// CPU. `hash-password` writes m = 19456 KiB, t = 2, p = 1 (OWASP's recommendation), well
/// inside; RFC 9106's memory-constrained recommendation (m = 64 MiB, t = 3, p = 4) fits too.
///
/// # Errors
/// What is wrong, in an administrator's words.
pub fn hash_parameters_acceptable(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc)
        .map_err(|e| format!("password_hash is not a valid PHC string: {e}"))?;
    if Algorithm::try_from(hash.algorithm).is_err() {
        return Err(format!(
            "password_hash uses {}; the relay checks argon2 hashes only (from `smtp-oauth-relay hash-password`)",
            hash.algorithm
        ));
    }
    let params = Params::try_from(&hash)
        .map_err(|e| format!("password_hash has invalid argon2 parameters: {e}"))?;
    let mut problems = Vec::new();
    if params.m_cost() > MAX_HASH_MEMORY_KIB {
        problems.push(format!(
            "memory m={} KiB is above {MAX_HASH_MEMORY_KIB} KiB (64 MiB)",
            params.m_cost()
        ));
    }
    if params.t_cost() > MAX_HASH_ITERATIONS {
        problems.push(format!(
            "iterations t={} is above {MAX_HASH_ITERATIONS}",
            params.t_cost()
        ));
    }
    if params.p_cost() > MAX_HASH_PARALLELISM {
        problems.push(format!(
            "parallelism p={} is above {MAX_HASH_PARALLELISM}",
            params.p_cost()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "password_hash would make every login cost too much ({}): one AUTH could take the relay down; hash the password again with `smtp-oauth-relay hash-password`",
            problems.join(", ")
        ))
    }
}

/// A PHC string with the default parameters, a random salt and a random output: verifying any
/// password against it costs exactly what a real user's check costs and never succeeds. It is
/// made without computing argon2 (building a policy, at start and on every reload, must not
/// spend 19 MiB and a CPU slice on the runtime thread).
pub fn decoy_hash() -> String {
    // A decoy only has to match no password; it needs no secrecy.
    let random: [u8; 48] = crate::vocab::random::unique_bytes();
    let (salt, output) = random.split_at(16);
    let params = Params::default();
    format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        base64_no_pad(salt),
        base64_no_pad(output)
    )
}

fn base64_no_pad(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Hash a password into an argon2id PHC string with a random salt (for `hash-password`).
///
/// # Errors
/// When the system has no randomness or argon2 refuses the input.
pub fn hash_password(password: &Secret) -> Result<String, super::PolicyError> {
    let salt_bytes: [u8; 16] = crate::vocab::random::secret_bytes()
        .map_err(|_| super::PolicyError::BadHash("no randomness available".into()))?;
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| super::PolicyError::BadHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| super::PolicyError::BadHash(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verifies_with_reused_memory_and_agrees_with_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        let phc = hash_password(&Secret::new("s3cret")).unwrap();
        let mut scratch = Argon2Scratch::default();
        for _ in 0..3 {
            assert!(verify_phc(&phc, &Secret::new("s3cret"), &mut scratch));
            assert!(!verify_phc(&phc, &Secret::new("s3creT"), &mut scratch));
        }
        let held = scratch.held_bytes();
        assert!(
            hash_parameters_acceptable(&phc).is_ok(),
            "hash-password's own output"
        );
        assert_eq!(
            held,
            19 * 1024 * 1024,
            "the default m=19456 KiB, allocated once"
        );
        // A hash made elsewhere (argon2i, other parameters) verifies the same way as the crate.
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let other = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(4096, 3, 2, Some(24)).unwrap(),
        )
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
        let parsed = PasswordHash::new(&other).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(verify_phc(&other, &Secret::new("pw"), &mut scratch));
        assert!(!verify_phc(&other, &Secret::new("pW"), &mut scratch));
        assert_eq!(scratch.held_bytes(), held, "a smaller hash reuses the area");
    }

    #[test]
    fn the_decoy_costs_what_a_real_hash_costs_and_matches_nothing() {
        let decoy = decoy_hash();
        let real = hash_password(&Secret::new("pw")).unwrap();
        let params = |phc: &str| Params::try_from(&PasswordHash::new(phc).unwrap()).unwrap();
        let (d, r) = (params(&decoy), params(&real));
        assert_eq!(
            (d.m_cost(), d.t_cost(), d.p_cost()),
            (r.m_cost(), r.t_cost(), r.p_cost())
        );
        assert_eq!(
            PasswordHash::new(&decoy).unwrap().algorithm,
            PasswordHash::new(&real).unwrap().algorithm
        );
        let mut scratch = Argon2Scratch::default();
        assert!(!verify_phc(&decoy, &Secret::new(""), &mut scratch));
        assert_eq!(
            scratch.held_bytes(),
            19 * 1024 * 1024,
            "the full work was done"
        );
        assert_ne!(decoy, decoy_hash());
    }

    #[test]
    fn oversized_or_malformed_hashes_are_refused_without_computing() {
        let mut scratch = Argon2Scratch::default();
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$\
                    c2hvdWxkLW5ldmVyLWJlLWNvbXB1dGVkLWF0LWFsbA";
        assert!(!verify_phc(huge, &Secret::new("x"), &mut scratch));
        assert_eq!(scratch.held_bytes(), 0);
        assert!(hash_parameters_acceptable(huge).is_err());
        assert!(!verify_phc("not a hash", &Secret::new("x"), &mut scratch));
        assert!(hash_parameters_acceptable(&decoy_hash()).is_ok());
    }
}
