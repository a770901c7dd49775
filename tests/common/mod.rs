//! Shared helpers for the integration tests: start a relay in-process on port 0 with a
//! temporary state directory, talk to it with a raw SMTP client, look into its spool.

#![allow(dead_code)]

pub mod delivery;
pub mod graph;
pub mod process;
pub mod smtp_client;

use std::path::{Path, PathBuf};

use smtp_oauth_relay::app::Relay;
use smtp_oauth_relay::config::Config;

/// An `[[account]]` whose token endpoint and SMTP server refuse connections, so accepted
/// mail stays in the spool where a test can inspect it.
pub const UNREACHABLE_ACCOUNT: &str = r#"
[[account]]
name = "m365"
mailbox = "relay@contoso.com"
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = "test~secret"
authority = "https://127.0.0.1:1"
smtp_server = "127.0.0.1:1"
"#;

/// A relay started from TOML text; `{state}` in the text is replaced by a fresh directory.
pub struct TestRelay {
    pub relay: Relay,
    pub state: tempfile::TempDir,
}

impl TestRelay {
    pub async fn start(toml: &str) -> TestRelay {
        smtp_oauth_relay::tls::install_default_provider();
        let state = tempfile::tempdir().expect("tempdir");
        let text = with_test_admin(&toml.replace("{state}", &state.path().display().to_string()));
        let config = Config::from_toml(&text, state.path()).unwrap_or_else(|e| panic!("{e}"));
        let relay = Relay::start(config).await.expect("relay starts");
        TestRelay { relay, state }
    }

    /// The address of the listener at `index`.
    pub fn address(&self, index: usize) -> std::net::SocketAddr {
        self.relay.listener_addresses()[index]
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.state.path().join("spool/queue")
    }

    /// Bodies of the messages waiting in the spool, oldest first.
    pub fn queued_bodies(&self) -> Vec<Vec<u8>> {
        queued_bodies(&self.queue_dir())
    }

    /// Stop this relay and start a new one on the same state directory (a restart).
    pub async fn restart(self, toml: &str) -> TestRelay {
        let TestRelay { relay, state } = self;
        relay.shutdown(std::time::Duration::from_secs(5)).await;
        let text = with_test_admin(&toml.replace("{state}", &state.path().display().to_string()));
        let config = Config::from_toml(&text, state.path()).unwrap_or_else(|e| panic!("{e}"));
        let relay = Relay::start(config).await.expect("relay restarts");
        TestRelay { relay, state }
    }

    /// Reload this relay with `toml` (as SIGHUP does).
    pub async fn reload(&self, toml: &str) -> Result<(), String> {
        let text =
            with_test_admin(&toml.replace("{state}", &self.state.path().display().to_string()));
        let config = Config::from_toml(&text, self.state.path()).map_err(|e| e.to_string())?;
        self.relay.reload(config).await
    }

    /// Decoded envelopes of the queued messages.
    pub fn queued_envelopes(&self) -> Vec<smtp_oauth_relay::vocab::envelope::Envelope> {
        envelopes_in(&self.queue_dir())
    }

    /// Decoded envelopes of the failed messages.
    pub fn failed_envelopes(&self) -> Vec<smtp_oauth_relay::vocab::envelope::Envelope> {
        envelopes_in(&self.state.path().join("spool/failed"))
    }

    pub async fn stop(self) {
        self.relay.shutdown(std::time::Duration::from_secs(5)).await;
    }
}

/// The message content of every entry in a spool directory (without the envelope trailer).
pub fn queued_bodies(queue: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(queue)
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "msg"));
    names.sort();
    names
        .iter()
        .map(|p| {
            let file = std::fs::read(p).expect("read entry");
            let (_, content) =
                smtp_oauth_relay::spool::format::split_entry(&file).expect("entry verifies");
            content.to_vec()
        })
        .collect()
}

/// The content after the relay's `Received:` field (which is always the first field).
pub fn without_trace(body: &[u8]) -> &[u8] {
    let text = body;
    let mut index = 0;
    // Skip "Received: ..." and its folded continuation lines.
    loop {
        let Some(newline) = text[index..].iter().position(|&b| b == b'\n') else {
            return &text[text.len()..];
        };
        index += newline + 1;
        if !matches!(text.get(index), Some(b' ' | b'\t')) {
            return &text[index..];
        }
    }
}

/// The testkit (Entra + Exchange emulators) and a relay in front of it.
pub struct Chain {
    pub kit: smtp_oauth_relay::testkit::Testkit,
    pub relay: TestRelay,
    /// The relay's configuration (with `{state}` unreplaced), for restarts.
    pub toml: String,
    /// Certificates and the CA file the configuration names.
    pub files: tempfile::TempDir,
}

