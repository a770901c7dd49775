//! The Microsoft Graph transport (issue 13) end to end: a relay whose account has
//! `transport = "graph"`, in front of the testkit's Entra and Graph emulators, real sockets.
//! A message submitted over SMTP arrives through `sendMail` with its bytes intact; the
//! envelope, not the headers, decides who receives it (an added hidden `Bcc:`, or a draft
//! whose recipients the relay sets); without `Mail.ReadWrite` only the draft-route messages
//! wait, with the fix; `Retry-After` pauses the whole account; a refused token is renewed
//! once; `ErrorAccessDenied` and `MailboxNotEnabledForRESTAPI` are configuration failures
//! with their fix, `ErrorSendAsDenied` a permanent one; a lost answer is an uncertain outcome;
//! never a 5th concurrent request; two Graph accounts of one app share one token. Large
//! messages are in `graph_large.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::delivery::{WAIT, message};
use common::graph::{
    delivered_once, graph_account_keys, graph_chain, message_to, sorted, sorted_strings, submit,
};
use common::{PLAIN_TRUSTED, TestRelay, chain_toml, eventually, without_trace};
use smtp_oauth_relay::testkit::{GraphFault, SendPath};

#[tokio::test]
async fn a_message_arrives_through_send_mail_with_its_bytes_intact() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    let content = message_to("intact", "a@fabrikam.example", "\"B\" <b@fabrikam.example>");
    let envelope = ["a@fabrikam.example", "b@fabrikam.example"];
    assert_eq!(
        submit(&chain.relay, "relay@contoso.com", &envelope, &content).await,
        250
    );
    let delivered = delivered_once(&chain.graph, "intact").await;
    assert_eq!(delivered.path, SendPath::MimeSendMail);
    assert_eq!(delivered.mailbox, chain.kit.mailbox());
    assert_eq!(sorted_strings(&delivered.recipients), sorted(&envelope));
    let raw = delivered.raw_mime.expect("MIME form");
    assert!(raw.starts_with(b"Received: "), "the relay's trace first");
    assert_eq!(
        without_trace(&raw),
        content.as_slice(),
        "the bytes the client sent, after the relay's Received: field"
    );
    assert!(eventually(WAIT, || chain.relay.queued_envelopes().is_empty()).await);
    chain.relay.stop().await;
}

