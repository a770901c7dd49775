//! Everything the relay creates is private whatever the umask, and a full disk leaves no
//! debris: the real binary runs with `umask 000` in its own user and mount namespace
//! (`unshare`, no privileges needed), its state directory on a small tmpfs that the test
//! fills; the test looks at that tmpfs through `/proc/<pid>/root`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::UNREACHABLE_ACCOUNT;
use common::process::{free_port, serve_on_small_tmpfs, wait_until_listening};
use common::smtp_client::RawClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every path under `root` (itself included) with its permission bits; bounded walk.
fn modes_under(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        assert!(
            found.len() < 1000,
            "unexpectedly many files under {}",
            root.display()
        );
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
        found.push((
            path,
            metadata.is_dir(),
            metadata.permissions().mode() & 0o777,
        ));
    }
    found
}

/// Wait (bounded) until `ready` holds.
async fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(port: u16, path: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the admin endpoint answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_umask_000_everything_created_is_private_and_a_full_disk_leaves_no_probe_file() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("mnt");
    std::fs::create_dir(&mount).unwrap();
    // Not created yet: the relay creates it (and its parent), under umask 000.
    let state_dir = mount.join("var/relay-state");
    let (port, admin_port) = (free_port(), free_port());
    let config_path = dir.path().join("relay.toml");
    std::fs::write(
        &config_path,
        format!(
            "[admin]\naddress = \"127.0.0.1:{admin_port}\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"{}\"\n{UNREACHABLE_ACCOUNT}\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            state_dir.display()
        ),
    )
    .unwrap();
    let mut child = serve_on_small_tmpfs(&mount, "2m", &config_path, Some("000"));
    assert!(
        wait_until_listening(port, Duration::from_secs(30)).await,
        "relay did not start under unshare"
    );
    // `unshare` and `sh` exec, so the child is the relay; its view of the tmpfs:
    let pid = child.id().unwrap();
    let inside = |path: &Path| {
        PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap())
    };
    let state = inside(&state_dir);

    // A queued message (entry file), then a reload: the old workers stop and save the
    // account's recipient counts (a state file).
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: private\r\n\r\nbody\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let status = std::process::Command::new("kill")
        .args(["-s", "HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let state_files = state.join("spool/state");
    wait_for("a state file", Duration::from_secs(60), || {
        std::fs::read_dir(&state_files).is_ok_and(|mut d| d.next().is_some())
    })
    .await;

    let created = modes_under(&inside(&mount.join("var")));
    let files = |name: &str| {
        created
            .iter()
            .filter(|(p, _, _)| p.to_string_lossy().contains(name))
            .count()
    };
    assert_eq!(files("relay.lock"), 1, "{created:?}");
    assert_eq!(files(".msg"), 1, "{created:?}");
    assert_eq!(files("/spool/state/"), 1, "{created:?}");
    for (path, is_dir, mode) in &created {
        let expected = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, expected, "{} is {mode:o}", path.display());
    }

    // Fill the tmpfs to the last byte, then ask for readiness: the probe cannot write.
    let mut filler = std::fs::File::create(inside(&mount.join("filler"))).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut full = false;
    for _ in 0..1024 {
        match filler.write(&chunk) {
            Ok(0) => {
                full = true;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
                full = true;
                break;
            }
        }
    }
    assert!(full, "the 2 MiB tmpfs did not fill up");
    let response = http_get(admin_port, "/readyz").await;
    assert!(
        response.starts_with("HTTP/1.0 503") || response.starts_with("HTTP/1.1 503"),
        "{response}"
    );
    assert!(response.contains("not writable"), "{response}");
    let tmp: Vec<String> = std::fs::read_dir(state.join("spool/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(tmp.is_empty(), "debris in spool/tmp after ENOSPC: {tmp:?}");

    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
