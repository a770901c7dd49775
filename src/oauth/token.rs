//! The token provider of one account: Microsoft identity platform client credentials.
//!
//! Invariants:
//! - At most one token request per account is in flight: callers queue on one async mutex
//!   and the first one fetches while the others then reuse its result.
//! - A token is reused until `renew_before` ahead of its expiry (or half its lifetime, for
//!   unusually short tokens), so under steady load there is one request per token lifetime.
//! - A failed request is remembered for a moment, so concurrent workers do not stampede the
//!   endpoint (Entra penalises repeated identical requests, AADSTS50196).
//! - The client secret and the token never appear in a log line or an error: errors carry
//!   Entra's own explanation (decoded AADSTS code), never the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::aadsts::{TokenFailure, TokenRetry};
use super::app::{ClientApp, ClientCredential};
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
}

/// Why no token could be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Entra answered with an error (decoded and explained).
    #[error("{}", .0.operator_message())]
    Refused(TokenFailure),
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
            TokenError::Unreachable(_) => {
                "check that this host can reach the authority over HTTPS (DNS, firewall, HTTPS_PROXY)"
            }
            TokenError::BadAnswer(_) => {
                "check that authority is the identity platform's base URL (e.g. https://login.microsoftonline.com, without the tenant)"
            }
            TokenError::UntrustedCertificate(_) => {
                "if a TLS-inspecting proxy or firewall sits between this host and Microsoft, put its CA certificate in the account's ca_file; otherwise check authority and this host's clock"
            }
            TokenError::Credential(_) => {
                "check client_certificate: one PEM file with the certificate and its RSA private key"
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    token: Option<AccessToken>,
    failure: Option<(Instant, TokenError)>,
}

/// Obtains, caches and renews the tokens of one account.
#[derive(Debug)]
pub struct TokenProvider {
    endpoint: String,
    client_id: String,
    scope: String,
    credential: ClientCredential,
    renew_before: Duration,
    http: reqwest::Client,
    state: Mutex<State>,
    requests: AtomicU64,
    account: String,
    metrics: Arc<crate::metrics::Metrics>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<String>,
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
        let tls = crate::tls::client_config(&app.extra_roots)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("smtp-oauth-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
        Ok(Arc::new(TokenProvider {
            endpoint: app.token_endpoint.clone(),
            client_id: app.client_id.clone(),
            scope: app.scope.clone(),
            credential: app.credential.clone(),
            renew_before: app.renew_before,
            http,
            state: Mutex::new(State::default()),
            requests: AtomicU64::new(0),
            account: app.account.clone(),
            metrics,
        }))
    }

    /// Token requests sent so far (for metrics and tests).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a fresh one.
    ///
    /// # Errors
    /// [`TokenError`] with the explanation of what failed.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
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
        match self.fetch().await {
            Ok(token) => {
                tracing::info!(
                    endpoint = %self.endpoint,
                    expires_in_s = token.expires_at.duration_since(SystemTime::now()).map_or(0, |d| d.as_secs()),
                    "access token obtained"
                );
                state.failure = None;
                state.token = Some(token.clone());
                Ok(token)
            }
            Err(error) => {
                self.metrics
                    .token_failures
                    .get_or_create(&crate::metrics::Metrics::account(&self.account))
                    .inc();
                state.token = None;
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
        }
    }

    async fn fetch(&self) -> Result<AccessToken, TokenError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .token_requests
            .get_or_create(&crate::metrics::Metrics::account(&self.account))
            .inc();
        let (key, value) = match &self.credential {
            ClientCredential::Secret(secret) => ("client_secret", Secret::new(secret.expose())),
            ClientCredential::Certificate {
                certificate,
                algorithm,
            } => {
                let assertion = certificate
                    .client_assertion(
                        *algorithm,
                        &self.client_id,
                        &self.endpoint,
                        SystemTime::now(),
                    )
                    .map_err(|e| TokenError::Credential(e.to_string()))?;
                ("client_assertion", Secret::new(assertion))
            }
        };
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", self.scope.as_str()),
            (key, value.expose()),
        ];
        if key == "client_assertion" {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
        }
        let response = self
            .http
            .post(&self.endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| transport_error(&e))?;
        if status != 200 {
            return Err(TokenError::Refused(TokenFailure::from_response(
                status, &body,
            )));
        }
        let parsed: TokenResponse =
            serde_json::from_str(&body).map_err(|_| TokenError::BadAnswer("not JSON".into()))?;
        let value = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenError::BadAnswer("no access_token".into()))?;
        if let Some(kind) = &parsed.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(TokenError::BadAnswer(format!(
                "token_type is {kind}, not Bearer"
            )));
        }
        let lifetime = match parsed.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .map(Duration::from_secs)
        .ok_or_else(|| TokenError::BadAnswer("no expires_in".into()))?;
        let early = self.renew_before.min(lifetime / 2);
        Ok(AccessToken {
            value: Secret::new(value),
            expires_at: SystemTime::now() + lifetime,
            renew_at: Instant::now() + lifetime.saturating_sub(early),
        })
    }
}

/// A reqwest error in one line, without the request body (which holds the secret; reqwest
/// never prints it, but this keeps the promise explicit).
/// A failed request: a refused certificate is a configuration problem, the rest an outage.
fn transport_error(error: &reqwest::Error) -> TokenError {
    match refused_certificate(error) {
        Some(problem) => TokenError::UntrustedCertificate(problem),
        None => TokenError::Unreachable(describe_reqwest_error(error)),
    }
}

/// The certificate error in `error`'s causes, if the TLS handshake refused the peer's
/// certificate. rustls errors arrive wrapped in (nested) `io::Error`s, whose `source` skips
/// the wrapped error, so those are opened with `get_ref`.
fn refused_certificate(error: &reqwest::Error) -> Option<String> {
    fn tls_error<'a>(
        mut error: &'a (dyn std::error::Error + 'static),
    ) -> Option<&'a rustls::Error> {
        for _ in 0..8 {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            error = error.downcast_ref::<std::io::Error>()?.get_ref()?;
        }
        None
    }
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(
            tls @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) = tls_error(inner)
        {
            return Some(tls.to_string());
        }
        source = inner.source();
    }
    None
}

fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        detail = inner.to_string();
        source = inner.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Log, daily, how long the account's certificate credential has left, from 30 days before
/// it expires (an error once it has expired). Ends with `cancel`.
pub async fn watch_certificate_expiry(
    account: String,
    credential: ClientCredential,
    cancel: tokio_util::sync::CancellationToken,
) {
    let ClientCredential::Certificate { certificate, .. } = credential else {
        return;
    };
    loop {
        let now = SystemTime::now();
        if let Some(warning) = certificate.expiry_warning(now) {
            if certificate.is_expired(now) {
                tracing::error!(%account, thumbprint = %certificate.sha1_thumbprint_hex(), "{warning}");
            } else {
                tracing::warn!(%account, thumbprint = %certificate.sha1_thumbprint_hex(), days_left = certificate.days_until_expiry(now), "{warning}");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(24 * 3600)) => {}
        }
    }
}
