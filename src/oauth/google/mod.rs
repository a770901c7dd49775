//! Google Workspace, the second identity provider behind the provider seam
//! (`super::token::TokenProvider`): the OAuth 2.0 JWT bearer grant (RFC 7523) of a service
//! account with domain-wide delegation (google-workspace.md §2): an RS256 JWT with `iss` = the
//! key's `client_email`, `sub` = the mailbox, `scope` = `https://mail.google.com/`, `aud` = the
//! key's `token_uri`, `iat` = now, `exp` = now + 1 h, posted to `token_uri`. `key` reads the
//! JSON key file, `refusal` decodes Google's errors with their fixes.
//!
//! Invariants: the signed assertion goes into the request body only; an error names what
//! failed (Google's decoded answer, or the failure below HTTP), never the request. One grant
//! serves one (key, subject) pair: the registry keys providers by both.

pub mod key;
pub mod refusal;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::token::{IssuedToken, TokenError};
use key::ServiceAccountKey;
use refusal::GoogleRefusal;

/// The only scope Gmail accepts over SMTP with XOAUTH2 (`gmail.send` is refused there).
pub const GMAIL_SCOPE: &str = "https://mail.google.com/";
/// The grant type of the request.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `exp - iat` of an assertion: Google accepts at most one hour.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// One (service account key, subject) pair's JWT bearer grant.
#[derive(Debug)]
pub(super) struct JwtBearerGrant {
    key: Arc<ServiceAccountKey>,
    subject: String,
    scope: String,
}

impl JwtBearerGrant {
    pub(super) fn new(key: Arc<ServiceAccountKey>, subject: &str, scope: &str) -> JwtBearerGrant {
        JwtBearerGrant {
            key,
            subject: subject.to_owned(),
            scope: scope.to_owned(),
        }
    }

    /// The token URL (the key file's `token_uri`).
    pub(super) fn endpoint(&self) -> &str {
        &self.key.token_uri
    }

    /// What to check when Gmail refused a token this grant obtained.
    pub(super) fn refusal_diagnosis(&self, mailbox: &str) -> String {
        format!(
            "Gmail refused a token Google issued for {mailbox}: check that domain-wide \
             delegation for client ID {} lists exactly {GMAIL_SCOPE} ({}), that {mailbox} is an \
             active user with Gmail turned on, and that mailbox is the address XOAUTH2 sends",
            self.key.client_id,
            refusal::DELEGATION_PATH
        )
    }

    /// One token request with a freshly signed assertion.
    ///
    /// # Errors
    /// [`TokenError`]: Google's refusal (decoded), an unreachable endpoint, an answer that is
    /// no token, or an assertion that could not be signed.
    pub(super) async fn request(&self, http: &reqwest::Client) -> Result<IssuedToken, TokenError> {
        let assertion = self
            .assertion(SystemTime::now())
            .map_err(TokenError::Credential)?;
        let form = [
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion.as_str()),
        ];
        let (status, body) = super::http::post_form(http, self.endpoint(), &form).await?;
        if status != 200 {
            return Err(TokenError::RefusedByGoogle(GoogleRefusal::from_response(
                status, &body,
            )));
        }
        super::http::issued_token(&body).map_err(TokenError::BadAnswer)
    }

    /// The signed JWT for `now`.
    ///
    /// # Errors
    /// The clock is before 1970, or signing failed.
    pub(super) fn assertion(&self, now: SystemTime) -> Result<String, String> {
        assertion(&self.key, &self.subject, &self.scope, now)
    }
}

#[derive(serde::Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    kid: &'a str,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// The RS256 JWT of a JWT bearer grant for `subject` (see the module docs).
///
/// # Errors
/// The clock is before 1970, or signing failed.
pub fn assertion(
    key: &ServiceAccountKey,
    subject: &str,
    scope: &str,
    now: SystemTime,
) -> Result<String, String> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the system clock is set before 1970".to_owned())?
        .as_secs();
    let header = Header {
        alg: "RS256",
        typ: "JWT",
        kid: &key.private_key_id,
    };
    let claims = Claims {
        iss: &key.client_email,
        sub: subject,
        scope,
        aud: &key.token_uri,
        iat,
        exp: iat.saturating_add(ASSERTION_LIFETIME.as_secs()),
    };
    super::jws::compact(&header, &claims, |input| key.sign_rs256(input))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::testkit::google_workspace::GoogleWorkspace;

    #[test]
    fn the_assertion_carries_googles_claims_and_verifies_with_the_public_key() {
        let (_, test_key) = GoogleWorkspace::healthy("relay@example.com").unwrap();
        let json = test_key
            .to_json("https://oauth2.googleapis.com/token")
            .to_string();
        let key = ServiceAccountKey::from_json(&json).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let jwt = assertion(&key, "relay@example.com", GMAIL_SCOPE, now).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!jwt.contains('='));
        let decode = |part: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        let header = decode(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], test_key.private_key_id.as_str());
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], "relay@relay-project.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], "relay@example.com");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["iat"], 1_800_000_000u64);
        assert_eq!(claims["exp"], 1_800_003_600u64);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            test_key.public_key_der().unwrap(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
    }
}
