//! The JWT bearer grant checks of the fake Google token endpoint (google-workspace.md §2)
//! and its error catalogue: pure functions from (workspace, assertion, audience, clock) to an
//! [`IssuedGoogleToken`] or a [`GoogleTokenError`].
//!
//! Check order (the first failing check answers; Google's real order is not documented):
//!
//! | check | answer |
//! |---|---|
//! | three base64url segments, JSON header and claims | 400 invalid_grant "Invalid JWT: …" |
//! | header `alg` is RS256 | 400 invalid_grant "Invalid JWT Signature." |
//! | `iss` names a service account | 400 invalid_grant "account not found" |
//! | the signature verifies with the account's key named by `kid` (any key when no `kid`) | 400 invalid_grant "Invalid JWT Signature." |
//! | `aud` is this endpoint's URL, `https://oauth2.googleapis.com/token` or the old `…/oauth2/v4/token` | 400 invalid_grant "Invalid JWT audience." (*guess*) |
//! | `iat`, `exp` numbers; `iat` ≤ `exp` ≤ `iat` + 3600; `iat` ≤ now + 300 s; `exp` > now − 300 s | 400 invalid_grant "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim." |
//! | `scope` present, non-empty, space-separated known URLs (no commas) | 400 invalid_scope "Invalid OAuth scope or ID token audience provided." |
//! | no `sub`: token for the service account itself | issued |
//! | `sub` is the account's own email | 400 invalid_grant "Invalid email or User ID" |
//! | `sub` is a group | 401 unauthorized_client "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested." |
//! | delegation entry for the numeric client id | none, but one under the client email: 401 unauthorized_client "Client is unauthorized…"; none at all: 401 unauthorized_client "Unauthorized client or scope in request." |
//! | the entry grants the requested scopes | none of them: 401 unauthorized_client "Client is unauthorized…"; some: 400 access_denied "Requested client not authorized." (*text is a guess*) |
//! | `sub` is an active user of the domain | 400 invalid_grant "Invalid email or User ID" (suspended too) |
//!
//! HTTP statuses: the fact sheet gives 401 for `unauthorized_client` (n8n's note); every other
//! error uses RFC 6749's 400. The 300 s clock-skew allowance is not documented by Google (the
//! fact sheet reports rejections near 65 min); the 3600 s lifetime cap is the documented one.
//!
//! Invariants: a success means every row passed; the assertion is never logged.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::{Value, json};

use super::google_key::GOOGLE_TOKEN_URI;
use super::google_workspace::{GoogleWorkspace, IssuedGoogleToken, ServiceAccount};
use super::jwt::unix_seconds;

/// The grant type of the two-legged flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest accepted `exp - iat`.
pub const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// Clock skew tolerated on `iat` (future) and `exp` (past).
pub const CLOCK_SKEW_ALLOWANCE: i64 = 300;
/// The older audience from Google's docs, still accepted.
const LEGACY_AUDIENCE: &str = "https://www.googleapis.com/oauth2/v4/token";

pub(crate) const TIME_WINDOW_TEXT: &str = "Invalid JWT: Token must be a short-lived token (60 \
     minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
pub(crate) const INVALID_SIGNATURE_TEXT: &str = "Invalid JWT Signature.";
pub(crate) const INVALID_SUBJECT_TEXT: &str = "Invalid email or User ID";
pub(crate) const UNAUTHORIZED_METHOD_TEXT: &str = "Client is unauthorized to retrieve access \
     tokens using this method, or client not authorized for any of the scopes requested.";
pub(crate) const UNAUTHORIZED_SCOPE_TEXT: &str = "Unauthorized client or scope in request.";
pub(crate) const INVALID_SCOPE_TEXT: &str = "Invalid OAuth scope or ID token audience provided.";

/// One rejection: HTTP status and the OAuth error body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoogleTokenError {
    /// HTTP status.
    pub status: u16,
    /// OAuth `error`.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

impl GoogleTokenError {
    pub(crate) fn new(status: u16, error: &'static str, description: &str) -> GoogleTokenError {
        GoogleTokenError {
            status,
            error,
            description: description.to_owned(),
        }
    }

    fn invalid_grant(description: &str) -> GoogleTokenError {
        GoogleTokenError::new(400, "invalid_grant", description)
    }

    fn unauthorized(description: &str) -> GoogleTokenError {
        GoogleTokenError::new(401, "unauthorized_client", description)
    }

    /// `{"error": …, "error_description": …}`.
    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// What the assertion asked for, as far as it was readable (for records; no secret).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssertionSummary {
    /// `kid` of the header.
    pub key_id: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `scope`.
    pub scope: Option<String>,
}

