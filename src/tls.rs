//! TLS building blocks shared by the inbound listeners, the upstream SMTP client and the token
//! client: one crypto provider (ring) for the whole binary, PEM loading, and configs limited
//! to TLS 1.2 and 1.3.
//!
//! PEM files are read through [`crate::named_file::read_limited`]: a regular file of at
//! most [`NAMED_FILE_LIMIT`] bytes.
//!
//! Invariant: nothing here relies on a process-wide default provider being installed; every
//! config is built with [`provider`] explicitly, and `main` installs the same one as default
//! for libraries that look it up.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::named_file::{NAMED_FILE_LIMIT, read_limited};

/// The one crypto provider of the binary.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Install [`provider`] as the process default (idempotent). Call once at startup.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Load every certificate from a PEM file (a regular file of at most [`NAMED_FILE_LIMIT`]).
///
/// # Errors
/// A readable message when the file cannot be read or holds no certificate.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_limited(path, NAMED_FILE_LIMIT)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{} is not a valid PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} contains no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Parse every certificate from PEM text.
///
/// # Errors
/// A readable message when the text holds no valid certificate.
pub fn parse_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// Load a private key (PKCS#8, PKCS#1 or SEC1) from a PEM file (a regular file of at most
/// [`NAMED_FILE_LIMIT`]).
///
/// # Errors
/// A readable message when the file cannot be read or holds no key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_limited(path, NAMED_FILE_LIMIT)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{} holds no usable PEM private key: {e}", path.display()))
}

/// A server config for an inbound listener from PEM files.
///
/// # Errors
/// A readable message when the files cannot be loaded or the key does not match.
pub fn server_config(
    certificate: &Path,
    private_key: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = load_certificates(certificate)?;
    let key = load_private_key(private_key)?;
    server_config_from(chain, key)
}

/// A server config from a loaded chain and key.
///
/// # Errors
/// A readable message when the key does not fit the certificate.
pub fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the private key does not match the certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// A client config trusting the webpki (Mozilla) roots plus `extra_roots`.
///
/// # Errors
/// A readable message when an extra root is not a valid CA certificate.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        roots
            .add(root.clone())
            .map_err(|e| format!("an extra root certificate is not usable: {e}"))?;
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}