/// `[relay]` + `[queue]` (one-second retry schedule, plus `queue_extra`) + the kit's
/// `[[account]]` named "m365" (plus `account_extra`, whose keys replace the kit's) + `rest`
/// (listeners, users, networks). `{state}` is left for [`TestRelay::start`].
pub fn chain_toml(
    kit: &smtp_oauth_relay::testkit::Testkit,
    ca_file: &Path,
    queue_extra: &str,
    account_extra: &str,
    rest: &str,
) -> String {
    // "key = value" replaces the kit's key; "-key" removes it.
    let overridden: Vec<&str> = account_extra
        .lines()
        .filter_map(|l| match l.strip_prefix('-') {
            Some(removed) => Some(removed.trim()),
            None => l.split_once('=').map(|(k, _)| k.trim()),
        })
        .collect();
    let account_extra: String = account_extra
        .lines()
        .filter(|l| !l.starts_with('-'))
        .map(|l| format!("{l}\n"))
        .collect();
    let account: String = kit
        .relay_account_toml("m365", ca_file)
        .lines()
        .filter(|l| {
            !l.split_once('=')
                .is_some_and(|(k, _)| overridden.contains(&k.trim()))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let retry = if queue_extra.contains("retry_schedule") {
        ""
    } else {
        "retry_schedule = [\"1s\"]\n"
    };
    format!(
        "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{{state}}\"\n[queue]\n{retry}{queue_extra}\n{account}{account_extra}\n{rest}"
    )
}

/// The usual clients of a delivery test: one plain listener, 127.0.0.0/8 trusted for any
/// contoso.com sender.
pub const PLAIN_TRUSTED: &str = "[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n";

impl Chain {
    /// Start the kit with `options`, then a relay in front of it configured by what `rest`
    /// returns (listeners, users, networks); `rest` gets the kit and a folder for files.
    pub async fn start(
        options: smtp_oauth_relay::testkit::TestkitOptions,
        rest: impl FnOnce(&smtp_oauth_relay::testkit::Testkit, &Path) -> String,
    ) -> Chain {
        Chain::start_with(options, "", "", rest).await
    }

    /// Like [`Chain::start`], with extra `[queue]` and `[[account]]` keys.
    pub async fn start_with(
        options: smtp_oauth_relay::testkit::TestkitOptions,
        queue_extra: &str,
        account_extra: &str,
        rest: impl FnOnce(&smtp_oauth_relay::testkit::Testkit, &Path) -> String,
    ) -> Chain {
        let kit = smtp_oauth_relay::testkit::Testkit::start(options)
            .await
            .expect("testkit starts");
        let files = tempfile::tempdir().expect("tempdir");
        let ca_file = kit.write_ca_pem(&files.path().join("ca.pem")).expect("ca");
        let rest = rest(&kit, files.path());
        let toml = chain_toml(&kit, &ca_file, queue_extra, account_extra, &rest);
        let relay = TestRelay::start(&toml).await;
        Chain {
            kit,
            relay,
            toml,
            files,
        }
    }

    /// Write the kit's server certificate and key for a relay listener; returns TOML lines.
    pub fn listener_tls_files(kit: &smtp_oauth_relay::testkit::Testkit, dir: &Path) -> String {
        let identity = kit
            .pki
            .generate_server_cert_for(&["localhost", "127.0.0.1"])
            .expect("server certificate");
        let cert = dir.join("relay-cert.pem");
        let key = dir.join("relay-key.pem");
        std::fs::write(&cert, identity.cert_pem()).expect("write cert");
        std::fs::write(&key, identity.key_pem()).expect("write key");
        format!(
            "certificate = \"{}\"\nprivate_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    }
}

/// Wait until `condition` holds, polling every 50 ms, for at most `limit`.
pub async fn eventually(limit: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    condition()
}

/// The envelopes of the entries in a spool directory: each `<ID>.msg` trailer, or the newer
/// `<ID>.env` beside it.
pub fn envelopes_in(dir: &Path) -> Vec<smtp_oauth_relay::vocab::envelope::Envelope> {
    use smtp_oauth_relay::spool::format;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "msg"));
    names.sort();
    names
        .iter()
        .filter_map(|p| {
            if let Ok(newer) = std::fs::read(p.with_extension("env")) {
                return format::decode(&newer).ok();
            }
            let file = std::fs::read(p).ok()?;
            format::split_entry(&file)
                .ok()
                .map(|(envelope, _)| envelope)
        })
        .collect()
}

/// Tests run many relays at once: give each admin endpoint a free port unless the test chose.
pub fn with_test_admin(toml: &str) -> String {
    if toml.contains("[admin]") {
        toml.to_string()
    } else {
        format!("{toml}\n[admin]\naddress = \"127.0.0.1:0\"\n")
    }
}
