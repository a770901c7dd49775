//! A throw-away public key infrastructure for the emulators: one CA and server certificates it
//! signs, all made by rcgen with ring, plus matching rustls configurations.
//!
//! Invariants:
//! - the CA is the only trust anchor of [`TestPki::client_config`], so a client built from it
//!   trusts the emulators and nothing else;
//! - the default server certificate covers `localhost`, `127.0.0.1` and `::1`, and is valid
//!   from one hour ago to one year ahead;
//! - every rustls configuration uses the ring provider explicitly (never a process default)
//!   and allows TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::TestkitError;
use super::client_cert::TestClientCertificate;

/// The names the default server certificate is issued for.
pub const DEFAULT_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A server certificate and its private key, both DER and PEM.
#[derive(Clone)]
pub struct ServerIdentity {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("cert_pem_len", &self.cert_pem.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServerIdentity {
    /// The certificate in PEM form.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The PKCS#8 private key in PEM form.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A rustls server configuration presenting this certificate (no client auth, TLS 1.2+1.3,
    /// ring provider, no ALPN).
    ///
    /// # Errors
    /// Fails if rustls rejects the key or the protocol versions.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TestkitError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)?;
        Ok(Arc::new(config))
    }
}

/// A CA plus one server certificate for the loopback names.
pub struct TestPki {
    ca_issuer: Issuer<'static, KeyPair>,
    ca_cert_der: CertificateDer<'static>,
    ca_cert_pem: String,
    server: ServerIdentity,
    client_config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// Generates a CA (ECDSA P-256, `CA:TRUE`, key usage cert sign + CRL sign) and a server
    /// certificate for `localhost`, `127.0.0.1` and `::1` signed by it.
    ///
    /// # Errors
    /// Fails if rcgen cannot generate a key or sign a certificate.
    pub fn generate() -> Result<TestPki, TestkitError> {
        let now = OffsetDateTime::now_utc();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "smtp-oauth-relay testkit CA");
        ca_name.push(DnType::OrganizationName, "smtp-oauth-relay testkit");
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.not_before = now - Duration::from_secs(3600);
        ca_params.not_after = now + Duration::from_secs(2 * 365 * 24 * 3600);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_cert_pem = ca_cert.pem();
        let ca_cert_der = ca_cert.der().clone();
        let ca_issuer = Issuer::new(ca_params, ca_key);
        let client_config = build_client_config(&ca_cert_der)?;
        let mut pki = TestPki {
            ca_issuer,
            ca_cert_der,
            ca_cert_pem,
            server: placeholder_identity(),
            client_config,
        };
        pki.server = pki.generate_server_cert_for(&DEFAULT_SERVER_NAMES)?;
        Ok(pki)
    }

    /// Issues another server certificate signed by this CA for `names` (DNS names or IP
    /// literals), for example to emulate `smtp.office365.com` behind a test resolver.
    ///
    /// # Errors
    /// Fails if a name is not a valid DNS name / IP literal or signing fails.
    pub fn generate_server_cert_for(&self, names: &[&str]) -> Result<ServerIdentity, TestkitError> {
        let now = OffsetDateTime::now_utc();
        let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(365 * 24 * 3600);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_issuer)?;
        Ok(ServerIdentity {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A self-signed RSA 2048 client certificate for `CN=common_name`, valid from one hour ago
    /// until `validity` from now, with its key: what an administrator uploads to an app
    /// registration as a certificate credential (not signed by this CA; Entra does not check
    /// chains). See [`TestClientCertificate`] for the PEM/DER forms.
    ///
    /// # Errors
    /// Key generation or certificate signing failed.
    pub fn generate_client_certificate(
        common_name: &str,
        validity: Duration,
    ) -> Result<TestClientCertificate, TestkitError> {
        TestClientCertificate::generate(common_name, validity)
    }

    /// The CA certificate (PEM), the one trust anchor clients need.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate (DER).
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// The default server certificate (PEM).
    pub fn server_cert_pem(&self) -> &str {
        self.server.cert_pem()
    }

    /// The default server certificate's private key (PKCS#8 PEM).
    pub fn server_key_pem(&self) -> &str {
        self.server.key_pem()
    }

    /// The default server identity.
    pub fn server_identity(&self) -> &ServerIdentity {
        &self.server
    }

    /// A rustls server configuration with the default server certificate.
    ///
    /// # Errors
    /// Fails if rustls rejects the key or the protocol versions.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TestkitError> {
        self.server.server_config()
    }

    /// Writes the CA certificate as PEM to `path` (for a relay's `ca_file`).
    ///
    /// # Errors
    /// Fails if the file cannot be written.
    pub fn write_ca_pem(&self, path: &Path) -> Result<(), TestkitError> {
        std::fs::write(path, self.ca_cert_pem.as_bytes())?;
        Ok(())
    }

    /// A rustls client configuration that trusts only this CA (ring provider, TLS 1.2+1.3).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.client_config)
    }
}

fn build_client_config(
    ca_cert_der: &CertificateDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, TestkitError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert_der.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The ring crypto provider, shared by every configuration of the kit.
pub(crate) fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn placeholder_identity() -> ServerIdentity {
    ServerIdentity {
        cert_der: CertificateDer::from(Vec::new()),
        cert_pem: String::new(),
        key_der: Vec::new(),
        key_pem: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_ca_and_loopback_server_certificate() {
        let pki = TestPki::generate().unwrap();
        assert!(pki.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            pki.server_cert_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(pki.server_key_pem().contains("PRIVATE KEY"));
        pki.server_config().unwrap();
        let extra = pki
            .generate_server_cert_for(&["smtp.office365.com"])
            .unwrap();
        extra.server_config().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        pki.write_ca_pem(&path).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), pki.ca_cert_pem());
    }

    #[tokio::test]
    async fn client_config_trusts_the_server_certificate() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let pki = TestPki::generate().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            tls.write_all(b"hi").await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let connector = tokio_rustls::TlsConnector::from(pki.client_config());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"hi");
        server.await.unwrap();
    }
}
