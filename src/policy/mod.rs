//! Who a client is and what it may do: authenticated `[[user]]`s and trusted `[[network]]`s,
//! each bound to one or more upstream accounts (the first its default) and a list of allowed
//! sender patterns.
//!
//! Routing by sender ([`Grant::route_for`], [`Grant::route_covering`]): a grant with several
//! accounts sends each message through the one account that may send as the envelope sender
//! and every `From:` address (its mailbox or a `send_as` pattern, see [`AccountRoute`]); when
//! none may, the default account and the `sender_rewrite` rules decide, as with one account.
//! Config validation guarantees that at most one account of a grant may send as any address.
//!
//! Invariants: a client is trusted only through a [`Grant`] (never an open relay); a password
//! is checked against an argon2 PHC hash (or a clear `password` from the config) and an unknown
//! user costs the same hash work as a known one; this module knows nothing of sockets or disk.
//! Password checks are CPU-bound: they run on the [`checker`] workers, each reusing one argon2
//! work area ([`password`]); correct credentials are remembered for a while
//! ([`credential_cache`]) so that clients reconnecting for every message do not pay argon2 each
//! time.

pub mod checker;
pub mod credential_cache;
pub mod password;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::PasswordHash;
use ipnet::IpNet;

pub use checker::{CheckResult, PasswordChecker};
pub use credential_cache::CredentialCache;
pub use password::hash_password;
use password::{Argon2Scratch, decoy_hash, verify_phc};

use crate::vocab::address::Address;
use crate::vocab::secret::Secret;

/// One allowed-sender pattern: `user@domain`, `*@domain`, or `*` (any sender).
#[derive(Clone, PartialEq, Eq)]
pub enum SenderPattern {
    Exact(String),
    Domain(String),
    Any,
}

impl SenderPattern {
    /// Parse a pattern from the config; `None` when it is not one of the three forms.
    pub fn parse(pattern: &str) -> Option<SenderPattern> {
        let pattern = pattern.trim();
        if pattern == "*" {
            return Some(SenderPattern::Any);
        }
        if let Some(domain) = pattern.strip_prefix("*@") {
            let probe = format!("x@{domain}");
            return Address::parse(&probe)
                .ok()
                .map(|_| SenderPattern::Domain(domain.to_lowercase()));
        }
        // A `*` anywhere else would be taken literally (it is legal in a local part) and
        // never match what the admin meant (`rel*@contoso.com`): not a pattern.
        if pattern.contains('*') {
            return None;
        }
        Address::parse(pattern)
            .ok()
            .map(|address| SenderPattern::Exact(address.as_str().to_lowercase()))
    }

    /// True when `address` matches (case-insensitively).
    pub fn matches(&self, address: &str) -> bool {
        let address = address.to_lowercase();
        match self {
            SenderPattern::Exact(exact) => *exact == address,
            SenderPattern::Domain(domain) => {
                address.rsplit_once('@').is_some_and(|(_, d)| d == domain)
            }
            SenderPattern::Any => true,
        }
    }
}

impl fmt::Debug for SenderPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderPattern::Exact(address) => f.write_str(address),
            SenderPattern::Domain(domain) => write!(f, "*@{domain}"),
            SenderPattern::Any => f.write_str("*"),
        }
    }
}

/// How a client earned its trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authenticated with AUTH PLAIN/LOGIN as this `[[user]]`.
    User(String),
    /// Connected from this `[[network]]`.
    Network(IpNet),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(name) => write!(f, "user {name}"),
            Principal::Network(net) => write!(f, "network {net}"),
        }
    }
}

/// What happens to a sender outside `allowed_senders` (`sender_rewrite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SenderRewrite {
    /// Refuse it (`550 5.7.1`).
    #[default]
    Never,
    /// Replace it by the account's mailbox (MAIL FROM and `From:`), keeping the display name
    /// and putting the original address into `Reply-To:`.
    WhenNotAllowed,
    /// Always send as the account's mailbox, whatever the client says.
    Always,
}

impl SenderRewrite {
    /// Parse the config value.
    pub fn parse(value: &str) -> Option<SenderRewrite> {
        match value {
            "never" => Some(SenderRewrite::Never),
            "when-not-allowed" => Some(SenderRewrite::WhenNotAllowed),
            "always" => Some(SenderRewrite::Always),
            _ => None,
        }
    }
}

