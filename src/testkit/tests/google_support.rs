//! Helpers of the Google emulator tests: a [`GoogleTestkit`], a reqwest client trusting only
//! its CA, healthy JWT claims, and token requests over HTTPS.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::STEP;
use crate::testkit::google_bundle::GoogleTestkit;
use crate::testkit::google_workspace::GMAIL_FULL_SCOPE;
use crate::testkit::jwt::unix_seconds;
use crate::testkit::{GmailOptions, ServiceAccountKey};

pub const MAILBOX: &str = "relay@example.com";
pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A healthy Google kit for [`MAILBOX`].
pub async fn gkit() -> GoogleTestkit {
    gkit_with(GmailOptions::default()).await
}

/// A healthy Google kit with Gmail options.
pub async fn gkit_with(options: GmailOptions) -> GoogleTestkit {
    GoogleTestkit::start(MAILBOX, options).await.unwrap()
}

/// A reqwest client trusting only the kit's CA.
pub fn client(kit: &GoogleTestkit) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*kit.pki.client_config()).clone())
        .timeout(STEP)
        .build()
        .unwrap()
}

/// The claims a correct relay sends: `iat` = now, `exp` = now + 3600.
pub fn claims(kit: &GoogleTestkit, key: &ServiceAccountKey, sub: &str, scope: &str) -> Value {
    let now = unix_seconds(SystemTime::now());
    json!({
        "iss": key.client_email,
        "sub": sub,
        "scope": scope,
        "aud": kit.token.token_url(),
        "iat": now,
        "exp": now + 3600,
    })
}

/// POSTs a form to the token endpoint; (status, JSON body or Null).
pub async fn post_form(kit: &GoogleTestkit, form: &[(&str, &str)]) -> (u16, Value) {
    let response = client(kit)
        .post(kit.token.token_url())
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// POSTs a JWT bearer grant with `assertion`.
pub async fn post_assertion(kit: &GoogleTestkit, assertion: &str) -> (u16, Value) {
    post_form(kit, &[("grant_type", GRANT), ("assertion", assertion)]).await
}

/// Signs `claims` with `key` and posts them.
pub async fn request_with(
    kit: &GoogleTestkit,
    key: &ServiceAccountKey,
    claims: &Value,
) -> (u16, Value) {
    post_assertion(kit, &key.sign_jwt(claims).unwrap()).await
}

/// A token for `sub` with `scope`, fetched over HTTPS like the relay would.
pub async fn fetch_token(kit: &GoogleTestkit, sub: &str, scope: &str) -> String {
    let (status, body) = request_with(kit, &kit.key, &claims(kit, &kit.key, sub, scope)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A healthy SMTP token for [`MAILBOX`].
pub async fn mail_token(kit: &GoogleTestkit) -> String {
    fetch_token(kit, MAILBOX, GMAIL_FULL_SCOPE).await
}

/// Asserts the OAuth error shape.
pub fn assert_oauth_error(
    (status, body): &(u16, Value),
    expected_status: u16,
    error: &str,
    description: &str,
) {
    assert_eq!(*status, expected_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_description"], description, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}
