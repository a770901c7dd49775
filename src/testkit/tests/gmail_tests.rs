//! The fake Gmail server over real sockets: a raw line client for the exact replies (greeting,
//! EHLO before and after STARTTLS, 530 before TLS and before AUTH, the XOAUTH2 error
//! challenge, limits, faults) and lettre for a delivery with a token from the fake token
//! endpoint.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use super::STEP;
use super::google_support::{MAILBOX, fetch_token, gkit, gkit_with, mail_token};
use super::raw_smtp::{RawSmtp, simple_message};
use crate::testkit::GmailFault;
use crate::testkit::GmailOptions;
use crate::testkit::google_bundle::GoogleTestkit;
use crate::testkit::google_workspace::{GMAIL_FULL_SCOPE, GMAIL_SEND_SCOPE};

async fn secured(kit: &GoogleTestkit) -> RawSmtp {
    let (mut client, greeting) = RawSmtp::connect(kit.gmail.addr()).await;
    assert_eq!(greeting.code, 220);
    client.secure(kit.pki.client_config()).await;
    client
}

async fn authenticated(kit: &GoogleTestkit, token: &str) -> RawSmtp {
    let mut client = secured(kit).await;
    let reply = client.auth_xoauth2(MAILBOX, token).await;
    assert_eq!(reply.last(), "235 2.7.0 Accepted");
    client
}

#[tokio::test]
async fn greeting_ehlo_and_starttls_like_smtp_gmail_com() {
    let kit = gkit().await;
    let (mut client, greeting) = RawSmtp::connect(kit.gmail.addr()).await;
    assert!(greeting.last().starts_with("220 smtp.gmail.com ESMTP "));
    assert!(greeting.last().ends_with(" - gsmtp"));
    let ehlo = client.cmd("EHLO relay.test").await;
    assert_eq!(ehlo.code, 250);
    let texts = ehlo.texts();
    assert!(texts.contains(&"STARTTLS".to_owned()), "{texts:?}");
    assert!(!texts.iter().any(|t| t.starts_with("AUTH")), "{texts:?}");
    assert!(texts.contains(&"SIZE 35882577".to_owned()));
    let reply = client.cmd("AUTH XOAUTH2 abc").await;
    assert!(
        reply
            .last()
            .starts_with("530 5.7.0 Must issue a STARTTLS command first."),
        "{reply:?}"
    );
    let reply = client.cmd("MAIL FROM:<relay@example.com>").await;
    assert_eq!(reply.code, 530);
    client.starttls(kit.pki.client_config()).await;
    let ehlo = client.cmd("EHLO relay.test").await;
    let texts = ehlo.texts();
    assert!(
        texts.contains(&"AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH".to_owned()),
        "{texts:?}"
    );
    assert!(!texts.contains(&"STARTTLS".to_owned()));
    // MAIL before AUTH.
    let reply = client.cmd("MAIL FROM:<relay@example.com>").await;
    assert_eq!(reply.code, 530);
    assert!(reply.last().contains("?p=WantAuthError"), "{reply:?}");
    assert_eq!(client.cmd("QUIT").await.code, 221);
}

