//! The Google side an administrator configures, shared by the Google token endpoint
//! ([`FakeGoogleToken`](super::FakeGoogleToken)) and the Gmail SMTP emulator
//! ([`FakeGmail`](super::FakeGmail)): the Workspace domain with its users and groups (Admin
//! console), service accounts and their keys (Google Cloud console), domain-wide delegation
//! entries (Admin console → Security → API controls → Domain-wide delegation), and the access
//! tokens the token endpoint has issued (what Gmail checks XOAUTH2 against).
//!
//! [`GoogleWorkspace`] is a cheap-to-clone handle (`Arc<Mutex<..>>`); a test changes the
//! configuration at run time (delete or rotate a key, revoke delegation, suspend a user) and
//! the next request sees it at once (the real service takes minutes to 24 h to propagate).
//!
//! Invariants:
//! - addresses, domains and delegation client ids are compared case-insensitively (stored
//!   lowercase);
//! - only public key material is stored per service account; the private half lives in the
//!   [`ServiceAccountKey`] handed to the test;
//! - access tokens are opaque random strings (`ya29.` + 120 base64url characters); the
//!   registry forgets expired ones when a new one is added, so it stays bounded by the number
//!   of live tokens.
//!
//! Departure: a delegation entry is stored exactly as entered (numeric id or, the classic
//! mistake, the client email), because the token endpoint reports the two differently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::TestkitError;
use super::google_key::{ServiceAccountKey, new_numeric_client_id};
use super::random::random_b64url;

/// The only scope Gmail accepts over SMTP/IMAP/POP with XOAUTH2.
pub const GMAIL_FULL_SCOPE: &str = "https://mail.google.com/";
/// The Gmail API's narrow send scope (refused by SMTP).
pub const GMAIL_SEND_SCOPE: &str = "https://www.googleapis.com/auth/gmail.send";

/// A Workspace user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoogleUser {
    /// Primary address (lowercase).
    pub address: String,
    /// Suspended in the Admin console.
    pub suspended: bool,
}

/// A public key registered on a service account.
#[derive(Clone, Debug)]
pub struct RegisteredKey {
    /// `private_key_id` of the key file.
    pub private_key_id: String,
    /// RSAPublicKey DER.
    pub public_key: Vec<u8>,
}

/// A service account of a Cloud project.
#[derive(Clone, Debug)]
pub struct ServiceAccount {
    /// `client_email` (lowercase).
    pub client_email: String,
    /// Numeric client id.
    pub client_id: String,
    /// Cloud project id.
    pub project_id: String,
    /// Keys not deleted.
    pub keys: Vec<RegisteredKey>,
}

/// An access token issued by the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedGoogleToken {
    /// The service account that asked.
    pub client_email: String,
    /// The key whose signature was verified.
    pub private_key_id: String,
    /// The impersonated user (`sub`), lowercase; `None` for the service account itself.
    pub subject: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When it stops working.
    pub expires_at: SystemTime,
}

#[derive(Debug, Default)]
struct WorkspaceState {
    domains: Vec<String>,
    users: BTreeMap<String, GoogleUser>,
    groups: BTreeSet<String>,
    service_accounts: BTreeMap<String, ServiceAccount>,
    delegations: BTreeMap<String, Vec<String>>,
    tokens: HashMap<String, IssuedGoogleToken>,
}

/// Shared, mutable Workspace + Cloud configuration; clones share the same state.
#[derive(Clone)]
pub struct GoogleWorkspace {
    state: Arc<Mutex<WorkspaceState>>,
}

impl std::fmt::Debug for GoogleWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("GoogleWorkspace")
            .field("domains", &state.domains)
            .field("users", &state.users.len())
            .field("service_accounts", &state.service_accounts.len())
            .field("live_tokens", &state.tokens.len())
            .finish_non_exhaustive()
    }
}

impl GoogleWorkspace {
    /// An empty Workspace owning `domain`.
    pub fn new(domain: &str) -> GoogleWorkspace {
        let workspace = GoogleWorkspace {
            state: Arc::new(Mutex::new(WorkspaceState::default())),
        };
        workspace.add_domain(domain);
        workspace
    }

    fn lock(&self) -> MutexGuard<'_, WorkspaceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- Admin console: domain, users, groups -----------------------------------------------

    /// Adds a (secondary) domain.
    pub fn add_domain(&self, domain: &str) {
        let domain = domain.to_ascii_lowercase();
        let mut state = self.lock();
        if !state.domains.contains(&domain) {
            state.domains.push(domain);
        }
    }

    /// The domains, primary first.
    pub fn domains(&self) -> Vec<String> {
        self.lock().domains.clone()
    }

    /// Creates an active user.
    pub fn add_user(&self, address: &str) {
        let address = address.to_ascii_lowercase();
        self.lock().users.insert(
            address.clone(),
            GoogleUser {
                address,
                suspended: false,
            },
        );
    }

    /// Deletes a user.
    pub fn remove_user(&self, address: &str) {
        self.lock().users.remove(&address.to_ascii_lowercase());
    }

    /// Suspends (`true`) or restores (`false`) a user.
    ///
    /// # Errors
    /// [`TestkitError::UnknownMailbox`].
    pub fn set_user_suspended(&self, address: &str, suspended: bool) -> Result<(), TestkitError> {
        self.lock()
            .users
            .get_mut(&address.to_ascii_lowercase())
            .map(|user| user.suspended = suspended)
            .ok_or_else(|| TestkitError::UnknownMailbox(address.to_owned()))
    }

