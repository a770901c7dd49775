//! `check --from ADDR` as an administrator uses it: the account the relay would choose for the
//! address (its mailbox or `send_as`), that account's token and AUTH, a `MAIL FROM:<ADDR>`
//! probe, and what the probe cannot prove (SendAs is checked at the end of DATA); an address
//! no account may send as; and `send-test --from` choosing the same account.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::process::binary;
use serde_json::Value;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};

/// The kit's account "m365" (relay@contoso.com) and "invoices" (invoices@contoso.com, with
/// FullAccess for the same app and `send_as`), both listed for one network.
fn write_config(kit: &Testkit, dir: &Path) -> std::path::PathBuf {
    let ca = kit.write_ca_pem(&dir.join("ca.pem")).unwrap();
    kit.directory.add_mailbox("invoices@contoso.com");
    kit.directory
        .add_mailbox_permission("invoices@contoso.com", kit.client_id())
        .unwrap();
    let invoices = kit.relay_account_toml("invoices", &ca).replace(
        &format!("mailbox = \"{}\"", kit.mailbox()),
        "mailbox = \"invoices@contoso.com\"",
    );
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\naddress = \"off\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{}\n{invoices}send_as = [\"billing@contoso.com\", \"*@sales.contoso.com\"]\n\
             [[listener]]\naddress = \"127.0.0.1:2525\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccounts = [\"*\"]\nallowed_senders = [\"*@contoso.com\"]\n",
            kit.relay_account_toml("m365", &ca)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    config
}

/// `check --from ADDR` (plus `extra`) as JSON and as text: exit code, report, text.
fn check_from(config: &Path, from: &str, extra: &[&str]) -> (i32, Value, String) {
    let run = |json: bool| {
        let mut command = Command::new(binary());
        command.arg("check").arg("--config").arg(config);
        command.args(["--from", from]).args(extra);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    let (json, text) = (run(true), run(false));
    assert_eq!(json.status.code(), text.status.code());
    let report: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json.stdout)));
    (
        json.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["accounts"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_from_proves_a_send_as_address_through_the_account_that_holds_it() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&kit, dir.path());
    let attempts_before = kit.exchange.auth_attempts().len();
    let (code, report, text) = check_from(&config, "billing@contoso.com", &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["from"], "billing@contoso.com");
    assert_eq!(report["accounts"][0]["account"], "invoices");
    let route = step(&report, "sender route");
    assert_eq!(route["status"], "ok");
    let detail = route["detail"].as_str().unwrap();
    assert!(
        detail.contains("account \"invoices\" (mailbox invoices@contoso.com)")
            && detail.contains("send_as entry billing@contoso.com"),
        "{detail}"
    );
    assert_eq!(step(&report, "auth")["status"], "ok");
    let probe = step(&report, "sender probe");
    assert_eq!(probe["status"], "ok");
    let detail = probe["detail"].as_str().unwrap();
    for part in [
        "MAIL FROM:<billing@contoso.com> → 250",
        "nothing was sent",
        "cannot prove SendAs",
        "end of DATA",
        "send-test --from billing@contoso.com",
    ] {
        assert!(detail.contains(part), "{part}: {detail}");
    }
    // The emulator saw AUTH as the account's mailbox, and no message.
    let attempts = kit.exchange.auth_attempts();
    assert!(
        attempts[attempts_before..]
            .iter()
            .any(|a| a.mailbox.as_deref() == Some("invoices@contoso.com")),
        "{attempts:?}"
    );
    assert_eq!(kit.exchange.message_count(), 0);
    // The text form says the same.
    assert!(
        text.contains("checking the sender <billing@contoso.com>"),
        "{text}"
    );
    assert!(
        text.contains("account invoices (invoices@contoso.com via"),
        "{text}"
    );
    assert!(text.contains("✓ sender route"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_from_an_address_no_account_may_send_as_says_what_to_add() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&kit, dir.path());
    let (code, report, text) = check_from(&config, "ceo@contoso.com", &[]);
    assert_eq!(code, 1, "{report:#}");
    let route = step(&report, "sender route");
    assert_eq!(route["status"], "failed");
    let fix = route["fix"][0].as_str().unwrap();
    assert!(
        fix.contains("send_as")
            && fix.contains("Add-RecipientPermission -Identity ceo@contoso.com"),
        "{fix}"
    );
    assert!(text.contains("✗ sender route"), "{text}");
    assert!(text.contains("some checks failed"), "{text}");
    // Naming an account that does not cover the address says so, and still probes it.
    let (code, report, _) = check_from(&config, "ceo@contoso.com", &["--account", "m365"]);
    assert_eq!(code, 1, "{report:#}");
    let route = step(&report, "sender route");
    assert_eq!(route["status"], "failed");
    assert!(
        route["fix"][0]
            .as_str()
            .unwrap()
            .contains("-Trustee relay@contoso.com -AccessRights SendAs"),
        "{route:#}"
    );
    assert_eq!(step(&report, "sender probe")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_from_a_send_as_address_goes_through_the_account_that_holds_it() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&kit, dir.path());
    kit.directory
        .grant_send_as("invoices@contoso.com", "eu@sales.contoso.com")
        .unwrap();
    let output = Command::new(binary())
        .arg("send-test")
        .arg("--config")
        .arg(&config)
        .args([
            "--from",
            "eu@sales.contoso.com",
            "--to",
            "a@fabrikam.example",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("through invoices"), "{stdout}");
    let messages = kit.exchange.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].auth_mailbox, "invoices@contoso.com");
    assert_eq!(messages[0].envelope_from, "eu@sales.contoso.com");
}
