//! The delivery engine against the Exchange emulator's fault injection, part two: what
//! happens to each message: refusals and DSNs, partial recipients, uncertain outcomes after
//! the final dot, restarts mid-schedule, expiry, and synchronous acknowledgement.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::delivery::{WAIT, first_attempt, message, send, send_one, subject_of};
use common::smtp_client::RawClient;
use common::{Chain, PLAIN_TRUSTED, eventually, without_trace};
use smtp_oauth_relay::testkit::{ExchangeFault, TestkitOptions};

#[tokio::test]
async fn a_421_at_rcpt_is_recorded_as_exchange_said_it_and_retried() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "retry_schedule = [\"1h\"]",
        "",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    chain.kit.exchange.reject_recipient(
        "a@fabrikam.example",
        "421 4.3.2 Service not available, closing transmission channel",
    );
    send_one(chain.relay.address(0), "rcpt-421").await;
    let last = first_attempt(&chain.relay).await;
    assert_eq!(last.stage, "rcpt", "{last:?}");
    assert!(last.reply.starts_with("421 4.3.2"), "{last:?}");
    assert_eq!(last.class, "transient", "{last:?}");
    assert!(chain.relay.failed_envelopes().is_empty(), "never a bounce");
    chain.relay.stop().await;
}

#[tokio::test]
async fn send_as_denied_fails_at_once_and_a_dsn_reaches_the_sender() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    // The relay allows *@contoso.com, but the mailbox has no SendAs on other@contoso.com.
    assert_eq!(
        send(
            chain.relay.address(0),
            "other@contoso.com",
            &["a@fabrikam.example"],
            "sendas"
        )
        .await,
        250
    );
    // The DSN goes through the same account to the original sender.
    let delivered = chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    let dsn = &delivered[0];
    assert_eq!(dsn.recipients, vec!["other@contoso.com".to_string()]);
    assert_eq!(dsn.envelope_from, "relay@contoso.com");
    let text = String::from_utf8_lossy(dsn.body()).into_owned();
    assert!(
        text.contains("Content-Type: multipart/report; report-type=delivery-status"),
        "{text}"
    );
    assert!(text.contains("Status: 5.2.252"), "{text}");
    assert!(
        text.contains("Subject: Undelivered Mail Returned to Sender: sendas"),
        "{text}"
    );
    assert!(
        text.contains("Add-RecipientPermission"),
        "the fix is in the DSN: {text}"
    );
    // Failed at once: no retry, kept in failed/ with the reason.
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    let failed = chain.relay.failed_envelopes();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].failures[0].reply.contains("5.2.252"));
    assert_eq!(failed[0].failures[0].class, "permanent");
    assert_eq!(failed[0].attempts, 0);
    // The failed message can be exported as it was sent (what `queue export` prints).
    let (envelope, content, stored_in) =
        smtp_oauth_relay::spool::read_stored_entry(chain.relay.state.path(), &failed[0].id)
            .unwrap();
    assert_eq!(stored_in, smtp_oauth_relay::spool::StoredIn::Failed);
    assert_eq!(envelope.failures[0].class, "permanent");
    let mut exported = Vec::new();
    content.write_to(&mut exported).unwrap();
    assert!(
        without_trace(&exported).starts_with(b"From: other@contoso.com\r\n"),
        "{}",
        String::from_utf8_lossy(&exported)
    );
    assert!(exported.ends_with(b"\r\n\r\nbody of sendas\r\n"));
    chain.relay.stop().await;
}

