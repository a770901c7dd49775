//! Who a client is and what it may do: authenticated `[[user]]`s and trusted `[[network]]`s,
//! each bound to one upstream account and a list of allowed sender patterns.
//!
//! Invariants: a client is trusted only through a [`Grant`] (never an open relay); a password
//! is checked against an argon2 PHC hash (or a clear `password` from the config) and an unknown
//! user costs the same hash work as a known one; this module knows nothing of sockets or disk.
//! Password checks are CPU-bound: callers run [`Policy::verify_password`] off the async reactor.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use ipnet::IpNet;

use crate::secret::Secret;
use crate::smtp::proto::address::Address;

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

/// What a trusted client may do: send through `account` as one of `allowed_senders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub principal: Principal,
    pub account: String,
    pub allowed_senders: Vec<SenderPattern>,
}

impl Grant {
    /// True when the grant lets the client use `sender`. The null sender `<>` is allowed: a
    /// trusted mail server (e.g. Postfix using the relay as its smarthost) sends its bounces
    /// with it, and the relay never answers such a message with a bounce of its own.
    pub fn allows_sender(&self, sender: Option<&Address>) -> bool {
        match sender {
            Some(address) => self
                .allowed_senders
                .iter()
                .any(|p| p.matches(address.as_str())),
            None => true,
        }
    }
}

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
        }
    }

    /// Add a `[[user]]`.
    pub fn add_user(
        &mut self,
        username: &str,
        credential: Credential,
        account: &str,
        allowed_senders: Vec<SenderPattern>,
    ) -> Result<(), PolicyError> {
        if let Credential::Hash(phc) = &credential {
            PasswordHash::new(phc).map_err(|e| PolicyError::BadHash(e.to_string()))?;
        }
        let grant = Arc::new(Grant {
            principal: Principal::User(username.to_string()),
            account: account.to_string(),
            allowed_senders,
        });
        self.users
            .insert(username.to_string(), UserEntry { credential, grant });
        Ok(())
    }

    /// Add a `[[network]]`.
    pub fn add_network(&mut self, net: IpNet, account: &str, allowed_senders: Vec<SenderPattern>) {
        let grant = Arc::new(Grant {
            principal: Principal::Network(net),
            account: account.to_string(),
            allowed_senders,
        });
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

    /// Check a username and password. CPU-bound (argon2): run it with `spawn_blocking`.
    /// Usernames match exactly, or case-insensitively when no exact entry exists.
    pub fn verify_password(&self, username: &str, password: &Secret) -> Option<Arc<Grant>> {
        let entry = self.users.get(username).or_else(|| {
            self.users
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(username))
                .map(|(_, entry)| entry)
        });
        let Some(entry) = entry else {
            // Spend the same work as for a real user so timing does not reveal user names.
            let _ = verify_phc(&self.decoy_hash, password);
            return None;
        };
        let ok = match &entry.credential {
            Credential::Hash(phc) => verify_phc(phc, password),
            Credential::Clear(clear) => {
                let expected =
                    ring::digest::digest(&ring::digest::SHA256, clear.expose().as_bytes());
                let given =
                    ring::digest::digest(&ring::digest::SHA256, password.expose().as_bytes());
                expected.as_ref() == given.as_ref()
            }
        };
        ok.then(|| Arc::clone(&entry.grant))
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

fn verify_phc(phc: &str, password: &Secret) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn decoy_hash() -> String {
    let mut salt = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    hash_password(&Secret::new(base64_no_pad(&salt))).unwrap_or_default()
}

fn base64_no_pad(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Hash a password into an argon2id PHC string with a random salt (for `hash-password`).
pub fn hash_password(password: &Secret) -> Result<String, PolicyError> {
    let mut salt_bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt_bytes)
        .map_err(|_| PolicyError::BadHash("no randomness available".into()))?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PolicyError::BadHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PolicyError::BadHash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in ["", "@", "a@", "*@", "*@-x", "a b@c.example"] {
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
                "m365",
                vec![SenderPattern::Any],
            )
            .unwrap();
        policy
            .add_user(
                "legacy",
                Credential::Clear(Secret::new("pw")),
                "m365",
                vec![],
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
                .add_user("bad", Credential::Hash("not-a-hash".into()), "m365", vec![])
                .is_err()
        );
    }

    #[test]
    fn most_specific_network_wins_and_mapped_addresses_match() {
        let mut policy = Policy::new();
        policy.add_network("192.168.0.0/16".parse().unwrap(), "wide", vec![]);
        policy.add_network("192.168.10.0/24".parse().unwrap(), "narrow", vec![]);
        let ip: IpAddr = "192.168.10.7".parse().unwrap();
        assert_eq!(policy.network_grant(ip).unwrap().account, "narrow");
        let mapped: IpAddr = "::ffff:192.168.1.1".parse().unwrap();
        assert_eq!(policy.network_grant(mapped).unwrap().account, "wide");
        assert!(policy.network_grant("10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn null_sender_is_allowed_to_trusted_clients() {
        let grant = Grant {
            principal: Principal::User("u".into()),
            account: "a".into(),
            allowed_senders: vec![SenderPattern::Any],
        };
        assert!(grant.allows_sender(None));
        assert!(grant.allows_sender(Some(&Address::parse("x@y.example").unwrap())));
    }
}
