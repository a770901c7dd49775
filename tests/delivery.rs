//! The delivery engine against the Exchange emulator's fault injection: limits, retries,
//! classification, DSNs, partial recipients, uncertain outcomes, restarts, expiry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::smtp_client::RawClient;
use common::{Chain, PLAIN_TRUSTED, eventually, without_trace};
use smtp_oauth_relay::testkit::{ExchangeFault, TestkitOptions};

const WAIT: Duration = Duration::from_secs(30);

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: a@fabrikam.example\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@contoso.com>\r\n\r\nbody of {subject}\r\n"
    )
}

async fn send(address: std::net::SocketAddr, from: &str, to: &[&str], subject: &str) -> u16 {
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(from, to, message(from, subject).as_bytes())
        .await;
    client.expect("QUIT", 221).await;
    reply.code
}

fn subject_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test]
async fn thirty_clients_at_once_never_make_exchange_see_a_fourth_session() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    let address = chain.relay.address(0);
    // Thirty devices, each from its own address.
    let clients: Vec<_> = (0..30u8)
        .map(|n| {
            tokio::spawn(async move {
                let from = std::net::IpAddr::from([127, 0, 1, n + 1]);
                let mut client = RawClient::connect_from(from, address).await;
                assert_eq!(client.reply().await.code, 220);
                client.expect("EHLO device", 250).await;
                let content = message("relay@contoso.com", &format!("burst-{n}"));
                client
                    .send_message(
                        "relay@contoso.com",
                        &["a@fabrikam.example"],
                        content.as_bytes(),
                    )
                    .await
                    .code
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), 250);
    }
    chain
        .kit
        .exchange
        .wait_for_messages(30, WAIT)
        .await
        .unwrap();
    assert!(
        chain
            .kit
            .exchange
            .max_concurrent_sessions("relay@contoso.com")
            <= 3
    );
    assert_eq!(chain.kit.exchange.throttled_count(), 0, "never a 432 4.3.2");
    assert_eq!(chain.kit.exchange.replies_with_code(432), 0);
    chain.relay.stop().await;
}

#[tokio::test]
async fn reloads_in_quick_succession_never_make_exchange_see_a_fourth_session() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    let exchange = &chain.kit.exchange;
    let mailbox = chain.kit.mailbox().to_string();
    // Every final dot is answered only after a while, so sessions stay busy across reloads.
    exchange
        .set_fault(ExchangeFault::StallAfterDot(Duration::from_millis(1500)))
        .await
        .unwrap();
    for n in 0..12 {
        assert_eq!(
            send(
                chain.relay.address(0),
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &format!("reload-{n}")
            )
            .await,
            250
        );
    }
    assert!(eventually(WAIT, || exchange.current_sessions(&mailbox) == 3).await);
    for _ in 0..3 {
        chain.relay.reload(&chain.toml).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exchange
        .wait_for_messages(12, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        exchange.max_concurrent_sessions(&mailbox) <= 3,
        "peak {} sessions",
        exchange.max_concurrent_sessions(&mailbox)
    );
    assert_eq!(exchange.throttled_count(), 0, "Exchange never answered 432");
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_session_exchange_closed_while_idle_costs_no_retry_step() {
    let mut options = TestkitOptions::default();
    options.exchange.idle_timeout = Duration::from_millis(500);
    // A deferral would wait an hour: the second message must go out on a new session at once.
    // One session per account, so the second message meets the first one's idle session.
    let chain = Chain::start_with(
        options,
        "retry_schedule = [\"1h\"]",
        "max_connections = 1",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    let exchange = &chain.kit.exchange;
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "first"
        )
        .await,
        250
    );
    exchange.wait_for_messages(1, WAIT).await.unwrap();
    // Exchange says 421 4.4.1 and closes the idle session; the relay still holds it.
    assert!(eventually(WAIT, || exchange.current_sessions(chain.kit.mailbox()) == 0).await);
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "second"
        )
        .await,
        250
    );
    exchange.wait_for_messages(2, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    assert_eq!(exchange.connection_count(), 2);
    chain.relay.stop().await;
}

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
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "rcpt-421"
        )
        .await,
        250
    );
    assert!(
        eventually(WAIT, || chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.attempts == 1))
        .await
    );
    let last = chain.relay.queued_envelopes()[0]
        .last_attempt
        .clone()
        .unwrap();
    assert_eq!(last.stage, "rcpt", "{last:?}");
    assert!(last.reply.starts_with("421 4.3.2"), "{last:?}");
    assert_eq!(last.class, "transient", "{last:?}");
    assert!(chain.relay.failed_envelopes().is_empty(), "never a bounce");
    chain.relay.stop().await;
}

