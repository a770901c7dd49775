//! The monitoring pack in `deploy/monitoring/` against a running relay: every metric name the
//! Grafana dashboard and the Prometheus alerting rules use must exist in the relay's
//! `/metrics`, and `promtool` (when installed) must accept the rules and pass their unit
//! tests.
//!
//! Names are taken from the PromQL with a small tokenizer (words starting with
//! `smtp_oauth_relay_`, plus `up`), string literals skipped. A name exists when a sample has
//! it, or a `# TYPE` line declares a family it belongs to with the suffix that type gets
//! (`_total` for a counter, `_bucket`/`_sum`/`_count` for a histogram). prometheus-client
//! writes nothing at all (not even HELP/TYPE) for a labelled family before its first event,
//! so the relays of the test carry mail that gives every family a sample. `up` is written by
//! Prometheus for each scrape, never by the relay, so it is the one name allowed without
//! being in the exposition.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use common::smtp_client::RawClient;
use common::{Chain, PLAIN_TRUSTED, eventually};
use smtp_oauth_relay::testkit::{ExchangeFault, TestkitOptions};

const WAIT: Duration = Duration::from_secs(30);

/// Series Prometheus adds for each scrape target by itself.
const WRITTEN_BY_PROMETHEUS: &[&str] = &["up"];

fn pack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn dashboard_path() -> PathBuf {
    pack_dir().join("grafana-dashboard.json")
}

fn alerts_path() -> PathBuf {
    pack_dir().join("alerts.yml")
}

/// Metric names in one PromQL expression (or Grafana query), in order of appearance.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            // A string literal (a label value or regex): skip it, escapes included.
            while let Some(inner) = chars.next() {
                if inner == '\\' && c != '`' {
                    chars.next();
                } else if inner == c {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            let mut word = String::from(c);
            while let Some(&next) = chars.peek() {
                if next.is_ascii_alphanumeric() || next == '_' || next == ':' {
                    word.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            if word.starts_with("smtp_oauth_relay_") || word == "up" {
                names.push(word);
            }
        }
    }
    names
}

/// What an exposition declares: family name → type, and the names samples carry.
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut families = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    families.insert(name.to_string(), kind.to_string());
                }
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some(name) = rest.split_whitespace().next() {
                    families
                        .entry(name.to_string())
                        .or_insert_with(|| "unknown".to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let name: String = line
                    .chars()
                    .take_while(|c| *c != '{' && *c != ' ')
                    .collect();
                samples.insert(name);
            }
        }
        Exposition { families, samples }
    }

    /// Whether a query may name `name`: a sample has it, or a family of the right type does.
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) {
            return true;
        }
        self.families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            suffixes
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()))
        })
    }

    /// Names among `used` that neither the exposition nor Prometheus provides.
    fn missing<'a>(&self, used: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
        used.into_iter()
            .filter(|name| !WRITTEN_BY_PROMETHEUS.contains(&name.as_str()) && !self.has(name))
            .cloned()
            .collect()
    }
}

/// Every PromQL string of the dashboard: panel targets' `expr` and template variables' queries.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, queries: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner) {
                        ("expr", serde_json::Value::String(expr)) => queries.push(expr.clone()),
                        _ => walk(inner, queries),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, queries)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut queries);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            match &variable["query"] {
                serde_json::Value::String(query) => queries.push(query.clone()),
                other => queries.push(other["query"].as_str().unwrap().to_string()),
            }
        }
    }
    queries
}

/// One alerting rule as written in alerts.yml: its name and its YAML lines.
struct AlertRule {
    name: String,
    lines: Vec<String>,
}

/// The rules of alerts.yml, split on `- alert:` (the file's layout: one rule per list item).
fn alert_rules(yaml: &str) -> Vec<AlertRule> {
    let mut rules: Vec<AlertRule> = Vec::new();
    for line in yaml.lines() {
        if let Some(name) = line.trim_start().strip_prefix("- alert:") {
            rules.push(AlertRule {
                name: name.trim().to_string(),
                lines: Vec::new(),
            });
        } else if let Some(rule) = rules.last_mut() {
            rule.lines.push(line.to_string());
        }
    }
    rules
}

