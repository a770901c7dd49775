//! The HTTP client of the relay's admin endpoint, for the `queue` commands and `healthcheck`.
//!
//! Invariants: every request has a 10-second timeout and bypasses any proxy (the endpoint is
//! local); the endpoint is reached on loopback when it listens on every address (the queue API
//! answers only there); the `[admin] token_file` token is sent as a bearer token and never
//! printed.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

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
pub(super) async fn admin_call(
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
