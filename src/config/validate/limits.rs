//! `[limits]` and `[queue]`: every limit with its default, and the retry schedule and bounce
//! policy.
//!
//! Invariants: a key left out takes its default from `Limits::default()` or
//! `QueueSettings::default()`; every limit is checked against the range where the relay still
//! works (and Exchange still accepts: 150 MB per message); a bad value is reported by its key
//! path and replaced by the default, so the other checks go on.

use std::time::Duration;

use super::Checker;
use crate::config::free_space::MinFreeSpace;
use crate::config::raw::RawConfig;
use crate::config::{BouncePolicy, Limits, PerIpLimitExempt, QueueSettings};
use crate::vocab::address::Address;

pub(super) fn limits(checker: &mut Checker<'_>, raw: &RawConfig) -> Limits {
    let defaults = Limits::default();
    let l = &raw.limits;
    let limits = Limits {
        max_message_size: l
            .max_message_size
            .map_or(defaults.max_message_size, |s| s.as_u64()),
        max_recipients: l.max_recipients.unwrap_or(defaults.max_recipients),
        max_line_length: l.max_line_length.unwrap_or(defaults.max_line_length),
        max_connections: l.max_connections.unwrap_or(defaults.max_connections),
        max_connections_per_ip: l
            .max_connections_per_ip
            .unwrap_or(defaults.max_connections_per_ip),
        command_timeout: l.command_timeout.unwrap_or(defaults.command_timeout),
        data_timeout: l.data_timeout.unwrap_or(defaults.data_timeout),
        session_timeout: l.session_timeout.unwrap_or(defaults.session_timeout),
        max_errors: l.max_errors.unwrap_or(defaults.max_errors),
        max_auth_failures: l
            .max_auth_failures
            .unwrap_or(defaults.max_auth_failures)
            .max(1),
        auth_failure_window: l
            .auth_failure_window
            .unwrap_or(defaults.auth_failure_window),
        auth_penalty_max: l.auth_penalty_max.unwrap_or(defaults.auth_penalty_max),
        auth_parallel_per_address: l
            .auth_parallel_per_address
            .unwrap_or(defaults.auth_parallel_per_address),
        auth_parallel_per_user: l
            .auth_parallel_per_user
            .unwrap_or(defaults.auth_parallel_per_user),
        auth_lockout_after: l.auth_lockout_after.unwrap_or(defaults.auth_lockout_after),
        auth_cache_ttl: l.auth_cache_ttl.unwrap_or(defaults.auth_cache_ttl),
        max_header_size: l.max_header_size.map_or(defaults.max_header_size, |s| {
            usize::try_from(s.as_u64()).unwrap_or(usize::MAX)
        }),
        min_free_space: match l.min_free_space.as_ref().map(MinFreeSpace::from_raw) {
            None => defaults.min_free_space,
            Some(Ok(reserve)) => reserve,
            Some(Err(message)) => {
                checker.error("limits.min_free_space", message);
                defaults.min_free_space
            }
        },
        per_ip_limit_exempt: match l.per_ip_limit_exempt.as_deref() {
            None => defaults.per_ip_limit_exempt,
            Some(value) => PerIpLimitExempt::parse(value).unwrap_or_else(|| {
                checker.error(
                    "limits.per_ip_limit_exempt",
                    "must be \"loopback-and-networks\", \"networks\" or \"none\"",
                );
                defaults.per_ip_limit_exempt
            }),
        },
        min_data_rate: l
            .min_data_rate
            .map_or(defaults.min_data_rate, |s| s.as_u64()),
    };
    if limits.max_message_size < 1024 {
        checker.error("limits.max_message_size", "must be at least 1 KiB");
    }
    if limits.max_message_size > 150 * 1024 * 1024 {
        checker.error(
            "limits.max_message_size",
            "Exchange Online refuses messages over 150 MB; use at most \"150 MiB\"",
        );
    }
    if limits.max_recipients == 0 {
        checker.error("limits.max_recipients", "must be at least 1");
    }
    if !(512..=65536).contains(&limits.max_line_length) {
        checker.error(
            "limits.max_line_length",
            "must be between 512 and 65536 (RFC 5321 requires 512)",
        );
    }
    if l.max_auth_failures_per_address.is_some() {
        checker.warnings.push(
            "limits.max_auth_failures_per_address is no longer used: an address is never locked \
             out (it refused every client sharing it); failed logins are slowed down instead \
             (auth_penalty_max), and auth_lockout_after opts in to a lockout per address and \
             username"
                .to_string(),
        );
    }
    if limits.auth_parallel_per_address == 0 || limits.auth_parallel_per_user == 0 {
        checker.error(
            "limits.auth_parallel_per_address",
            "auth_parallel_per_address and auth_parallel_per_user must be at least 1",
        );
    }
    if limits.auth_penalty_max > Duration::from_secs(60) {
        checker.error(
            "limits.auth_penalty_max",
            "must be at most 60s (a rightful client waits up to this long after someone else's failures)",
        );
    }
    if limits.max_connections == 0 || limits.max_connections_per_ip == 0 {
        checker.error(
            "limits.max_connections",
            "connection limits must be at least 1",
        );
    }
    for (key, value) in [
        ("limits.command_timeout", limits.command_timeout),
        ("limits.data_timeout", limits.data_timeout),
        ("limits.session_timeout", limits.session_timeout),
    ] {
        if value < Duration::from_secs(1) {
            checker.error(key, "must be at least 1s");
        }
    }
    if limits.max_header_size < 1024 {
        checker.error("limits.max_header_size", "must be at least 1 KiB");
    }
    limits
}

