//! `check` and `send-test`, as an administrator uses them: a healthy account, then each
//! misconfiguration the emulators can produce, each with the right verdict, fix and exit code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{binary, free_port};
use serde_json::Value;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};

/// Write a config for the kit (with `tweak` applied to its account block) and run `check`.
fn check(kit: &Testkit, tweak: impl Fn(String) -> String) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{}\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n",
            tweak(kit.relay_account_toml("m365", &ca))
        ),
    )
    .unwrap();
    let json = Command::new(binary())
        .args(["check", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
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
        .unwrap()
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
async fn a_healthy_account_passes_every_step() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let (code, report, text) = check(&kit, |a| a);
    assert_eq!(code, 0, "{report:#}");
    for name in [
        "token",
        "token claims",
        "connection",
        "tls",
        "auth",
        "sender probe",
    ] {
        assert_eq!(step(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    assert!(
        step(&report, "token claims")["detail"]
            .as_str()
            .unwrap()
            .contains("SMTP.SendAsApp")
    );
    assert!(
        step(&report, "tls")["detail"]
            .as_str()
            .unwrap()
            .contains("TLSv1_3")
            || step(&report, "tls")["detail"]
                .as_str()
                .unwrap()
                .contains("TLSv1_2")
    );
    assert!(
        text.contains("✓ auth") && text.contains("all checks passed"),
        "{text}"
    );
    assert_eq!(kit.exchange.message_count(), 0, "check sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_gets_its_verdict_and_fix() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let secret = kit.client_secret().to_string();

    // Wrong secret: the AADSTS code and the Value-not-ID fix.
    let (code, report, text) = check(&kit, |a| {
        a.replace(&secret, "Xyz8Q~the-secret-id-by-mistake")
    });
    assert_eq!(code, 1);
    let token = step(&report, "token");
    assert_eq!(token["status"], "failed");
    assert!(
        token["detail"].as_str().unwrap().contains("AADSTS7000215"),
        "{token}"
    );
    assert!(fixes(token).contains("Value"), "{token}");
    assert!(text.contains("✗ token"), "{text}");
    assert_eq!(
        step(&report, "connection")["status"],
        "ok",
        "the network steps still run"
    );

    // Wrong audience: a Graph token.
    let (code, report, _) = check(&kit, |a| {
        a.replace(
            "max_messages_per_minute = 0",
            "max_messages_per_minute = 0\nscope = \"https://graph.microsoft.com/.default\"",
        )
    });
    assert_eq!(code, 1);
    let claims = step(&report, "token claims");
    assert_eq!(claims["status"], "failed", "{claims}");
    assert!(
        claims["detail"]
            .as_str()
            .unwrap()
            .contains("Microsoft Graph"),
        "{claims}"
    );
    assert!(fixes(claims).contains("https://outlook.office365.com/.default"));
    assert!(
        step(&report, "auth")["detail"]
            .as_str()
            .unwrap()
            .contains("5.7.3")
    );

    // Admin consent missing: no role in the token, and 535 5.7.3 with the checklist.
    kit.directory.revoke_admin_consent(kit.client_id()).unwrap();
    let (code, report, _) = check(&kit, |a| a);
    assert_eq!(code, 1);
    assert!(fixes(step(&report, "token claims")).contains("Grant admin consent"));
    let auth = step(&report, "auth");
    assert_eq!(auth["status"], "failed");
    assert!(
        fixes(auth).contains("New-ServicePrincipal -AppId"),
        "{auth}"
    );
    kit.directory
        .grant_exchange_role(kit.client_id(), "SMTP.SendAsApp")
        .unwrap();

    // The mailbox is not granted to the app: claims fine, AUTH refused, the exact line to run.
    kit.directory
        .remove_mailbox_permission(kit.mailbox(), kit.client_id())
        .unwrap();
    let (code, report, _) = check(&kit, |a| a);
    assert_eq!(code, 1);
    assert_eq!(step(&report, "token claims")["status"], "ok");
    let auth = step(&report, "auth");
    assert!(
        fixes(auth).contains(&format!(
            "Add-MailboxPermission -Identity {}",
            kit.mailbox()
        )),
        "{auth}"
    );
    kit.directory
        .add_mailbox_permission(kit.mailbox(), kit.client_id())
        .unwrap();

    // SMTP AUTH disabled for the mailbox: the Set-CASMailbox line.
    kit.directory
        .set_mailbox_smtp_auth_disabled(kit.mailbox(), Some(true))
        .unwrap();
    let (code, report, _) = check(&kit, |a| a);
    assert_eq!(code, 1);
    let auth = step(&report, "auth");
    assert!(
        auth["detail"].as_str().unwrap().contains("5.7.139"),
        "{auth}"
    );
    assert!(fixes(auth).contains(&format!(
        "Set-CASMailbox -Identity {} -SmtpClientAuthenticationDisabled $false",
        kit.mailbox()
    )));
    kit.directory
        .set_mailbox_smtp_auth_disabled(kit.mailbox(), None)
        .unwrap();

    // TLS failure: the server's certificate is not trusted (no ca_file).
    let (code, report, _) = check(&kit, |a| {
        a.lines()
            .filter(|l| !l.starts_with("ca_file"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    assert_eq!(code, 1);
    let tls = step(&report, "tls");
    assert_eq!(tls["status"], "failed", "{report:#}");
    assert!(fixes(tls).contains("ca_file"));
    // The token endpoint's certificate is refused too: a trust problem, not a network one.
    let token = step(&report, "token");
    assert_eq!(token["status"], "failed", "{report:#}");
    assert!(
        token["detail"].as_str().unwrap().contains("certificate"),
        "{token}"
    );
    assert!(
        fixes(token).contains("ca_file") && !fixes(token).contains("firewall,"),
        "{token}"
    );

    // An authority with the tenant in it: no token endpoint there, and the fix says why.
    let (code, report, _) = check(&kit, |a| {
        a.replace(
            &format!("authority = \"{}\"", kit.authority()),
            &format!("authority = \"{}/{}\"", kit.authority(), kit.tenant_id()),
        )
    });
    assert_eq!(code, 1);
    let token = step(&report, "token");
    assert_eq!(token["status"], "failed", "{report:#}");
    assert!(
        fixes(token).contains("authority is the base URL"),
        "{token}"
    );

    // Unreachable host.
    let closed = free_port();
    let (code, report, _) = check(&kit, |a| {
        a.replace(&kit.smtp_server(), &format!("127.0.0.1:{closed}"))
    });
    assert_eq!(code, 1);
    let connection = step(&report, "connection");
    assert_eq!(connection["status"], "failed");
    assert!(fixes(connection).contains("smtp_server"));

    // smtp_tls = "implicit" against a STARTTLS server: says which mode to use.
    let (code, report, _) = check(&kit, |a| format!("{a}\nsmtp_tls = \"implicit\""));
    assert_eq!(code, 1);
    let tls = step(&report, "tls");
    assert_eq!(tls["status"], "failed", "{report:#}");
    assert!(fixes(tls).contains("smtp_tls = \"starttls\""), "{tls}");

    // smtp_tls = "none": a readable verdict, not empty TLS fields.
    let (code, report, text) = check(&kit, |a| format!("{a}\nsmtp_tls = \"none\""));
    assert_eq!(code, 1);
    let tls = step(&report, "tls");
    assert_eq!(tls["status"], "failed", "{report:#}");
    assert!(
        tls["detail"].as_str().unwrap().contains("in clear"),
        "{tls}"
    );
    assert!(!text.contains("certificate  valid"), "{text}");

    // All fixed again.
    let (code, report, _) = check(&kit, |a| a);
    assert_eq!(code, 0, "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_sends_now_and_prints_exchanges_reply() {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{}\n[[listener]]\naddress = \"127.0.0.1:2525\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            kit.relay_account_toml("m365", &ca)
        ),
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["send-test", "--to", "it@fabrikam.example", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("2.0.0 OK"), "{stdout}");
    let delivered = kit
        .exchange
        .wait_for_messages(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        delivered[0].recipients,
        vec!["it@fabrikam.example".to_string()]
    );
    assert!(
        String::from_utf8_lossy(delivered[0].body())
            .contains("Subject: smtp-oauth-relay test message")
    );

    // A sender the mailbox may not use: Exchange's refusal and the fix.
    let output = Command::new(binary())
        .args([
            "send-test",
            "--to",
            "it@fabrikam.example",
            "--from",
            "ceo@contoso.com",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("5.2.252") && stdout.contains("Add-RecipientPermission"),
        "{stdout}"
    );
}
