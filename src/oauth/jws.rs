//! Compact JSON Web Signatures (RFC 7515) as OAuth uses them to prove a client's identity:
//! Entra's client assertions today, a JWT-bearer grant (RFC 7523, e.g. a Google service
//! account) tomorrow. The caller brings the header, the claims and the signing function, so
//! no key ever passes through here.
//!
//! Invariant: the result is `b64url(header).b64url(claims).b64url(signature)`, base64url
//! without padding, the signature taken over `b64url(header).b64url(claims)`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

/// Serialise `header` and `claims`, sign them with `sign` and return the compact JWS.
///
/// # Errors
/// When a part cannot be encoded as JSON, or `sign`'s error.
pub fn compact(
    header: &impl Serialize,
    claims: &impl Serialize,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<String, String> {
    let signing_input = format!("{}.{}", b64_json(header)?, b64_json(claims)?);
    let signature = sign(signing_input.as_bytes())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(&signature)
    ))
}

/// base64url (no padding) of a value's JSON, for both JWS segments.
fn b64_json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| format!("encoding the JWT failed: {e}"))
}