pub(super) fn queue(checker: &mut Checker<'_>, raw: &RawConfig) -> QueueSettings {
    let defaults = QueueSettings::default();
    let mut retry_schedule = defaults.retry_schedule.clone();
    if let Some(steps) = &raw.queue.retry_schedule {
        let mut parsed = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            match humantime::parse_duration(step) {
                Ok(duration) if duration >= Duration::from_secs(1) => parsed.push(duration),
                Ok(_) => checker.error(
                    format!("queue.retry_schedule[{index}]"),
                    "must be at least 1s",
                ),
                Err(e) => checker.error(
                    format!("queue.retry_schedule[{index}]"),
                    format!("\"{step}\" is not a duration like \"5m\": {e}"),
                ),
            }
        }
        if steps.is_empty() {
            checker.error(
                "queue.retry_schedule",
                "needs at least one step, e.g. [\"1m\", \"5m\", \"15m\"]",
            );
        }
        retry_schedule = parsed;
    }
    let bounce = match (raw.queue.bounce.as_deref(), &raw.queue.bounce_to) {
        (None | Some("sender"), None) => BouncePolicy::Sender,
        (None | Some("sender"), Some(to)) => match Address::parse(to) {
            Ok(address) => BouncePolicy::To(address.to_string()),
            Err(e) => {
                checker.error(
                    "queue.bounce_to",
                    format!("\"{to}\" is not an address: {e}"),
                );
                BouncePolicy::Sender
            }
        },
        (Some("none"), None) => BouncePolicy::None,
        (Some("none"), Some(_)) => {
            checker.error("queue.bounce_to", "conflicts with bounce = \"none\"");
            BouncePolicy::None
        }
        (Some(other), _) => {
            checker.error("queue.bounce", format!("\"{other}\" must be \"sender\" or \"none\" (set bounce_to to send them to an administrator)"));
            BouncePolicy::Sender
        }
    };
    QueueSettings {
        retry_schedule,
        max_age: raw.queue.max_age.unwrap_or(defaults.max_age),
        connection_idle_timeout: raw
            .queue
            .connection_idle_timeout
            .unwrap_or(defaults.connection_idle_timeout),
        bounce,
        failed_retention: raw
            .queue
            .failed_retention
            .unwrap_or(defaults.failed_retention),
    }
}
