//! Issue 16 over real sockets against the Google emulators (token endpoint and Gmail SMTP):
//! delivery end to end with a service account key (XOAUTH2 with the Google token for the
//! mailbox), one token request per token lifetime and renewal with a shortened lifetime,
//! Gmail's daily limit pausing the account without a bounce, a blocked attachment failing
//! the message, a token refusal keeping mail queued with its decoded fix, and a mixed
//! configuration (one Microsoft and one Google account, routed per sender).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::delivery::{WAIT, message};
use common::smtp_client::RawClient;
use common::{TestRelay, eventually};
use smtp_oauth_relay::testkit::google_bundle::GoogleTestkit;
use smtp_oauth_relay::testkit::{GmailOptions, Testkit, TestkitOptions};

const MAILBOX: &str = "relay@example.com";

/// The Google kit and a relay sending through it as account "workspace".
struct GoogleChain {
    kit: GoogleTestkit,
    relay: TestRelay,
    _files: tempfile::TempDir,
}

/// `[relay]`, `[queue]` (one-second retries plus `queue_extra`), the Google account (plus
/// `account_extra`), one plain listener and 127.0.0.0/8 trusted for *@example.com.
async fn start(options: GmailOptions, queue_extra: &str, account_extra: &str) -> GoogleChain {
    let kit = GoogleTestkit::start(MAILBOX, options).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let key_file = kit.write_key_file(&files.path().join("sa.json")).unwrap();
    let ca_file = files.path().join("ca.pem");
    kit.pki.write_ca_pem(&ca_file).unwrap();
    let retry = if queue_extra.contains("retry_schedule") {
        ""
    } else {
        "retry_schedule = [\"1s\"]\n"
    };
    let toml = format!(
        "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{{state}}\"\n[queue]\n{retry}{queue_extra}\n{}{account_extra}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"workspace\"\nallowed_senders = [\"*@example.com\"]\n",
        kit.relay_account_toml("workspace", &key_file, &ca_file)
    );
    let relay = TestRelay::start(&toml).await;
    GoogleChain {
        kit,
        relay,
        _files: files,
    }
}

/// One message from `from` to `to` through the relay; the reply code to the final dot.
async fn submit(relay: &TestRelay, from: &str, to: &str, content: &str) -> u16 {
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    let reply = client.send_message(from, &[to], content.as_bytes()).await;
    client.expect("QUIT", 221).await;
    reply.code
}

