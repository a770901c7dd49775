//! The SMTP dialogue of the fake Exchange server through a raw client: greeting, EHLO lists,
//! STARTTLS, ordering errors, the envelope commands and long command lines.

use super::raw_smtp::{RawSmtp, authenticated, simple_message};
use super::{STEP, kit};
use crate::testkit::exchange_replies::EHLO_EXTENSIONS_PLAIN;

#[tokio::test]
async fn greeting_and_ehlo_match_exchange_online() {
    let kit = kit().await;
    let host = kit.exchange.hostname().to_owned();
    let (mut client, greeting) = RawSmtp::connect(kit.smtp_addr()).await;
    assert_eq!(greeting.code, 220);
    let text = greeting.last();
    assert!(
        text.starts_with(&format!(
            "220 {host} Microsoft ESMTP MAIL Service ready at "
        )),
        "{text}"
    );
    // RFC 2822 date with a +0000 offset, then the bracketed session id.
    assert!(text.contains(" +0000 ["), "{text}");

    let ehlo = client.cmd("EHLO relay.test").await;
    let mut expected = vec![format!("{host} Hello [127.0.0.1]")];
    expected.extend(EHLO_EXTENSIONS_PLAIN.iter().map(|s| (*s).to_owned()));
    assert_eq!(ehlo.texts(), expected);
    assert!(ehlo.lines[..9].iter().all(|l| l.starts_with("250-")));
    assert!(ehlo.lines[9].starts_with("250 "));

    let helo = client.cmd("HELO relay.test").await;
    assert_eq!(helo.lines, vec![format!("250 {host} Hello [127.0.0.1]")]);

    // AUTH is not offered before TLS.
    let auth = client.cmd("AUTH XOAUTH2 dGVzdA==").await;
    assert_eq!(auth.last(), "504 5.7.4 Unrecognized authentication type");
    let mail = client.cmd("MAIL FROM:<relay@contoso.com>").await;
    assert_eq!(
        mail.last(),
        format!("530 5.7.57 Client not authenticated to send mail. [{host}]")
    );

    client.starttls(kit.pki.client_config()).await;
    let ehlo = client.cmd("EHLO relay.test").await;
    let texts = ehlo.texts();
    assert!(
        texts.contains(&"AUTH LOGIN XOAUTH2".to_owned()),
        "{texts:?}"
    );
    assert!(!texts.contains(&"STARTTLS".to_owned()));
    assert_eq!(
        texts[5], "AUTH LOGIN XOAUTH2",
        "AUTH takes STARTTLS's place"
    );
    assert_eq!(texts.len(), 10);
    assert_eq!(
        client.cmd("QUIT").await.last(),
        "221 2.0.0 Service closing transmission channel"
    );
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn starttls_discards_pipelined_plaintext_and_resets_state() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    assert_eq!(client.cmd("EHLO relay.test").await.code, 250);
    // Injection attempt: a command pipelined after STARTTLS in the same packet.
    client
        .send_raw(b"STARTTLS\r\nMAIL FROM:<attacker@evil.test>\r\n")
        .await;
    let reply = client.read_reply().await;
    assert_eq!(reply.last(), "220 2.0.0 SMTP server ready");
    client.upgrade_tls(kit.pki.client_config()).await;
    // No EHLO yet after TLS: the server must demand it and must not have seen the MAIL.
    let mail = client.cmd("MAIL FROM:<relay@contoso.com>").await;
    assert_eq!(mail.last(), "503 5.5.2 Send hello first");
    assert_eq!(client.cmd("EHLO relay.test").await.code, 250);
    assert_eq!(client.auth_xoauth2(kit.mailbox(), &token).await.code, 235);
    let reply = client
        .send_message(
            kit.mailbox(),
            "someone@fabrikam.com",
            &simple_message(kit.mailbox(), "someone@fabrikam.com", "tls"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(kit.exchange.message_count(), 1);
    assert_eq!(
        kit.exchange.messages()[0].envelope_from,
        "relay@contoso.com",
        "the pipelined plaintext MAIL must have been discarded"
    );
}

#[tokio::test]
async fn envelope_commands_and_errors() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let mut client = authenticated(&kit, &token).await;
    assert_eq!(client.cmd("NOOP").await.last(), "250 2.0.0 OK");
    assert_eq!(
        client.cmd("FROB x").await.last(),
        "500 5.3.3 Unrecognized command 'FROB'"
    );
    assert_eq!(client.cmd("RCPT TO:<a@b.c>").await.code, 503);
    assert_eq!(client.cmd("DATA").await.code, 503);
    assert_eq!(
        client.cmd("MAIL FROM:relay@contoso.com").await.last(),
        "501 5.5.4 Invalid arguments"
    );
    assert_eq!(
        client
            .cmd("MAIL FROM:<relay@contoso.com> BODY=8BITMIME")
            .await
            .last(),
        "250 2.1.0 Sender OK"
    );
    assert_eq!(client.cmd("MAIL FROM:<relay@contoso.com>").await.code, 503);
    assert_eq!(client.cmd("DATA").await.code, 503, "no recipient yet");
    assert_eq!(
        client.cmd("RCPT TO:<a@fabrikam.com>").await.last(),
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(client.cmd("RSET").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 503);
    assert_eq!(
        client
            .cmd("MAIL FROM:<relay@contoso.com> SIZE=999999999")
            .await
            .last(),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert_eq!(client.cmd("VRFY x").await.code, 252);
    // BDAT is advertised but answered 502 after its chunk is consumed.
    client.send_raw(b"BDAT 5 LAST\r\nHELLO").await;
    assert_eq!(client.read_reply().await.code, 502);
    assert_eq!(client.cmd("NOOP").await.code, 250, "still in sync");
}

#[tokio::test]
async fn recipient_limits_and_rejections() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    kit.exchange.set_max_recipients(2);
    kit.exchange.reject_recipient(
        "ghost@contoso.com",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    );
    let mut client = authenticated(&kit, &token).await;
    assert_eq!(client.cmd("MAIL FROM:<relay@contoso.com>").await.code, 250);
    assert_eq!(
        client.cmd("RCPT TO:<Ghost@contoso.com>").await.last(),
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    );
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<b@fabrikam.com>").await.code, 250);
    assert_eq!(
        client.cmd("RCPT TO:<c@fabrikam.com>").await.last(),
        "452 4.5.3 Too many recipients"
    );
    let reply = client
        .data(simple_message(kit.mailbox(), "a@fabrikam.com", "two").as_bytes())
        .await;
    assert_eq!(reply.code, 250);
    let message = kit.exchange.messages().pop().unwrap();
    assert_eq!(message.recipients, vec!["a@fabrikam.com", "b@fabrikam.com"]);
    assert_eq!(kit.exchange.replies_with_code(452), 1);
}

#[tokio::test]
async fn ten_kilobyte_auth_lines_are_accepted() {
    let kit = kit().await;
    let mut claims = kit
        .directory
        .access_token_claims(
            kit.client_id(),
            crate::testkit::Resource::Exchange,
            std::time::Duration::from_secs(600),
            crate::testkit::CredentialKind::Secret,
            std::time::SystemTime::now(),
        )
        .unwrap();
    claims.aio = Some("A".repeat(9000));
    let token = kit.directory.token_signer().sign(&claims).unwrap();
    assert!(token.len() > 12_000);
    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    client.secure(kit.pki.client_config()).await;
    let reply = tokio::time::timeout(STEP, client.auth_xoauth2(kit.mailbox(), &token))
        .await
        .unwrap();
    assert_eq!(reply.code, 235, "{reply:?}");
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_both_accepted() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(kit.pki.ca_cert_der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
        client.secure(std::sync::Arc::new(config)).await;
        assert_eq!(client.auth_xoauth2(kit.mailbox(), &token).await.code, 235);
    }
}