    /// The user, if any.
    pub fn user(&self, address: &str) -> Option<GoogleUser> {
        self.lock()
            .users
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    /// Creates a Google Group address (not a user: it cannot be impersonated).
    pub fn add_group(&self, address: &str) {
        self.lock().groups.insert(address.to_ascii_lowercase());
    }

    /// Whether `address` is a group.
    pub fn is_group(&self, address: &str) -> bool {
        self.lock().groups.contains(&address.to_ascii_lowercase())
    }

    // ----- Cloud console: service accounts and keys -------------------------------------------

    /// Creates service account `name@project_id.iam.gserviceaccount.com` with one JSON key.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn create_service_account(
        &self,
        project_id: &str,
        name: &str,
    ) -> Result<ServiceAccountKey, TestkitError> {
        let client_email =
            format!("{name}@{project_id}.iam.gserviceaccount.com").to_ascii_lowercase();
        let client_id = new_numeric_client_id();
        let key = ServiceAccountKey::generate(project_id, &client_email, &client_id)?;
        let registered = RegisteredKey {
            private_key_id: key.private_key_id.clone(),
            public_key: key.public_key_der()?,
        };
        self.lock().service_accounts.insert(
            client_email.clone(),
            ServiceAccount {
                client_email,
                client_id,
                project_id: project_id.to_owned(),
                keys: vec![registered],
            },
        );
        Ok(key)
    }

    /// Keys → Add key → Create new key → JSON.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`] (no such service account) or key generation failed.
    pub fn create_key(&self, client_email: &str) -> Result<ServiceAccountKey, TestkitError> {
        let account = self
            .service_account(client_email)
            .ok_or_else(|| TestkitError::UnknownApp(client_email.to_owned()))?;
        let key = ServiceAccountKey::generate(
            &account.project_id,
            &account.client_email,
            &account.client_id,
        )?;
        let registered = RegisteredKey {
            private_key_id: key.private_key_id.clone(),
            public_key: key.public_key_der()?,
        };
        self.with_account(client_email, |account| account.keys.push(registered))?;
        Ok(key)
    }

    /// Deletes one key: assertions signed with it then fail with "Invalid JWT Signature.".
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn delete_key(&self, client_email: &str, private_key_id: &str) -> Result<(), TestkitError> {
        self.with_account(client_email, |account| {
            account.keys.retain(|k| k.private_key_id != private_key_id);
        })
    }

    /// Rotation: a new key is created and every older key deleted.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`] or key generation failed.
    pub fn rotate_key(&self, client_email: &str) -> Result<ServiceAccountKey, TestkitError> {
        let key = self.create_key(client_email)?;
        self.with_account(client_email, |account| {
            account
                .keys
                .retain(|k| k.private_key_id == key.private_key_id);
        })?;
        Ok(key)
    }

    /// Deletes the service account (assertions then fail with "account not found").
    pub fn delete_service_account(&self, client_email: &str) {
        self.lock()
            .service_accounts
            .remove(&client_email.to_ascii_lowercase());
    }

    /// A copy of the service account, if any.
    pub fn service_account(&self, client_email: &str) -> Option<ServiceAccount> {
        self.lock()
            .service_accounts
            .get(&client_email.to_ascii_lowercase())
            .cloned()
    }

    fn with_account<T>(
        &self,
        client_email: &str,
        f: impl FnOnce(&mut ServiceAccount) -> T,
    ) -> Result<T, TestkitError> {
        self.lock()
            .service_accounts
            .get_mut(&client_email.to_ascii_lowercase())
            .map(f)
            .ok_or_else(|| TestkitError::UnknownApp(client_email.to_owned()))
    }

    // ----- Admin console: domain-wide delegation ----------------------------------------------

    /// Adds (or replaces) a delegation entry: `client_id` as entered (the numeric id is right;
    /// the client email is the classic mistake) with its scopes.
    pub fn grant_delegation(&self, client_id: &str, scopes: &[&str]) {
        let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.lock()
            .delegations
            .insert(client_id.to_ascii_lowercase(), scopes);
    }

    /// Removes the delegation entry of `client_id` (as entered).
    pub fn revoke_delegation(&self, client_id: &str) {
        self.lock()
            .delegations
            .remove(&client_id.to_ascii_lowercase());
    }

    /// The scopes delegated to `client_id` (as entered), if an entry exists.
    pub fn delegated_scopes(&self, client_id: &str) -> Option<Vec<String>> {
        self.lock()
            .delegations
            .get(&client_id.to_ascii_lowercase())
            .cloned()
    }

    // ----- issued tokens ----------------------------------------------------------------------

    /// Registers a new access token and returns it.
    pub fn issue_token(&self, token: IssuedGoogleToken) -> String {
        let value = format!("ya29.{}", random_b64url(90));
        let now = SystemTime::now();
        let mut state = self.lock();
        state.tokens.retain(|_, issued| issued.expires_at > now);
        state.tokens.insert(value.clone(), token);
        value
    }

    /// The issued token, if known (expired or not).
    pub fn issued_token(&self, token: &str) -> Option<IssuedGoogleToken> {
        self.lock().tokens.get(token).cloned()
    }

    /// A healthy setup: domain `example.com`, user `mailbox`, service account
    /// `relay@relay-project.iam.gserviceaccount.com` delegated `https://mail.google.com/` by
    /// its numeric id. Returns the workspace and the account's key.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn healthy(mailbox: &str) -> Result<(GoogleWorkspace, ServiceAccountKey), TestkitError> {
        let domain = mailbox.rsplit_once('@').map_or("example.com", |(_, d)| d);
        let workspace = GoogleWorkspace::new(domain);
        workspace.add_user(mailbox);
        let key = workspace.create_service_account("relay-project", "relay")?;
        workspace.grant_delegation(&key.client_id, &[GMAIL_FULL_SCOPE]);
        Ok((workspace, key))
    }
}
