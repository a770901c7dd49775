//! The Postfix baseline: a private Postfix instance (own config and queue directories on the
//! real disk, loopback only, chroot off) relaying to an `smtp-sink` that counts what arrives.
//! Both are stopped when [`PostfixBaseline`] is dropped, also after an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncReadExt;

/// Where the Debian packages put the programs.
const POSTFIX: &str = "/usr/sbin/postfix";
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// True when both `postfix` and `smtp-sink` are installed.
pub fn available() -> bool {
    Path::new(POSTFIX).exists() && Path::new(SMTP_SINK).exists()
}

pub struct PostfixBaseline {
    pub smtp: SocketAddr,
    config_dir: PathBuf,
    queue_dir: PathBuf,
    sink: Option<tokio::process::Child>,
    delivered: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl PostfixBaseline {
    /// Start `smtp-sink` and a Postfix instance under a new directory in `parent`.
    pub async fn start(parent: &Path) -> Result<PostfixBaseline> {
        let dir = tempfile::Builder::new()
            .prefix("postfix-")
            .tempdir_in(parent)
            .context("Postfix directory")?;
        let root = dir.path().to_path_buf();
        // Postfix's daemons run as `postfix`: they must be able to traverse the tree.
        chmod(&root, 0o755)?;
        let config_dir = root.join("conf");
        let queue_dir = root.join("queue");
        let data_dir = root.join("data");
        for d in [&config_dir, &queue_dir, &data_dir] {
            std::fs::create_dir_all(d)?;
        }
        let status = std::process::Command::new("chown")
            .args(["postfix:postfix"])
            .arg(&data_dir)
            .status()
            .context("chown the Postfix data directory (the bench must run as root)")?;
        if !status.success() {
            bail!("chown postfix: {status}");
        }
        let smtp_port = free_port()?;
        let sink_port = free_port()?;

        // The sink: `-c` prints "sess=N quit=N mesg=N\r" after every message.
        let mut sink = tokio::process::Command::new(SMTP_SINK)
            .args(["-u", "nobody", "-c"])
            .arg(format!("127.0.0.1:{sink_port}"))
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start smtp-sink")?;
        let delivered = Arc::new(AtomicU64::new(0));
        if let Some(mut stdout) = sink.stdout.take() {
            let counter = Arc::clone(&delivered);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stdout.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    let text = String::from_utf8_lossy(&buffer).into_owned();
                    if let Some((done, rest)) = text.rsplit_once('\r') {
                        if let Some(count) = done
                            .rsplit('\r')
                            .next()
                            .and_then(|last| last.split("mesg=").nth(1))
                            .and_then(|n| n.trim().parse::<u64>().ok())
                        {
                            counter.store(count, Ordering::Relaxed);
                        }
                        buffer = rest.as_bytes().to_vec();
                    }
                }
            });
        }

        std::fs::write(
            config_dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = postfix-bench.local\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 relayhost = [127.0.0.1]:{sink_port}\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_recipient_maps =\n\
                 biff = no\n\
                 smtpd_tls_security_level = none\n\
                 smtp_tls_security_level = none\n\
                 maillog_file_prefixes = {root}\n\
                 maillog_file = {log}\n",
                queue = queue_dir.display(),
                data = data_dir.display(),
                log = root.join("maillog").display(),
                root = root.display(),
            ),
        )?;
        // Debian's master.cf services, chroot off (the queue is not set up as a jail).
        std::fs::write(
            config_dir.join("master.cf"),
            format!(
                "127.0.0.1:{smtp_port} inet n - n - - smtpd\n\
                 pickup unix n - n 60 1 pickup\n\
                 cleanup unix n - n - 0 cleanup\n\
                 qmgr unix n - n 300 1 qmgr\n\
                 rewrite unix - - n - - trivial-rewrite\n\
                 bounce unix - - n - 0 bounce\n\
                 defer unix - - n - 0 bounce\n\
                 trace unix - - n - 0 bounce\n\
                 verify unix - - n - 1 verify\n\
                 flush unix n - n 1000? 0 flush\n\
                 proxymap unix - - n - - proxymap\n\
                 proxywrite unix - - n - 1 proxymap\n\
                 smtp unix - - n - - smtp\n\
                 relay unix - - n - - smtp\n\
                 showq unix n - n - - showq\n\
                 error unix - - n - - error\n\
                 retry unix - - n - - error\n\
                 discard unix - - n - - discard\n\
                 anvil unix - - n - 1 anvil\n\
                 scache unix - - n - 1 scache\n\
                 postlog unix-dgram n - n - 1 postlogd\n"
            ),
        )?;
        let mut baseline = PostfixBaseline {
            smtp: SocketAddr::from(([127, 0, 0, 1], smtp_port)),
            config_dir,
            queue_dir,
            sink: Some(sink),
            delivered,
            _dir: dir,
        };
        let output = tokio::process::Command::new(POSTFIX)
            .arg("-c")
            .arg(&baseline.config_dir)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .await
            .context("run postfix start")?;
        if !output.status.success() {
            let log = std::fs::read_to_string(root.join("maillog")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "postfix start failed ({}): {}{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        for port in [smtp_port, sink_port] {
            if !wait_listening(port, Duration::from_secs(20)).await {
                baseline.stop();
                bail!("Postfix or smtp-sink did not listen on port {port} within 20 s");
            }
        }
        Ok(baseline)
    }

    /// Messages smtp-sink has received so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// The master's pid (its daemons are its children).
    pub fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.queue_dir.join("pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Wait (bounded) until smtp-sink counted `count` messages.
    pub async fn wait_delivered(&self, count: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.delivered() >= count {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.delivered() >= count
    }

    fn stop(&mut self) {
        let _ = std::process::Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.start_kill();
        }
    }
}

impl Drop for PostfixBaseline {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Wait until something accepts connections on 127.0.0.1:`port`.
pub async fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
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
