//! The emulators behind `demo`, by provider and transport: the testkit's Entra and Exchange
//! emulators (`--provider microsoft`, the default), with `--transport graph` its Graph mail
//! API instead of Exchange's SMTP, or its Google token endpoint and Gmail SMTP server
//! (`--provider google`: a Workspace with the demo mailbox as its user and a service account
//! delegated `https://mail.google.com/`). Each writes the relay's `[[account]]` for itself and
//! hands the first delivered message back for `--once`.
//!
//! Invariant: delivered messages are also written as `.eml` files into the demo's
//! `delivered/` folder, whichever the emulator (Exchange and Gmail write their own; Graph's
//! are written by [`Emulators::write_graph_deliveries`] while the demo runs).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::testkit::google_bundle::GoogleTestkit;
use crate::testkit::{
    ExchangeOptions, FakeGraph, GmailOptions, GraphOptions, Testkit, TestkitOptions,
};

/// A message the emulator accepted, as `--once` compares it.
pub(super) struct Arrived {
    /// How it arrived, for the line `--once` prints ("authenticated as … over XOAUTH2, …").
    pub how: String,
    pub body: Vec<u8>,
}

/// The running emulators of one provider.
pub(super) enum Emulators {
    Microsoft(Box<Testkit>),
    /// Entra and the Graph mail API (`--transport graph`); the kit's Exchange stays idle.
    MicrosoftGraph(Box<Testkit>, FakeGraph),
    Google(Box<GoogleTestkit>),
}

impl Emulators {
    /// Starts the emulators of `provider` (`"microsoft"` or `"google"`) for `mailbox`, writing
    /// `.eml` copies into `delivered` and the files the relay needs (CA, key) into `dir`;
    /// returns them with the relay's `[[account]]`.
    pub(super) async fn start(
        provider: &str,
        graph: bool,
        mailbox: &str,
        dir: &Path,
        delivered: &Path,
    ) -> anyhow::Result<(Emulators, String)> {
        let ca_file = dir.join("testkit-ca.pem");
        if provider == "google" && graph {
            anyhow::bail!(
                "--transport graph is Microsoft Graph: it does not go with --provider google"
            );
        }
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
        let mut account = kit.relay_account_toml(Self::MICROSOFT_ACCOUNT, &ca_file);
        if !graph {
            return Ok((Emulators::Microsoft(Box::new(kit)), account));
        }
        let graph = kit
            .start_graph(GraphOptions::default())
            .await
            .context("cannot start the Graph emulator")?;
        account.push_str(&format!(
            "transport = \"graph\"\ngraph_endpoint = \"{}\"\n",
            graph.base_url()
        ));
        Ok((Emulators::MicrosoftGraph(Box::new(kit), graph), account))
    }

    const MICROSOFT_ACCOUNT: &'static str = "exchange-emulator";
    const GOOGLE_ACCOUNT: &'static str = "gmail-emulator";

    /// The `[[account]]` name the relay's users and networks use.
    pub(super) fn account_name(&self) -> &'static str {
        match self {
            Emulators::Microsoft(_) | Emulators::MicrosoftGraph(..) => Self::MICROSOFT_ACCOUNT,
            Emulators::Google(_) => Self::GOOGLE_ACCOUNT,
        }
    }

    /// The mail service, for the messages `demo` prints.
    pub(super) fn service(&self) -> &'static str {
        match self {
            Emulators::Microsoft(_) => "Exchange",
            Emulators::MicrosoftGraph(..) => "Graph",
            Emulators::Google(_) => "Gmail",
        }
    }

    /// What stands behind the relay, for the instructions.
    pub(super) fn description(&self) -> &'static str {
        match self {
            Emulators::Microsoft(_) => {
                "an Entra-like token endpoint and an Exchange-like SMTP server\n                       (STARTTLS, AUTH XOAUTH2, Microsoft's reply codes) on 127.0.0.1."
            }
            Emulators::MicrosoftGraph(..) => {
                "an Entra-like token endpoint and a Graph-like mail API (sendMail over HTTPS,\n                       drafts, upload sessions, Graph's errors and limits) on 127.0.0.1."
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
                    how: over_xoauth2(
                        &message.auth_mailbox,
                        &message.envelope_from,
                        &message.recipients,
                    ),
                    body: message.body().to_vec(),
                })
            }
            Emulators::MicrosoftGraph(_, graph) => {
                let messages = graph
                    .wait_for_delivered(1, limit)
                    .await
                    .map_err(|e| e.to_string())?;
                let message = messages.first().ok_or("the emulator holds no message")?;
                Ok(Arrived {
                    how: format!(
                        "sendMail as {} ({:?}), recipients {}",
                        message.mailbox,
                        message.path,
                        message.recipients.join(", ")
                    ),
                    body: message.raw_mime.clone().unwrap_or_default(),
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
                    how: over_xoauth2(
                        &message.auth_user,
                        &message.envelope_from,
                        &message.recipients,
                    ),
                    body: message.data.clone(),
                })
            }
        }
    }

    /// Writes the messages Graph delivered since the last call (`written` counts them) to
    /// `delivered/graph-N.eml`, their MIME as Graph received it; nothing for the SMTP
    /// emulators, which write their own.
    pub(super) fn write_graph_deliveries(&self, delivered: &Path, written: &mut usize) {
        let Emulators::MicrosoftGraph(_, graph) = self else {
            return;
        };
        for message in graph.delivered().iter().skip(*written) {
            *written += 1;
            let path = delivered.join(format!("graph-{written}.eml"));
            let bytes = message.raw_mime.as_deref().unwrap_or_default();
            if let Err(error) = std::fs::write(&path, bytes) {
                eprintln!("cannot write {}: {error}", path.display());
            }
        }
    }

    /// Stops the emulators.
    pub(super) async fn shutdown(&self) {
        match self {
            Emulators::Microsoft(kit) | Emulators::MicrosoftGraph(kit, _) => kit.shutdown().await,
            Emulators::Google(kit) => kit.shutdown().await,
        }
    }
}

/// How a message arrived at an SMTP emulator, for the line `--once` prints.
fn over_xoauth2(user: &str, envelope_from: &str, recipients: &[String]) -> String {
    format!(
        "authenticated as {user} over XOAUTH2, envelope {envelope_from} -> {}",
        recipients.join(", ")
    )
}
