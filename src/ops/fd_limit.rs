//! The process's open-file limit (`RLIMIT_NOFILE`): raised at startup from the soft limit
//! towards the hard one, because every SMTP connection, spool file and upstream session is a
//! file descriptor, and systemd and container runtimes often start services with a soft limit
//! of 1,024.
//!
//! Invariant: only the soft limit changes, never beyond the hard limit nor
//! [`TARGET_OPEN_FILES`]; a failure is logged and changes nothing.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft limit the relay asks for (the value the shipped systemd unit sets).
pub const TARGET_OPEN_FILES: u64 = 65_536;
/// Descriptors the relay needs besides its inbound connections: spool files, upstream
/// sessions, token requests, the listeners, logs.
const HEADROOM: u64 = 256;

/// The soft limit to ask for, given the current soft and hard limits (`None` = unlimited).
pub fn target_soft_limit(current: Option<u64>, maximum: Option<u64>) -> Option<u64> {
    let current = current?;
    let ceiling = maximum.map_or(TARGET_OPEN_FILES, |m| m.min(TARGET_OPEN_FILES));
    (ceiling > current).then_some(ceiling)
}

/// Raise the soft limit (see the module docs) and warn when the result cannot hold
/// `connections` inbound connections plus the relay's own files.
pub fn raise_open_file_limit(connections: u64) {
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if let Some(target) = target_soft_limit(limit.current, limit.maximum) {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => {
                tracing::debug!(from = ?limit.current, to = target, "open-file limit raised");
                soft = Some(target);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot raise the open-file limit");
            }
        }
    }
    let needed = connections.saturating_add(HEADROOM);
    if let Some(soft) = soft
        && soft < needed
    {
        tracing::warn!(
            open_file_limit = soft,
            needed,
            "the open-file limit is lower than max_connections plus the relay's own files need: raise it (systemd LimitNOFILE=65536, docker --ulimit nofile=65536:65536)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one_within_the_target() {
        let cases = [
            (Some(1024), Some(524_288), Some(TARGET_OPEN_FILES)),
            (Some(1024), Some(4096), Some(4096)),
            (Some(1024), None, Some(TARGET_OPEN_FILES)),
            (Some(1024), Some(1024), None),
            (Some(100_000), Some(1_048_576), None),
            (None, None, None),
        ];
        for (current, maximum, expected) in cases {
            assert_eq!(
                target_soft_limit(current, maximum),
                expected,
                "{current:?} {maximum:?}"
            );
        }
    }
}
