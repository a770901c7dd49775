//! Clients that stall at each step of an inbound session, over real sockets: after the
//! banner, after EHLO, after STARTTLS (and in the middle of the TLS handshake), after AUTH,
//! at MAIL, in the middle of DATA, after the final dot, at QUIT, and a TLS client that
//! pipelines commands but never reads the replies. Each is given up within the configured
//! timeouts and its connection slot is free again afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::Chain;
use common::smtp_client::RawClient;
use smtp_oauth_relay::testkit::TestkitOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Well past `command_timeout` and `data_timeout` (2 s) and the 5 s goodbye, on a loaded
/// machine; the TLS handshake used to allow 30 s and a stuck TLS shutdown forever.
const GIVEN_UP_WITHIN: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Stall {
    AfterBanner,
    AfterEhlo,
    AfterStartTls,
    MidHandshake,
    AfterAuth,
    AtMail,
    MidData,
    AfterDot,
    AtQuit,
    StopsReading,
}

fn auth_plain() -> String {
    format!(
        "AUTH PLAIN {}",
        base64::engine::general_purpose::STANDARD.encode(b"\0printer\0printer-pw")
    )
}

/// Drive a client to `stall`, then wait (reading) until the relay closes the connection;
/// returns what it said last. The client that stops reading returns at once with its socket,
/// which the test keeps open: only the relay may end that connection.
async fn stall_at(
    stall: Stall,
    plain: SocketAddr,
    starttls: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> (String, Option<Box<dyn common::smtp_client::Io>>) {
    let mut client = match stall {
        Stall::AfterStartTls | Stall::MidHandshake | Stall::StopsReading => {
            let mut client = RawClient::connect_greeted(starttls).await;
            client.expect("EHLO app", 250).await;
            client.expect("STARTTLS", 220).await;
            if let Stall::MidHandshake = stall {
                // Never send a ClientHello: the relay must give up on its own.
                let mut stream = client.into_inner();
                let mut buffer = [0u8; 64];
                let read = tokio::time::timeout(GIVEN_UP_WITHIN, stream.read(&mut buffer)).await;
                assert!(
                    matches!(read, Ok(Ok(0) | Err(_))),
                    "the relay closed the handshake: {read:?}"
                );
                return (String::new(), None);
            }
            let mut client = client.start_tls(tls).await;
            client.expect("EHLO app", 250).await;
            client
        }
        _ => {
            let mut client = RawClient::connect_greeted(plain).await;
            if !matches!(stall, Stall::AfterBanner) {
                client.expect("EHLO app", 250).await;
            }
            client
        }
    };
    match stall {
        Stall::AfterAuth => {
            client.expect(&auth_plain(), 235).await;
        }
        Stall::AtMail => {
            client.expect("MAIL FROM:<app@contoso.com>", 250).await;
        }
        Stall::MidData => {
            client.expect("MAIL FROM:<app@contoso.com>", 250).await;
            client.expect("RCPT TO:<a@fabrikam.example>", 250).await;
            client.expect("DATA", 354).await;
            client.send_raw(b"Subject: half\r\n\r\nhalf a mes").await;
        }
        Stall::AfterDot => {
            let reply = client
                .send_message(
                    "app@contoso.com",
                    &["a@fabrikam.example"],
                    b"Subject: x\r\n\r\nx\r\n",
                )
                .await;
            assert_eq!(reply.code, 250, "{reply:?}");
        }
        Stall::AtQuit => {
            // QUIT without ever reading the 221.
            client.send_line("QUIT").await;
        }
        Stall::StopsReading => {
            // Pipeline NOOPs and never read a reply: the relay's writes block once the
            // socket buffers are full. Stop writing when ours block too (bounded: 256 MiB).
            let mut stream = client.into_inner();
            let batch = b"NOOP\r\n".repeat(10_000);
            for _ in 0..(256 * 1024 * 1024 / batch.len()) {
                match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&batch)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            return (String::new(), Some(stream));
        }
        _ => {}
    }
    let mut last = String::new();
    for _ in 0..20 {
        let reply = client.reply().await;
        if reply.code == 0 {
            break;
        }
        last = format!("{} {}", reply.code, reply.text());
    }
    (last, None)
}

fn active_connections(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("smtp_oauth_relay_inbound_connections_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn metrics(admin: SocketAddr) -> String {
    reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_at_any_step_is_given_up_and_its_slot_freed() {
    let chain = Chain::start(TestkitOptions::default(), |kit, dir| {
        let tls = Chain::listener_tls_files(kit, dir);
        format!(
            r#"
[limits]
command_timeout = "2s"
data_timeout = "2s"

[[listener]]
address = "127.0.0.1:0"
allow_auth_without_tls = true

[[listener]]
address = "127.0.0.1:0"
tls = "starttls"
{tls}

[[user]]
username = "printer"
password = "printer-pw"
account = "m365"
allowed_senders = ["relay@contoso.com"]

[[network]]
cidr = "127.0.0.0/8"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#
        )
    })
    .await;
    let plain = chain.relay.address(0);
    let starttls = chain.relay.address(1);
    let admin = chain.relay.relay.admin_address().unwrap();
    let stalls = [
        Stall::AfterBanner,
        Stall::AfterEhlo,
        Stall::AfterStartTls,
        Stall::MidHandshake,
        Stall::AfterAuth,
        Stall::AtMail,
        Stall::MidData,
        Stall::AfterDot,
        Stall::AtQuit,
        Stall::StopsReading,
    ];
    let started = Instant::now();
    let tasks: Vec<_> = stalls
        .into_iter()
        .map(|stall| {
            let tls = chain.kit.pki.client_config();
            tokio::spawn(async move {
                let began = Instant::now();
                let (last, held) = tokio::time::timeout(
                    GIVEN_UP_WITHIN * 2,
                    stall_at(stall, plain, starttls, tls),
                )
                .await
                .unwrap_or_else(|_| panic!("{stall:?}: the relay never let go"));
                (stall, last, began.elapsed(), held)
            })
        })
        .collect();
    let mut held_open = Vec::new();
    for task in tasks {
        let (stall, last, elapsed, held) = task.await.unwrap();
        held_open.extend(held);
        eprintln!("{stall:?}: {last:?} after {elapsed:?}");
        match stall {
            Stall::AtQuit => assert!(last.starts_with("221"), "{stall:?}: {last}"),
            Stall::MidHandshake | Stall::StopsReading => {}
            Stall::MidData => assert!(last.starts_with("421 4.4.2"), "{stall:?}: {last}"),
            _ => assert!(last.starts_with("421 4.4.2"), "{stall:?}: {last}"),
        }
        if !matches!(stall, Stall::StopsReading) {
            assert!(elapsed < GIVEN_UP_WITHIN, "{stall:?}: {elapsed:?}");
        }
    }
    // Every slot is free again, the one of the client that stopped reading (and still holds
    // its socket open) included.
    let mut active = u64::MAX;
    for _ in 0..150 {
        active = active_connections(&metrics(admin).await);
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        active,
        0,
        "connections still held after {:?}",
        started.elapsed()
    );
    drop(held_open);
}
