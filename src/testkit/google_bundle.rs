//! [`GoogleTestkit`]: the Google emulators wired in one call, the counterpart of
//! [`Testkit`](super::Testkit) for Microsoft: a throw-away PKI, a healthy
//! [`GoogleWorkspace`] (domain of the mailbox, the mailbox as an active user, one service
//! account whose numeric client id is delegated `https://mail.google.com/`), the token
//! endpoint and the Gmail SMTP server sharing it.
//!
//! ```no_run
//! # async fn example() -> Result<(), smtp_oauth_relay::testkit::TestkitError> {
//! use smtp_oauth_relay::testkit::google_bundle::GoogleTestkit;
//! let kit = GoogleTestkit::start("relay@example.com", Default::default()).await?;
//! let dir = std::env::temp_dir();
//! let key_file = kit.write_key_file(&dir.join("sa.json"))?; // token_uri = the emulator
//! let ca_file = dir.join("google-ca.pem");
//! kit.pki.write_ca_pem(&ca_file)?;
//! let smtp_server = kit.smtp_server(); // "127.0.0.1:PORT", STARTTLS
//! kit.workspace.rotate_key(&kit.key.client_email)?; // next token: "Invalid JWT Signature."
//! # let _ = (key_file, smtp_server);
//! # Ok(()) }
//! ```
//!
//! Invariants: as in the rest of the kit (loopback, port 0, stop on drop); the key file is
//! written with mode 0600.

use std::path::{Path, PathBuf};

use super::TestkitError;
use super::gmail::{FakeGmail, GmailOptions};
use super::google_key::ServiceAccountKey;
use super::google_token::FakeGoogleToken;
use super::google_workspace::GoogleWorkspace;
use super::pki::TestPki;

/// The Google emulators with a healthy configuration.
#[derive(Debug)]
pub struct GoogleTestkit {
    /// The CA and server certificate of both servers.
    pub pki: TestPki,
    /// The shared Workspace/Cloud configuration.
    pub workspace: GoogleWorkspace,
    /// The token endpoint.
    pub token: FakeGoogleToken,
    /// The Gmail SMTP server.
    pub gmail: FakeGmail,
    /// The service account's first key.
    pub key: ServiceAccountKey,
    mailbox: String,
}

impl GoogleTestkit {
    /// Starts everything for `mailbox` (which becomes the Workspace user).
    ///
    /// # Errors
    /// Key or certificate generation, or binding a socket, failed.
    pub async fn start(
        mailbox: &str,
        options: GmailOptions,
    ) -> Result<GoogleTestkit, TestkitError> {
        let pki = TestPki::generate()?;
        let (workspace, key) = GoogleWorkspace::healthy(mailbox)?;
        let token = FakeGoogleToken::start(workspace.clone(), &pki).await?;
        let gmail = FakeGmail::start(workspace.clone(), &pki, options).await?;
        Ok(GoogleTestkit {
            pki,
            workspace,
            token,
            gmail,
            key,
            mailbox: mailbox.to_ascii_lowercase(),
        })
    }

    /// The Workspace user the relay sends as (`sub`).
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// `127.0.0.1:PORT` of the Gmail server.
    pub fn smtp_server(&self) -> String {
        self.gmail.addr().to_string()
    }

    /// Writes the service account's key file with `token_uri` = the emulator; returns `path`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_key_file(&self, path: &Path) -> Result<PathBuf, TestkitError> {
        self.key.write_json(path, &self.token.token_url())?;
        Ok(path.to_path_buf())
    }

    /// The relay's `[[account]]` for this kit: `provider = "google"`, the mailbox, the key file
    /// at `key_file` (written with [`GoogleTestkit::write_key_file`]), the Gmail emulator as
    /// `smtp_server` and `ca_file` trusting the kit's CA.
    pub fn relay_account_toml(&self, name: &str, key_file: &Path, ca_file: &Path) -> String {
        format!(
            "[[account]]\nname = \"{name}\"\nprovider = \"google\"\nmailbox = \"{}\"\n\
             service_account_key = \"{}\"\nsmtp_server = \"{}\"\nca_file = \"{}\"\n",
            self.mailbox,
            key_file.display(),
            self.smtp_server(),
            ca_file.display()
        )
    }

    /// Stops both servers.
    pub async fn shutdown(&self) {
        self.token.shutdown().await;
        self.gmail.shutdown().await;
    }
}
