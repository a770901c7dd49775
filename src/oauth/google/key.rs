//! A Google Cloud service account's JSON key file (google-workspace.md §1): the fields the
//! JWT bearer grant needs (`client_email`, the numeric `client_id`, `private_key_id`,
//! `token_uri`) and the RSA private key that signs its assertions.
//!
//! Invariants: the private key never leaves this module except as signatures; no error and no
//! `Debug` output quotes the file's content (an error names what is wrong: not JSON, not a
//! service account key, no private key, an unusable key); `token_uri` is an `https://` URL
//! (or `http://` on loopback, for tests only).

use std::fmt;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::named_file::{NAMED_FILE_LIMIT, read_limited_text};

/// Where an administrator gets a key file, for error messages.
pub const KEY_HINT: &str = "download a JSON key from Google Cloud console → IAM & Admin → \
     Service accounts → the account → Keys → Add key → Create new key → JSON";

/// A loaded service account key.
pub struct ServiceAccountKey {
    /// `client_email`: the JWT's `iss`.
    pub client_email: String,
    /// `client_id`: the numeric ID an administrator enters for domain-wide delegation.
    pub client_id: String,
    /// `private_key_id`: the JWT header's `kid`.
    pub private_key_id: String,
    /// `token_uri`: where tokens are requested, and the JWT's `aud`.
    pub token_uri: String,
    /// `project_id`, for `check`.
    pub project_id: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("client_id", &self.client_id)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct RawKeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    client_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Reads and checks the key file at `path`.
    ///
    /// # Errors
    /// What is wrong with the file (never its content), prefixed with nothing: the caller
    /// names the key.
    pub fn load(path: &Path) -> Result<ServiceAccountKey, String> {
        let text = read_limited_text(path, NAMED_FILE_LIMIT)?;
        ServiceAccountKey::from_json(&text)
    }

    /// Parses and checks a key file's text (from a file or `service_account_key_env`).
    ///
    /// # Errors
    /// What is wrong, in words, without quoting the text.
    pub fn from_json(text: &str) -> Result<ServiceAccountKey, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "is not JSON (line {}, column {}): a service account key is the .json file \
                 Google Cloud downloads; {KEY_HINT}",
                e.line(),
                e.column()
            )
        })?;
        let raw: RawKeyFile = serde_json::from_value(value).map_err(|_| {
            format!("is not a service account key (its fields are not strings); {KEY_HINT}")
        })?;
        match raw.kind.as_deref() {
            Some("service_account") => {}
            Some("authorized_user") => {
                return Err(format!(
                    "is a user's OAuth credential (type \"authorized_user\", from gcloud auth), \
                     not a service account key; {KEY_HINT}"
                ));
            }
            Some(_) if text.contains("\"installed\"") || text.contains("\"web\"") => {
                return Err(format!(
                    "is an OAuth client ID file, not a service account key; {KEY_HINT}"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "is not a service account key (type is \"{}\", not \"service_account\"); {KEY_HINT}",
                    crate::vocab::text::one_line_excerpt(other, 40)
                ));
            }
            None => {
                return Err(format!(
                    "is not a service account key (no \"type\": \"service_account\"); {KEY_HINT}"
                ));
            }
        }
        let field = |value: Option<String>, name: &str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("is a service account key without \"{name}\"; {KEY_HINT}"))
        };
        let private_key = raw
            .private_key
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                format!("has no private key (\"private_key\" is missing or empty); {KEY_HINT}")
            })?;
        let client_email = field(raw.client_email, "client_email")?;
        let client_id = field(raw.client_id, "client_id")?;
        let token_uri = field(raw.token_uri, "token_uri")?;
        let private_key_id = raw.private_key_id.unwrap_or_default();
        if !(token_uri.starts_with("https://")
            || token_uri.starts_with("http://127.0.0.1")
            || token_uri.starts_with("http://localhost"))
        {
            return Err("has a token_uri that is not an https:// URL".to_owned());
        }
        let key = rsa_key(&private_key)?;
        Ok(ServiceAccountKey {
            client_email,
            client_id,
            private_key_id,
            token_uri,
            project_id: raw.project_id.unwrap_or_default(),
            key,
            rng: SystemRandom::new(),
        })
    }

    /// RS256 (RSA PKCS#1 v1.5, SHA-256) signature of `message`.
    ///
    /// # Errors
    /// The system random generator or RSA signing failed.
    pub fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| "signing with the service account's private key failed".to_owned())?;
        Ok(signature)
    }

    /// SHA-256 (hex) over the public key: tells two keys apart without showing either.
    pub fn fingerprint(&self) -> String {
        use ring::signature::KeyPair as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, self.key.public_key().as_ref());
        crate::vocab::hex::lower(digest.as_ref())
    }
}

