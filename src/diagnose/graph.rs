//! `check` for an account with `transport = "graph"` (issue 13): the credential and the token
//! as for SMTP (the token is for Microsoft Graph), then the token's claims read the Graph way
//! (audience Graph, `roles` with `Mail.Send`; `Mail.ReadWrite` or not, and which messages wait
//! without it), TCP and TLS to the Graph host (version, cipher, certificate), then one
//! harmless request through the relay's own Graph transport: `sendMail`
//! with an empty body, which Graph refuses with a 400 about the body once it accepted the
//! token and the mailbox (the testkit's emulator checks the permission and the RBAC scope
//! before the body too; whether Graph always does is not documented). Nothing is sent;
//! `send-test` proves the rest.
//!
//! Invariants: no token is printed; each failed step carries the fix with the account's
//! mailbox and client id filled in.

use std::time::SystemTime;

use super::{AccountReport, Step, credential_step, token_step};
use crate::config::AccountSettings;
use crate::oauth::claims::{self, GRAPH_APP_ID, TokenClaims};
use crate::transport::graph::{GraphFailure, GraphTransport};
use crate::vocab::address::Address;

/// The application permission `sendMail` and a draft's `/send` need.
const MAIL_SEND: &str = "Mail.Send";
/// The application permission the draft route needs.
const MAIL_READ_WRITE: &str = "Mail.ReadWrite";

/// Every step for a Graph account; `sender` is `check --from`'s address.
pub(super) async fn check_graph_account(
    account: &AccountSettings,
    sender: Option<&Address>,
) -> AccountReport {
    let mut steps = vec![credential_step(account, SystemTime::now())];
    let token = token_step(account, &mut steps).await;
    match token.as_ref().map(|t| claims::decode(t.secret().expose())) {
        None => steps.push(Step::skipped("token claims", "no token")),
        Some(None) => steps.push(Step::skipped(
            "token claims",
            "the token is not a readable JWT (that is allowed; the Graph request below decides)",
        )),
        Some(Some(decoded)) => {
            steps.push(claims_step(account, &decoded));
            steps.push(draft_route_step(account, &decoded));
        }
    }
    steps.push(tls_step(account).await);
    // Run even when the direct TLS probe failed: the relay's requests may go through a proxy.
    match &token {
        None => steps.push(Step::skipped("graph request", "no token")),
        Some(token) => steps.push(probe_step(account, token).await),
    }
    if let Some(sender) = sender.filter(|s| !account.mailbox.eq_ignore_case(s.as_str())) {
        steps.push(Step::skipped(
            "sender",
            format!(
                "Graph sends as {} (the mailbox in the URL); a message whose From: is <{sender}> also needs Send As on it (ErrorSendAsDenied otherwise), which Graph checks only when a message is sent: `send-test --from {sender} --to YOU` proves it",
                account.mailbox
            ),
        ));
    }
    AccountReport {
        account: account.name.clone(),
        provider: account.provider.name(),
        mailbox: account.mailbox.to_string(),
        smtp_server: account.graph_endpoint.clone(),
        ok: steps.iter().all(|s| s.status != "failed"),
        steps,
    }
}

/// `fix` with the account's values in place of the placeholders of the Graph verdicts.
fn filled(account: &AccountSettings, fix: &str) -> String {
    fix.replace("<mailbox>", account.mailbox.as_str())
        .replace("<client id>", &account.client_id)
}

/// The audience, `roles`, tenant and app of a Graph token.
fn claims_step(account: &AccountSettings, decoded: &TokenClaims) -> Step {
    let detail = format!(
        "aud {}, roles [{}], tid {}, appid {}",
        decoded.aud.as_deref().unwrap_or("-"),
        decoded.roles.join(", "),
        decoded.tid.as_deref().unwrap_or("-"),
        decoded.app_id.as_deref().unwrap_or("-"),
    );
    let resource = account.scope.trim_end_matches("/.default");
    let mut what = Vec::new();
    let mut fix = Vec::new();
    let is_graph = decoded
        .aud
        .as_deref()
        .is_some_and(|aud| aud == resource || aud == GRAPH_APP_ID || aud.contains("graph"));
    if !is_graph {
        what.push(format!(
            "the token is not for Microsoft Graph (aud {})",
            decoded.aud.as_deref().unwrap_or("missing")
        ));
        fix.push("remove the scope key of the account (a Graph account asks for <graph root>/.default of its cloud), or set it to https://graph.microsoft.com/.default".to_string());
    }
    if !decoded.roles.iter().any(|r| r == MAIL_SEND) {
        what.push(format!("the token carries no {MAIL_SEND} role"));
        fix.push(format!(
            "Entra admin center → App registrations → the app ({}) → API permissions → Add a permission → Microsoft Graph → Application permissions → Mail.Send, then Grant admin consent (the relay fetches a new token after it); with RBAC for Applications alone the token may carry no role, and the graph request step decides",
            account.client_id
        ));
    }
    if let Some(app_id) = &decoded.app_id
        && !app_id.eq_ignore_ascii_case(&account.client_id)
    {
        what.push(format!(
            "the token is for application {app_id}, the config says {}",
            account.client_id
        ));
        fix.push("set client_id to the Application (client) ID of the app registration".into());
    }
    if what.is_empty() {
        Step::ok("token claims", detail)
    } else {
        Step::failed(
            "token claims",
            format!("{}; {detail}", what.join("; ")),
            fix,
        )
    }
}

