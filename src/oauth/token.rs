//! The provider seam: the token provider of one account ([`TokenProvider`]), the token it
//! hands out ([`AccessToken`]) and why it could not ([`TokenError`]). Delivery and `diagnose`
//! only ever speak to these; how a token is obtained is the grant of an identity provider, a
//! module of `oauth`: `entra` (Microsoft Entra client credentials with a secret or a
//! certificate) and `google` (a Google service account's JWT bearer grant for one subject).
//! Each has its `ProviderGrant` variant and its refusal as a [`TokenError`] variant; the cache,
//! the single flight and the renewal below are shared.
//!
//! Invariants:
//! - One provider serves every account of one app ([`super::registry`]); its metrics are
//!   labelled with the account whose delivery needed the token ([`TokenProvider::token_for`]).
//! - At most one token request per provider is in flight: callers queue on one async mutex
//!   and the first one fetches while the others then reuse its result.
//! - A token is reused until `renew_before` ahead of its expiry (or half its lifetime, for
//!   unusually short tokens), so under steady load there is one request per token lifetime.
//! - A failed request is remembered for a moment, so concurrent workers do not stampede the
//!   endpoint (Entra penalises repeated identical requests, AADSTS50196).
//! - The client secret and the token never appear in a log line or an error: errors carry
//!   the provider's own explanation (for Entra, the decoded AADSTS code), never the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::app::ClientApp;
use super::entra::aadsts::{EntraRefusal, TokenRetry};
use crate::vocab::secret::Secret;

/// Default: renew a cached token this long before it expires.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Time limit for one token request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failure is served from memory before the endpoint is asked again.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// An access token. Its value is a [`Secret`].
#[derive(Debug, Clone)]
pub struct AccessToken {
    value: Secret,
    /// Wall-clock expiry, for logs and diagnostics.
    pub expires_at: SystemTime,
    renew_at: Instant,
}

impl AccessToken {
    /// The bearer token, for the XOAUTH2 string only.
    pub fn secret(&self) -> &Secret {
        &self.value
    }

    /// True once the provider would fetch a new token instead of handing this one out
    /// (for transports that send the token with every request, like Graph).
    pub fn due_for_renewal(&self) -> bool {
        Instant::now() >= self.renew_at
    }
}

/// Why no token could be obtained. The failures below HTTP are every provider's; a refusal
/// is decoded by its provider (a second provider adds its own `Refused…` variant).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Entra answered with an error (decoded and explained).
    #[error("{}", .0.operator_message())]
    Refused(EntraRefusal),
    /// Google's token endpoint answered with an error (decoded and explained).
    #[error("{}", .0.operator_message())]
    RefusedByGoogle(super::google::refusal::GoogleRefusal),
    /// The endpoint could not be reached (DNS, TCP, TLS, timeout).
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// Entra answered 200 but the body was not a token response.
    #[error("the token endpoint's answer is not a token response: {0}")]
    BadAnswer(String),
    /// The endpoint's TLS certificate was refused (unknown issuer, wrong name, expired).
    #[error("the token endpoint's TLS certificate was refused: {0}")]
    UntrustedCertificate(String),
    /// The relay could not build its credential (the client assertion could not be signed).
    #[error("cannot sign the client assertion: {0}")]
    Credential(String),
}

impl TokenError {
    /// True when an administrator must change something (wrong secret, tenant, consent …);
    /// false for outages and throttling that clear by themselves.
    pub fn is_configuration(&self) -> bool {
        match self {
            TokenError::Refused(failure) => failure.retry() == TokenRetry::Never,
            TokenError::RefusedByGoogle(refusal) => refusal.is_configuration(),
            TokenError::UntrustedCertificate(_) | TokenError::Credential(_) => true,
            TokenError::Unreachable(_) | TokenError::BadAnswer(_) => false,
        }
    }

    /// What the administrator should change, in one line.
    pub fn fix(&self) -> &'static str {
        match self {
            TokenError::Refused(failure) => match failure.explanation() {
                Some(explanation) => explanation.fix,
                None if matches!(failure.http_status(), 404 | 405) => {
                    "no token endpoint at that URL: authority is the base URL only (e.g. https://login.microsoftonline.com, no tenant or path), tenant_id goes in its own key"
                }
                None => {
                    "read the token endpoint's answer above; check tenant_id, client_id, the credential, scope and authority"
                }
            },
            TokenError::RefusedByGoogle(refusal) => refusal.fix(),
            TokenError::Unreachable(_) => {
                "check that this host can reach the token endpoint over HTTPS (Microsoft: authority; Google: the key file's token_uri) (DNS, firewall, HTTPS_PROXY)"
            }
            TokenError::BadAnswer(_) => {
                "check that authority is the identity platform's base URL (e.g. https://login.microsoftonline.com, without the tenant), or for Google that the key file's token_uri is https://oauth2.googleapis.com/token"
            }
            TokenError::UntrustedCertificate(_) => {
                "if a TLS-inspecting proxy or firewall sits between this host and Microsoft or Google, put its CA certificate in the account's ca_file; otherwise check authority (or the key file's token_uri) and this host's clock"
            }
            TokenError::Credential(_) => {
                "check client_certificate: one PEM file with the certificate and its RSA private key"
            }
        }
    }
}

/// What a provider can tell about its token without showing it: for the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenStatus {
    /// When the cached token expires (none cached: never fetched, refused, or invalidated).
    pub valid_until: Option<SystemTime>,
    /// The last failed request (when, and the provider's explanation), until one succeeds.
    pub last_error: Option<(SystemTime, String)>,
}

#[derive(Debug, Default)]
struct State {
    token: Option<AccessToken>,
    failure: Option<(Instant, TokenError)>,
}

