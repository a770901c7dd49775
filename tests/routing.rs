//! Routing by sender (issue 14): one client, several accounts (mailboxes), each message
//! delivered through the account that may send as its sender; shared mailboxes through
//! `send_as`; senders no account may use refused or rewritten (with `sender_name`); a `From:`
//! that belongs to another account than the envelope goes through the default account, never
//! split; `sender_name` in a bounce. Real sockets, the testkit's Exchange emulator (which
//! records the AUTH user of each delivered message and refuses a sender the mailbox has no
//! SendAs on with `554 5.2.252`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::IpAddr;
use std::path::Path;

use common::delivery::{WAIT, message, subject_of};
use common::smtp_client::RawClient;
use common::{Chain, eventually};
use smtp_oauth_relay::testkit::{AcceptedMessage, Testkit, TestkitOptions};

/// The kit's account is "m365" (relay@contoso.com); these are added on the same app.
const EXTRA_MAILBOXES: [(&str, &str); 2] = [
    ("invoices", "invoices@contoso.com"),
    ("alerts", "alerts@contoso.com"),
];

/// Create `mailbox` in the emulated tenant with FullAccess for the kit's app, and an
/// `[[account]]` for it named `name` (plus `extra` keys) on the kit's app.
fn extra_account(kit: &Testkit, dir: &Path, name: &str, mailbox: &str, extra: &str) -> String {
    kit.directory.add_mailbox(mailbox);
    kit.directory
        .add_mailbox_permission(mailbox, kit.client_id())
        .unwrap();
    let toml = kit.relay_account_toml(name, &dir.join("ca.pem")).replace(
        &format!("mailbox = \"{}\"", kit.mailbox()),
        &format!("mailbox = \"{mailbox}\""),
    );
    format!("{toml}{extra}\n")
}

/// Three accounts (m365, invoices, alerts; `invoices_extra` goes into invoices), one plain
/// listener, and `networks`.
async fn three_accounts(invoices_extra: &str, networks: &str) -> Chain {
    let invoices_extra = invoices_extra.to_string();
    let networks = networks.to_string();
    Chain::start(TestkitOptions::default(), move |kit, dir| {
        let mut rest = String::new();
        for (name, mailbox) in EXTRA_MAILBOXES {
            let extra = if name == "invoices" {
                invoices_extra.as_str()
            } else {
                ""
            };
            rest.push_str(&extra_account(kit, dir, name, mailbox, extra));
        }
        rest.push_str("[[listener]]\naddress = \"127.0.0.1:0\"\n");
        rest.push_str(&networks);
        rest
    })
    .await
}

/// Send `content` from `local` as `from` to one recipient; the reply code to the end of DATA
/// (or to MAIL, when MAIL is refused).
async fn send_from(local: IpAddr, relay: std::net::SocketAddr, from: &str, content: &str) -> u16 {
    let mut client = RawClient::connect_from(local, relay).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO device", 250).await;
    client
        .send_raw(format!("MAIL FROM:<{from}>\r\n").as_bytes())
        .await;
    let mail = client.reply().await;
    if mail.code != 250 {
        return mail.code;
    }
    client.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    client.expect("DATA", 354).await;
    client.send_raw(format!("{content}.\r\n").as_bytes()).await;
    let code = client.reply().await.code;
    client.expect("QUIT", 221).await;
    code
}

fn delivered_with_subject(chain: &Chain, subject: &str) -> Vec<AcceptedMessage> {
    chain
        .kit
        .exchange
        .messages()
        .into_iter()
        .filter(|m| subject_of(m.body()) == subject)
        .collect()
}

async fn delivered_once(chain: &Chain, subject: &str) -> AcceptedMessage {
    assert!(
        eventually(WAIT, || !delivered_with_subject(chain, subject).is_empty()).await,
        "{subject} was not delivered"
    );
    let delivered = delivered_with_subject(chain, subject);
    assert_eq!(delivered.len(), 1, "{subject}: never split, never twice");
    delivered.into_iter().next().unwrap()
}

fn header<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split("\r\n\r\n")
        .next()?
        .split("\r\n")
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

const LOCAL: [u8; 4] = [127, 0, 0, 1];

