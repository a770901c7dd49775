//! `smtp-oauth-relay check --config-only` on configurations that name hostile files: a
//! certificate that is `/dev/zero`, a CA bundle far larger than any real one, a secret file
//! that is a FIFO. Each is refused at once, by the key that names it, while the process runs
//! under a memory limit that reading such a file would break.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::binary;

/// Run `check --config-only` on `config` in a shell with a 2 GiB address-space limit (the
/// relay reading `/dev/zero` once grew to 21 GB before the OOM killer stopped it); give up
/// after a generous minute. Two runtime threads and two malloc arenas keep the address space
/// the relay reserves for itself small on a machine with many cores.
async fn check_config_only(config: &std::path::Path) -> (Option<i32>, String) {
    let child = tokio::process::Command::new("sh")
        .args([
            "-c",
            r#"ulimit -v 2097152 && exec "$RELAY" check --config-only --config "$CONFIG""#,
        ])
        .env("RELAY", binary())
        .env("TOKIO_WORKER_THREADS", "2")
        .env("MALLOC_ARENA_MAX", "2")
        .env("CONFIG", config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("check must finish: it may not read a named file without end")
        .unwrap();
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn hostile_files_named_by_the_config_are_refused_by_key_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse 8 GiB "CA bundle": costs no disk, but reading it whole would not fit.
    let bundle = std::fs::File::create(dir.path().join("huge-ca.pem")).unwrap();
    bundle.set_len(8 * 1024 * 1024 * 1024).unwrap();
    drop(bundle);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(dir.path().join("secret.fifo"))
            .status()
            .unwrap()
            .success()
    );
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        r#"
[relay]
hostname = "relay.test"
state_dir = "state"

[[listener]]
address = "127.0.0.1:2525"
tls = "starttls"
certificate = "/dev/zero"
private_key = "/dev/zero"

[[account]]
name = "m365"
mailbox = "relay@contoso.com"
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret_file = "secret.fifo"
ca_file = "huge-ca.pem"

[[network]]
cidr = "127.0.0.0/8"
account = "m365"
allowed_senders = ["relay@contoso.com"]
"#,
    )
    .unwrap();
    let (code, output) = check_config_only(&config).await;
    assert_eq!(code, Some(2), "{output}");
    for (key, why) in [
        ("listener[0].certificate", "/dev/zero is a character device"),
        ("listener[0].private_key", "/dev/zero is a character device"),
        ("account[0].client_secret_file", "is a FIFO"),
        ("account[0].ca_file", "is larger than 1 MiB"),
    ] {
        assert!(
            output
                .lines()
                .any(|line| line.contains(&format!("{key}: ")) && line.contains(why)),
            "{key} ({why}) missing:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_config_file_that_is_dev_zero_is_refused() {
    let (code, output) = check_config_only(std::path::Path::new("/dev/zero")).await;
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("not a regular file"), "{output}");
}