/// The `expr:` of a rule: a one-line value, or a `|`/`>` block of more indented lines.
fn rule_expr(rule: &AlertRule) -> String {
    let start = rule
        .lines
        .iter()
        .position(|l| l.trim_start().starts_with("expr:"))
        .unwrap_or_else(|| panic!("alert {} has no expr", rule.name));
    let line = &rule.lines[start];
    let indent = line.len() - line.trim_start().len();
    let value = line.trim_start().trim_start_matches("expr:").trim();
    if !value.starts_with('|') && !value.starts_with('>') {
        return value.to_string();
    }
    rule.lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn scrape(admin: std::net::SocketAddr) -> String {
    // reqwest sends `Host: <ip:port>`, the name the admin endpoint answers to.
    let response = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

/// The `/metrics` of two running relays after mail that gives every labelled family a sample
/// (prometheus-client writes no HELP/TYPE for a family without one): one relay delivers
/// after a deferral, fails a recipient for good, refuses a sender and a connection, and its
/// secret has a `client_secret_expires` date; the other has a wrong client secret, so its
/// token requests fail (and its account is failing).
async fn live_expositions() -> String {
    // A secret with its expiry date, so the credential-expiry family has a sample.
    let chain = Chain::start_with(
        TestkitOptions::default(),
        "",
        "client_secret_expires = \"2099-06-30\"",
        |_, _| format!(
            "{PLAIN_TRUSTED}\n[limits]\nmax_connections_per_ip = 1\nper_ip_limit_exempt = \"none\"\n"
        ),
    )
    .await;
    chain
        .kit
        .exchange
        .fail_next(1, ExchangeFault::TempFailAfterData)
        .unwrap();
    chain.kit.exchange.reject_recipient(
        "gone@fabrikam.example",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
    );
    let mut client = RawClient::connect_greeted(chain.relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    client
        .expect("MAIL FROM:<printer@printers.local>", 550)
        .await;
    let content = b"From: relay@contoso.com\r\nSubject: pack\r\n\r\nx\r\n";
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["a@fabrikam.example", "gone@fabrikam.example"],
            content,
        )
        .await;
    assert_eq!(reply.code, 250);
    client.expect("QUIT", 221).await;
    chain.kit.exchange.wait_for_messages(1, WAIT).await.unwrap();
    assert!(eventually(WAIT, || chain.relay.relay.queue_depth() == 0).await);
    // One connection per address, loopback counted: a second client from 127.0.0.1 while one
    // session is open is refused.
    let _first = RawClient::connect_greeted(chain.relay.address(0)).await;
    let _second = RawClient::connect(chain.relay.address(0)).await;
    let admin = chain.relay.relay.admin_address().unwrap();
    let mut text = String::new();
    for _ in 0..60 {
        text = scrape(admin).await;
        if text.contains("smtp_oauth_relay_inbound_connections_refused_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let broken = Chain::start_with(
        TestkitOptions::default(),
        "",
        "client_secret = \"not-the-secret\"",
        |_, _| PLAIN_TRUSTED.to_string(),
    )
    .await;
    let mut client = RawClient::connect_greeted(broken.relay.address(0)).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message("relay@contoso.com", &["a@fabrikam.example"], content)
        .await;
    assert_eq!(reply.code, 250);
    client.expect("QUIT", 221).await;
    let broken_admin = broken.relay.relay.admin_address().unwrap();
    let mut broken_text = String::new();
    for _ in 0..60 {
        broken_text = scrape(broken_admin).await;
        if broken_text.contains("smtp_oauth_relay_token_failures_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    text.push_str(&broken_text);
    text
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_in_metrics() {
    let text = live_expositions().await;
    let exposition = Exposition::parse(&text);
    assert!(
        exposition.families.len() >= 20,
        "the exposition looks truncated: {:?}",
        exposition.families
    );

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "dashboard queries: {queries:?}");
    let dashboard_names: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    for query in &queries {
        assert!(
            !metric_names(query).is_empty(),
            "a dashboard query names no relay metric: {query}"
        );
    }
    let missing = exposition.missing(&dashboard_names);
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics /metrics does not have: {missing:?}"
    );

    let rules = alert_rules(&std::fs::read_to_string(alerts_path()).unwrap());
    assert!(rules.len() >= 6, "alert rules: {}", rules.len());
    // The two account alerts use the relay's own state, not a proxy built from counters.
    for (alert, metric) in [
        (
            "SmtpOauthRelayAccountFailing",
            "smtp_oauth_relay_account_failing_since_timestamp_seconds",
        ),
        (
            "SmtpOauthRelayCredentialExpiring",
            "smtp_oauth_relay_credential_expiry_timestamp_seconds",
        ),
    ] {
        let rule = rules
            .iter()
            .find(|r| r.name == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        let names = metric_names(&rule_expr(rule));
        assert!(
            !names.is_empty() && names.iter().all(|n| n == metric),
            "{alert} uses {names:?}"
        );
        assert!(
            dashboard_names.contains(metric),
            "the dashboard shows {metric}"
        );
    }
    let mut alert_names = BTreeSet::new();
    for rule in &rules {
        let names = metric_names(&rule_expr(rule));
        assert!(!names.is_empty(), "alert {} names no metric", rule.name);
        alert_names.extend(names);
    }
    let missing = exposition.missing(&alert_names);
    assert!(
        missing.is_empty(),
        "the alerts use metrics /metrics does not have: {missing:?}"
    );
}

#[test]
fn the_checker_catches_a_misspelled_or_suffixless_name() {
    let exposition = Exposition::parse(
        "# HELP smtp_oauth_relay_queue_depth Messages waiting.\n\
         # TYPE smtp_oauth_relay_queue_depth gauge\n\
         # HELP smtp_oauth_relay_messages_accepted Messages accepted.\n\
         # TYPE smtp_oauth_relay_messages_accepted counter\n\
         # HELP smtp_oauth_relay_delay_seconds A histogram.\n\
         # TYPE smtp_oauth_relay_delay_seconds histogram\n\
         # HELP smtp_oauth_relay_up 1 while the relay runs.\n\
         # TYPE smtp_oauth_relay_up gauge\n\
         smtp_oauth_relay_up 1\n\
         # EOF\n",
    );
    let expr = r#"sum by (account) (rate(smtp_oauth_relay_messages_accepted_total{class=~"smtp_oauth_relay_in_a_string"}[5m]))
        + smtp_oauth_relay_queue_dpeth + smtp_oauth_relay_messages_accepted
        + histogram_quantile(0.9, rate(smtp_oauth_relay_delay_seconds_bucket[5m]))
        + smtp_oauth_relay_delay_seconds_sum + smtp_oauth_relay_queue_depth_total
        + smtp_oauth_relay_up + up"#;
    let names: Vec<String> = metric_names(expr);
    assert_eq!(
        names,
        [
            "smtp_oauth_relay_messages_accepted_total",
            "smtp_oauth_relay_queue_dpeth",
            "smtp_oauth_relay_messages_accepted",
            "smtp_oauth_relay_delay_seconds_bucket",
            "smtp_oauth_relay_delay_seconds_sum",
            "smtp_oauth_relay_queue_depth_total",
            "smtp_oauth_relay_up",
            "up",
        ]
    );
    assert_eq!(
        exposition.missing(&names),
        [
            // misspelled
            "smtp_oauth_relay_queue_dpeth",
            // a counter is queried with its _total suffix
            "smtp_oauth_relay_messages_accepted",
            // a gauge has no _total
            "smtp_oauth_relay_queue_depth_total",
        ]
        .into_iter()
        .map(String::from)
        .collect::<BTreeSet<_>>()
    );
}

#[test]
fn every_alert_says_what_happened_and_what_to_do() {
    let rules = alert_rules(&std::fs::read_to_string(alerts_path()).unwrap());
    assert!(rules.len() >= 6, "alert rules: {}", rules.len());
    for rule in &rules {
        for key in ["summary:", "description:", "severity:"] {
            assert!(
                rule.lines.iter().any(|l| l.trim_start().starts_with(key)),
                "alert {} has no {key}",
                rule.name
            );
        }
    }
}

/// `promtool check rules` and `promtool test rules` when promtool is installed (Debian's
/// `prometheus` package; `.ci/run` installs it), a clear SKIPPED line otherwise.
#[test]
fn promtool_accepts_the_rules_and_their_unit_tests() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED: promtool not found on PATH; install Debian's `prometheus` package to check deploy/monitoring/alerts.yml"
        );
        return;
    }
    for (subcommand, file) in [("check", "alerts.yml"), ("test", "alerts_test.yml")] {
        let output = Command::new("promtool")
            .args([subcommand, "rules", file])
            .current_dir(pack_dir())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "promtool {subcommand} rules {file} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_dashboard_has_what_an_import_needs() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "smtp-oauth-relay");
    assert_eq!(dashboard["title"], "smtp-oauth-relay");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus data source variable: {variables:?}"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id: {panel}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "a panel without queries: {panel}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{panel}");
        }
    }
}
