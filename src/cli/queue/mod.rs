//! `queue list | show ID | retry ID|--all | delete ID | failed`, and `healthcheck`.
//!
//! Against a running relay these go through its admin endpoint (so the relay's own scheduler
//! makes the change, with no race on the spool). When no relay runs on the state directory
//! (its lock is free), they work on the spool directly while holding the lock.
//!
//! This file maps each command to its admin endpoint call; `admin_client` is the HTTP client
//! (and `healthcheck`), `offline` the same operations on the spool (a relay stopped),
//! `export` reads one entry, `print` formats the answers.

use std::process::ExitCode;

use crate::config::Config;

mod admin_client;
mod export;
mod offline;
mod print;
use admin_client::admin_call;
pub use admin_client::healthcheck;
use export::export;
use offline::offline;
use print::print;

/// What to do with the queue.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// Messages waiting for delivery.
    List,
    /// One queued message in full.
    Show { id: String },
    /// Try one message (or all) now.
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a queued message without delivering it.
    Delete { id: String },
    /// Messages that failed for good, with their reason.
    Failed,
    /// Put a failed message (or all of them) back in the queue once the cause is fixed: it
    /// goes out now, to the recipients that failed, with a fresh retry schedule and max_age.
    Requeue {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Write a queued or failed message (exactly what goes to Exchange) to stdout or a file.
    /// Reads the spool without changing it, so it is safe while the relay runs.
    Export {
        id: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

/// Run a queue command. Exit 0 on success, 1 on failure, 2 on a bad configuration.
pub async fn run(config: Config, command: QueueCommand, json: bool) -> ExitCode {
    let (method, path) = match &command {
        QueueCommand::Export { id, output } => return export(&config, id, output.as_deref()),
        QueueCommand::List => (reqwest::Method::GET, "/queue".to_string()),
        QueueCommand::Show { id } => (reqwest::Method::GET, format!("/queue/{id}")),
        QueueCommand::Retry { id: Some(id), .. } => {
            (reqwest::Method::POST, format!("/queue/{id}/retry"))
        }
        QueueCommand::Retry {
            id: None,
            all: true,
        } => (reqwest::Method::POST, "/queue/retry".to_string()),
        QueueCommand::Retry {
            id: None,
            all: false,
        } => {
            eprintln!("give a queue id, or --all");
            return ExitCode::from(2);
        }
        QueueCommand::Delete { id } => (reqwest::Method::DELETE, format!("/queue/{id}")),
        QueueCommand::Requeue { id: Some(id), .. } => {
            (reqwest::Method::POST, format!("/failed/{id}/requeue"))
        }
        QueueCommand::Requeue {
            id: None,
            all: true,
        } => (reqwest::Method::POST, "/failed/requeue".to_string()),
        QueueCommand::Requeue {
            id: None,
            all: false,
        } => {
            eprintln!("give the id of a failed message, or --all");
            return ExitCode::from(2);
        }
        QueueCommand::Failed => (reqwest::Method::GET, "/failed".to_string()),
    };
    let result = match admin_call(&config, method, &path).await {
        Some(result) => result,
        None => offline(&config, &command).await,
    };
    match result {
        Ok(value) => {
            print(&command, &value, json);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}
