//! A snapshot of the spool's disk reserve (free space against `[limits] min_free_space`), as
//! the spool measures it and `/readyz`, `/metrics` and the status page report it.

/// A snapshot of the reserve, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveStatus {
    /// Free space available to the relay (`f_bavail`), `None` before the first sample.
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// The reserve in bytes (0: disabled or not sampled yet).
    pub required_bytes: u64,
    pub reached: bool,
}
