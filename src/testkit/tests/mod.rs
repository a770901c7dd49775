//! Integration tests of the testkit emulators, driven by independent clients: reqwest for the
//! token endpoint, a raw line-by-line SMTP client (tokio + tokio-rustls) and lettre for the
//! SMTP server. Every wait is bounded by `tokio::time::timeout`.

mod bundle_tests;
mod entra_assertion_tests;
mod entra_faults_tests;
mod entra_tests;
mod exchange_auth_tests;
mod exchange_data_tests;
mod exchange_fault_tests;
mod exchange_lettre_tests;
mod exchange_protocol_tests;
mod gmail_tests;
mod google_support;
mod google_token_tests;
mod graph_limits_tests;
mod graph_support;
mod graph_tests;
mod graph_upload_tests;
mod raw_smtp;

use std::time::Duration;

use super::{Testkit, TestkitOptions};

/// Upper bound for any single network wait in these tests.
pub const STEP: Duration = Duration::from_secs(10);

/// A kit with default options.
pub async fn kit() -> Testkit {
    Testkit::start(TestkitOptions::default()).await.unwrap()
}

/// A reqwest client trusting only the kit's CA.
pub fn https_client(kit: &Testkit) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*kit.pki.client_config()).clone())
        .timeout(STEP)
        .build()
        .unwrap()
}

/// POSTs a form to the token URL of `tenant` and returns (status, JSON body).
pub async fn token_request(
    kit: &Testkit,
    tenant: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let response = https_client(kit)
        .post(kit.entra.token_url(tenant))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    (status, body)
}

/// The healthy client-credentials form of the kit's app.
pub fn healthy_form(kit: &Testkit) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", kit.client_id().to_owned()),
        ("client_secret", kit.client_secret().to_owned()),
        ("scope", "https://outlook.office365.com/.default".to_owned()),
    ]
}

/// Fetches an Exchange token over HTTPS like the relay would.
pub async fn fetch_token(kit: &Testkit) -> String {
    let form = healthy_form(kit);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, body) = token_request(kit, &kit.tenant_id(), &form).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Asserts the Entra error shape and returns the description.
pub fn assert_entra_error(
    status: u16,
    body: &serde_json::Value,
    expected_status: u16,
    error: &str,
    code: u64,
) -> String {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"][0].as_u64(), Some(code), "{body}");
    let description = body["error_description"].as_str().unwrap().to_owned();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    assert!(
        description.contains("\r\nCorrelation ID: "),
        "{description}"
    );
    assert!(description.contains("\r\nTimestamp: "), "{description}");
    assert!(
        body["trace_id"]
            .as_str()
            .is_some_and(crate::testkit::random::is_guid)
    );
    assert!(
        body["correlation_id"]
            .as_str()
            .is_some_and(crate::testkit::random::is_guid)
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["error_uri"],
        format!("https://login.microsoftonline.com/error?code={code}")
    );
    description
}
