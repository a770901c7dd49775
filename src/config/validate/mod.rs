//! Semantic validation: [`RawConfig`] in, a typed [`Config`] or every error by key path out.
//!
//! Each check explains what to change, in the words an administrator uses (the Entra admin
//! center, the app registration's Overview page) rather than in parser terms.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::free_space::MinFreeSpace;
use super::raw::{RawAccount, RawConfig, RawListener, RawNetwork, RawUser};
use super::{
    AccountSettings, BouncePolicy, CLOUDS, Config, ConfigErrors, DEFAULT_STATE_DIR, Limits,
    ListenerSettings, PerIpLimitExempt, QueueSettings, RelaySettings, UpstreamTls,
};
use crate::oauth::entra::assertion::AssertionAlgorithm;
use crate::oauth::entra::certificate::ClientCertificate;
use crate::policy::{Access, Credential, Policy, SenderPattern, SenderRewrite};
use crate::vocab::address::Address;
use crate::vocab::secret::Secret;
use crate::vocab::tls_mode::TlsMode;

mod access;
mod accounts;
mod admin;
mod placeholders;
mod reach;
use access::{network, user};
use accounts::account;

/// One problem, located by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects errors and warnings while validating.
struct Checker<'a> {
    base: &'a Path,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Checker<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    fn required<T: Clone>(&mut self, path: &str, value: &Option<T>) -> Option<T> {
        if value.is_none() {
            self.error(path, "is required");
        }
        value.clone()
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// Validate a parsed config. See the module docs.
pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigErrors> {
    let mut checker = Checker {
        base,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let relay = RelaySettings {
        hostname: raw
            .relay
            .hostname
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        state_dir: checker.resolve(
            raw.relay
                .state_dir
                .as_deref()
                .unwrap_or_else(|| Path::new(DEFAULT_STATE_DIR)),
        ),
    };
    if relay.hostname.is_empty() || relay.hostname.contains(char::is_whitespace) {
        checker.error("relay.hostname", "must be a host name without spaces");
    }
    let limits = limits(&mut checker, &raw);
    let queue = queue(&mut checker, &raw);

    if raw.listener.is_empty() {
        checker.error("listener", "at least one [[listener]] is required");
    }
    let listeners: Vec<ListenerSettings> = raw
        .listener
        .iter()
        .enumerate()
        .filter_map(|(index, listener)| self::listener(&mut checker, index, listener))
        .collect();
    for (index, listener) in listeners.iter().enumerate() {
        if let Some(other) = listeners
            .get(..index)
            .unwrap_or_default()
            .iter()
            .position(|earlier| same_socket(earlier.address, listener.address))
        {
            checker.error(
                format!("listener[{index}].address"),
                format!(
                    "{} overlaps listener[{other}] ({}): the second cannot bind",
                    listener.address,
                    listeners
                        .get(other)
                        .map_or(String::new(), |l| l.address.to_string())
                ),
            );
        }
    }

    if raw.account.is_empty() {
        checker.error("account", "at least one [[account]] is required");
    }
    let accounts: Vec<AccountSettings> = raw
        .account
        .iter()
        .enumerate()
        .filter_map(|(index, account)| self::account(&mut checker, index, account))
        .collect();
    let mut names = HashSet::new();
    for (index, account) in accounts.iter().enumerate() {
        if !names.insert(account.name.clone()) {
            checker.error(
                format!("account[{index}].name"),
                format!("\"{}\" is used by another account", account.name),
            );
        }
    }
    // Exchange counts sessions per mailbox, not per account of ours.
    let mut sessions_per_mailbox: HashMap<String, (usize, Vec<String>)> = HashMap::new();
    for account in &accounts {
        let entry = sessions_per_mailbox
            .entry(account.mailbox.as_str().to_ascii_lowercase())
            .or_default();
        entry.0 += account.max_connections;
        entry.1.push(account.name.clone());
    }
    for (mailbox, (sessions, names)) in &sessions_per_mailbox {
        if names.len() > 1 && *sessions > 3 {
            checker.warnings.push(format!(
                "accounts {} all send as {mailbox}: together up to {sessions} sessions, and Exchange refuses a 4th per mailbox (432 4.3.2); lower their max_connections so the sum is at most 3",
                names.join(", ")
            ));
        }
    }
    let account_mailboxes: HashMap<String, Option<Address>> = raw
        .account
        .iter()
        .filter_map(|a| {
            let mailbox = accounts
                .iter()
                .find(|valid| Some(&valid.name) == a.name.as_ref())
                .map(|valid| valid.mailbox.clone());
            a.name.clone().map(|name| (name, mailbox))
        })
        .collect();

    let mut policy = Policy::new();
    policy.set_credential_cache_ttl(limits.auth_cache_ttl);
    if raw.user.is_empty() && raw.network.is_empty() {
        checker.error(
            "user",
            "nobody may send: add a [[user]] (AUTH PLAIN/LOGIN) or a [[network]] of trusted client addresses",
        );
    }
    let mut usernames = HashSet::new();
    for (index, user) in raw.user.iter().enumerate() {
        self::user(
            &mut checker,
            &mut policy,
            &account_mailboxes,
            &mut usernames,
            index,
            user,
        );
    }
    for (index, network) in raw.network.iter().enumerate() {
        self::network(
            &mut checker,
            &mut policy,
            &account_mailboxes,
            index,
            network,
        );
    }
    let networks: Vec<(usize, IpNet)> = raw
        .network
        .iter()
        .enumerate()
        .filter_map(|(index, n)| {
            let text = n.cidr.as_deref()?;
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .ok()?;
            Some((index, net))
        })
        .collect();
    let listening: Vec<SocketAddr> = listeners.iter().map(|l| l.address).collect();
    checker
        .warnings
        .extend(reach::unreachable_networks(&listening, &networks));
    if !raw.user.is_empty()
        && listeners
            .iter()
            .all(|l| l.tls == TlsMode::None && !l.allow_auth_without_tls)
    {
        checker.warnings.push(
            "users are configured but no listener offers AUTH: add tls = \"starttls\" with a certificate, or allow_auth_without_tls = true".into(),
        );
    }

    let admin = admin::admin(&mut checker, &raw.admin, &listeners);
    if checker.errors.is_empty() {
        Ok(Config {
            admin,
            relay,
            limits,
            queue,
            listeners,
            accounts,
            policy: Arc::new(policy),
            warnings: checker.warnings,
        })
    } else {
        Err(ConfigErrors(checker.errors))
    }
}

fn limits(checker: &mut Checker<'_>, raw: &RawConfig) -> Limits {
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

fn queue(checker: &mut Checker<'_>, raw: &RawConfig) -> QueueSettings {
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

fn listener(
    checker: &mut Checker<'_>,
    index: usize,
    raw: &RawListener,
) -> Option<ListenerSettings> {
    let path = format!("listener[{index}]");
    let address = checker
        .required(&format!("{path}.address"), &raw.address)
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                checker.error(
                    format!("{path}.address"),
                    format!("\"{text}\" is not an IP:port like \"127.0.0.1:2525\" or \"[::]:587\""),
                );
                None
            }
        });
    let tls = match raw.tls.as_deref().unwrap_or("none") {
        "none" => Some(TlsMode::None),
        "starttls" => Some(TlsMode::Starttls),
        "implicit" => Some(TlsMode::Implicit),
        other => {
            checker.error(
                format!("{path}.tls"),
                format!("\"{other}\" must be \"none\", \"starttls\" or \"implicit\""),
            );
            None
        }
    };
    let mut tls_config = None;
    if matches!(tls, Some(TlsMode::Starttls | TlsMode::Implicit)) {
        let certificate = checker.required(&format!("{path}.certificate"), &raw.certificate);
        let private_key = checker.required(&format!("{path}.private_key"), &raw.private_key);
        let chain = certificate.and_then(|file| {
            crate::tls::load_certificates(&checker.resolve(&file))
                .map_err(|e| checker.error(format!("{path}.certificate"), e))
                .ok()
        });
        let key = private_key.and_then(|file| {
            crate::tls::load_private_key(&checker.resolve(&file))
                .map_err(|e| checker.error(format!("{path}.private_key"), e))
                .ok()
        });
        if let (Some(chain), Some(key)) = (chain, key) {
            match crate::tls::server_config_from(chain, key) {
                Ok(config) => tls_config = Some(config),
                Err(e) => checker.error(format!("{path}.private_key"), e),
            }
        }
    }
    let allow_auth_without_tls = raw.allow_auth_without_tls.unwrap_or(false);
    if let (Some(address), Some(TlsMode::None)) = (address, tls)
        && allow_auth_without_tls
        && !address.ip().is_loopback()
    {
        checker.warnings.push(format!(
            "{path}: passwords will cross the network in clear on {address} (allow_auth_without_tls = true)"
        ));
    }
    let timeout = raw.acknowledge_timeout.unwrap_or(Duration::from_secs(30));
    let acknowledge_delivered = match raw.acknowledge.as_deref().unwrap_or("queued") {
        "queued" => None,
        "delivered" => Some(timeout),
        other => {
            checker.error(
                format!("{path}.acknowledge"),
                format!("\"{other}\" must be \"queued\" or \"delivered\""),
            );
            None
        }
    };
    if timeout > Duration::from_secs(5 * 60) {
        checker.error(
            format!("{path}.acknowledge_timeout"),
            "must be at most 5m (clients give up on DATA replies after 10 minutes)",
        );
    }
    Some(ListenerSettings {
        acknowledge_delivered,
        address: address?,
        tls: tls?,
        tls_config,
        certificate: raw.certificate.as_ref().map(|p| checker.resolve(p)),
        private_key: raw.private_key.as_ref().map(|p| checker.resolve(p)),
        allow_auth_without_tls,
    })
}

/// True when two bind addresses would collide: the same port, and the same IP, or one of
/// them the unspecified address of the same family (0.0.0.0 or ::), or `[::]` (dual-stack on
/// Linux, so it takes the IPv4 port too) with any address. Port 0 never collides.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let v6_any = |s: SocketAddr| s.is_ipv6() && s.ip().is_unspecified();
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || v6_any(a)
            || v6_any(b)
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

#[cfg(test)]
mod tests {
    use super::same_socket;

    #[test]
    fn colliding_bind_addresses() {
        let cases = [
            ("127.0.0.1:25", "127.0.0.1:25", true),
            ("0.0.0.0:25", "127.0.0.1:25", true),
            ("[::]:25", "0.0.0.0:25", true),
            ("[::]:25", "127.0.0.1:25", true),
            ("[::1]:25", "127.0.0.1:25", false),
            ("127.0.0.1:25", "127.0.0.2:25", false),
            ("0.0.0.0:25", "0.0.0.0:587", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
        ];
        for (a, b, collide) in cases {
            assert_eq!(
                same_socket(a.parse().unwrap(), b.parse().unwrap()),
                collide,
                "{a} {b}"
            );
        }
    }
}