/// Whether the draft route (exact recipients when To/Cc name someone outside the envelope)
/// is open: it needs `Mail.ReadWrite`.
fn draft_route_step(account: &AccountSettings, decoded: &TokenClaims) -> Step {
    if decoded.roles.iter().any(|r| r == MAIL_READ_WRITE) {
        return Step::ok(
            "draft route",
            "the token carries Mail.ReadWrite: a message whose To/Cc name someone outside its envelope, or one over about 2.9 MB, goes through a draft whose recipients the relay sets (with upload sessions for its large attachments)",
        );
    }
    Step {
        step: "draft route",
        status: "skipped",
        detail: "the token carries no Mail.ReadWrite: messages whose To/Cc name someone who is not among their envelope recipients (a split envelope, a list expanded elsewhere) and messages over about 2.9 MB (upload sessions) wait in the queue, deferred as configuration, until it is granted; all other messages go through sendMail".into(),
        fix: vec![filled(
            account,
            "grant Microsoft Graph Application permission Mail.ReadWrite with admin consent, or with RBAC for Applications: New-ManagementRoleAssignment -App <client id> -Role \"Application Mail.ReadWrite\" -CustomResourceScope \"<scope name>\"",
        )],
    }
}

/// TCP and the TLS handshake to the Graph host (version, cipher, certificate).
async fn tls_step(account: &AccountSettings) -> Step {
    let authority = account
        .graph_endpoint
        .strip_prefix("https://")
        .unwrap_or(&account.graph_endpoint);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host, port.parse::<u16>().unwrap_or(443))
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match super::tls_probe::https_probe(host, port, &account.extra_roots).await {
        Ok(report) => {
            let days = report
                .certificate_not_after
                .map(super::tls_probe::days_left);
            Step::ok(
                "tls",
                format!(
                    "{host}:{port}: {} {}, certificate {} valid for {} more days",
                    report.tls_version,
                    report.cipher,
                    report.certificate_subject,
                    days.map_or("?".into(), |d| d.to_string())
                ),
            )
        }
        Err(error) if error.stage == "connect" && behind_proxy() => Step::skipped(
            "tls",
            format!(
                "{host}:{port}: {error}; no direct connection, and the relay's requests go through the proxy (HTTPS_PROXY): the graph request step shows whether Graph is reached"
            ),
        ),
        Err(error) if error.stage == "connect" => Step::failed(
            "tls",
            format!("{host}:{port}: {error}"),
            vec![format!(
                "check graph_endpoint ({}), DNS, and that outbound HTTPS (TCP {port}) is open, or set HTTPS_PROXY",
                account.graph_endpoint
            )],
        ),
        Err(error) => Step::failed(
            "tls",
            format!("{host}:{port}: {error}"),
            vec![
                format!(
                    "check that graph_endpoint names the Graph host of the account's cloud ({})",
                    account.graph_endpoint
                ),
                "behind a TLS-inspecting proxy, put the proxy's root certificate in ca_file".into(),
            ],
        ),
    }
}

/// True when the relay's HTTPS requests go through a proxy (the variables reqwest reads).
fn behind_proxy() -> bool {
    ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The empty `sendMail` through the relay's Graph transport.
async fn probe_step(account: &AccountSettings, token: &crate::oauth::token::AccessToken) -> Step {
    let transport = match GraphTransport::new(account) {
        Ok(transport) => transport,
        Err(e) => return Step::failed("graph request", e, vec!["check ca_file".into()]),
    };
    match transport.open(token).probe().await {
        Ok(detail) => Step::ok(
            "graph request",
            format!("{}: {detail}", account.graph_endpoint),
        ),
        Err(failure) => probe_failure(account, &failure),
    }
}

fn probe_failure(account: &AccountSettings, failure: &GraphFailure) -> Step {
    let verdict = failure.verdict();
    let mut fix = vec![filled(account, verdict.fix)];
    if failure.to_string().contains("ErrorAccessDenied") {
        fix.push(filled(
            account,
            "a consent or role change shows only in tokens issued after it, and RBAC for Applications changes take up to two hours: run check again later",
        ));
    }
    Step::failed(
        "graph request",
        format!(
            "{}: {failure} ({}, {})",
            account.graph_endpoint, verdict.class, verdict.reason
        ),
        fix,
    )
}
