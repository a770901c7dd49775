//! Unit tests of client certificates and assertions, with keys generated at test time by the
//! testkit (nothing secret is stored in the repository).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use serde_json::Value;

use super::*;
use crate::oauth::entra::assertion::AssertionAlgorithm;
use crate::testkit::TestClientCertificate;

const DAY: Duration = Duration::from_secs(86_400);
const TOKEN_URL: &str =
    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
const CLIENT_ID: &str = "00001111-aaaa-2222-bbbb-3333cccc4444";

fn generated(validity: Duration) -> TestClientCertificate {
    TestClientCertificate::generate("smtp-oauth-relay", validity).unwrap()
}

fn decode(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// The certificate's RSAPublicKey, read independently of the module under test.
fn certificate_public_key(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.public_key().subject_public_key.data.to_vec()
}

#[test]
fn ps256_and_rs256_assertions_have_the_documented_shape_and_verify() {
    let generated = generated(365 * DAY);
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let public_key = certificate_public_key(generated.cert_der());
    let sha1 = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        generated.cert_der(),
    );
    let sha256 = ring::digest::digest(&ring::digest::SHA256, generated.cert_der());

    for algorithm in [AssertionAlgorithm::Ps256, AssertionAlgorithm::Rs256] {
        let assertion = cert
            .client_assertion(algorithm, CLIENT_ID, TOKEN_URL, now)
            .unwrap();
        let segments: Vec<&str> = assertion.split('.').collect();
        assert_eq!(segments.len(), 3);
        for segment in &segments {
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "not base64url without padding: {segment}"
            );
        }
        // 2048-bit signature = 256 bytes = 342 base64url characters without padding.
        assert_eq!(segments[2].len(), 342);

        let header = decode(segments[0]);
        let object = header.as_object().unwrap();
        assert_eq!(object.len(), 3, "{header}");
        assert_eq!(header["typ"], "JWT");
        match algorithm {
            AssertionAlgorithm::Ps256 => {
                assert_eq!(header["alg"], "PS256");
                assert_eq!(header["x5t#S256"], URL_SAFE_NO_PAD.encode(sha256.as_ref()));
            }
            AssertionAlgorithm::Rs256 => {
                assert_eq!(header["alg"], "RS256");
                assert_eq!(header["x5t"], URL_SAFE_NO_PAD.encode(sha1.as_ref()));
            }
        }

        let claims = decode(segments[1]);
        assert_eq!(claims.as_object().unwrap().len(), 7, "{claims}");
        assert_eq!(claims["aud"], TOKEN_URL);
        assert_eq!(claims["iss"], CLIENT_ID);
        assert_eq!(claims["sub"], CLIENT_ID);
        assert_eq!(claims["nbf"], 1_800_000_000);
        assert_eq!(claims["iat"], 1_800_000_000);
        assert_eq!(claims["exp"], 1_800_000_300);
        let jti = claims["jti"].as_str().unwrap();
        assert!(crate::testkit::random::is_guid(jti), "{jti}");
        assert_eq!(jti.as_bytes()[14], b'4');

        let verification: &dyn ring::signature::VerificationAlgorithm = match algorithm {
            AssertionAlgorithm::Ps256 => &RSA_PSS_2048_8192_SHA256,
            AssertionAlgorithm::Rs256 => &RSA_PKCS1_2048_8192_SHA256,
        };
        let signing_input = format!("{}.{}", segments[0], segments[1]);
        let signature = URL_SAFE_NO_PAD.decode(segments[2]).unwrap();
        UnparsedPublicKey::new(verification, &public_key)
            .verify(signing_input.as_bytes(), &signature)
            .unwrap();
        // The other padding must not verify: the header's alg is the one really used.
        let other: &dyn ring::signature::VerificationAlgorithm = match algorithm {
            AssertionAlgorithm::Ps256 => &RSA_PKCS1_2048_8192_SHA256,
            AssertionAlgorithm::Rs256 => &RSA_PSS_2048_8192_SHA256,
        };
        assert!(
            UnparsedPublicKey::new(other, &public_key)
                .verify(signing_input.as_bytes(), &signature)
                .is_err()
        );
    }

    let first = cert
        .client_assertion(AssertionAlgorithm::Ps256, CLIENT_ID, TOKEN_URL, now)
        .unwrap();
    let second = cert
        .client_assertion(AssertionAlgorithm::Ps256, CLIENT_ID, TOKEN_URL, now)
        .unwrap();
    assert_ne!(
        decode(first.split('.').nth(1).unwrap())["jti"],
        decode(second.split('.').nth(1).unwrap())["jti"],
        "every assertion has its own jti"
    );
    assert!(
        cert.client_assertion(
            AssertionAlgorithm::Ps256,
            CLIENT_ID,
            TOKEN_URL,
            UNIX_EPOCH - DAY
        )
        .is_err()
    );
}

