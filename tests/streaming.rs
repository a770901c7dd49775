//! Large messages go to Exchange straight from their spool file. If that file turns out
//! damaged while it is being sent, the connection is broken off before the final dot: the
//! server never gets a half message, and the relay treats it as a plain transient failure
//! (nothing was delivered, so no "duplicate possible").

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{PLAIN_TRUSTED, chain_toml, eventually};
use smtp_oauth_relay::config::Config;
use smtp_oauth_relay::metrics::Metrics;
use smtp_oauth_relay::oauth::token::TokenProvider;
use smtp_oauth_relay::spool::{Spool, SpoolError};
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};
use smtp_oauth_relay::transport::smtp::{SmtpFailureKind, SmtpTransport};
use smtp_oauth_relay::vocab::envelope::{ClientInfo, Envelope};
use smtp_oauth_relay::vocab::verdict::{Class, Stage};

/// A 3 MiB message: well over the in-memory limit, so it is streamed from its file.
fn large_message() -> Vec<u8> {
    let mut body =
        b"From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: large\r\n\r\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\r\n";
    while body.len() < 3 * 1024 * 1024 {
        body.extend_from_slice(line);
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_file_damaged_while_streaming_never_reaches_exchange_as_a_message() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&files.path().join("ca.pem")).unwrap();
    let toml = chain_toml(&kit, &ca, "", "", PLAIN_TRUSTED)
        .replace("{state}", &state.path().display().to_string());
    let config = Config::from_toml(&toml, files.path()).unwrap();
    let account = &config.accounts[0];

    let (spool, _) = Spool::open(state.path()).unwrap();
    let body = large_message();
    let mut entries = Vec::new();
    for _ in 0..2 {
        let mut writer = spool.create().await.unwrap();
        writer.write(&body).await.unwrap();
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
        entries.push(writer.commit(envelope).await.unwrap());
    }

    let tokens = TokenProvider::new(&account.client_app(), Arc::new(Metrics::new())).unwrap();
    let token = tokens.token().await.unwrap();
    let upstream = SmtpTransport::new(account, &config.relay.hostname).unwrap();

    // The first entry is loaded (and verified), then damaged before it is sent: the kind of
    // change only a failing disk or another program makes.
    let (envelope, content) = spool.load_entry(&entries[0].id).await.unwrap();
    assert!(content.is_streamed());
    let path = state
        .path()
        .join(format!("spool/queue/{}.msg", envelope.id));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2 * 1024 * 1024] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let mut session = upstream.open(&token).await.unwrap();
    let refusal = session
        .send(&envelope, &envelope.recipients, &content)
        .await
        .expect_err("a damaged file is not sent");
    assert!(
        matches!(refusal.kind, SmtpFailureKind::Spool(_)),
        "{refusal:?}"
    );
    assert_eq!(refusal.stage, Stage::Data);
    let verdict = refusal.verdict();
    assert_eq!(verdict.class, Class::Transient);
    assert!(!verdict.duplicate_possible);
    drop(session);
    // Exchange saw the connection drop before the end of data and kept nothing.
    assert!(
        eventually(Duration::from_secs(10), || kit
            .exchange
            .current_sessions(account.mailbox.as_str())
            == 0)
        .await
    );
    assert_eq!(kit.exchange.message_count(), 0);
    // The next attempt finds the damage when it loads the entry.
    assert!(matches!(
        spool.load_entry(&envelope.id).await,
        Err(SpoolError::Corrupt { .. })
    ));

    // An intact entry of the same size goes through a new session byte for byte.
    let (envelope, content) = spool.load_entry(&entries[1].id).await.unwrap();
    let mut session = upstream.open(&token).await.unwrap();
    let result = session
        .send(&envelope, &envelope.recipients, &content)
        .await
        .unwrap();
    assert!(result.reply.is_some(), "{result:?}");
    session.quit().await;
    let delivered = kit
        .exchange
        .wait_for_messages(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].body(), body.as_slice());
}
