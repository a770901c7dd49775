//! Issue 14, items 3 and 5, over real sockets against the Entra and Exchange emulators:
//! accounts of one app share one token (one request for messages through three mailboxes, kept
//! over a reload), two credentials make two; and `client_secret_expires` near "now" gives the
//! daily warning in the log, the expiry gauge in `/metrics` (with `/readyz` still ready) and
//! the days left in `check`. Dates are computed from the current clock (today + 10 days), so
//! no clock is faked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::process::{RelayProcess, binary, free_port};
use common::smtp_client::RawClient;
use common::{Chain, chain_toml};
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};

const WAIT: Duration = Duration::from_secs(60);

/// A second mailbox of the kit's app: created, with FullAccess for the app.
fn add_mailbox(kit: &Testkit, mailbox: &str) {
    kit.directory.add_mailbox(mailbox);
    kit.directory
        .add_mailbox_permission(mailbox, kit.client_id())
        .unwrap();
}

/// `[[account]]` `name` on the kit's app for `mailbox`, with `extra` keys replacing the kit's.
fn account(kit: &Testkit, ca_file: &Path, name: &str, mailbox: &str, extra: &str) -> String {
    let replaced: Vec<&str> = extra
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut text: String = kit
        .relay_account_toml(name, ca_file)
        .lines()
        .filter(|l| {
            !l.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "mailbox" || replaced.contains(&k.trim()))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("mailbox = \"{mailbox}\"\n{extra}\n"));
    text
}

/// A trusted network of one loopback address for one account and its mailbox.
fn network(address: &str, account: &str, mailbox: &str) -> String {
    format!(
        "[[network]]\ncidr = \"{address}/32\"\naccount = \"{account}\"\nallowed_senders = [\"{mailbox}\"]\n"
    )
}

/// One message from `local` (trusted for `sender`'s account), accepted.
async fn send_from(chain: &Chain, local: [u8; 4], sender: &str, subject: &str) {
    let mut client =
        RawClient::connect_from(IpAddr::V4(Ipv4Addr::from(local)), chain.relay.address(0)).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO app", 250).await;
    let content = format!("From: {sender}\r\nSubject: {subject}\r\n\r\nx\r\n");
    let reply = client
        .send_message(sender, &["someone@fabrikam.example"], content.as_bytes())
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.expect("QUIT", 221).await;
}

