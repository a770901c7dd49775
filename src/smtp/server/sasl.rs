//! SASL PLAIN (RFC 4616) and LOGIN decoding for inbound AUTH. Pure, no I/O.
//!
//! Liberal in what real devices send: base64 with or without padding, surrounding spaces,
//! an authorization identity equal to the user or empty. Strict about the rest: a different
//! authorization identity (proxy authentication) is refused, NUL bytes inside names are
//! refused, and decoded values are capped in length.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::vocab::secret::Secret;

/// Longest username or password accepted.
pub const MAX_CREDENTIAL_LEN: usize = 1024;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a SASL response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("the response is not valid base64")]
    BadBase64,
    #[error("the response is not a valid PLAIN message")]
    BadPlain,
    #[error("authorizing as another identity is not supported")]
    ProxyNotAllowed,
    #[error("the client cancelled the authentication")]
    Cancelled,
}

/// `334` prompt text for LOGIN's username (`Username:`).
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
/// `334` prompt text for LOGIN's password (`Password:`).
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decode one base64 response line; `*` is the client's cancel.
pub fn decode_response(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(Vec::new());
    }
    let decoded = LENIENT.decode(line).map_err(|_| SaslError::BadBase64)?;
    if decoded.len() > 3 * MAX_CREDENTIAL_LEN {
        return Err(SaslError::BadBase64);
    }
    Ok(decoded)
}

/// Decode a PLAIN message (`authzid NUL authcid NUL passwd`) into username and password.
pub fn decode_plain(line: &str) -> Result<(String, Secret), SaslError> {
    let decoded = decode_response(line)?;
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::BadPlain);
    };
    let authzid = std::str::from_utf8(authzid).map_err(|_| SaslError::BadPlain)?;
    let username = std::str::from_utf8(authcid).map_err(|_| SaslError::BadPlain)?;
    let password = std::str::from_utf8(password).map_err(|_| SaslError::BadPlain)?;
    if username.is_empty()
        || username.len() > MAX_CREDENTIAL_LEN
        || password.len() > MAX_CREDENTIAL_LEN
    {
        return Err(SaslError::BadPlain);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(SaslError::ProxyNotAllowed);
    }
    Ok((username.to_string(), Secret::new(password)))
}

/// Decode a LOGIN username or password line.
pub fn decode_login_field(line: &str) -> Result<String, SaslError> {
    let decoded = decode_response(line)?;
    if decoded.len() > MAX_CREDENTIAL_LEN || decoded.contains(&0) {
        return Err(SaslError::BadPlain);
    }
    String::from_utf8(decoded).map_err(|_| SaslError::BadPlain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn plain_table() {
        let padded = b64(b"\0printer\0pw");
        let unpadded = padded.trim_end_matches('=').to_string();
        assert_eq!(decode_plain(&padded).unwrap().0, "printer");
        assert_eq!(decode_plain(&unpadded).unwrap().1.expose(), "pw");
        assert_eq!(
            decode_plain(&b64(b"printer\0printer\0pw")).unwrap().0,
            "printer"
        );
        assert_eq!(
            decode_plain(&b64(b"admin\0printer\0pw")),
            Err(SaslError::ProxyNotAllowed)
        );
        assert_eq!(decode_plain(&b64(b"printer\0pw")), Err(SaslError::BadPlain));
        assert_eq!(decode_plain(&b64(b"\0\0pw")), Err(SaslError::BadPlain));
        assert_eq!(decode_plain(&b64(b"\0a\0b\0c")), Err(SaslError::BadPlain));
        assert_eq!(decode_plain("!!!"), Err(SaslError::BadBase64));
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_plain(&format!("  {padded} ")).unwrap().0, "printer");
    }

    #[test]
    fn login_fields() {
        assert_eq!(
            decode_login_field(&b64(b"scanner@contoso.com")).unwrap(),
            "scanner@contoso.com"
        );
        assert_eq!(decode_login_field("dXNlcg").unwrap(), "user");
        assert_eq!(decode_login_field(&b64(b"a\0b")), Err(SaslError::BadPlain));
        assert_eq!(decode_login_field("=").unwrap(), "");
        assert_eq!(
            String::from_utf8(decode_response(LOGIN_USERNAME_PROMPT).unwrap()).unwrap(),
            "Username:"
        );
        assert_eq!(
            String::from_utf8(decode_response(LOGIN_PASSWORD_PROMPT).unwrap()).unwrap(),
            "Password:"
        );
    }
}
