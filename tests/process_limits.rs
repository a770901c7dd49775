//! Properties of the real process: memory stays flat while an oversized message is drained,
//! and no secret reaches the log even at trace level.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::process::{RelayProcess, free_port, rss_kib, wait_until_listening};
use common::smtp_client::RawClient;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};

fn config(kit: &Testkit, dir: &std::path::Path, port: u16, extra: &str) -> std::path::PathBuf {
    let ca = kit.write_ca_pem(&dir.join("ca.pem")).unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{extra}\n{}\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\nallow_auth_without_tls = true\n\
             [[user]]\nusername = \"printer\"\npassword = \"Pr1nter-Secret-Pw\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n",
            kit.relay_account_toml("m365", &ca)
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_while_an_oversized_message_is_drained() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = RelayProcess::serve(&config(&kit, dir.path(), port, ""));
    assert!(wait_until_listening(port, Duration::from_secs(20)).await);
    let pid = relay.child.id().unwrap();
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    client
        .expect(
            &format!(
                "AUTH PLAIN {}",
                base64::engine::general_purpose::STANDARD.encode(b"\0printer\0Pr1nter-Secret-Pw")
            ),
            235,
        )
        .await;
    client.expect("MAIL FROM:<relay@contoso.com>", 250).await;
    client.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    client.expect("DATA", 354).await;
    let baseline = rss_kib(pid);
    let mut peak = baseline;
    // 64 MiB of content against the 35 MiB limit (the relay drains at most as much again
    // before it gives up on the connection), in 1 MiB writes; RSS sampled after each.
    let line = "x".repeat(1022) + "\r\n";
    let chunk = line.repeat(1024);
    client.send_raw(b"Subject: too big\r\n\r\n").await;
    for _ in 0..64 {
        client.send_raw(chunk.as_bytes()).await;
        peak = peak.max(rss_kib(pid));
    }
    client.send_raw(b".\r\n").await;
    let reply = client.reply().await;
    assert_eq!(reply.code, 552, "{reply:?}");
    peak = peak.max(rss_kib(pid));
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!(
        "RSS baseline {} MiB, peak {} MiB while draining 64 MiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 32,
        "RSS grew by {growth_mib} MiB while draining an oversized message"
    );
    // Nothing was kept.
    let queued = std::fs::read_dir(dir.path().join("state/spool/queue"))
        .unwrap()
        .count();
    assert_eq!(queued, 0);
    relay.kill().await;
}

#[tokio::test]
async fn no_secret_password_token_or_xoauth2_string_in_a_trace_level_log() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(&kit, dir.path(), port, "");
    let mut command = tokio::process::Command::new(common::process::binary());
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    assert!(wait_until_listening(port, Duration::from_secs(20)).await);
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    client
        .expect(
            &format!(
                "AUTH PLAIN {}",
                base64::engine::general_purpose::STANDARD.encode(b"\0printer\0Pr1nter-Secret-Pw")
            ),
            235,
        )
        .await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            b"From: relay@contoso.com\r\nSubject: trace\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    kit.exchange
        .wait_for_messages(1, Duration::from_secs(30))
        .await
        .unwrap();
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    client.expect("AUTH LOGIN", 334).await;
    client
        .expect(
            &base64::engine::general_purpose::STANDARD.encode(b"printer"),
            334,
        )
        .await;
    client
        .expect(
            &base64::engine::general_purpose::STANDARD.encode(b"Pr1nter-Secret-Pw"),
            235,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut child = child;
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        log.lines().count() > 50,
        "trace logging was on: {} lines",
        log.lines().count()
    );
    let xoauth2_prefix =
        base64::engine::general_purpose::STANDARD.encode(b"user=relay@contoso.com\x01auth=Bearer ");
    let plain_response =
        base64::engine::general_purpose::STANDARD.encode(b"\0printer\0Pr1nter-Secret-Pw");
    for (what, needle) in [
        ("the client secret", kit.client_secret().to_string()),
        ("the user's password", "Pr1nter-Secret-Pw".to_string()),
        ("the AUTH PLAIN response", plain_response),
        (
            "the AUTH LOGIN password",
            base64::engine::general_purpose::STANDARD.encode(b"Pr1nter-Secret-Pw"),
        ),
        ("an XOAUTH2 string", xoauth2_prefix[..40].to_string()),
        ("a bearer token", "auth=Bearer".to_string()),
        ("a JWT", "eyJ".to_string()),
    ] {
        assert!(!log.contains(&needle), "{what} appears in the trace log");
    }
}

/// Run as a separate relay process so that the 500 connections' two ends do not share one
/// process's descriptor limit (often 1,024).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_is_served_while_500_idle_connections_are_open() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Default limits: max_connections = 500.
    let relay = RelayProcess::serve(&config(&kit, dir.path(), port, ""));
    assert!(wait_until_listening(port, Duration::from_secs(20)).await);
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(RawClient::connect_greeted(address).await);
    }
    // Every slot is taken; the newcomer still gets in, and can start a transaction.
    let mut newcomer = RawClient::connect_greeted(address).await;
    newcomer.expect("EHLO app", 250).await;
    newcomer
        .expect(
            &format!(
                "AUTH PLAIN {}",
                base64::engine::general_purpose::STANDARD.encode(b"\0printer\0Pr1nter-Secret-Pw")
            ),
            235,
        )
        .await;
    newcomer.expect("MAIL FROM:<relay@contoso.com>", 250).await;
    // The longest-idle connection made room for it with `421 4.7.0 … too busy` (or, on a
    // machine so slow that opening the 500 took over 10 s, the shortened idle timeout of a
    // busy relay, `421 4.4.2`, closed it first).
    let reply = idle[0].reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(
        reply.text().starts_with("4.7.0") && reply.text().contains("too busy")
            || reply.text().starts_with("4.4.2"),
        "{reply:?}"
    );
    assert!(idle[0].closed().await);
    // Another newcomer gets in too; the session in a transaction is not the one displaced.
    let mut second = RawClient::connect_greeted(address).await;
    second.expect("EHLO app", 250).await;
    newcomer.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    relay.kill().await;
}
