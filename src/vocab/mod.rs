//! The vocabulary every part of the relay speaks: addresses, secrets, queue ids and envelopes,
//! the classes and stages of a delivery outcome, the inbound TLS mode, and the small helpers
//! that were once written in several places (hex, random bytes, one-line excerpts).
//!
//! Invariant: nothing under `vocab` imports any other module of the crate (checked by
//! `tests/import_rules.rs`), so every other module may import it without creating a cycle.
//! It holds types and pure functions only: no I/O besides the system random generator.

pub mod address;
pub mod authority;
pub mod enhanced_status;
pub mod envelope;
pub mod hex;
pub mod provider;
pub mod random;
pub mod reserve_status;
pub mod secret;
pub mod text;
pub mod tls_mode;
pub mod verdict;