const MAILBOXES: [(&str, &str, [u8; 4]); 3] = [
    ("m365", "relay@contoso.com", [127, 0, 0, 1]),
    ("invoices", "invoices@contoso.com", [127, 0, 0, 2]),
    ("orders", "orders@contoso.com", [127, 0, 0, 3]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_accounts_on_one_app_make_one_token_request_even_after_a_reload() {
    let chain = Chain::start(TestkitOptions::default(), |kit, dir| {
        assert_eq!(kit.mailbox(), "relay@contoso.com");
        let ca_file = dir.join("ca.pem");
        let mut rest = "[[listener]]\naddress = \"127.0.0.1:0\"\n".to_string();
        for (name, mailbox, local) in MAILBOXES {
            if name != "m365" {
                add_mailbox(kit, mailbox);
                rest.push_str(&account(kit, &ca_file, name, mailbox, ""));
            }
            let address = Ipv4Addr::from(local).to_string();
            rest.push_str(&network(&address, name, mailbox));
        }
        rest
    })
    .await;
    for (round, expected) in [(1, 3), (2, 6)] {
        for (name, mailbox, local) in MAILBOXES {
            send_from(&chain, local, mailbox, &format!("{name} {round}")).await;
        }
        chain
            .kit
            .exchange
            .wait_for_messages(expected, WAIT)
            .await
            .unwrap();
        if round == 1 {
            // The same configuration again: the app's provider (and its token) is kept.
            chain.relay.reload(&chain.toml).await.unwrap();
        }
    }
    let messages = chain.kit.exchange.messages();
    for (name, mailbox, _) in MAILBOXES {
        let sent: Vec<_> = messages
            .iter()
            .filter(|m| m.envelope_from == mailbox)
            .collect();
        assert_eq!(sent.len(), 2, "{name}");
        assert!(sent.iter().all(|m| m.auth_mailbox == mailbox), "{name}");
    }
    assert_eq!(
        chain.kit.entra.token_requests(),
        1,
        "one token for the app, whichever mailbox sends"
    );
    assert_eq!(chain.relay.relay.token_provider_count(), 1);
    for (name, _, _) in MAILBOXES {
        assert_eq!(chain.relay.relay.token_requests(name).await, 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_credentials_make_two_token_caches() {
    let chain = Chain::start(TestkitOptions::default(), |kit, dir| {
        let ca_file = dir.join("ca.pem");
        add_mailbox(kit, "invoices@contoso.com");
        kit.directory
            .add_client_secret(kit.client_id(), "second~client-secret-value", None)
            .unwrap();
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n{}{}{}",
            account(
                kit,
                &ca_file,
                "invoices",
                "invoices@contoso.com",
                "client_secret = \"second~client-secret-value\""
            ),
            network("127.0.0.1", "m365", "relay@contoso.com"),
            network("127.0.0.2", "invoices", "invoices@contoso.com"),
        )
    })
    .await;
    for (round, expected) in [(1, 2), (2, 4)] {
        send_from(&chain, [127, 0, 0, 1], "relay@contoso.com", "a").await;
        send_from(&chain, [127, 0, 0, 2], "invoices@contoso.com", "b").await;
        chain
            .kit
            .exchange
            .wait_for_messages(expected, WAIT)
            .await
            .unwrap();
        assert_eq!(chain.kit.entra.token_requests(), 2, "round {round}");
    }
    assert_eq!(chain.relay.relay.token_provider_count(), 2);
}

/// `YYYY-MM-DD` of the day `days` days from now (UTC), and the number of whole days from now
/// to its first second as the relay counts them.
fn date_in(days: u64) -> (String, i64) {
    let at = SystemTime::now() + Duration::from_secs(days * 86_400 + 3600);
    let date = humantime::format_rfc3339_seconds(at).to_string()[..10].to_string();
    let midnight = at.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400 * 86_400;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (date, (midnight as i64 - now as i64).div_euclid(86_400))
}

/// A configuration for the binary: account "m365" with `client_secret_expires` set to `date`,
/// account "other" on the same app without a date, the admin endpoint on `admin_port`.
fn expiring_config(kit: &Testkit, dir: &Path, date: &str, admin_port: u16) -> std::path::PathBuf {
    let ca_file = kit.write_ca_pem(&dir.join("ca.pem")).unwrap();
    add_mailbox(kit, "invoices@contoso.com");
    let rest = format!(
        "{}[[listener]]\naddress = \"127.0.0.1:0\"\n{}{}[admin]\naddress = \"127.0.0.1:{admin_port}\"\n",
        account(kit, &ca_file, "other", "invoices@contoso.com", ""),
        network("127.0.0.1", "m365", "relay@contoso.com"),
        network("127.0.0.2", "other", "invoices@contoso.com"),
    );
    let toml = chain_toml(
        kit,
        &ca_file,
        "",
        &format!("client_secret_expires = \"{date}\""),
        &rest,
    )
    .replace("{state}", &dir.join("state").display().to_string());
    let path = dir.join("relay.toml");
    std::fs::write(&path, toml).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_expiring_in_ten_days_is_warned_about_exposed_and_counted_down_by_check() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (date, days) = date_in(10);
    let admin_port = free_port();
    let config = expiring_config(&kit, dir.path(), &date, admin_port);

    // The log: the daily watcher's warning naming the account, the date and the days left
    // (besides the configuration's warning at start).
    let relay = RelayProcess::serve(&config);
    let warning = relay
        .wait_for_log("days_left=", WAIT)
        .await
        .unwrap_or_else(|| panic!("no expiry warning in {:#?}", relay.log()));
    assert!(
        warning.contains("WARN")
            && warning.contains("account=m365")
            && warning.contains("the client secret expires on")
            && warning.contains(&date)
            && warning.contains(&format!("in {days} days"))
            && warning.contains("SIGHUP"),
        "{warning}"
    );
    assert!(
        !relay
            .log()
            .iter()
            .any(|l| l.contains("client secret") && l.contains("other")),
        "no date, no warning for the other account: {:#?}",
        relay.log()
    );

    // /metrics: the expiry as a timestamp; /readyz: still ready.
    smtp_oauth_relay::tls::install_default_provider();
    let client = reqwest::Client::new();
    let mut metrics = String::new();
    for _ in 0..120 {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{admin_port}/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            metrics = response.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let expected = smtp_oauth_relay::oauth::expiry::parse_date(&date)
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        metrics.contains(&format!(
            "smtp_oauth_relay_credential_expiry_timestamp_seconds{{account=\"m365\",kind=\"secret\"}} {expected}\n"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains("credential_expiry_timestamp_seconds{account=\"other\""),
        "{metrics}"
    );
    let ready = client
        .get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "an expiring secret is not an outage"
    );
    relay.kill().await;

    // check: the days left, and a plain note for the secret without a date.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .arg("check")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line_of = |account: &str| {
        let report = stdout
            .split("account ")
            .find(|r| r.starts_with(account))
            .unwrap_or_else(|| panic!("no report for {account}: {stdout}"));
        report
            .lines()
            .find(|l| l.contains("credential"))
            .unwrap_or_else(|| panic!("no credential line for {account}: {stdout}"))
            .to_string()
    };
    let m365 = line_of("m365");
    assert!(
        m365.contains('✓')
            && m365.contains(&format!("the client secret expires on {date}"))
            && m365.contains(&format!("{days} days left")),
        "{m365}"
    );
    let other = line_of("other");
    assert!(
        other.contains("no expiry date is configured for the client secret")
            && other.contains("client_secret_expires")
            && other.contains("Certificates & secrets"),
        "{other}"
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}");
}
