//! Fuzzes inbound SASL decoding (`smtp::server::sasl`: `decode_response`, `decode_plain`,
//! `decode_login_field`) on arbitrary text and on base64 of arbitrary bytes. Checks: nothing
//! panics; a base64-encoded value decodes to itself (up to the size cap); PLAIN accepts exactly
//! the `authzid NUL authcid NUL passwd` messages a straightforward reading of RFC 4616 accepts
//! (non-empty user, no proxy identity, capped lengths); LOGIN fields refuse NUL.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::smtp::server::sasl::{
    MAX_CREDENTIAL_LEN, SaslError, decode_login_field, decode_plain, decode_response,
};

fn plain_model(decoded: &[u8]) -> Result<(String, String), SaslError> {
    let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
    let [authzid, authcid, password] = parts.as_slice() else {
        return Err(SaslError::BadPlain);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::BadPlain);
    let (authzid, user, password) = (text(authzid)?, text(authcid)?, text(password)?);
    if user.is_empty() || user.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
        return Err(SaslError::BadPlain);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::ProxyNotAllowed);
    }
    Ok((user, password))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Arbitrary text: must not panic, and the three decoders must agree with each other.
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let response = decode_response(text);
        let plain = decode_plain(text);
        let login = decode_login_field(text);
        match &response {
            Err(error) => {
                assert_eq!(plain.as_ref().err(), Some(error));
                assert_eq!(login.as_ref().err(), Some(error));
            }
            Ok(decoded) => {
                assert!(decoded.len() <= 3 * MAX_CREDENTIAL_LEN);
                let model = plain_model(decoded);
                match (&plain, &model) {
                    (Ok((user, password)), Ok((want_user, want_password))) => {
                        assert_eq!(user, want_user);
                        assert_eq!(password.expose(), want_password);
                    }
                    (Err(got), Err(want)) => assert_eq!(got, want),
                    _ => panic!("plain {plain:?} vs model {model:?}"),
                }
                if let Ok(field) = &login {
                    assert_eq!(field.as_bytes(), decoded.as_slice());
                    assert!(!field.contains('\0'));
                }
            }
        }
    } else {
        // Base64 of arbitrary bytes, padded or not, with surrounding spaces.
        let encoded = if mode & 2 == 0 {
            STANDARD.encode(rest)
        } else {
            STANDARD_NO_PAD.encode(rest)
        };
        let line = if mode & 4 == 0 {
            encoded
        } else {
            format!("  {encoded}\t")
        };
        let decoded = decode_response(&line);
        if rest.len() <= 3 * MAX_CREDENTIAL_LEN && !rest.is_empty() {
            assert_eq!(decoded.as_deref(), Ok(rest));
        }
        let model = plain_model(rest);
        match (decode_plain(&line), &model) {
            (Ok((user, password)), Ok((want_user, want_password))) => {
                assert_eq!(&user, want_user);
                assert_eq!(password.expose(), want_password);
            }
            (Err(_), Err(_)) if rest.len() > 3 * MAX_CREDENTIAL_LEN => {}
            (Err(got), Err(want)) => assert_eq!(&got, want),
            (Err(_), Ok(_)) if rest.len() > 3 * MAX_CREDENTIAL_LEN => {}
            (got, want) => panic!("plain {got:?} vs model {want:?}"),
        }
        if let Ok(field) = decode_login_field(&line) {
            assert_eq!(field.as_bytes(), rest);
        }
    }
});
