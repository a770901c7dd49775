//! `[admin]`: the endpoint's address, its connection cap and request timeout, the host names
//! it answers to, and the bearer token for the queue API.
//!
//! Invariant: the token's value never appears in an error or a warning; `token_file` must be
//! a regular file of at most [`MAX_TOKEN_FILE_SIZE`] bytes holding one line of visible ASCII.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::Checker;
use super::listeners::same_socket;
use crate::config::raw::RawAdmin;
use crate::config::{
    AdminSettings, DEFAULT_ADMIN_ADDRESS, DEFAULT_ADMIN_MAX_CONNECTIONS,
    DEFAULT_ADMIN_REQUEST_TIMEOUT, ListenerSettings,
};
use crate::vocab::authority::Authority;
use crate::vocab::secret::Secret;

/// The largest `token_file` read (a token is a line; anything larger is a wrong file).
pub const MAX_TOKEN_FILE_SIZE: u64 = 4096;
/// Shorter tokens get a warning: they can be guessed.
const MIN_TOKEN_LENGTH: usize = 16;
/// Upper bound for `max_connections`: each one is a file descriptor SMTP may need.
const MAX_ADMIN_CONNECTIONS: usize = 1024;

pub(super) fn admin(
    checker: &mut Checker<'_>,
    raw: &RawAdmin,
    listeners: &[ListenerSettings],
) -> AdminSettings {
    let address = match raw.address.as_deref().unwrap_or(DEFAULT_ADMIN_ADDRESS) {
        "off" => None,
        text => match text.parse::<SocketAddr>() {
            Ok(address) => {
                if !address.ip().is_loopback() {
                    checker.warnings.push(format!(
                        "admin.address = {address}: health and metrics are reachable from the network (the queue API still answers only on loopback)"
                    ));
                }
                Some(address)
            }
            Err(_) => {
                checker.error(
                    "admin.address",
                    format!("\"{text}\" is not an IP:port like \"127.0.0.1:8025\" (or \"off\")"),
                );
                None
            }
        },
    };
    if let Some(admin) = address
        && let Some(index) = listeners.iter().position(|l| same_socket(l.address, admin))
    {
        checker.error(
            "admin.address",
            format!("{admin} overlaps listener[{index}]: give the admin endpoint its own port"),
        );
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS);
    if !(1..=MAX_ADMIN_CONNECTIONS).contains(&max_connections) {
        checker.error(
            "admin.max_connections",
            format!("must be between 1 and {MAX_ADMIN_CONNECTIONS} (default {DEFAULT_ADMIN_MAX_CONNECTIONS}): every connection is a file descriptor SMTP may need"),
        );
    }
    let request_timeout = raw.request_timeout.unwrap_or(DEFAULT_ADMIN_REQUEST_TIMEOUT);
    if request_timeout < Duration::from_secs(1) || request_timeout > Duration::from_secs(300) {
        checker.error(
            "admin.request_timeout",
            "must be between 1s and 5m (default 10s)",
        );
    }
    let mut allowed_hosts = Vec::new();
    for (index, entry) in raw.allowed_hosts.iter().flatten().enumerate() {
        match Authority::parse(entry.trim()) {
            Some(authority) => allowed_hosts.push(authority),
            None => checker.error(
                format!("admin.allowed_hosts[{index}]"),
                format!("\"{entry}\" is not a host name or IP, with an optional :port (like \"relay.example.lan\" or \"relay.example.lan:8025\")"),
            ),
        }
    }
    let token = raw.token_file.as_ref().and_then(|file| {
        let file = checker.resolve(file);
        match read_token(&file) {
            Ok((token, world_readable)) => {
                if token.expose().len() < MIN_TOKEN_LENGTH {
                    checker.warnings.push(format!(
                        "admin.token_file: the token in {} is shorter than {MIN_TOKEN_LENGTH} characters and can be guessed (make one with `openssl rand -hex 32`)",
                        file.display()
                    ));
                }
                if world_readable {
                    checker.warnings.push(format!(
                        "admin.token_file: every user can read {}: `chmod 600` it",
                        file.display()
                    ));
                }
                Some(token)
            }
            Err(message) => {
                checker.error(
                    "admin.token_file",
                    format!("{}: {message}", file.display()),
                );
                None
            }
        }
    });
    AdminSettings {
        address,
        ready_failing_after: raw.ready_failing_after.unwrap_or(Duration::from_secs(3600)),
        max_connections,
        request_timeout,
        allowed_hosts,
        token,
    }
}

/// The token in `path` and whether every user may read the file. Errors never quote the
/// file's content.
fn read_token(path: &Path) -> Result<(Secret, bool), String> {
    use std::os::unix::fs::PermissionsExt;
    let not_regular = "is not a regular file (it must hold the token on one line)";
    // Checked before opening, so that a FIFO or a device is never opened (that could block).
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if !metadata.is_file() {
        return Err(not_regular.into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let opened = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !opened.is_file() {
        return Err(not_regular.into());
    }
    if opened.len() > MAX_TOKEN_FILE_SIZE {
        return Err(format!(
            "is larger than {MAX_TOKEN_FILE_SIZE} bytes: it must hold only the token"
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_SIZE {
        return Err(format!(
            "is larger than {MAX_TOKEN_FILE_SIZE} bytes: it must hold only the token"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        "holds bytes that are not text; the token must be visible ASCII".to_string()
    })?;
    let token = text.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err("is empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the token must be one line of visible ASCII characters, without spaces (like the output of `openssl rand -hex 32`)"
                .into(),
        );
    }
    Ok((Secret::new(token), opened.permissions().mode() & 0o004 != 0))
}
