//! The token endpoint through reqwest: healthy issuance and every AADSTS error of
//! exchange-online.md §1 that the kit reproduces.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::{assert_entra_error, healthy_form, https_client, kit, token_request};
use crate::testkit::entra::TokenOutcome;
use crate::testkit::issuance::CredentialKind;
use crate::testkit::jwt::decode_claims_unverified;

fn form_with<'a>(
    base: &'a [(&'static str, String)],
    replace: &[(&'static str, Option<&'a str>)],
) -> Vec<(&'static str, &'a str)> {
    let mut form: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (key, value) in replace {
        form.retain(|(k, _)| k != key);
        if let Some(value) = value {
            form.push((key, value));
        }
    }
    form
}

#[tokio::test]
async fn healthy_request_returns_a_realistic_exchange_token() {
    let kit = kit().await;
    let base = healthy_form(&kit);
    for tenant in [
        kit.tenant_id(),
        "contoso.onmicrosoft.com".to_owned(),
        "Contoso.com".to_owned(),
    ] {
        let (status, body) = token_request(&kit, &tenant, &form_with(&base, &[])).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["ext_expires_in"], 3599);
        let token = body["access_token"].as_str().unwrap();
        assert!(token.len() > 1024, "token length {}", token.len());
        assert_eq!(token.split('.').count(), 3);
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["alg"], "ES256");
        assert!(header["kid"].is_string());
        let claims = kit
            .directory
            .token_verifier()
            .verify(token, SystemTime::now())
            .unwrap();
        assert_eq!(claims.aud, "https://outlook.office365.com");
        assert_eq!(
            claims.iss,
            format!("https://sts.windows.net/{}/", kit.tenant_id())
        );
        assert_eq!(claims.tid, kit.tenant_id());
        assert_eq!(claims.appid, kit.client_id());
        assert_eq!(claims.appidacr, "1");
        assert_eq!(claims.idtyp.as_deref(), Some("app"));
        assert_eq!(claims.ver, "1.0");
        assert_eq!(claims.roles, Some(vec!["SMTP.SendAsApp".to_owned()]));
        let app = kit.directory.app(kit.client_id()).unwrap();
        assert_eq!(claims.oid, app.service_principal_object_id);
    }
    let stats = kit.entra.stats();
    assert_eq!(stats.token_requests, 3);
    assert_eq!(stats.issued, 3);
    assert_eq!(kit.entra.requests_for_client(kit.client_id()), 3);
    assert!(matches!(
        stats.recent.back().unwrap().outcome,
        TokenOutcome::Issued {
            expires_in: 3599,
            ..
        }
    ));
    assert_eq!(stats.recent[0].credential, Some(CredentialKind::Secret));
    let debug = format!("{stats:?}");
    assert!(
        !debug.contains(kit.client_secret()),
        "secret leaked into stats"
    );
}

#[tokio::test]
async fn tenant_errors() {
    let kit = kit().await;
    let base = healthy_form(&kit);
    let form = form_with(&base, &[]);
    let (status, body) = token_request(&kit, "fabrikam.onmicrosoft.com", &form).await;
    let text = assert_entra_error(status, &body, 400, "invalid_request", 90002);
    assert!(text.contains("Tenant 'fabrikam.onmicrosoft.com' not found"));
    for tenant in ["common", "organizations", "consumers"] {
        let (status, body) = token_request(&kit, tenant, &form).await;
        assert_entra_error(status, &body, 400, "invalid_request", 9_001_023);
    }
}

#[tokio::test]
async fn grant_and_client_errors() {
    let kit = kit().await;
    let tenant = kit.tenant_id();
    let base = healthy_form(&kit);

    let form = form_with(&base, &[("grant_type", Some("password"))]);
    let (status, body) = token_request(&kit, &tenant, &form).await;
    assert_entra_error(status, &body, 400, "unsupported_grant_type", 70003);

    let form = form_with(
        &base,
        &[("client_id", Some("11111111-2222-3333-4444-555555555555"))],
    );
    let (status, body) = token_request(&kit, &tenant, &form).await;
    let text = assert_entra_error(status, &body, 400, "unauthorized_client", 700_016);
    assert!(text.contains("11111111-2222-3333-4444-555555555555"));

    let form = form_with(&base, &[("client_secret", None)]);
    let (status, body) = token_request(&kit, &tenant, &form).await;
    assert_entra_error(status, &body, 400, "invalid_request", 7_000_218);

    let form = form_with(&base, &[("client_secret", Some("wrong"))]);
    let (status, body) = token_request(&kit, &tenant, &form).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 7_000_215);
    assert!(text.contains("not the client secret ID"), "{text}");

    // The classic mistake: the secret's ID pasted instead of its value.
    let secret_id = kit.directory.app(kit.client_id()).unwrap().secrets[0]
        .secret_id
        .clone();
    let form = form_with(&base, &[("client_secret", Some(&secret_id))]);
    let (status, body) = token_request(&kit, &tenant, &form).await;
    assert_entra_error(status, &body, 401, "invalid_client", 7_000_215);

    kit.directory
        .expire_client_secrets(kit.client_id())
        .unwrap();
    let form = form_with(&base, &[]);
    let (status, body) = token_request(&kit, &tenant, &form).await;
    assert_entra_error(status, &body, 401, "invalid_client", 7_000_222);

    kit.directory
        .replace_client_secret(kit.client_id(), "rotated~secret")
        .unwrap();
    let (status, _) = token_request(&kit, &tenant, &form).await;
    assert_eq!(status, 401, "the old secret must stop working");
    let form = form_with(&base, &[("client_secret", Some("rotated~secret"))]);
    let (status, _) = token_request(&kit, &tenant, &form).await;
    assert_eq!(status, 200);

    let stats = kit.entra.stats();
    let codes: Vec<u32> = stats
        .recent
        .iter()
        .filter_map(|r| match r.outcome {
            TokenOutcome::Rejected { code, .. } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            70003, 700_016, 7_000_218, 7_000_215, 7_000_215, 7_000_222, 7_000_215
        ]
    );
}

