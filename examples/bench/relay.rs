//! The relay under test: the release binary as a separate process, so that its RSS and CPU
//! time in `/proc` are its own. Killed when [`RelayProcess`] is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use smtp_oauth_relay::testkit::Testkit;

use crate::postfix::{free_port, wait_listening};

/// `target/release/smtp-oauth-relay`, next to this example's `examples/` directory.
pub fn locate_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the bench executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench executable has no parent directory")?;
    let binary = profile_dir.join("smtp-oauth-relay");
    if !binary.exists() {
        bail!(
            "the relay binary {} does not exist: run `cargo build --release` first, then \
             `cargo run --release --example bench`",
            binary.display()
        );
    }
    if let Some(newer) = newest_source_after(&binary) {
        eprintln!(
            "warning: {} is newer than {}; run `cargo build --release` to measure the current code",
            newer.display(),
            binary.display()
        );
    }
    Ok(binary)
}

/// A file under `src/` modified after `binary` was built, if any.
fn newest_source_after(binary: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.filter_map(|e| e.ok()) {
            visited += 1;
            if visited > 5000 {
                return None;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m: SystemTime| m > built)
            {
                return Some(path);
            }
        }
    }
    None
}

pub struct RelayProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub smtp: SocketAddr,
    pub log: PathBuf,
}

impl RelayProcess {
    /// Write the bench configuration into `dir` and start `binary serve --config`.
    pub async fn start(binary: &Path, kit: &Testkit, dir: &Path) -> Result<RelayProcess> {
        let ca_file = kit.write_ca_pem(&dir.join("ca.pem"))?;
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        let port = free_port()?;
        let config = format!(
            "[relay]\nhostname = \"relay.bench\"\nstate_dir = \"{state}\"\n\n\
             [limits]\n# 1,000 idle connections are part of the benchmark.\nmax_connections = 1500\n\n\
             [admin]\naddress = \"127.0.0.1:0\"\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\ntls = \"none\"\n\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\n\
             {account}max_recipients_per_day = 0\nmax_connections = 3\n",
            state = state.display(),
            account = kit.relay_account_toml("m365", &ca_file),
        );
        let config_path = dir.join("relay.toml");
        std::fs::write(&config_path, config)?;
        let log = dir.join("relay.log");
        let log_file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("the relay exited at once")?;
        let mut relay = RelayProcess {
            child,
            pid,
            smtp: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        if !wait_listening(port, Duration::from_secs(20)).await {
            let tail = relay.log_tail(20);
            relay.kill().await;
            bail!("the relay did not listen on port {port} within 20 s; its log:\n{tail}");
        }
        Ok(relay)
    }

    /// The last `lines` lines of the relay's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all.iter()
            .skip(all.len().saturating_sub(lines))
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Log lines at WARN or ERROR (a clean run has none).
    pub fn problems(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
