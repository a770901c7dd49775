//! One AUTH attempt, from the decoded username and password to a verdict: the memory of
//! recently proven credentials first, then the throttle's turn (penalty and parallel caps),
//! then argon2 on the password-check workers, then the bookkeeping (failure counts, cache,
//! log line, metrics).
//!
//! Invariants: a correct password is never refused because of other clients' failures: the
//! worst is a wait for its turn, and a temporary `454 4.7.0` only when that turn would come
//! after the session's deadline or when the admin opted in to `auth_lockout_after`. A failure is
//! recorded before the attempt gives up its turn, so the next attempt in line sees it. The
//! log names the address and the username tried, escaped; a name that is not a configured user
//! (perhaps a password typed at the username prompt) is never written in full. Passwords are
//! never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::conn::InboundContext;
use super::throttle::NotAdmitted;
use crate::policy::Grant;
use crate::smtp::proto::reply::Reply;
use crate::vocab::secret::Secret;

/// How an AUTH attempt ended.
#[derive(Debug)]
pub enum AuthVerdict {
    Granted(Arc<Grant>),
    Denied,
    /// Not checked; the client may try again later.
    TryLater(Reply),
}

/// Longest username shown in the log for a configured user.
const LOGGED_USERNAME_CHARS: usize = 64;

/// Check `username` and `password` from `peer`, waiting no later than `deadline`.
pub async fn authenticate(
    ctx: &InboundContext,
    peer: SocketAddr,
    username: &str,
    password: Secret,
    deadline: Instant,
) -> AuthVerdict {
    let policy = Arc::clone(&ctx.policy);
    if let Some(grant) = policy.credential_cache().lookup(username, &password) {
        ctx.metrics.auth_successes.inc();
        ctx.metrics.auth_cache_hits.inc();
        tracing::info!(user = %logged_username(username, true), "client authenticated (credential proven recently)");
        return AuthVerdict::Granted(grant);
    }
    let admitted = match ctx.auth_throttle.admit(peer.ip(), username, deadline).await {
        Ok(admitted) => admitted,
        Err(not_admitted) => return not_checked(ctx, peer, username, not_admitted),
    };
    if !admitted.waited.is_zero() {
        ctx.metrics.auth_delayed.inc();
        tracing::debug!(
            waited_ms = admitted.waited.as_millis(),
            "AUTH waited for its turn"
        );
    }
    let result = ctx
        .password_checker
        .check(Arc::clone(&policy), username, password.clone())
        .await;
    if let Some(grant) = result.grant {
        drop(admitted);
        policy
            .credential_cache()
            .remember(username, &password, &grant);
        ctx.metrics.auth_successes.inc();
        tracing::info!(user = %logged_username(username, true), "client authenticated");
        return AuthVerdict::Granted(grant);
    }
    let counts = ctx.auth_throttle.record_failure(peer.ip(), username);
    drop(admitted);
    ctx.metrics.auth_failures.inc();
    tracing::warn!(
        client = %peer.ip(),
        user = %logged_username(username, result.known_user),
        failures_from_address = counts.from_address,
        failures_for_user = counts.for_user,
        next_attempt_waits_s = counts.next_penalty.as_secs_f32(),
        "authentication failed"
    );
    AuthVerdict::Denied
}

fn not_checked(
    ctx: &InboundContext,
    peer: SocketAddr,
    username: &str,
    not_admitted: NotAdmitted,
) -> AuthVerdict {
    let known = ctx.policy.is_user(username);
    let hostname = &ctx.settings.hostname;
    let (reason, text) = match not_admitted {
        NotAdmitted::LockedOut { retry_in } => (
            "auth locked out",
            format!(
                "{hostname} Too many failed logins for this user from your address; try again in {} minute(s)",
                minutes(retry_in)
            ),
        ),
        NotAdmitted::DeadlinePassed => (
            "auth wait too long",
            format!(
                "{hostname} Too many recent failed logins from your address or for this user; try again later"
            ),
        ),
    };
    tracing::warn!(
        client = %peer.ip(),
        user = %logged_username(username, known),
        reason,
        "AUTH not checked"
    );
    ctx.metrics
        .connections_refused
        .get_or_create(&crate::metrics::Metrics::reason(reason))
        .inc();
    AuthVerdict::TryLater(Reply::new(454, "4.7.0", text))
}

fn minutes(wait: Duration) -> u64 {
    wait.as_secs().div_ceil(60).max(1)
}

/// A username as the log shows it: escaped; a configured user's name in full (up to 64
/// characters), anything else only its first few characters and its length, so a password
/// typed at the username prompt never reaches the log whole.
pub fn logged_username(username: &str, known_user: bool) -> String {
    let length = username.chars().count();
    if known_user {
        let shown: String = username.chars().take(LOGGED_USERNAME_CHARS).collect();
        let cut = if length > LOGGED_USERNAME_CHARS {
            "…"
        } else {
            ""
        };
        return format!("{}{cut}", shown.escape_debug());
    }
    let shown: String = username.chars().take((length / 2).min(3)).collect();
    format!(
        "{}… (not a configured user, {length} characters)",
        shown.escape_debug()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_in_the_log() {
        let table = [
            ("printer", true, "printer"),
            ("pr\"in\nter", true, "pr\\\"in\\nter"),
            (
                "Hunter2!Secret",
                false,
                "Hun… (not a configured user, 14 characters)",
            ),
            ("ab", false, "a… (not a configured user, 2 characters)"),
            ("x", false, "… (not a configured user, 1 characters)"),
            ("", false, "… (not a configured user, 0 characters)"),
            (
                "é\u{1b}[31m",
                false,
                "é\\u{1b}[… (not a configured user, 6 characters)",
            ),
        ];
        for (name, known, expected) in table {
            assert_eq!(logged_username(name, known), expected, "{name:?}");
        }
        let long = "u".repeat(100);
        assert_eq!(logged_username(&long, true), "u".repeat(64) + "…");
    }
}
