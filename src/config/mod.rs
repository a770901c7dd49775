//! Configuration: the `relay.toml` schema ([`raw`]), its validation ([`validate`]) and the
//! checked, typed settings the rest of the relay runs on ([`Config`]).
//!
//! Invariants: a [`Config`] only exists when every key passed validation; all errors are
//! reported together, each with its key path (`account[0].tenant_id: …`); secrets are read
//! from the file or environment named in the config at load time and held as [`Secret`]s;
//! relative paths are resolved against the config file's directory; every file the config
//! names (and the config itself) is read through [`crate::named_file`], bounded in size and only if it is
//! a regular file. Knows nothing of sockets.

pub mod cloud;
pub mod free_space;
pub mod instances;
pub mod raw;
pub mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::oauth::app::{ClientApp, ClientCredential};
use crate::policy::Policy;
use crate::vocab::address::Address;
use crate::vocab::secret::Secret;
use crate::vocab::tls_mode::TlsMode;

pub use cloud::{
    CLOUDS, CloudPreset, DEFAULT_AUTHORITY, DEFAULT_GRAPH_ENDPOINT, DEFAULT_SCOPE,
    DEFAULT_SMTP_SERVER,
};
pub use validate::ConfigError;

/// Default spool location.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/smtp-oauth-relay";

/// The whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub relay: RelaySettings,
    pub limits: Limits,
    pub queue: QueueSettings,
    pub listeners: Vec<ListenerSettings>,
    pub accounts: Vec<AccountSettings>,
    pub policy: Arc<Policy>,
    pub admin: AdminSettings,
    /// Things that work but deserve the admin's attention (logged at startup, shown by `check`).
    pub warnings: Vec<String>,
}

/// `[relay]`.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub hostname: String,
    pub state_dir: PathBuf,
    /// `instances`: how many relays send as the same mailboxes (1..=[`instances::MAX_INSTANCES`]);
    /// every account's limits below are already this instance's share.
    pub instances: usize,
}

/// `[admin]`: the HTTP endpoint for health, readiness, metrics and queue management.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `None` when disabled (`address = "off"`).
    pub address: Option<SocketAddr>,
    /// An account failing as a whole for longer than this makes `/readyz` answer 503.
    pub ready_failing_after: Duration,
    /// Connections served at once; past it the longest-waiting connection that has not sent
    /// its request is closed for the new one (`max_connections`).
    pub max_connections: usize,
    /// Time a connection has to send its request headers; a connection lives at most
    /// [`ADMIN_CONNECTION_LIFETIME_FACTOR`] times as long in all (`request_timeout`).
    pub request_timeout: Duration,
    /// Names (and `name:port`s) a request's `Host` may give besides the endpoint's own address
    /// (`allowed_hosts`).
    pub allowed_hosts: Vec<crate::vocab::authority::Authority>,
    /// The bearer token from `token_file`: when set, the queue API requires it.
    pub token: Option<Secret>,
}

/// Default `[admin] max_connections`.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// Default `[admin] request_timeout`.
pub const DEFAULT_ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection to the admin endpoint is closed after this many `request_timeout`s in all
/// (headers, handling and writing the answer).
pub const ADMIN_CONNECTION_LIFETIME_FACTOR: u32 = 6;

/// Default admin endpoint address.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:8025";

/// `[limits]`: every inbound bound, each with a safe default.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line_length: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub max_errors: u32,
    pub max_auth_failures: u32,
    /// How long a failed AUTH counts toward the penalties of its address and username.
    pub auth_failure_window: Duration,
    /// The longest an AUTH attempt waits because of recent failures (0 disables the penalty).
    pub auth_penalty_max: Duration,
    /// AUTH attempts in progress at once from one address (IPv6: one /64).
    pub auth_parallel_per_address: usize,
    /// AUTH attempts in progress at once for one username, from anywhere.
    pub auth_parallel_per_user: usize,
    /// Opt-in: failures of one username from one address before that pair is refused for the
    /// rest of the window; 0 (default) never refuses.
    pub auth_lockout_after: u32,
    /// How long a credential proven correct is remembered (no argon2, no wait); 0 disables.
    pub auth_cache_ttl: Duration,
    pub max_header_size: usize,
    /// The disk reserve on the spool's filesystem: below it new mail gets `452 4.3.1`.
    pub min_free_space: free_space::MinFreeSpace,
    /// Which clients `max_connections_per_ip` does not count, and which may use the share of
    /// `max_connections` kept for favoured clients.
    pub per_ip_limit_exempt: PerIpLimitExempt,
    /// Minimum average DATA rate in bytes per second, enforced once a message has been
    /// arriving for `data_timeout`; 0 disables.
    pub min_data_rate: u64,
}

/// `[limits] per_ip_limit_exempt`: the clients exempt from the per-address connection limit
/// (all apps on one host share 127.0.0.1; printers behind a NAT share an address). The same
/// clients, and any authenticated session, may use the connection slots kept in reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerIpLimitExempt {
    /// `"loopback-and-networks"` (default): loopback addresses and the `[[network]]` ranges.
    LoopbackAndNetworks,
    /// `"networks"`: only the `[[network]]` ranges.
    Networks,
    /// `"none"`: every address is counted.
    None,
}

