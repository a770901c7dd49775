//! The `check` and `send-test` commands: load the config, run `crate::diagnose` for the
//! accounts asked for, and print its report for people (or as JSON), with the exit code a
//! script can test (0 all steps passed, 1 a step failed, 2 the config is unusable).
//!
//! Invariant: nothing here decides whether a step passed; `crate::diagnose` does, and this
//! file only prints what it says (through `outln!`, so a closed stdout ends quietly).

use std::path::PathBuf;
use std::process::ExitCode;

use super::load;
use crate::config::Config;

/// Print a report for people (a closed stdout ends the command quietly, see
/// [`output`]).
fn print_report(report: &crate::diagnose::AccountReport) {
    if report.account.is_empty() {
        crate::outln!("no account");
    } else {
        crate::outln!(
            "account {} ({} via {})",
            report.account,
            report.mailbox,
            report.smtp_server
        );
    }
    for step in &report.steps {
        let mark = match step.status {
            "ok" => "✓",
            "failed" => "✗",
            _ => "–",
        };
        crate::outln!("  {mark} {:<13} {}", step.step, step.detail);
        for fix in &step.fix {
            crate::outln!("      fix: {fix}");
        }
    }
}

/// With `[relay] instances` above 1: each account's share of its mailbox's limits.
fn print_instance_shares(config: &Config) {
    if config.relay.instances <= 1 {
        return;
    }
    for account in &config.accounts {
        crate::outln!(
            "account {}: instance share (1 of {} instances): {}",
            account.name,
            config.relay.instances,
            account
                .instance_share()
                .describe_share_of(account.mailbox_budget)
        );
    }
}

/// `check --json`: per account, this instance's limits and the whole mailbox's.
fn instance_shares_json(config: &Config) -> serde_json::Value {
    config
        .accounts
        .iter()
        .map(|account| {
            serde_json::json!({
                "account": account.name,
                "share": account.instance_share(),
                "mailbox": account.mailbox_budget,
            })
        })
        .collect()
}

