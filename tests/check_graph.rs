//! `check` and `send-test` for an account with `transport = "graph"` (issue 13), run as the
//! binary against the testkit's Entra and Graph emulators: the Graph token and its roles
//! (`Mail.Send`; `Mail.ReadWrite` or not, and what waits without it), a harmless `sendMail`
//! probe that sends nothing, each refusal with its fix, and `send-test` delivering through
//! Graph.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::process::binary;
use serde_json::Value;
use smtp_oauth_relay::testkit::{FakeGraph, GraphOptions, SendPath, Testkit, TestkitOptions};

/// The kit, its Graph emulator, and a config whose account "m365" sends through it.
struct GraphCheck {
    kit: Testkit,
    graph: FakeGraph,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

async fn graph_check() -> GraphCheck {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let graph = kit.start_graph(GraphOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&dir.path().join("ca.pem")).unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nhostname = \"relay.test\"\nstate_dir = \"state\"\n{}transport = \"graph\"\ngraph_endpoint = \"{}\"\n\
             [[listener]]\naddress = \"127.0.0.1:2525\"\n\
             [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n",
            kit.relay_account_toml("m365", &ca),
            graph.base_url()
        ),
    )
    .unwrap();
    GraphCheck {
        kit,
        graph,
        config,
        _dir: dir,
    }
}

/// `check --json` and `check`: exit code, the JSON report, the text.
fn check(setup: &GraphCheck) -> (i32, Value, String) {
    let json = Command::new(binary())
        .args(["check", "--json", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
    let text = Command::new(binary())
        .args(["check", "--config"])
        .arg(&setup.config)
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
async fn a_healthy_graph_account_passes_and_nothing_is_sent() {
    let setup = graph_check().await;
    let (code, report, text) = check(&setup);
    assert_eq!(code, 0, "{report:#}");
    for name in [
        "token",
        "token claims",
        "draft route",
        "tls",
        "graph request",
    ] {
        assert_eq!(step(&report, name)["status"], "ok", "{name}: {report:#}");
    }
    let claims = step(&report, "token claims")["detail"].as_str().unwrap();
    assert!(
        claims.contains("Mail.Send") && claims.contains("Mail.ReadWrite"),
        "{claims}"
    );
    let tls = step(&report, "tls")["detail"].as_str().unwrap();
    assert!(
        tls.contains("TLSv1_3") && tls.contains("certificate"),
        "{tls}"
    );
    let probe = step(&report, "graph request")["detail"].as_str().unwrap();
    assert!(
        probe.contains("nothing was sent") && probe.contains("400"),
        "{probe}"
    );
    assert!(text.contains(&setup.graph.base_url()), "{text}");
    assert!(setup.graph.delivered().is_empty(), "check sends nothing");
    assert_eq!(setup.graph.draft_count(), 0, "and leaves no draft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_mail_read_write_check_says_which_messages_wait() {
    let setup = graph_check().await;
    setup
        .graph
        .set_roles(setup.kit.client_id(), &["Mail.Send"])
        .unwrap();
    let (code, report, _) = check(&setup);
    assert_eq!(code, 0, "sendMail still works: {report:#}");
    let draft = step(&report, "draft route");
    assert_eq!(draft["status"], "skipped", "{report:#}");
    let detail = draft["detail"].as_str().unwrap();
    assert!(
        detail.contains("no Mail.ReadWrite") && detail.contains("wait"),
        "{detail}"
    );
    assert!(
        fixes(draft).contains(&format!(
            "New-ManagementRoleAssignment -App {} -Role \"Application Mail.ReadWrite\"",
            setup.kit.client_id()
        )),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_outside_the_apps_scope_fails_with_the_role_assignment_line() {
    let setup = graph_check().await;
    setup
        .graph
        .set_mailbox_scope(setup.kit.client_id(), Some(&["other@contoso.com"]))
        .unwrap();
    let (code, report, text) = check(&setup);
    assert_eq!(code, 1, "{report:#}");
    let probe = step(&report, "graph request");
    assert_eq!(probe["status"], "failed");
    assert!(
        probe["detail"]
            .as_str()
            .unwrap()
            .contains("ErrorAccessDenied"),
        "{probe:#}"
    );
    let fix = fixes(probe);
    assert!(
        fix.contains(&format!(
            "New-ManagementRoleAssignment -App {} -Role \"Application Mail.Send\"",
            setup.kit.client_id()
        )) && fix.contains("Test-ServicePrincipalAuthorization"),
        "{fix}"
    );
    assert!(text.contains("fix: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_roles_fails_at_the_claims_and_at_graph() {
    let setup = graph_check().await;
    setup.graph.set_roles(setup.kit.client_id(), &[]).unwrap();
    let (code, report, _) = check(&setup);
    assert_eq!(code, 1, "{report:#}");
    let claims = step(&report, "token claims");
    assert_eq!(claims["status"], "failed");
    assert!(
        fixes(claims).contains("Microsoft Graph → Application permissions → Mail.Send"),
        "{claims:#}"
    );
    let probe = step(&report, "graph request");
    assert_eq!(probe["status"], "failed");
    assert!(
        probe["detail"]
            .as_str()
            .unwrap()
            .contains("NoPermissionsInAccessToken"),
        "{probe:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_sends_through_graph() {
    let setup = graph_check().await;
    let output = Command::new(binary())
        .args(["send-test", "--to", "it@fabrikam.example", "--config"])
        .arg(&setup.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("202 Accepted by Graph sendMail"),
        "{stdout}"
    );
    let delivered = setup
        .graph
        .wait_for_delivered(1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(delivered[0].path, SendPath::MimeSendMail);
    assert_eq!(delivered[0].recipients, ["it@fabrikam.example"]);
    assert_eq!(
        delivered[0].addresses.subject.as_deref(),
        Some("smtp-oauth-relay test message")
    );

    // A sender the mailbox may not send as: Graph's refusal and the fix.
    let output = Command::new(binary())
        .args([
            "send-test",
            "--to",
            "it@fabrikam.example",
            "--from",
            "ceo@contoso.com",
            "--config",
        ])
        .arg(&setup.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("ErrorSendAsDenied") && stdout.contains("Add-RecipientPermission"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_graph_certificate_fails_the_tls_step_with_the_ca_file_fix() {
    let setup = graph_check().await;
    // Without ca_file the emulators' certificates are not trusted (as behind a TLS-inspecting
    // proxy whose CA is not given).
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let without_ca: String = text
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&setup.config, without_ca).unwrap();
    let (code, report, _) = check(&setup);
    assert_eq!(code, 1, "{report:#}");
    let tls = step(&report, "tls");
    assert_eq!(tls["status"], "failed", "{report:#}");
    assert!(fixes(tls).contains("ca_file"), "{tls:#}");
}
