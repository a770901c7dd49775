//! `check` and `send-test` for a Google account (issue 16, item 4), as an administrator runs
//! them against the Google emulators: the key file, the token (Google's refusals decoded with
//! the domain-wide delegation checklist), STARTTLS, AUTH XOAUTH2, the MAIL probe, a test
//! message; and a broken key file refused by name without its content.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::binary;
use serde_json::Value;
use smtp_oauth_relay::testkit::GmailOptions;
use smtp_oauth_relay::testkit::google_bundle::GoogleTestkit;

const MAILBOX: &str = "relay@example.com";

/// A config for the kit's Google account (its key file at `key_file`) in `dir`.
fn write_config(kit: &GoogleTestkit, dir: &Path, key_file: &Path) -> std::path::PathBuf {
    let ca = dir.join("ca.pem");
    kit.pki.write_ca_pem(&ca).unwrap();
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{}\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"workspace\"\nallowed_senders = [\"*@example.com\"]\n",
            kit.relay_account_toml("workspace", key_file, &ca)
        ),
    )
    .unwrap();
    config
}

/// `check --json` on `config`: exit code and report.
fn check(config: &Path) -> (i32, Value) {
    let output = Command::new(binary())
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().unwrap_or(-1), report)
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["accounts"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report:#}"))
}

