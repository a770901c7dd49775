//! The Graph transport in the real binary (issue 13): a 20 MB attachment goes through upload
//! sessions while the relay's resident memory grows by far less than the message; a relay
//! killed with SIGKILL while Graph holds its request loses nothing: after a restart the
//! message is delivered, at most the usual duplicate bound.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::{RelayProcess, free_port, rss_kib, wait_until_listening};
use common::smtp_client::RawClient;
use smtp_oauth_relay::testkit::{FakeGraph, GraphOptions, SendPath, Testkit, TestkitOptions};

const WAIT: Duration = Duration::from_secs(60);

/// A config for the binary: one plain listener on `port`, the kit's account sending through
/// `graph`, spool in `dir/state`.
fn write_config(kit: &Testkit, graph: &FakeGraph, dir: &Path, port: u16) -> PathBuf {
    let ca = kit.write_ca_pem(&dir.join("ca.pem")).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{}\"\n[queue]\nretry_schedule = [\"1s\"]\n[admin]\naddress = \"127.0.0.1:0\"\n\
             {}transport = \"graph\"\ngraph_endpoint = \"{}\"\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            dir.join("state").display(),
            kit.relay_account_toml("m365", &ca),
            graph.base_url()
        ),
    )
    .unwrap();
    config
}

async fn submit(address: SocketAddr, subject: &str, content: &[u8]) {
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO device", 250).await;
    let reply = client
        .send_message("relay@contoso.com", &["a@fabrikam.example"], content)
        .await;
    assert_eq!(reply.code, 250, "{subject}: {reply:?}");
    client.expect("QUIT", 221).await;
}

fn small_message(subject: &str) -> Vec<u8> {
    format!(
        "From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: {subject}\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

/// A message with a `size`-byte attachment (base64, 76 a line).
fn message_with_attachment(size: usize) -> Vec<u8> {
    use base64::Engine as _;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut out = b"From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n--sep\r\nContent-Type: text/plain\r\n\r\nattached\r\n--sep\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"big.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--sep--\r\n");
    out
}

async fn delivered(graph: &FakeGraph, count: usize) -> bool {
    common::eventually(WAIT, || graph.delivered().len() >= count).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_attachment_is_uploaded_with_bounded_memory() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let graph = kit.start_graph(GraphOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(&kit, &graph, dir.path(), port);
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(port, WAIT).await, "{:?}", relay.log());
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let pid = relay.child.id().unwrap();
    // Warm up (token, TLS to Graph), then the resident size at rest.
    submit(address, "warm-up", &small_message("warm-up")).await;
    assert!(delivered(&graph, 1).await, "{:?}", relay.log());
    let idle = rss_kib(pid);
    let content = message_with_attachment(20_000_000);
    let sender = tokio::spawn(async move { submit(address, "big", &content).await });
    let mut peak = idle;
    let deadline = std::time::Instant::now() + WAIT;
    while graph.delivered().len() < 2 && std::time::Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender.await.unwrap();
    let big = graph.delivered().pop().unwrap();
    assert_eq!(big.path, SendPath::Draft);
    assert_eq!(big.attachments[0].size, 20_000_000);
    assert!(big.attachments[0].via_upload_session);
    // Holding the decoded attachment alone would take 19 MiB, the message 26 MiB; streaming
    // takes a few upload ranges and the HTTP/TLS buffers around one (7 to 9 MiB measured).
    let growth_mib = peak.saturating_sub(idle) / 1024;
    assert!(
        growth_mib < 14,
        "a 27 MB message (20 MB attachment) made the relay grow by {growth_mib} MiB (idle {idle} KiB, peak {peak} KiB)"
    );
    relay.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_graph_request_loses_nothing() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let graph = kit.start_graph(GraphOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(&kit, &graph, dir.path(), port);
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(port, WAIT).await, "{:?}", relay.log());
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    graph.hold_requests();
    submit(address, "killed", &small_message("killed")).await;
    let mailbox = kit.mailbox().to_string();
    assert!(
        common::eventually(WAIT, || graph.in_flight(&mailbox) == 1).await,
        "the sendMail request is in flight"
    );
    relay.kill().await;
    graph.release_requests();
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(port, WAIT).await, "{:?}", relay.log());
    assert!(delivered(&graph, 1).await, "{:?}", relay.log());
    // The retry ends the entry; give a duplicate the time to show, bounded.
    assert!(
        common::eventually(WAIT, || std::fs::read_dir(
            dir.path().join("state/spool/queue")
        )
        .map(|d| d
            .filter_map(Result::ok)
            .all(|e| !e.path().to_string_lossy().ends_with(".msg")))
        .unwrap_or(false))
        .await,
        "the entry is gone once delivered"
    );
    let copies = graph
        .delivered()
        .iter()
        .filter(|m| m.addresses.subject.as_deref() == Some("killed"))
        .count();
    assert!(
        (1..=2).contains(&copies),
        "{copies} copies: at least one, at most one duplicate"
    );
    relay.kill().await;
}
