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

use super::raw::{RawAccount, RawConfig, RawListener, RawNetwork, RawUser};
use super::{
    AccountSettings, AdminSettings, BouncePolicy, CLOUDS, ClientCredential, Config, ConfigErrors,
    DEFAULT_ADMIN_ADDRESS, DEFAULT_STATE_DIR, Limits, ListenerSettings, QueueSettings,
    RelaySettings, UpstreamTls,
};
use crate::oauth::assertion::{AssertionAlgorithm, ClientCertificate};
use crate::policy::{Access, Credential, Policy, SenderPattern, SenderRewrite};
use crate::secret::Secret;
use crate::smtp::proto::address::Address;
use crate::smtp::server::session::TlsMode;

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
    if !raw.user.is_empty()
        && listeners
            .iter()
            .all(|l| l.tls == TlsMode::None && !l.allow_auth_without_tls)
    {
        checker.warnings.push(
            "users are configured but no listener offers AUTH: add tls = \"starttls\" with a certificate, or allow_auth_without_tls = true".into(),
        );
    }

    let admin_address = match raw
        .admin
        .address
        .as_deref()
        .unwrap_or(DEFAULT_ADMIN_ADDRESS)
    {
        "off" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(address) => {
                if !address.ip().is_loopback() {
                    checker.warnings.push(format!(
                        "admin.address = {address}: health and metrics are reachable from the network (the queue API still answers only on loopback)"
                    ));
                }
                Some(address)
            }
            Err(_) => {
                checker.error(
                    "admin.address",
                    format!("\"{text}\" is not an IP:port like \"127.0.0.1:8025\" (or \"off\")"),
                );
                None
            }
        },
    };
    if let Some(admin) = admin_address
        && let Some(index) = listeners.iter().position(|l| same_socket(l.address, admin))
    {
        checker.error(
            "admin.address",
            format!("{admin} overlaps listener[{index}]: give the admin endpoint its own port"),
        );
    }
    let admin = AdminSettings {
        address: admin_address,
        ready_failing_after: raw
            .admin
            .ready_failing_after
            .unwrap_or(Duration::from_secs(3600)),
    };
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
        max_auth_failures_per_address: l
            .max_auth_failures_per_address
            .unwrap_or(defaults.max_auth_failures_per_address),
        auth_failure_window: l
            .auth_failure_window
            .unwrap_or(defaults.auth_failure_window),
        max_header_size: l.max_header_size.map_or(defaults.max_header_size, |s| {
            usize::try_from(s.as_u64()).unwrap_or(usize::MAX)
        }),
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
        if let (Some(certificate), Some(private_key)) = (certificate, private_key) {
            match crate::tls::server_config(
                &checker.resolve(&certificate),
                &checker.resolve(&private_key),
            ) {
                Ok(config) => tls_config = Some(config),
                Err(e) => checker.error(format!("{path}.certificate"), e),
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

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

fn account(checker: &mut Checker<'_>, index: usize, raw: &RawAccount) -> Option<AccountSettings> {
    let path = format!("account[{index}]");
    let name = checker.required(&format!("{path}.name"), &raw.name);
    let plain_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if let Some(n) = name.as_deref()
        && !plain_name(n)
    {
        checker.error(
            format!("{path}.name"),
            format!("\"{n}\" may use only letters, digits, '-', '_' and '.'"),
        );
    }
    let mailbox = checker
        .required(&format!("{path}.mailbox"), &raw.mailbox)
        .and_then(|text| match Address::parse(&text) {
            Ok(address) => Some(address),
            Err(e) => {
                checker.error(
                    format!("{path}.mailbox"),
                    format!("\"{text}\" is not a mailbox address: {e}"),
                );
                None
            }
        });
    let tenant_id = checker.required(&format!("{path}.tenant_id"), &raw.tenant_id);
    if let Some(tenant) = &tenant_id {
        let lower = tenant.to_ascii_lowercase();
        if ["common", "organizations", "consumers"].contains(&lower.as_str()) {
            checker.error(
                format!("{path}.tenant_id"),
                format!("\"{tenant}\" cannot be used with client credentials (AADSTS9001023): use the tenant ID GUID or a verified domain like contoso.onmicrosoft.com"),
            );
        } else if !(is_guid(tenant)
            || (tenant.contains('.') && Address::parse(&format!("x@{tenant}")).is_ok()))
        {
            checker.error(
                format!("{path}.tenant_id"),
                format!("\"{tenant}\" is neither a tenant ID GUID nor a domain name (Entra admin center → Overview → Tenant ID)"),
            );
        }
    }
    let client_id = checker.required(&format!("{path}.client_id"), &raw.client_id);
    if let Some(client) = &client_id
        && !is_guid(client)
    {
        checker.error(
            format!("{path}.client_id"),
            format!("\"{client}\" is not a GUID: copy the Application (client) ID from the app registration's Overview page"),
        );
    }
    let credential = credential(checker, &path, raw);
    let cloud_name = raw.cloud.as_deref().unwrap_or("global");
    let cloud = CLOUDS
        .iter()
        .find(|c| c.name == cloud_name)
        .copied()
        .unwrap_or_else(|| {
            let names: Vec<&str> = CLOUDS.iter().map(|c| c.name).collect();
            checker.error(
                format!("{path}.cloud"),
                format!("\"{cloud_name}\" must be one of {}", names.join(", ")),
            );
            CLOUDS[0]
        });
    let authority = raw
        .authority
        .clone()
        .unwrap_or_else(|| cloud.authority.into())
        .trim_end_matches('/')
        .to_string();
    if !authority.starts_with("https://") {
        checker.error(
            format!("{path}.authority"),
            format!(
                "\"{authority}\" must be an https:// URL like {}",
                cloud.authority
            ),
        );
    }
    let scope = raw.scope.clone().unwrap_or_else(|| cloud.scope.into());
    if !scope.ends_with("/.default") {
        checker.error(
            format!("{path}.scope"),
            format!("\"{scope}\" must end with /.default for client credentials (AADSTS1002012), e.g. {}", cloud.scope),
        );
    }
    if scope.contains("graph.microsoft") {
        checker.warnings.push(format!(
            "{path}.scope = \"{scope}\" asks for a Microsoft Graph token; SMTP needs the Exchange Online one ({})",
            cloud.scope
        ));
    }
    let server = raw
        .smtp_server
        .clone()
        .unwrap_or_else(|| cloud.smtp_server.into());
    let host_port = match server.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some((
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
            )),
            _ => None,
        },
        _ => None,
    };
    if host_port.is_none() {
        checker.error(
            format!("{path}.smtp_server"),
            format!("\"{server}\" must be host:port, e.g. {}", cloud.smtp_server),
        );
    }
    let smtp_tls = match raw.smtp_tls.as_deref().unwrap_or("starttls") {
        "starttls" => Some(UpstreamTls::Starttls),
        "implicit" => Some(UpstreamTls::Implicit),
        "none" => Some(UpstreamTls::None),
        other => {
            checker.error(
                format!("{path}.smtp_tls"),
                format!("\"{other}\" must be \"starttls\", \"implicit\" or \"none\""),
            );
            None
        }
    };
    if smtp_tls == Some(UpstreamTls::None) {
        checker.warnings.push(format!(
            "{path}.smtp_tls = \"none\": the access token crosses the network in clear; only for a local test server"
        ));
    }
    if let (Some((_, 465)), Some(UpstreamTls::Starttls)) = (&host_port, smtp_tls) {
        checker.warnings.push(format!(
            "{path}.smtp_server: port 465 is not supported by Exchange Online for client submission; use 587"
        ));
    }
    let mut extra_roots = Vec::new();
    if let Some(ca_file) = &raw.ca_file {
        match crate::tls::load_certificates(&checker.resolve(ca_file)) {
            Ok(certs) => extra_roots = certs,
            Err(e) => checker.error(format!("{path}.ca_file"), e),
        }
    }
    let max_connections = raw.max_connections.unwrap_or(3);
    if !(1..=3).contains(&max_connections) {
        checker.error(
            format!("{path}.max_connections"),
            "must be 1, 2 or 3: Exchange Online allows 3 concurrent SMTP sessions per mailbox (432 4.3.2 beyond)",
        );
    }
    let max_messages_per_minute = raw.max_messages_per_minute.unwrap_or(30);
    if max_messages_per_minute > 30 {
        checker.warnings.push(format!(
            "{path}.max_messages_per_minute = {max_messages_per_minute}: Exchange Online throttles above 30 messages a minute per mailbox"
        ));
    }
    let max_recipients_per_message = raw.max_recipients_per_message.unwrap_or(500);
    if !(1..=1000).contains(&max_recipients_per_message) {
        checker.error(
            format!("{path}.max_recipients_per_message"),
            "must be between 1 and 1000 (Exchange Online allows 500 by default, 1000 at most)",
        );
    }
    let max_recipients_per_day = raw.max_recipients_per_day.unwrap_or(10_000);
    let renew_before = raw
        .renew_before
        .unwrap_or(crate::oauth::token::DEFAULT_RENEW_BEFORE);
    let (smtp_host, smtp_port) = host_port?;
    Some(AccountSettings {
        name: name?,
        mailbox: mailbox?,
        tenant_id: tenant_id?,
        client_id: client_id?,
        credential: credential?,
        authority,
        scope,
        smtp_host,
        smtp_port,
        smtp_tls: smtp_tls?,
        extra_roots,
        max_connections,
        max_messages_per_minute,
        max_recipients_per_message,
        max_recipients_per_day,
        renew_before,
    })
}

