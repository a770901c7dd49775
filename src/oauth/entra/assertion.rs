//! Client assertions for Entra's client-credentials grant (`private_key_jwt`,
//! exchange-online.md §1.3): a JWT signed with the app's [`ClientCertificate`], sent instead
//! of `client_secret`.
//!
//! Invariant: an assertion is a compact JWS (`crate::oauth::jws`) whose header names the
//! certificate with the thumbprint whose hash matches its name (`x5t#S256` = SHA-256 for
//! PS256, `x5t` = SHA-1 for RS256); every assertion has a fresh random `jti` and lives
//! [`ASSERTION_LIFETIME`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use serde::{Deserialize, Serialize};

use super::certificate::ClientCertificate;

/// How long a client assertion is valid (`exp - nbf`); Entra accepts at most 10 minutes.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// Signature algorithm and thumbprint header of client assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssertionAlgorithm {
    /// RSA-PSS with SHA-256, header `x5t#S256` (SHA-256 thumbprint): Microsoft's current form.
    #[default]
    Ps256,
    /// RSA PKCS#1 v1.5 with SHA-256, header `x5t` (SHA-1 thumbprint): the legacy form.
    Rs256,
}

impl AssertionAlgorithm {
    /// The JWS `alg` value (`PS256` or `RS256`).
    pub fn jws_name(self) -> &'static str {
        match self {
            AssertionAlgorithm::Ps256 => "PS256",
            AssertionAlgorithm::Rs256 => "RS256",
        }
    }

    /// The header field carrying the certificate thumbprint (`x5t#S256` or `x5t`).
    pub fn thumbprint_header(self) -> &'static str {
        match self {
            AssertionAlgorithm::Ps256 => "x5t#S256",
            AssertionAlgorithm::Rs256 => "x5t",
        }
    }
}

impl ClientCertificate {
    /// Builds and signs a client assertion for `client_id` at the token URL `token_endpoint`
    /// (which becomes `aud`; it must be the exact URL the request is sent to): `iss` = `sub` =
    /// `client_id`, a random UUID-shaped `jti`, `nbf` = `iat` = `now`, `exp` = `now` + 300 s.
    ///
    /// An expired certificate still signs: Entra's answer (AADSTS700027) is the clearest
    /// diagnosis, and [`ClientCertificate::expiry_warning`] explains it beforehand.
    ///
    /// # Errors
    /// The clock is before 1970, or the system random generator or RSA signing failed.
    pub fn client_assertion(
        &self,
        algorithm: AssertionAlgorithm,
        client_id: &str,
        token_endpoint: &str,
        now: SystemTime,
    ) -> Result<String, String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is set before 1970".to_owned())?
            .as_secs();
        let now = i64::try_from(now).map_err(|_| "the system clock is out of range".to_owned())?;
        let thumbprint = match algorithm {
            AssertionAlgorithm::Ps256 => URL_SAFE_NO_PAD.encode(self.sha256_thumbprint()),
            AssertionAlgorithm::Rs256 => URL_SAFE_NO_PAD.encode(self.sha1_thumbprint()),
        };
        let header = AssertionHeader {
            alg: algorithm.jws_name(),
            typ: "JWT",
            x5t_s256: (algorithm == AssertionAlgorithm::Ps256).then(|| thumbprint.clone()),
            x5t: (algorithm == AssertionAlgorithm::Rs256).then_some(thumbprint),
        };
        let lifetime = i64::try_from(ASSERTION_LIFETIME.as_secs()).unwrap_or(300);
        let claims = AssertionClaims {
            aud: token_endpoint,
            exp: now.saturating_add(lifetime),
            iss: client_id,
            jti: random_uuid()?,
            nbf: now,
            sub: client_id,
            iat: now,
        };
        let padding: &'static dyn ring::signature::RsaEncoding = match algorithm {
            AssertionAlgorithm::Ps256 => &RSA_PSS_SHA256,
            AssertionAlgorithm::Rs256 => &RSA_PKCS1_SHA256,
        };
        crate::oauth::jws::compact(&header, &claims, |input| {
            self.sign(padding, input)
                .map_err(|_| "signing the client assertion with the private key failed".to_owned())
        })
    }
}

/// A random version-4 UUID in lowercase hyphenated form.
fn random_uuid() -> Result<String, String> {
    let mut bytes: [u8; 16] =
        crate::vocab::random::secret_bytes().map_err(|error| error.to_string())?;
    if let Some(b) = bytes.get_mut(6) {
        *b = (*b & 0x0f) | 0x40;
    }
    if let Some(b) = bytes.get_mut(8) {
        *b = (*b & 0x3f) | 0x80;
    }
    let hex = crate::vocab::hex::upper(&bytes).to_ascii_lowercase();
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    ))
}

#[derive(Serialize)]
struct AssertionHeader {
    alg: &'static str,
    typ: &'static str,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5t: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    exp: i64,
    iss: &'a str,
    jti: String,
    nbf: i64,
    sub: &'a str,
    iat: i64,
}
