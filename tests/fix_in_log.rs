//! The fix is in the log, not only in `queue show` and `check` (issues 13 and 16): the real
//! binary, one configuration with a Microsoft Graph account and a Google account, each broken
//! the way administrators break them (the Graph app scoped by RBAC for Applications to another
//! mailbox; the Google service account's domain-wide delegation removed). The relay's own log
//! lines (stderr) carry each failure's class and its fix, and never a token or an assertion.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::delivery::{WAIT, message};
use common::process::{RelayProcess, free_port, wait_until_listening};
use common::smtp_client::RawClient;
use smtp_oauth_relay::testkit::google_bundle::GoogleTestkit;
use smtp_oauth_relay::testkit::{FakeGraph, GmailOptions, GraphOptions, Testkit, TestkitOptions};

const GOOGLE_MAILBOX: &str = "relay@example.com";
const MICROSOFT_SENDER: &str = "relay@contoso.com";

/// A relay with account "m365" (Graph) and "workspace" (Google), both reachable from
/// 127.0.0.0/8, routed by sender.
fn write_config(
    kit: &Testkit,
    graph: &FakeGraph,
    google: &GoogleTestkit,
    dir: &Path,
    port: u16,
) -> PathBuf {
    let ca = kit.write_ca_pem(&dir.join("ca.pem")).unwrap();
    let google_ca = dir.join("google-ca.pem");
    google.pki.write_ca_pem(&google_ca).unwrap();
    let key = google.write_key_file(&dir.join("sa.json")).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{}\"\n[queue]\nretry_schedule = [\"1h\"]\n\
             {}transport = \"graph\"\ngraph_endpoint = \"{}\"\n\
             {}\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"m365\", \"workspace\"]\nallowed_senders = [\"*@contoso.com\", \"*@example.com\"]\n",
            dir.join("state").display(),
            kit.relay_account_toml("m365", &ca),
            graph.base_url(),
            google.relay_account_toml("workspace", &key, &google_ca),
        ),
    )
    .unwrap();
    config
}

async fn submit(address: SocketAddr, from: &str) {
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            from,
            &["a@fabrikam.example"],
            message(from, "broken").as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.expect("QUIT", 221).await;
}

/// The failure line (the one with `hint=`, the fix) of `account` naming `reply`, waiting at
/// most [`WAIT`].
async fn failure_line(relay: &RelayProcess, account: &str, reply: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = relay
            .log()
            .into_iter()
            .find(|line| line.contains(account) && line.contains(reply) && line.contains("hint="));
        if found.is_some() || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_providers_failure_is_logged_with_its_class_and_fix() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let graph = kit.start_graph(GraphOptions::default()).await.unwrap();
    // RBAC for Applications: the app may only use another mailbox.
    graph
        .set_mailbox_scope(kit.client_id(), Some(&["other@contoso.com"]))
        .unwrap();
    let google = GoogleTestkit::start(GOOGLE_MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    google.workspace.revoke_delegation(&google.key.client_id);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(&kit, &graph, &google, dir.path(), port);
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(port, WAIT).await, "{:?}", relay.log());
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    submit(address, MICROSOFT_SENDER).await;
    submit(address, GOOGLE_MAILBOX).await;

    let graph_line = failure_line(&relay, "account=m365", "ErrorAccessDenied")
        .await
        .unwrap_or_else(|| panic!("no Graph failure logged: {:#?}", relay.log()));
    assert!(graph_line.contains("class=configuration"), "{graph_line}");
    assert!(graph_line.contains("account=m365"), "{graph_line}");
    assert!(
        graph_line.contains("New-ManagementRoleAssignment"),
        "the fix in the log line: {graph_line}"
    );

    let google_failure = failure_line(&relay, "account=workspace", "unauthorized_client")
        .await
        .unwrap_or_else(|| panic!("no Google failure logged: {:#?}", relay.log()));
    assert!(
        google_failure.contains("class=configuration"),
        "{google_failure}"
    );
    assert!(
        google_failure.contains("Domain-wide delegation")
            && google_failure.contains("https://mail.google.com/"),
        "the fix in the log line: {google_failure}"
    );

    // Nothing was sent, nothing bounced, and no token or signed assertion reached the log.
    assert!(graph.delivered().is_empty());
    assert!(google.gmail.messages().is_empty());
    for line in relay.log() {
        assert!(
            !line.contains("eyJ") && !line.contains("ya29."),
            "a token in the log: {line}"
        );
    }
    relay.kill().await;
}
