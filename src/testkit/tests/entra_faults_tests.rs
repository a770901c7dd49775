//! Run-time faults of the token endpoint.

use std::time::{Duration, Instant};

use super::{assert_entra_error, healthy_form, https_client, kit};
use crate::testkit::entra::{EntraFault, TokenOutcome};

async fn post(kit: &crate::testkit::Testkit) -> Result<reqwest::Response, reqwest::Error> {
    let form = healthy_form(kit);
    https_client(kit)
        .post(kit.token_url())
        .form(&form)
        .send()
        .await
}

#[tokio::test]
async fn temporarily_unavailable_then_recovers() {
    let kit = kit().await;
    kit.entra.fail_next(2, EntraFault::TemporarilyUnavailable);
    for _ in 0..2 {
        let response = post(&kit).await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_entra_error(status, &body, 503, "temporarily_unavailable", 90033);
    }
    assert_eq!(post(&kit).await.unwrap().status(), 200);
    let stats = kit.entra.stats();
    assert_eq!(stats.token_requests, 3);
    assert_eq!(stats.faults, 2);
    assert_eq!(stats.issued, 1);
    assert_eq!(
        stats.recent[0].outcome,
        TokenOutcome::Fault(EntraFault::TemporarilyUnavailable)
    );
}

#[tokio::test]
async fn server_error_is_plain_http_500() {
    let kit = kit().await;
    kit.entra.set_fault(Some(EntraFault::ServerError));
    let response = post(&kit).await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert!(response.json::<serde_json::Value>().await.is_err());
    kit.entra.set_fault(None);
    assert_eq!(post(&kit).await.unwrap().status(), 200);
}

#[tokio::test]
async fn delay_and_close_without_response() {
    let kit = kit().await;
    kit.entra
        .fail_next(1, EntraFault::Delay(Duration::from_millis(400)));
    let started = Instant::now();
    assert_eq!(post(&kit).await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(400));

    kit.entra.fail_next(1, EntraFault::CloseWithoutResponse);
    let error = post(&kit).await.unwrap_err();
    assert!(!error.is_status(), "{error}");
    assert_eq!(post(&kit).await.unwrap().status(), 200);

    kit.entra
        .set_fault(Some(EntraFault::Delay(Duration::from_secs(5))));
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured((*kit.pki.client_config()).clone())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = client
        .post(kit.token_url())
        .form(&healthy_form(&kit))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    kit.entra.clear_faults();
    kit.entra.shutdown().await;
}