impl PerIpLimitExempt {
    /// The value as written in `relay.toml`.
    pub fn parse(value: &str) -> Option<PerIpLimitExempt> {
        match value {
            "loopback-and-networks" => Some(PerIpLimitExempt::LoopbackAndNetworks),
            "networks" => Some(PerIpLimitExempt::Networks),
            "none" => Some(PerIpLimitExempt::None),
            _ => None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 500,
            max_line_length: 4096,
            max_connections: 500,
            max_connections_per_ip: 20,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(3 * 60),
            session_timeout: Duration::from_secs(60 * 60),
            max_errors: 20,
            max_auth_failures: 3,
            auth_failure_window: Duration::from_secs(10 * 60),
            auth_penalty_max: Duration::from_secs(10),
            auth_parallel_per_address: 2,
            auth_parallel_per_user: 2,
            auth_lockout_after: 0,
            auth_cache_ttl: Duration::from_secs(60 * 60),
            max_header_size: 256 * 1024,
            min_free_space: free_space::MinFreeSpace::Default,
            per_ip_limit_exempt: PerIpLimitExempt::LoopbackAndNetworks,
            min_data_rate: 1024,
        }
    }
}

/// `[queue]`: when to retry and when to give up.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Delays between attempts; the last one repeats.
    pub retry_schedule: Vec<Duration>,
    pub max_age: Duration,
    /// How long an upstream session may stay open with nothing to send.
    pub connection_idle_timeout: Duration,
    /// Where delivery status notifications go.
    pub bounce: BouncePolicy,
    /// How long `failed/` entries are kept.
    pub failed_retention: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            retry_schedule: [60, 5 * 60, 15 * 60, 30 * 60, 60 * 60]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_age: Duration::from_secs(5 * 24 * 3600),
            connection_idle_timeout: Duration::from_secs(30),
            bounce: BouncePolicy::Sender,
            failed_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Where delivery status notifications go (`[queue] bounce`, `bounce_to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BouncePolicy {
    /// To the envelope sender of the failed message.
    Sender,
    /// To this address instead (an administrator's mailbox).
    To(String),
    /// Nowhere: failures are only logged and kept in `failed/`.
    None,
}

/// One `[[listener]]`.
#[derive(Clone)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub tls: TlsMode,
    /// Loaded certificate chain and key, present for `starttls` and `implicit`.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub allow_auth_without_tls: bool,
    /// `Some(timeout)` when the reply to DATA waits (up to `timeout`) for Exchange's verdict
    /// (`acknowledge = "delivered"`); `None` for the default "queued".
    pub acknowledge_delivered: Option<Duration>,
}

impl fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("address", &self.address)
            .field("tls", &self.tls)
            .field("certificate", &self.certificate)
            .field("allow_auth_without_tls", &self.allow_auth_without_tls)
            .field("acknowledge_delivered", &self.acknowledge_delivered)
            .finish()
    }
}

/// How the relay reaches the upstream SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    /// Plain TCP, then STARTTLS (required; the token is never sent in clear).
    Starttls,
    /// TLS from the first byte.
    Implicit,
    /// No TLS at all: only for tests against a local emulator.
    None,
}

/// How an account's mail leaves the relay (`transport` of `[[account]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// SMTP submission with XOAUTH2 (`smtp_server`), the default.
    Smtp,
    /// Microsoft Graph `sendMail` over HTTPS (`graph_endpoint`).
    Graph,
}

/// Concurrent Graph requests allowed per mailbox (graph.md §4): a Graph account never runs
/// more workers than this, whatever `max_connections` says.
pub const GRAPH_MAX_CONCURRENT_REQUESTS: usize = 4;

/// One `[[account]]`: a mailbox and the Entra app (or Google service account) that may send
/// as it.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub name: String,
    pub mailbox: Address,
    /// `provider`: Microsoft (Entra, Exchange Online) or Google (service account, Gmail).
    pub provider: crate::vocab::provider::Provider,
    pub tenant_id: String,
    pub client_id: String,
    pub credential: ClientCredential,
    /// Without a trailing slash.
    pub authority: String,
    pub scope: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_tls: UpstreamTls,
    /// `transport`: SMTP (default) or Microsoft Graph.
    pub transport: TransportKind,
    /// `graph_endpoint`: the Graph base URL, without a trailing slash (used with
    /// [`TransportKind::Graph`]).
    pub graph_endpoint: String,
    /// Extra trusted roots from `ca_file` (TLS-inspecting proxies, tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// This instance's share of the mailbox's sessions (`mailbox_budget` / `[relay] instances`);
    /// for Graph, of its concurrent requests (at most [`GRAPH_MAX_CONCURRENT_REQUESTS`]).
    pub max_connections: usize,
    /// This instance's share; 0 means no pacing.
    pub max_messages_per_minute: u32,
    /// Recipients per upstream transaction; larger envelopes are split.
    pub max_recipients_per_message: usize,
    /// This instance's share of the rolling 24-hour recipient budget; 0 means no budget.
    pub max_recipients_per_day: u32,
    /// This instance's share of the rolling 24-hour message budget; 0 means no budget.
    pub max_messages_per_day: u32,
    /// Renew a cached token this long before it expires.
    pub renew_before: Duration,
    /// The per-mailbox limits as configured, for all instances together; the three limits
    /// above are this instance's share of them (`config::validate::instances`).
    pub mailbox_budget: instances::MailboxBudget,
    /// `client_secret_expires`: when the client secret stops working (its first second, UTC).
    pub client_secret_expires: Option<std::time::SystemTime>,
    /// `send_as`: the addresses (exact or `*@domain`) the mailbox has SendAs on.
    pub send_as: Vec<crate::policy::SenderPattern>,
    /// `sender_name`: the display name of a `From:` the relay writes for this account.
    pub sender_name: Option<String>,
}

