//! Emulators of Microsoft's side, for tests, benchmarks and the `demo` command: an Entra-like
//! OAuth 2.0 token endpoint ([`FakeEntra`]), an Exchange-Online-like SMTP submission server
//! ([`FakeExchange`]) and a Microsoft Graph mail endpoint (`graph`: `sendMail`, drafts, upload
//! sessions, Graph's limits and JSON errors; started with `Testkit::start_graph`), all on
//! `127.0.0.1` with certificates from a throw-away CA ([`TestPki`]).
//!
//! Google's side has its own emulators beside them (google-workspace.md): a token endpoint for
//! the JWT bearer grant of service accounts with domain-wide delegation ([`FakeGoogleToken`],
//! Google's OAuth JSON errors), a Gmail-like SMTP submission server ([`FakeGmail`]: STARTTLS,
//! XOAUTH2 with Gmail's base64 JSON challenge, its replies and limits), sharing one
//! [`GoogleWorkspace`] (users, service accounts and keys, delegation entries, issued tokens);
//! `google_bundle::GoogleTestkit` starts them in one call.
//!
//! The servers share one [`Directory`]: the tenant, its app registrations, mailboxes and
//! Exchange permissions, i.e. everything an administrator configures in Entra and Exchange.
//! A test breaks the configuration at run time (revoke admin consent, remove the service
//! principal, expire the secret, disable SMTP AUTH...) and observes the same symptom the relay
//! would get from Microsoft: an AADSTS error at the token endpoint, or a `535 5.7.3` /
//! `535 5.7.139` / `554 5.2.252` from SMTP. The behaviour follows
//! `/work/shared/exchange-online.md` sections 0-5; deviations are listed in the docs of
//! [`exchange`] and [`entra`].
//!
//! Invariants shared by every part of the kit:
//! - every socket binds `127.0.0.1` port 0 (the SMTP server re-binds its own port after a
//!   `RefuseConnections` fault);
//! - every server stops when its handle is dropped or `shutdown()` is awaited
//!   (one `CancellationToken` + `TaskTracker` per server);
//! - no secret and no full token is ever logged or stored in an observation record: tokens
//!   appear at most as their first 8 characters.
//!
//! [`Testkit::start`] wires a healthy setup in one call:
//!
//! ```no_run
//! # async fn example() -> Result<(), smtp_oauth_relay::testkit::TestkitError> {
//! use std::time::Duration;
//! use smtp_oauth_relay::testkit::{EntraFault, ExchangeFault, Testkit, TestkitOptions};
//!
//! let kit = Testkit::start(TestkitOptions::default()).await?;
//! // What the relay's [[account]] needs:
//! let ca_file = kit.write_ca_pem(&std::env::temp_dir().join("testkit-ca.pem"))?;
//! let (authority, tenant) = (kit.authority(), kit.tenant_id());
//! let (client_id, secret, mailbox) = (kit.client_id(), kit.client_secret(), kit.mailbox());
//! let smtp_server = kit.smtp_server(); // "127.0.0.1:PORT", STARTTLS, CA = ca_file
//! // ... start the relay, submit a message to it ...
//! let delivered = kit.exchange.wait_for_messages(1, Duration::from_secs(30)).await?;
//! assert_eq!(delivered[0].auth_mailbox, mailbox);
//! // Break things at run time:
//! kit.directory.revoke_admin_consent(client_id)?; // next AUTH: 535 5.7.3
//! kit.entra.fail_next(2, EntraFault::TemporarilyUnavailable);
//! kit.exchange.fail_next(1, ExchangeFault::TempFailAfterData)?;
//! kit.exchange.set_fault(ExchangeFault::RefuseConnections).await?; // ECONNREFUSED
//! kit.exchange.clear_faults().await?; // same port listens again
//! # let _ = (ca_file, authority, tenant, secret, smtp_server);
//! # Ok(()) }
//! ```

pub mod bundle;
pub mod client_cert;
pub mod directory;
mod directory_certificates;
mod directory_exchange;
mod directory_graph;
pub mod entra;
mod entra_assertion;
mod entra_errors;
mod entra_http;
pub mod exchange;
mod exchange_auth;
mod exchange_data;
mod exchange_io;
mod exchange_listener;
mod exchange_replies;
mod exchange_session;
mod exchange_session_auth;
mod exchange_state;
mod exchange_submit;
mod form;
pub mod gmail;
mod gmail_replies;
mod gmail_session;
mod google_assertion;
pub mod google_bundle;
pub mod google_key;
pub mod google_token;
mod google_token_http;
pub mod google_workspace;
pub mod graph;
mod graph_body;
mod graph_errors;
mod graph_http;
mod graph_mail;
pub mod graph_mime;
mod graph_records;
mod graph_state;
mod graph_upload;
mod https_server;
pub mod issuance;
pub mod jwt;
pub mod pki;
pub mod random;

#[cfg(test)]
mod tests;

pub use bundle::{Testkit, TestkitOptions};
pub use client_cert::TestClientCertificate;
pub use directory::{AppRegistration, ClientSecret, Directory, Mailbox, SmtpAuthPolicy};
pub use directory_certificates::RegisteredCertificate;
pub use entra::{EntraFault, EntraStats, FakeEntra, TokenOutcome, TokenRequestRecord};
pub use exchange::{
    AcceptedMessage, AuthAttempt, AuthRejection, ExchangeFault, ExchangeOptions, ExchangeStats,
    FakeExchange,
};
pub use gmail::{FakeGmail, GmailFault, GmailMessage, GmailOptions, GmailStats};
pub use google_assertion::GoogleTokenError;
pub use google_key::ServiceAccountKey;
pub use google_token::{
    FakeGoogleToken, GoogleTokenFault, GoogleTokenOutcome, GoogleTokenRecord, GoogleTokenStats,
};
pub use google_workspace::{GoogleUser, GoogleWorkspace, IssuedGoogleToken, ServiceAccount};
pub use graph::{
    DeliveredMessage, FakeGraph, GraphAttachment, GraphFault, GraphOperation, GraphOptions,
    GraphRequestRecord, GraphStats, SendPath,
};
pub use issuance::{CredentialKind, Resource};
pub use jwt::{Claims, TokenRejection, TokenSigner, TokenVerifier};
pub use pki::TestPki;

/// Everything that can go wrong while setting up or driving the emulators.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// rcgen could not build a certificate or key.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected a configuration (protocol versions, key, certificate).
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A socket or file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A ring operation (key generation, signing) failed.
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    /// JSON encoding failed.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The directory has no app registration with this client id.
    #[error("no app registration with client id {0}")]
    UnknownApp(String),
    /// The directory has no mailbox with this address.
    #[error("no mailbox {0}")]
    UnknownMailbox(String),
    /// A wait for an observable condition ran out of time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What the caller waited for.
        what: String,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The fault cannot be used that way (for example `RefuseConnections` with a count).
    #[error("unsupported fault use: {0}")]
    UnsupportedFault(String),
    /// A server task stopped unexpectedly (for example the SMTP port could not be re-bound).
    #[error("server task failed: {0}")]
    Server(String),
}