/// What a `[[user]]` or `[[network]]` may do, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The default account.
    pub account: String,
    /// The default account's mailbox: the address senders are rewritten to.
    pub account_mailbox: Address,
    pub allowed_senders: Vec<SenderPattern>,
    pub sender_rewrite: SenderRewrite,
    /// Every account the client may send through, the default one included (`accounts`);
    /// empty means the default account alone, without `send_as` or `sender_name`.
    pub routes: Vec<AccountRoute>,
}

/// One account a client may send through, and the addresses it may send as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRoute {
    pub account: String,
    pub mailbox: Address,
    /// `send_as`: exact addresses and `*@domain` patterns the mailbox has SendAs on.
    pub send_as: Vec<SenderPattern>,
    /// `sender_name`: the display name of a `From:` the relay writes.
    pub sender_name: Option<String>,
}

impl AccountRoute {
    /// True when this account may send as `address`: its mailbox or a `send_as` pattern
    /// (case-insensitive).
    pub fn may_send_as(&self, address: &str) -> bool {
        self.mailbox.eq_ignore_case(address) || self.send_as.iter().any(|p| p.matches(address))
    }
}

/// What a trusted client may do: send through an account as one of its allowed senders.
/// `account`, `account_mailbox` and `sender_name` describe the account in use: the default one,
/// or after [`Grant::through`] the one chosen for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub principal: Principal,
    pub account: String,
    pub account_mailbox: Address,
    pub allowed_senders: Vec<SenderPattern>,
    pub sender_rewrite: SenderRewrite,
    /// The display name of a `From:` the relay writes for `account`.
    pub sender_name: Option<String>,
    /// Every account the client may send through (see [`Access::routes`]).
    pub routes: Vec<AccountRoute>,
}

/// The sender a message goes out with, after the grant's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderDecision {
    /// Use the client's sender as it is.
    Keep,
    /// Send as the account's mailbox instead.
    Rewrite(Address),
    /// Refuse: the sender is not allowed and rewriting is off.
    Refuse,
}

impl Grant {
    fn new(principal: Principal, access: Access) -> Grant {
        let sender_name = access
            .routes
            .iter()
            .find(|route| route.account == access.account)
            .and_then(|route| route.sender_name.clone());
        Grant {
            principal,
            account: access.account,
            account_mailbox: access.account_mailbox,
            allowed_senders: access.allowed_senders,
            sender_rewrite: access.sender_rewrite,
            sender_name,
            routes: access.routes,
        }
    }

    /// The account that may send as `address` for this client: one of the grant's accounts
    /// whose mailbox or `send_as` matches it, when the client may use the address (its
    /// `allowed_senders`, or that account's mailbox itself). `None` for the null sender and
    /// for an address no account of the grant covers.
    pub fn route_for(&self, address: Option<&Address>) -> Option<&AccountRoute> {
        self.route_covering(address, &[])
    }

    /// The one account that may send as the envelope sender `envelope` (when not null) and
    /// every address of `from`, each usable by the client (see [`Grant::route_for`]). `None`
    /// when no account covers them all, or when there is nothing to cover: then the default
    /// account's rules apply. A message is never split across accounts.
    pub fn route_covering(
        &self,
        envelope: Option<&Address>,
        from: &[Address],
    ) -> Option<&AccountRoute> {
        let addresses: Vec<&Address> = envelope.into_iter().chain(from).collect();
        if addresses.is_empty() {
            return None;
        }
        self.routes.iter().find(|route| {
            addresses.iter().all(|address| {
                route.may_send_as(address.as_str())
                    && (route.mailbox.eq_ignore_case(address.as_str())
                        || self.allows_address(address.as_str()))
            })
        })
    }

    /// This grant with `route` as the account in use: its name, mailbox and sender name.
    pub fn through(&self, route: &AccountRoute) -> Grant {
        Grant {
            account: route.account.clone(),
            account_mailbox: route.mailbox.clone(),
            sender_name: route.sender_name.clone(),
            ..self.clone()
        }
    }

    /// True when `address` matches one of the allowed sender patterns.
    pub fn allows_address(&self, address: &str) -> bool {
        self.allowed_senders.iter().any(|p| p.matches(address))
    }

    /// True when the grant lets the client use `sender` as it is. The null sender `<>` is
    /// allowed: a trusted mail server (e.g. Postfix using the relay as its smarthost) sends its
    /// bounces with it, and the relay never answers such a message with a bounce of its own.
    pub fn allows_sender(&self, sender: Option<&Address>) -> bool {
        match sender {
            Some(address) => self.allows_address(address.as_str()),
            None => true,
        }
    }

