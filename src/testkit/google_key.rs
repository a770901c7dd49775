//! Google Cloud service-account keys as the console hands them out: a real RSA 2048 key and
//! the JSON key file with exactly the fields of google-workspace.md §1 (`type`, `project_id`,
//! `private_key_id`, `private_key` as PKCS#8 PEM, `client_email`, numeric `client_id`,
//! `auth_uri`, `token_uri`, `auth_provider_x509_cert_url`, `client_x509_cert_url`,
//! `universe_domain`), plus an RS256 JWT signer so tests can act as a client.
//!
//! The RSA key comes from [`TestClientCertificate`] (the `rsa` crate with ring's randomness);
//! the certificate made alongside is discarded, as Google keeps its own.
//!
//! Invariants: the private key never appears in `Debug` output; `token_uri` is whatever the
//! caller passes (the emulator's URL in tests, Google's in a real file); JWTs are compact JWS
//! with base64url without padding, header `{"alg":"RS256","typ":"JWT","kid":private_key_id}`.
//!
//! Departure from the real console: `private_key_id` is 40 random hex digits and `client_id`
//! 21 random digits, the shapes of real files; nothing ties them to a real project.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::json;

use super::TestkitError;
use super::client_cert::TestClientCertificate;
use super::random::{fill_random, hex_lower};

/// `auth_uri` of every key file (not used by the JWT flow).
pub const GOOGLE_AUTH_URI: &str = "https://accounts.google.com/o/oauth2/auth";
/// Google's own token endpoint, the `token_uri` of real key files.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// `auth_provider_x509_cert_url` of every key file.
pub const GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v1/certs";

/// One key of a service account: the private half (for the key file) and identifiers.
#[derive(Clone)]
pub struct ServiceAccountKey {
    /// Cloud project id.
    pub project_id: String,
    /// Key id (`kid` of the JWT header).
    pub private_key_id: String,
    /// `name@project.iam.gserviceaccount.com`.
    pub client_email: String,
    /// The numeric client id (what the admin enters for domain-wide delegation).
    pub client_id: String,
    pkcs8_der: Vec<u8>,
    private_key_pem: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("client_id", &self.client_id)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccountKey {
    /// Generates a fresh RSA 2048 key for the account.
    ///
    /// # Errors
    /// Key generation failed.
    pub fn generate(
        project_id: &str,
        client_email: &str,
        client_id: &str,
    ) -> Result<ServiceAccountKey, TestkitError> {
        let material =
            TestClientCertificate::generate(client_email, Duration::from_secs(365 * 86_400))?;
        let mut id = [0u8; 20];
        fill_random(&mut id);
        Ok(ServiceAccountKey {
            project_id: project_id.to_owned(),
            private_key_id: hex_lower(&id),
            client_email: client_email.to_owned(),
            client_id: client_id.to_owned(),
            pkcs8_der: material.key_pkcs8_der().to_vec(),
            private_key_pem: material.key_pem().to_owned(),
        })
    }

    /// The private key (PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`).
    pub fn private_key_pem(&self) -> &str {
        &self.private_key_pem
    }

    /// The public key as RSAPublicKey DER (what Google keeps to verify signatures).
    ///
    /// # Errors
    /// The stored key does not parse (never for generated keys).
    pub fn public_key_der(&self) -> Result<Vec<u8>, TestkitError> {
        Ok(self.key_pair()?.public_key().as_ref().to_vec())
    }

    fn key_pair(&self) -> Result<RsaKeyPair, TestkitError> {
        RsaKeyPair::from_pkcs8(&self.pkcs8_der)
            .map_err(|e| TestkitError::Crypto(format!("RSA key parsing: {e}")))
    }

    /// The key file as Google writes it, with `token_uri` set to `token_uri`.
    pub fn to_json(&self, token_uri: &str) -> serde_json::Value {
        let encoded_email = self.client_email.replace('@', "%40");
        json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": self.client_id,
            "auth_uri": GOOGLE_AUTH_URI,
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": GOOGLE_CERTS_URL,
            "client_x509_cert_url":
                format!("https://www.googleapis.com/robot/v1/metadata/x509/{encoded_email}"),
            "universe_domain": "googleapis.com",
        })
    }

    /// Writes the key file (pretty-printed like the console's download; mode 0600 on Unix).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_json(&self, path: &Path, token_uri: &str) -> Result<(), TestkitError> {
        use std::io::Write as _;
        let text = serde_json::to_string_pretty(&self.to_json(token_uri))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        Ok(())
    }

    /// Signs `claims` as an RS256 JWT with header `kid` = `private_key_id`.
    ///
    /// # Errors
    /// JSON encoding or signing failed.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> Result<String, TestkitError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` under an arbitrary `header` (for tests of malformed assertions).
    ///
    /// # Errors
    /// JSON encoding or signing failed.
    pub fn sign_with_header(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
    ) -> Result<String, TestkitError> {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let key_pair = self.key_pair()?;
        let mut signature = vec![0u8; key_pair.public().modulus_len()];
        key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|e| TestkitError::Crypto(format!("RS256 signing: {e}")))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// A numeric client id of 21 digits (first digit non-zero), like real service accounts'.
pub fn new_numeric_client_id() -> String {
    let mut raw = [0u8; 21];
    fill_random(&mut raw);
    raw.iter()
        .enumerate()
        .map(|(index, byte)| {
            let digit = if index == 0 { 1 + byte % 9 } else { byte % 10 };
            char::from(b'0' + digit)
        })
        .collect()
}
