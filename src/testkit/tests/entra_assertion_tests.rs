//! Certificate credentials at the token endpoint over HTTPS: assertions made by the relay's
//! own `oauth::entra` code are accepted, and every broken variant gets the AADSTS answer
//! documented in `entra_assertion`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
use serde_json::{Value, json};

use super::{assert_entra_error, kit, token_request};
use crate::oauth::entra::assertion::AssertionAlgorithm;
use crate::oauth::entra::certificate::ClientCertificate;
use crate::testkit::entra::TokenOutcome;
use crate::testkit::issuance::CredentialKind;
use crate::testkit::jwt::{decode_claims_unverified, unix_seconds};
use crate::testkit::{TestClientCertificate, Testkit};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// Sends a client-credentials request with `assertion` to the token URL of `tenant`.
async fn assertion_request(kit: &Testkit, tenant: &str, assertion: &str) -> (u16, Value) {
    let client_id = kit.client_id().to_owned();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("scope", "https://outlook.office365.com/.default"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    token_request(kit, tenant, &form).await
}

/// Signs arbitrary header and claims with the test certificate's key (PS256 or RS256).
fn sign_custom(cert: &TestClientCertificate, header: &Value, claims: &Value) -> String {
    let key = RsaKeyPair::from_pkcs8(cert.key_pkcs8_der()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let padding: &dyn ring::signature::RsaEncoding = if header["alg"] == "RS256" {
        &RSA_PKCS1_SHA256
    } else {
        &RSA_PSS_SHA256
    };
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        padding,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn ps256_header(cert: &TestClientCertificate) -> Value {
    let sha256 = ring::digest::digest(&ring::digest::SHA256, cert.cert_der());
    json!({"alg": "PS256", "typ": "JWT", "x5t#S256": URL_SAFE_NO_PAD.encode(sha256)})
}

fn claims(kit: &Testkit, nbf: i64, exp: i64) -> Value {
    json!({
        "aud": kit.token_url(),
        "iss": kit.client_id(),
        "sub": kit.client_id(),
        "jti": "0b5cbd5e-8e4a-4c8f-9d9c-2f6f5d8c1a11",
        "nbf": nbf,
        "iat": nbf,
        "exp": exp,
    })
}

#[tokio::test]
async fn valid_ps256_and_rs256_assertions_get_certificate_tokens() {
    let kit = kit().await;
    let generated = kit.add_client_certificate(YEAR).unwrap();
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    let domain_url = kit.entra.token_url("Contoso.com");
    for (algorithm, tenant, url) in [
        (AssertionAlgorithm::Ps256, kit.tenant_id(), kit.token_url()),
        (AssertionAlgorithm::Rs256, kit.tenant_id(), kit.token_url()),
        (
            AssertionAlgorithm::Ps256,
            "Contoso.com".to_owned(),
            domain_url,
        ),
    ] {
        let assertion = cert
            .client_assertion(algorithm, kit.client_id(), &url, SystemTime::now())
            .unwrap();
        let (status, body) = assertion_request(&kit, &tenant, &assertion).await;
        assert_eq!(status, 200, "{algorithm:?} at {url}: {body}");
        let token = body["access_token"].as_str().unwrap();
        let claims = decode_claims_unverified(token).unwrap();
        assert_eq!(claims.appidacr, "2", "certificate credential");
        assert_eq!(claims.appid, kit.client_id());
        assert_eq!(claims.roles, Some(vec!["SMTP.SendAsApp".to_owned()]));
        let last = kit.entra.stats().recent.back().cloned().unwrap();
        assert_eq!(last.credential, Some(CredentialKind::Certificate));
        assert!(matches!(last.outcome, TokenOutcome::Issued { .. }));
    }

    // RS256 with the SHA-256 thumbprint header (email-oauth2-proxy's combination) passes too.
    let now = unix_seconds(SystemTime::now());
    let mut header = ps256_header(&generated);
    header["alg"] = json!("RS256");
    let assertion = sign_custom(&generated, &header, &claims(&kit, now, now + 300));
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unregistered_removed_and_expired_certificates_answer_700027() {
    let kit = kit().await;
    let unregistered = TestClientCertificate::generate("other", YEAR).unwrap();
    let cert = ClientCertificate::from_pem(&unregistered.combined_pem()).unwrap();
    let assertion = cert
        .client_assertion(
            AssertionAlgorithm::Ps256,
            kit.client_id(),
            &kit.token_url(),
            SystemTime::now(),
        )
        .unwrap();
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_027);
    assert!(text.contains("not registered"), "{text}");
    assert!(text.contains(&cert.sha256_thumbprint_hex()), "{text}");

    // Registered, then removed by the admin.
    kit.directory
        .add_certificate(kit.client_id(), unregistered.cert_der())
        .unwrap();
    let (status, _) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    assert_eq!(status, 200);
    kit.directory.remove_certificates(kit.client_id()).unwrap();
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    assert_entra_error(status, &body, 401, "invalid_client", 700_027);

    // The registered certificate has expired.
    let now = SystemTime::now();
    let expired = unregistered
        .reissue("old", now - 2 * YEAR, now - Duration::from_secs(60))
        .unwrap();
    kit.directory
        .add_certificate(kit.client_id(), expired.cert_der())
        .unwrap();
    let cert = ClientCertificate::from_pem(&expired.combined_pem()).unwrap();
    assert!(cert.expiry_warning(now).unwrap().contains("expired on"));
    let assertion = cert
        .client_assertion(
            AssertionAlgorithm::Rs256,
            kit.client_id(),
            &kit.token_url(),
            now,
        )
        .unwrap();
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_027);
    assert!(text.contains("The key used is expired"), "{text}");
    assert!(text.contains(&cert.sha1_thumbprint_hex()), "{text}");
}

#[tokio::test]
async fn wrong_signature_and_wrong_audience_are_refused() {
    let kit = kit().await;
    let generated = kit.add_client_certificate(YEAR).unwrap();
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    let now = SystemTime::now();
    let valid = cert
        .client_assertion(
            AssertionAlgorithm::Ps256,
            kit.client_id(),
            &kit.token_url(),
            now,
        )
        .unwrap();

    // A signature by another key under the registered certificate's thumbprint.
    let other = TestClientCertificate::generate("intruder", YEAR).unwrap();
    let forged_key = ClientCertificate::from_pem(&other.combined_pem()).unwrap();
    let foreign = forged_key
        .client_assertion(
            AssertionAlgorithm::Ps256,
            kit.client_id(),
            &kit.token_url(),
            now,
        )
        .unwrap();
    let (input, _) = valid.rsplit_once('.').unwrap();
    let (_, foreign_signature) = foreign.rsplit_once('.').unwrap();
    let forged = format!("{input}.{foreign_signature}");
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &forged).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_027);
    assert!(text.contains("signature value did not match"), "{text}");

    // Claims changed after signing.
    let secs = unix_seconds(now);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut tampered = claims(&kit, secs, secs + 300);
    tampered["iss"] = json!("someone-else");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered.to_string());
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &parts.join(".")).await;
    assert_entra_error(status, &body, 401, "invalid_client", 700_027);

    // An alg the header names but Entra does not accept.
    let mut header = ps256_header(&generated);
    header["alg"] = json!("HS256");
    let assertion = sign_custom(&generated, &header, &claims(&kit, secs, secs + 300));
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_027);
    assert!(text.contains("'HS256' is not supported"), "{text}");

    // The public Entra URL instead of the one the request went to.
    for audience in [
        format!(
            "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
            kit.tenant_id()
        ),
        format!("{}/fabrikam.com/oauth2/v2.0/token", kit.authority()),
        format!("{}/{}/oauth2/token", kit.authority(), kit.tenant_id()),
    ] {
        let assertion = cert
            .client_assertion(AssertionAlgorithm::Ps256, kit.client_id(), &audience, now)
            .unwrap();
        let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
        let text = assert_entra_error(status, &body, 401, "invalid_client", 50_012);
        assert!(text.contains("audience claim does not match"), "{text}");
    }
    // The GUID in aud while the request used the domain form names the same tenant.
    let (status, body) = assertion_request(&kit, "contoso.onmicrosoft.com", &valid).await;
    assert_eq!(status, 200, "{body}");

    // iss is another app; sub differs from iss.
    let mut wrong_iss = claims(&kit, secs, secs + 300);
    wrong_iss["iss"] = json!("11111111-2222-3333-4444-555555555555");
    wrong_iss["sub"] = wrong_iss["iss"].clone();
    let assertion = sign_custom(&generated, &ps256_header(&generated), &wrong_iss);
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    assert_entra_error(status, &body, 401, "invalid_client", 700_021);
    let mut wrong_sub = claims(&kit, secs, secs + 300);
    wrong_sub["sub"] = json!("someone-else");
    let assertion = sign_custom(&generated, &ps256_header(&generated), &wrong_sub);
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    assert_entra_error(status, &body, 401, "invalid_client", 50_048);
}