#[tokio::test]
async fn messages_reach_gmail_over_xoauth2_with_one_token_per_lifetime() {
    let chain = start(GmailOptions::default(), "", "").await;
    for subject in ["first", "second", "third"] {
        let code = submit(
            &chain.relay,
            MAILBOX,
            "bob@example.net",
            &message(MAILBOX, subject),
        )
        .await;
        assert_eq!(code, 250);
    }
    let delivered = chain.kit.gmail.wait_for_messages(3, WAIT).await.unwrap();
    for message in &delivered {
        assert_eq!(message.auth_user, MAILBOX);
        assert_eq!(message.envelope_from, MAILBOX);
        assert_eq!(message.recipients, ["bob@example.net"]);
        assert!(String::from_utf8_lossy(&message.data).contains("Received: "));
    }
    // One JWT bearer grant for the (key, subject), verified by the emulator: signature, iss,
    // aud, scope, iat/exp, sub a user, delegation granted.
    let key = &chain.kit.key;
    assert_eq!(
        chain.kit.token.requests_for(&key.private_key_id, MAILBOX),
        1
    );
    assert_eq!(chain.kit.token.tokens_issued(), 1);
    let stats = chain.kit.token.stats();
    let record = stats.recent.back().unwrap();
    assert_eq!(record.issuer.as_deref(), Some(key.client_email.as_str()));
    assert_eq!(record.scope.as_deref(), Some("https://mail.google.com/"));
    assert_eq!(chain.kit.gmail.stats().auth_failures, 0);
    assert!(eventually(WAIT, || chain.relay.queued_envelopes().is_empty()).await);
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_token_is_renewed_before_it_expires() {
    let chain = start(
        GmailOptions::default(),
        "connection_idle_timeout = \"500ms\"",
        "",
    )
    .await;
    chain.kit.token.set_token_lifetime(Duration::from_secs(2));
    let before = submit(
        &chain.relay,
        MAILBOX,
        "bob@example.net",
        &message(MAILBOX, "before"),
    )
    .await;
    assert_eq!(before, 250);
    chain.kit.gmail.wait_for_messages(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = submit(
        &chain.relay,
        MAILBOX,
        "bob@example.net",
        &message(MAILBOX, "after"),
    )
    .await;
    assert_eq!(after, 250);
    chain.kit.gmail.wait_for_messages(2, WAIT).await.unwrap();
    let key = &chain.kit.key;
    assert_eq!(
        chain.kit.token.requests_for(&key.private_key_id, MAILBOX),
        2
    );
    assert_eq!(
        chain.kit.gmail.stats().auth_failures,
        0,
        "no expired token was ever offered to Gmail"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn the_daily_limit_pauses_the_account_and_bounces_nothing() {
    let options = GmailOptions {
        daily_message_limit: 1,
        ..GmailOptions::default()
    };
    let chain = start(options, "retry_schedule = [\"1h\"]", "").await;
    for subject in ["within", "over"] {
        let code = submit(
            &chain.relay,
            MAILBOX,
            "bob@example.net",
            &message(MAILBOX, subject),
        )
        .await;
        assert_eq!(code, 250);
    }
    chain.kit.gmail.wait_for_messages(1, WAIT).await.unwrap();
    let limited = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .and_then(|e| e.last_attempt.clone())
    };
    assert!(eventually(WAIT, || limited().is_some()).await);
    let attempt = limited().unwrap();
    assert_eq!(attempt.class, "transient", "{attempt:?}");
    assert!(attempt.reply.contains("5.4.5"), "{attempt:?}");
    assert!(attempt.hint.contains("wait (up to 24 h)"), "{attempt:?}");
    assert!(chain.kit.gmail.stats().daily_limit_rejections >= 1);
    assert!(chain.relay.failed_envelopes().is_empty(), "nothing failed");
    assert_eq!(chain.relay.queued_envelopes().len(), 1, "the message waits");
    // Nothing was bounced: Gmail received only the first message, no DSN.
    assert_eq!(chain.kit.gmail.messages().len(), 1);
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_blocked_attachment_fails_the_message_with_gmails_reason() {
    let chain = start(GmailOptions::default(), "bounce = \"none\"", "").await;
    let content = format!(
        "From: {MAILBOX}\r\nTo: bob@example.net\r\nSubject: tool\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         see attachment\r\n--b\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"setup.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nTVo=\r\n--b--\r\n"
    );
    assert_eq!(
        submit(&chain.relay, MAILBOX, "bob@example.net", &content).await,
        250
    );
    assert!(eventually(WAIT, || !chain.relay.failed_envelopes().is_empty()).await);
    let failed = chain.relay.failed_envelopes();
    let failure = &failed[0].failures[0];
    let text = format!("{failure:?}");
    assert!(text.contains("552"), "{text}");
    assert!(text.contains("attachment"), "{text}");
    assert!(chain.kit.gmail.messages().is_empty());
    chain.relay.stop().await;
}

#[tokio::test]
async fn the_sender_of_a_blocked_attachment_gets_a_bounce_with_gmails_reason() {
    let chain = start(GmailOptions::default(), "", "").await;
    let content = format!(
        "From: {MAILBOX}\r\nTo: bob@example.net\r\nSubject: tool\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         see attachment\r\n--b\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"setup.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nTVo=\r\n--b--\r\n"
    );
    assert_eq!(
        submit(&chain.relay, MAILBOX, "bob@example.net", &content).await,
        250
    );
    let bounces = chain.kit.gmail.wait_for_messages(1, WAIT).await;
    let bounces =
        bounces.unwrap_or_else(|e| panic!("{e}; failed: {:?}", chain.relay.failed_envelopes()));
    let dsn = String::from_utf8_lossy(&bounces[0].data).into_owned();
    assert_eq!(bounces[0].recipients, [MAILBOX]);
    assert!(dsn.contains("multipart/report"), "{dsn}");
    assert!(dsn.contains("552"), "{dsn}");
    assert!(
        !dsn.contains("setup.exe\""),
        "the blocked attachment is not sent back: {dsn}"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_refused_token_keeps_mail_queued_with_the_delegation_fix() {
    let chain = start(GmailOptions::default(), "retry_schedule = [\"1h\"]", "").await;
    let client_id = chain.kit.key.client_id.clone();
    chain.kit.workspace.revoke_delegation(&client_id);
    let code = submit(
        &chain.relay,
        MAILBOX,
        "bob@example.net",
        &message(MAILBOX, "nodwd"),
    )
    .await;
    assert_eq!(code, 250);
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .and_then(|e| e.last_attempt.clone())
    };
    assert!(eventually(WAIT, || attempted().is_some()).await);
    let attempt = attempted().unwrap();
    assert_eq!(attempt.class, "configuration", "{attempt:?}");
    assert_eq!(attempt.stage, "token", "{attempt:?}");
    assert!(attempt.reply.contains("unauthorized_client"), "{attempt:?}");
    assert!(
        attempt.hint.contains("Domain-wide delegation"),
        "{attempt:?}"
    );
    assert!(
        attempt.hint.contains("https://mail.google.com/"),
        "{attempt:?}"
    );
    assert!(
        !attempt.reply.contains("eyJ"),
        "no assertion in the record: {attempt:?}"
    );
    assert!(chain.kit.gmail.messages().is_empty());
    chain.relay.stop().await;
}

#[tokio::test]
async fn one_microsoft_and_one_google_account_each_get_their_senders_mail() {
    let google = GoogleTestkit::start(MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    let microsoft = Testkit::start(TestkitOptions::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let key_file = google
        .write_key_file(&files.path().join("sa.json"))
        .unwrap();
    let google_ca = files.path().join("google-ca.pem");
    google.pki.write_ca_pem(&google_ca).unwrap();
    let microsoft_ca = microsoft
        .write_ca_pem(&files.path().join("ms-ca.pem"))
        .unwrap();
    let toml = format!(
        "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{{state}}\"\n[queue]\nretry_schedule = [\"1s\"]\n\
         {}{}\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"m365\", \"workspace\"]\n\
         allowed_senders = [\"*@contoso.com\", \"*@example.com\"]\n",
        microsoft.relay_account_toml("m365", &microsoft_ca),
        google.relay_account_toml("workspace", &key_file, &google_ca),
    );
    let relay = TestRelay::start(&toml).await;
    let exchange_sender = microsoft.mailbox().to_owned();
    for (from, subject) in [
        (exchange_sender.as_str(), "to-exchange"),
        (MAILBOX, "to-gmail"),
        (exchange_sender.as_str(), "to-exchange-2"),
    ] {
        assert_eq!(
            submit(&relay, from, "bob@example.net", &message(from, subject)).await,
            250
        );
    }
    let gmail = google.gmail.wait_for_messages(1, WAIT).await.unwrap();
    let exchange = microsoft.exchange.wait_for_messages(2, WAIT).await.unwrap();
    assert_eq!(gmail.len(), 1);
    assert!(String::from_utf8_lossy(&gmail[0].data).contains("Subject: to-gmail"));
    assert_eq!(gmail[0].auth_user, MAILBOX);
    assert_eq!(exchange.len(), 2);
    for message in &exchange {
        assert_eq!(message.auth_mailbox, exchange_sender);
        let data = message.data.clone().unwrap_or_default();
        assert!(String::from_utf8_lossy(&data).contains("Subject: to-exchange"));
    }
    assert_eq!(microsoft.entra.token_requests(), 1);
    assert_eq!(google.token.tokens_issued(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn transient_gmail_replies_are_retried_until_delivered() {
    use smtp_oauth_relay::testkit::GmailFault;
    let chain = start(GmailOptions::default(), "", "").await;
    chain.kit.gmail.fail_next(1, GmailFault::Banner421);
    chain.kit.gmail.fail_next(1, GmailFault::AuthTemporary454);
    chain.kit.gmail.fail_next(1, GmailFault::TempFailAfterData);
    let code = submit(
        &chain.relay,
        MAILBOX,
        "bob@example.net",
        &message(MAILBOX, "busy"),
    )
    .await;
    assert_eq!(code, 250);
    let delivered = chain.kit.gmail.wait_for_messages(1, WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&delivered[0].data).contains("Subject: busy"));
    assert!(chain.kit.gmail.replies_with_code(421) >= 2);
    assert!(chain.kit.gmail.replies_with_code(454) >= 1);
    assert!(chain.relay.failed_envelopes().is_empty());
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_compliance_rule_fails_the_message_with_the_admin_console_fix() {
    use smtp_oauth_relay::testkit::GmailFault;
    let chain = start(GmailOptions::default(), "bounce = \"none\"", "").await;
    chain.kit.gmail.fail_next(1, GmailFault::PolicyAfterData);
    let code = submit(
        &chain.relay,
        MAILBOX,
        "bob@example.net",
        &message(MAILBOX, "rule"),
    )
    .await;
    assert_eq!(code, 250);
    assert!(eventually(WAIT, || !chain.relay.failed_envelopes().is_empty()).await);
    let failure = chain.relay.failed_envelopes()[0].failures[0].clone();
    assert_eq!(failure.class, "permanent", "{failure:?}");
    assert!(failure.reply.contains("5.7.1"), "{failure:?}");
    assert!(failure.hint.contains("Compliance"), "{failure:?}");
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_refused_xoauth2_keeps_mail_queued_until_the_user_is_restored() {
    let chain = start(GmailOptions::default(), "", "").await;
    assert_eq!(
        submit(
            &chain.relay,
            MAILBOX,
            "bob@example.net",
            &message(MAILBOX, "one")
        )
        .await,
        250
    );
    chain.kit.gmail.wait_for_messages(1, WAIT).await.unwrap();
    // Suspended after its token was issued: Gmail answers the JSON challenge and 535, the
    // relay asks for one fresh token (refused too), and the message waits.
    chain
        .kit
        .workspace
        .set_user_suspended(MAILBOX, true)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        submit(
            &chain.relay,
            MAILBOX,
            "bob@example.net",
            &message(MAILBOX, "two")
        )
        .await,
        250
    );
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .and_then(|e| e.last_attempt.clone())
    };
    assert!(eventually(WAIT, || attempted().is_some()).await);
    let attempt = attempted().unwrap();
    assert_eq!(attempt.class, "configuration", "{attempt:?}");
    assert!(chain.relay.failed_envelopes().is_empty());
    chain
        .kit
        .workspace
        .set_user_suspended(MAILBOX, false)
        .unwrap();
    let delivered = chain.kit.gmail.wait_for_messages(2, WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&delivered[1].data).contains("Subject: two"));
    chain.relay.stop().await;
}

#[tokio::test]
async fn the_relay_holds_back_what_exceeds_the_daily_message_budget() {
    let chain = start(
        GmailOptions::default(),
        "retry_schedule = [\"1h\"]",
        "max_messages_per_day = 1\n",
    )
    .await;
    for subject in ["fits", "waits"] {
        let code = submit(
            &chain.relay,
            MAILBOX,
            "bob@example.net",
            &message(MAILBOX, subject),
        )
        .await;
        assert_eq!(code, 250);
    }
    // Back to back, and three workers: the reservation lets exactly one through.
    chain.kit.gmail.wait_for_messages(1, WAIT).await.unwrap();
    let held = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .and_then(|e| e.last_attempt.clone())
    };
    let settled = eventually(WAIT, || held().is_some()).await;
    assert!(
        settled,
        "gmail has {} messages, queue {:?}",
        chain.kit.gmail.messages().len(),
        chain.relay.queued_envelopes()
    );
    let attempt = held().unwrap();
    assert_eq!(attempt.stage, "budget", "{attempt:?}");
    assert!(attempt.reply.contains("1 of 1 messages"), "{attempt:?}");
    assert_eq!(
        chain.kit.gmail.stats().daily_limit_rejections,
        0,
        "never sent to be refused"
    );
    assert_eq!(chain.kit.gmail.messages().len(), 1);
    assert!(chain.relay.failed_envelopes().is_empty());
    chain.relay.stop().await;
}