fn credential(checker: &mut Checker<'_>, path: &str, raw: &RawAccount) -> Option<ClientCredential> {
    let given = [
        raw.client_secret.is_some(),
        raw.client_secret_file.is_some(),
        raw.client_secret_env.is_some(),
        raw.client_certificate.is_some(),
    ]
    .iter()
    .filter(|&&given| given)
    .count();
    if given == 0 {
        checker.error(
            format!("{path}.client_secret"),
            "is required (or client_secret_file, client_secret_env, client_certificate)",
        );
        return None;
    }
    if given > 1 {
        checker.error(
            format!("{path}.client_secret"),
            "give only one of client_secret, client_secret_file, client_secret_env, client_certificate",
        );
        return None;
    }
    if let Some(file) = &raw.client_certificate {
        let algorithm = match raw.client_assertion_algorithm.as_deref().unwrap_or("ps256") {
            "ps256" => AssertionAlgorithm::Ps256,
            "rs256" => AssertionAlgorithm::Rs256,
            other => {
                checker.error(
                    format!("{path}.client_assertion_algorithm"),
                    format!(
                        "\"{other}\" must be \"ps256\" (with x5t#S256) or \"rs256\" (with x5t)"
                    ),
                );
                return None;
            }
        };
        let file = checker.resolve(file);
        return match ClientCertificate::load(&file) {
            Ok(certificate) => {
                if let Some(warning) = certificate.expiry_warning(std::time::SystemTime::now()) {
                    checker
                        .warnings
                        .push(format!("{path}.client_certificate: {warning}"));
                }
                Some(ClientCredential::Certificate {
                    certificate: Arc::new(certificate),
                    algorithm,
                })
            }
            Err(e) => {
                checker.error(
                    format!("{path}.client_certificate"),
                    format!("{}: {e}", file.display()),
                );
                None
            }
        };
    }
    if raw.client_assertion_algorithm.is_some() {
        checker.error(
            format!("{path}.client_assertion_algorithm"),
            "only applies with client_certificate",
        );
    }
    let (key, secret) = if let Some(secret) = &raw.client_secret {
        ("client_secret", secret.clone())
    } else if let Some(file) = &raw.client_secret_file {
        let file = checker.resolve(file);
        match std::fs::read_to_string(&file) {
            Ok(text) => (
                "client_secret_file",
                text.trim_end_matches(['\r', '\n']).to_string(),
            ),
            Err(e) => {
                checker.error(
                    format!("{path}.client_secret_file"),
                    format!("cannot read {}: {e}", file.display()),
                );
                return None;
            }
        }
    } else if let Some(var) = &raw.client_secret_env {
        match std::env::var(var) {
            Ok(value) => ("client_secret_env", value),
            Err(_) => {
                checker.error(
                    format!("{path}.client_secret_env"),
                    format!("the environment variable {var} is not set"),
                );
                return None;
            }
        }
    } else {
        return None;
    };
    if secret.trim().is_empty() {
        checker.error(format!("{path}.{key}"), "the client secret is empty");
        return None;
    }
    if is_guid(secret.trim()) {
        checker.warnings.push(format!(
            "{path}.{key}: the secret looks like a GUID, which is usually the secret's ID; Entra wants its Value (AADSTS7000215 otherwise)"
        ));
    }
    // Entra secret values never contain white space: around it, it is a paste mistake.
    let secret = if secret.trim() != secret {
        checker.warnings.push(format!(
            "{path}.{key}: white space around the secret was removed (Entra secret values have none)"
        ));
        secret.trim().to_string()
    } else {
        secret
    };
    if secret.contains(char::is_whitespace) {
        checker.warnings.push(format!(
            "{path}.{key}: the secret contains white space; Entra secret values have none, so it was probably pasted wrongly (AADSTS7000215 otherwise)"
        ));
    }
    Some(ClientCredential::Secret(Secret::new(secret)))
}