#[tokio::test]
async fn time_range_jti_and_assertion_type_are_checked() {
    let kit = kit().await;
    let generated = kit.add_client_certificate(YEAR).unwrap();
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    let header = ps256_header(&generated);
    let now = SystemTime::now();
    let secs = unix_seconds(now);

    // Made 20 minutes ago: expired 15 minutes ago, beyond the 5-minute skew.
    let stale = cert
        .client_assertion(
            AssertionAlgorithm::Ps256,
            kit.client_id(),
            &kit.token_url(),
            now - Duration::from_secs(1200),
        )
        .unwrap();
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &stale).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_024);
    assert!(text.contains("not within its valid time range"), "{text}");
    assert!(text.contains("expired"), "{text}");

    // A clock 4 minutes behind or ahead is within the skew.
    for offset in [-240_i64, 240] {
        let assertion = sign_custom(
            &generated,
            &header,
            &claims(&kit, secs + offset, secs + offset + 300),
        );
        let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
        assert_eq!(status, 200, "offset {offset}: {body}");
    }
    // Not valid for another 10 minutes.
    let future = sign_custom(&generated, &header, &claims(&kit, secs + 600, secs + 900));
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &future).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_024);
    assert!(text.contains("not valid yet"), "{text}");
    // Lifetime of one hour.
    let long = sign_custom(&generated, &header, &claims(&kit, secs, secs + 3600));
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &long).await;
    let text = assert_entra_error(status, &body, 401, "invalid_client", 700_024);
    assert!(text.contains("exceeds the maximum of 600 s"), "{text}");
    // Exactly ten minutes is fine.
    let ten = sign_custom(&generated, &header, &claims(&kit, secs, secs + 600));
    assert_eq!(assertion_request(&kit, &kit.tenant_id(), &ten).await.0, 200);

    // No jti.
    let mut no_jti = claims(&kit, secs, secs + 300);
    no_jti.as_object_mut().unwrap().remove("jti");
    let assertion = sign_custom(&generated, &header, &no_jti);
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    let text = assert_entra_error(status, &body, 400, "invalid_request", 50_027);
    assert!(text.contains("'jti'"), "{text}");
    // No exp.
    let mut no_exp = claims(&kit, secs, secs + 300);
    no_exp.as_object_mut().unwrap().remove("exp");
    let assertion = sign_custom(&generated, &header, &no_exp);
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), &assertion).await;
    assert_entra_error(status, &body, 400, "invalid_request", 50_027);
    // Not a JWS at all.
    let (status, body) = assertion_request(&kit, &kit.tenant_id(), "not-a-jwt").await;
    assert_entra_error(status, &body, 400, "invalid_request", 50_027);

    // client_assertion_type missing or wrong.
    let valid = cert
        .client_assertion(
            AssertionAlgorithm::Ps256,
            kit.client_id(),
            &kit.token_url(),
            now,
        )
        .unwrap();
    let client_id = kit.client_id().to_owned();
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("scope", "https://outlook.office365.com/.default"),
        ("client_assertion", valid.as_str()),
    ];
    let (status, body) = token_request(&kit, &kit.tenant_id(), &form).await;
    assert_entra_error(status, &body, 400, "invalid_request", 900_144);
    form.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ));
    let (status, body) = token_request(&kit, &kit.tenant_id(), &form).await;
    assert_entra_error(status, &body, 400, "invalid_request", 50_027);
}
