//! Shared helpers for the integration tests: start a relay in-process on port 0 with a
//! temporary state directory, talk to it with a raw SMTP client, look into its spool.

#![allow(dead_code)]

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
        let text = toml.replace("{state}", &state.path().display().to_string());
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

    pub async fn stop(self) {
        self.relay.shutdown(std::time::Duration::from_secs(5)).await;
    }
}

pub fn queued_bodies(queue: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(queue)
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "msg"));
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).expect("read body"))
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
