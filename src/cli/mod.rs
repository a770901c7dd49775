//! The command line: `serve`, `check`, `hash-password`, `demo`, `queue …`, `healthcheck`.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (e.g. `check` failed, `demo
//! --once` did not see its message arrive intact); 2 the configuration is invalid or the
//! relay could not start.

pub mod queue;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::app::Relay;
use crate::config::Config;
use crate::secret::Secret;
use crate::telemetry::LogFormat;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve {
        /// The configuration file.
        #[arg(
            long,
            short,
            default_value = "/etc/smtp-oauth-relay/relay.toml",
            env = "SMTP_OAUTH_RELAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Validate the configuration and report every problem.
    Check {
        /// The configuration file.
        #[arg(
            long,
            short,
            default_value = "/etc/smtp-oauth-relay/relay.toml",
            env = "SMTP_OAUTH_RELAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Hash a password for a [[user]]'s password_hash (reads it without echo, or from stdin).
    HashPassword,
    /// Run the relay end to end against the built-in Exchange Online emulator.
    Demo(crate::demo::DemoArgs),
    /// Inspect and manage the queue (through the running relay's admin endpoint).
    Queue {
        /// The configuration file.
        #[arg(
            long,
            short,
            default_value = "/etc/smtp-oauth-relay/relay.toml",
            env = "SMTP_OAUTH_RELAY_CONFIG"
        )]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Exit 0 when the running relay is healthy (for Docker HEALTHCHECK and scripts).
    Healthcheck {
        /// The configuration file.
        #[arg(
            long,
            short,
            default_value = "/etc/smtp-oauth-relay/relay.toml",
            env = "SMTP_OAUTH_RELAY_CONFIG"
        )]
        config: PathBuf,
        /// Check readiness (/readyz) instead of liveness (/healthz).
        #[arg(long)]
        ready: bool,
    },
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Check { config } => check(config),
        Command::HashPassword => hash_password(),
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Queue {
            config,
            json,
            command,
        } => match load(&config) {
            Some(config) => queue::run(config, command, json).await,
            None => ExitCode::from(2),
        },
        Command::Healthcheck { config, ready } => match load(&config) {
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
    let relay = match Relay::start(config).await {
        Ok(relay) => relay,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("cannot start: {error}");
            return ExitCode::from(2);
        }
    };
    wait_for_signal().await;
    relay.shutdown(SHUTDOWN_GRACE).await;
    ExitCode::SUCCESS
}

/// Wait for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check(path: PathBuf) -> ExitCode {
    let Some(config) = load(&path) else {
        return ExitCode::from(2);
    };
    for warning in &config.warnings {
        println!("warning: {warning}");
    }
    let (users, networks) = config.policy.counts();
    println!(
        "{}: configuration OK ({} listener(s), {} account(s), {users} user(s), {networks} network(s), spool in {})",
        path.display(),
        config.listeners.len(),
        config.accounts.len(),
        config.relay.state_dir.display()
    );
    ExitCode::SUCCESS
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
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot hash the password: {e}");
            ExitCode::from(1)
        }
    }
}