#[tokio::test]
async fn an_envelope_recipient_missing_from_the_headers_receives_it_unseen() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    let content = message_to("hidden", "a@fabrikam.example", "");
    let envelope = ["a@fabrikam.example", "Secret.Reader@Fabrikam.example"];
    assert_eq!(
        submit(&chain.relay, "relay@contoso.com", &envelope, &content).await,
        250
    );
    let delivered = delivered_once(&chain.graph, "hidden").await;
    assert_eq!(delivered.path, SendPath::MimeSendMail);
    assert_eq!(
        sorted_strings(&delivered.recipients),
        sorted(&["a@fabrikam.example", "secret.reader@fabrikam.example"])
    );
    assert_eq!(delivered.addresses.bcc, ["secret.reader@fabrikam.example"]);
    let seen = String::from_utf8_lossy(&delivered.seen_by_recipients).to_lowercase();
    assert!(
        !seen.contains("secret.reader"),
        "the other recipients do not see the Bcc recipient:\n{seen}"
    );
    // The added field is the only change: the rest is the spooled message.
    let raw = delivered.raw_mime.expect("MIME form");
    assert!(raw.ends_with(&content), "the client's bytes are kept");
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_header_recipient_outside_the_envelope_does_not_receive_it() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    // The client split its envelope: b (Cc) gets its copy in another transaction.
    let content = message_to("split", "a@fabrikam.example", "b@fabrikam.example");
    let envelope = ["a@fabrikam.example", "d@fabrikam.example"];
    assert_eq!(
        submit(&chain.relay, "relay@contoso.com", &envelope, &content).await,
        250
    );
    let delivered = delivered_once(&chain.graph, "split").await;
    assert_eq!(delivered.path, SendPath::Draft);
    assert_eq!(
        sorted_strings(&delivered.recipients),
        sorted(&envelope),
        "exactly the envelope: b is not sent to again, d is"
    );
    let seen = String::from_utf8_lossy(&delivered.seen_by_recipients).to_lowercase();
    assert!(!seen.contains("d@fabrikam"), "d stays hidden:\n{seen}");
    assert_eq!(
        chain.graph.draft_count(),
        0,
        "the draft was sent, none left"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn without_mail_read_write_only_the_draft_route_waits_and_says_why() {
    let chain = graph_chain("", |kit, graph, _| {
        graph.set_roles(kit.client_id(), &["Mail.Send"]).unwrap();
        String::new()
    })
    .await;
    let needs_draft = message_to("needs-draft", "a@fabrikam.example", "b@fabrikam.example");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &needs_draft
        )
        .await,
        250
    );
    let plain = message_to("plain", "a@fabrikam.example", "");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &plain
        )
        .await,
        250
    );
    // The plain one goes out; the account is not paused for the other.
    let delivered = delivered_once(&chain.graph, "plain").await;
    assert_eq!(delivered.path, SendPath::MimeSendMail);
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.last_attempt.is_some())
    };
    assert!(eventually(WAIT, attempted).await, "no attempt recorded");
    let queued = chain.relay.queued_envelopes();
    assert_eq!(
        queued.len(),
        1,
        "the draft-route message waits in the queue"
    );
    let attempt = queued[0].last_attempt.clone().unwrap();
    assert_eq!(attempt.class, "configuration", "{attempt:?}");
    assert!(attempt.hint.contains("Mail.ReadWrite"), "{attempt:?}");
    assert!(attempt.reply.contains("ErrorAccessDenied"), "{attempt:?}");
    assert!(
        chain.relay.failed_envelopes().is_empty(),
        "deferred, not bounced"
    );
    assert_eq!(chain.graph.delivered().len(), 1);
    chain.relay.stop().await;
}

#[tokio::test]
async fn retry_after_pauses_the_whole_account_then_everything_is_delivered() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    let faults = [
        GraphFault::Throttle {
            retry_after: Duration::from_secs(2),
        },
        GraphFault::Unavailable {
            retry_after: Some(Duration::from_secs(2)),
        },
    ];
    for (round, fault) in faults.into_iter().enumerate() {
        let refused_before = chain
            .graph
            .requests()
            .iter()
            .filter(|r| r.retry_after.is_some())
            .count();
        chain.graph.fail_next(1, fault);
        let first = format!("first-{round}");
        let content = message_to(&first, "a@fabrikam.example", "");
        assert_eq!(
            submit(
                &chain.relay,
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &content
            )
            .await,
            250
        );
        let answered = || {
            chain
                .graph
                .requests()
                .iter()
                .filter(|r| r.retry_after.is_some())
                .count()
                > refused_before
        };
        assert!(
            eventually(WAIT, answered).await,
            "round {round}: no 429/503"
        );
        // Once the relay has taken the answer in (the attempt is recorded), a second
        // message while the account waits must wait too.
        let deferred = || {
            chain
                .relay
                .queued_envelopes()
                .iter()
                .any(|e| e.last_attempt.is_some())
        };
        assert!(
            eventually(WAIT, deferred).await,
            "round {round}: no deferral"
        );
        let second = format!("second-{round}");
        let content = message_to(&second, "b@fabrikam.example", "");
        assert_eq!(
            submit(
                &chain.relay,
                "relay@contoso.com",
                &["b@fabrikam.example"],
                &content
            )
            .await,
            250
        );
        delivered_once(&chain.graph, &first).await;
        delivered_once(&chain.graph, &second).await;
        assert_eq!(
            chain.graph.retry_after_violations(),
            Vec::new(),
            "round {round}: no request before Retry-After had passed"
        );
    }
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_the_message_goes_at_once() {
    // A deferral would wait an hour: only the renewal within the attempt delivers in time.
    let chain = graph_chain("retry_schedule = [\"1h\"]", |_, _, _| String::new()).await;
    chain.graph.fail_next(1, GraphFault::ExpiredToken);
    let content = message_to("renewed", "a@fabrikam.example", "");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    delivered_once(&chain.graph, "renewed").await;
    let statuses: Vec<u16> = chain.graph.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 202]);
    assert_eq!(
        chain.kit.entra.token_requests(),
        2,
        "one token, then one fresh token after the 401"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn access_denied_is_a_configuration_failure_with_its_fix() {
    // RBAC for Applications: the app may only use another mailbox.
    let chain = graph_chain("retry_schedule = [\"1h\"]", |kit, graph, _| {
        graph
            .set_mailbox_scope(kit.client_id(), Some(&["other@contoso.com"]))
            .unwrap();
        String::new()
    })
    .await;
    let content = message_to("denied", "a@fabrikam.example", "");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.last_attempt.is_some())
    };
    assert!(eventually(WAIT, attempted).await, "no attempt recorded");
    let attempt = chain.relay.queued_envelopes()[0]
        .last_attempt
        .clone()
        .unwrap();
    assert_eq!(attempt.class, "configuration", "{attempt:?}");
    assert_eq!(attempt.stage, "auth", "about the account: {attempt:?}");
    assert!(attempt.reply.contains("ErrorAccessDenied"), "{attempt:?}");
    assert!(
        attempt.hint.contains(
            "New-ManagementRoleAssignment -App <client id> -Role \"Application Mail.Send\""
        ),
        "{attempt:?}"
    );
    assert!(attempt.hint.contains("Test-ServicePrincipalAuthorization"));
    assert!(chain.relay.failed_envelopes().is_empty(), "not bounced");
    assert!(chain.graph.delivered().is_empty());
    // A consent change shows only in a new token: fetched once, not again and again.
    assert_eq!(chain.kit.entra.token_requests(), 2);
    chain.relay.stop().await;
}