#[tokio::test]
async fn one_network_three_senders_three_mailboxes() {
    let chain = three_accounts(
        "",
        "[[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"*\"]\nallowed_senders = [\"*@contoso.com\"]\n",
    )
    .await;
    let relay = chain.relay.address(0);
    let senders = [
        ("relay@contoso.com", "to-m365"),
        ("invoices@contoso.com", "to-invoices"),
        ("alerts@contoso.com", "to-alerts"),
    ];
    for (from, subject) in senders {
        let code = send_from(LOCAL.into(), relay, from, &message(from, subject)).await;
        assert_eq!(code, 250, "{from}");
    }
    for (from, subject) in senders {
        let delivered = delivered_once(&chain, subject).await;
        assert_eq!(
            delivered.auth_mailbox, from,
            "{subject} went out as its own mailbox"
        );
        assert_eq!(delivered.envelope_from, from);
    }
    // Counted per account.
    let admin = chain.relay.relay.admin_address().unwrap();
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for account in ["m365", "invoices", "alerts"] {
        let line = format!("smtp_oauth_relay_messages_accepted_total{{account=\"{account}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_shared_mailbox_goes_out_through_the_account_with_send_as_on_it() {
    let chain = three_accounts(
        "send_as = [\"billing@contoso.com\", \"*@sales.contoso.com\"]",
        "[[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"m365\", \"invoices\", \"alerts\"]\nallowed_senders = [\"*@contoso.com\", \"*@sales.contoso.com\"]\n",
    )
    .await;
    // Add-RecipientPermission -Identity billing@… -Trustee invoices@… -AccessRights SendAs
    for shared in ["billing@contoso.com", "eu@sales.contoso.com"] {
        chain
            .kit
            .directory
            .grant_send_as("invoices@contoso.com", shared)
            .unwrap();
    }
    let relay = chain.relay.address(0);
    for (from, subject) in [
        ("Billing@Contoso.com", "shared-billing"),
        ("eu@sales.contoso.com", "shared-sales"),
    ] {
        assert_eq!(
            send_from(LOCAL.into(), relay, from, &message(from, subject)).await,
            250
        );
        let delivered = delivered_once(&chain, subject).await;
        assert_eq!(delivered.auth_mailbox, "invoices@contoso.com", "{subject}");
        assert!(delivered.envelope_from.eq_ignore_ascii_case(from));
    }
    // In send_as, but Exchange has no SendAs grant for it: 554 5.2.252, and the bounce tells
    // the administrator the exact command, with both addresses.
    let from = "us@sales.contoso.com";
    assert_eq!(
        send_from(LOCAL.into(), relay, from, &message(from, "no-grant")).await,
        250
    );
    let bounce = || {
        chain
            .kit
            .exchange
            .messages()
            .into_iter()
            .find(|m| m.recipients.iter().any(|r| r == from))
    };
    assert!(eventually(WAIT, || bounce().is_some()).await, "a bounce");
    let body = String::from_utf8_lossy(bounce().unwrap().body()).into_owned();
    // The DSN wraps its text: compare with white space runs as one space.
    let unfolded = body.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        unfolded.contains(
            "Add-RecipientPermission -Identity us@sales.contoso.com -Trustee invoices@contoso.com -AccessRights SendAs"
        ),
        "{body}"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn senders_no_account_may_use_are_refused_or_rewritten_with_the_sender_name() {
    let chain = three_accounts(
        "sender_name = \"Contoso Rechnungen\"",
        "[[network]]\ncidr = \"127.0.0.2/32\"\naccounts = [\"invoices\", \"alerts\"]\nallowed_senders = [\"*@contoso.com\"]\nsender_rewrite = \"never\"\n\
         [[network]]\ncidr = \"127.0.0.3/32\"\naccounts = [\"invoices\", \"alerts\"]\nallowed_senders = [\"*@contoso.com\"]\nsender_rewrite = \"when-not-allowed\"\n",
    )
    .await;
    let relay = chain.relay.address(0);
    let from = "scan@printers.lan";
    let refused = send_from(
        IpAddr::from([127, 0, 0, 2]),
        relay,
        from,
        &message(from, "refused"),
    )
    .await;
    assert_eq!(refused, 550, "sender_rewrite = never refuses at MAIL");
    let content =
        format!("From: {from}\r\nTo: a@fabrikam.example\r\nSubject: rewritten\r\n\r\nbody\r\n");
    assert_eq!(
        send_from(IpAddr::from([127, 0, 0, 3]), relay, from, &content).await,
        250
    );
    let delivered = delivered_once(&chain, "rewritten").await;
    assert_eq!(
        delivered.auth_mailbox, "invoices@contoso.com",
        "the default account"
    );
    assert_eq!(delivered.envelope_from, "invoices@contoso.com");
    let body = String::from_utf8_lossy(delivered.body()).into_owned();
    assert_eq!(
        header(&body, "From"),
        Some("\"Contoso Rechnungen\" <invoices@contoso.com>"),
        "{body}"
    );
    assert_eq!(
        header(&body, "Reply-To"),
        Some("<scan@printers.lan>"),
        "{body}"
    );
    assert!(delivered_with_subject(&chain, "refused").is_empty());
    // A display name the client chose is kept (sender_rewrite is not "always").
    let content = format!(
        "From: \"Scanner 2nd floor\" <{from}>\r\nTo: a@fabrikam.example\r\nSubject: named\r\n\r\nbody\r\n"
    );
    assert_eq!(
        send_from(IpAddr::from([127, 0, 0, 3]), relay, from, &content).await,
        250
    );
    let delivered = delivered_once(&chain, "named").await;
    let body = String::from_utf8_lossy(delivered.body()).into_owned();
    assert_eq!(
        header(&body, "From"),
        Some("\"Scanner 2nd floor\" <invoices@contoso.com>"),
        "{body}"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_from_of_another_account_than_the_envelope_goes_through_the_default_account() {
    let chain = three_accounts(
        "",
        "[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\naccounts = [\"m365\", \"invoices\", \"alerts\"]\nallowed_senders = [\"*@contoso.com\"]\n",
    )
    .await;
    // The default mailbox may send as both, so the message goes through when the rule holds.
    for other in ["alerts@contoso.com", "invoices@contoso.com"] {
        chain
            .kit
            .directory
            .grant_send_as(chain.kit.mailbox(), other)
            .unwrap();
    }
    let content =
        "From: invoices@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: mixed\r\n\r\nbody\r\n";
    assert_eq!(
        send_from(
            LOCAL.into(),
            chain.relay.address(0),
            "alerts@contoso.com",
            content
        )
        .await,
        250
    );
    let delivered = delivered_once(&chain, "mixed").await;
    assert_eq!(
        delivered.auth_mailbox, "relay@contoso.com",
        "the default account"
    );
    assert_eq!(delivered.envelope_from, "alerts@contoso.com");
    let body = String::from_utf8_lossy(delivered.body()).into_owned();
    assert_eq!(
        header(&body, "From"),
        Some("invoices@contoso.com"),
        "kept as written"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn the_account_chosen_is_stored_in_the_envelope() {
    let chain = three_accounts(
        "",
        "[[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"*\"]\nallowed_senders = [\"*@contoso.com\"]\n",
    )
    .await;
    // Exchange defers everything, so the entries stay in the spool to be read.
    chain
        .kit
        .exchange
        .set_fault(smtp_oauth_relay::testkit::ExchangeFault::TempFailAfterData)
        .await
        .unwrap();
    let relay = chain.relay.address(0);
    for (from, subject) in [
        ("alerts@contoso.com", "kept-alerts"),
        ("invoices@contoso.com", "kept-invoices"),
    ] {
        assert_eq!(
            send_from(LOCAL.into(), relay, from, &message(from, subject)).await,
            250
        );
    }
    let envelopes = chain.relay.queued_envelopes();
    let mut accounts: Vec<(String, String)> = envelopes
        .iter()
        .map(|e| {
            (
                e.account.clone(),
                e.sender.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    accounts.sort();
    assert_eq!(
        accounts,
        [
            ("alerts".to_string(), "alerts@contoso.com".to_string()),
            ("invoices".to_string(), "invoices@contoso.com".to_string()),
        ]
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_bounce_carries_the_account_sender_name() {
    let chain = three_accounts(
        "sender_name = \"Contoso Rechnungen\"",
        "[[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"m365\", \"invoices\"]\nallowed_senders = [\"*@contoso.com\"]\n",
    )
    .await;
    chain.kit.exchange.reject_recipient(
        "gone@fabrikam.example",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; not found",
    );
    let from = "invoices@contoso.com";
    let mut client = RawClient::connect_from(LOCAL.into(), chain.relay.address(0)).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO device", 250).await;
    let reply = client
        .send_message(
            from,
            &["gone@fabrikam.example"],
            message(from, "to-nobody").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250);
    // The DSN goes to the sender, through the same account.
    let bounce = || {
        chain
            .kit
            .exchange
            .messages()
            .into_iter()
            .find(|m| m.recipients.iter().any(|r| r == from))
    };
    assert!(eventually(WAIT, || bounce().is_some()).await, "a bounce");
    let bounce = bounce().unwrap();
    assert_eq!(bounce.auth_mailbox, from);
    let body = String::from_utf8_lossy(bounce.body()).into_owned();
    assert_eq!(
        header(&body, "From"),
        Some("\"Contoso Rechnungen\" <invoices@contoso.com>"),
        "{body}"
    );
    chain.relay.stop().await;
}
