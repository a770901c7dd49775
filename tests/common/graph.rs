//! Helpers of the Graph transport tests: the testkit with its Graph emulator and a relay whose
//! account "m365" sends through it, an SMTP submission, waiting for a delivery by subject,
//! and the messages the tests send.

use std::path::Path;

use super::delivery::WAIT;
use super::smtp_client::RawClient;
use super::{PLAIN_TRUSTED, TestRelay, chain_toml, eventually};
use smtp_oauth_relay::testkit::{
    DeliveredMessage, FakeGraph, GraphOptions, Testkit, TestkitOptions,
};

/// The testkit, its Graph emulator and a relay whose account "m365" sends through Graph.
pub struct GraphChain {
    pub kit: Testkit,
    pub graph: FakeGraph,
    pub relay: TestRelay,
    pub files: tempfile::TempDir,
}

/// Start the kit and its Graph emulator, let `prepare` adjust them (roles, scopes, extra
/// mailboxes) and return extra TOML (more accounts, networks; [`PLAIN_TRUSTED`] when empty),
/// then a relay with `queue_extra` in `[queue]` and the kit's account switched to Graph.
pub async fn graph_chain(
    queue_extra: &str,
    prepare: impl FnOnce(&Testkit, &FakeGraph, &Path) -> String,
) -> GraphChain {
    let kit = Testkit::start(TestkitOptions::default())
        .await
        .expect("testkit starts");
    let graph = kit
        .start_graph(GraphOptions::default())
        .await
        .expect("Graph emulator starts");
    let files = tempfile::tempdir().expect("tempdir");
    let ca_file = kit.write_ca_pem(&files.path().join("ca.pem")).expect("ca");
    let rest = match prepare(&kit, &graph, files.path()) {
        rest if rest.is_empty() => PLAIN_TRUSTED.to_string(),
        rest => rest,
    };
    let account = graph_account_keys(&graph);
    let toml = chain_toml(&kit, &ca_file, queue_extra, &account, &rest);
    let relay = TestRelay::start(&toml).await;
    GraphChain {
        kit,
        graph,
        relay,
        files,
    }
}

/// The keys that make an account of the kit send through `graph`.
pub fn graph_account_keys(graph: &FakeGraph) -> String {
    format!(
        "transport = \"graph\"\ngraph_endpoint = \"{}\"\n",
        graph.base_url()
    )
}

/// Connect, submit `content` from `from` to `envelope`, quit; the reply to the end of data.
pub async fn submit(relay: &TestRelay, from: &str, envelope: &[&str], content: &[u8]) -> u16 {
    let mut client = RawClient::connect_greeted(relay.address(0)).await;
    client.expect("EHLO device", 250).await;
    let reply = client.send_message(from, envelope, content).await;
    client.expect("QUIT", 221).await;
    reply.code
}

/// The one message Graph delivered with `subject`, waiting for it.
pub async fn delivered_once(graph: &FakeGraph, subject: &str) -> DeliveredMessage {
    let with_subject = || {
        graph
            .delivered()
            .into_iter()
            .filter(|m| m.addresses.subject.as_deref() == Some(subject))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(WAIT, || !with_subject().is_empty()).await,
        "{subject} was not delivered through Graph; requests: {:?}",
        graph
            .requests()
            .iter()
            .map(|r| (r.operation, r.status, r.error_code.clone()))
            .collect::<Vec<_>>()
    );
    let delivered = with_subject();
    assert_eq!(delivered.len(), 1, "{subject} delivered once");
    delivered.into_iter().next().unwrap()
}

pub fn sorted(list: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = list.iter().map(|a| a.to_string()).collect();
    out.sort();
    out
}

pub fn sorted_strings(list: &[String]) -> Vec<String> {
    let mut out = list.to_vec();
    out.sort();
    out
}

/// A message with `to` and `cc` in its headers (and a few things a careless transport
/// would change: a folded field, a leading dot, 8-bit text, a multipart body).
pub fn message_to(subject: &str, to: &str, cc: &str) -> Vec<u8> {
    let cc = if cc.is_empty() {
        String::new()
    } else {
        format!("Cc: {cc}\r\n")
    };
    format!(
        "From: Scanner <relay@contoso.com>\r\nTo: {to}\r\n{cc}Subject: {subject}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@contoso.com>\r\nX-Folded: first part\r\n\tsecond part\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n.a line that starts with a dot\r\nGrüße aus dem Scanner\r\n--b1\r\nContent-Type: application/octet-stream; name=\"scan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b1--\r\n"
    )
    .into_bytes()
}

/// A message with a short text part and one `size`-byte attachment (base64, 76 a line).
pub fn message_with_attachment(subject: &str, size: usize) -> (Vec<u8>, Vec<u8>) {
    use base64::Engine as _;
    let mut state: u32 = 0x2545_f491;
    let payload: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut out = format!(
        "From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n--sep\r\nContent-Type: text/plain\r\n\r\nthe scan is attached\r\n--sep\r\nContent-Type: application/pdf; name=\"scan.pdf\"\r\nContent-Disposition: attachment; filename=\"scan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--sep--\r\n");
    (out, payload)
}
