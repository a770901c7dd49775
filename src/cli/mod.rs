//! The command line: `serve`, `check`, `hash-password`, `demo`, `queue …`, `healthcheck`.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (e.g. `check` failed, `demo
//! --once` did not see its message arrive intact); 2 the configuration is invalid or the
//! relay could not start.

pub mod output;
pub mod queue;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::Relay;
use crate::config::Config;
use crate::telemetry::LogFormat;
use crate::vocab::secret::Secret;

/// Where the configuration is read from by default (also `SMTP_OAUTH_RELAY_CONFIG`).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smtp-oauth-relay/relay.toml";

/// How long sessions and deliveries get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// SMTP relay for legacy devices and applications to Exchange Online (OAuth 2.0 / XOAUTH2).
#[derive(Debug, Parser)]
#[command(name = "smtp-oauth-relay", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "SMTP_OAUTH_RELAY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--config PATH` (or `SMTP_OAUTH_RELAY_CONFIG`). Global, so that it is accepted after a
/// nested subcommand too (`queue list --config relay.toml`).
#[derive(Debug, clap::Args)]
pub struct ConfigPath {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG_PATH, env = "SMTP_OAUTH_RELAY_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Validate the configuration, then diagnose each account's whole Microsoft chain
    /// (token, claims, connection, TLS, AUTH, sender) and say what to fix.
    Check {
        #[command(flatten)]
        config: ConfigPath,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Only validate the configuration file (no network).
        #[arg(long)]
        config_only: bool,
        /// Prove one sender address: the account the relay would choose for it (mailbox or
        /// send_as), that account's token and AUTH, and a MAIL FROM probe (nothing is sent).
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
    },
    /// Send a test message to ADDR now, straight to Exchange (not through the queue), and
    /// print Exchange's reply.
    SendTest {
        #[command(flatten)]
        config: ConfigPath,
        /// Recipient.
        #[arg(long)]
        to: String,
        /// The account to send through [default: the one that may send as --from (its
        /// mailbox or send_as), else the first].
        #[arg(long)]
        account: Option<String>,
        /// Sender [default: the account's mailbox].
        #[arg(long)]
        from: Option<String>,
    },
    /// Hash a password for a `[[user]]`'s `password_hash` (reads it without echo, or from stdin).
    HashPassword,
    /// Run the relay end to end against the built-in Exchange Online emulator.
    Demo(crate::demo::DemoArgs),
    /// Inspect and manage the queue (through the running relay's admin endpoint).
    Queue {
        #[command(flatten)]
        config: ConfigPath,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Exit 0 when the running relay is healthy (for Docker HEALTHCHECK and scripts).
    Healthcheck {
        #[command(flatten)]
        config: ConfigPath,
        /// Check readiness (/readyz) instead of liveness (/healthz).
        #[arg(long)]
        ready: bool,
    },
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config.config).await,
        Command::Check {
            config,
            account,
            json,
            config_only,
            from,
        } => match from {
            Some(from) => check_from(config.config, account, json, &from).await,
            None => check(config.config, account, json, config_only).await,
        },
        Command::SendTest {
            config,
            to,
            account,
            from,
        } => send_test(config.config, &to, account, from).await,
        Command::HashPassword => hash_password(),
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Queue {
            config,
            json,
            command,
        } => match load(&config.config) {
            Some(config) => queue::run(config, command, json).await,
            None => ExitCode::from(2),
        },
        Command::Healthcheck { config, ready } => match load(&config.config) {
            Some(config) => queue::healthcheck(&config, ready).await,
            None => ExitCode::from(2),
        },
    }
}

fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprintln!("{}: {errors}", path.display());
            None
        }
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let Some(config) = load(&path) else {
        return ExitCode::from(2);
    };
    crate::ops::fd_limit::raise_open_file_limit(
        (config.limits.max_connections + config.admin.max_connections) as u64,
    );
    let relay = match Relay::start(config).await {
        Ok(relay) => relay,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    run_until_stopped(&relay, &path).await;
    relay.shutdown(SHUTDOWN_GRACE).await;
    ExitCode::SUCCESS
}

/// Serve until SIGINT or SIGTERM; on SIGHUP, reload the configuration (a broken one is
/// refused with its errors logged, and the running one stays).
async fn run_until_stopped(relay: &Relay, path: &std::path::Path) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
        ) else {
            crate::app::wait_for_signal().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
                    match Config::load_off_runtime(path).await {
                        Ok(config) => match relay.reload(config).await {
                            Ok(()) => {}
                            Err(reason) => tracing::error!(%reason, "reload refused; the running configuration stays"),
                        },
                        Err(errors) => {
                            for error in &errors.0 {
                                tracing::error!(%error, "reload refused; the running configuration stays");
                            }
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    crate::app::wait_for_signal().await;
}

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

async fn check(path: PathBuf, only: Option<String>, json: bool, config_only: bool) -> ExitCode {
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
async fn check_from(path: PathBuf, only: Option<String>, json: bool, from: &str) -> ExitCode {
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

async fn send_test(
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
    let body = crate::diagnose::test_message(&from, &to, &config.relay.hostname);
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let result = async {
        let tokens = crate::oauth::token::TokenProvider::new(&account.client_app(), metrics)
            .map_err(|e| e.to_string())?;
        let token = tokens.token().await.map_err(|e| e.to_string())?;
        let upstream = crate::transport::smtp::SmtpTransport::new(account, &config.relay.hostname)?;
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

fn explain(failure: &crate::transport::smtp::SmtpFailure) -> String {
    let verdict = failure.verdict();
    let fix = if verdict.fix.is_empty() {
        String::new()
    } else {
        format!(" Fix: {}", verdict.fix)
    };
    format!("{failure} ({}, {}).{fix}", verdict.class, verdict.reason)
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("the two passwords differ");
                return ExitCode::from(1);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("cannot read the password: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("cannot read the password from stdin: {e}");
            return ExitCode::from(1);
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        eprintln!("the password is empty");
        return ExitCode::from(1);
    }
    match crate::policy::hash_password(&Secret::new(password)) {
        Ok(hash) => {
            crate::outln!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash the password: {e}");
            ExitCode::from(1)
        }
    }
}
