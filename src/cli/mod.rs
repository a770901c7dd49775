//! The command line: `serve`, `check`, `hash-password`, `demo`, `queue …`, `healthcheck`.
//!
//! Exit codes: 0 success; 1 the command ran and found a problem (e.g. `check` failed, `demo
//! --once` did not see its message arrive intact); 2 the configuration is invalid or the
//! relay could not start.

mod diagnostics;
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
            Some(from) => diagnostics::check_from(config.config, account, json, &from).await,
            None => diagnostics::check(config.config, account, json, config_only).await,
        },
        Command::SendTest {
            config,
            to,
            account,
            from,
        } => diagnostics::send_test(config.config, &to, account, from).await,
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