#[tokio::test]
async fn no_bounce_for_a_null_sender() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    chain.kit.exchange.reject_recipient(
        "nobody@fabrikam.example",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    );
    let mut client = RawClient::connect_greeted(chain.relay.address(0)).await;
    client.expect("EHLO postfix.lan", 250).await;
    let reply = client
        .send_message(
            "",
            &["nobody@fabrikam.example"],
            message("relay@contoso.com", "bounce-of-a-bounce").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250);
    assert!(eventually(WAIT, || chain.relay.failed_envelopes().len() == 1).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chain.kit.exchange.message_count(), 0, "no DSN was sent");
    assert_eq!(
        chain.relay.relay.queue_depth(),
        0,
        "no DSN is waiting either"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_partially_rejected_recipient_list() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    let exchange = &chain.kit.exchange;
    exchange.reject_recipient(
        "gone@fabrikam.example",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    );
    exchange.reject_recipient(
        "busy@fabrikam.example",
        "451 4.7.0 Temporary server error. Please try again later. PRX4",
    );
    let to = [
        "a@fabrikam.example",
        "gone@fabrikam.example",
        "busy@fabrikam.example",
        "b@fabrikam.example",
    ];
    assert_eq!(
        send(chain.relay.address(0), "relay@contoso.com", &to, "partial").await,
        250
    );
    // a and b get it; gone fails (and is reported to the sender); busy waits.
    let delivered = exchange.wait_for_messages(2, WAIT).await.unwrap();
    let first = delivered
        .iter()
        .find(|m| subject_of(m.body()) == "partial")
        .unwrap();
    assert_eq!(
        first.recipients,
        vec![
            "a@fabrikam.example".to_string(),
            "b@fabrikam.example".to_string()
        ]
    );
    let dsn = delivered
        .iter()
        .find(|m| m.recipients == vec!["relay@contoso.com".to_string()])
        .unwrap();
    let text = String::from_utf8_lossy(dsn.body()).into_owned();
    assert!(
        text.contains("Final-Recipient: rfc822; gone@fabrikam.example"),
        "{text}"
    );
    assert!(
        !text.contains("Final-Recipient: rfc822; busy@fabrikam.example"),
        "{text}"
    );
    // (The DSN's own entry leaves the queue a moment after Exchange accepted it.)
    assert!(eventually(WAIT, || chain.relay.queued_envelopes().len() == 1).await);
    let queued = chain.relay.queued_envelopes();
    assert_eq!(queued[0].recipients.len(), 1);
    assert_eq!(queued[0].recipients[0].as_str(), "busy@fabrikam.example");
    // busy recovers: it gets the message, and a and b do not get it a second time.
    exchange.clear_recipient_rejections();
    let all = exchange.wait_for_messages(3, WAIT).await.unwrap();
    let partial: Vec<_> = all
        .iter()
        .filter(|m| subject_of(m.body()) == "partial")
        .collect();
    assert_eq!(partial.len(), 2);
    assert_eq!(
        partial[1].recipients,
        vec!["busy@fabrikam.example".to_string()]
    );
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_connection_lost_after_the_dot_is_retried_and_gives_at_most_one_duplicate() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    chain
        .kit
        .exchange
        .fail_next(1, ExchangeFault::DropAfterDot)
        .unwrap();
    send_one(chain.relay.address(0), "uncertain").await;
    chain.kit.exchange.wait_for_messages(2, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        chain.kit.exchange.message_count(),
        2,
        "the stored copy plus exactly one retry"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_connection_lost_after_every_dot_ends_after_three_copies_without_a_bounce() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    chain
        .kit
        .exchange
        .set_fault(ExchangeFault::DropAfterDot)
        .await
        .unwrap();
    send_one(chain.relay.address(0), "lost-dots").await;
    chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    let failed = chain.relay.failed_envelopes();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].uncertain_attempts, 3);
    assert_eq!(failed[0].failures[0].stage, "outcome-unknown");
    assert!(failed[0].failures[0].hint.contains("queue requeue"));
    // The retry schedule is one second: more copies would have arrived by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = chain.kit.exchange.messages();
    assert_eq!(messages.len(), 3, "at most three copies");
    assert!(
        messages
            .iter()
            .all(|m| m.recipients == ["a@fabrikam.example"]),
        "and no bounce to the sender"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_restart_mid_schedule_keeps_attempts_and_the_next_attempt_time() {
    let mut chain = Chain::start_with(
        TestkitOptions::default(),
        "retry_schedule = [\"1h\"]",
        "",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    chain
        .kit
        .exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    send_one(chain.relay.address(0), "restart").await;
    assert!(
        eventually(WAIT, || chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.attempts == 1))
        .await
    );
    let before = chain.relay.queued_envelopes()[0].clone();
    assert!(before.next_attempt >= before.received_at + 3600);
    assert_eq!(before.last_attempt.as_ref().unwrap().stage, "connect");
    chain.kit.exchange.clear_faults().await.unwrap();
    let connections = chain.kit.exchange.connection_count();
    chain.relay = chain.relay.restart(&chain.toml).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = chain.relay.queued_envelopes();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].attempts, 1);
    assert_eq!(after[0].next_attempt, before.next_attempt);
    assert_eq!(
        chain.kit.exchange.connection_count(),
        connections,
        "no attempt before its time"
    );
    assert_eq!(chain.relay.relay.queue_depth(), 1);
    chain.relay.stop().await;
}

