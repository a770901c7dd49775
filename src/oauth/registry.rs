//! One token provider per app: accounts that ask the same token endpoint for the same client
//! ID, scope and credential (the same secret value or the same certificate), with the same
//! renewal and trusted roots, share one [`TokenProvider`] and so one cached token: one token
//! request per token lifetime for the app, however many mailboxes send through it.
//!
//! Invariants: a [`ProviderKey`] holds no secret (a secret is represented by its SHA-256
//! digest, a certificate by its SHA-256 thumbprint) and its `Debug` shows only a digest prefix;
//! [`TokenProviders`] is rebuilt for every configuration and takes a provider over from the
//! previous set when its key is unchanged, so a reload keeps the cached token of an app whose
//! identity did not change, and drops providers no account uses any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::app::{ClientApp, ClientCredential};
use super::token::TokenProvider;

/// What makes two accounts' tokens interchangeable.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProviderKey {
    endpoint: String,
    client_id: String,
    scope: String,
    /// `secret:<sha256 of the value>` or `certificate:<sha256 thumbprint>:<algorithm>`.
    credential: String,
    renew_before: Duration,
    /// SHA-256 over the extra trusted roots (`ca_file`): the HTTPS client depends on them.
    roots: String,
}

impl ProviderKey {
    /// The key of `app`.
    pub fn of(app: &ClientApp) -> ProviderKey {
        let sha256 = |bytes: &[u8]| {
            crate::vocab::hex::lower(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
        };
        let credential = match &app.credential {
            ClientCredential::Secret(secret) => {
                format!("secret:{}", sha256(secret.expose().as_bytes()))
            }
            ClientCredential::Certificate {
                certificate,
                algorithm,
            } => format!(
                "certificate:{}:{}",
                certificate.sha256_thumbprint_hex(),
                algorithm.jws_name()
            ),
            // One token per (key, subject): Google tokens act for one user each.
            ClientCredential::ServiceAccount { key, subject } => format!(
                "service-account:{}:{}",
                key.fingerprint(),
                subject.to_ascii_lowercase()
            ),
        };
        let mut roots = ring::digest::Context::new(&ring::digest::SHA256);
        for root in &app.extra_roots {
            roots.update(&(root.len() as u64).to_be_bytes());
            roots.update(root);
        }
        ProviderKey {
            endpoint: app.token_endpoint.clone(),
            client_id: app.client_id.clone(),
            scope: app.scope.clone(),
            credential,
            renew_before: app.renew_before,
            roots: crate::vocab::hex::lower(roots.finish().as_ref()),
        }
    }
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, digest) = self
            .credential
            .split_once(':')
            .unwrap_or(("?", &self.credential));
        f.debug_struct("ProviderKey")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field(
                "credential",
                &format!("{kind}:{}…", digest.get(..12).unwrap_or("")),
            )
            .finish_non_exhaustive()
    }
}

/// The token providers of one configuration, by key.
#[derive(Debug, Default)]
pub struct TokenProviders {
    providers: HashMap<ProviderKey, Arc<TokenProvider>>,
}

