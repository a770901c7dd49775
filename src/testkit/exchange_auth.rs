//! SASL XOAUTH2 for the fake Exchange server: decoding the client's payload
//! (`base64("user=" mailbox ^A "auth=Bearer " token ^A ^A)`, exchange-online.md §3.1) and
//! deciding whether the token and the tenant configuration allow the session to act as the
//! mailbox, in the order documented in [`exchange`](super::exchange).
//!
//! Invariants: the token is never logged; failures are reported as an [`AuthRejection`] that
//! maps to exactly one reply line in [`rejection_reply`].

use std::time::SystemTime;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::directory::{SMTP_SEND_AS_APP, SmtpAuthPolicy};
use super::exchange::{AuthRejection, ExchangeFault};
use super::exchange_replies as replies;
use super::exchange_state::{ExchangeShared, FaultStage};
use super::issuance::EXCHANGE_RESOURCE;
use super::jwt::{Claims, TokenRejection};

/// Standard base64; padding optional (clients differ, servers are lenient about it).
const SASL_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Audiences Exchange accepts for SMTP (the URI and the app id GUID of v1 tokens).
const EXCHANGE_AUDIENCES: [&str; 3] = [
    EXCHANGE_RESOURCE,
    "https://outlook.office.com",
    "00000002-0000-0ff1-ce00-000000000000",
];

/// The decoded XOAUTH2 payload.
pub struct Xoauth2Payload {
    pub user: String,
    pub token: String,
}

/// Decodes an XOAUTH2 initial response or challenge answer.
pub fn parse_xoauth2(encoded: &str) -> Option<Xoauth2Payload> {
    let bytes = SASL_BASE64.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("user=")?;
    let (user, rest) = rest.split_once('\x01')?;
    let rest = rest.strip_prefix("auth=Bearer ")?;
    let (token, tail) = rest.split_once('\x01')?;
    let well_formed = tail == "\x01"
        && !user.is_empty()
        && !token.is_empty()
        && !token.contains(char::is_whitespace);
    well_formed.then(|| Xoauth2Payload {
        user: user.to_owned(),
        token: token.to_owned(),
    })
}

/// Who the session acts as after a successful AUTH.
pub struct Identity {
    pub mailbox: String,
    pub client_id: String,
}

/// Checks the token and the tenant configuration for `payload` at `now`.
///
/// # Errors
/// The first failed check.
pub fn authorize(
    shared: &ExchangeShared,
    payload: &Xoauth2Payload,
    now: SystemTime,
) -> Result<Identity, AuthRejection> {
    let claims = verified_claims(shared, &payload.token, now)?;
    if !EXCHANGE_AUDIENCES
        .iter()
        .any(|aud| aud.eq_ignore_ascii_case(claims.aud.trim_end_matches('/')))
    {
        return Err(AuthRejection::WrongAudience);
    }
    let directory = &shared.directory;
    if !claims.tid.eq_ignore_ascii_case(&directory.tenant_id()) {
        return Err(AuthRejection::WrongTenant);
    }
    if shared.take_fault(FaultStage::Auth) == Some(ExchangeFault::AuthDisabled) {
        return Err(AuthRejection::InjectedAuthDisabled);
    }
    match directory.smtp_auth_policy(&payload.user) {
        SmtpAuthPolicy::Enabled => {}
        SmtpAuthPolicy::DisabledForMailbox => {
            return Err(AuthRejection::SmtpAuthDisabledForMailbox);
        }
        SmtpAuthPolicy::DisabledForTenant => {
            return Err(AuthRejection::SmtpAuthDisabledForTenant);
        }
    }
    if !claims.has_role(SMTP_SEND_AS_APP) {
        return Err(AuthRejection::MissingRole);
    }
    match directory.exchange_service_principal(&claims.appid) {
        None => return Err(AuthRejection::NoServicePrincipal),
        Some(object_id) if !object_id.eq_ignore_ascii_case(&claims.oid) => {
            return Err(AuthRejection::ServicePrincipalMismatch);
        }
        Some(_) => {}
    }
    let mailbox = directory
        .mailbox(&payload.user)
        .ok_or(AuthRejection::UnknownMailbox)?;
    if !mailbox
        .full_access
        .contains(&claims.oid.to_ascii_lowercase())
    {
        return Err(AuthRejection::MailboxNotGranted);
    }
    Ok(Identity {
        mailbox: mailbox.address,
        client_id: claims.appid,
    })
}

