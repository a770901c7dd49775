//! The fake Exchange server driven by lettre, the SMTP client the relay is expected to use,
//! with tokens fetched over HTTPS from the fake Entra.

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use super::{STEP, fetch_token, kit};
use crate::testkit::Testkit;
use crate::testkit::exchange::AuthRejection;

fn hello() -> ClientId {
    ClientId::Domain("relay.test".to_owned())
}

/// connect → STARTTLS (trusting only the kit's CA) → EHLO; not yet authenticated.
async fn lettre_connect(kit: &Testkit) -> AsyncSmtpConnection {
    let mut connection = tokio::time::timeout(
        STEP,
        AsyncSmtpConnection::connect_tokio1(kit.smtp_addr(), Some(STEP), &hello(), None, None),
    )
    .await
    .unwrap()
    .unwrap();
    let tls = TlsParameters::builder("127.0.0.1".to_owned())
        .add_root_certificate(Certificate::from_pem(kit.ca_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    connection.starttls(tls, &hello()).await.unwrap();
    assert!(connection.is_encrypted());
    connection
}

fn envelope(from: &str, to: &str) -> Envelope {
    Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap()
}

fn code(error: &lettre::transport::smtp::Error) -> u16 {
    error.status().map(u16::from).unwrap_or_default()
}

#[tokio::test]
async fn lettre_sends_with_a_token_from_entra() {
    let kit = kit().await;
    let token = fetch_token(&kit).await;
    let mut connection = lettre_connect(&kit).await;
    let response = connection
        .auth(
            &[Mechanism::Xoauth2],
            &Credentials::new(kit.mailbox().to_owned(), token),
        )
        .await
        .unwrap();
    assert_eq!(u16::from(response.code()), 235);
    let email = format!(
        "From: Relay <{}>\r\nTo: <bob@fabrikam.com>\r\nSubject: lettre\r\n\r\n.leading dot\r\nnon-ascii: é\r\n",
        kit.mailbox()
    );
    let response = connection
        .send(
            &envelope(kit.mailbox(), "bob@fabrikam.com"),
            email.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(u16::from(response.code()), 250);
    assert!(response.first_line().unwrap().contains("[Hostname="));
    // A second message on the same session (relays reuse sessions).
    connection
        .send(
            &envelope(kit.mailbox(), "carol@fabrikam.com"),
            email.as_bytes(),
        )
        .await
        .unwrap();
    connection.quit().await.unwrap();

    let messages = kit.exchange.wait_for_messages(2, STEP).await.unwrap();
    // lettre always ends DATA with "\r\n.\r\n", so a message ending in CRLF gains one.
    let expected = format!("{email}\r\n");
    assert_eq!(
        messages[0].body(),
        expected.as_bytes(),
        "exact bytes after unstuffing"
    );
    assert_eq!(messages[0].recipients, vec!["bob@fabrikam.com"]);
    assert_eq!(messages[1].recipients, vec!["carol@fabrikam.com"]);
    assert_eq!(kit.exchange.max_concurrent_sessions(kit.mailbox()), 1);
}

#[tokio::test]
async fn lettre_sees_535_when_consent_is_missing() {
    let kit = kit().await;
    kit.directory.revoke_admin_consent(kit.client_id()).unwrap();
    let token = fetch_token(&kit).await;
    let mut connection = lettre_connect(&kit).await;
    let error = connection
        .auth(
            &[Mechanism::Xoauth2],
            &Credentials::new(kit.mailbox().to_owned(), token),
        )
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert_eq!(code(&error), 535);
    assert!(
        error
            .to_string()
            .contains("5.7.3 Authentication unsuccessful"),
        "{error}"
    );
    assert_eq!(
        kit.exchange.last_auth_result(),
        Some(Err(AuthRejection::MissingRole))
    );
}

#[tokio::test]
async fn lettre_sees_send_as_denied_after_data() {
    let kit = kit().await;
    let token = fetch_token(&kit).await;
    let mut connection = lettre_connect(&kit).await;
    connection
        .auth(
            &[Mechanism::Xoauth2],
            &Credentials::new(kit.mailbox().to_owned(), token),
        )
        .await
        .unwrap();
    let email = b"From: <ceo@contoso.com>\r\nSubject: x\r\n\r\nhi\r\n";
    let error = connection
        .send(&envelope("ceo@contoso.com", "bob@fabrikam.com"), email)
        .await
        .unwrap_err();
    assert!(error.is_permanent());
    assert_eq!(code(&error), 554);
    assert!(error.to_string().contains("SendAsDenied"), "{error}");
}

#[tokio::test]
async fn lettre_fourth_connection_is_throttled_with_432() {
    let kit = kit().await;
    let token = fetch_token(&kit).await;
    let mut connections = Vec::new();
    for _ in 0..4 {
        let mut connection = lettre_connect(&kit).await;
        connection
            .auth(
                &[Mechanism::Xoauth2],
                &Credentials::new(kit.mailbox().to_owned(), token.clone()),
            )
            .await
            .unwrap();
        connections.push(connection);
    }
    let email = format!("From: <{}>\r\nSubject: c\r\n\r\nhi\r\n", kit.mailbox());
    let mut results = Vec::new();
    for connection in &mut connections {
        results.push(
            connection
                .send(
                    &envelope(kit.mailbox(), "bob@fabrikam.com"),
                    email.as_bytes(),
                )
                .await,
        );
    }
    let last = results.pop().unwrap();
    assert!(results.iter().all(Result::is_ok));
    let error = last.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(code(&error), 432);
    assert_eq!(kit.exchange.throttled_count(), 1);
}