#[tokio::test]
async fn two_graph_accounts_of_one_app_share_one_token() {
    let chain = graph_chain("", |kit, graph, dir| {
        kit.directory.add_mailbox("invoices@contoso.com");
        let second = kit
            .relay_account_toml("invoices", &dir.join("ca.pem"))
            .replace(
                &format!("mailbox = \"{}\"", kit.mailbox()),
                "mailbox = \"invoices@contoso.com\"",
            );
        format!(
            "{second}{}[[listener]]\naddress = \"127.0.0.1:0\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"*\"]\nallowed_senders = [\"*@contoso.com\"]\n",
            graph_account_keys(graph)
        )
    })
    .await;
    for (from, subject) in [
        ("relay@contoso.com", "from-m365"),
        ("invoices@contoso.com", "from-invoices"),
    ] {
        let code = submit(
            &chain.relay,
            from,
            &["a@fabrikam.example"],
            message(from, subject).as_bytes(),
        )
        .await;
        assert_eq!(code, 250, "{from}");
        let delivered = delivered_once(&chain.graph, subject).await;
        assert_eq!(delivered.mailbox, from, "sent as its own mailbox");
        assert_eq!(delivered.path, SendPath::MimeSendMail);
    }
    assert_eq!(
        chain.kit.entra.requests_for_client(chain.kit.client_id()),
        1,
        "one token request for the app and the Graph scope"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_connection_lost_after_the_request_is_an_uncertain_outcome_retried() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    // Graph read the request, then the connection broke without an answer; this time Graph
    // had not taken the message, so the retry is the only copy.
    chain
        .graph
        .fail_next(1, GraphFault::DropAfterBody { deliver: false });
    let content = message_to("lost-answer", "a@fabrikam.example", "");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.uncertain_attempts == 1)
    };
    assert!(
        eventually(WAIT, attempted).await,
        "the lost answer is counted as an uncertain outcome"
    );
    delivered_once(&chain.graph, "lost-answer").await;
    assert!(chain.relay.failed_envelopes().is_empty());
    chain.relay.stop().await;
}

