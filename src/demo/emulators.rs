//! The emulators behind `demo`, by provider: the testkit's Entra and Exchange emulators
//! (`--provider microsoft`, the default) or its Google token endpoint and Gmail SMTP server
//! (`--provider google`: a Workspace with the demo mailbox as its user and a service account
//! delegated `https://mail.google.com/`). Each writes the relay's `[[account]]` for itself and
//! hands the first delivered message back for `--once`.
//!
//! Invariant: delivered messages are also written as `.eml` files into the demo's
//! `delivered/` folder, whichever the provider.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::testkit::google_bundle::GoogleTestkit;
use crate::testkit::{ExchangeOptions, GmailOptions, Testkit, TestkitOptions};

/// A message the emulator accepted, as `--once` compares it.
pub(super) struct Arrived {
    pub auth_user: String,
    pub envelope_from: String,
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
}

/// The running emulators of one provider.
pub(super) enum Emulators {
    Microsoft(Box<Testkit>),
    Google(Box<GoogleTestkit>),
}

impl Emulators {
    /// Starts the emulators of `provider` (`"microsoft"` or `"google"`) for `mailbox`, writing
    /// `.eml` copies into `delivered` and the files the relay needs (CA, key) into `dir`;
    /// returns them with the relay's `[[account]]`.
    pub(super) async fn start(
        provider: &str,
        mailbox: &str,
        dir: &Path,
        delivered: &Path,
    ) -> anyhow::Result<(Emulators, String)> {
        let ca_file = dir.join("testkit-ca.pem");
        if provider == "google" {
            let options = GmailOptions {
                eml_dir: Some(delivered.to_path_buf()),
                ..GmailOptions::default()
            };
            let kit = GoogleTestkit::start(mailbox, options)
                .await
                .context("cannot start the Google token endpoint and Gmail emulators")?;
            kit.pki
                .write_ca_pem(&ca_file)
                .context("cannot write the emulator's CA certificate")?;
            let key_file = kit
                .write_key_file(&dir.join("google-service-account.json"))
                .context("cannot write the service account key")?;
            let account = kit.relay_account_toml(Self::GOOGLE_ACCOUNT, &key_file, &ca_file);
            return Ok((Emulators::Google(Box::new(kit)), account));
        }
        let kit = Testkit::start(TestkitOptions {
            exchange: ExchangeOptions {
                eml_dir: Some(delivered.to_path_buf()),
                ..ExchangeOptions::default()
            },
            ..TestkitOptions::default()
        })
        .await
        .context("cannot start the Exchange and Entra emulators")?;
        kit.write_ca_pem(&ca_file)
            .context("cannot write the emulator's CA certificate")?;
        let account = kit.relay_account_toml(Self::MICROSOFT_ACCOUNT, &ca_file);
        Ok((Emulators::Microsoft(Box::new(kit)), account))
    }

    const MICROSOFT_ACCOUNT: &'static str = "exchange-emulator";
    const GOOGLE_ACCOUNT: &'static str = "gmail-emulator";

    /// The `[[account]]` name the relay's users and networks use.
    pub(super) fn account_name(&self) -> &'static str {
        match self {
            Emulators::Microsoft(_) => Self::MICROSOFT_ACCOUNT,
            Emulators::Google(_) => Self::GOOGLE_ACCOUNT,
        }
    }

    /// The mail service, for the messages `demo` prints.
    pub(super) fn service(&self) -> &'static str {
        match self {
            Emulators::Microsoft(_) => "Exchange",
            Emulators::Google(_) => "Gmail",
        }
    }

    /// What stands behind the relay, for the instructions.
    pub(super) fn description(&self) -> &'static str {
        match self {
            Emulators::Microsoft(_) => {
                "an Entra-like token endpoint and an Exchange-like SMTP server\n                       (STARTTLS, AUTH XOAUTH2, Microsoft's reply codes) on 127.0.0.1."
            }
            Emulators::Google(_) => {
                "a Google-like token endpoint (service account, JWT bearer grant,\n                       domain-wide delegation) and a Gmail-like SMTP server (STARTTLS,\n                       AUTH XOAUTH2, Gmail's replies and limits) on 127.0.0.1."
            }
        }
    }

    /// The first message the emulator accepted, waiting at most `limit`.
    pub(super) async fn first_message(&self, limit: Duration) -> Result<Arrived, String> {
        match self {
            Emulators::Microsoft(kit) => {
                let messages = kit
                    .exchange
                    .wait_for_messages(1, limit)
                    .await
                    .map_err(|e| e.to_string())?;
                let message = messages.first().ok_or("the emulator holds no message")?;
                Ok(Arrived {
                    auth_user: message.auth_mailbox.clone(),
                    envelope_from: message.envelope_from.clone(),
                    recipients: message.recipients.clone(),
                    body: message.body().to_vec(),
                })
            }
            Emulators::Google(kit) => {
                let messages = kit
                    .gmail
                    .wait_for_messages(1, limit)
                    .await
                    .map_err(|e| e.to_string())?;
                let message = messages.first().ok_or("the emulator holds no message")?;
                Ok(Arrived {
                    auth_user: message.auth_user.clone(),
                    envelope_from: message.envelope_from.clone(),
                    recipients: message.recipients.clone(),
                    body: message.data.clone(),
                })
            }
        }
    }

    /// Stops the emulators.
    pub(super) async fn shutdown(&self) {
        match self {
            Emulators::Microsoft(kit) => kit.shutdown().await,
            Emulators::Google(kit) => kit.shutdown().await,
        }
    }
}
