//! Operating the relay: metrics that move with the mail, health and readiness, and the
//! `queue` and `healthcheck` commands against a live relay (and a stopped one).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{RelayProcess, binary, free_port, wait_until_listening};
use common::smtp_client::RawClient;
use common::{Chain, PLAIN_TRUSTED, eventually};
use smtp_oauth_relay::testkit::{ExchangeFault, Testkit, TestkitOptions};

const WAIT: Duration = Duration::from_secs(30);

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn send(address: std::net::SocketAddr, subject: &str) {
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let content = format!("From: relay@contoso.com\r\nSubject: {subject}\r\n\r\nx\r\n");
    assert_eq!(
        client
            .send_message(
                "relay@contoso.com",
                &["a@fabrikam.example"],
                content.as_bytes()
            )
            .await
            .code,
        250
    );
}

#[tokio::test]
async fn metrics_move_as_mail_flows_and_readiness_reflects_a_failing_account() {
    // Idle upstream sessions close after a second, so the outage below meets no open one.
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "connection_idle_timeout = \"1s\"",
        "",
        |_, _| {
            format!(
                "{PLAIN_TRUSTED}\n[admin]\naddress = \"127.0.0.1:0\"\nready_failing_after = \"1s\"\n"
            )
        },
    )
    .await;
    let admin = chain.relay.relay.admin_address().unwrap();
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz").await.0, 200);
    let (_, before) = get(admin, "/metrics").await;
    assert_eq!(
        metric(
            &before,
            "smtp_oauth_relay_messages_accepted_total{account=\"m365\"}"
        ),
        0
    );

    // One 451 after DATA, then success on the retry: one deferral, one 451, counted once.
    chain
        .kit
        .exchange
        .fail_next(1, ExchangeFault::TempFailAfterData)
        .unwrap();
    send(chain.relay.address(0), "deferred-once").await;
    chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    let (_, retried) = get(admin, "/metrics").await;
    assert_eq!(
        metric(
            &retried,
            "smtp_oauth_relay_messages_deferred_total{account=\"m365\",class=\"transient\"}"
        ),
        1,
        "{retried}"
    );
    assert_eq!(
        metric(
            &retried,
            "smtp_oauth_relay_upstream_replies_total{account=\"m365\",code=\"451\"}"
        ),
        1,
        "{retried}"
    );

    for n in 0..2 {
        send(chain.relay.address(0), &format!("metrics-{n}")).await;
    }
    // A device with a sender outside its allowed_senders is turned away and counted.
    let mut client = RawClient::connect_greeted(chain.relay.address(0)).await;
    client.expect("EHLO printer", 250).await;
    client
        .expect("MAIL FROM:<printer@printers.local>", 550)
        .await;
    client.expect("QUIT", 221).await;
    chain.kit.exchange.wait_for_messages(3, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    let (_, after) = get(admin, "/metrics").await;
    assert_eq!(
        metric(
            &after,
            "smtp_oauth_relay_messages_accepted_total{account=\"m365\"}"
        ),
        3, // with deferred-once
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "smtp_oauth_relay_messages_delivered_total{account=\"m365\"}"
        ),
        3, // with deferred-once
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "smtp_oauth_relay_messages_refused_total{reason=\"sender not allowed\"}"
        ),
        1,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "smtp_oauth_relay_upstream_replies_total{account=\"m365\",code=\"250\"}"
        ),
        3, // with deferred-once
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            "smtp_oauth_relay_token_requests_total{account=\"m365\"}"
        ),
        1,
        "{after}"
    );
    assert!(
        metric(
            &after,
            "smtp_oauth_relay_accepted_bytes_total{account=\"m365\"}"
        ) > 0
    );
    assert!(
        metric(
            &after,
            "smtp_oauth_relay_inbound_connections_total{listener="
        ) >= 2,
        "{after}"
    );
    assert_eq!(
        metric(&after, "smtp_oauth_relay_queue_depth{account=\"m365\"}"),
        0
    );

    // The app's secret is replaced in Entra: the account fails as a whole.
    chain
        .kit
        .directory
        .replace_client_secret(
            chain.kit.client_id(),
            "a-new-secret-the-relay-does-not-know",
        )
        .unwrap();
    chain
        .kit
        .exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    let mailbox = chain.kit.mailbox().to_string();
    assert!(eventually(WAIT, || chain.kit.exchange.current_sessions(&mailbox) == 0).await);
    send(chain.relay.address(0), "stuck").await;
    assert!(
        eventually(WAIT, || chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.attempts >= 1))
        .await,
        "an attempt was made: queued {:?}, delivered {}",
        chain.relay.queued_envelopes(),
        chain.kit.exchange.message_count()
    );
    // Failing for longer than ready_failing_after (1 s, counted in whole seconds) → not ready.
    let deadline = std::time::Instant::now() + WAIT;
    let (status, body) = loop {
        let (status, body) = get(admin, "/readyz").await;
        if status == 503 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("account m365 has been failing"), "{body}");
    let (_, stuck) = get(admin, "/metrics").await;
    assert_eq!(
        metric(&stuck, "smtp_oauth_relay_queue_depth{account=\"m365\"}"),
        1,
        "{stuck}"
    );
    assert!(
        metric(
            &stuck,
            "smtp_oauth_relay_messages_deferred_total{account=\"m365\""
        ) >= 1,
        "{stuck}"
    );
    chain.relay.stop().await;
}

