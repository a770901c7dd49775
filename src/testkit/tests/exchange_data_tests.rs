//! DATA on the fake Exchange server: unstuffing, bare LF, size and header limits, the SendAs
//! check after the final dot, and the per-mailbox concurrency limit.

use std::time::Duration;

use super::raw_smtp::{RawSmtp, authenticated, simple_message};
use super::{STEP, kit};

#[tokio::test]
async fn dot_unstuffing_and_exact_bytes() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let mut client = authenticated(&kit, &token).await;
    assert_eq!(client.cmd("MAIL FROM:<relay@contoso.com>").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 250);
    let stuffed = b"From: <relay@contoso.com>\r\nSubject: dots\r\n\r\n..starts with a dot\r\n...\r\nmiddle . dot";
    let reply = client.data(stuffed).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let text = reply.last();
    assert!(text.starts_with("250 2.0.0 OK <"), "{text}");
    assert!(text.ends_with(&format!("> [Hostname={}]", kit.exchange.hostname())));
    let message = kit
        .exchange
        .wait_for_messages(1, STEP)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        message.body(),
        b"From: <relay@contoso.com>\r\nSubject: dots\r\n\r\n.starts with a dot\r\n..\r\nmiddle . dot\r\n"
    );
    assert_eq!(message.size, message.body().len());
    assert_eq!(message.envelope_from, "relay@contoso.com");
    assert_eq!(message.auth_mailbox, "relay@contoso.com");
    assert_eq!(message.client_id, kit.client_id());
    assert_eq!(message.sha256.len(), 64);
    assert_eq!(kit.exchange.acceptance_times(kit.mailbox()).len(), 1);
}

#[tokio::test]
async fn bare_linefeeds_are_rejected_and_do_not_end_data() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let mut client = authenticated(&kit, &token).await;
    assert_eq!(client.cmd("MAIL FROM:<relay@contoso.com>").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 250);
    // "\n.\r\n" must not end DATA (smuggling); the real end comes later.
    let reply = client
        .data(b"Subject: lf\r\n\r\nline one\nsmuggled\n.\r\nMAIL FROM:<x@evil.test>\r\nend")
        .await;
    assert_eq!(
        reply.last(),
        "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds, which cannot be sent via DATA"
    );
    assert_eq!(client.cmd("NOOP").await.code, 250, "still in sync");
    assert_eq!(kit.exchange.message_count(), 0);
}

#[tokio::test]
async fn size_and_header_limits() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    kit.exchange.set_max_message_size(1000);
    let mut client = authenticated(&kit, &token).await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(2000));
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", &big)
        .await;
    assert_eq!(
        reply.last(),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    kit.exchange.set_max_message_size(10 * 1024 * 1024);
    let header = format!(
        "From: <relay@contoso.com>\r\nX-Long: {}\r\n\r\nbody\r\n",
        "v".repeat(40_000)
    );
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", &header)
        .await;
    assert_eq!(
        reply.last(),
        "554 5.6.211 Invalid MIME Content: Single text value size (40000) exceeded allowed maximum (32768) for the 'X-Long' header"
    );
    let ok = client
        .send_message(
            kit.mailbox(),
            "a@fabrikam.com",
            &simple_message(kit.mailbox(), "a@fabrikam.com", "ok"),
        )
        .await;
    assert_eq!(ok.code, 250);
    assert!(
        ok.last().contains("<ok@test>"),
        "the Message-ID is echoed: {ok:?}"
    );
}

#[tokio::test]
async fn send_as_is_checked_after_the_final_dot() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let host = kit.exchange.hostname().to_owned();
    let mut client = authenticated(&kit, &token).await;

    // Foreign envelope sender: MAIL is accepted, the refusal comes after the dot.
    assert_eq!(
        client.cmd("MAIL FROM:<ceo@contoso.com>").await.last(),
        "250 2.1.0 Sender OK"
    );
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 250);
    let reply = client
        .data(simple_message("ceo@contoso.com", "a@fabrikam.com", "as-ceo").as_bytes())
        .await;
    let text = reply.last();
    assert!(
        text.starts_with("554 5.2.252 SendAsDenied; relay@contoso.com not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message."),
        "{text}"
    );
    assert!(text.ends_with(&format!("[Hostname={host}]")), "{text}");

    // Own envelope, foreign From: header: also denied.
    let body = "From: CEO <ceo@contoso.com>\r\nSubject: x\r\n\r\nhi\r\n";
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", body)
        .await;
    assert!(
        reply.last().starts_with("554 5.2.252 SendAsDenied"),
        "{reply:?}"
    );

    // After Add-RecipientPermission, the same message goes through.
    kit.directory
        .grant_send_as(kit.mailbox(), "ceo@contoso.com")
        .unwrap();
    assert_eq!(client.cmd("MAIL FROM:<ceo@contoso.com>").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 250);
    let reply = client.data(body.as_bytes()).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(kit.exchange.message_count(), 1);
}

#[tokio::test]
async fn fourth_concurrent_session_gets_432_at_end_of_data() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(authenticated(&kit, &token).await);
    }
    assert_eq!(kit.exchange.current_sessions(kit.mailbox()), 4);
    let message = simple_message(kit.mailbox(), "a@fabrikam.com", "conc");
    let mut codes = Vec::new();
    for client in &mut sessions {
        codes.push(
            client
                .send_message(kit.mailbox(), "a@fabrikam.com", &message)
                .await,
        );
    }
    let fourth = codes.pop().unwrap();
    assert!(codes.iter().all(|r| r.code == 250), "{codes:?}");
    assert_eq!(
        fourth.last(),
        format!(
            "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information. [Hostname={}]",
            kit.exchange.hostname()
        )
    );
    assert_eq!(kit.exchange.throttled_count(), 1);
    assert_eq!(kit.exchange.max_concurrent_sessions(kit.mailbox()), 4);

    // When an earlier session ends, the fourth may submit.
    let first = sessions.remove(0);
    drop(first);
    let deadline = tokio::time::Instant::now() + STEP;
    while kit.exchange.current_sessions(kit.mailbox()) > 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session slot not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = sessions.last_mut().unwrap();
    let reply = last
        .send_message(kit.mailbox(), "a@fabrikam.com", &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(kit.exchange.message_count(), 4);
    assert_eq!(
        kit.exchange
            .max_accepted_in_window(kit.mailbox(), Duration::from_secs(60)),
        4
    );
}

#[tokio::test]
async fn unauthenticated_sessions_do_not_count() {
    let kit = kit().await;
    let (_idle, _) = RawSmtp::connect(kit.smtp_addr()).await;
    assert_eq!(kit.exchange.current_sessions(kit.mailbox()), 0);
    assert_eq!(kit.exchange.connection_count(), 1);
}
