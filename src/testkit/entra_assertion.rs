//! Verification of certificate credentials (`private_key_jwt` client assertions,
//! exchange-online.md §1.3) by the fake token endpoint, against the certificates registered on
//! the app in the [`Directory`](super::Directory).
//!
//! Check order and answers (the first failing check answers):
//!
//! | check | answer |
//! |---|---|
//! | `client_assertion_type` is the jwt-bearer URN | absent: 400 AADSTS900144; other: 400 invalid_request AADSTS50027 |
//! | three base64url segments, JSON header | 400 invalid_request AADSTS50027 |
//! | header `x5t#S256` (else `x5t`) names a registered certificate | 401 invalid_client AADSTS700027 "…not registered…" |
//! | that certificate is within its validity | 401 invalid_client AADSTS700027 "The key used is expired" |
//! | `alg` is PS256 or RS256 | 401 invalid_client AADSTS700027 |
//! | the signature verifies with the certificate's RSA key for `alg` | 401 invalid_client AADSTS700027 |
//! | JSON claims | 400 invalid_request AADSTS50027 |
//! | `aud` is the token URL the request was sent to | 401 invalid_client AADSTS50012 |
//! | `iss` is the client id | 401 invalid_client AADSTS700021 |
//! | `sub` equals `iss` | 401 invalid_client AADSTS50048 |
//! | `exp`, `nbf` present; `exp` > now − 5 min, `nbf` ≤ now + 5 min, `exp − nbf` ≤ 10 min | 401 invalid_client AADSTS700024 (missing: 50027) |
//! | `jti` is a non-empty string | 400 invalid_request AADSTS50027 |
//!
//! Choices where Microsoft's behaviour is not documented (§1.6 lists 700027 and 50012 for
//! signature problems): a bad signature and an unsupported `alg` answer 700027, because that is
//! what a relay that signs with the wrong key or padding sees in practice; 50012 is kept for
//! the audience, whose real text ("audience claim does not match Realm issuer") is known. The
//! codes 700021, 50048 and 700024 are from memory (**unconfirmed**). The thumbprint header
//! name must match its hash (SHA-256 under `x5t#S256`, SHA-1 under `x5t`) but not the `alg`:
//! RS256 with `x5t#S256` is accepted, as Entra does. `jti` values are not remembered (no
//! replay detection).
//!
//! `aud` is accepted when it is `https://{Host}/{tenant}/oauth2/v2.0/token` where `{Host}` is
//! the request's `Host` header (case-insensitive) and `{tenant}` names this tenant in any form
//! (GUID or a verified domain, any case), so a relay that posts to the domain form and builds
//! `aud` from the same URL passes; another host, path or tenant does not.
//!
//! Invariant: success means every check above passed; nothing here logs the assertion.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::Value;

use super::directory::{AppRegistration, Directory};
use super::directory_certificates::RegisteredCertificate;
use super::entra_errors::{EntraError, entra_timestamp};
use super::jwt::unix_seconds;
use super::random::hex_lower;

/// The only `client_assertion_type` Entra accepts.
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Allowed clock skew between client and server.
const SKEW_SECONDS: i64 = 300;
/// Longest accepted assertion lifetime (`exp - nbf`).
const MAX_LIFETIME_SECONDS: i64 = 600;

/// Where and when the assertion arrived.
pub(crate) struct AssertionContext<'a> {
    /// The tenant directory (to resolve the tenant named in `aud`).
    pub directory: &'a Directory,
    /// The app named by `client_id`.
    pub app: &'a AppRegistration,
    /// The request's `Host` header, if any.
    pub host: Option<&'a str>,
    /// The `{tenant}` segment of the request path.
    pub tenant: &'a str,
    /// The server's clock.
    pub now: SystemTime,
}

