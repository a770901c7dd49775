//! Connection limits under pressure, over real sockets: the clients of one host share
//! 127.0.0.1, idle and trickling connections must not lock out new clients, and slow input
//! is bounded as a whole (a command line by `command_timeout`, DATA by `min_data_rate`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::smtp_client::RawClient;
use common::{TestRelay, UNREACHABLE_ACCOUNT};
use tokio::io::AsyncWriteExt;

fn config(extra: &str) -> String {
    format!(
        r#"
[relay]
hostname = "relay.test"
state_dir = "{{state}}"
[[listener]]
address = "127.0.0.1:0"
{extra}
{UNREACHABLE_ACCOUNT}
[[user]]
username = "printer"
password = "printer-pw"
account = "m365"
allowed_senders = ["scanner@contoso.com"]
"#
    )
}

/// A relay where the whole of 127.0.0.0/8 may send (a trusted network).
fn trusted_loopback(extra: &str) -> String {
    config(&format!(
        "{extra}\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n"
    ))
}

/// `smtp_oauth_relay_inbound_connections_evicted_total` for `reason`, from `/metrics`.
async fn evictions(relay: &TestRelay, reason: &str) -> u64 {
    let admin = relay.relay.admin_address().unwrap();
    let text = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series =
        format!("smtp_oauth_relay_inbound_connections_evicted_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn connect_from(local: &str, relay: SocketAddr) -> RawClient {
    RawClient::connect_from(local.parse::<IpAddr>().unwrap(), relay).await
}

#[tokio::test]
async fn a_pool_of_30_connections_from_localhost_is_served_with_default_limits() {
    let relay = TestRelay::start(&config("")).await;
    let mut pool = Vec::new();
    for _ in 0..30 {
        pool.push(RawClient::connect_greeted(relay.address(0)).await);
    }
    for client in &mut pool {
        client.expect("EHLO app", 250).await;
    }
    relay.stop().await;
}

/// Send one byte every 200 ms on `client` without ever completing a line, for at most
/// `count` bytes; stops when the relay closes the connection.
fn trickle(client: RawClient, count: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = client.into_inner();
        for _ in 0..count {
            if stream.write_all(b"N").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test]
async fn a_trusted_client_is_served_while_untrusted_trickling_connections_fill_the_limit() {
    // Only 127.0.0.9 is trusted (loopback itself is not exempt here); 127.0.0.2–7 are
    // strangers that trickle bytes to hold their slots, 5 per address, 30 in all.
    let relay = TestRelay::start(&config(
        r#"
[limits]
max_connections = 30
max_connections_per_ip = 5
per_ip_limit_exempt = "networks"
[[network]]
cidr = "127.0.0.9/32"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#,
    ))
    .await;
    let mut tricklers = Vec::new();
    for host in 2..=7 {
        for _ in 0..5 {
            let mut client = connect_from(&format!("127.0.0.{host}"), relay.address(0)).await;
            let greeting = client.reply().await;
            assert_eq!(greeting.code, 220, "{greeting:?}");
            tricklers.push(trickle(client, 150));
        }
    }
    // A sixth stranger from a full address is still refused by the per-address limit.
    let mut over = connect_from("127.0.0.7", relay.address(0)).await;
    assert_eq!(over.reply().await.code, 421);
    // A new stranger still gets in, in the place of the longest-idle trickler.
    let mut stranger = connect_from("127.0.0.8", relay.address(0)).await;
    let greeting = stranger.reply().await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    stranger.expect("EHLO app", 250).await;
    // Counted, by reason (the tricklers beyond the ordinary slots evicted some already).
    assert!(evictions(&relay, "idle under pressure").await >= 1);
    assert_eq!(evictions(&relay, "busy timeout").await, 0);
    // The trusted device gets in and can send.
    let mut trusted = connect_from("127.0.0.9", relay.address(0)).await;
    let greeting = trusted.reply().await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    trusted.expect("EHLO printer", 250).await;
    assert_eq!(
        trusted
            .send_message(
                "scanner@contoso.com",
                &["a@fabrikam.example"],
                b"Subject: hi\r\n\r\nx\r\n"
            )
            .await
            .code,
        250
    );
    for trickler in tricklers {
        trickler.abort();
    }
    relay.stop().await;
}

#[tokio::test]
async fn loopback_is_counted_per_address_when_the_exemption_is_off() {
    let relay = TestRelay::start(&config(
        "[limits]\nmax_connections_per_ip = 2\nper_ip_limit_exempt = \"none\"",
    ))
    .await;
    let _first = RawClient::connect_greeted(relay.address(0)).await;
    let _second = RawClient::connect_greeted(relay.address(0)).await;
    let mut third = RawClient::connect(relay.address(0)).await;
    let reply = third.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    relay.stop().await;
}

#[tokio::test]
async fn a_command_line_trickled_byte_by_byte_is_bounded_by_command_timeout_as_a_whole() {
    let relay = TestRelay::start(&config("[limits]\ncommand_timeout = \"2s\"")).await;
    let client = RawClient::connect_greeted(relay.address(0)).await;
    let mut stream = client.into_inner();
    let started = Instant::now();
    // One byte every 300 ms (far within the timeout between reads) for up to 12 s.
    let mut closed_after = None;
    let mut received = Vec::new();
    for _ in 0..40 {
        if stream.write_all(b"N").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buffer = [0u8; 512];
        if let Ok(read) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await
        {
            match read {
                Ok(0) | Err(_) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    }
    let closed_after = closed_after.expect("the relay closed the trickling connection");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("421 4.4.2"), "{text:?}");
    assert!(
        closed_after < Duration::from_secs(10),
        "closed after {closed_after:?}, not while the trickle went on"
    );
    relay.stop().await;
}

#[tokio::test]
async fn data_slower_than_min_data_rate_is_closed() {
    let relay = TestRelay::start(&trusted_loopback(
        "[limits]\ndata_timeout = \"1s\"\nmin_data_rate = \"1 KiB\"",
    ))
    .await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    client.expect("MAIL FROM:<app@contoso.com>", 250).await;
    client.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    client.expect("DATA", 354).await;
    let mut stream = client.into_inner();
    // 50 bytes every 300 ms (about 170 bytes/s): never a second between reads.
    let started = Instant::now();
    let mut received = Vec::new();
    for _ in 0..40 {
        if stream.write_all(&[b'x'; 50]).await.is_err() {
            break;
        }
        let mut buffer = [0u8; 512];
        if let Ok(read) = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await
        {
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("421 4.4.2"), "{text:?}");
    assert!(text.contains("too slow"), "{text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed while the slow DATA went on"
    );
    assert!(relay.queued_bodies().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_drained_only_so_far_then_refused_and_closed() {
    let relay = TestRelay::start(&trusted_loopback("[limits]\nmax_message_size = \"1 KiB\"")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    client.expect("MAIL FROM:<app@contoso.com>", 250).await;
    client.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    client.expect("DATA", 354).await;
    let mut stream = client.into_inner();
    // Up to 64 MiB without an end: the relay drains at most 1 MiB past the limit, then
    // answers and closes. Stop writing as soon as its reply is there.
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    let mut received = Vec::new();
    for _ in 0..1024 {
        match tokio::time::timeout(Duration::from_secs(20), stream.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
        let mut buffer = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(
            Duration::from_millis(1),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await
        {
            received.extend_from_slice(&buffer[..n]);
            break;
        }
    }
    assert!(sent < 64 * 1024 * 1024, "the relay kept reading");
    let mut buffer = [0u8; 512];
    // Read the rest of the reply, then the end of the connection (bounded).
    for _ in 0..10 {
        match tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await
        {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("552 5.3.4"), "{text:?}");
    assert!(relay.queued_bodies().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn near_the_limit_idle_sessions_get_a_short_timeout_but_a_transaction_keeps_its_own() {
    // 8 of 10 slots in use is "busy": idle sessions outside a transaction then wait at most
    // 10 s for a command instead of command_timeout (60 s here).
    let relay = TestRelay::start(&trusted_loopback(
        "[limits]\nmax_connections = 10\ncommand_timeout = \"60s\"",
    ))
    .await;
    let mut in_transaction = RawClient::connect_greeted(relay.address(0)).await;
    in_transaction.expect("EHLO app", 250).await;
    in_transaction
        .expect("MAIL FROM:<app@contoso.com>", 250)
        .await;
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(RawClient::connect_greeted(relay.address(0)).await);
    }
    let started = Instant::now();
    // RawClient waits at most 20 s for a reply: a 60 s timeout would fail here.
    let reply = idle[0].reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().starts_with("4.4.2"), "{reply:?}");
    eprintln!("idle session closed after {:?}", started.elapsed());
    assert!(evictions(&relay, "busy timeout").await >= 1);
    // The session in a transaction is still there.
    in_transaction
        .expect("RCPT TO:<a@fabrikam.example>", 250)
        .await;
    relay.stop().await;
}

#[tokio::test]
async fn an_unknown_per_ip_limit_exempt_value_is_refused_by_key() {
    let state = tempfile::tempdir().unwrap();
    let text = config("[limits]\nper_ip_limit_exempt = \"everyone\"")
        .replace("{state}", &state.path().display().to_string());
    let error = smtp_oauth_relay::config::Config::from_toml(&text, state.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("limits.per_ip_limit_exempt"), "{error}");
}