#[tokio::test]
async fn an_account_that_stays_broken_costs_one_attempt_per_retry_step() {
    let chain = Chain::start(TestkitOptions::default(), |_, _| PLAIN_TRUSTED.into()).await;
    let exchange = &chain.kit.exchange;
    exchange
        .set_fault(ExchangeFault::AuthDisabled)
        .await
        .unwrap();
    for n in 0..9 {
        assert_eq!(
            send(
                chain.relay.address(0),
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &format!("outage-{n}")
            )
            .await,
            250
        );
    }
    // Let the first failures pause the account, then watch four one-second retry steps.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = exchange.auth_attempts().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = exchange.auth_attempts().len() - before;
    assert!(
        during <= 6,
        "{during} AUTH attempts in 4 s of one-second retry steps: one worker probes, the others wait"
    );
    exchange.clear_faults().await.unwrap();
    exchange.wait_for_messages(9, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_reload_that_fixes_the_secret_releases_the_backlog_at_once() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "retry_schedule = [\"1h\"]",
        "client_secret = \"Xyz8Q~the-wrong-secret\"",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    for n in 0..3 {
        assert_eq!(
            send(
                chain.relay.address(0),
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &format!("backlog-{n}")
            )
            .await,
            250
        );
    }
    assert!(
        eventually(WAIT, || chain
            .relay
            .queued_envelopes()
            .iter()
            .any(|e| e.attempts >= 1))
        .await
    );
    assert_eq!(chain.kit.exchange.message_count(), 0);
    // The admin pastes the right secret and reloads: no waiting for the hour-long retry.
    let fixed = chain
        .toml
        .replace("Xyz8Q~the-wrong-secret", chain.kit.client_secret());
    chain.relay.reload(&fixed).await.unwrap();
    chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    chain.relay.stop().await;
}

#[tokio::test]
async fn pacing_holds_the_per_minute_limit() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "",
        "max_messages_per_minute = 3",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    for n in 0..6 {
        assert_eq!(
            send(
                chain.relay.address(0),
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &format!("paced-{n}")
            )
            .await,
            250
        );
    }
    chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    // The other three must wait for the minute to pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(chain.kit.exchange.message_count(), 3);
    assert!(
        chain
            .kit
            .exchange
            .max_accepted_in_window("relay@contoso.com", Duration::from_secs(60))
            <= 3
    );
    assert_eq!(chain.relay.relay.queue_depth(), 3);
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_token_that_expires_between_messages_is_renewed() {
    let options = TestkitOptions {
        token_lifetime: Duration::from_secs(2),
        ..TestkitOptions::default()
    };
    let chain = Chain::start_with(
        options,
        "connection_idle_timeout = \"500ms\"",
        "",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "before-expiry"
        )
        .await,
        250
    );
    chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "after-expiry"
        )
        .await,
        250
    );
    chain.kit.exchange.wait_for_messages(2, WAIT).await.unwrap();
    assert_eq!(
        chain.kit.entra.token_requests(),
        2,
        "a fresh token for the second session"
    );
    assert!(
        chain
            .kit
            .exchange
            .auth_attempts()
            .iter()
            .all(|a| a.result.is_ok()),
        "no expired token was ever offered"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_535_5_7_3_on_a_cached_token_is_followed_by_one_refresh_then_success() {
    // Five seconds between attempts: long enough to look at the first one in peace.
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "retry_schedule = [\"5s\"]",
        "",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    let client_id = chain.kit.client_id().to_string();
    // Admin consent is missing: tokens come without SMTP.SendAsApp and Exchange says 535 5.7.3.
    chain
        .kit
        .directory
        .revoke_admin_consent(&client_id)
        .unwrap();
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "consent"
        )
        .await,
        250
    );
    assert!(
        eventually(WAIT, || chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.attempts == 1))
        .await
    );
    let envelopes = chain.relay.queued_envelopes();
    let last = envelopes[0].last_attempt.clone().unwrap();
    assert_eq!(last.class, "configuration");
    assert!(last.reply.contains("5.7.3"), "{last:?}");
    assert_eq!(
        chain.kit.entra.token_requests(),
        2,
        "one refresh, then it stops: no loop"
    );
    // The admin grants consent; the cached token still lacks the role, the refreshed one has it.
    chain
        .kit
        .directory
        .grant_exchange_role(&client_id, "SMTP.SendAsApp")
        .unwrap();
    chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    let results: Vec<bool> = chain
        .kit
        .exchange
        .auth_attempts()
        .iter()
        .map(|a| a.result.is_ok())
        .collect();
    assert_eq!(results.last(), Some(&true));
    assert!(
        results.iter().filter(|ok| !**ok).count() >= 3,
        "{results:?}"
    );
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
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "uncertain"
        )
        .await,
        250
    );
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
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "lost-dots"
        )
        .await,
        250
    );
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
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "restart"
        )
        .await,
        250
    );
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
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example"],
            "too-old"
        )
        .await,
        250
    );
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
async fn envelopes_over_the_per_message_recipient_limit_are_split() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "",
        "max_recipients_per_message = 2",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    let to = [
        "r1@fabrikam.example",
        "r2@fabrikam.example",
        "r3@fabrikam.example",
        "r4@fabrikam.example",
        "r5@fabrikam.example",
    ];
    assert_eq!(
        send(chain.relay.address(0), "relay@contoso.com", &to, "split").await,
        250
    );
    let delivered = chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    let mut recipients: Vec<String> = delivered
        .iter()
        .flat_map(|m| m.recipients.clone())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        to.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    assert!(delivered.iter().all(|m| m.recipients.len() <= 2));
    for message in &delivered {
        assert_eq!(subject_of(without_trace(message.body())), "split");
    }
    chain.relay.stop().await;
}

