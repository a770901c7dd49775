//! Run-time faults of the fake Exchange server.

use std::time::{Duration, Instant};

use super::raw_smtp::{RawSmtp, authenticated, simple_message};
use super::{STEP, kit};
use crate::testkit::TestkitError;
use crate::testkit::exchange::{AuthRejection, ExchangeFault};

#[tokio::test]
async fn refuse_connections_really_refuses_then_recovers_on_the_same_port() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let addr = kit.smtp_addr();
    // An established session survives the listener closing.
    let mut survivor = authenticated(&kit, &token).await;

    kit.exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    let error = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    let reply = survivor
        .send_message(
            kit.mailbox(),
            "a@fabrikam.com",
            &simple_message(kit.mailbox(), "a@fabrikam.com", "s"),
        )
        .await;
    assert_eq!(reply.code, 250);

    kit.exchange.clear_faults().await.unwrap();
    assert_eq!(kit.exchange.addr(), addr);
    let (_, greeting) = RawSmtp::connect(addr).await;
    assert_eq!(greeting.code, 220);
    assert!(matches!(
        kit.exchange.fail_next(1, ExchangeFault::RefuseConnections),
        Err(TestkitError::UnsupportedFault(_))
    ));
}

#[tokio::test]
async fn banner_421_for_the_next_connection_only() {
    let kit = kit().await;
    kit.exchange.fail_next(1, ExchangeFault::Banner421).unwrap();
    let (mut client, greeting) = RawSmtp::connect(kit.smtp_addr()).await;
    assert_eq!(
        greeting.last(),
        "421 4.3.2 Service not available, closing transmission channel"
    );
    assert!(client.is_closed().await);
    let (_, greeting) = RawSmtp::connect(kit.smtp_addr()).await;
    assert_eq!(greeting.code, 220);
}

#[tokio::test]
async fn auth_disabled_fault() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    kit.exchange
        .set_fault(ExchangeFault::AuthDisabled)
        .await
        .unwrap();
    let (mut client, _) = RawSmtp::connect(kit.smtp_addr()).await;
    client.secure(kit.pki.client_config()).await;
    let reply = client.auth_xoauth2(kit.mailbox(), &token).await;
    assert!(reply.last().starts_with(
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled"
    ));
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::InjectedAuthDisabled))
    );
    kit.exchange.clear_faults().await.unwrap();
    assert_eq!(client.auth_xoauth2(kit.mailbox(), &token).await.code, 235);
}

#[tokio::test]
async fn after_data_faults() {
    let kit = kit().await;
    let token = kit.mint_exchange_token().unwrap();
    let host = kit.exchange.hostname().to_owned();
    let message = simple_message(kit.mailbox(), "a@fabrikam.com", "fault");
    let mut client = authenticated(&kit, &token).await;

    kit.exchange
        .fail_next(1, ExchangeFault::TempFailAfterData)
        .unwrap();
    kit.exchange
        .fail_next(1, ExchangeFault::MailboxLogonFailure)
        .unwrap();
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", &message)
        .await;
    assert_eq!(
        reply.last(),
        format!("451 4.7.0 Temporary server error. Please try again later. PRX4 [{host}]")
    );
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", &message)
        .await;
    assert!(
        reply
            .last()
            .starts_with("430 4.2.0 STOREDRV; mailbox logon failure;"),
        "{reply:?}"
    );
    assert_eq!(kit.exchange.message_count(), 0, "4xx faults store nothing");

    kit.exchange
        .fail_next(1, ExchangeFault::StallAfterDot(Duration::from_millis(400)))
        .unwrap();
    let started = Instant::now();
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", &message)
        .await;
    assert_eq!(reply.code, 250);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(kit.exchange.message_count(), 1);

    kit.exchange
        .fail_next(1, ExchangeFault::DropAfterDot)
        .unwrap();
    assert_eq!(client.cmd("MAIL FROM:<relay@contoso.com>").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<a@fabrikam.com>").await.code, 250);
    assert_eq!(client.cmd("DATA").await.code, 354);
    client.send_raw(message.as_bytes()).await;
    client.send_raw(b".\r\n").await;
    assert!(client.is_closed().await, "no reply after the dot");
    assert_eq!(
        kit.exchange.message_count(),
        2,
        "the message was stored: the outcome is uncertain for the client"
    );

    // Faults were one-shot: a new session delivers normally.
    let mut client = authenticated(&kit, &token).await;
    let reply = client
        .send_message(kit.mailbox(), "a@fabrikam.com", &message)
        .await;
    assert_eq!(reply.code, 250);
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let kit = kit().await;
    let addr = kit.smtp_addr();
    let (mut idle, _) = RawSmtp::connect(addr).await;
    kit.shutdown().await;
    let reply = idle.try_read_reply().await;
    assert!(
        reply.as_ref().is_none_or(|r| r.code == 421),
        "idle sessions get 421 or are closed: {reply:?}"
    );
    let refused = tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    assert!(refused.is_err());
}
