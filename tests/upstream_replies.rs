//! The relay's SMTP client against a scripted server that answers what Exchange never should:
//! whatever comes back, the failure is recorded in one readable line with the right stage
//! and class.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{PLAIN_TRUSTED, chain_toml};
use smtp_oauth_relay::config::Config;
use smtp_oauth_relay::metrics::Metrics;
use smtp_oauth_relay::oauth::token::TokenProvider;
use smtp_oauth_relay::spool::Content;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};
use smtp_oauth_relay::transport::smtp::{SmtpFailureKind, SmtpTransport};
use smtp_oauth_relay::vocab::envelope::{ClientInfo, Envelope};
use smtp_oauth_relay::vocab::verdict::{Class, ConnectionFailure, Stage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A plain-text SMTP server that accepts EHLO and AUTH, then answers MAIL with `answer`.
async fn scripted_server(answer: &'static [u8]) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
        for _ in 0..10 {
            let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .unwrap_or(Ok(None))
            else {
                return;
            };
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-scripted\r\n250 AUTH XOAUTH2\r\n"
            } else if upper.starts_with("AUTH") {
                b"235 2.7.0 Authentication successful\r\n"
            } else if upper.starts_with("MAIL") {
                answer
            } else {
                b"250 2.0.0 OK\r\n"
            };
            if write.write_all(reply).await.is_err() {
                return;
            }
        }
    });
    address
}

/// An authenticated session with a scripted server answering MAIL with `answer`, and an
/// envelope for it.
async fn session_with(
    answer: &'static [u8],
) -> (
    smtp_oauth_relay::transport::smtp::SmtpSession,
    Envelope,
    Testkit,
) {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&files.path().join("ca.pem")).unwrap();
    let server = scripted_server(answer).await;
    let toml = chain_toml(
        &kit,
        &ca,
        "",
        &format!("smtp_server = \"{server}\"\nsmtp_tls = \"none\""),
        PLAIN_TRUSTED,
    )
    .replace("{state}", &files.path().display().to_string());
    let config = Config::from_toml(&toml, files.path()).unwrap();
    let account = &config.accounts[0];
    let token = TokenProvider::new(&account.client_app(), Arc::new(Metrics::new()))
        .unwrap()
        .token()
        .await
        .unwrap();
    let upstream = SmtpTransport::new(account, &config.relay.hostname).unwrap();
    let session = upstream.open(&token).await.unwrap();
    let envelope = Envelope::new(
        &account.name,
        Some(account.mailbox.clone()),
        vec![smtp_oauth_relay::vocab::address::Address::parse("a@fabrikam.example").unwrap()],
        ClientInfo {
            peer: "127.0.0.1".into(),
            helo: None,
            principal: "test".into(),
        },
        smtp_oauth_relay::spool::unix_now(),
    );
    (session, envelope, kit)
}

#[tokio::test]
async fn an_answer_that_is_not_smtp_is_named_so_in_one_line() {
    let (mut session, envelope, _kit) =
        session_with(b"hel\x01o this is not smtp\r\nand more\r\n").await;
    let refusal = session
        .send(
            &envelope,
            &envelope.recipients,
            &Content::in_memory(b"Subject: x\r\n\r\nx\r\n".to_vec()),
        )
        .await
        .expect_err("garbage is no acceptance");
    assert_eq!(refusal.stage, Stage::MailFrom);
    let SmtpFailureKind::Connection { failure, detail } = &refusal.kind else {
        panic!("{refusal:?}")
    };
    assert_eq!(*failure, ConnectionFailure::NotSmtp);
    assert!(
        !detail.contains('\n') && !detail.contains('\r') && !detail.contains('\x01'),
        "one printable line: {detail:?}"
    );
    let verdict = refusal.verdict();
    assert_eq!(verdict.class, Class::Transient);
    assert!(verdict.reason.contains("not an SMTP reply"), "{verdict:?}");
}

#[tokio::test]
async fn eight_bit_content_never_goes_to_a_server_without_8bitmime() {
    let (mut session, mut envelope, _kit) = session_with(b"250 2.1.0 Sender OK\r\n").await;
    envelope.eight_bit = true;
    let refusal = session
        .send(
            &envelope,
            &envelope.recipients,
            &Content::in_memory("Subject: Grüße\r\n\r\nx\r\n".as_bytes().to_vec()),
        )
        .await
        .expect_err("refused before MAIL FROM");
    assert!(
        matches!(refusal.kind, SmtpFailureKind::Local(_)),
        "{refusal:?}"
    );
    let verdict = refusal.verdict();
    assert_eq!(verdict.class, Class::Configuration);
    assert!(verdict.fix.contains("smtp_server"), "{verdict:?}");
}
