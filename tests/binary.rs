//! The real binary, as an administrator runs it: `check`, `serve` with a broken config or the
//! unedited example, `serve` with a wrong client secret, `demo --once` and a running demo
//! inspected with `queue` (also into a closed pipe), `hash-password`.

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
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};

/// The example's placeholders, each with a value of the right shape an administrator could
/// put there.
const EXAMPLE_PLACEHOLDERS: [(&str, &str); 4] = [
    (
        "tenant_id = \"00000000-0000-0000-0000-000000000000\"",
        "tenant_id = \"contoso.onmicrosoft.com\"",
    ),
    (
        "client_id = \"00000000-0000-0000-0000-000000000000\"",
        "client_id = \"3f2504e0-4f89-11d3-9a0c-0305e82c3301\"",
    ),
    (
        "client_secret = \"replace-with-the-secret-value\"",
        "client_secret = \"abc~DEF.secret-value\"",
    ),
    (
        "password_hash = \"$argon2id$REPLACE-WITH-OUTPUT-OF-hash-password\"",
        "password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObGbYyKU8rIxWk\"",
    ),
];

#[test]
fn the_unedited_example_config_is_refused_and_names_each_placeholder() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/relay.toml.example");
    for command in ["check --config-only", "serve"] {
        let output = Command::new(binary())
            .args(command.split(' '))
            .args(["--config", example])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        for (key, fix) in [
            ("account[0].tenant_id", "Directory (tenant) ID"),
            ("account[0].client_id", "Application (client) ID"),
            ("account[0].client_secret", "client secret's Value"),
            ("user[0].password_hash", "smtp-oauth-relay hash-password"),
        ] {
            let line = stderr
                .lines()
                .find(|line| line.trim_start().starts_with(key))
                .unwrap_or_else(|| panic!("{command}: {key} not named in {stderr}"));
            assert!(line.contains("placeholder") && line.contains(fix), "{line}");
        }
    }
}

#[test]
fn the_example_config_with_real_values_passes_check() {
    let mut text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/relay.toml.example"))
            .unwrap();
    for (placeholder, value) in EXAMPLE_PLACEHOLDERS {
        assert!(
            text.contains(placeholder),
            "the example holds {placeholder}"
        );
        text = text.replace(placeholder, value);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, &text).unwrap();
    let output = Command::new(binary())
        .args(["check", "--config-only", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("configuration OK"), "{stdout}");
    // Its trusted network can reach its listener...
    assert!(!stdout.contains("can never reach"), "{stdout}");
    // ...which it could not with the listener on loopback, as the example once had it.
    let listener = "address = \"0.0.0.0:2525\"";
    assert!(text.contains(listener));
    std::fs::write(
        &config,
        text.replace(listener, "address = \"127.0.0.1:2525\""),
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["check", "--config-only", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "a warning, not an error: {stdout}");
    assert!(
        stdout.lines().any(|line| line.starts_with(
            "warning: network[0].cidr: 192.168.10.0/24 can never reach a listener that listens on loopback only"
        )),
        "{stdout}"
    );
}

#[test]
fn an_invalid_config_refuses_to_start_and_lists_every_error_by_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        r#"
[relay]
state_dir = "state"
[[listener]]
address = "127.0.0.1:99999"
tls = "starttls"
[[account]]
name = "m365"
mailbox = "scanner"
tenant_id = "organizations"
client_id = "my-app"
client_secret = "x"
scope = "https://graph.microsoft.com/Mail.Send"
[[user]]
username = "printer"
password_hash = "not-a-hash"
account = "other"
allowed_senders = []
"#,
    )
    .unwrap();
    for command in ["serve", "check"] {
        let output = Command::new(binary())
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{command} must refuse");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for path in [
            "listener[0].address",
            "listener[0].certificate",
            "listener[0].private_key",
            "account[0].mailbox",
            "account[0].tenant_id",
            "account[0].client_id",
            "account[0].scope",
            "user[0].account",
            "user[0].allowed_senders",
        ] {
            assert!(
                stderr.contains(path),
                "{command}: {path} missing from:\n{stderr}"
            );
        }
        assert!(
            !dir.path().join("state").exists(),
            "nothing may be created by a refused start"
        );
    }
}

#[tokio::test]
async fn a_wrong_client_secret_keeps_the_message_queued_and_the_log_names_aadsts7000215_and_the_fix()
 {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let port = free_port();
    let account = kit.relay_account_toml("m365", &ca).replace(
        kit.client_secret(),
        "Abc8Q~this-is-the-secret-ID-not-the-value",
    );
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\naddress = \"127.0.0.1:0\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n[queue]\nretry_schedule = [\"1s\"]\n{account}\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\n[[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n"
        ),
    )
    .unwrap();
    let relay = RelayProcess::serve(&config);
    assert!(
        wait_until_listening(port, Duration::from_secs(20)).await,
        "{:?}",
        relay.log()
    );
    let mut client = RawClient::connect_greeted(format!("127.0.0.1:{port}").parse().unwrap()).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            b"Subject: wrong secret\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);

    let line = relay
        .wait_for_log("AADSTS7000215", Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no AADSTS7000215 in the log:\n{}", relay.log().join("\n")));
    assert!(
        line.contains("Value"),
        "the fix (copy the secret's Value) is named: {line}"
    );
    assert!(
        line.contains("configuration"),
        "classified as configuration: {line}"
    );
    for field in [
        "queue_id=",
        "account=m365",
        "stage=token",
        "upstream_reply=",
        "class=configuration",
        "hint=",
    ] {
        assert!(
            line.contains(field),
            "every failure line carries {field}: {line}"
        );
    }
    let log = relay.log().join("\n");
    assert!(
        !log.contains(kit.client_secret()) && !log.contains("this-is-the-secret-ID"),
        "no secret in the log"
    );
    assert_eq!(kit.exchange.message_count(), 0);
    let queued = std::fs::read_dir(dir.path().join("state/spool/queue"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "msg"))
        })
        .count();
    assert_eq!(queued, 1, "the message stays queued");
    relay.kill().await;
}