fn queue_command(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .arg("queue")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn queue_commands_on_a_live_relay_and_on_a_stopped_one() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    kit.exchange
        .set_fault(ExchangeFault::RefuseConnections)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n[queue]\nretry_schedule = [\"1h\"]\n[admin]\naddress = \"127.0.0.1:{admin_port}\"\n{}\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n",
            kit.relay_account_toml("m365", &ca)
        ),
    )
    .unwrap();
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(port, WAIT).await, "{:?}", relay.log());
    let healthcheck = Command::new(binary())
        .args(["healthcheck", "--config"])
        .arg(&config)
        .status()
        .unwrap();
    assert!(healthcheck.success());
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    send(address, "keep").await;
    send(address, "drop").await;
    // Both wait for the hour-long retry after the first attempt.
    let deadline = std::time::Instant::now() + WAIT;
    let entries = loop {
        let (ok, stdout, stderr) = queue_command(&config, &["--json", "list"]);
        assert!(ok, "{stderr}");
        let entries: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let entries = entries.as_array().unwrap().clone();
        if entries.len() == 2 && entries.iter().all(|e| e["attempts"] == 1)
            || std::time::Instant::now() > deadline
        {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["last_attempt"]["stage"], "connect");
    assert_eq!(entries[0]["sender"], "relay@contoso.com");
    let (drop_id, keep_id) = (
        entries[1]["id"].as_str().unwrap().to_string(),
        entries[0]["id"].as_str().unwrap().to_string(),
    );

    let (ok, table, _) = queue_command(&config, &["list"]);
    assert!(
        ok && table.contains(&keep_id) && table.contains("2 message(s)"),
        "{table}"
    );
    assert!(
        table.contains("transient at connect"),
        "the last reply and its class are shown: {table}"
    );
    let (ok, shown, _) = queue_command(&config, &["--json", "show", &keep_id]);
    assert!(ok && shown.contains("\"attempts\": 1"), "{shown}");
    let (ok, shown, _) = queue_command(&config, &["show", &keep_id]);
    assert!(
        ok && shown.contains("attempts:      1")
            && shown.contains("last attempt:  transient at connect")
            && shown.contains("what to do:"),
        "{shown}"
    );
    // Export writes the stored message; it is compared with what Exchange gets below.
    let (ok, exported, stderr) = queue_command(&config, &["export", &keep_id]);
    assert!(
        ok && exported.starts_with("Received: "),
        "{exported}{stderr}"
    );
    let exported_file = dir.path().join("keep.eml");
    let (ok, _, note) = queue_command(
        &config,
        &[
            "export",
            &keep_id,
            "--output",
            exported_file.to_str().unwrap(),
        ],
    );
    assert!(ok && note.contains("queued message"), "{note}");
    assert_eq!(std::fs::read(&exported_file).unwrap(), exported.as_bytes());
    let (ok, _, _) = queue_command(&config, &["delete", &drop_id]);
    assert!(ok);
    let (ok, _, stderr) = queue_command(&config, &["export", &drop_id]);
    assert!(
        !ok && stderr.contains("no queued or failed message"),
        "{stderr}"
    );
    let (ok, _, stderr) = queue_command(&config, &["show", &drop_id]);
    assert!(!ok && stderr.contains("no queued message"), "{stderr}");

    // Exchange is back; retry --all sends the rest now instead of in an hour.
    kit.exchange.clear_faults().await.unwrap();
    let (ok, stdout, _) = queue_command(&config, &["retry", "--all"]);
    assert!(ok && stdout.contains("retry scheduled for 1"), "{stdout}");
    let delivered = kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(delivered[0].body()).contains("Subject: keep"));
    assert_eq!(delivered[0].body(), exported.as_bytes());
    let (ok, table, _) = queue_command(&config, &["list"]);
    let empty = ok && table.contains("the queue is empty");
    assert!(
        empty
            || eventually(WAIT, || queue_command(&config, &["list"])
                .1
                .contains("the queue is empty"))
            .await
    );
    let (ok, failed, _) = queue_command(&config, &["failed"]);
    assert!(ok && failed.contains("no failed messages"), "{failed}");

    // A recipient Exchange refuses for good: failed at once. Once the admin has fixed it,
    // `requeue` sends it again, to that recipient, now.
    kit.exchange.reject_recipient(
        "a@fabrikam.example",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    );
    send(address, "bounced").await;
    let failed_id = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let (_, stdout, _) = queue_command(&config, &["--json", "failed"]);
            let entries: serde_json::Value =
                serde_json::from_str(&stdout).unwrap_or(serde_json::json!([]));
            if let Some(id) = entries[0]["id"].as_str() {
                break id.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "never failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    kit.exchange.clear_recipient_rejections();
    let (ok, stdout, stderr) = queue_command(&config, &["requeue", &failed_id]);
    assert!(
        ok && stdout.contains("1 message(s) back in the queue"),
        "{stdout}{stderr}"
    );
    let requeued_arrived = || {
        kit.exchange.messages().iter().any(|m| {
            m.recipients == ["a@fabrikam.example"]
                && String::from_utf8_lossy(m.body()).contains("Subject: bounced")
        })
    };
    assert!(eventually(WAIT, requeued_arrived).await);
    let (ok, failed, _) = queue_command(&config, &["failed"]);
    assert!(ok && failed.contains("no failed messages"), "{failed}");
    let (ok, _, stderr) = queue_command(&config, &["requeue", &failed_id]);
    assert!(!ok && stderr.contains("no failed message"), "{stderr}");

    // With the relay stopped, the commands read the spool directly. (A temporary refusal at
    // the end of DATA works whether or not an upstream session is still open.)
    kit.exchange
        .fail_next(1, ExchangeFault::TempFailAfterData)
        .unwrap();
    send(address, "offline").await;
    assert!(
        eventually(WAIT, || queue_command(&config, &["--json", "list"])
            .1
            .contains("\"attempts\": 1"))
        .await
    );
    relay.kill().await;
    let healthcheck = Command::new(binary())
        .args(["healthcheck", "--config"])
        .arg(&config)
        .status()
        .unwrap();
    assert!(
        !healthcheck.success(),
        "healthcheck fails when the relay is down"
    );
    let (ok, table, stderr) = queue_command(&config, &["list"]);
    assert!(ok && table.contains("1 message(s)"), "{table}{stderr}");
}
