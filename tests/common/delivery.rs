//! Helpers of the delivery tests: a standard message and a one-message SMTP client.

use std::time::Duration;

use super::smtp_client::RawClient;

/// How long a delivery test waits for something that should happen within a second or two.
pub const WAIT: Duration = Duration::from_secs(30);

/// A complete message from `from` with `subject` (Date and Message-ID included).
pub fn message(from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: a@fabrikam.example\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@contoso.com>\r\n\r\nbody of {subject}\r\n"
    )
}

/// Connect, send [`message`] to `to`, quit; the reply code to the end of DATA.
pub async fn send(address: std::net::SocketAddr, from: &str, to: &[&str], subject: &str) -> u16 {
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(from, to, message(from, subject).as_bytes())
        .await;
    client.expect("QUIT", 221).await;
    reply.code
}

/// The `Subject:` of a message.
pub fn subject_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

/// Send `count` messages from relay@contoso.com to a@fabrikam.example, with subjects
/// `{prefix}-0`, `{prefix}-1`, …; each must be accepted.
pub async fn send_all(address: std::net::SocketAddr, prefix: &str, count: usize) {
    for n in 0..count {
        let subject = format!("{prefix}-{n}");
        assert_eq!(
            send(
                address,
                "relay@contoso.com",
                &["a@fabrikam.example"],
                &subject
            )
            .await,
            250,
            "{subject}"
        );
    }
}

/// Send one standard message from relay@contoso.com to a@fabrikam.example; it must be accepted.
pub async fn send_one(address: std::net::SocketAddr, subject: &str) {
    assert_eq!(
        send(
            address,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            subject
        )
        .await,
        250,
        "{subject}"
    );
}

/// Wait until the first queued message has had one attempt; what that attempt recorded.
pub async fn first_attempt(
    relay: &super::TestRelay,
) -> smtp_oauth_relay::vocab::envelope::LastAttempt {
    let attempted = || {
        relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.attempts == 1)
    };
    assert!(
        super::eventually(WAIT, attempted).await,
        "no attempt recorded"
    );
    relay.queued_envelopes()[0]
        .last_attempt
        .clone()
        .expect("an attempt was recorded")
}