#[tokio::test]
async fn the_daily_recipient_budget_defers_instead_of_hitting_the_quota() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "",
        "max_recipients_per_day = 3",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["a@fabrikam.example", "b@fabrikam.example"],
            "within"
        )
        .await,
        250
    );
    chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    assert_eq!(
        send(
            chain.relay.address(0),
            "relay@contoso.com",
            &["c@fabrikam.example", "d@fabrikam.example"],
            "over"
        )
        .await,
        250
    );
    assert!(
        eventually(WAIT, || chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.attempts == 1))
        .await
    );
    let waiting = &chain.relay.queued_envelopes()[0];
    let last = waiting.last_attempt.as_ref().unwrap();
    assert_eq!(last.stage, "budget");
    assert!(
        waiting.next_attempt > waiting.received_at + 23 * 3600,
        "waits for the window to slide"
    );
    assert_eq!(chain.kit.exchange.message_count(), 1);
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

#[tokio::test]
async fn a_certificate_credential_is_accepted_by_the_token_endpoint() {
    for algorithm in ["ps256", "rs256"] {
        let kit_options = TestkitOptions::default();
        let cert_dir = tempfile::tempdir().unwrap();
        let cert_path = cert_dir.path().join("app.pem");
        let path_for_config = cert_path.clone();
        let chain = Chain::start_with(
            kit_options,
            "",
            &format!(
                "-client_secret\nclient_certificate = \"{}\"\nclient_assertion_algorithm = \"{algorithm}\"",
                path_for_config.display()
            ),
            |kit, _| {
                let certificate = kit.add_client_certificate(Duration::from_secs(365 * 86_400)).unwrap();
                certificate.write_combined_pem(&cert_path).unwrap();
                PLAIN_TRUSTED.into()
            },
        )
        .await;
        assert_eq!(
            send(
                chain.relay.address(0),
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &format!("cert-{algorithm}")
            )
            .await,
            250
        );
        chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
        let requests = chain.kit.entra.stats().recent;
        let last = requests.back().unwrap();
        assert_eq!(
            format!("{:?}", last.credential),
            "Some(Certificate)",
            "{algorithm}: {last:?}"
        );
        chain.relay.stop().await;
    }
}