#[test]
fn demo_once_pushes_a_message_through_the_whole_chain() {
    let output = Command::new(binary())
        .args(["demo", "--once"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("OK: the message arrived byte for byte"),
        "{stdout}"
    );
}

#[test]
fn demo_once_with_graph_pushes_a_message_through_the_graph_emulator() {
    let output = Command::new(binary())
        .args(["demo", "--once", "--transport", "graph"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Graph emulator accepted it: sendMail as relay@contoso.com")
            && stdout.contains("OK: the message arrived byte for byte"),
        "{stdout}"
    );
}

#[test]
fn demo_once_with_the_google_emulators_pushes_a_message_through_gmail() {
    let output = Command::new(binary())
        .args(["demo", "--once", "--provider", "google"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "Gmail emulator accepted it: authenticated as relay@contoso.com over XOAUTH2"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("OK: the message arrived byte for byte"),
        "{stdout}"
    );
}

#[test]
fn demo_refuses_graph_with_the_google_provider() {
    let output = Command::new(binary())
        .args([
            "demo",
            "--once",
            "--provider",
            "google",
            "--transport",
            "graph",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not go with --provider google"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash_that_verifies() {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pw\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let mut policy = smtp_oauth_relay::policy::Policy::new();
    policy
        .add_user(
            "u",
            smtp_oauth_relay::policy::Credential::Hash(hash),
            smtp_oauth_relay::policy::Access {
                account: "a".into(),
                account_mailbox: smtp_oauth_relay::vocab::address::Address::parse("a@contoso.com")
                    .unwrap(),
                allowed_senders: vec![],
                sender_rewrite: smtp_oauth_relay::policy::SenderRewrite::Never,
                routes: vec![],
            },
        )
        .unwrap();
    let pw = smtp_oauth_relay::vocab::secret::Secret::new("s3cret-pw");
    assert!(policy.verify_password("u", &pw).is_some());
}

/// A TLS 1.0 ClientHello (one cipher suite, no extensions), as an old printer sends it.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0x42; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls_1_0_device_is_explained_in_the_log() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = common::Chain::listener_tls_files(&kit, dir.path());
    let port = free_port();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\naddress = \"off\"\n[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{}\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\ntls = \"starttls\"\n{tls}\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            common::UNREACHABLE_ACCOUNT
        ),
    )
    .unwrap();
    let relay = RelayProcess::serve(&config);
    assert!(
        wait_until_listening(port, Duration::from_secs(30)).await,
        "{:?}",
        relay.log()
    );
    let mut client = RawClient::connect_greeted(format!("127.0.0.1:{port}").parse().unwrap()).await;
    client.expect("EHLO printer", 250).await;
    client.expect("STARTTLS", 220).await;
    client.send_raw(&tls10_client_hello()).await;
    let line = relay
        .wait_for_log("TLS 1.0/1.1", Duration::from_secs(10))
        .await;
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("WARN") && l.contains("README")),
        "{:?}",
        relay.log()
    );
    relay.kill().await;
}

#[tokio::test]
async fn the_running_demo_can_be_inspected_with_its_own_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut demo = tokio::process::Command::new(binary())
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(wait_until_listening(port, Duration::from_secs(30)).await);
    let config = dir.path().join("relay.toml");
    let queue = Command::new(binary())
        .args(["queue", "--config"])
        .arg(&config)
        .arg("list")
        .output()
        .unwrap();
    assert!(
        queue.status.success()
            && String::from_utf8_lossy(&queue.stdout).contains("the queue is empty"),
        "{}{}",
        String::from_utf8_lossy(&queue.stdout),
        String::from_utf8_lossy(&queue.stderr)
    );
    let health = Command::new(binary())
        .args(["healthcheck", "--config"])
        .arg(&config)
        .status()
        .unwrap();
    assert!(health.success());

    // It holds the emulated app's client secret: private, not 0644 and then a warning.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "relay.toml mode {mode:o}");

    // `--config` after the nested subcommand too.
    let after = Command::new(binary())
        .args(["queue", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        after.status.success()
            && String::from_utf8_lossy(&after.stdout).contains("the queue is empty"),
        "{}{}",
        String::from_utf8_lossy(&after.stdout),
        String::from_utf8_lossy(&after.stderr)
    );

    // A reader that went away (`queue --json list | head -c 10`): the read end is closed
    // before the command starts, so its first write already fails, whatever the listing's
    // size; the command must end quietly, not panic (exit 101).
    for args in [&["--json", "list"][..], &["list"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(binary())
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }

    demo.start_kill().unwrap();
    let output = demo.wait_with_output().await.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("Admin endpoint:      http://127.0.0.1:"),
        "{printed}"
    );
    // The queue command names the binary that runs (not on the PATH after `cargo run`).
    let running = std::fs::canonicalize(binary()).unwrap();
    assert!(
        printed.contains(&format!("{} queue --config ", running.display())),
        "{printed}"
    );
}
