//! Running the real `smtp-oauth-relay` binary: start it, read its log lines, kill it.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary built by cargo for the tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_smtp-oauth-relay")
}

/// A running relay process whose stderr (the log) is collected line by line.
pub struct RelayProcess {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl RelayProcess {
    /// `smtp-oauth-relay serve --config <config>`.
    pub fn serve(config: &Path) -> RelayProcess {
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the relay binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        RelayProcess { child, log }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Wait (bounded) for a log line containing `needle`; returns it.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Some(line);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, then reap.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("kill");
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Wait until something accepts TCP connections on `port`.
pub async fn wait_until_listening(port: u16, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Resident memory of process `pid` in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Start the relay binary in a user and mount namespace of its own, with a tmpfs of `size`
/// (e.g. `"1m"`) mounted on `mount` first and, when given, the `umask` (e.g. `"000"`) set.
/// `unshare` and `sh` exec, so the child is the relay itself; it is killed when dropped.
pub fn serve_on_small_tmpfs(mount: &Path, size: &str, config: &Path, umask: Option<&str>) -> Child {
    let umask = umask.map_or_else(String::new, |mask| format!("umask {mask} && "));
    let script = format!(
        r#"{umask}mount -t tmpfs -o size={size} tmpfs "$MOUNT" && exec "$RELAY" serve --config "$CONFIG""#
    );
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("MOUNT", mount)
        .env("RELAY", binary())
        .env("CONFIG", config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("unshare (util-linux) runs the relay in a mount namespace")
}
