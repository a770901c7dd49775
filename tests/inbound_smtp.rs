//! The inbound side over real sockets: access control, protocol errors, pipelining,
//! limits, and what lands in the spool. The upstream is unreachable on purpose, so accepted
//! messages stay in the spool for inspection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine;
use common::smtp_client::RawClient;
use common::{TestRelay, UNREACHABLE_ACCOUNT, without_trace};

fn config(extra: &str) -> String {
    format!(
        r#"
[relay]
hostname = "relay.test"
state_dir = "{{state}}"
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

fn trusted_loopback(extra: &str) -> String {
    config(&format!(
        r#"
[[listener]]
address = "127.0.0.1:0"
allow_auth_without_tls = true
{extra}
[[network]]
cidr = "127.0.0.0/8"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#
    ))
}

fn untrusted(extra: &str) -> String {
    config(&format!(
        r#"
[[listener]]
address = "127.0.0.1:0"
{extra}
[[network]]
cidr = "192.0.2.0/24"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#
    ))
}

#[tokio::test]
async fn an_untrusted_unauthenticated_client_cannot_send_anywhere() {
    let relay = TestRelay::start(&untrusted("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO attacker.example", 250).await;
    for sender in ["scanner@contoso.com", "anyone@example.net", ""] {
        let reply = client.expect(&format!("MAIL FROM:<{sender}>"), 530).await;
        assert!(reply.text().starts_with("5.7.0"), "{reply:?}");
    }
    client.expect("RCPT TO:<victim@example.net>", 503).await;
    client.expect("DATA", 503).await;
    // AUTH is not even offered in clear on this listener.
    client
        .expect("AUTH PLAIN AHByaW50ZXIAcHJpbnRlci1wdw==", 538)
        .await;
    assert!(relay.queued_bodies().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn malformed_commands_get_500_or_501_with_an_enhanced_code_and_the_session_goes_on() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    for (line, code, enhanced) in [
        ("HELLO", 500, "5.5.1"),
        ("MAIL FROM", 501, "5.5.4"),
        ("MAIL FROM:<no-at-sign>", 501, "5.1.7"),
        ("MAIL FROM:<a@contoso.com> SIZE=lots", 501, "5.5.4"),
        ("RCPT TO:<x@y.example>", 503, "5.5.1"),
        ("EHLO", 501, "5.5.4"),
        ("\u{1}\u{2}\u{3}", 500, "5.5.1"),
    ] {
        let reply = client.command(line).await;
        assert_eq!(reply.code, code, "{line:?} -> {reply:?}");
        assert!(reply.text().starts_with(enhanced), "{line:?} -> {reply:?}");
    }
    client.send_raw(b"\xff\xfe\x00garbage\r\n").await;
    let reply = client.reply().await;
    assert_eq!(reply.code, 500);
    assert!(reply.text().starts_with("5.5.2"));
    // Still usable.
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: after errors\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(reply.text().starts_with("2.0.0 Ok: queued as "));
    client.expect("QUIT", 221).await;
    relay.stop().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    client
        .send_raw(b"MAIL FROM:<scanner@contoso.com>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<bad>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n")
        .await;
    let codes: Vec<u16> = [
        client.reply().await,
        client.reply().await,
        client.reply().await,
        client.reply().await,
        client.reply().await,
    ]
    .iter()
    .map(|r| r.code)
    .collect();
    assert_eq!(codes, vec![250, 250, 501, 250, 354]);
    // Content plus the next commands in one write.
    client
        .send_raw(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        .await;
    assert_eq!(client.reply().await.code, 250);
    assert_eq!(client.reply().await.code, 250);
    assert_eq!(client.reply().await.code, 221);
    assert_eq!(relay.queued_bodies().len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn auth_plain_and_login_in_clear_when_the_listener_allows_it() {
    let relay = TestRelay::start(&untrusted("allow_auth_without_tls = true")).await;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);

    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    let ehlo = client.expect("EHLO printer", 250).await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    client
        .expect(&format!("AUTH PLAIN {}", b64(b"\0printer\0wrong")), 535)
        .await;
    client
        .expect(
            &format!("AUTH PLAIN {}", b64(b"\0printer\0printer-pw")),
            235,
        )
        .await;
    // The user may only send as its own allowed sender.
    client.expect("MAIL FROM:<other@contoso.com>", 550).await;
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: plain\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);

    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    let prompt = client.expect("AUTH LOGIN", 334).await;
    assert_eq!(prompt.lines, vec!["VXNlcm5hbWU6"]);
    client.expect(&b64(b"printer"), 334).await;
    client.expect(&b64(b"printer-pw"), 235).await;

    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    client
        .expect(&format!("AUTH LOGIN {}", b64(b"printer")), 334)
        .await;
    // Unpadded base64, as some devices send.
    client
        .expect(b64(b"printer-pw").trim_end_matches('='), 235)
        .await;
    relay.stop().await;
}

#[tokio::test]
async fn content_is_stored_byte_for_byte_behind_the_trace_field() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    let long_line = "x".repeat(998);
    let content = format!(
        "Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@contoso.com>\r\nFrom: scanner@contoso.com\r\nSubject: fidelity\r\n\r\n.leading dot\r\n..two dots\r\nGrüße aus Köln — 8-bit UTF-8\r\n{long_line}\r\n.\r\nlast line\r\n"
    );
    let reply = client
        .send_message("scanner@contoso.com", &["a@x.example"], content.as_bytes())
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let bodies = relay.queued_bodies();
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].starts_with(b"Received: from printer ([127.0.0.1])\r\n\tby relay.test (smtp-oauth-relay) with ESMTP id "));
    assert_eq!(without_trace(&bodies[0]), content.as_bytes());
    relay.stop().await;
}

#[tokio::test]
async fn smtp_smuggling_vectors_are_content_not_a_second_message() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let vectors: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n"];
    for vector in vectors {
        let mut client = RawClient::connect_greeted(relay.address(0)).await;
        client.expect("EHLO printer", 250).await;
        client.expect("MAIL FROM:<scanner@contoso.com>", 250).await;
        client.expect("RCPT TO:<a@x.example>", 250).await;
        client.expect("DATA", 354).await;
        let mut payload = b"Subject: smuggle\r\n\r\nbefore".to_vec();
        payload.extend_from_slice(vector);
        payload.extend_from_slice(b"MAIL FROM:<ceo@contoso.com>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n");
        // Split the payload over two writes around the vector.
        let cut = payload.len() / 2;
        client.send_raw(&payload[..cut]).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        client.send_raw(&payload[cut..]).await;
        let reply = client.reply().await;
        assert_eq!(reply.code, 250, "vector {vector:?}: {reply:?}");
        client.expect("QUIT", 221).await;
    }
    let bodies = relay.queued_bodies();
    assert_eq!(
        bodies.len(),
        vectors.len(),
        "exactly one message per vector"
    );
    for body in &bodies {
        let text = String::from_utf8_lossy(without_trace(body)).into_owned();
        assert!(text.contains("MAIL FROM:<ceo@contoso.com>\r\n"), "{text:?}");
        assert!(text.contains("Subject: smuggled"), "{text:?}");
        assert!(
            !text.contains("\n\n")
                && !text.replace("\r\n", "").contains('\r')
                && !text.replace("\r\n", "").contains('\n'),
            "bare line ending left: {text:?}"
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn oversized_message_is_refused_after_its_end_and_the_session_goes_on() {
    let relay =
        TestRelay::start(&trusted_loopback("[limits]\nmax_message_size = \"64 KiB\"")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    let ehlo = client.expect("EHLO printer", 250).await;
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 65536"), "{ehlo:?}");
    client
        .expect("MAIL FROM:<scanner@contoso.com> SIZE=70000", 552)
        .await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(200 * 1024));
    let reply = client
        .send_message("scanner@contoso.com", &["a@x.example"], big.as_bytes())
        .await;
    assert_eq!(reply.code, 552, "{reply:?}");
    assert!(reply.text().starts_with("5.3.4"));
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: small\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    assert_eq!(relay.queued_bodies().len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn a_100_kb_command_line_is_refused_and_the_session_stays_usable() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    let line = format!("NOOP {}", "z".repeat(100 * 1024));
    let reply = client.command(&line).await;
    assert_eq!(reply.code, 500);
    assert!(reply.text().starts_with("5.5.2"), "{reply:?}");
    client.expect("NOOP", 250).await;
    relay.stop().await;
}

#[tokio::test]
async fn recipients_are_capped() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    client.expect("MAIL FROM:<scanner@contoso.com>", 250).await;
    let mut batch = String::new();
    for n in 0..1000 {
        batch.push_str(&format!("RCPT TO:<r{n}@x.example>\r\n"));
    }
    client.send_raw(batch.as_bytes()).await;
    let mut codes = Vec::new();
    for _ in 0..1000 {
        codes.push(client.reply().await.code);
    }
    assert!(codes[..500].iter().all(|&c| c == 250));
    assert!(codes[500..].iter().all(|&c| c == 452));
    relay.stop().await;
}

#[tokio::test]
async fn idle_clients_are_disconnected_with_421() {
    let relay = TestRelay::start(&trusted_loopback("[limits]\ncommand_timeout = \"1s\"")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    let reply = client.reply().await;
    assert_eq!(reply.code, 421);
    assert!(reply.text().starts_with("4.4.2"), "{reply:?}");
    assert!(client.closed().await);
    relay.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    // Loopback and [[network]] ranges are exempt by default; count them here.
    let relay = TestRelay::start(&trusted_loopback(
        "[limits]\nmax_connections_per_ip = 2\nper_ip_limit_exempt = \"none\"",
    ))
    .await;
    let _first = RawClient::connect_greeted(relay.address(0)).await;
    let _second = RawClient::connect_greeted(relay.address(0)).await;
    let mut third = RawClient::connect(relay.address(0)).await;
    let reply = third.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().starts_with("4.7.0"));
    drop(_first);
    // The slot is released when a connection ends.
    let mut again = None;
    for _ in 0..50 {
        let mut client = RawClient::connect(relay.address(0)).await;
        if client.reply().await.code == 220 {
            again = Some(client);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some());
    relay.stop().await;
}

#[tokio::test]
async fn bare_lf_content_is_stored_with_crlf() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    client.expect("MAIL FROM:<scanner@contoso.com>", 250).await;
    client.expect("RCPT TO:<a@x.example>", 250).await;
    client.expect("DATA", 354).await;
    client
        .send_raw(b"From: scanner@contoso.com\nSubject: unix\nDate: x\nMessage-ID: <m@x>\n\nline one\nline two\r\n.\r\n")
        .await;
    assert_eq!(client.reply().await.code, 250);
    let bodies = relay.queued_bodies();
    assert_eq!(
        without_trace(&bodies[0]),
        b"From: scanner@contoso.com\r\nSubject: unix\r\nDate: x\r\nMessage-ID: <m@x>\r\n\r\nline one\r\nline two\r\n"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_flood_of_auth_attempts_does_not_stall_other_sessions() {
    let relay = TestRelay::start(&untrusted(
        "allow_auth_without_tls = true\n[limits]\nauth_penalty_max = \"0s\"",
    ))
    .await;
    let address = relay.address(0);
    let flood: Vec<_> = (0..40u8)
        .map(|n| {
            tokio::spawn(async move {
                let mut client =
                    RawClient::connect_from(std::net::IpAddr::from([127, 0, 2, n + 1]), address)
                        .await;
                client.reply().await;
                client.expect("EHLO bot", 250).await;
                let line = format!(
                    "AUTH PLAIN {}",
                    base64::engine::general_purpose::STANDARD.encode(b"\0printer\0wrong")
                );
                for _ in 0..2 {
                    client.command(&line).await;
                }
            })
        })
        .collect();
    // While argon2 works through the flood, another session is served.
    let mut other = RawClient::connect_greeted(address).await;
    for _ in 0..5 {
        let reply =
            tokio::time::timeout(std::time::Duration::from_secs(5), other.command("NOOP")).await;
        assert_eq!(
            reply.expect("NOOP answered during the AUTH flood").code,
            250
        );
    }
    for task in flood {
        task.await.unwrap();
    }
    relay.stop().await;
}

#[tokio::test]
async fn five_hundred_idle_connections_do_not_keep_a_new_client_waiting() {
    let relay = TestRelay::start(&trusted_loopback("[limits]\nmax_connections = 600")).await;
    let address = relay.address(0);
    let mut idle = Vec::new();
    // 500 idle clients, 20 per address (the per-address limit).
    for n in 0..500u32 {
        let from = std::net::IpAddr::from([127, 0, 3, u8::try_from(n / 20 + 1).unwrap()]);
        let mut client = RawClient::connect_from(from, address).await;
        assert_eq!(client.reply().await.code, 220, "idle client {n}");
        idle.push(client);
    }
    let served = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut client = RawClient::connect_greeted(address).await;
        client.expect("EHLO printer", 250).await;
        client
            .send_message(
                "scanner@contoso.com",
                &["a@x.example"],
                b"Subject: still served\r\n\r\nx\r\n",
            )
            .await
            .code
    })
    .await;
    assert_eq!(
        served.expect("a new client is served while 500 sit idle"),
        250
    );
    drop(idle);
    relay.stop().await;
}

#[tokio::test]
async fn nul_bytes_and_random_binary_get_errors_and_never_hurt_the_relay() {
    let relay = TestRelay::start(&trusted_loopback("")).await;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..10 {
        let mut client = RawClient::connect_greeted(relay.address(0)).await;
        let mut garbage = Vec::with_capacity(4096);
        for _ in 0..4096 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            garbage.push((seed & 0xff) as u8);
        }
        garbage.extend_from_slice(b"\0\0\0NOOP\0\r\n\r\n");
        client.send_raw(&garbage).await;
        // One reply per line: every one an error, until the relay closes after too many.
        let lines = garbage.iter().filter(|&&b| b == b'\n').count();
        for _ in 0..lines {
            let reply = client.reply().await;
            if reply.code == 0 || reply.code == 421 {
                break;
            }
            assert!(reply.code >= 500, "round {round}: {reply:?}");
        }
    }
    // The relay still works.
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    let reply = client
        .send_message(
            "scanner@contoso.com",
            &["a@x.example"],
            b"Subject: after garbage\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    relay.stop().await;
}