#[tokio::test]
async fn max_age_expiry_fails_the_message_and_bounces_it() {
    let chain = Chain::start_with(TestkitOptions::default(), "max_age = \"3s\"", "", |_, _| {
        PLAIN_TRUSTED.into()
    })
    .await;
    chain
        .kit
        .exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    send_one(chain.relay.address(0), "too-old").await;
    assert!(eventually(WAIT, || chain.relay.failed_envelopes().len() == 1).await);
    let failed = &chain.relay.failed_envelopes()[0];
    assert_eq!(failed.failures[0].stage, "expired");
    assert!(
        failed.failures[0].reply.contains("not delivered within 3s"),
        "{:?}",
        failed.failures
    );
    chain.kit.exchange.clear_faults().await.unwrap();
    let delivered = chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    let text = String::from_utf8_lossy(delivered[0].body()).into_owned();
    assert!(text.contains("Status: 5.4.7"), "{text}");
    assert_eq!(
        delivered[0].recipients,
        vec!["relay@contoso.com".to_string()]
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_listener_can_acknowledge_only_once_exchange_has_answered() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| {
        PLAIN_TRUSTED.replace(
            "address = \"127.0.0.1:0\"",
            "address = \"127.0.0.1:0\"\nacknowledge = \"delivered\"\nacknowledge_timeout = \"2s\"",
        )
    })
    .await;
    let address = chain.relay.address(0);
    let exchange = &chain.kit.exchange;
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;

    // Delivered: the client hears it.
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("relay@contoso.com", "sync-ok").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250);
    assert!(reply.text().contains("delivered as"), "{reply:?}");
    assert_eq!(exchange.message_count(), 1);

    // Refused for good: the client gets Exchange's own reply; nothing is kept, no DSN.
    let reply = client
        .send_message(
            "other@contoso.com",
            &["a@fabrikam.example"],
            message("other@contoso.com", "sync-refused").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 554, "{reply:?}");
    assert!(
        reply.text().starts_with("5.2.252 SendAsDenied"),
        "{reply:?}"
    );
    assert!(chain.relay.failed_envelopes().is_empty());
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);

    // Temporary failure: queued, delivered later.
    exchange
        .fail_next(1, ExchangeFault::TempFailAfterData)
        .unwrap();
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("relay@contoso.com", "sync-later").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250);
    assert!(reply.text().contains("queued as"), "{reply:?}");
    exchange.wait_for_messages(2, WAIT).await.unwrap();

    // Exchange slower than acknowledge_timeout: the client is not kept waiting.
    exchange
        .fail_next(1, ExchangeFault::StallAfterDot(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            message("relay@contoso.com", "sync-slow").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250);
    assert!(reply.text().contains("queued as"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(9));
    exchange.wait_for_messages(3, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(exchange.message_count(), 3, "each message exactly once");
    chain.relay.stop().await;
}
