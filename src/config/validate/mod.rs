//! Semantic validation: [`RawConfig`] in, a typed [`Config`] or every error by key path out.
//!
//! Each check explains what to change, in the words an administrator uses (the Entra admin
//! center, the app registration's Overview page) rather than in parser terms.
//!
//! This file holds the `Checker` (errors and warnings collected, never the first one only)
//! and the top-level pass: `[relay]`, what spans several sections (account names, sessions per
//! mailbox, who may send, whether AUTH is offered anywhere) and the final assembly. Each
//! section has its own file: `limits` (`[limits]`, `[queue]`), `listeners`, `accounts` (with `microsoft` and `google`, each provider's side),
//! `access` (`[[user]]`, `[[network]]`), `admin`, with `placeholders` and `reach` as helpers;
//! `instances` (`[relay] instances`) turns each account's limits into this instance's share.
//!
//! Invariant: a [`Config`] comes out only when no check found an error.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::raw::{RawAccount, RawConfig, RawNetwork, RawUser};
use super::{
    AccountSettings, CLOUDS, Config, ConfigErrors, DEFAULT_STATE_DIR, RelaySettings, UpstreamTls,
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
pub mod google;
mod graph;
mod instances;
mod limits;
mod listeners;
mod microsoft;
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
        instances: instances::instances(&mut checker, &raw),
    };
    if relay.hostname.is_empty() || relay.hostname.contains(char::is_whitespace) {
        checker.error("relay.hostname", "must be a host name without spaces");
    }
    let limits = limits::limits(&mut checker, &raw);
    let queue = limits::queue(&mut checker, &raw);
    let listeners = listeners::listeners(&mut checker, &raw);

    if raw.account.is_empty() {
        checker.error("account", "at least one [[account]] is required");
    }
    let mut accounts: Vec<AccountSettings> = raw
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
    for account in accounts
        .iter()
        .filter(|a| a.provider == crate::vocab::provider::Provider::Microsoft)
    {
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
    // After the checks of the configured (all-instances) limits above.
    instances::apply_share(&mut checker, relay.instances, &mut accounts);
    let account_mailboxes = access::KnownAccounts::new(&raw.account, &accounts);

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
