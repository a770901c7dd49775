//! Self-signed RSA client certificates, as an administrator makes them with `openssl req -x509
//! -newkey rsa:2048` for an app registration's certificate credential: generated at run time
//! for tests and the `demo` command, never stored in the repository.
//!
//! ring cannot generate RSA keys and rcgen's ring backend therefore cannot either, so the key
//! comes from the `rsa` crate (drawing its randomness from ring's `SystemRandom`, the crate's
//! only random source); rcgen then signs the certificate with that key through ring.
//!
//! Invariants: keys are RSA 2048 with exponent 65537; certificates are self-signed with
//! `sha256WithRSAEncryption`, `CA:FALSE`, key usage digitalSignature; the private key never
//! appears in `Debug` output.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use ring::rand::{SecureRandom, SystemRandom};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::rand_core::{TryCryptoRng, TryRng};
use rustls::pki_types::PrivatePkcs8KeyDer;
use time::OffsetDateTime;

use super::TestkitError;
use super::jwt::unix_seconds;

/// RSA key size of generated client certificates (what the admin guide recommends).
pub const CLIENT_KEY_BITS: usize = 2048;

/// A self-signed RSA certificate and its private key, in the forms a test needs.
#[derive(Clone)]
pub struct TestClientCertificate {
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pkcs8_der: Vec<u8>,
    key_pem: String,
}

impl std::fmt::Debug for TestClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClientCertificate")
            .field("cert_der_len", &self.cert_der.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TestClientCertificate {
    /// Generates an RSA 2048 key and a self-signed certificate for `CN=common_name`, valid
    /// from one hour ago until `validity` from now.
    ///
    /// # Errors
    /// Key generation or certificate signing failed.
    pub fn generate(
        common_name: &str,
        validity: Duration,
    ) -> Result<TestClientCertificate, TestkitError> {
        let now = SystemTime::now();
        let not_before = now
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let not_after = now.checked_add(validity).unwrap_or(now);
        TestClientCertificate::generate_valid_between(common_name, not_before, not_after)
    }

    /// Like [`TestClientCertificate::generate`] with an explicit validity period (which may
    /// lie in the past, for an expired certificate).
    ///
    /// # Errors
    /// Key generation or certificate signing failed.
    pub fn generate_valid_between(
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<TestClientCertificate, TestkitError> {
        let key = rsa::PrivateKey::new(&mut RingRng(SystemRandom::new()), CLIENT_KEY_BITS)
            .map_err(|e| TestkitError::Crypto(format!("RSA key generation: {e}")))?;
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| TestkitError::Crypto(format!("RSA key encoding: {e}")))?;
        certificate_for_key(pkcs8.as_bytes(), common_name, not_before, not_after)
    }

    /// A new certificate for the same key (as when an admin renews a certificate with its old
    /// key), valid from `not_before` to `not_after`.
    ///
    /// # Errors
    /// Certificate signing failed.
    pub fn reissue(
        &self,
        common_name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<TestClientCertificate, TestkitError> {
        certificate_for_key(&self.key_pkcs8_der, common_name, not_before, not_after)
    }

    /// The certificate (DER): what the admin uploads, and what
    /// [`Directory::add_certificate`](super::Directory::add_certificate) registers.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate (PEM, `CERTIFICATE`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key (PKCS#8 DER).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8_der
    }

    /// The private key (PKCS#8 PEM, `PRIVATE KEY`, as `openssl req -nodes` writes it).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The private key as PKCS#1 PEM (`RSA PRIVATE KEY`, the traditional OpenSSL form).
    ///
    /// # Errors
    /// Re-encoding the key failed.
    pub fn key_pkcs1_pem(&self) -> Result<String, TestkitError> {
        let key = rsa::PrivateKey::from_pkcs8_der(&self.key_pkcs8_der)
            .map_err(|e| TestkitError::Crypto(format!("RSA key decoding: {e}")))?;
        key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| TestkitError::Crypto(format!("RSA key encoding: {e}")))
    }

    /// Certificate then key in one PEM text, like `cat cert.pem key.pem > relay-app.pem`.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// Writes [`TestClientCertificate::combined_pem`] to `path` (mode 0600 on Unix).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_combined_pem(&self, path: &Path) -> Result<(), TestkitError> {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(self.combined_pem().as_bytes())?;
        Ok(())
    }
}

fn certificate_for_key(
    pkcs8: &[u8],
    common_name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<TestClientCertificate, TestkitError> {
    let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8),
        &rcgen::PKCS_RSA_SHA256,
    )?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = offset_date_time(not_before)?;
    params.not_after = offset_date_time(not_after)?;
    let cert = params.self_signed(&key_pair)?;
    Ok(TestClientCertificate {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_pkcs8_der: pkcs8.to_vec(),
        key_pem: key_pair.serialize_pem(),
    })
}

fn offset_date_time(at: SystemTime) -> Result<OffsetDateTime, TestkitError> {
    OffsetDateTime::from_unix_timestamp(unix_seconds(at))
        .map_err(|e| TestkitError::Crypto(format!("certificate validity out of range: {e}")))
}

/// ring's `SystemRandom` as the `rand_core` generator the `rsa` crate asks for.
struct RingRng(SystemRandom);

/// The system random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
struct RandomUnavailable;

impl TryRng for RingRng {
    type Error = RandomUnavailable;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill(dst).map_err(|_| RandomUnavailable)
    }
}

impl TryCryptoRng for RingRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_self_signed_rsa_certificate_and_matching_key_forms() {
        let cert =
            TestClientCertificate::generate("relay-test", Duration::from_secs(86_400)).unwrap();
        assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(
            cert.key_pkcs1_pem()
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----")
        );
        assert!(format!("{cert:?}").contains("<redacted>"));
        let key = ring::signature::RsaKeyPair::from_pkcs8(cert.key_pkcs8_der()).unwrap();
        assert_eq!(key.public().modulus_len(), CLIENT_KEY_BITS / 8);
        let (_, x509) = x509_parser::parse_x509_certificate(cert.cert_der()).unwrap();
        assert_eq!(x509.subject().to_string(), "CN=relay-test");
        assert_eq!(x509.subject(), x509.issuer());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-app.pem");
        cert.write_combined_pem(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), cert.combined_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let renewed = cert
            .reissue(
                "relay-test",
                SystemTime::now(),
                SystemTime::now() + Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(renewed.key_pkcs8_der(), cert.key_pkcs8_der());
        assert_ne!(renewed.cert_der(), cert.cert_der());
    }
}
