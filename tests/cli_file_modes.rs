//! The queue commands on a stopped relay create their files private whatever the umask: the
//! lock file 0600, the spool's directories 0700, an exported message 0600 (the real binary,
//! run with `umask 000`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::UNREACHABLE_ACCOUNT;
use common::process::binary;
use smtp_oauth_relay::spool::{Spool, unix_now};
use smtp_oauth_relay::vocab::address::Address;
use smtp_oauth_relay::vocab::envelope::{ClientInfo, Envelope};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `smtp-oauth-relay queue ARGS` under `umask 000`; returns success and stderr.
fn queue_under_umask_000(config: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$RELAY" queue --config "$CONFIG" "$@""#)
        .arg("sh")
        .args(args)
        .env("RELAY", binary())
        .env("CONFIG", config)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, state: &Path) -> std::path::PathBuf {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\naddress = \"off\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"{}\"\n{UNREACHABLE_ACCOUNT}\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            state.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn queue_commands_create_private_files_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = write_config(dir.path(), &state);

    // A stopped relay with no spool yet: `queue list` creates the lock and the spool.
    let (ok, stderr) = queue_under_umask_000(&config, &["list"]);
    assert!(ok, "{stderr}");
    assert_eq!(mode(&state.join("relay.lock")), 0o600);
    for sub in [
        "spool",
        "spool/queue",
        "spool/tmp",
        "spool/failed",
        "spool/state",
    ] {
        assert_eq!(mode(&state.join(sub)), 0o700, "{sub}");
    }

    // A queued message exported to a file, also over an older, world-readable export.
    let id = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (spool, _) = Spool::open(&state).unwrap();
            let mut writer = spool.create().await.unwrap();
            writer
                .write(b"Subject: private\r\n\r\nbody\r\n")
                .await
                .unwrap();
            let envelope = Envelope::new(
                "m365",
                Some(Address::parse("scanner@contoso.com").unwrap()),
                vec![Address::parse("a@x.example").unwrap()],
                ClientInfo {
                    peer: "127.0.0.1:1".into(),
                    helo: None,
                    principal: "test".into(),
                },
                unix_now(),
            );
            writer.commit(envelope).await.unwrap().id
        });
    let fresh = dir.path().join("fresh.eml");
    let older = dir.path().join("older.eml");
    std::fs::write(&older, b"old").unwrap();
    std::fs::set_permissions(&older, std::fs::Permissions::from_mode(0o644)).unwrap();
    for exported in [&fresh, &older] {
        let (ok, stderr) = queue_under_umask_000(
            &config,
            &["export", &id, "--output", exported.to_str().unwrap()],
        );
        assert!(ok, "{stderr}");
        assert_eq!(mode(exported), 0o600, "{}", exported.display());
        assert_eq!(
            std::fs::read(exported).unwrap(),
            b"Subject: private\r\n\r\nbody\r\n"
        );
    }
}
