//! When the spool cannot store a message, the client gets a temporary error (never a 5xx and
//! never a 250), and the relay keeps working once the problem is gone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::process::{free_port, serve_on_small_tmpfs, wait_until_listening};
use common::smtp_client::RawClient;
use common::{TestRelay, UNREACHABLE_ACCOUNT};

/// The disk reserve is off here: these tests are about what happens when a write fails
/// (tests/disk_reserve.rs covers the reserve; with it on, the free-space sampler could catch
/// the 1 MiB tmpfs full during the oversized message and refuse the next one for a second).
fn config(state: &str, port: u16) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"{state}\"\n{UNREACHABLE_ACCOUNT}\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\
         [limits]\nmin_free_space = 0\n"
    )
}

#[tokio::test]
async fn a_spool_write_failure_answers_451_4_3_0_and_the_relay_recovers() {
    let relay = TestRelay::start(&config("{state}", 0)).await;
    let tmp = relay.state.path().join("spool/tmp");
    // Replace the spool's tmp/ directory by a file: creating the entry fails (ENOTDIR), even
    // for root.
    std::fs::remove_dir(&tmp).unwrap();
    std::fs::write(&tmp, b"not a directory").unwrap();
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: lost?\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text().starts_with("4.3.0"), "{reply:?}");
    // The session stays in sync and usable; once the disk is back, mail is accepted.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: kept\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(relay.queued_bodies().len(), 1);
    relay.stop().await;
}

/// The relay runs in its own user and mount namespace (`unshare`, no privileges needed) with
/// its state directory on a 1 MiB tmpfs, so the disk really fills up.
#[tokio::test]
async fn a_full_disk_answers_452_4_3_1_and_smaller_mail_still_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let port = free_port();
    let config_path = dir.path().join("relay.toml");
    std::fs::write(&config_path, config(&state.display().to_string(), port)).unwrap();
    let mut child = serve_on_small_tmpfs(&state, "1m", &config_path, None);
    assert!(
        wait_until_listening(port, Duration::from_secs(20)).await,
        "relay did not start under unshare"
    );

    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: small\r\n\r\nfits\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "z".repeat(2 * 1024 * 1024));
    let reply = client
        .send_message("scanner@contoso.com", &["a@x.example"], big.as_bytes())
        .await;
    assert_eq!(reply.code, 452, "{reply:?}");
    assert!(reply.text().starts_with("4.3.1"), "{reply:?}");
    // The half-written entry was removed: the next small message fits again.
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: small again\r\n\r\nfits\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    child.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
