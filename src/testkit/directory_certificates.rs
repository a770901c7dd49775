//! Certificate credentials of app registrations: what an administrator uploads under
//! App registrations → Certificates & secrets → Certificates, and what the fake token endpoint
//! checks client assertions against (`entra_assertion`).
//!
//! Invariants: a [`RegisteredCertificate`] is parsed once, when it is added (X.509 via
//! x509-parser, independently of the relay's own `oauth::entra` code); its thumbprints are
//! SHA-1 and SHA-256 of the DER exactly as uploaded; only public material is stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
use x509_parser::public_key::PublicKey;

use super::TestkitError;
use super::directory::Directory;
use super::random::{hex_lower, new_guid};

/// A certificate registered on an app (Entra's `keyCredential`).
#[derive(Clone)]
pub struct RegisteredCertificate {
    /// Entra's key id (a GUID).
    pub key_id: String,
    /// The certificate as uploaded (DER).
    pub der: Vec<u8>,
    /// SHA-1 of `der` (matched against the `x5t` header).
    pub sha1: Vec<u8>,
    /// SHA-256 of `der` (matched against the `x5t#S256` header).
    pub sha256: Vec<u8>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity; Entra refuses assertions signed with an expired credential.
    pub not_after: SystemTime,
    /// The subject public key when it is RSA (RSAPublicKey DER), else `None`.
    pub rsa_public_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for RegisteredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCertificate")
            .field("key_id", &self.key_id)
            .field("thumbprint", &self.thumbprint_hex())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl RegisteredCertificate {
    /// Parses an uploaded certificate.
    ///
    /// # Errors
    /// [`TestkitError::Crypto`] when `der` is not an X.509 certificate.
    pub fn from_der(der: &[u8]) -> Result<RegisteredCertificate, TestkitError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TestkitError::Crypto(format!("not an X.509 certificate: {e}")))?;
        let spki = cert.public_key();
        let rsa_public_key = matches!(spki.parsed(), Ok(PublicKey::RSA(_)))
            .then(|| spki.subject_public_key.data.to_vec());
        let validity = cert.validity();
        Ok(RegisteredCertificate {
            key_id: new_guid(),
            der: der.to_vec(),
            sha1: digest(&SHA1_FOR_LEGACY_USE_ONLY, der).as_ref().to_vec(),
            sha256: digest(&SHA256, der).as_ref().to_vec(),
            not_before: at_unix(validity.not_before.timestamp()),
            not_after: at_unix(validity.not_after.timestamp()),
            rsa_public_key,
        })
    }

    /// The SHA-1 thumbprint in uppercase hex, as the portal lists it.
    pub fn thumbprint_hex(&self) -> String {
        hex_lower(&self.sha1).to_ascii_uppercase()
    }

    /// Whether the credential is outside its validity at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after || now < self.not_before
    }
}

fn at_unix(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    let at = if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    at.unwrap_or(UNIX_EPOCH)
}

impl Directory {
    /// Uploads a certificate (DER) to the app's certificate credentials; returns its key id.
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`], or [`TestkitError::Crypto`] when `cert_der` is not an
    /// X.509 certificate.
    pub fn add_certificate(
        &self,
        client_id: &str,
        cert_der: &[u8],
    ) -> Result<String, TestkitError> {
        let certificate = RegisteredCertificate::from_der(cert_der)?;
        let key_id = certificate.key_id.clone();
        self.with_app(client_id, |app| app.certificates.push(certificate))?;
        Ok(key_id)
    }

    /// Deletes every certificate of the app (assertions then fail with AADSTS700027).
    ///
    /// # Errors
    /// [`TestkitError::UnknownApp`].
    pub fn remove_certificates(&self, client_id: &str) -> Result<(), TestkitError> {
        self.with_app(client_id, |app| app.certificates.clear())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::client_cert::TestClientCertificate;

    #[test]
    fn upload_and_remove() {
        let dir = Directory::contoso_with_app("app", "s", "relay@contoso.com").unwrap();
        let cert = TestClientCertificate::generate("relay", Duration::from_secs(3600)).unwrap();
        let key_id = dir.add_certificate("APP", cert.cert_der()).unwrap();
        let app = dir.app("app").unwrap();
        let registered = &app.certificates[0];
        assert_eq!(registered.key_id, key_id);
        assert_eq!(
            registered.sha256,
            digest(&SHA256, cert.cert_der()).as_ref().to_vec()
        );
        assert!(registered.rsa_public_key.is_some());
        assert!(!registered.is_expired(SystemTime::now()));
        assert_eq!(registered.thumbprint_hex().len(), 40);
        assert!(dir.add_certificate("app", b"not a certificate").is_err());
        assert!(matches!(
            dir.add_certificate("nope", cert.cert_der()),
            Err(TestkitError::UnknownApp(_))
        ));
        dir.remove_certificates("app").unwrap();
        assert!(dir.app("app").unwrap().certificates.is_empty());
    }
}
