//! The TOML schema exactly as users write it (`relay.toml`). Every field is optional here so
//! that validation can report every missing or wrong key at once, by its key path, instead of
//! stopping at the first one; `deny_unknown_fields` catches typos.
//!
//! Key names are a contract with users (see `relay.toml.example`): add keys, never rename.
//!
//! Secret values (`client_secret`, `password`) are [`Secret`]s from the moment they are
//! parsed: `Debug` shows `[redacted]`, and `Serialize` (used only to list the schema's keys)
//! writes `"[redacted]"`, never the value.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serializer};

use crate::vocab::secret::Secret;

/// `Serialize` for an optional secret: its presence, never its value.
fn redacted<S: Serializer>(value: &Option<Secret>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub relay: RawRelay,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub account: Vec<RawAccount>,
    #[serde(default)]
    pub user: Vec<RawUser>,
    #[serde(default)]
    pub network: Vec<RawNetwork>,
    #[serde(default)]
    pub admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub ready_failing_after: Option<Duration>,
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    pub allowed_hosts: Option<Vec<String>>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    pub hostname: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// How many relays send as the same mailboxes (each takes its share of their limits).
    pub instances: Option<usize>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_message_size: Option<ByteSize>,
    pub max_recipients: Option<usize>,
    pub max_line_length: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub command_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub data_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub session_timeout: Option<Duration>,
    pub max_errors: Option<u32>,
    pub max_auth_failures: Option<u32>,
    /// No longer used (it locked out every client sharing an address); warned about.
    pub max_auth_failures_per_address: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub auth_failure_window: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub auth_penalty_max: Option<Duration>,
    pub auth_parallel_per_address: Option<usize>,
    pub auth_parallel_per_user: Option<usize>,
    pub auth_lockout_after: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub auth_cache_ttl: Option<Duration>,
    pub max_header_size: Option<ByteSize>,
    pub min_free_space: Option<super::free_space::RawFreeSpace>,
    pub per_ip_limit_exempt: Option<String>,
    /// Bytes per second.
    pub min_data_rate: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub retry_schedule: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub connection_idle_timeout: Option<Duration>,
    pub bounce: Option<String>,
    pub bounce_to: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub failed_retention: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: Option<String>,
    pub tls: Option<String>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub allow_auth_without_tls: Option<bool>,
    pub acknowledge: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub acknowledge_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub name: Option<String>,
    pub mailbox: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub client_certificate: Option<PathBuf>,
    pub client_assertion_algorithm: Option<String>,
    pub authority: Option<String>,
    pub scope: Option<String>,
    pub smtp_server: Option<String>,
    pub smtp_tls: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub max_messages_per_minute: Option<u32>,
    pub max_recipients_per_message: Option<usize>,
    pub max_recipients_per_day: Option<u32>,
    /// Messages per rolling 24 hours (Gmail: 2,000 per user); 0 = no budget.
    pub max_messages_per_day: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub renew_before: Option<Duration>,
    pub cloud: Option<String>,
    /// The date the client secret expires (`YYYY-MM-DD`, as Entra shows it beside the secret).
    pub client_secret_expires: Option<String>,
    // Routing by sender (issue 14): the addresses this mailbox may send as, and the display
    // name of a `From:` the relay writes.
    pub send_as: Option<Vec<String>>,
    pub sender_name: Option<String>,
    // Microsoft Graph (issue 13): `"smtp"` (default) or `"graph"`, and the Graph base URL.
    pub transport: Option<String>,
    pub graph_endpoint: Option<String>,
    // Google Workspace (issue 16): the provider, and the service account's JSON key (a file,
    // or the name of an environment variable holding the JSON or the file's path).
    pub provider: Option<String>,
    pub service_account_key: Option<PathBuf>,
    pub service_account_key_env: Option<String>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub username: Option<String>,
    pub password_hash: Option<String>,
    #[serde(serialize_with = "redacted")]
    pub password: Option<Secret>,
    pub account: Option<String>,
    pub allowed_senders: Option<Vec<String>>,
    pub sender_rewrite: Option<String>,
    /// Routing by sender (issue 14): several accounts, or `["*"]` for all.
    pub accounts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub cidr: Option<String>,
    pub account: Option<String>,
    pub allowed_senders: Option<Vec<String>>,
    pub sender_rewrite: Option<String>,
    /// Routing by sender (issue 14): several accounts, or `["*"]` for all.
    pub accounts: Option<Vec<String>>,
}
