//! The delivery engine against the Exchange emulator's fault injection, part one: sessions
//! and limits (the 3-session cap, reloads, idle sessions, pacing, the daily budget, recipient
//! splitting), tokens, and an account that stays broken. Outcomes per message are in
//! `delivery_outcomes.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::delivery::{WAIT, first_attempt, message, send, send_all, send_one, subject_of};
use common::smtp_client::RawClient;
use common::{Chain, PLAIN_TRUSTED, eventually, without_trace};
use smtp_oauth_relay::testkit::{ExchangeFault, TestkitOptions};

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
    send_all(chain.relay.address(0), "reload", 12).await;
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
    send_one(chain.relay.address(0), "first").await;
    exchange.wait_for_messages(1, WAIT).await.unwrap();
    // Exchange says 421 4.4.1 and closes the idle session; the relay still holds it.
    assert!(eventually(WAIT, || exchange.current_sessions(chain.kit.mailbox()) == 0).await);
    send_one(chain.relay.address(0), "second").await;
    exchange.wait_for_messages(2, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    assert_eq!(exchange.connection_count(), 2);
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
    send_all(chain.relay.address(0), "outage", 9).await;
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
    send_all(chain.relay.address(0), "backlog", 3).await;
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
async fn a_535_5_7_3_that_persists_is_diagnosed_from_the_token_in_the_log() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "retry_schedule = [\"1h\"]",
        "",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    // The token is right, but the mailbox was never granted to the app.
    chain
        .kit
        .directory
        .remove_mailbox_permission(chain.kit.mailbox(), chain.kit.client_id())
        .unwrap();
    send_one(chain.relay.address(0), "not-granted").await;
    let last = first_attempt(&chain.relay).await;
    assert!(last.reply.starts_with("535 5.7.3"), "{last:?}");
    assert!(
        last.reply.contains(&format!(
            "Add-MailboxPermission -Identity {} -User",
            chain.kit.mailbox()
        )) && last.reply.contains(&format!(
            "New-ServicePrincipal -AppId {}",
            chain.kit.client_id()
        )),
        "the diagnosis names the steps with this app's ids: {last:?}"
    );
    assert_eq!(last.class, "configuration");
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_432_from_a_shared_mailbox_makes_the_relay_use_fewer_sessions() {
    // Another client holds one of the mailbox's sessions: Exchange allows this relay only 2.
    let mut options = TestkitOptions::default();
    options.exchange.max_concurrent_sessions_per_mailbox = 2;
    let chain = Chain::start(options, |_, _| PLAIN_TRUSTED.into()).await;
    let exchange = &chain.kit.exchange;
    exchange
        .set_fault(ExchangeFault::StallAfterDot(Duration::from_millis(300)))
        .await
        .unwrap();
    let address = chain.relay.address(0);
    let clients: Vec<_> = (0..12)
        .map(|n| {
            tokio::spawn(async move {
                send(
                    address,
                    "relay@contoso.com",
                    &["a@fabrikam.example"],
                    &format!("shared-{n}"),
                )
                .await
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), 250);
    }
    exchange.wait_for_messages(12, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    // One refusal teaches the relay; it does not keep knocking at every retry step (a second
    // one can race with the session being closed for the reduction).
    assert!(
        exchange.throttled_count() <= 2,
        "{} refusals with 432",
        exchange.throttled_count()
    );
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
    send_all(chain.relay.address(0), "paced", 6).await;
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
    send_one(chain.relay.address(0), "before-expiry").await;
    chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_one(chain.relay.address(0), "after-expiry").await;
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
    send_one(chain.relay.address(0), "consent").await;
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
async fn workers_sending_at_once_never_pass_the_daily_recipient_budget_together() {
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "retry_schedule = [\"1h\"]",
        "max_recipients_per_day = 3\nmax_messages_per_minute = 0",
        |_, _| PLAIN_TRUSTED.into(),
    )
    .await;
    let address = chain.relay.address(0);
    for (to, subject) in [
        ("a@fabrikam.example", "first"),
        ("b@fabrikam.example", "second"),
    ] {
        assert_eq!(
            send(address, "relay@contoso.com", &[to], subject).await,
            250
        );
    }
    chain.kit.exchange.wait_for_messages(2, WAIT).await.unwrap();
    // One place left. Exchange now holds each final reply for two seconds, so the three
    // workers each take a message while none of the others' has been answered yet.
    chain
        .kit
        .exchange
        .set_fault(ExchangeFault::StallAfterDot(Duration::from_secs(2)))
        .await
        .unwrap();
    let from = "relay@contoso.com";
    let codes = tokio::join!(
        send(address, from, &["c@fabrikam.example"], "race-c"),
        send(address, from, &["d@fabrikam.example"], "race-d"),
        send(address, from, &["e@fabrikam.example"], "race-e"),
    );
    assert_eq!(codes, (250, 250, 250));
    let held_back = || {
        chain
            .relay
            .queued_envelopes()
            .iter()
            .filter(|e| e.last_attempt.as_ref().is_some_and(|a| a.stage == "budget"))
            .count()
    };
    assert!(
        eventually(WAIT, || held_back() == 2).await,
        "two of the three wait for the window: {:?}",
        chain.relay.queued_envelopes()
    );
    chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        chain.kit.exchange.message_count(),
        3,
        "the budget of 3 recipients was passed"
    );
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
