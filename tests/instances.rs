//! `[relay] instances`: two relay processes (the real binary, each with its own spool) send
//! as one mailbox through one emulated Exchange, which counts the mailbox's concurrent
//! sessions and its messages per rolling minute across both. The limits are scaled down so
//! the test runs in about a minute: Exchange (the emulator) allows 2 sessions per mailbox, the
//! account says 2 sessions and 6 messages a minute, and `instances = 2` gives each relay 1
//! session and 3 messages a minute. The property is Exchange's own (3 sessions, 30 a minute)
//! with smaller numbers. A minute is the least it can take: more messages than the rate
//! allows cannot all be delivered within one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::delivery::{WAIT, send_all, subject_of};
use common::process::{RelayProcess, binary, free_port, wait_until_listening};
use smtp_oauth_relay::testkit::exchange::ExchangeOptions;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};

const MAILBOX: &str = "relay@contoso.com";
/// Messages given to each relay at once: together more than a minute's 6.
const PER_RELAY: usize = 5;

/// The config of relay `name`: its own spool and listener, the kit's account with the
/// scaled-down limits, `instances = 2`.
fn write_config(dir: &Path, kit: &Testkit, ca: &Path, name: &str, port: u16) -> PathBuf {
    let account = kit.relay_account_toml("m365", ca).replace(
        "max_messages_per_minute = 0\n",
        "max_connections = 2\nmax_messages_per_minute = 6\n",
    );
    assert!(account.contains("max_messages_per_minute = 6"), "{account}");
    let path = dir.join(format!("relay-{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[admin]\naddress = \"off\"\n[relay]\nhostname = \"{name}.relay.test\"\nstate_dir = \"state-{name}\"\ninstances = 2\n\
             [queue]\nretry_schedule = [\"1s\"]\n{account}\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"{MAILBOX}\"]\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

async fn scaled_down_exchange() -> Testkit {
    Testkit::start(TestkitOptions {
        exchange: ExchangeOptions {
            max_concurrent_sessions_per_mailbox: 2,
            ..ExchangeOptions::default()
        },
        ..TestkitOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_mailbox_stay_within_its_limits_together_and_deliver_everything() {
    let kit = scaled_down_exchange().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let ports = [free_port(), free_port()];
    let relays: Vec<RelayProcess> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(name, port)| RelayProcess::serve(&write_config(dir.path(), &kit, &ca, name, port)))
        .collect();
    for (relay, port) in relays.iter().zip(ports) {
        assert!(
            wait_until_listening(port, Duration::from_secs(30)).await,
            "{:?}",
            relay.log()
        );
        assert!(
            relay
                .wait_for_log(
                    "instance share: 1 of 2 sessions, 3 of 6 messages a minute",
                    Duration::from_secs(10)
                )
                .await
                .is_some(),
            "{:?}",
            relay.log()
        );
    }

    // Both relays get their mail at once.
    let senders: Vec<_> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(name, port)| {
            let address = format!("127.0.0.1:{port}").parse().unwrap();
            tokio::spawn(async move { send_all(address, name, PER_RELAY).await })
        })
        .collect();
    for sender in senders {
        tokio::time::timeout(WAIT, sender)
            .await
            .expect("every message is accepted in time")
            .unwrap();
    }

    // The first minute takes 6 (3 from each); the rest must wait for it to slide.
    let total = 2 * PER_RELAY as u64;
    kit.exchange
        .wait_for_messages(total, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?} {:?}", relays[0].log(), relays[1].log()));

    let sessions = kit.exchange.max_concurrent_sessions(MAILBOX);
    assert!(sessions <= 2, "{sessions} sessions at once for the mailbox");
    let in_a_minute = kit
        .exchange
        .max_accepted_in_window(MAILBOX, Duration::from_secs(60));
    assert!(
        in_a_minute <= 6,
        "{in_a_minute} messages in one rolling minute: {:?}",
        kit.exchange.acceptance_times(MAILBOX)
    );
    assert_eq!(kit.exchange.throttled_count(), 0, "a 432 for the mailbox");
    let mut subjects: Vec<String> = kit
        .exchange
        .messages()
        .iter()
        .map(|m| subject_of(m.body()))
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|name| (0..PER_RELAY).map(move |n| format!("{name}-{n}")))
        .collect();
    expected.sort();
    assert_eq!(subjects, expected, "each message delivered exactly once");
    for relay in relays {
        relay.kill().await;
    }
}

#[tokio::test]
async fn check_shows_each_accounts_instance_share() {
    let kit = scaled_down_exchange().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let config = write_config(dir.path(), &kit, &ca, "a", free_port());
    let run = |json: bool| {
        let mut command = std::process::Command::new(binary());
        command
            .args(["check", "--config-only", "--config"])
            .arg(&config);
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let text = run(false);
    assert!(
        text.contains(
            "account m365: instance share (1 of 2 instances): 1 of 2 sessions, 3 of 6 messages a minute, 5000 of 10000 recipients a day"
        ),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_str(run(true).trim()).unwrap();
    assert_eq!(report["instances"], 2, "{report}");
    let share = &report["instance_shares"][0];
    assert_eq!(share["account"], "m365");
    assert_eq!(share["share"]["sessions"], 1);
    assert_eq!(share["share"]["messages_per_minute"], 3);
    assert_eq!(share["mailbox"]["sessions"], 2);
    assert_eq!(share["mailbox"]["messages_per_minute"], 6);
}