#[tokio::test]
async fn never_a_fifth_concurrent_request_for_the_mailbox() {
    // Asked for 8, the relay keeps to Graph's 4 per mailbox (the emulator answers a 5th with
    // 429 MailboxConcurrency).
    let chain = graph_chain("", |_, _, _| String::new()).await;
    chain.relay.stop().await;
    let toml = chain_toml(
        &chain.kit,
        &chain.files.path().join("ca.pem"),
        "",
        &format!("{}max_connections = 8\n", graph_account_keys(&chain.graph)),
        PLAIN_TRUSTED,
    );
    let relay = TestRelay::start(&toml).await;
    chain.graph.hold_requests();
    for n in 0..10 {
        let subject = format!("burst-{n}");
        let content = message_to(&subject, "a@fabrikam.example", "");
        assert_eq!(
            submit(
                &relay,
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &content
            )
            .await,
            250
        );
    }
    let mailbox = chain.kit.mailbox().to_string();
    assert!(
        eventually(WAIT, || chain.graph.in_flight(&mailbox) == 4).await,
        "four requests held at once"
    );
    chain.graph.release_requests();
    assert!(
        eventually(WAIT, || chain.graph.delivered().len() == 10).await,
        "all delivered"
    );
    assert_eq!(chain.graph.max_concurrency(&mailbox), 4);
    assert_eq!(
        chain.graph.stats().throttled_429,
        0,
        "never refused for concurrency"
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_sender_the_mailbox_may_not_send_as_is_refused_for_good_with_its_fix() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    let content =
        "From: ceo@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: send-as\r\n\r\nhi\r\n";
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            content.as_bytes()
        )
        .await,
        250
    );
    assert!(
        eventually(WAIT, || !chain.relay.failed_envelopes().is_empty()).await,
        "ErrorSendAsDenied is permanent: the message fails"
    );
    let failed = chain.relay.failed_envelopes();
    let failure = &failed[0].failures[0];
    assert_eq!(failure.class, "permanent", "{failure:?}");
    assert!(failure.reply.contains("ErrorSendAsDenied"), "{failure:?}");
    assert!(
        failure.reply.contains("(From: ceo@contoso.com)"),
        "the reply names the From: address Graph checked: {failure:?}"
    );
    assert!(
        failure.hint.contains(
            "Add-RecipientPermission -Identity <the From: address in the reply> -Trustee relay@contoso.com"
        ),
        "{failure:?}"
    );
    // Only the bounce to the envelope sender goes out (through Graph too), naming Graph's host.
    let bounced = || {
        chain
            .graph
            .delivered()
            .into_iter()
            .find(|m| m.recipients == ["relay@contoso.com"])
    };
    assert!(eventually(WAIT, || bounced().is_some()).await, "a DSN");
    let dsn = String::from_utf8_lossy(&bounced().unwrap().seen_by_recipients).into_owned();
    assert!(dsn.contains("Remote-MTA: dns; 127.0.0.1"), "{dsn}");
    assert!(
        chain
            .graph
            .delivered()
            .iter()
            .all(|m| !m.recipients.contains(&"a@fabrikam.example".to_string())),
        "the message itself was not delivered"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_mailbox_graph_cannot_use_waits_with_its_fix() {
    let chain = graph_chain("retry_schedule = [\"1h\"]", |kit, _, _| {
        kit.directory
            .set_mailbox_rest_enabled(kit.mailbox(), false)
            .unwrap();
        String::new()
    })
    .await;
    let content = message_to("rest", "a@fabrikam.example", "");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.last_attempt.is_some())
    };
    assert!(eventually(WAIT, attempted).await, "no attempt recorded");
    let attempt = chain.relay.queued_envelopes()[0]
        .last_attempt
        .clone()
        .unwrap();
    assert_eq!(attempt.class, "configuration", "{attempt:?}");
    assert!(
        attempt.reply.contains("MailboxNotEnabledForRESTAPI"),
        "{attempt:?}"
    );
    assert!(
        attempt
            .hint
            .contains("give relay@contoso.com an Exchange Online licence"),
        "{attempt:?}"
    );
    chain.relay.stop().await;
}