#[test]
fn thumbprints_subject_and_validity_match_an_independent_reading() {
    let generated = generated(365 * DAY);
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    assert_eq!(cert.der(), generated.cert_der());
    let sha1 = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        generated.cert_der(),
    );
    let sha256 = ring::digest::digest(&ring::digest::SHA256, generated.cert_der());
    assert_eq!(cert.sha1_thumbprint().as_slice(), sha1.as_ref());
    assert_eq!(cert.sha256_thumbprint().as_slice(), sha256.as_ref());
    let hex: String = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(cert.sha1_thumbprint_hex(), hex);
    assert_eq!(cert.sha1_thumbprint_hex().len(), 40);
    assert_eq!(cert.sha256_thumbprint_hex().len(), 64);
    assert!(
        cert.sha256_thumbprint_hex()
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    );
    assert_eq!(cert.subject(), "CN=smtp-oauth-relay");
    let (_, x509) = x509_parser::parse_x509_certificate(generated.cert_der()).unwrap();
    let not_after = UNIX_EPOCH + Duration::from_secs(x509.validity().not_after.timestamp() as u64);
    assert_eq!(cert.not_after(), not_after);
    assert!(cert.not_before() < SystemTime::now());
}

#[test]
fn pkcs1_keys_key_first_files_and_extra_certificates_are_accepted() {
    let generated = generated(365 * DAY);
    let pkcs1 = generated.key_pkcs1_pem().unwrap();
    let cert = ClientCertificate::from_pem(&format!("{}{pkcs1}", generated.cert_pem())).unwrap();
    assert_eq!(cert.der(), generated.cert_der());
    let key_first = format!("{}{}", generated.key_pem(), generated.cert_pem());
    assert!(ClientCertificate::from_pem(&key_first).is_ok());
    let other = TestClientCertificate::generate("intermediate", DAY).unwrap();
    let with_chain = format!("{}{}", generated.combined_pem(), other.cert_pem());
    let cert = ClientCertificate::from_pem(&with_chain).unwrap();
    assert_eq!(
        cert.der(),
        generated.cert_der(),
        "the first block is the leaf"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let a = generated(DAY);
    let b = generated(DAY);
    let error =
        ClientCertificate::from_pem(&format!("{}{}", a.cert_pem(), b.key_pem())).unwrap_err();
    assert!(
        error.contains("the private key does not belong to the certificate"),
        "{error}"
    );
    assert!(!error.contains("PRIVATE KEY"), "{error}");
}

#[test]
fn ec_keys_and_certificates_are_refused() {
    let ec_key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["relay".to_owned()]).unwrap();
    let ec_cert = params.self_signed(&ec_key).unwrap();
    let error =
        ClientCertificate::from_pem(&format!("{}{}", ec_cert.pem(), ec_key.serialize_pem()))
            .unwrap_err();
    assert!(error.contains("EC (elliptic curve) key"), "{error}");
    assert!(error.contains("must be RSA"), "{error}");
    assert!(
        error.contains("openssl req -x509 -newkey rsa:2048"),
        "{error}"
    );

    // RSA key but EC certificate: the certificate is refused.
    let rsa = generated(DAY);
    let error =
        ClientCertificate::from_pem(&format!("{}{}", ec_cert.pem(), rsa.key_pem())).unwrap_err();
    assert!(error.contains("certificate has an EC"), "{error}");

    // Traditional SEC1 "EC PRIVATE KEY" blocks too.
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n";
    let error = ClientCertificate::from_pem(&format!("{}{sec1}", rsa.cert_pem())).unwrap_err();
    assert!(error.contains("EC (elliptic curve) key"), "{error}");
}

