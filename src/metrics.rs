//! Prometheus metrics (text exposition format), with prometheus-client.
//!
//! Invariants: labels are bounded sets (account names from the config, listener addresses,
//! delivery classes, three-digit reply codes, fixed refusal reasons), never message data;
//! nothing here ever sees a secret. Queue depth and age, and the spool's free space, are read
//! at scrape time, so they cannot drift.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::vocab::reserve_status::ReserveStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub account: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    pub account: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    pub account: String,
    /// `secret` or `certificate`.
    pub kind: String,
}

/// Every metric the relay exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub accepted: Family<AccountLabel, Counter>,
    pub accepted_bytes: Family<AccountLabel, Counter>,
    pub delivered: Family<AccountLabel, Counter>,
    pub delivered_recipients: Family<AccountLabel, Counter>,
    pub delivered_bytes: Family<AccountLabel, Counter>,
    pub deferred: Family<ClassLabels, Counter>,
    pub failed: Family<ClassLabels, Counter>,
    pub upstream_replies: Family<ReplyLabels, Counter>,
    pub token_requests: Family<AccountLabel, Counter>,
    pub token_failures: Family<AccountLabel, Counter>,
    pub queue_depth: Family<AccountLabel, Gauge>,
    pub queue_oldest_age: Family<AccountLabel, Gauge>,
    pub connections: Family<ListenerLabel, Counter>,
    pub connections_active: Family<ListenerLabel, Gauge>,
    pub connections_refused: Family<ReasonLabel, Counter>,
    /// Sessions closed to make room: "idle under pressure" (the longest-idle session gave
    /// its slot to a new client) and "busy timeout" (an idle session got the short timeout
    /// of a busy relay).
    pub connections_evicted: Family<ReasonLabel, Counter>,
    pub auth_failures: Counter,
    pub auth_successes: Counter,
    /// AUTH attempts that waited for their turn (recent failures from the address or for the
    /// username, or the parallel cap).
    pub auth_delayed: Counter,
    /// AUTH attempts answered from the memory of recently proven credentials.
    pub auth_cache_hits: Counter,
    pub messages_refused: Family<ReasonLabel, Counter>,
    pub spool_free_bytes: Gauge,
    pub spool_reserve_bytes: Gauge,
    pub spool_reserve_reached: Gauge,
    pub up: Gauge,
    /// Each account's credential expiry (unix seconds), for accounts whose credential has a
    /// date: set at scrape time from the configuration.
    pub credential_expiry: Family<CredentialLabels, Gauge>,
    /// Since when (unix seconds) each account has been failing as a whole, 0 when it is not:
    /// set at scrape time.
    pub account_failing_since: Family<AccountLabel, Gauge>,
    /// The labels [`Metrics::record_accounts`] set last, so it removes only stale ones.
    recorded_accounts: std::sync::Mutex<(Vec<AccountLabel>, Vec<CredentialLabels>)>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("smtp_oauth_relay");
        let metrics = Metrics {
            accepted: Family::default(),
            accepted_bytes: Family::default(),
            delivered: Family::default(),
            delivered_recipients: Family::default(),
            delivered_bytes: Family::default(),
            deferred: Family::default(),
            failed: Family::default(),
            upstream_replies: Family::default(),
            token_requests: Family::default(),
            token_failures: Family::default(),
            queue_depth: Family::default(),
            queue_oldest_age: Family::default(),
            connections: Family::default(),
            connections_active: Family::default(),
            connections_refused: Family::default(),
            connections_evicted: Family::default(),
            auth_failures: Counter::default(),
            auth_successes: Counter::default(),
            auth_delayed: Counter::default(),
            auth_cache_hits: Counter::default(),
            messages_refused: Family::default(),
            spool_free_bytes: Gauge::default(),
            spool_reserve_bytes: Gauge::default(),
            spool_reserve_reached: Gauge::default(),
            up: Gauge::default(),
            credential_expiry: Family::default(),
            account_failing_since: Family::default(),
            recorded_accounts: std::sync::Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages_accepted",
            "Messages accepted from clients (stored in the spool)",
            metrics.accepted.clone(),
        );
        registry.register(
            "accepted_bytes",
            "Bytes of messages accepted from clients",
            metrics.accepted_bytes.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages delivered to Exchange (for at least one recipient)",
            metrics.delivered.clone(),
        );
        registry.register(
            "recipients_delivered",
            "Recipients Exchange accepted",
            metrics.delivered_recipients.clone(),
        );
        registry.register(
            "delivered_bytes",
            "Bytes of messages delivered to Exchange",
            metrics.delivered_bytes.clone(),
        );
        registry.register(
            "messages_deferred",
            "Delivery attempts deferred, by class (transient, configuration)",
            metrics.deferred.clone(),
        );
        registry.register(
            "recipients_failed",
            "Recipients that failed for good, by class",
            metrics.failed.clone(),
        );
        registry.register(
            "upstream_replies",
            "Replies from Exchange to message transactions and logins, by code",
            metrics.upstream_replies.clone(),
        );
        registry.register(
            "token_requests",
            "Token requests sent to the identity platform",
            metrics.token_requests.clone(),
        );
        registry.register(
            "token_failures",
            "Token requests that failed",
            metrics.token_failures.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages waiting or being delivered",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest queued message",
            metrics.queue_oldest_age.clone(),
        );
        registry.register(
            "inbound_connections",
            "Client connections accepted",
            metrics.connections.clone(),
        );
        registry.register(
            "inbound_connections_active",
            "Client connections open now",
            metrics.connections_active.clone(),
        );
        registry.register(
            "inbound_connections_refused",
            "Client connections refused, by reason",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "inbound_connections_evicted",
            "Inbound sessions closed to make room, by reason (idle under pressure, busy timeout)",
            metrics.connections_evicted.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed AUTH attempts from clients",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "auth_successes",
            "Successful AUTH attempts from clients",
            metrics.auth_successes.clone(),
        );
        registry.register(
            "auth_delayed",
            "AUTH attempts that waited for their turn after recent failures from their address or for their username",
            metrics.auth_delayed.clone(),
        );
        registry.register(
            "auth_cache_hits",
            "AUTH attempts accepted from the memory of recently proven credentials (no password hash computed)",
            metrics.auth_cache_hits.clone(),
        );
        registry.register(
            "messages_refused",
            "Transactions refused by policy or at DATA, by reason: not authenticated, sender not allowed, From header not allowed, too large, storage",
            metrics.messages_refused.clone(),
        );
        registry.register(
            "spool_free_bytes",
            "Free space on the spool's filesystem available to the relay (0 until first read)",
            metrics.spool_free_bytes.clone(),
        );
        registry.register(
            "spool_reserve_bytes",
            "The disk reserve ([limits] min_free_space) in bytes; 0 when disabled",
            metrics.spool_reserve_bytes.clone(),
        );
        registry.register(
            "spool_reserve_reached",
            "1 while the spool's free space is below the reserve and new mail gets 452 4.3.1",
            metrics.spool_reserve_reached.clone(),
        );
        registry.register("up", "1 while the relay runs", metrics.up.clone());
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When each account's credential expires (unix seconds), by kind (secret: client_secret_expires; certificate: its notAfter)",
            metrics.credential_expiry.clone(),
        );
        registry.register(
            "account_failing_since_timestamp_seconds",
            "Since when each account has been failing as a whole (token, connection, AUTH; unix seconds), 0 while it is not",
            metrics.account_failing_since.clone(),
        );
        metrics.up.set(1);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Set the spool gauges from the disk reserve's state.
    pub fn record_spool_reserve(&self, status: &ReserveStatus) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.spool_free_bytes
            .set(gauge(status.free_bytes.unwrap_or(0)));
        self.spool_reserve_bytes.set(gauge(status.required_bytes));
        self.spool_reserve_reached.set(i64::from(status.reached));
    }

    /// Replace the per-account health gauges with `accounts`: (name, failing since, the
    /// credential's kind and expiry). Accounts no longer configured disappear; a concurrent
    /// scrape never misses a configured account (new values are set before stale labels go).
    pub fn record_accounts<'a>(
        &self,
        accounts: impl IntoIterator<Item = (&'a str, Option<u64>, Option<(&'a str, i64)>)>,
    ) {
        let mut recorded = self
            .recorded_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (mut failing, mut credentials) = (Vec::new(), Vec::new());
        for (account, failing_since, credential) in accounts {
            let label = Metrics::account(account);
            self.account_failing_since
                .get_or_create(&label)
                .set(failing_since.map_or(0, |since| i64::try_from(since).unwrap_or(i64::MAX)));
            failing.push(label);
            if let Some((kind, expires)) = credential {
                let label = CredentialLabels {
                    account: account.to_string(),
                    kind: kind.to_string(),
                };
                self.credential_expiry.get_or_create(&label).set(expires);
                credentials.push(label);
            }
        }
        for stale in recorded.0.iter().filter(|l| !failing.contains(l)) {
            self.account_failing_since.remove(stale);
        }
        for stale in recorded.1.iter().filter(|l| !credentials.contains(l)) {
            self.credential_expiry.remove(stale);
        }
        *recorded = (failing, credentials);
    }

    pub fn account(account: &str) -> AccountLabel {
        AccountLabel {
            account: account.to_string(),
        }
    }

    pub fn class(account: &str, class: &str) -> ClassLabels {
        ClassLabels {
            account: account.to_string(),
            class: class.to_string(),
        }
    }

    pub fn reply(account: &str, code: u16) -> ReplyLabels {
        ReplyLabels {
            account: account.to_string(),
            code: code.to_string(),
        }
    }

    pub fn listener(listener: &str) -> ListenerLabel {
        ListenerLabel {
            listener: listener.to_string(),
        }
    }

    /// Eviction reason: the longest-idle session gave its slot to a new client.
    pub const EVICTED_IDLE_UNDER_PRESSURE: &'static str = "idle under pressure";
    /// Eviction reason: an idle session reached the short timeout of a busy relay.
    pub const EVICTED_BUSY_TIMEOUT: &'static str = "busy timeout";

    pub fn reason(reason: &str) -> ReasonLabel {
        ReasonLabel {
            reason: reason.to_string(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let metrics = Metrics::new();
        metrics
            .accepted
            .get_or_create(&Metrics::account("m365"))
            .inc();
        metrics
            .upstream_replies
            .get_or_create(&Metrics::reply("m365", 250))
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains("smtp_oauth_relay_messages_accepted_total{account=\"m365\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "smtp_oauth_relay_upstream_replies_total{account=\"m365\",code=\"250\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("smtp_oauth_relay_up 1"), "{text}");
        metrics.record_spool_reserve(&ReserveStatus {
            free_bytes: Some(3 << 20),
            total_bytes: Some(8 << 20),
            required_bytes: 4 << 20,
            reached: true,
        });
        let text = metrics.encode();
        assert!(
            text.contains("smtp_oauth_relay_spool_free_bytes 3145728"),
            "{text}"
        );
        assert!(
            text.contains("smtp_oauth_relay_spool_reserve_bytes 4194304"),
            "{text}"
        );
        assert!(
            text.contains("smtp_oauth_relay_spool_reserve_reached 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn account_health_gauges_follow_the_accounts_given() {
        let metrics = Metrics::new();
        metrics.record_accounts([
            ("a", Some(1_700_000_000), Some(("secret", 1_814_313_600))),
            ("b", None, None),
        ]);
        let text = metrics.encode();
        for expected in [
            "smtp_oauth_relay_account_failing_since_timestamp_seconds{account=\"a\"} 1700000000",
            "smtp_oauth_relay_account_failing_since_timestamp_seconds{account=\"b\"} 0",
            "smtp_oauth_relay_credential_expiry_timestamp_seconds{account=\"a\",kind=\"secret\"} 1814313600",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        assert!(!text.contains("kind=\"certificate\""), "{text}");
        metrics.record_accounts([("b", None, Some(("certificate", 5)))]);
        let text = metrics.encode();
        assert!(
            !text.contains("account=\"a\""),
            "a removed account disappears: {text}"
        );
        assert!(
            text.contains("smtp_oauth_relay_credential_expiry_timestamp_seconds{account=\"b\",kind=\"certificate\"} 5"),
            "{text}"
        );
    }
}
