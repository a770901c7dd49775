//! One-call setup of the whole kit: a PKI, a healthy Contoso tenant, a [`FakeEntra`] and a
//! [`FakeExchange`] sharing that tenant, plus everything a relay configuration needs
//! (authority, tenant, client id and secret, mailbox, SMTP address, CA file).
//!
//! Invariant: right after [`Testkit::start`] the §0 checklist of exchange-online.md holds —
//! app registered, valid secret, `SMTP.SendAsApp` with admin consent, service principal known
//! to Exchange, FullAccess on the mailbox, SMTP AUTH enabled — so a correct relay delivers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::TestkitError;
use super::client_cert::TestClientCertificate;
use super::directory::Directory;
use super::entra::FakeEntra;
use super::exchange::{ExchangeOptions, FakeExchange};
use super::issuance::Resource;
use super::pki::TestPki;
use super::random::{new_client_secret_value, new_guid};

/// Options of [`Testkit::start`].
#[derive(Clone, Debug)]
pub struct TestkitOptions {
    /// The mailbox the app may send as (default `relay@contoso.com`).
    pub mailbox: String,
    /// The app's client id (default: a random GUID).
    pub client_id: Option<String>,
    /// The app's secret value (default: a random Entra-style value).
    pub client_secret: Option<String>,
    /// `expires_in` of issued tokens (default 3599 s).
    pub token_lifetime: Duration,
    /// Options of the SMTP server.
    pub exchange: ExchangeOptions,
}

impl Default for TestkitOptions {
    fn default() -> Self {
        TestkitOptions {
            mailbox: "relay@contoso.com".to_owned(),
            client_id: None,
            client_secret: None,
            token_lifetime: super::entra::DEFAULT_TOKEN_LIFETIME,
            exchange: ExchangeOptions::default(),
        }
    }
}

/// A running kit: both emulators, their shared directory and the relay's settings.
pub struct Testkit {
    /// The CA and server certificate.
    pub pki: TestPki,
    /// The shared tenant configuration.
    pub directory: Directory,
    /// The token endpoint.
    pub entra: FakeEntra,
    /// The SMTP server.
    pub exchange: FakeExchange,
    client_id: String,
    client_secret: String,
    mailbox: String,
}

impl std::fmt::Debug for Testkit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testkit")
            .field("entra", &self.entra)
            .field("exchange", &self.exchange)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl Testkit {
    /// Generates the PKI, builds the healthy tenant and starts both servers.
    ///
    /// # Errors
    /// Any [`TestkitError`] from the parts.
    pub async fn start(options: TestkitOptions) -> Result<Testkit, TestkitError> {
        let pki = TestPki::generate()?;
        let client_id = options.client_id.unwrap_or_else(new_guid);
        let client_secret = options
            .client_secret
            .unwrap_or_else(new_client_secret_value);
        let directory = Directory::contoso_with_app(&client_id, &client_secret, &options.mailbox)?;
        let entra = FakeEntra::start(directory.clone(), &pki).await?;
        entra.set_token_lifetime(options.token_lifetime);
        let exchange = FakeExchange::start(
            directory.clone(),
            &pki,
            directory.token_verifier(),
            options.exchange,
        )
        .await?;
        Ok(Testkit {
            pki,
            directory,
            entra,
            exchange,
            client_id,
            client_secret,
            mailbox: options.mailbox.to_ascii_lowercase(),
        })
    }

    /// `https://127.0.0.1:PORT` (the relay's `authority`).
    pub fn authority(&self) -> String {
        self.entra.authority()
    }

    /// The token URL for the tenant GUID.
    pub fn token_url(&self) -> String {
        self.entra.token_url(&self.tenant_id())
    }

    /// The tenant GUID.
    pub fn tenant_id(&self) -> String {
        self.directory.tenant_id()
    }

    /// The tenant's primary domain (`contoso.onmicrosoft.com`), also usable as `tenant_id`.
    pub fn tenant_domain(&self) -> String {
        self.directory
            .domains()
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// The app's client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The app's secret value.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// The mailbox the app may send as.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// The Exchange token scope.
    pub fn scope(&self) -> String {
        Resource::Exchange.default_scope()
    }

    /// `127.0.0.1:PORT` of the SMTP server.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.exchange.addr()
    }

    /// `127.0.0.1:PORT` as a string (the relay's `smtp_server`).
    pub fn smtp_server(&self) -> String {
        self.exchange.addr().to_string()
    }

    /// The CA certificate (PEM) both servers chain to.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_cert_pem()
    }

    /// Writes the CA PEM to `path` (the relay's `ca_file`).
    ///
    /// # Errors
    /// Fails if the file cannot be written.
    pub fn write_ca_pem(&self, path: &Path) -> Result<PathBuf, TestkitError> {
        self.pki.write_ca_pem(path)?;
        Ok(path.to_path_buf())
    }

    /// An `[[account]]` block of `relay.toml` that points the relay at this kit: the token
    /// endpoint, the tenant, the app and its secret, the mailbox, the SMTP server and the CA
    /// (written by the caller to `ca_file`). Pacing is off so tests and benchmarks run at speed.
    pub fn relay_account_toml(&self, name: &str, ca_file: &Path) -> String {
        format!(
            "[[account]]\nname = \"{name}\"\nmailbox = \"{}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\n\
             client_secret = \"{}\"\nauthority = \"{}\"\nsmtp_server = \"{}\"\nca_file = \"{}\"\n\
             max_messages_per_minute = 0\n",
            self.mailbox,
            self.tenant_id(),
            self.client_id,
            self.client_secret,
            self.authority(),
            self.smtp_server(),
            ca_file.display()
        )
    }

    /// Generates a self-signed RSA client certificate (`CN=smtp-oauth-relay`, valid for
    /// `validity`) and registers it on the kit's app, as an administrator does under
    /// Certificates & secrets; the app's secret keeps working too. Write
    /// [`TestClientCertificate::combined_pem`] to a file for the relay's certificate setting.
    ///
    /// # Errors
    /// Key generation or certificate signing failed.
    pub fn add_client_certificate(
        &self,
        validity: Duration,
    ) -> Result<TestClientCertificate, TestkitError> {
        let certificate = TestClientCertificate::generate("smtp-oauth-relay", validity)?;
        self.directory
            .add_certificate(&self.client_id, certificate.cert_der())?;
        Ok(certificate)
    }

    /// A valid Exchange token minted directly (no HTTP round trip), for SMTP-only tests.
    ///
    /// # Errors
    /// Signing failure.
    pub fn mint_exchange_token(&self) -> Result<String, TestkitError> {
        self.directory.mint_access_token(
            &self.client_id,
            Resource::Exchange,
            self.entra.token_lifetime(),
        )
    }

    /// Stops both servers.
    pub async fn shutdown(&self) {
        self.exchange.shutdown().await;
        self.entra.shutdown().await;
    }
}