fn fixes(step: &Value) -> String {
    step["fix"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_google_account_passes_every_step_and_send_test_delivers() {
    let kit = GoogleTestkit::start(MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = kit.write_key_file(&dir.path().join("sa.json")).unwrap();
    let config = write_config(&kit, dir.path(), &key_file);
    let (code, report) = check(&config);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["accounts"][0]["provider"], "google");
    let key = step(&report, "service account key");
    assert_eq!(key["status"], "ok");
    let detail = key["detail"].as_str().unwrap();
    assert!(detail.contains(&kit.key.client_email), "{detail}");
    assert!(detail.contains(&kit.key.client_id), "{detail}");
    for name in ["token", "connection", "tls", "auth", "sender probe"] {
        assert_eq!(step(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert_eq!(step(&report, "token claims")["status"], "skipped");
    assert!(
        step(&report, "auth")["detail"]
            .as_str()
            .unwrap()
            .contains(MAILBOX)
    );
    let printed = report.to_string();
    assert!(!printed.contains("ya29.") && !printed.contains("PRIVATE KEY"));

    let output = Command::new(binary())
        .args(["send-test", "--to", "bob@example.net", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("sent from <relay@example.com>"), "{stdout}");
    let messages = kit
        .gmail
        .wait_for_messages(1, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&messages[0].data).contains("It went straight to Gmail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refusals_are_decoded_with_their_fix() {
    let kit = GoogleTestkit::start(MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = kit.write_key_file(&dir.path().join("sa.json")).unwrap();
    let config = write_config(&kit, dir.path(), &key_file);
    // Delegation missing: the checklist with the numeric client ID and the scope.
    kit.workspace.revoke_delegation(&kit.key.client_id);
    let (code, report) = check(&config);
    assert_eq!(code, 1, "{report:#}");
    let token = step(&report, "token");
    assert_eq!(token["status"], "failed");
    assert!(
        token["detail"]
            .as_str()
            .unwrap()
            .contains("unauthorized_client")
    );
    let fix = fixes(token);
    assert!(fix.contains(&kit.key.client_id), "{fix}");
    assert!(fix.contains("https://mail.google.com/"), "{fix}");
    assert!(fix.contains("Domain-wide delegation"), "{fix}");
    assert_eq!(step(&report, "auth")["status"], "skipped");
    // The key rotated in the Cloud console: "Invalid JWT Signature." → a new key.
    kit.workspace
        .grant_delegation(&kit.key.client_id, &["https://mail.google.com/"]);
    kit.workspace.rotate_key(&kit.key.client_email).unwrap();
    let (code, report) = check(&config);
    assert_eq!(code, 1);
    let token = step(&report, "token");
    assert!(
        token["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid JWT Signature")
    );
    assert!(fixes(token).contains("create a new JSON key"), "{token}");
    // A mailbox that is no user (with a current key again).
    let fresh = kit.workspace.rotate_key(&kit.key.client_email).unwrap();
    fresh.write_json(&key_file, &kit.token.token_url()).unwrap();
    kit.workspace.remove_user(MAILBOX);
    let (code, report) = check(&config);
    assert_eq!(code, 1);
    let token = step(&report, "token");
    assert!(
        token["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid email or User ID")
    );
    assert!(fixes(token).contains("active Workspace user"), "{token}");
    // This host's clock two hours behind Google's: the time-window refusal, fixed by NTP.
    kit.workspace.add_user(MAILBOX);
    kit.token.set_clock_offset(2 * 3600);
    let (code, report) = check(&config);
    assert_eq!(code, 1);
    let token = step(&report, "token");
    assert!(
        token["detail"]
            .as_str()
            .unwrap()
            .contains("short-lived token"),
        "{token}"
    );
    assert!(fixes(token).contains("NTP"), "{token}");
    kit.token.set_clock_offset(0);
    let (code, report) = check(&config);
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_file_is_named_not_printed() {
    let kit = GoogleTestkit::start(MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sa.json");
    std::fs::write(&key_file, kit.key.private_key_pem()).unwrap();
    let config = write_config(&kit, dir.path(), &key_file);
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(output.status.code(), Some(0), "{all}");
    assert!(all.contains("account[0].service_account_key"), "{all}");
    assert!(all.contains("is not JSON"), "{all}");
    assert!(!all.contains("PRIVATE KEY"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_come_from_the_environment_as_json_or_as_a_path() {
    let kit = GoogleTestkit::start(MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = kit.write_key_file(&dir.path().join("sa.json")).unwrap();
    let config = write_config(&kit, dir.path(), &key_file);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("service_account_key = \"{}\"", key_file.display()),
        "service_account_key_env = \"RELAY_TEST_GOOGLE_KEY\"",
    );
    std::fs::write(&config, text).unwrap();
    let json = std::fs::read_to_string(&key_file).unwrap();
    for value in [json, key_file.display().to_string()] {
        let output = Command::new(binary())
            .args(["check", "--json", "--config"])
            .arg(&config)
            .env("RELAY_TEST_GOOGLE_KEY", &value)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        assert_eq!(output.status.code(), Some(0), "{report:#}");
        assert_eq!(step(&report, "auth")["status"], "ok");
    }
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .env("RELAY_TEST_GOOGLE_KEY", "{\"type\": \"service_account\"}")
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert_ne!(output.status.code(), Some(0));
    assert!(all.contains("account[0].service_account_key_env"), "{all}");
    assert!(all.contains("has no private key"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmails_auth_refusals_are_explained_in_check_and_send_test() {
    use smtp_oauth_relay::testkit::GmailFault;
    let kit = GoogleTestkit::start(MAILBOX, GmailOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = kit.write_key_file(&dir.path().join("sa.json")).unwrap();
    let config = write_config(&kit, dir.path(), &key_file);
    // A token Gmail refuses: the JSON challenge, the empty answer, 535 5.7.8.
    kit.gmail.set_fault(GmailFault::RefuseXoauth2);
    let (code, report) = check(&config);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(step(&report, "token")["status"], "ok");
    let auth = step(&report, "auth");
    assert_eq!(auth["status"], "failed");
    assert!(auth["detail"].as_str().unwrap().contains("535"), "{auth}");
    let fix = fixes(auth);
    assert!(
        fix.contains(&kit.key.client_id) && fix.contains("https://mail.google.com/"),
        "{fix}"
    );
    let output = Command::new(binary())
        .args(["send-test", "--to", "bob@example.net", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("535") && stdout.contains("Domain-wide delegation"),
        "{stdout}"
    );
    // Gmail busy at AUTH: transient, said so.
    kit.gmail.clear_faults();
    kit.gmail.set_fault(GmailFault::AuthTemporary454);
    let (code, report) = check(&config);
    assert_eq!(code, 1);
    let auth = step(&report, "auth");
    assert!(auth["detail"].as_str().unwrap().contains("454"), "{auth}");
    assert!(
        auth["detail"]
            .as_str()
            .unwrap()
            .contains("clears by itself"),
        "{auth}"
    );
    kit.gmail.clear_faults();
    assert_eq!(check(&config).0, 0);
}