fn senders(checker: &mut Checker<'_>, path: &str, raw: &Option<Vec<String>>) -> Vec<SenderPattern> {
    let Some(list) = raw else {
        checker.error(
            format!("{path}.allowed_senders"),
            "is required, e.g. [\"scanner@contoso.com\"] or [\"*@contoso.com\"]",
        );
        return Vec::new();
    };
    if list.is_empty() {
        checker.error(
            format!("{path}.allowed_senders"),
            "must list at least one sender pattern",
        );
    }
    list.iter()
        .enumerate()
        .filter_map(|(index, pattern)| {
            let parsed = SenderPattern::parse(pattern);
            if parsed.is_none() {
                checker.error(
                    format!("{path}.allowed_senders[{index}]"),
                    format!("\"{pattern}\" must be an address, *@domain, or * (no other wildcards: *@sub.domain for a subdomain)"),
                );
            }
            parsed
        })
        .collect()
}

fn account_reference(
    checker: &mut Checker<'_>,
    path: &str,
    accounts: &HashMap<String, Option<Address>>,
    raw: &Option<String>,
) -> Option<String> {
    let account = checker.required(&format!("{path}.account"), raw)?;
    if !accounts.contains_key(&account) {
        checker.error(
            format!("{path}.account"),
            format!("there is no [[account]] named \"{account}\""),
        );
    }
    Some(account)
}

