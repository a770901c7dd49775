//! The relay under test: the release binary as a separate process, so that its RSS and CPU
//! time in `/proc` are its own. Killed when [`RelayProcess`] is dropped.
//!
//! Its configuration trusts only the source addresses the trusted scenarios use (127.0.0.1 and
//! 127.0.1.0/24); scenario (h) connects from 127.0.2.x to a second listener that allows AUTH
//! in clear, as a `[[user]]` with an argon2id hash from `hash_password`, each half on a relay
//! process of its own (with the default `auth_cache_ttl`, and with `"0s"`). Scenario (i)'s relay
//! has the same configuration with its account on `transport = "graph"` and 4 connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use smtp_oauth_relay::policy::hash_password;
use smtp_oauth_relay::testkit::Testkit;
use smtp_oauth_relay::vocab::secret::Secret;

use crate::postfix::{free_port, wait_listening};

/// The relay binary of the profile this example was built with (`target/release/` or
/// `target/profiling/`), next to its `examples/` directory.
pub fn locate_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("path of the bench executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench executable has no parent directory")?;
    let binary = profile_dir.join("smtp-oauth-relay");
    let profile = profile_dir.file_name().map_or_else(
        || "release".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    if !binary.exists() {
        bail!(
            "the relay binary {} does not exist: run `cargo build --profile {profile}` first, \
             then `cargo run --profile {profile} --example bench`",
            binary.display()
        );
    }
    if let Some(newer) = newest_source_after(&binary) {
        eprintln!(
            "warning: {} is newer than {}; run `cargo build --profile {profile}` to measure the \
             current code",
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

/// The `[[user]]` of scenario (h).
pub const AUTH_USERNAME: &str = "bench-printer";
/// Its password (the config holds only its argon2id hash).
pub const AUTH_PASSWORD: &str = "bench printer password 4711";
/// The source address of scenario (h)'s first client: on no trusted `[[network]]`.
pub const AUTH_FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 2, 1);

/// What the configuration file is made of.
struct ConfigParts {
    state: PathBuf,
    port: u16,
    auth_port: u16,
    admin_port: u16,
    password_hash: String,
    account: String,
    /// The account's `max_connections` (for Graph: its concurrent requests, at most 4).
    account_connections: usize,
    auth_cache_ttl: Option<String>,
}

impl ConfigParts {
    /// The configuration text; `auth_cache_ttl` is written only when given (else the default).
    fn text(&self) -> String {
        let cache = self.auth_cache_ttl.as_ref().map_or_else(String::new, |ttl| {
            format!("# No memory of proven credentials: every AUTH pays argon2.\nauth_cache_ttl = \"{ttl}\"\n")
        });
        format!(
            "[relay]\nhostname = \"relay.bench\"\nstate_dir = \"{state}\"\n\n\
             [limits]\n# 1,000 idle connections are part of the benchmark.\nmax_connections = 1500\n{cache}\n\
             [admin]\naddress = \"127.0.0.1:{admin_port}\"\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\ntls = \"none\"\n\n\
             # Scenario (h): AUTH PLAIN per message, in clear (loopback only).\n\
             [[listener]]\naddress = \"127.0.0.1:{auth_port}\"\ntls = \"none\"\nallow_auth_without_tls = true\n\n\
             # The sources of the trusted scenarios: the default 127.0.0.1 and the idle\n\
             # connections' 127.0.1.x. Scenario (h) comes from 127.0.2.x and must AUTH.\n\
             [[network]]\ncidr = \"127.0.0.1/32\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\n\
             [[network]]\ncidr = \"127.0.1.0/24\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\n\
             [[user]]\nusername = \"{AUTH_USERNAME}\"\npassword_hash = \"{hash}\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\n\
             {account}max_recipients_per_day = 0\nmax_connections = {connections}\n",
            state = self.state.display(),
            port = self.port,
            auth_port = self.auth_port,
            admin_port = self.admin_port,
            hash = self.password_hash,
            account = self.account,
            connections = self.account_connections,
        )
    }
}

/// Write the configuration readable by its owner only: it holds the account's client secret
/// (the relay warns about a config file others can read).
fn write_config(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

pub struct RelayProcess {
    child: tokio::process::Child,
    pub pid: u32,
    pub smtp: SocketAddr,
    /// The listener that allows AUTH without TLS (scenario (h)).
    pub auth_smtp: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl RelayProcess {
    /// Write the bench configuration into `dir` and start `binary serve --config`; with
    /// `auth_cache_ttl` (e.g. `"0s"`) instead of the default in `[limits]`.
    pub async fn start(
        binary: &Path,
        kit: &Testkit,
        dir: &Path,
        auth_cache_ttl: Option<&str>,
    ) -> Result<RelayProcess> {
        RelayProcess::start_with(binary, kit, dir, auth_cache_ttl, None).await
    }

    /// As [`RelayProcess::start`], the account delivering through Microsoft Graph at
    /// `graph_endpoint` (`transport = "graph"`, `max_connections = 4`: Graph's limit of
    /// concurrent requests per mailbox) instead of SMTP.
    pub async fn start_graph(
        binary: &Path,
        kit: &Testkit,
        dir: &Path,
        graph_endpoint: &str,
    ) -> Result<RelayProcess> {
        RelayProcess::start_with(binary, kit, dir, None, Some(graph_endpoint)).await
    }

    async fn start_with(
        binary: &Path,
        kit: &Testkit,
        dir: &Path,
        auth_cache_ttl: Option<&str>,
        graph_endpoint: Option<&str>,
    ) -> Result<RelayProcess> {
        std::fs::create_dir_all(dir)?;
        let ca_file = kit.write_ca_pem(&dir.join("ca.pem"))?;
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        let password_hash = tokio::task::spawn_blocking(|| {
            hash_password(&Secret::new(AUTH_PASSWORD)).map_err(|e| anyhow::anyhow!("{e}"))
        })
        .await
        .context("hash the bench user's password")??;
        let parts = ConfigParts {
            state,
            port: free_port()?,
            auth_port: free_port()?,
            admin_port: free_port()?,
            password_hash,
            account: match graph_endpoint {
                None => kit.relay_account_toml("m365", &ca_file),
                Some(endpoint) => format!(
                    "{}transport = \"graph\"\ngraph_endpoint = \"{endpoint}\"\n",
                    kit.relay_account_toml("m365", &ca_file)
                ),
            },
            account_connections: if graph_endpoint.is_some() { 4 } else { 3 },
            auth_cache_ttl: auth_cache_ttl.map(str::to_owned),
        };
        let port = parts.port;
        let config_path = dir.join("relay.toml");
        write_config(&config_path, &parts.text())?;
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
            auth_smtp: SocketAddr::from(([127, 0, 0, 1], parts.auth_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], parts.admin_port)),
            log,
        };
        if !wait_listening(port, Duration::from_secs(20)).await {
            let tail = relay.log_tail(20);
            relay.kill().await;
            bail!("the relay did not listen on port {port} within 20 s; its log:\n{tail}");
        }
        Ok(relay)
    }

    /// The value of the counter `name` (e.g. `smtp_oauth_relay_auth_cache_hits_total`) from
    /// the admin endpoint's `/metrics`.
    pub async fn counter(&self, name: &str) -> Result<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(self.admin).await?;
            stream
                .write_all(
                    format!(
                        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                        self.admin
                    )
                    .as_bytes(),
                )
                .await?;
            let mut body = Vec::new();
            stream.take(4 << 20).read_to_end(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .context("GET /metrics timed out")?
            .context("GET /metrics")?;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .map(|v| v as u64)
            .with_context(|| format!("no {name} in /metrics"))
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

    /// Log lines at WARN or ERROR (a clean run has none), except the refusal that scenario
    /// (h) provokes on purpose to check that its source address is not trusted.
    pub fn problems(&self) -> Vec<String> {
        let probe = format!("peer={AUTH_FIRST_SOURCE}:");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .filter(|l| !(l.contains(&probe) && l.contains("reason=\"not authenticated\"")))
            .map(str::to_owned)
            .collect()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}
