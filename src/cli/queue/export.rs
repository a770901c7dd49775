//! `queue export`: one queued or failed message, exactly as it goes to Exchange.
//!
//! Invariants: it reads the spool without changing it or taking its lock, so it is safe while
//! the relay runs; the content is verified (length and SHA-256) before it is written; a file
//! it writes is private (0600) whatever the umask, like the spool.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

/// `queue export`: the verified content of one entry, byte for byte as stored.
pub(super) fn export(config: &Config, id: &str, output: Option<&Path>) -> ExitCode {
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
