//! Signals on the real binary: SIGTERM during a DATA transfer loses nothing; SIGHUP reloads
//! users, certificates and accounts, and a broken new configuration keeps the old one; JSON
//! log lines parse.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use common::process::{RelayProcess, binary, free_port, wait_until_listening};
use common::smtp_client::RawClient;
use common::without_trace;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};
use tokio::io::AsyncBufReadExt;

const WAIT: Duration = Duration::from_secs(30);

fn signal(process: &RelayProcess, name: &str) {
    let pid = process.child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

struct Setup {
    kit: Testkit,
    dir: tempfile::TempDir,
    ca: PathBuf,
    port: u16,
}

impl Setup {
    async fn new() -> Setup {
        let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
        Setup {
            kit,
            dir,
            ca,
            port: free_port(),
        }
    }

    fn write(&self, listener_extra: &str, users: &str) -> PathBuf {
        let path = self.dir.path().join("relay.toml");
        std::fs::write(
            &path,
            format!(
                "[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n[admin]\naddress = \"127.0.0.1:0\"\n{}\n\
                 [[listener]]\naddress = \"127.0.0.1:{}\"\nallow_auth_without_tls = true\n{listener_extra}\n{users}",
                self.kit.relay_account_toml("m365", &self.ca),
                self.port
            ),
        )
        .unwrap();
        path
    }

    fn address(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }
}

fn user(password: &str) -> String {
    format!(
        "[[user]]\nusername = \"printer\"\npassword = \"{password}\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n"
    )
}

async fn login(address: std::net::SocketAddr, password: &str) -> u16 {
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0printer\0{password}"));
    client.command(&format!("AUTH PLAIN {plain}")).await.code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_data_loses_nothing_and_idle_sessions_get_421() {
    let setup = Setup::new().await;
    let config = setup.write("", &user("pw1"));
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(setup.port, WAIT).await);
    let mut idle = RawClient::connect_greeted(setup.address()).await;
    idle.expect("EHLO idle", 250).await;
    let mut sender = RawClient::connect_greeted(setup.address()).await;
    sender.expect("EHLO app", 250).await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0printer\0pw1");
    sender.expect(&format!("AUTH PLAIN {plain}"), 235).await;
    sender.expect("MAIL FROM:<relay@contoso.com>", 250).await;
    sender.expect("RCPT TO:<a@fabrikam.example>", 250).await;
    sender.expect("DATA", 354).await;
    sender
        .send_raw(b"From: relay@contoso.com\r\nSubject: in flight at SIGTERM\r\n\r\nfirst half\r\n")
        .await;

    signal(&relay, "TERM");
    let reply = idle.reply().await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text().starts_with("4.3.2"), "{reply:?}");
    // The client in DATA may finish, and gets its 250.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender.send_raw(b"second half\r\n.\r\n").await;
    let reply = sender.reply().await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let mut relay = relay;
    let status = tokio::time::timeout(WAIT, relay.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    // Nothing was lost: after a restart the message is (or already was) delivered, once.
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(setup.port, WAIT).await);
    let delivered = setup.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    assert!(
        String::from_utf8_lossy(without_trace(delivered[0].body()))
            .contains("first half\r\nsecond half\r\n")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.kit.exchange.message_count(), 1);
    relay.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_users_and_a_broken_config_keeps_the_old_one() {
    let setup = Setup::new().await;
    let config = setup.write("", &user("pw1"));
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(setup.port, WAIT).await);
    assert_eq!(login(setup.address(), "pw1").await, 235);

    // A broken configuration: refused with its errors, the running one stays.
    let broken = std::fs::read_to_string(&config)
        .unwrap()
        .replace("client_id = \"", "client_id = \"not-a-guid-");
    std::fs::write(&config, broken).unwrap();
    signal(&relay, "HUP");
    let line = relay
        .wait_for_log("reload refused", WAIT)
        .await
        .unwrap_or_else(|| panic!("{}", relay.log().join("\n")));
    assert!(line.contains("account[0].client_id"), "{line}");
    assert_eq!(
        login(setup.address(), "pw1").await,
        235,
        "the old users still work"
    );

    // A valid new configuration: the new password works, the old one no longer does.
    setup.write("", &user("pw2"));
    signal(&relay, "HUP");
    relay
        .wait_for_log("configuration reloaded", WAIT)
        .await
        .unwrap_or_else(|| panic!("{}", relay.log().join("\n")));
    assert_eq!(login(setup.address(), "pw2").await, 235);
    assert_eq!(login(setup.address(), "pw1").await, 535);
    // Mail still flows through the (restarted) account workers.
    let mut client = RawClient::connect_greeted(setup.address()).await;
    client.expect("EHLO app", 250).await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0printer\0pw2");
    client.expect(&format!("AUTH PLAIN {plain}"), 235).await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            b"From: relay@contoso.com\r\nSubject: after reload\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    setup.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();

    // Listener changes need a restart: refused whole.
    let moved = std::fs::read_to_string(&config).unwrap().replace(
        &format!("127.0.0.1:{}", setup.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(&config, moved).unwrap();
    signal(&relay, "HUP");
    let line = relay
        .wait_for_log("restart the relay", WAIT)
        .await
        .unwrap_or_else(|| panic!("{}", relay.log().join("\n")));
    assert!(line.contains("listeners"), "{line}");
    assert_eq!(login(setup.address(), "pw2").await, 235);
    relay.kill().await;
}

async fn presented_certificate(address: std::net::SocketAddr, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in smtp_oauth_relay::tls::parse_certificates(ca_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(smtp_oauth_relay::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    client.expect("STARTTLS", 220).await;
    let tcp = client.into_inner();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

fn write_identity(setup: &Setup, name: &str) -> String {
    let identity = setup
        .kit
        .pki
        .generate_server_cert_for(&["localhost", "127.0.0.1"])
        .unwrap();
    let cert = setup.dir.path().join(format!("{name}-cert.pem"));
    let key = setup.dir.path().join(format!("{name}-key.pem"));
    std::fs::write(&cert, identity.cert_pem()).unwrap();
    std::fs::write(&key, identity.key_pem()).unwrap();
    format!(
        "tls = \"starttls\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_listener_certificate_without_dropping_sessions() {
    let setup = Setup::new().await;
    let first = write_identity(&setup, "first");
    let config = setup.write(&first, &user("pw1"));
    let relay = RelayProcess::serve(&config);
    assert!(wait_until_listening(setup.port, WAIT).await);
    let before = presented_certificate(setup.address(), setup.kit.ca_pem()).await;
    let mut open_session = RawClient::connect_greeted(setup.address()).await;
    open_session.expect("EHLO app", 250).await;

    let second = write_identity(&setup, "second");
    setup.write(&second, &user("pw1"));
    signal(&relay, "HUP");
    relay
        .wait_for_log("configuration reloaded", WAIT)
        .await
        .unwrap_or_else(|| panic!("{}", relay.log().join("\n")));
    let after = presented_certificate(setup.address(), setup.kit.ca_pem()).await;
    assert_ne!(before, after, "new connections get the new certificate");
    open_session.expect("NOOP", 250).await;
    relay.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_and_carry_the_message_outcome() {
    let setup = Setup::new().await;
    let config = setup.write("", &user("pw1"));
    let mut child = tokio::process::Command::new(binary())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(wait_until_listening(setup.port, WAIT).await);
    let mut client = RawClient::connect_greeted(setup.address()).await;
    client.expect("EHLO app", 250).await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0printer\0pw1");
    client.expect(&format!("AUTH PLAIN {plain}"), 235).await;
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example"],
            b"From: relay@contoso.com\r\nSubject: json\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250);
    setup.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.start_kill().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut parsed = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(WAIT, lines.next_line()).await {
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        parsed.push(value);
    }
    assert!(parsed.len() > 3);
    let delivered = parsed
        .iter()
        .find(|v| v["message"] == "message delivered")
        .unwrap();
    for field in [
        "queue_id",
        "account",
        "sender",
        "recipients",
        "size",
        "duration_ms",
        "upstream_reply",
        "timestamp",
        "level",
    ] {
        assert!(
            delivered.get(field).is_some(),
            "{field} missing in {delivered}"
        );
    }
    assert_eq!(delivered["account"], "m365");
}