/// Checks a client assertion; `Ok` means the client proved possession of a registered key.
///
/// # Errors
/// The [`EntraError`] of the first failing check (see the module docs).
pub(crate) fn check_client_assertion(
    context: &AssertionContext<'_>,
    assertion_type: Option<&str>,
    assertion: &str,
) -> Result<(), EntraError> {
    match assertion_type {
        None => return Err(EntraError::missing_parameter("client_assertion_type")),
        Some(JWT_BEARER_ASSERTION) => {}
        Some(other) => return Err(EntraError::unsupported_assertion_type(other)),
    }
    let client_id = context.app.client_id.as_str();
    let mut segments = assertion.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(EntraError::malformed_assertion(
            "the client assertion is not a compact JWS of three segments",
        ));
    };
    let header = decode_json(header_b64, "header")?;
    let (thumbprint, certificate) = find_certificate(context.app, &header);
    let Some(certificate) = certificate else {
        return Err(EntraError::assertion_key_not_registered(
            client_id,
            &thumbprint,
        ));
    };
    if certificate.is_expired(context.now) {
        return Err(EntraError::assertion_key_expired(client_id, &thumbprint));
    }
    let algorithm = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let verification: &'static dyn ring::signature::VerificationAlgorithm = match algorithm {
        "PS256" => &RSA_PSS_2048_8192_SHA256,
        "RS256" => &RSA_PKCS1_2048_8192_SHA256,
        other => return Err(EntraError::assertion_unsupported_algorithm(other)),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| EntraError::malformed_assertion("the signature is not base64url"))?;
    let public_key = certificate.rsa_public_key.as_deref().unwrap_or_default();
    let signing_input_len = header_b64.len() + 1 + claims_b64.len();
    let signing_input = assertion.get(..signing_input_len).unwrap_or_default();
    UnparsedPublicKey::new(verification, public_key)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| EntraError::assertion_bad_signature(client_id, &thumbprint))?;

    let claims = decode_json(claims_b64, "claims")?;
    check_audience(context, &claims)?;
    let issuer = string_claim(&claims, "iss").unwrap_or_default();
    if !issuer.eq_ignore_ascii_case(client_id) {
        return Err(EntraError::assertion_issuer_mismatch(issuer, client_id));
    }
    if string_claim(&claims, "sub") != Some(issuer) {
        return Err(EntraError::assertion_subject_mismatch());
    }
    check_time_range(&claims, context.now)?;
    if string_claim(&claims, "jti").is_none_or(str::is_empty) {
        return Err(EntraError::malformed_assertion(
            "the client assertion has no 'jti' claim",
        ));
    }
    Ok(())
}

/// The thumbprint the header names (uppercase hex, for messages) and the registered
/// certificate it matches, if any.
fn find_certificate<'a>(
    app: &'a AppRegistration,
    header: &Value,
) -> (String, Option<&'a RegisteredCertificate>) {
    let named = |field: &str| {
        header
            .get(field)
            .and_then(Value::as_str)
            .map(|text| URL_SAFE_NO_PAD.decode(text).unwrap_or_default())
    };
    let (raw, found) = match (named("x5t#S256"), named("x5t")) {
        (Some(raw), _) => {
            let found = app.certificates.iter().find(|c| c.sha256 == raw);
            (raw, found)
        }
        (None, Some(raw)) => {
            let found = app.certificates.iter().find(|c| c.sha1 == raw);
            (raw, found)
        }
        (None, None) => (Vec::new(), None),
    };
    (hex_lower(&raw).to_ascii_uppercase(), found)
}

fn check_audience(context: &AssertionContext<'_>, claims: &Value) -> Result<(), EntraError> {
    let audience = string_claim(claims, "aud").unwrap_or_default();
    let host = context.host.unwrap_or("");
    let expected = format!("https://{host}/{}/oauth2/v2.0/token", context.tenant);
    let accepted = audience
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(aud_host, path)| {
            let (tenant, tail) = path.split_once('/')?;
            Some(
                !host.is_empty()
                    && aud_host.eq_ignore_ascii_case(host)
                    && tail == "oauth2/v2.0/token"
                    && context.directory.resolves_tenant(tenant),
            )
        })
        .unwrap_or(false);
    if accepted {
        Ok(())
    } else {
        Err(EntraError::assertion_audience_mismatch(audience, &expected))
    }
}

fn check_time_range(claims: &Value, now: SystemTime) -> Result<(), EntraError> {
    let number = |name: &str| claims.get(name).and_then(Value::as_i64);
    let (Some(exp), Some(nbf)) = (number("exp"), number("nbf")) else {
        return Err(EntraError::malformed_assertion(
            "the client assertion needs numeric 'exp' and 'nbf' claims",
        ));
    };
    let now_secs = unix_seconds(now);
    let range = || {
        format!(
            "Current time: {}, assertion valid from {} until {}.",
            entra_timestamp(now),
            timestamp_text(nbf),
            timestamp_text(exp)
        )
    };
    if exp <= now_secs - SKEW_SECONDS {
        return Err(EntraError::assertion_time_range(&format!(
            "{} The assertion has expired.",
            range()
        )));
    }
    if nbf > now_secs + SKEW_SECONDS {
        return Err(EntraError::assertion_time_range(&format!(
            "{} The assertion is not valid yet.",
            range()
        )));
    }
    if exp.saturating_sub(nbf) > MAX_LIFETIME_SECONDS {
        return Err(EntraError::assertion_time_range(&format!(
            "{} Its lifetime (exp - nbf) of {} s exceeds the maximum of {MAX_LIFETIME_SECONDS} s.",
            range(),
            exp.saturating_sub(nbf)
        )));
    }
    Ok(())
}

fn timestamp_text(unix: i64) -> String {
    let magnitude = std::time::Duration::from_secs(unix.unsigned_abs());
    let at = if unix >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    at.map_or_else(|| unix.to_string(), entra_timestamp)
}

fn string_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

fn decode_json(segment: &str, what: &str) -> Result<Value, EntraError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(Value::is_object)
        .ok_or_else(|| {
            EntraError::malformed_assertion(&format!(
                "the client assertion's {what} is not base64url-encoded JSON"
            ))
        })
}
