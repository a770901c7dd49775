//! `queue list | show ID | retry ID|--all | delete ID | failed`, and `healthcheck`.
//!
//! Against a running relay these go through its admin endpoint (so the relay's own scheduler
//! makes the change, with no race on the spool). When no relay runs on the state directory
//! (its lock is free), they work on the spool directly while holding the lock.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::spool::{Spool, unix_now};

mod print;
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

fn http() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .ok()
}

/// Where the commands reach the admin endpoint: its address, or loopback when it listens on
/// every address (the queue API answers only on loopback).
fn admin_target(config: &Config) -> Option<std::net::SocketAddr> {
    let mut address = config.admin.address?;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(address)
}

/// Call the admin endpoint, with the `[admin] token_file` token when there is one; `None`
/// when no relay answers there.
async fn admin_call(
    config: &Config,
    method: reqwest::Method,
    path: &str,
) -> Option<Result<Value, String>> {
    let address = admin_target(config)?;
    let url = format!("http://{address}{path}");
    let mut request = http()?.request(method, &url);
    if let Some(token) = &config.admin.token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.ok()?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Some(if status.is_success() {
        serde_json::from_str(&body).map_err(|e| format!("unexpected answer from {url}: {e}"))
    } else {
        Err(body.trim().to_string())
    })
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

/// The same operations straight on the spool, when no relay is running.
async fn offline(config: &Config, command: &QueueCommand) -> Result<Value, String> {
    let state_dir = &config.relay.state_dir;
    let lock = lock(state_dir).map_err(|busy| match config.admin.address {
        Some(address) => format!("{busy}; its admin endpoint {address} does not answer"),
        None => format!(
            "{busy} with [admin] address = \"off\": the queue commands need the admin endpoint (or a stopped relay)"
        ),
    })?;
    let (spool, _) = Spool::open(state_dir).map_err(|e| e.to_string())?;
    let entries = |list: Vec<crate::vocab::envelope::Envelope>| -> Value {
        serde_json::json!(list.iter().map(offline_summary).collect::<Vec<_>>())
    };
    let result = match command {
        QueueCommand::List => spool
            .list_queued()
            .await
            .map(entries)
            .map_err(|e| e.to_string()),
        QueueCommand::Failed => spool
            .list_failed()
            .await
            .map(entries)
            .map_err(|e| e.to_string()),
        QueueCommand::Show { id } => spool
            .load(id)
            .await
            .map(|e| offline_summary(&e))
            .map_err(|_| format!("no queued message {id}")),
        QueueCommand::Retry { id, .. } => {
            let targets = match id {
                Some(id) => vec![
                    spool
                        .load(id)
                        .await
                        .map_err(|_| format!("no queued message {id}"))?,
                ],
                None => spool.list_queued().await.map_err(|e| e.to_string())?,
            };
            for mut envelope in targets.iter().cloned() {
                envelope.next_attempt = unix_now();
                spool.update(&envelope).await.map_err(|e| e.to_string())?;
            }
            Ok(
                serde_json::json!({ "retried": targets.len(), "note": "the relay is not running; they go out when it starts" }),
            )
        }
        QueueCommand::Requeue { id, .. } => {
            let ids = match id {
                Some(id) => vec![id.clone()],
                None => spool
                    .list_failed()
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|e| e.id)
                    .collect(),
            };
            let mut errors = Vec::new();
            for id in &ids {
                match spool.requeue(id).await {
                    Ok(_) => {}
                    Err(crate::spool::SpoolError::NotFound(_)) => {
                        errors.push(format!("no failed message {id}"))
                    }
                    Err(error) => errors.push(format!("{id}: {error}")),
                }
            }
            if id.is_some()
                && let Some(error) = errors.first()
            {
                return Err(error.clone());
            }
            Ok(serde_json::json!({
                "requeued": ids.len() - errors.len(),
                "errors": errors,
                "note": "the relay is not running; they go out when it starts",
            }))
        }
        // Handled by `export` before the admin endpoint is asked.
        QueueCommand::Export { .. } => Err("export reads the spool itself".to_string()),
        QueueCommand::Delete { id } => {
            spool
                .load(id)
                .await
                .map_err(|_| format!("no queued message {id}"))?;
            spool.remove(id).await.map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "deleted": id }))
        }
    };
    drop(lock);
    result
}

/// `queue export`: the verified content of one entry, byte for byte as stored.
fn export(config: &Config, id: &str, output: Option<&Path>) -> ExitCode {
    use std::io::Write;
    let (envelope, content, stored_in) =
        match crate::spool::read_stored_entry(&config.relay.state_dir, id) {
            Ok(found) => found,
            Err(crate::spool::SpoolError::NotFound(_)) => {
                eprintln!("no queued or failed message {id}");
                return ExitCode::from(1);
            }
            Err(error) => {
                eprintln!("cannot export {id}: {error}");
                return ExitCode::from(1);
            }
        };
    let written = match output {
        // The message is someone's mail: 0600 whatever the umask, like the spool.
        Some(path) => crate::spool::fsio::create_private(path)
            .and_then(|file| {
                let mut out = std::io::BufWriter::new(file);
                content.write_to(&mut out)?;
                crate::spool::fsio::sync_file(
                    &out.into_inner()
                        .map_err(std::io::IntoInnerError::into_error)?,
                )
            })
            .map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            match content.write_to(&mut out).and_then(|()| out.flush()) {
                // The reader went away (`queue export ID | head`): end quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                written => written.map_err(|e| format!("cannot export {id}: {e}")),
            }
        }
    };
    match written {
        Ok(()) => {
            if let Some(path) = output {
                let state = match stored_in {
                    crate::spool::StoredIn::Queue => "queued",
                    crate::spool::StoredIn::Failed => "failed",
                };
                eprintln!(
                    "{state} message {} ({} bytes, from <{}>) written to {}",
                    envelope.id,
                    content.len(),
                    envelope
                        .sender
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

fn lock(state_dir: &Path) -> Result<std::fs::File, String> {
    // Private whatever the umask, as the relay creates it.
    let file = crate::spool::fsio::open_private(&state_dir.join("relay.lock"))
        .map_err(|e| format!("cannot open the spool in {}: {e}", state_dir.display()))?;
    file.try_lock()
        .map_err(|_| format!("a relay is running on {}", state_dir.display()))?;
    Ok(file)
}

fn offline_summary(envelope: &crate::vocab::envelope::Envelope) -> Value {
    crate::ops::admin::entry_summary(envelope, false)
}

/// `healthcheck`: exit 0 when the relay's `/healthz` (or `/readyz` with `ready`) answers 200.
pub async fn healthcheck(config: &Config, ready: bool) -> ExitCode {
    let Some(address) = admin_target(config) else {
        eprintln!("the admin endpoint is off ([admin] address = \"off\")");
        return ExitCode::from(2);
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    let Some(client) = http() else {
        return ExitCode::from(1);
    };
    match client.get(format!("http://{address}{path}")).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            let status = response.status();
            eprintln!(
                "{path}: {status} {}",
                response.text().await.unwrap_or_default().trim()
            );
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("{path}: no answer from {address}: {error}");
            ExitCode::from(1)
        }
    }
}