#[test]
fn missing_parts_are_explained_in_admin_words() {
    let generated = generated(DAY);
    let error = ClientCertificate::from_pem(generated.cert_pem()).unwrap_err();
    assert!(error.starts_with("the file has no private key"), "{error}");
    let error = ClientCertificate::from_pem(generated.key_pem()).unwrap_err();
    assert!(error.starts_with("the file has no certificate"), "{error}");
    assert!(!error.contains("MII"), "never quote the key: {error}");
    let error = ClientCertificate::from_pem("").unwrap_err();
    assert!(error.starts_with("the file has no certificate"), "{error}");
    let encrypted = format!(
        "{}-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        generated.cert_pem()
    );
    let error = ClientCertificate::from_pem(&encrypted).unwrap_err();
    assert!(error.contains("passphrase"), "{error}");
    let broken = format!(
        "{}-----BEGIN PRIVATE KEY-----\nMIIE!!!!\n-----END PRIVATE KEY-----\n",
        generated.cert_pem()
    );
    let error = ClientCertificate::from_pem(&broken).unwrap_err();
    assert!(!error.contains("MIIE"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay-app.pem");
    let error = ClientCertificate::load(&path).unwrap_err();
    assert!(
        error.starts_with("cannot read") && error.contains("relay-app.pem"),
        "{error}"
    );
    std::fs::write(&path, generated.cert_pem()).unwrap();
    let error = ClientCertificate::load(&path).unwrap_err();
    assert!(
        error.contains("relay-app.pem: the file has no private key"),
        "{error}"
    );
    generated.write_combined_pem(&path).unwrap();
    assert!(ClientCertificate::load(&path).is_ok());
}

#[test]
fn debug_never_shows_the_key() {
    let generated = generated(DAY);
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    let debug = format!("{cert:?}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(debug.contains(&cert.sha1_thumbprint_hex()), "{debug}");
    let key_body: String = generated.key_pem().lines().nth(1).unwrap().to_owned();
    assert!(!debug.contains(&key_body));
}

#[test]
fn expiry_warning_windows() {
    let generated = generated(365 * DAY);
    let cert = ClientCertificate::from_pem(&generated.combined_pem()).unwrap();
    let not_after = cert.not_after();
    let thumbprint = cert.sha1_thumbprint_hex();

    let far = not_after - 31 * DAY;
    assert_eq!(cert.days_until_expiry(far), 31);
    assert_eq!(cert.expiry_warning(far), None);
    assert!(!cert.is_expired(far));

    let edge = not_after - 30 * DAY;
    assert!(cert.expiry_warning(edge).is_some(), "30 days before: warn");

    let near = not_after - 29 * DAY;
    assert_eq!(cert.days_until_expiry(near), 29);
    let warning = cert.expiry_warning(near).unwrap();
    assert!(!warning.contains('\n'));
    assert!(warning.contains(&thumbprint), "{warning}");
    assert!(warning.contains("in 29 days"), "{warning}");
    assert!(warning.contains(" UTC"), "{warning}");
    assert!(warning.contains("Certificates & secrets"), "{warning}");
    assert!(warning.contains("client_certificate"), "{warning}");
    assert!(!warning.contains("expired on"), "{warning}");

    assert!(
        cert.expiry_warning(not_after - Duration::from_secs(3600))
            .unwrap()
            .contains("in less than a day")
    );

    let after = not_after + 2 * DAY;
    assert!(cert.is_expired(after));
    assert_eq!(cert.days_until_expiry(after), -2);
    let error = cert.expiry_warning(after).unwrap();
    assert!(error.contains("expired on"), "{error}");
    assert!(error.contains("AADSTS700027"), "{error}");
    assert!(error.contains("AADSTS50012"), "{error}");
    assert!(error.contains(&thumbprint), "{error}");
    assert!(error.contains("Certificates & secrets"), "{error}");
}

#[test]
fn algorithm_names_in_configuration() {
    #[derive(serde::Deserialize)]
    struct Setting {
        algorithm: AssertionAlgorithm,
    }
    let parsed: Setting = toml::from_str("algorithm = \"rs256\"").unwrap();
    assert_eq!(parsed.algorithm, AssertionAlgorithm::Rs256);
    assert_eq!(
        serde_json::to_string(&AssertionAlgorithm::Ps256).unwrap(),
        "\"ps256\""
    );
    assert!(toml::from_str::<Setting>("algorithm = \"PS256\"").is_err());
    assert_eq!(AssertionAlgorithm::default(), AssertionAlgorithm::Ps256);
    assert_eq!(AssertionAlgorithm::Rs256.jws_name(), "RS256");
    assert_eq!(AssertionAlgorithm::Ps256.thumbprint_header(), "x5t#S256");
}

#[test]
fn a_certificate_can_be_shared_between_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClientCertificate>();
}