/// The access rules shared by `[[user]]` and `[[network]]`.
fn access(
    checker: &mut Checker<'_>,
    path: &str,
    accounts: &HashMap<String, Option<Address>>,
    account: &Option<String>,
    allowed_senders: &Option<Vec<String>>,
    sender_rewrite: &Option<String>,
) -> Option<Access> {
    let account = account_reference(checker, path, accounts, account);
    let allowed_senders = senders(checker, path, allowed_senders);
    let sender_rewrite = match sender_rewrite.as_deref() {
        None => SenderRewrite::Never,
        Some(value) => SenderRewrite::parse(value).unwrap_or_else(|| {
            checker.error(
                format!("{path}.sender_rewrite"),
                format!("\"{value}\" must be \"never\", \"when-not-allowed\" or \"always\""),
            );
            SenderRewrite::Never
        }),
    };
    let account = account?;
    let account_mailbox = accounts.get(&account).cloned().flatten()?;
    Some(Access {
        account,
        account_mailbox,
        allowed_senders,
        sender_rewrite,
    })
}

fn user(
    checker: &mut Checker<'_>,
    policy: &mut Policy,
    accounts: &HashMap<String, Option<Address>>,
    usernames: &mut HashSet<String>,
    index: usize,
    raw: &RawUser,
) {
    let path = format!("user[{index}]");
    let username = checker.required(&format!("{path}.username"), &raw.username);
    if let Some(name) = &username
        && (name.is_empty() || !usernames.insert(name.to_lowercase()))
    {
        checker.error(
            format!("{path}.username"),
            format!("\"{name}\" is empty or used by another user"),
        );
    }
    let credential = match (&raw.password_hash, &raw.password) {
        (Some(hash), None) => Some(Credential::Hash(hash.clone())),
        (None, Some(password)) => {
            checker.warnings.push(format!(
                "{path}: the password is stored in clear in the config; use password_hash from `smtp-oauth-relay hash-password`"
            ));
            Some(Credential::Clear(Secret::new(password.clone())))
        }
        (Some(_), Some(_)) => {
            checker.error(
                format!("{path}.password"),
                "give password_hash or password, not both",
            );
            None
        }
        (None, None) => {
            checker.error(
                format!("{path}.password_hash"),
                "is required (from `smtp-oauth-relay hash-password`)",
            );
            None
        }
    };
    let access = access(
        checker,
        &path,
        accounts,
        &raw.account,
        &raw.allowed_senders,
        &raw.sender_rewrite,
    );
    if let (Some(username), Some(credential), Some(access)) = (username, credential, access)
        && let Err(e) = policy.add_user(&username, credential, access)
    {
        checker.error(format!("{path}.password_hash"), e.to_string());
    }
}

fn network(
    checker: &mut Checker<'_>,
    policy: &mut Policy,
    accounts: &HashMap<String, Option<Address>>,
    index: usize,
    raw: &RawNetwork,
) {
    let path = format!("network[{index}]");
    let cidr = checker
        .required(&format!("{path}.cidr"), &raw.cidr)
        .and_then(|text| {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net),
                Err(_) => {
                    checker.error(
                        format!("{path}.cidr"),
                        format!("\"{text}\" is not a network like \"192.168.10.0/24\""),
                    );
                    None
                }
            }
        });
    if let Some(net) = cidr
        && net.prefix_len() == 0
    {
        checker.warnings.push(format!(
            "{path}.cidr = {net}: every address on the internet is trusted; this is an open relay if the listener is reachable"
        ));
    }
    let access = access(
        checker,
        &path,
        accounts,
        &raw.account,
        &raw.allowed_senders,
        &raw.sender_rewrite,
    );
    if let (Some(net), Some(access)) = (cidr, access) {
        policy.add_network(net, access);
    }
}

/// True when two bind addresses would collide: the same port, and the same IP or one of
/// them the unspecified address of the same family (0.0.0.0 or ::). Port 0 never collides.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}