impl AccountSettings {
    /// `{authority}/{tenant}/oauth2/v2.0/token`, or a Google key file's `token_uri`.
    pub fn token_endpoint(&self) -> String {
        match &self.credential {
            ClientCredential::ServiceAccount { key, .. } => key.token_uri.clone(),
            _ => format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant_id),
        }
    }

    /// The app registration this account's tokens are requested for.
    pub fn client_app(&self) -> ClientApp {
        ClientApp {
            account: self.name.clone(),
            token_endpoint: self.token_endpoint(),
            client_id: self.client_id.clone(),
            tenant_id: self.tenant_id.clone(),
            scope: self.scope.clone(),
            credential: self.credential.clone(),
            renew_before: self.renew_before,
            extra_roots: self.extra_roots.clone(),
        }
    }
}

impl AccountSettings {
    /// The account's credential with its expiry date: the certificate's own, or the secret's
    /// `client_secret_expires`; `None` for a secret without a date.
    pub fn credential_expiry(&self) -> Option<crate::oauth::expiry::CredentialExpiry> {
        crate::oauth::expiry::CredentialExpiry::of(&self.credential, self.client_secret_expires)
    }
}

/// Every problem found in a config, in order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} error(s):", self.0.len())?;
        for error in &self.0 {
            writeln!(f, "  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Read, parse and validate a config file (a regular file of at most
    /// [`crate::named_file::CONFIG_FILE_LIMIT`] bytes). Blocking: on the runtime, use
    /// [`Config::load_off_runtime`].
    ///
    /// # Errors
    /// Every problem found, each with its key path.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = crate::named_file::read_limited_text(path, crate::named_file::CONFIG_FILE_LIMIT)
            .map_err(|e| ConfigErrors(vec![ConfigError::new("", e)]))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut config = Config::from_toml(&text, &base)?;
        config
            .warnings
            .extend(world_readable_secrets_warning(path, &text));
        Ok(config)
    }

    /// [`Config::load`] on tokio's blocking pool, so that reading the config and the files it
    /// names (e.g. on SIGHUP) never stalls the runtime's worker threads.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub async fn load_off_runtime(path: &Path) -> Result<Config, ConfigErrors> {
        let owned = path.to_path_buf();
        tokio::task::spawn_blocking(move || Config::load(&owned))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors(vec![ConfigError::new(
                    "",
                    format!("loading {} stopped: {e}", path.display()),
                )]))
            })
    }

    /// Parse and validate TOML text; relative paths resolve against `base`.
    ///
    /// # Errors
    /// Every problem found, each with its key path.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let location = e
                .span()
                .map(|span| {
                    let line = text
                        .get(..span.start)
                        .map_or(1, |t| t.matches('\n').count() + 1);
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            ConfigErrors(vec![ConfigError::new("", format!("{location}{message}"))])
        })?;
        validate::validate(raw, base)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "tests_inputs.rs"]
mod tests_inputs;

#[cfg(test)]
#[path = "tests_routing.rs"]
mod tests_routing;

#[cfg(test)]
#[path = "tests_graph.rs"]
mod tests_graph;

#[cfg(test)]
#[path = "google_tests.rs"]
mod google_tests;

/// A warning when the config file holds a client secret or a clear-text password and every
/// user on the machine may read it.
fn world_readable_secrets_warning(path: &Path, text: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o004 == 0 {
        return None;
    }
    let value: toml::Table = toml::from_str(text).ok()?;
    let holds = |section: &str, key: &str| {
        value
            .get(section)
            .and_then(toml::Value::as_array)
            .is_some_and(|tables| tables.iter().any(|t| t.get(key).is_some()))
    };
    let what = match (holds("account", "client_secret"), holds("user", "password")) {
        (true, true) => "a client secret and clear-text passwords",
        (true, false) => "a client secret",
        (false, true) => "clear-text passwords",
        (false, false) => return None,
    };
    Some(format!(
        "{} holds {what} and every user can read it (mode {:o}): `chmod 600` it (or `chmod 640` with the relay's group), or move the secret to client_secret_file",
        path.display(),
        mode & 0o777
    ))
}
