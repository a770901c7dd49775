//! "Accepted means safe", tested by killing the real process: clients get `250`s while the
//! relay is killed with SIGKILL; after a restart every acknowledged message is delivered, intact.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::{RelayProcess, free_port, wait_until_listening};
use common::smtp_client::RawClient;
use common::without_trace;
use smtp_oauth_relay::testkit::{ExchangeFault, Testkit, TestkitOptions};

fn write_config(dir: &Path, kit: &Testkit, ca: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join(format!("relay-{port}.toml"));
    std::fs::write(
        &path,
        format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n[queue]\nretry_schedule = [\"1s\"]\n{}\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n",
            kit.relay_account_toml("m365", ca)
        ),
    )
    .unwrap();
    path
}

fn content(client: usize, n: usize) -> String {
    // A body of some size, so the kill can land in the middle of a write.
    let filler: String = (0..200)
        .map(|i| format!("line {i} of message {client}-{n}\r\n"))
        .collect();
    format!(
        "From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: durable-{client}-{n}\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <durable-{client}-{n}@contoso.com>\r\n\r\n{filler}"
    )
}

/// Send messages in a loop until the connection breaks; record the acknowledged ones.
async fn sender(port: u16, client: usize, acknowledged: Arc<Mutex<BTreeSet<String>>>) {
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return;
    };
    drop(stream);
    let mut session = RawClient::connect_greeted(address).await;
    if session.command("EHLO app").await.code != 250 {
        return;
    }
    for n in 0..1000 {
        if session.command("MAIL FROM:<relay@contoso.com>").await.code != 250
            || session.command("RCPT TO:<a@fabrikam.example>").await.code != 250
            || session.command("DATA").await.code != 354
        {
            return;
        }
        let mut data = content(client, n).into_bytes();
        data.extend_from_slice(b".\r\n");
        session.send_raw(&data).await;
        let reply = session.reply().await;
        if reply.code != 250 {
            return;
        }
        acknowledged
            .lock()
            .unwrap()
            .insert(format!("durable-{client}-{n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_clients_get_250_loses_no_acknowledged_message() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    // Exchange is unreachable during the first run, so every acknowledged message must come
    // back from the spool after the kill (and none can be a duplicate).
    kit.exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();

    let port = free_port();
    let relay = RelayProcess::serve(&write_config(dir.path(), &kit, &ca, port));
    assert!(
        wait_until_listening(port, Duration::from_secs(20)).await,
        "{:?}",
        relay.log()
    );

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let senders: Vec<_> = (0..8)
        .map(|client| tokio::spawn(sender(port, client, Arc::clone(&acknowledged))))
        .collect();
    // Kill while clients are in full flow.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acknowledged.lock().unwrap().len() < 60 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.kill().await;
    for sender in senders {
        let _ = tokio::time::timeout(Duration::from_secs(30), sender).await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 60,
        "only {} acknowledged before the kill",
        acknowledged.len()
    );
    assert_eq!(kit.exchange.message_count(), 0);

    // Restart (a new port, the same spool) with Exchange back.
    kit.exchange.clear_faults().await.unwrap();
    let port = free_port();
    let relay = RelayProcess::serve(&write_config(dir.path(), &kit, &ca, port));
    assert!(
        wait_until_listening(port, Duration::from_secs(20)).await,
        "{:?}",
        relay.log()
    );

    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        delivered.clear();
        for message in kit.exchange.messages() {
            let body = String::from_utf8_lossy(without_trace(message.body())).into_owned();
            let subject = body
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap()
                .to_string();
            let (client, n) = subject
                .strip_prefix("durable-")
                .and_then(|rest| rest.split_once('-'))
                .map(|(c, n)| (c.parse::<usize>().unwrap(), n.parse::<usize>().unwrap()))
                .unwrap();
            assert_eq!(body, content(client, n), "{subject} arrived damaged");
            *delivered.entry(subject).or_default() += 1;
        }
        if acknowledged.iter().all(|id| delivered.contains_key(id))
            || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}\n{}",
        relay.log().join("\n")
    );
    let duplicates: Vec<(&String, &usize)> =
        delivered.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicates.is_empty(), "delivered twice: {duplicates:?}");
    eprintln!(
        "{} acknowledged before SIGKILL, all delivered after restart; {} unacknowledged arrived too",
        acknowledged.len(),
        delivered.len() - acknowledged.len()
    );
    let recovered = relay
        .wait_for_log("spool opened", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(recovered.contains("recovered="), "{recovered}");
    relay.kill().await;
}