    /// What to do with `address` (the envelope sender or the `From:` address).
    pub fn decide(&self, address: Option<&Address>) -> SenderDecision {
        let allowed = self.allows_sender(address);
        let is_mailbox = address.is_some_and(|a| a.eq_ignore_case(self.account_mailbox.as_str()));
        match self.sender_rewrite {
            _ if is_mailbox => SenderDecision::Keep,
            // The null sender stays null: a bounce must never become ordinary mail.
            _ if address.is_none() => SenderDecision::Keep,
            SenderRewrite::Always => SenderDecision::Rewrite(self.account_mailbox.clone()),
            _ if allowed => SenderDecision::Keep,
            SenderRewrite::WhenNotAllowed => SenderDecision::Rewrite(self.account_mailbox.clone()),
            SenderRewrite::Never => SenderDecision::Refuse,
        }
    }
}

/// How long a proven credential is remembered unless `[limits] auth_cache_ttl` says otherwise.
pub const DEFAULT_CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(60 * 60);

/// How a `[[user]]` proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// An argon2 PHC string (`$argon2id$…`), validated at load time.
    Hash(String),
    /// A clear password from the config (accepted with a startup warning).
    Clear(Secret),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Hash(_) => f.write_str("Hash([redacted])"),
            Credential::Clear(_) => f.write_str("Clear([redacted])"),
        }
    }
}

#[derive(Debug)]
struct UserEntry {
    credential: Credential,
    grant: Arc<Grant>,
}

/// The access policy built from the config.
#[derive(Debug)]
pub struct Policy {
    users: HashMap<String, UserEntry>,
    networks: Vec<(IpNet, Arc<Grant>)>,
    decoy_hash: String,
    /// Credentials proven correct recently; new (empty) with every policy, so with every reload.
    credential_cache: CredentialCache,
}

/// Errors while building the policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("password_hash is not a valid PHC string: {0}")]
    BadHash(String),
}

impl Policy {
    /// An empty policy (nobody is trusted).
    pub fn new() -> Policy {
        Policy {
            users: HashMap::new(),
            networks: Vec::new(),
            decoy_hash: decoy_hash(),
            credential_cache: CredentialCache::new(DEFAULT_CREDENTIAL_CACHE_TTL),
        }
    }

    /// How long a proven credential is remembered (`[limits] auth_cache_ttl`); zero disables.
    pub fn set_credential_cache_ttl(&mut self, ttl: Duration) {
        self.credential_cache = CredentialCache::new(ttl);
    }

    /// The memory of recently proven credentials.
    pub fn credential_cache(&self) -> &CredentialCache {
        &self.credential_cache
    }

    /// True when `username` names a configured `[[user]]` (exactly or ignoring ASCII case).
    pub fn is_user(&self, username: &str) -> bool {
        self.user_entry(username).is_some()
    }