#[tokio::test]
async fn scope_errors() {
    let kit = kit().await;
    let tenant = kit.tenant_id();
    let base = healthy_form(&kit);

    let form = form_with(
        &base,
        &[("scope", Some("https://outlook.office365.com/SMTP.Send"))],
    );
    let (status, body) = token_request(&kit, &tenant, &form).await;
    let text = assert_entra_error(status, &body, 400, "invalid_scope", 1_002_012);
    assert!(text.contains(
        "Client credential flows must have a scope value with /.default suffixed to the resource identifier"
    ));

    let form = form_with(
        &base,
        &[("scope", Some("https://mail.example.com/.default"))],
    );
    let (status, body) = token_request(&kit, &tenant, &form).await;
    assert_entra_error(status, &body, 400, "invalid_resource", 500_011);

    let form = form_with(
        &base,
        &[(
            "scope",
            Some("https://outlook.office365.com/.default https://graph.microsoft.com/.default"),
        )],
    );
    let (status, body) = token_request(&kit, &tenant, &form).await;
    assert_entra_error(status, &body, 400, "invalid_scope", 70011);
}

#[tokio::test]
async fn graph_scope_and_missing_consent_still_issue_tokens() {
    let kit = kit().await;
    let tenant = kit.tenant_id();
    let base = healthy_form(&kit);
    let graph = form_with(
        &base,
        &[("scope", Some("https://graph.microsoft.com/.default"))],
    );

    let (status, body) = token_request(&kit, &tenant, &graph).await;
    assert_eq!(status, 200);
    let claims = decode_claims_unverified(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.aud, "https://graph.microsoft.com");
    assert_eq!(claims.roles, None);

    kit.directory
        .set_graph_roles(kit.client_id(), &["Mail.Send"])
        .unwrap();
    let (_, body) = token_request(&kit, &tenant, &graph).await;
    let claims = decode_claims_unverified(body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.roles, Some(vec!["Mail.Send".to_owned()]));

    kit.directory.revoke_admin_consent(kit.client_id()).unwrap();
    let (status, body) = token_request(&kit, &tenant, &form_with(&base, &[])).await;
    assert_eq!(
        status, 200,
        "missing consent does not fail at the token endpoint"
    );
    let token = body["access_token"].as_str().unwrap();
    let payload = String::from_utf8(
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        !payload.contains("\"roles\""),
        "roles must be absent: {payload}"
    );
}

#[tokio::test]
async fn client_assertion_is_answered_700027() {
    let kit = kit().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"PS256","typ":"JWT","x5t#S256":"q83vEjRWeJA"}"#);
    let assertion = format!("{header}.e30.c2ln");
    let client_id = kit.client_id().to_owned();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("scope", "https://outlook.office365.com/.default"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    let (status, body) = token_request(&kit, &kit.tenant_id(), &form).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_027);
    assert!(text.contains("ABCDEF123456789"), "{text}");
    let last = kit.entra.stats().recent.back().cloned().unwrap();
    assert_eq!(last.credential, Some(CredentialKind::Certificate));
}

#[tokio::test]
async fn basic_auth_header_paths_and_methods() {
    let kit = kit().await;
    let client = https_client(&kit);
    let basic = STANDARD.encode(format!("{}:{}", kit.client_id(), kit.client_secret()));
    let response = client
        .post(kit.token_url())
        .header("authorization", format!("Basic {basic}"))
        .header("client-request-id", "0b3c6f7e-1111-4222-8333-444455556666")
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://outlook.office365.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["client-request-id"],
        "0b3c6f7e-1111-4222-8333-444455556666"
    );

    let response = client
        .post(format!(
            "{}/{}/oauth2/token",
            kit.authority(),
            kit.tenant_id()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    let response = client.get(kit.token_url()).send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_entra_error(status, &body, 400, "invalid_request", 900_561);

    // Not a form: the parameters are invisible, as for Entra.
    let response = client
        .post(kit.token_url())
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    let text = assert_entra_error(status, &body, 400, "invalid_request", 900_144);
    assert!(text.contains("'grant_type'"));
}

#[tokio::test]
async fn token_lifetime_is_settable() {
    let kit = kit().await;
    kit.entra.set_token_lifetime(Duration::from_secs(2));
    let token = super::fetch_token(&kit).await;
    let claims = decode_claims_unverified(&token).unwrap();
    let now = crate::testkit::jwt::unix_seconds(SystemTime::now());
    assert!(
        (claims.exp - now - 2).abs() <= 1,
        "exp {} now {now}",
        claims.exp
    );
    let stats = kit.entra.stats();
    assert!(matches!(
        stats.recent.back().unwrap().outcome,
        TokenOutcome::Issued { expires_in: 2, .. }
    ));
}
