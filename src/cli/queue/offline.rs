//! The `queue` commands straight on the spool, when no relay runs on the state directory.
//!
//! Invariant: they work only while holding the state directory's lock (the one a running
//! relay holds), so they never race a relay's scheduler; the lock is released when they end.

use std::path::Path;

use serde_json::Value;

use super::QueueCommand;
use crate::config::Config;
use crate::spool::{Spool, unix_now};

/// The same operations straight on the spool, when no relay is running.
pub(super) async fn offline(config: &Config, command: &QueueCommand) -> Result<Value, String> {
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