fn rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        format!(
            "has a \"private_key\" that is not a PEM-encoded private key; \
             the file was probably edited: {KEY_HINT}"
        )
    })?;
    let parsed = match &key {
        PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
        _ => {
            return Err(format!(
                "has a \"private_key\" that is not an RSA key (Google signs service account \
                 JWTs with RS256); {KEY_HINT}"
            ));
        }
    };
    parsed.map_err(|_| format!("has a \"private_key\" that is not a usable RSA key; {KEY_HINT}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::google_workspace::GoogleWorkspace;

    fn good_file() -> (serde_json::Value, String) {
        let (_, key) = GoogleWorkspace::healthy("relay@example.com").unwrap();
        let json = key.to_json("https://oauth2.googleapis.com/token");
        (json, key.private_key_pem().to_owned())
    }

    #[test]
    fn a_console_key_file_loads() {
        let (json, _) = good_file();
        let key = ServiceAccountKey::from_json(&json.to_string()).unwrap();
        assert_eq!(
            key.client_email,
            "relay@relay-project.iam.gserviceaccount.com"
        );
        assert_eq!(key.token_uri, "https://oauth2.googleapis.com/token");
        assert_eq!(key.client_id.len(), 21);
        assert_eq!(key.sign_rs256(b"x").unwrap().len(), 256);
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn each_broken_file_says_what_is_wrong_without_quoting_the_key() {
        let (json, pem) = good_file();
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut value = json.clone();
            change(&mut value);
            value.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json at all".to_owned(), "is not JSON"),
            (pem.clone(), "is not JSON"),
            (
                with(&|v| v["type"] = "authorized_user".into()),
                "authorized_user",
            ),
            (
                with(&|v| v["type"] = "external_account".into()),
                "not a service account key",
            ),
            (
                r#"{"installed":{"client_id":"x"}}"#.to_owned(),
                "not a service account key",
            ),
            (
                with(&|v| v["private_key"] = "".into()),
                "has no private key",
            ),
            (
                with(&|v| {
                    v.as_object_mut().unwrap().remove("private_key");
                }),
                "has no private key",
            ),
            (
                with(&|v| v["private_key"] = "MIIEvQIBADANBg".into()),
                "not a PEM-encoded private key",
            ),
            (
                with(&|v| v["client_email"] = "".into()),
                "without \"client_email\"",
            ),
            (
                with(&|v| {
                    v.as_object_mut().unwrap().remove("token_uri");
                }),
                "without \"token_uri\"",
            ),
            (
                with(&|v| v["token_uri"] = "ftp://x".into()),
                "not an https:// URL",
            ),
            (with(&|v| v["client_id"] = 5.into()), "not strings"),
        ];
        for (text, expected) in cases {
            let error = ServiceAccountKey::from_json(&text).unwrap_err();
            assert!(error.contains(expected), "{expected}: {error}");
            assert!(!error.contains("BEGIN PRIVATE KEY"), "{error}");
            assert!(!error.contains(&pem[40..80]), "{error}");
        }
    }
}