/// Reads the claims without checking anything (for the request record).
pub fn summarize(assertion: &str) -> AssertionSummary {
    let mut segments = assertion.split('.');
    let header = segments.next().and_then(decode_json);
    let claims = segments.next().and_then(decode_json);
    let text = |value: Option<&Value>, name: &str| {
        value
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    AssertionSummary {
        key_id: text(header.as_ref(), "kid"),
        issuer: text(claims.as_ref(), "iss"),
        subject: text(claims.as_ref(), "sub").map(|s| s.to_ascii_lowercase()),
        scope: text(claims.as_ref(), "scope"),
    }
}

/// Checks `assertion` posted to `endpoint_url` at `now`; on success the token to issue
/// (not yet registered), valid for `lifetime`.
///
/// # Errors
/// The first failing check (module docs).
pub fn check_assertion(
    workspace: &GoogleWorkspace,
    assertion: &str,
    endpoint_url: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<IssuedGoogleToken, GoogleTokenError> {
    let malformed = || GoogleTokenError::invalid_grant("Invalid JWT: not a compact JWS");
    let mut segments = assertion.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(malformed());
    };
    let header = decode_json(header_b64).ok_or_else(malformed)?;
    let claims = decode_json(claims_b64).ok_or_else(malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(GoogleTokenError::invalid_grant(INVALID_SIGNATURE_TEXT));
    }
    let issuer = string_claim(&claims, "iss").unwrap_or_default();
    let account = workspace
        .service_account(issuer)
        .ok_or_else(|| GoogleTokenError::invalid_grant("account not found"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| GoogleTokenError::invalid_grant(INVALID_SIGNATURE_TEXT))?;
    let signing_input = format!("{header_b64}.{claims_b64}");
    let kid = header.get("kid").and_then(Value::as_str);
    let verified_key = account
        .keys
        .iter()
        .filter(|key| kid.is_none_or(|kid| kid == key.private_key_id))
        .find(|key| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key.public_key)
                .verify(signing_input.as_bytes(), &signature)
                .is_ok()
        })
        .ok_or_else(|| GoogleTokenError::invalid_grant(INVALID_SIGNATURE_TEXT))?;
    let audience = string_claim(&claims, "aud").unwrap_or_default();
    if ![endpoint_url, GOOGLE_TOKEN_URI, LEGACY_AUDIENCE].contains(&audience) {
        return Err(GoogleTokenError::invalid_grant("Invalid JWT audience."));
    }
    check_time_window(&claims, unix_seconds(now))?;
    let scopes = parse_scopes(string_claim(&claims, "scope"))?;
    let subject = string_claim(&claims, "sub").map(str::to_ascii_lowercase);
    if let Some(subject) = &subject {
        check_delegation(workspace, &account, subject, &scopes)?;
    }
    Ok(IssuedGoogleToken {
        client_email: account.client_email.clone(),
        private_key_id: verified_key.private_key_id.clone(),
        subject,
        scopes,
        expires_at: now.checked_add(lifetime).unwrap_or(now),
    })
}

fn check_time_window(claims: &Value, now: i64) -> Result<(), GoogleTokenError> {
    let window = || GoogleTokenError::invalid_grant(TIME_WINDOW_TEXT);
    let (Some(iat), Some(exp)) = (
        claims.get("iat").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(window());
    };
    let in_window = iat <= exp
        && exp.saturating_sub(iat) <= MAX_ASSERTION_LIFETIME
        && iat <= now.saturating_add(CLOCK_SKEW_ALLOWANCE)
        && exp > now.saturating_sub(CLOCK_SKEW_ALLOWANCE);
    if in_window { Ok(()) } else { Err(window()) }
}

/// Splits `scope` at spaces; every scope must be an `https://` URL without commas.
fn parse_scopes(scope: Option<&str>) -> Result<Vec<String>, GoogleTokenError> {
    let invalid = || GoogleTokenError::new(400, "invalid_scope", INVALID_SCOPE_TEXT);
    let scopes: Vec<String> = scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = |s: &String| s.starts_with("https://") && !s.contains(',');
    if scopes.is_empty() || !scopes.iter().all(valid) {
        return Err(invalid());
    }
    Ok(scopes)
}

fn check_delegation(
    workspace: &GoogleWorkspace,
    account: &ServiceAccount,
    subject: &str,
    scopes: &[String],
) -> Result<(), GoogleTokenError> {
    if subject == account.client_email {
        return Err(GoogleTokenError::invalid_grant(INVALID_SUBJECT_TEXT));
    }
    if workspace.is_group(subject) {
        return Err(GoogleTokenError::unauthorized(UNAUTHORIZED_METHOD_TEXT));
    }
    let Some(granted) = workspace.delegated_scopes(&account.client_id) else {
        let by_email = workspace.delegated_scopes(&account.client_email).is_some();
        return Err(GoogleTokenError::unauthorized(if by_email {
            UNAUTHORIZED_METHOD_TEXT
        } else {
            UNAUTHORIZED_SCOPE_TEXT
        }));
    };
    let allowed = scopes.iter().filter(|s| granted.contains(s)).count();
    if allowed == 0 {
        return Err(GoogleTokenError::unauthorized(UNAUTHORIZED_METHOD_TEXT));
    }
    if allowed < scopes.len() {
        return Err(GoogleTokenError::new(
            400,
            "access_denied",
            "Requested client not authorized.",
        ));
    }
    match workspace.user(subject) {
        Some(user) if !user.suspended => Ok(()),
        _ => Err(GoogleTokenError::invalid_grant(INVALID_SUBJECT_TEXT)),
    }
}

fn string_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

fn decode_json(segment: &str) -> Option<Value> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(Value::is_object)
}