pub(super) async fn check(
    path: PathBuf,
    only: Option<String>,
    json: bool,
    config_only: bool,
) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            if json {
                let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                crate::outln!(
                    "{}",
                    serde_json::json!({ "ok": false, "config_errors": list })
                );
            } else {
                eprintln!("{}: {errors}", path.display());
            }
            return ExitCode::from(2);
        }
    };
    let (users, networks) = config.policy.counts();
    if !json {
        for warning in &config.warnings {
            crate::outln!("warning: {warning}");
        }
        crate::outln!(
            "{}: configuration OK ({} listener(s), {} account(s), {users} user(s), {networks} network(s), spool in {})",
            path.display(),
            config.listeners.len(),
            config.accounts.len(),
            config.relay.state_dir.display()
        );
        print_instance_shares(&config);
    }
    if config_only {
        if json {
            crate::outln!(
                "{}",
                serde_json::json!({ "ok": true, "warnings": config.warnings, "instances": config.relay.instances, "instance_shares": instance_shares_json(&config) })
            );
        }
        return ExitCode::SUCCESS;
    }
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| only.as_ref().is_none_or(|name| &a.name == name))
        .collect();
    if accounts.is_empty() {
        eprintln!("no account named {}", only.unwrap_or_default());
        return ExitCode::from(2);
    }
    let mut reports = Vec::new();
    for account in accounts {
        let report = crate::diagnose::check_account(account, &config.relay.hostname).await;
        if !json {
            crate::outln!();
            print_report(&report);
        }
        reports.push(report);
    }
    let ok = reports.iter().all(|r| r.ok);
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({ "ok": ok, "warnings": config.warnings, "instances": config.relay.instances, "instance_shares": instance_shares_json(&config), "accounts": reports })
        );
    } else {
        crate::outln!();
        crate::outln!(
            "{}",
            if ok {
                "all checks passed"
            } else {
                "some checks failed: see the fix lines above"
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `check --from ADDR`: see [`crate::diagnose::check_sender`].
pub(super) async fn check_from(
    path: PathBuf,
    only: Option<String>,
    json: bool,
    from: &str,
) -> ExitCode {
    let Some(config) = load(&path) else {
        return ExitCode::from(2);
    };
    let sender = match crate::vocab::address::Address::parse(from) {
        Ok(sender) => sender,
        Err(e) => {
            eprintln!("--from {from}: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(report) = crate::diagnose::check_sender(
        &config.accounts,
        only.as_deref(),
        &sender,
        &config.relay.hostname,
    )
    .await
    else {
        eprintln!("no account named {}", only.unwrap_or_default());
        return ExitCode::from(2);
    };
    let ok = report.ok;
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({ "ok": ok, "from": sender.to_string(), "warnings": config.warnings, "accounts": [report] })
        );
    } else {
        crate::outln!("checking the sender <{sender}>");
        crate::outln!();
        print_report(&report);
        crate::outln!();
        crate::outln!(
            "{}",
            if ok {
                "all checks passed"
            } else {
                "some checks failed: see the fix lines above"
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(super) async fn send_test(
    path: PathBuf,
    to: &str,
    account: Option<String>,
    from: Option<String>,
) -> ExitCode {
    let Some(config) = load(&path) else {
        return ExitCode::from(2);
    };
    let parse = |text: &str| {
        crate::vocab::address::Address::parse(text).map_err(|e| format!("{text}: {e}"))
    };
    // Without --account, the account the relay would choose for --from.
    let routed = match (&account, from.as_deref().map(parse)) {
        (None, Some(Ok(sender))) => crate::diagnose::accounts_for_sender(&config.accounts, &sender)
            .first()
            .map(|(a, _)| a.name.clone()),
        _ => None,
    };
    let wanted = account.or(routed);
    let Some(account) = config
        .accounts
        .iter()
        .find(|a| wanted.as_ref().is_none_or(|name| &a.name == name))
    else {
        eprintln!("no account named {}", wanted.unwrap_or_default());
        return ExitCode::from(2);
    };
    let (to, from) = match (parse(to), from.as_deref().map(parse).transpose()) {
        (Ok(to), Ok(from)) => (to, from.unwrap_or_else(|| account.mailbox.clone())),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let body = crate::diagnose::test_message(&from, &to, &config.relay.hostname, account.provider);
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let result = async {
        let tokens = crate::oauth::token::TokenProvider::new(&account.client_app(), metrics)
            .map_err(|e| e.to_string())?;
        let token = tokens
            .token()
            .await
            .map_err(|e| format!("{e}. Fix: {}", e.fix()))?;
        // The relay's own transport of the account: SMTP (Exchange or Gmail), or Microsoft Graph.
        let upstream = crate::transport::Transport::new(account, &config.relay.hostname)?;
        let mut session = upstream.open(&token).await.map_err(|f| explain(&f))?;
        let mut envelope = crate::vocab::envelope::Envelope::new(
            &account.name,
            Some(from.clone()),
            vec![to.clone()],
            crate::vocab::envelope::ClientInfo {
                peer: "local".into(),
                helo: None,
                principal: "send-test".into(),
            },
            crate::spool::unix_now(),
        );
        envelope.id = "0000000000000000".into();
        let result = session
            .send(
                &envelope,
                std::slice::from_ref(&to),
                &crate::spool::Content::in_memory(body),
            )
            .await
            .map_err(|f| explain(&f))?;
        session.quit().await;
        match (result.reply, result.rejected.first()) {
            (Some(reply), _) => Ok(reply),
            (None, Some((_, refusal))) => Err(explain(refusal)),
            (None, None) => Err("the server accepted no recipient".to_string()),
        }
    };
    match result.await {
        Ok(reply) => {
            crate::outln!(
                "sent from <{from}> to <{to}> through {}: {reply}",
                account.name
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            crate::outln!("not sent: {message}");
            ExitCode::from(1)
        }
    }
}

fn explain(failure: &crate::transport::TransportError) -> String {
    let verdict = failure.verdict();
    let fix = if verdict.fix.is_empty() {
        String::new()
    } else {
        format!(" Fix: {}", verdict.fix)
    };
    format!("{failure} ({}, {}).{fix}", verdict.class, verdict.reason)
}
