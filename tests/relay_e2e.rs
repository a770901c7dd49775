//! End to end, in-process: clients → relay → the testkit's Exchange and Entra emulators.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use base64::Engine;
use common::smtp_client::RawClient;
use common::{Chain, eventually, without_trace};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use smtp_oauth_relay::testkit::{ExchangeFault, TestkitOptions};

const WAIT: Duration = Duration::from_secs(30);

fn listeners_and_clients(
    kit: &smtp_oauth_relay::testkit::Testkit,
    dir: &std::path::Path,
) -> String {
    let tls = Chain::listener_tls_files(kit, dir);
    format!(
        r#"
[[listener]]
address = "127.0.0.1:0"

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
cidr = "127.0.0.2/32"
account = "m365"
allowed_senders = ["*@contoso.com"]
"#
    )
}

fn message(subject: &str) -> String {
    format!(
        "From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
    )
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn delivers_from_a_trusted_network_and_from_users_over_starttls_with_plain_and_login() {
    let chain = Chain::start(TestkitOptions::default(), listeners_and_clients).await;
    let plain = chain.relay.address(0);
    let starttls = chain.relay.address(1);

    // A device on the trusted network, plain SMTP, no AUTH.
    let mut device = RawClient::connect_from("127.0.0.2".parse().unwrap(), plain).await;
    assert_eq!(device.reply().await.code, 220);
    device.expect("EHLO scanner", 250).await;
    let reply = device
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("from-network").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");

    // From an untrusted address, the plain listener refuses to relay.
    let mut stranger = RawClient::connect_greeted(plain).await;
    stranger.expect("EHLO stranger", 250).await;
    stranger.expect("MAIL FROM:<relay@contoso.com>", 530).await;

    // AUTH PLAIN after STARTTLS.
    let mut client = RawClient::connect_greeted(starttls).await;
    let ehlo = client.expect("EHLO app", 250).await;
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"));
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "no AUTH before TLS: {ehlo:?}"
    );
    client.expect("STARTTLS", 220).await;
    let mut client = client.start_tls(chain.kit.pki.client_config()).await;
    let ehlo = client.expect("EHLO app", 250).await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    client
        .expect(
            &format!("AUTH PLAIN {}", b64(b"\0printer\0printer-pw")),
            235,
        )
        .await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("auth-plain").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");

    // AUTH LOGIN with the standard prompts after STARTTLS.
    let mut client = RawClient::connect_greeted(starttls).await;
    client.expect("EHLO app", 250).await;
    client.expect("STARTTLS", 220).await;
    let mut client = client.start_tls(chain.kit.pki.client_config()).await;
    client.expect("EHLO app", 250).await;
    client.expect("AUTH LOGIN", 334).await;
    client.expect(&b64(b"printer"), 334).await;
    client.expect(&b64(b"printer-pw"), 235).await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("auth-login").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");

    // An independent client implementation: lettre with STARTTLS and AUTH PLAIN.
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(chain.kit.ca_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let mut lettre_client = AsyncSmtpConnection::connect_tokio1(
        starttls,
        Some(WAIT),
        &ClientId::Domain("lob-app".into()),
        None,
        None,
    )
    .await
    .unwrap();
    lettre_client
        .starttls(tls, &ClientId::Domain("lob-app".into()))
        .await
        .unwrap();
    lettre_client
        .auth(
            &[Mechanism::Plain],
            &Credentials::new("printer".into(), "printer-pw".into()),
        )
        .await
        .unwrap();
    let envelope = lettre::address::Envelope::new(
        Some("relay@contoso.com".parse().unwrap()),
        vec!["a@fabrikam.example".parse().unwrap()],
    )
    .unwrap();
    lettre_client
        .send(&envelope, message("lettre").as_bytes())
        .await
        .unwrap();

    let delivered = chain.kit.exchange.wait_for_messages(4, WAIT).await.unwrap();
    assert_eq!(delivered.len(), 4);
    for subject in ["from-network", "auth-plain", "auth-login", "lettre"] {
        let found = delivered
            .iter()
            .find(|m| {
                String::from_utf8_lossy(m.body()).contains(&format!("Subject: {subject}\r\n"))
            })
            .unwrap_or_else(|| panic!("{subject} not delivered"));
        assert_eq!(found.auth_mailbox, "relay@contoso.com");
        assert_eq!(found.recipients, vec!["a@fabrikam.example".to_string()]);
        let protocol = if subject == "from-network" {
            "with ESMTP id"
        } else {
            "with ESMTPSA id"
        };
        assert!(
            String::from_utf8_lossy(found.body()).contains(protocol),
            "{subject}"
        );
    }
    chain.relay.stop().await;
}

#[tokio::test]
async fn content_arrives_byte_for_byte_including_a_20_mb_attachment_and_streamed_dot_lines() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| {
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n".into()
    })
    .await;
    let address = chain.relay.address(0);

    let long_line = "L".repeat(998);
    let small = format!(
        "From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: fidelity\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <fidelity@contoso.com>\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nGrüße — ¡8-bit! 你好\r\n{long_line}\r\ntrailing spaces   \r\n"
    );
    let mut random = vec![0u8; 15 * 1024 * 1024];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&random);
    let mut attachment = String::with_capacity(encoded.len() * 78 / 76 + 1024);
    attachment.push_str("From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: attachment\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <big@contoso.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    for line in encoded.as_bytes().chunks(76) {
        attachment.push_str(std::str::from_utf8(line).unwrap());
        attachment.push_str("\r\n");
    }
    attachment.push_str("--b--\r\n");
    assert!(attachment.len() > 20 * 1024 * 1024);
    // Over the in-memory limit, so it is streamed from the spool in chunks: lone dots (which
    // must be dot-stuffed) land on every position relative to the chunk boundaries.
    let mut dots = String::from(
        "From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: dots\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <dots@contoso.com>\r\n\r\n",
    );
    while dots.len() < 2 * 1024 * 1024 {
        dots.push_str(".\r\n");
    }

    for content in [&small, &attachment, &dots] {
        let mut client = RawClient::connect_greeted(address).await;
        client.expect("EHLO app", 250).await;
        let reply = client
            .send_message(
                "relay@contoso.com",
                &["a@fabrikam.example"],
                content.as_bytes(),
            )
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.expect("QUIT", 221).await;
    }
    let delivered = chain
        .kit
        .exchange
        .wait_for_messages(3, Duration::from_secs(120))
        .await
        .unwrap();
    for (content, subject) in [
        (&small, "fidelity"),
        (&attachment, "attachment"),
        (&dots, "dots"),
    ] {
        let arrived = delivered
            .iter()
            .find(|m| {
                String::from_utf8_lossy(&m.body()[..2000.min(m.body().len())])
                    .contains(&format!("Subject: {subject}\r\n"))
            })
            .unwrap();
        let body = without_trace(arrived.body());
        assert_eq!(body.len(), content.len(), "{subject}: length");
        assert!(body == content.as_bytes(), "{subject}: content differs");
    }
    chain.relay.stop().await;
}

