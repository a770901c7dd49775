//! The app registration a token is requested for: the token endpoint, the client ID, the
//! scope and how the app proves its identity (a client secret or a certificate). The config
//! builds one per account (`AccountSettings::client_app`); the token provider needs nothing
//! else, so `oauth` does not depend on the config's shape.
//!
//! Invariant: the secret stays a [`Secret`] and the `Debug` output of every type here is safe
//! to log.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;

use crate::vocab::secret::Secret;

/// How the app proves its identity: to Entra (a secret or a certificate) or to Google (a
/// service account key).
#[derive(Debug, Clone)]
pub enum ClientCredential {
    Secret(Secret),
    /// A certificate uploaded to the app registration, and its private key: the relay signs a
    /// client assertion (`private_key_jwt`) for every token request.
    Certificate {
        certificate: Arc<super::entra::certificate::ClientCertificate>,
        algorithm: super::entra::assertion::AssertionAlgorithm,
    },
    /// A Google service account's JSON key, acting for `subject` (the mailbox) through
    /// domain-wide delegation: the relay signs a JWT bearer grant for every token request.
    ServiceAccount {
        key: Arc<super::google::key::ServiceAccountKey>,
        subject: String,
    },
}

/// What a token provider needs to know about the app it requests tokens for.
#[derive(Debug, Clone)]
pub struct ClientApp {
    /// The account's name, for log lines and metric labels.
    pub account: String,
    /// The full token URL (`{authority}/{tenant}/oauth2/v2.0/token`).
    pub token_endpoint: String,
    pub client_id: String,
    /// The directory (tenant) ID the app is registered in, to diagnose a refused token.
    pub tenant_id: String,
    pub scope: String,
    pub credential: ClientCredential,
    /// Renew a cached token this long before it expires.
    pub renew_before: Duration,
    /// Extra trusted roots from `ca_file` (TLS-inspecting proxies, tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
}