impl TokenProviders {
    /// The provider for `app`: the one already in this set for its key, else `previous`'s
    /// (with its cached token), else a new one.
    ///
    /// # Errors
    /// When a new provider's HTTPS client cannot be built (an unusable extra root).
    pub fn provider(
        &mut self,
        app: &ClientApp,
        previous: &TokenProviders,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<TokenProvider>, String> {
        let key = ProviderKey::of(app);
        if let Some(provider) = self.providers.get(&key) {
            return Ok(Arc::clone(provider));
        }
        let provider = match previous.providers.get(&key) {
            Some(provider) => Arc::clone(provider),
            None => TokenProvider::new(app, Arc::clone(metrics))?,
        };
        self.providers.insert(key, Arc::clone(&provider));
        Ok(provider)
    }

    /// How many distinct apps (providers) the set holds.
    pub fn len(&self) -> usize {
        self.providers.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::vocab::secret::Secret;

    fn app(account: &str, client_id: &str, secret: &str, scope: &str) -> ClientApp {
        ClientApp {
            account: account.to_string(),
            token_endpoint: "https://login.example/t/oauth2/v2.0/token".to_string(),
            client_id: client_id.to_string(),
            tenant_id: "t".to_string(),
            scope: scope.to_string(),
            credential: ClientCredential::Secret(Secret::new(secret)),
            renew_before: Duration::from_secs(300),
            extra_roots: Vec::new(),
        }
    }

    const SCOPE: &str = "https://outlook.office365.com/.default";

    #[test]
    fn accounts_of_one_app_share_a_provider_and_others_do_not() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let none = TokenProviders::default();
        let mut set = TokenProviders::default();
        let a = set
            .provider(&app("a", "c1", "s1", SCOPE), &none, &metrics)
            .unwrap();
        let b = set
            .provider(&app("b", "c1", "s1", SCOPE), &none, &metrics)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "same app, same secret, same scope");
        for (why, other) in [
            ("another secret", app("c", "c1", "s2", SCOPE)),
            ("another client", app("c", "c2", "s1", SCOPE)),
            ("another scope", app("c", "c1", "s1", "https://x/.default")),
        ] {
            let mut alone = TokenProviders::default();
            let p = alone.provider(&other, &set, &metrics).unwrap();
            assert!(!Arc::ptr_eq(&a, &p), "{why}");
        }
        let mut renew = app("c", "c1", "s1", SCOPE);
        renew.renew_before = Duration::from_secs(60);
        assert_ne!(
            ProviderKey::of(&renew),
            ProviderKey::of(&app("a", "c1", "s1", SCOPE))
        );
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_new_set_takes_over_unchanged_providers_only() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut old = TokenProviders::default();
        let kept = old
            .provider(
                &app("a", "c1", "s1", SCOPE),
                &TokenProviders::default(),
                &metrics,
            )
            .unwrap();
        let rotated = old
            .provider(
                &app("b", "c2", "old", SCOPE),
                &TokenProviders::default(),
                &metrics,
            )
            .unwrap();
        let mut new = TokenProviders::default();
        // The same app under another account name keeps the cached token.
        let same = new
            .provider(&app("renamed", "c1", "s1", SCOPE), &old, &metrics)
            .unwrap();
        assert!(Arc::ptr_eq(&kept, &same));
        let fresh = new
            .provider(&app("b", "c2", "new", SCOPE), &old, &metrics)
            .unwrap();
        assert!(
            !Arc::ptr_eq(&rotated, &fresh),
            "a rotated secret gets a new provider"
        );
        assert_eq!(new.len(), 2);
    }

    #[test]
    fn google_providers_are_one_per_key_and_subject() {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (workspace, test_key) =
            crate::testkit::google_workspace::GoogleWorkspace::healthy("a@example.com").unwrap();
        let load = |key: &crate::testkit::ServiceAccountKey| {
            Arc::new(
                crate::oauth::google::key::ServiceAccountKey::from_json(
                    &key.to_json("https://oauth2.googleapis.com/token")
                        .to_string(),
                )
                .unwrap(),
            )
        };
        let google = |account: &str,
                      key: &Arc<crate::oauth::google::key::ServiceAccountKey>,
                      subject: &str| {
            ClientApp {
                account: account.to_string(),
                token_endpoint: key.token_uri.clone(),
                client_id: key.client_id.clone(),
                tenant_id: String::new(),
                scope: "https://mail.google.com/".to_string(),
                credential: ClientCredential::ServiceAccount {
                    key: Arc::clone(key),
                    subject: subject.to_string(),
                },
                renew_before: Duration::from_secs(300),
                extra_roots: Vec::new(),
            }
        };
        let key = load(&test_key);
        let none = TokenProviders::default();
        let mut set = TokenProviders::default();
        let a = set
            .provider(&google("a", &key, "a@example.com"), &none, &metrics)
            .unwrap();
        // The same file loaded again (a reload) and the subject in other case: the same provider.
        let again = load(&test_key);
        let same = set
            .provider(&google("a2", &again, "A@example.com"), &none, &metrics)
            .unwrap();
        assert!(Arc::ptr_eq(&a, &same));
        let other_subject = set
            .provider(&google("b", &key, "b@example.com"), &none, &metrics)
            .unwrap();
        assert!(
            !Arc::ptr_eq(&a, &other_subject),
            "a token acts for one user"
        );
        let rotated = load(&workspace.rotate_key(&test_key.client_email).unwrap());
        let new_key = set
            .provider(&google("c", &rotated, "a@example.com"), &none, &metrics)
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &new_key), "a new key gets a new provider");
        assert_eq!(set.len(), 3);
        assert!(
            !format!("{:?}", ProviderKey::of(&google("a", &key, "a@example.com")))
                .contains("PRIVATE")
        );
    }

    #[test]
    fn the_key_shows_no_secret() {
        let key = ProviderKey::of(&app("a", "c1", "very-secret-value", SCOPE));
        let shown = format!("{key:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("secret:") && shown.contains("c1"), "{shown}");
    }
}