#[tokio::test]
async fn an_unreachable_exchange_delays_delivery_and_the_message_goes_out_once_it_is_back() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| {
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n".into()
    })
    .await;
    chain
        .kit
        .exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    let mut client = RawClient::connect_greeted(chain.relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    for n in 0..3 {
        let reply = client
            .send_message(
                "relay@contoso.com",
                &["a@fabrikam.example"],
                message(&format!("outage-{n}")).as_bytes(),
            )
            .await;
        assert_eq!(reply.code, 250);
    }
    // Several retry steps (1 s each) pass while Exchange refuses connections.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(chain.kit.exchange.message_count(), 0);
    assert_eq!(chain.relay.relay.queue_depth(), 3);
    assert_eq!(chain.relay.queued_bodies().len(), 3);

    chain.kit.exchange.clear_faults().await.unwrap();
    let delivered = chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    // Exactly once each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chain.kit.exchange.message_count(), 3);
    let mut subjects: Vec<String> = delivered
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m.body())
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "Subject: outage-0",
            "Subject: outage-1",
            "Subject: outage-2"
        ]
    );
    assert!(chain.relay.queued_bodies().is_empty());
    chain.relay.stop().await;
}

#[tokio::test]
async fn many_messages_share_one_token_and_few_sessions() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| {
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n".into()
    })
    .await;
    let address = chain.relay.address(0);
    let mut senders = Vec::new();
    for client_index in 0..5 {
        senders.push(tokio::spawn(async move {
            let mut client = RawClient::connect_greeted(address).await;
            client.expect("EHLO app", 250).await;
            for n in 0..6 {
                let reply = client
                    .send_message(
                        "relay@contoso.com",
                        &["a@fabrikam.example"],
                        message(&format!("bulk-{client_index}-{n}")).as_bytes(),
                    )
                    .await;
                assert_eq!(reply.code, 250);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    chain
        .kit
        .exchange
        .wait_for_messages(30, WAIT)
        .await
        .unwrap();
    assert_eq!(
        chain.kit.entra.token_requests(),
        1,
        "one token for all messages"
    );
    assert_eq!(chain.relay.relay.token_requests("m365").await, 1);
    let sessions = chain.kit.exchange.stats().auth_successes;
    assert!(
        sessions <= 3,
        "sessions are reused: {sessions} AUTHs for 30 messages"
    );
    assert!(
        chain
            .kit
            .exchange
            .max_concurrent_sessions("relay@contoso.com")
            <= 3
    );
    assert_eq!(chain.kit.exchange.throttled_count(), 0);
    chain.relay.stop().await;
}

#[tokio::test]
async fn senders_outside_the_policy_are_rewritten_to_the_mailbox_with_reply_to_kept() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| {
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.2/32\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\nsender_rewrite = \"when-not-allowed\"\n\
         [[network]]\ncidr = \"127.0.0.3/32\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n"
            .into()
    })
    .await;
    let address = chain.relay.address(0);
    let mut scanner = RawClient::connect_from("127.0.0.2".parse().unwrap(), address).await;
    assert_eq!(scanner.reply().await.code, 220);
    scanner.expect("EHLO scanner", 250).await;
    let reply = scanner.command("MAIL FROM:<scanner@printers.lan>").await;
    assert_eq!(reply.code, 250);
    assert!(
        reply.text().contains("will be sent as <relay@contoso.com>"),
        "{reply:?}"
    );
    scanner.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    scanner.expect("DATA", 354).await;
    scanner
        .send_raw(b"From: \"Scanner 3rd floor\" <scanner@printers.lan>\r\nSubject: scan one\r\n\r\nscan\r\n.\r\n")
        .await;
    assert_eq!(scanner.reply().await.code, 250);
    let reply = scanner
        .send_message(
            "scanner@printers.lan",
            &["a@fabrikam.example"],
            b"From: scanner@printers.lan\r\nReply-To: helpdesk@contoso.com\r\nSubject: scan two\r\n\r\nscan\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    let delivered = chain.kit.exchange.wait_for_messages(2, WAIT).await.unwrap();
    for message in &delivered {
        assert_eq!(message.envelope_from, "relay@contoso.com");
        let text = String::from_utf8_lossy(message.body()).into_owned();
        if text.contains("Subject: scan one") {
            assert!(
                text.contains("\r\nFrom: \"Scanner 3rd floor\" <relay@contoso.com>\r\n"),
                "{text}"
            );
            assert!(
                text.contains("\r\nReply-To: \"Scanner 3rd floor\" <scanner@printers.lan>\r\n"),
                "{text}"
            );
        } else {
            assert!(text.contains("\r\nFrom: <relay@contoso.com>\r\n"), "{text}");
            assert!(
                text.contains("\r\nReply-To: helpdesk@contoso.com\r\n"),
                "{text}"
            );
            assert_eq!(text.matches("Reply-To:").count(), 1, "{text}");
        }
    }

    // Without rewriting, a From: outside the policy is refused while the client is connected.
    let mut app = RawClient::connect_from("127.0.0.3".parse().unwrap(), address).await;
    assert_eq!(app.reply().await.code, 220);
    app.expect("EHLO app", 250).await;
    let reply = app
        .send_message(
            "app@contoso.com",
            &["a@fabrikam.example"],
            b"From: ceo@fabrikam.example\r\nSubject: spoof\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(reply.text().starts_with("5.7.1"), "{reply:?}");
    chain.relay.stop().await;
}

#[tokio::test]
async fn every_smuggling_vector_reaches_exchange_as_exactly_one_message_with_literal_content() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| {
        "[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n".into()
    })
    .await;
    let vectors: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n"];
    for (n, vector) in vectors.iter().enumerate() {
        let mut client = RawClient::connect_greeted(chain.relay.address(0)).await;
        client.expect("EHLO app", 250).await;
        // The smuggled commands are pipelined in the same write as the vector.
        let mut payload = format!(
            "MAIL FROM:<relay@contoso.com>\r\nRCPT TO:<a@fabrikam.example>\r\nDATA\r\nFrom: relay@contoso.com\r\nSubject: vector {n}\r\n\r\nbefore"
        )
        .into_bytes();
        payload.extend_from_slice(vector);
        payload.extend_from_slice(
            b"MAIL FROM:<relay@contoso.com>\r\nRCPT TO:<victim@fabrikam.example>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\nQUIT\r\n",
        );
        client.send_raw(&payload).await;
        let codes = [
            client.reply().await.code,
            client.reply().await.code,
            client.reply().await.code,
            client.reply().await.code,
            client.reply().await.code,
        ];
        assert_eq!(codes, [250, 250, 354, 250, 221], "vector {vector:?}");
    }
    let delivered = chain.kit.exchange.wait_for_messages(5, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        chain.kit.exchange.message_count(),
        5,
        "one upstream message per vector, never two"
    );
    for message in &delivered {
        assert_eq!(
            message.recipients,
            vec!["a@fabrikam.example".to_string()],
            "nobody else got anything"
        );
        let text = String::from_utf8_lossy(message.body()).into_owned();
        assert!(text.contains("MAIL FROM:<relay@contoso.com>\r\nRCPT TO:<victim@fabrikam.example>\r\nDATA\r\nSubject: smuggled"), "{text:?}");
        // The Exchange emulator refuses bare LF (as Exchange does): arriving proves CRLF only.
    }
    chain.relay.stop().await;
}

#[tokio::test]
async fn implicit_tls_listener_and_usernames_that_are_email_addresses() {
    let chain = Chain::start(TestkitOptions::default(), |kit, dir| {
        let tls = Chain::listener_tls_files(kit, dir);
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = \"implicit\"\n{tls}\n\
             [[user]]\nusername = \"scanner@contoso.com\"\npassword = \"Scan-pw-1\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n"
        )
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(chain.relay.address(0))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(chain.kit.pki.client_config());
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS from the first byte");
    let version = tls.get_ref().1.protocol_version().unwrap();
    assert!(matches!(
        version,
        rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
    ));
    let mut client = RawClient::from_stream(Box::new(tls));
    assert_eq!(client.reply().await.code, 220);
    let ehlo = client.expect("EHLO app", 250).await;
    assert!(
        !ehlo.lines.iter().any(|l| l == "STARTTLS"),
        "no STARTTLS inside TLS"
    );
    assert!(ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"));
    client.expect("AUTH LOGIN", 334).await;
    client.expect(&b64(b"scanner@contoso.com"), 334).await;
    client.expect(&b64(b"Scan-pw-1"), 235).await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("implicit").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250);
    let delivered = chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(delivered[0].body()).contains("with ESMTPSA id"));
    chain.relay.stop().await;
}