#[tokio::test]
async fn xoauth2_failures_answer_the_json_challenge_then_535() {
    let kit = gkit().await;
    // Delegation of both scopes, so that a token with only gmail.send can be had.
    kit.workspace
        .grant_delegation(&kit.key.client_id, &[GMAIL_FULL_SCOPE, GMAIL_SEND_SCOPE]);
    let send_only = fetch_token(&kit, MAILBOX, GMAIL_SEND_SCOPE).await;
    let full = mail_token(&kit).await;
    let cases = [
        (MAILBOX, "ya29.unknown", "401"),
        (MAILBOX, send_only.as_str(), "400"),
        ("other@example.com", full.as_str(), "400"),
    ];
    for (user, token, status) in cases {
        let mut client = secured(&kit).await;
        let challenge = client.auth_xoauth2(user, token).await;
        assert_eq!(challenge.code, 334, "{challenge:?}");
        let decoded = STANDARD.decode(&challenge.texts()[0]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(json["status"], status, "{user}");
        assert_eq!(json["scope"], "https://mail.google.com/");
        let reply = client.cmd("").await;
        assert_eq!(reply.code, 535);
        assert!(reply.lines[0].starts_with("535-5.7.8 Username and Password not accepted."));
        assert!(reply.last().contains("?p=BadCredentials"), "{reply:?}");
    }
    // Password AUTH never works (no app passwords here).
    let mut client = secured(&kit).await;
    let plain = STANDARD.encode(format!("\0{MAILBOX}\0secret"));
    assert_eq!(client.cmd(&format!("AUTH PLAIN {plain}")).await.code, 535);
    assert_eq!(kit.gmail.stats().auth_failures, 4);
    assert_eq!(kit.gmail.stats().auth_successes, 0);
}

#[tokio::test]
async fn suspended_user_and_expired_token_are_refused() {
    let kit = gkit().await;
    kit.token.set_token_lifetime(Duration::from_secs(1));
    let short = mail_token(&kit).await;
    kit.token.set_token_lifetime(Duration::from_secs(3600));
    let token = mail_token(&kit).await;
    kit.workspace.set_user_suspended(MAILBOX, true).unwrap();
    let mut client = secured(&kit).await;
    assert_eq!(client.auth_xoauth2(MAILBOX, &token).await.code, 334);
    assert_eq!(client.cmd("").await.code, 535);
    kit.workspace.set_user_suspended(MAILBOX, false).unwrap();
    // Wait (bounded) until the 1-second token has expired.
    for _ in 0..40 {
        let expired = kit
            .workspace
            .issued_token(&short)
            .is_some_and(|t| t.expires_at <= std::time::SystemTime::now());
        if expired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = secured(&kit).await;
    assert_eq!(client.auth_xoauth2(MAILBOX, &short).await.code, 334);
    assert_eq!(client.cmd("").await.code, 535);
    authenticated(&kit, &token).await;
}

#[tokio::test]
async fn recipient_limit_daily_limit_and_blocked_attachment() {
    let options = GmailOptions {
        max_recipients: 2,
        daily_message_limit: 2,
        ..GmailOptions::default()
    };
    let kit = gkit_with(options).await;
    let token = mail_token(&kit).await;
    let mut client = authenticated(&kit, &token).await;
    assert_eq!(
        client.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await.code,
        250
    );
    assert_eq!(client.cmd("RCPT TO:<a@example.net>").await.code, 250);
    assert_eq!(client.cmd("RCPT TO:<b@example.net>").await.code, 250);
    let reply = client.cmd("RCPT TO:<c@example.net>").await;
    assert!(
        reply
            .last()
            .starts_with("452 4.5.3 Your message has too many recipients.")
    );
    let reply = client
        .data(simple_message(MAILBOX, "a@example.net", "one").as_bytes())
        .await;
    assert!(reply.last().starts_with("250 2.0.0 OK "), "{reply:?}");
    assert!(reply.last().ends_with(" - gsmtp"));
    // A blocked attachment type: 552 5.7.0, nothing recorded.
    let exe = format!(
        "From: <{MAILBOX}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename=\"setup.exe\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nTVo=\r\n--b--\r\n"
    );
    assert_eq!(
        client.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await.code,
        250
    );
    assert_eq!(client.cmd("RCPT TO:<a@example.net>").await.code, 250);
    let reply = client.data(exe.as_bytes()).await;
    assert_eq!(reply.code, 552);
    assert!(reply.lines[0].starts_with("552-5.7.0 This message was blocked"));
    let reply = client
        .send_message(
            MAILBOX,
            "a@example.net",
            &simple_message(MAILBOX, "a@example.net", "two"),
        )
        .await;
    assert_eq!(reply.code, 250);
    // The third message of the window: 550 5.4.5 at MAIL.
    let reply = client.cmd(&format!("MAIL FROM:<{MAILBOX}>")).await;
    assert_eq!(reply.code, 550);
    assert!(reply.lines[0].starts_with("550-5.4.5 Daily user sending limit exceeded."));
    assert!(reply.last().contains("DailyLimitExceeded"));
    let stats = kit.gmail.stats();
    assert_eq!(
        (stats.messages_accepted, stats.daily_limit_rejections),
        (2, 1)
    );
    assert_eq!(
        kit.gmail.messages()[0].recipients,
        ["a@example.net", "b@example.net"]
    );
}

#[tokio::test]
async fn faults_at_banner_auth_and_after_data() {
    let kit = gkit().await;
    let token = mail_token(&kit).await;
    kit.gmail.fail_next(1, GmailFault::Banner421);
    let (mut client, greeting) = RawSmtp::connect(kit.gmail.addr()).await;
    assert_eq!(greeting.last().get(..9), Some("421 4.7.0"));
    assert!(client.is_closed().await);
    kit.gmail.fail_next(1, GmailFault::AuthTemporary454);
    kit.gmail.fail_next(1, GmailFault::TooManyLogins454);
    let mut client = secured(&kit).await;
    let reply = client.auth_xoauth2(MAILBOX, &token).await;
    assert!(
        reply.last().starts_with("454 4.7.0 Cannot authenticate"),
        "{reply:?}"
    );
    let reply = client.auth_xoauth2(MAILBOX, &token).await;
    assert!(
        reply
            .last()
            .starts_with("454 4.7.0 Too many login attempts"),
        "{reply:?}"
    );
    assert_eq!(client.auth_xoauth2(MAILBOX, &token).await.code, 235);
    kit.gmail.fail_next(1, GmailFault::PolicyAfterData);
    let body = simple_message(MAILBOX, "a@example.net", "policy");
    let reply = client.send_message(MAILBOX, "a@example.net", &body).await;
    assert!(
        reply
            .last()
            .starts_with("550 5.7.1 This message violates example.com email policy. - gcdp"),
        "{reply:?}"
    );
    kit.gmail.fail_next(1, GmailFault::TempFailAfterData);
    let reply = client.send_message(MAILBOX, "a@example.net", &body).await;
    assert!(
        reply.last().starts_with("421 4.7.0 Try again later"),
        "{reply:?}"
    );
    assert!(client.is_closed().await);
    assert_eq!(kit.gmail.stats().messages_accepted, 0);
}

#[tokio::test]
async fn lettre_delivers_with_a_token_from_the_google_endpoint() {
    let kit = gkit().await;
    let token = mail_token(&kit).await;
    let hello = ClientId::Domain("relay.test".to_owned());
    let mut connection = tokio::time::timeout(
        STEP,
        AsyncSmtpConnection::connect_tokio1(kit.gmail.addr(), Some(STEP), &hello, None, None),
    )
    .await
    .unwrap()
    .unwrap();
    let tls = TlsParameters::builder("127.0.0.1".to_owned())
        .add_root_certificate(Certificate::from_pem(kit.pki.ca_cert_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    connection.starttls(tls, &hello).await.unwrap();
    let response = connection
        .auth(
            &[Mechanism::Xoauth2],
            &Credentials::new(MAILBOX.to_owned(), token),
        )
        .await
        .unwrap();
    assert_eq!(u16::from(response.code()), 235);
    let envelope = Envelope::new(
        Some(MAILBOX.parse().unwrap()),
        vec!["bob@example.net".parse().unwrap()],
    )
    .unwrap();
    let body = simple_message(MAILBOX, "bob@example.net", "lettre");
    let response = connection.send(&envelope, body.as_bytes()).await.unwrap();
    assert_eq!(u16::from(response.code()), 250);
    connection.quit().await.unwrap();
    let messages = kit.gmail.wait_for_messages(1, STEP).await.unwrap();
    assert_eq!(messages[0].auth_user, MAILBOX);
    assert_eq!(messages[0].envelope_from, MAILBOX);
    assert!(String::from_utf8_lossy(&messages[0].data).contains("Subject: lettre"));
}