fn verified_claims(
    shared: &ExchangeShared,
    token: &str,
    now: SystemTime,
) -> Result<Claims, AuthRejection> {
    if let Some(claims) = shared.cached_claims(token) {
        if claims.exp <= super::jwt::unix_seconds(now) {
            return Err(AuthRejection::Expired);
        }
        return Ok(claims);
    }
    let claims = shared
        .verifier
        .verify(token, now)
        .map_err(|rejection| match rejection {
            TokenRejection::Malformed | TokenRejection::UnsupportedAlgorithm => {
                AuthRejection::MalformedToken
            }
            TokenRejection::UnknownKey | TokenRejection::BadSignature => {
                AuthRejection::BadSignature
            }
            TokenRejection::NotYetValid => AuthRejection::NotYetValid,
            TokenRejection::Expired => AuthRejection::Expired,
        })?;
    shared.cache_claims(token, &claims);
    Ok(claims)
}

/// The reply Exchange gives for `rejection`.
pub fn rejection_reply(rejection: AuthRejection, host: &str) -> String {
    match rejection {
        AuthRejection::NotAdvertised | AuthRejection::UnsupportedMechanism => {
            replies::AUTH_UNRECOGNIZED_TYPE.to_owned()
        }
        AuthRejection::BasicAuthDisabled => replies::BASIC_AUTH_DISABLED.to_owned(),
        AuthRejection::Cancelled => replies::AUTH_CANCELLED.to_owned(),
        AuthRejection::InvalidXoauth2Data => replies::AUTH_INVALID_XOAUTH2.to_owned(),
        AuthRejection::SmtpAuthDisabledForMailbox => replies::SMTP_AUTH_DISABLED_MAILBOX.to_owned(),
        AuthRejection::SmtpAuthDisabledForTenant | AuthRejection::InjectedAuthDisabled => {
            replies::SMTP_AUTH_DISABLED_TENANT.to_owned()
        }
        AuthRejection::MalformedToken
        | AuthRejection::BadSignature
        | AuthRejection::Expired
        | AuthRejection::NotYetValid
        | AuthRejection::WrongAudience
        | AuthRejection::WrongTenant
        | AuthRejection::MissingRole
        | AuthRejection::NoServicePrincipal
        | AuthRejection::ServicePrincipalMismatch
        | AuthRejection::UnknownMailbox
        | AuthRejection::MailboxNotGranted => replies::auth_unsuccessful(host),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    use super::*;

    #[test]
    fn xoauth2_payload_syntax() {
        let good = STANDARD.encode("user=a@b.c\x01auth=Bearer tok.en.sig\x01\x01");
        let parsed = parse_xoauth2(&good).unwrap();
        assert_eq!(parsed.user, "a@b.c");
        assert_eq!(parsed.token, "tok.en.sig");
        let unpadded = STANDARD_NO_PAD.encode("user=a@b.c\x01auth=Bearer t\x01\x01");
        assert!(parse_xoauth2(&unpadded).is_some());
        for bad in [
            "user=a@b.c\x01auth=Bearer t\x01",
            "user=a@b.c\x01auth=bearer t\x01\x01",
            "user=a@b.c auth=Bearer t\x01\x01",
            "user=\x01auth=Bearer t\x01\x01",
            "user=a@b.c\x01auth=Bearer \x01\x01",
        ] {
            assert!(parse_xoauth2(&STANDARD.encode(bad)).is_none(), "{bad:?}");
        }
        assert!(parse_xoauth2("not base64!").is_none());
    }
}