/// How a provider obtains one token: one variant per identity provider, each a module of
/// `oauth` (see the module docs).
#[derive(Debug)]
enum ProviderGrant {
    /// Microsoft Entra client credentials (a client secret or a certificate).
    Entra(super::entra::ClientCredentialsGrant),
    /// A Google service account's JWT bearer grant for one subject.
    Google(super::google::JwtBearerGrant),
}

/// What a grant obtained: the token and how long it lives.
pub(super) struct IssuedToken {
    pub(super) value: Secret,
    pub(super) lifetime: Duration,
}

/// Obtains, caches and renews the tokens of one app (shared by its accounts), whatever the
/// identity provider.
#[derive(Debug)]
pub struct TokenProvider {
    grant: ProviderGrant,
    renew_before: Duration,
    http: reqwest::Client,
    state: Mutex<State>,
    requests: AtomicU64,
    /// The account the provider was built for: the metric label of [`TokenProvider::token`].
    account: String,
    metrics: Arc<crate::metrics::Metrics>,
    /// Read without waiting for a request in flight (which holds `state`).
    status: std::sync::Mutex<TokenStatus>,
}

impl TokenProvider {
    /// A provider for the tokens of `app`.
    ///
    /// # Errors
    /// When the HTTPS client cannot be built (an unusable extra root certificate).
    pub fn new(
        app: &ClientApp,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Arc<TokenProvider>, String> {
        let http = super::http::client(&app.extra_roots, REQUEST_TIMEOUT)?;
        Ok(Arc::new(TokenProvider {
            grant: match &app.credential {
                super::app::ClientCredential::ServiceAccount { key, subject } => {
                    ProviderGrant::Google(super::google::JwtBearerGrant::new(
                        std::sync::Arc::clone(key),
                        subject,
                        &app.scope,
                    ))
                }
                _ => ProviderGrant::Entra(super::entra::ClientCredentialsGrant::new(app)),
            },
            renew_before: app.renew_before,
            http,
            state: Mutex::new(State::default()),
            requests: AtomicU64::new(0),
            account: app.account.clone(),
            metrics,
            status: std::sync::Mutex::new(TokenStatus::default()),
        }))
    }

    /// The URL tokens are requested from, for logs.
    pub fn endpoint(&self) -> &str {
        match &self.grant {
            ProviderGrant::Entra(grant) => grant.endpoint(),
            ProviderGrant::Google(grant) => grant.endpoint(),
        }
    }

    /// When the mail server refused `token` twice, what the provider can tell about why
    /// (for Entra: the token's claims against the app's settings), for `mailbox`.
    pub fn refusal_diagnosis(&self, token: &AccessToken, mailbox: &str) -> Option<String> {
        match &self.grant {
            ProviderGrant::Entra(grant) => {
                grant.refusal_diagnosis(token.secret().expose(), mailbox)
            }
            ProviderGrant::Google(grant) => Some(grant.refusal_diagnosis(mailbox)),
        }
    }

    /// Token requests sent so far (for metrics and tests).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The cached token's expiry and the last failure, never the token.
    pub fn status(&self) -> TokenStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, change: impl FnOnce(&mut TokenStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A valid token for the account the provider was built for: [`TokenProvider::token_for`].
    ///
    /// # Errors
    /// [`TokenError`] with the explanation of what failed.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        self.token_for(&self.account).await
    }

    /// A valid token: the cached one, or a fresh one. A request it sends (or fails) is
    /// counted for `account`, the account whose delivery needs the token.
    ///
    /// # Errors
    /// [`TokenError`] with the explanation of what failed.
    pub async fn token_for(&self, account: &str) -> Result<AccessToken, TokenError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(token) = &state.token
            && now < token.renew_at
        {
            return Ok(token.clone());
        }
        if let Some((until, error)) = &state.failure
            && now < *until
        {
            return Err(error.clone());
        }
        match self.fetch(account).await {
            Ok(token) => {
                tracing::info!(
                    %account,
                    endpoint = %self.endpoint(),
                    expires_in_s = token.expires_at.duration_since(SystemTime::now()).map_or(0, |d| d.as_secs()),
                    "access token obtained"
                );
                state.failure = None;
                state.token = Some(token.clone());
                self.set_status(|status| {
                    status.valid_until = Some(token.expires_at);
                    status.last_error = None;
                });
                Ok(token)
            }
            Err(error) => {
                self.metrics
                    .token_failures
                    .get_or_create(&crate::metrics::Metrics::account(account))
                    .inc();
                state.token = None;
                self.set_status(|status| {
                    status.valid_until = None;
                    status.last_error = Some((SystemTime::now(), error.to_string()));
                });
                state.failure = Some((Instant::now() + FAILURE_MEMORY, error.clone()));
                Err(error)
            }
        }
    }

    /// Forget the cached token if it is still `token` (Exchange refused it).
    pub async fn invalidate(&self, token: &AccessToken) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|t| t.value == token.value) {
            state.token = None;
            self.set_status(|status| status.valid_until = None);
        }
    }

    async fn fetch(&self, account: &str) -> Result<AccessToken, TokenError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .token_requests
            .get_or_create(&crate::metrics::Metrics::account(account))
            .inc();
        let issued = match &self.grant {
            ProviderGrant::Entra(grant) => grant.request(&self.http).await?,
            ProviderGrant::Google(grant) => grant.request(&self.http).await?,
        };
        let early = self.renew_before.min(issued.lifetime / 2);
        Ok(AccessToken {
            value: issued.value,
            expires_at: SystemTime::now() + issued.lifetime,
            renew_at: Instant::now() + issued.lifetime.saturating_sub(early),
        })
    }
}