    fn user_entry(&self, username: &str) -> Option<&UserEntry> {
        self.users.get(username).or_else(|| {
            self.users
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(username))
                .map(|(_, entry)| entry)
        })
    }

    /// Add a `[[user]]`.
    pub fn add_user(
        &mut self,
        username: &str,
        credential: Credential,
        access: Access,
    ) -> Result<(), PolicyError> {
        if let Credential::Hash(phc) = &credential {
            PasswordHash::new(phc).map_err(|e| PolicyError::BadHash(e.to_string()))?;
            password::hash_parameters_acceptable(phc).map_err(PolicyError::BadHash)?;
        }
        let grant = Arc::new(Grant::new(Principal::User(username.to_string()), access));
        self.users
            .insert(username.to_string(), UserEntry { credential, grant });
        Ok(())
    }

    /// Add a `[[network]]`.
    pub fn add_network(&mut self, net: IpNet, access: Access) {
        let grant = Arc::new(Grant::new(Principal::Network(net), access));
        self.networks.push((net.trunc(), grant));
    }

    /// The grant of the most specific trusted network containing `ip`, if any.
    pub fn network_grant(&self, ip: IpAddr) -> Option<Arc<Grant>> {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, grant)| Arc::clone(grant))
    }

    /// Check a username and password with a fresh argon2 work area (tools and tests; the
    /// server uses [`PasswordChecker`]).
    pub fn verify_password(&self, username: &str, password: &Secret) -> Option<Arc<Grant>> {
        self.check_password(username, password, &mut Argon2Scratch::default())
            .grant
    }

    /// Check a username and password in `scratch`. CPU-bound (argon2): run it off the async
    /// runtime. Usernames match exactly, or case-insensitively when no exact entry exists; an
    /// unknown user costs the same hash work as a known one.
    pub fn check_password(
        &self,
        username: &str,
        password: &Secret,
        scratch: &mut Argon2Scratch,
    ) -> CheckResult {
        let Some(entry) = self.user_entry(username) else {
            // Spend the same work as for a real user so timing does not reveal user names.
            let _ = verify_phc(&self.decoy_hash, password, scratch);
            return CheckResult {
                grant: None,
                known_user: false,
            };
        };
        let ok = match &entry.credential {
            Credential::Hash(phc) => verify_phc(phc, password, scratch),
            Credential::Clear(clear) => {
                let expected =
                    ring::digest::digest(&ring::digest::SHA256, clear.expose().as_bytes());
                let given =
                    ring::digest::digest(&ring::digest::SHA256, password.expose().as_bytes());
                expected.as_ref() == given.as_ref()
            }
        };
        CheckResult {
            grant: ok.then(|| Arc::clone(&entry.grant)),
            known_user: true,
        }
    }

    /// Number of users and networks (for the startup summary).
    pub fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.networks.len())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(account: &str, allowed_senders: Vec<SenderPattern>) -> Access {
        Access {
            account: account.into(),
            account_mailbox: Address::parse("relay@contoso.com").unwrap(),
            allowed_senders,
            sender_rewrite: SenderRewrite::Never,
            routes: vec![],
        }
    }

    #[test]
    fn sender_patterns_table() {
        let cases = [
            ("scanner@contoso.com", "Scanner@Contoso.COM", true),
            ("scanner@contoso.com", "other@contoso.com", false),
            ("*@contoso.com", "anyone@contoso.com", true),
            ("*@contoso.com", "anyone@contoso.com.evil.example", false),
            ("*@contoso.com", "anyone@sub.contoso.com", false),
            ("*", "x@y.example", true),
        ];
        for (pattern, address, expected) in cases {
            let parsed = SenderPattern::parse(pattern).unwrap();
            assert_eq!(parsed.matches(address), expected, "{pattern} vs {address}");
        }
        for bad in [
            "",
            "@",
            "a@",
            "*@",
            "*@-x",
            "a b@c.example",
            "rel*@contoso.com",
            "*@*.contoso.com",
            "**",
        ] {
            assert!(
                SenderPattern::parse(bad).is_none(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn passwords_hash_and_clear() {
        let mut policy = Policy::new();
        let phc = hash_password(&Secret::new("s3cret")).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        policy
            .add_user(
                "printer",
                Credential::Hash(phc),
                access("m365", vec![SenderPattern::Any]),
            )
            .unwrap();
        policy
            .add_user(
                "legacy",
                Credential::Clear(Secret::new("pw")),
                access("m365", vec![]),
            )
            .unwrap();
        assert!(
            policy
                .verify_password("printer", &Secret::new("s3cret"))
                .is_some()
        );
        assert!(
            policy
                .verify_password("PRINTER", &Secret::new("s3cret"))
                .is_some()
        );
        assert!(
            policy
                .verify_password("printer", &Secret::new("wrong"))
                .is_none()
        );
        assert!(
            policy
                .verify_password("legacy", &Secret::new("pw"))
                .is_some()
        );
        assert!(
            policy
                .verify_password("legacy", &Secret::new("pw2"))
                .is_none()
        );
        assert!(
            policy
                .verify_password("nobody", &Secret::new("pw"))
                .is_none()
        );
        assert!(
            policy
                .add_user(
                    "bad",
                    Credential::Hash("not-a-hash".into()),
                    access("m365", vec![])
                )
                .is_err()
        );
    }

    #[test]
    fn most_specific_network_wins_and_mapped_addresses_match() {
        let mut policy = Policy::new();
        policy.add_network("192.168.0.0/16".parse().unwrap(), access("wide", vec![]));
        policy.add_network("192.168.10.0/24".parse().unwrap(), access("narrow", vec![]));
        let ip: IpAddr = "192.168.10.7".parse().unwrap();
        assert_eq!(policy.network_grant(ip).unwrap().account, "narrow");
        let mapped: IpAddr = "::ffff:192.168.1.1".parse().unwrap();
        assert_eq!(policy.network_grant(mapped).unwrap().account, "wide");
        assert!(policy.network_grant("10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn null_sender_is_allowed_to_trusted_clients() {
        let grant = Grant::new(
            Principal::User("u".into()),
            access("a", vec![SenderPattern::Any]),
        );
        assert!(grant.allows_sender(None));
        assert!(grant.allows_sender(Some(&Address::parse("x@y.example").unwrap())));
    }

    #[test]
    fn sender_decisions_table() {
        let contoso = vec![SenderPattern::parse("*@contoso.com").unwrap()];
        let mailbox = Address::parse("relay@contoso.com").unwrap();
        let cases = [
            (
                SenderRewrite::Never,
                Some("a@contoso.com"),
                SenderDecision::Keep,
            ),
            (
                SenderRewrite::Never,
                Some("a@printers.lan"),
                SenderDecision::Refuse,
            ),
            (
                SenderRewrite::WhenNotAllowed,
                Some("a@contoso.com"),
                SenderDecision::Keep,
            ),
            (
                SenderRewrite::WhenNotAllowed,
                Some("a@printers.lan"),
                SenderDecision::Rewrite(mailbox.clone()),
            ),
            (
                SenderRewrite::Always,
                Some("a@contoso.com"),
                SenderDecision::Rewrite(mailbox.clone()),
            ),
            (
                SenderRewrite::Always,
                Some("Relay@Contoso.com"),
                SenderDecision::Keep,
            ),
            (SenderRewrite::Always, None, SenderDecision::Keep),
            (SenderRewrite::Never, None, SenderDecision::Keep),
        ];
        for (rewrite, sender, expected) in cases {
            let mut rule = access("m365", contoso.clone());
            rule.sender_rewrite = rewrite;
            let grant = Grant::new(Principal::User("u".into()), rule);
            let sender = sender.map(|s| Address::parse(s).unwrap());
            assert_eq!(
                grant.decide(sender.as_ref()),
                expected,
                "{rewrite:?} {sender:?}"
            );
        }
    }

    fn route(account: &str, mailbox: &str, send_as: &[&str]) -> AccountRoute {
        AccountRoute {
            account: account.into(),
            mailbox: Address::parse(mailbox).unwrap(),
            send_as: send_as
                .iter()
                .map(|p| SenderPattern::parse(p).unwrap())
                .collect(),
            sender_name: None,
        }
    }

    #[test]
    fn routing_by_sender_table() {
        let mut rule = access(
            "invoices",
            vec![SenderPattern::parse("*@contoso.com").unwrap()],
        );
        rule.account_mailbox = Address::parse("invoices@contoso.com").unwrap();
        rule.routes = vec![
            route("invoices", "invoices@contoso.com", &["billing@contoso.com"]),
            route("alerts", "alerts@contoso.com", &["*@sales.contoso.com"]),
            route("outside", "relay@fabrikam.example", &[]),
        ];
        let grant = Grant::new(Principal::User("u".into()), rule);
        let a = |s: &str| Address::parse(s).unwrap();
        // (envelope sender, From: addresses, the account chosen)
        let cases: [(Option<&str>, &[&str], Option<&str>); 10] = [
            (Some("invoices@contoso.com"), &[], Some("invoices")),
            (
                Some("BILLING@contoso.com"),
                &["invoices@contoso.com"],
                Some("invoices"),
            ),
            (Some("alerts@contoso.com"), &[], Some("alerts")),
            // A send_as pattern outside allowed_senders is not usable by this client.
            (Some("eu@sales.contoso.com"), &[], None),
            // The mailbox of a listed account is usable, as with one account today.
            (Some("relay@fabrikam.example"), &[], Some("outside")),
            // Envelope and From: of two accounts: none, never a split.
            (Some("alerts@contoso.com"), &["invoices@contoso.com"], None),
            (
                Some("invoices@contoso.com"),
                &["invoices@contoso.com", "alerts@contoso.com"],
                None,
            ),
            // The null sender is routed by From: alone.
            (None, &["alerts@contoso.com"], Some("alerts")),
            (None, &[], None),
            (Some("nobody@contoso.com"), &[], None),
        ];
        for (envelope, from, expected) in cases {
            let envelope = envelope.map(a);
            let from: Vec<Address> = from.iter().map(|f| a(f)).collect();
            let chosen = grant.route_covering(envelope.as_ref(), &from);
            assert_eq!(
                chosen.map(|r| r.account.as_str()),
                expected,
                "{envelope:?} {from:?}"
            );
        }
        let through = grant.through(&grant.routes[1]);
        assert_eq!(through.account, "alerts");
        assert_eq!(through.account_mailbox.as_str(), "alerts@contoso.com");
        assert_eq!(through.routes, grant.routes);
    }
}
