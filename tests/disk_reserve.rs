//! The disk reserve (`[limits] min_free_space`) on a real, small filesystem: below it new mail
//! gets `452 4.3.1`, `/readyz` and the metrics say why, mail already queued is still
//! delivered and bounced, and new mail is accepted again once space returns, without a
//! restart.
//!
//! The spool lives on an 8 MiB tmpfs mounted by the test, which needs root (or
//! CAP_SYS_ADMIN); without it the test says so on stderr and skips.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::delivery::{WAIT, message, send, subject_of};
use common::smtp_client::RawClient;
use common::{PLAIN_TRUSTED, TestRelay, chain_toml, eventually};
use smtp_oauth_relay::testkit::{ExchangeFault, Testkit, TestkitOptions};

/// A tmpfs mounted under a temporary directory, unmounted when dropped.
struct SmallFilesystem {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// Mount a tmpfs of `size` (e.g. "8m"); `None`, after saying why, when not permitted.
    fn mount(size: &str) -> Option<SmallFilesystem> {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("fs");
        std::fs::create_dir(&mount_point).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&mount_point)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(SmallFilesystem {
                mount_point,
                _dir: dir,
            }),
            Ok(output) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs for the disk reserve test (needs root or CAP_SYS_ADMIN): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run mount for the disk reserve test: {error}");
                None
            }
        }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // Lazy: the relay's last file handles may still be closing.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of an unlabelled metric.
async fn metric(admin: std::net::SocketAddr, name: &str) -> u64 {
    let (_, text) = get(admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

async fn ready(admin: std::net::SocketAddr) -> (bool, String) {
    let (status, body) = get(admin, "/readyz").await;
    (status == 200, body)
}

/// Poll `/readyz` until it answers `want` (bounded by [`WAIT`]); its last body.
async fn wait_ready(admin: std::net::SocketAddr, want: bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (is_ready, body) = ready(admin).await;
        if is_ready == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz did not become ready={want}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn fill(path: &Path, bytes: u64) {
    let chunk = vec![0u8; 64 * 1024];
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0;
    while written < bytes {
        let n = chunk.len().min(usize::try_from(bytes - written).unwrap());
        std::io::Write::write_all(&mut file, &chunk[..n]).unwrap();
        written += n as u64;
    }
    file.sync_all().unwrap();
}

#[tokio::test]
async fn below_the_disk_reserve_new_mail_waits_while_queued_mail_is_delivered_and_bounced() {
    let Some(small) = SmallFilesystem::mount("8m") else {
        return;
    };
    let state = small.mount_point.join("state");
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    // Exchange is unreachable at first: what is accepted stays queued.
    kit.exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    kit.exchange.reject_recipient(
        "gone@fabrikam.example",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    );
    let files = tempfile::tempdir().unwrap();
    let ca_file = kit.write_ca_pem(&files.path().join("ca.pem")).unwrap();
    let toml = chain_toml(&kit, &ca_file, "", "", PLAIN_TRUSTED)
        .replace("{state}", &state.display().to_string())
        + "\n[limits]\nmin_free_space = \"4 MiB\"\n";
    let relay = TestRelay::start(&toml).await;
    let (smtp, admin) = (relay.address(0), relay.relay.admin_address().unwrap());

    // Two messages queued above the reserve: one to deliver, one that will bounce.
    for (recipient, subject) in [
        ("a@fabrikam.example", "queued-before"),
        ("gone@fabrikam.example", "to-bounce"),
    ] {
        assert_eq!(
            send(smtp, "relay@contoso.com", &[recipient], subject).await,
            250
        );
    }
    assert!(ready(admin).await.0, "ready above the reserve");
    assert_eq!(
        metric(admin, "smtp_oauth_relay_spool_reserve_reached").await,
        0
    );
    assert_eq!(
        metric(admin, "smtp_oauth_relay_spool_reserve_bytes").await,
        4 * 1024 * 1024
    );
    let free = metric(admin, "smtp_oauth_relay_spool_free_bytes").await;
    assert!(free > 4 * 1024 * 1024 && free <= 8 * 1024 * 1024, "{free}");

    // A ballast file leaves 2 MiB free: below the 4 MiB reserve, far from a full disk.
    let ballast = small.mount_point.join("ballast");
    fill(&ballast, free - 2 * 1024 * 1024);
    let body = wait_ready(admin, false).await;
    assert!(body.contains("disk reserve"), "{body}");
    assert!(body.contains("min_free_space"), "{body}");
    assert_eq!(
        metric(admin, "smtp_oauth_relay_spool_reserve_reached").await,
        1
    );
    assert!(metric(admin, "smtp_oauth_relay_spool_free_bytes").await < 4 * 1024 * 1024);

    // New mail gets 452 4.3.1 at MAIL, with a clear text; the session goes on.
    let mut client = RawClient::connect_greeted(smtp).await;
    client.expect("EHLO app", 250).await;
    let reply = client.expect("MAIL FROM:<relay@contoso.com>", 452).await;
    assert!(
        reply
            .text()
            .starts_with("4.3.1 Insufficient system storage"),
        "{reply:?}"
    );
    client.expect("NOOP", 250).await;
    client.expect("QUIT", 221).await;

    // Exchange comes back: the queued message is delivered, the other one fails and its DSN
    // (written into the spool by the relay, below the reserve) is delivered too.
    kit.exchange.clear_faults().await.unwrap();
    let delivered = kit.exchange.wait_for_messages(2, WAIT).await.unwrap();
    let subjects: Vec<String> = delivered.iter().map(|m| subject_of(m.body())).collect();
    assert!(
        subjects.iter().any(|s| s == "queued-before"),
        "{subjects:?}"
    );
    let dsn = delivered
        .iter()
        .find(|m| subject_of(m.body()).contains("Undelivered Mail Returned to Sender: to-bounce"))
        .unwrap_or_else(|| panic!("no DSN among {subjects:?}"));
    assert_eq!(dsn.recipients, vec!["relay@contoso.com".to_string()]);
    assert!(
        String::from_utf8_lossy(dsn.body()).contains("Status: 5.1.10"),
        "{}",
        String::from_utf8_lossy(dsn.body())
    );
    let failed = common::envelopes_in(&state.join("spool/failed"));
    assert_eq!(
        failed.len(),
        1,
        "the failed message is kept with its reason"
    );
    assert!(eventually(WAIT, || relay.relay.queue_depth() == 0).await);
    // All of that happened below the reserve.
    assert_eq!(
        metric(admin, "smtp_oauth_relay_spool_reserve_reached").await,
        1
    );

    // Space returns: new mail is accepted again, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let body = wait_ready(admin, true).await;
    assert!(body.contains("true"), "{body}");
    assert_eq!(
        metric(admin, "smtp_oauth_relay_spool_reserve_reached").await,
        0
    );
    let mut client = RawClient::connect_greeted(smtp).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("relay@contoso.com", "after").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.expect("QUIT", 221).await;
    kit.exchange.wait_for_messages(3, WAIT).await.unwrap();

    // A reload applies a new reserve at once: the whole filesystem is more than is free.
    relay
        .reload(&toml.replace("\"4 MiB\"", "\"8 MiB\""))
        .await
        .unwrap();
    let body = wait_ready(admin, false).await;
    assert!(body.contains("min_free_space = 8.0 MiB"), "{body}");
    relay.reload(&toml).await.unwrap();
    wait_ready(admin, true).await;

    relay.stop().await;
    drop(small);
}
