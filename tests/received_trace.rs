//! The `Received:` field the relay adds names the client's EHLO argument only in a form that
//! keeps the field's syntax intact (balanced comments, ASCII only).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::smtp_client::RawClient;
use common::{TestRelay, UNREACHABLE_ACCOUNT};

#[tokio::test]
async fn an_unbalanced_or_non_ascii_ehlo_is_escaped_in_the_received_field() {
    let relay = TestRelay::start(&format!(
        "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{{state}}\"\n{UNREACHABLE_ACCOUNT}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n"
    ))
    .await;
    for ehlo in ["x)", "héllo"] {
        let mut client = RawClient::connect_greeted(relay.address(0)).await;
        client.expect(&format!("EHLO {ehlo}"), 250).await;
        let reply = client
            .send_message(
                "relay@contoso.com",
                &["a@fabrikam.example"],
                format!(
                    "From: relay@contoso.com\r\nSubject: {}\r\n\r\nx\r\n",
                    ehlo.len()
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.expect("QUIT", 221).await;
    }
    let mut firsts: Vec<String> = relay
        .queued_bodies()
        .iter()
        .map(|body| {
            String::from_utf8(body.clone())
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    firsts.sort();
    assert_eq!(
        firsts,
        [
            "Received: from unknown (helo=h%C3%A9llo [127.0.0.1])",
            "Received: from unknown (helo=x%29 [127.0.0.1])",
        ]
    );
    relay.stop().await;
}
