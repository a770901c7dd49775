//! The Google token endpoint through reqwest: the key file, healthy issuance, form errors,
//! every administrative misconfiguration (delegation, subject, key deletion and rotation,
//! suspension), faults and counters.

use std::time::Duration;

use super::google_support::{
    GRANT, MAILBOX, assert_oauth_error, claims, client, gkit, mail_token, post_assertion,
    post_form, request_with,
};
use crate::testkit::google_workspace::{GMAIL_FULL_SCOPE, GMAIL_SEND_SCOPE};
use crate::testkit::{GoogleTokenFault, GoogleTokenOutcome};

const CLIENT_UNAUTHORIZED: &str = "Client is unauthorized to retrieve access tokens using this \
     method, or client not authorized for any of the scopes requested.";

#[tokio::test]
async fn key_file_has_googles_fields_and_format() {
    let kit = gkit().await;
    let dir = tempfile::tempdir().unwrap();
    let path = kit.write_key_file(&dir.path().join("sa.json")).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = file
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    ];
    expected.sort_unstable();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected);
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["token_uri"], kit.token.token_url());
    assert_eq!(file["universe_domain"], "googleapis.com");
    assert_eq!(
        file["client_email"],
        "relay@relay-project.iam.gserviceaccount.com"
    );
    let client_id = file["client_id"].as_str().unwrap();
    assert_eq!(client_id.len(), 21);
    assert!(client_id.bytes().all(|b| b.is_ascii_digit()));
    let key_id = file["private_key_id"].as_str().unwrap();
    assert_eq!(key_id.len(), 40);
    let pem = file["private_key"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(
        text.contains("\\n"),
        "newlines escaped in JSON as Google writes them"
    );
    assert_eq!(
        file["client_x509_cert_url"],
        "https://www.googleapis.com/robot/v1/metadata/x509/relay%40relay-project.iam.gserviceaccount.com"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(!format!("{:?}", kit.key).contains("PRIVATE KEY"));
}

#[tokio::test]
async fn healthy_grant_issues_a_bearer_token_without_refresh_token() {
    let kit = gkit().await;
    let key = &kit.key;
    for aud in [
        kit.token.token_url(),
        "https://oauth2.googleapis.com/token".to_owned(),
    ] {
        let mut body = claims(&kit, key, MAILBOX, GMAIL_FULL_SCOPE);
        body["aud"] = aud.into();
        let (status, answer) = request_with(&kit, key, &body).await;
        assert_eq!(status, 200, "{answer}");
        let fields = answer.as_object().unwrap();
        assert_eq!(fields.len(), 3, "{answer}");
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 3599);
        let token = answer["access_token"].as_str().unwrap();
        assert!(token.starts_with("ya29."));
        let issued = kit.workspace.issued_token(token).unwrap();
        assert_eq!(issued.subject.as_deref(), Some(MAILBOX));
        assert_eq!(issued.scopes, vec![GMAIL_FULL_SCOPE.to_owned()]);
        assert_eq!(issued.private_key_id, key.private_key_id);
    }
    assert_eq!(kit.token.requests_for(&key.private_key_id, MAILBOX), 2);
    assert_eq!(kit.token.tokens_issued(), 2);
    let stats = kit.token.stats();
    let record = stats.recent.back().unwrap();
    assert_eq!(record.issuer.as_deref(), Some(key.client_email.as_str()));
    assert_eq!(record.scope.as_deref(), Some(GMAIL_FULL_SCOPE));
    // A shortened lifetime for renewal tests.
    kit.token.set_token_lifetime(Duration::from_secs(5));
    let (_, answer) = request_with(&kit, key, &claims(&kit, key, MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_eq!(answer["expires_in"], 5);
}

#[tokio::test]
async fn form_errors() {
    let kit = gkit().await;
    let assertion = kit
        .key
        .sign_jwt(&claims(&kit, &kit.key, MAILBOX, GMAIL_FULL_SCOPE))
        .unwrap();
    let answer = post_form(
        &kit,
        &[
            ("grant_type", "client_credentials"),
            ("assertion", &assertion),
        ],
    )
    .await;
    assert_oauth_error(
        &answer,
        400,
        "unsupported_grant_type",
        "Invalid grant_type: client_credentials",
    );
    let answer = post_form(&kit, &[("grant_type", GRANT)]).await;
    assert_oauth_error(
        &answer,
        400,
        "invalid_request",
        "Missing required parameter: assertion",
    );
    let answer = post_form(&kit, &[("assertion", &assertion)]).await;
    assert_oauth_error(
        &answer,
        400,
        "invalid_request",
        "Missing required parameter: grant_type",
    );
    let response = client(&kit)
        .get(kit.token.token_url())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let url = kit.token.token_url().replace("/token", "/o/oauth2/token");
    let response = client(&kit).post(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let answer = post_assertion(&kit, "not.a-jwt").await;
    assert_eq!(answer.1["error"], "invalid_grant");
}

#[tokio::test]
async fn delegation_and_subject_misconfigurations() {
    let kit = gkit().await;
    let key = &kit.key;
    let ask = |sub: &str, scope: &str| claims(&kit, key, sub, scope);
    // The service account's own address as subject.
    let answer = request_with(&kit, key, &ask(&key.client_email, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "Invalid email or User ID");
    // Not a user of the domain.
    let answer = request_with(&kit, key, &ask("nobody@example.com", GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "Invalid email or User ID");
    // A group.
    kit.workspace.add_group("printers@example.com");
    let answer = request_with(&kit, key, &ask("printers@example.com", GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 401, "unauthorized_client", CLIENT_UNAUTHORIZED);
    // Only gmail.send requested while mail.google.com is delegated: no requested scope granted.
    let answer = request_with(&kit, key, &ask(MAILBOX, GMAIL_SEND_SCOPE)).await;
    assert_oauth_error(&answer, 401, "unauthorized_client", CLIENT_UNAUTHORIZED);
    // One scope granted, one not.
    let both = format!("{GMAIL_FULL_SCOPE} {GMAIL_SEND_SCOPE}");
    let answer = request_with(&kit, key, &ask(MAILBOX, &both)).await;
    assert_oauth_error(
        &answer,
        400,
        "access_denied",
        "Requested client not authorized.",
    );
    // Suspended user.
    kit.workspace.set_user_suspended(MAILBOX, true).unwrap();
    let answer = request_with(&kit, key, &ask(MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "Invalid email or User ID");
    kit.workspace.set_user_suspended(MAILBOX, false).unwrap();
    // Delegation revoked.
    kit.workspace.revoke_delegation(&key.client_id);
    let answer = request_with(&kit, key, &ask(MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(
        &answer,
        401,
        "unauthorized_client",
        "Unauthorized client or scope in request.",
    );
    // Delegation entered with the client email instead of the numeric id.
    kit.workspace
        .grant_delegation(&key.client_email, &[GMAIL_FULL_SCOPE]);
    let answer = request_with(&kit, key, &ask(MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 401, "unauthorized_client", CLIENT_UNAUTHORIZED);
    // Fixed: the numeric id.
    kit.workspace
        .grant_delegation(&key.client_id, &[GMAIL_FULL_SCOPE]);
    let answer = request_with(&kit, key, &ask(MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
}

#[tokio::test]
async fn deleted_and_rotated_keys_and_deleted_accounts() {
    let kit = gkit().await;
    let old = kit.key.clone();
    let new = kit.workspace.rotate_key(&old.client_email).unwrap();
    assert_ne!(new.private_key_id, old.private_key_id);
    assert_eq!(new.client_id, old.client_id);
    let answer = request_with(&kit, &old, &claims(&kit, &old, MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "Invalid JWT Signature.");
    let answer = request_with(&kit, &new, &claims(&kit, &new, MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    kit.workspace
        .delete_key(&new.client_email, &new.private_key_id)
        .unwrap();
    let answer = request_with(&kit, &new, &claims(&kit, &new, MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "Invalid JWT Signature.");
    kit.workspace.delete_service_account(&new.client_email);
    let answer = request_with(&kit, &new, &claims(&kit, &new, MAILBOX, GMAIL_FULL_SCOPE)).await;
    assert_oauth_error(&answer, 400, "invalid_grant", "account not found");
    assert_eq!(kit.token.requests_for(&old.private_key_id, MAILBOX), 1);
    assert_eq!(kit.token.requests_for(&new.private_key_id, MAILBOX), 3);
}

#[tokio::test]
async fn faults_then_recovery() {
    let kit = gkit().await;
    kit.token.fail_next(2, GoogleTokenFault::Unavailable);
    kit.token.fail_next(1, GoogleTokenFault::ServerError);
    let assertion = kit
        .key
        .sign_jwt(&claims(&kit, &kit.key, MAILBOX, GMAIL_FULL_SCOPE))
        .unwrap();
    for expected in [503, 503, 500] {
        let response = client(&kit)
            .post(kit.token.token_url())
            .form(&[("grant_type", GRANT), ("assertion", assertion.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected);
    }
    kit.token
        .set_fault(Some(GoogleTokenFault::CloseWithoutResponse));
    let dropped = client(&kit)
        .post(kit.token.token_url())
        .form(&[("grant_type", GRANT), ("assertion", assertion.as_str())])
        .send()
        .await;
    assert!(dropped.is_err(), "connection closed without an answer");
    assert_eq!(
        kit.token.last_outcome(),
        Some(GoogleTokenOutcome::Fault(
            GoogleTokenFault::CloseWithoutResponse
        ))
    );
    kit.token.clear_faults();
    assert!(!mail_token(&kit).await.is_empty());
    let stats = kit.token.stats();
    assert_eq!(
        (stats.token_requests, stats.faults, stats.issued),
        (5, 4, 1)
    );
}

#[tokio::test]
async fn assertions_outside_the_time_window_are_refused_as_google_does() {
    let kit = gkit().await;
    let key = &kit.key;
    let time_text = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
                     reasonable timeframe. Check your iat and exp values in the JWT claim.";
    let base = claims(&kit, key, MAILBOX, GMAIL_FULL_SCOPE);
    let now = base["iat"].as_i64().unwrap();
    // Longer than an hour; issued in the future (a clock ahead); expired (a clock behind).
    for (iat, exp) in [
        (now, now + 7200),
        (now + 1800, now + 3600),
        (now - 7200, now - 3700),
    ] {
        let mut body = base.clone();
        body["iat"] = iat.into();
        body["exp"] = exp.into();
        let answer = request_with(&kit, key, &body).await;
        assert_oauth_error(&answer, 400, "invalid_grant", time_text);
    }
    let mut body = base.clone();
    body["aud"] = "https://example.com/token".into();
    assert_eq!(
        request_with(&kit, key, &body).await.1["error"],
        "invalid_grant"
    );
}
