//! The status page's "Accounts" section: per account its transport and mailbox, the token's
//! state (valid until, or the last error; never the token), last delivery, "failing since",
//! messages waiting and the credential's days left.
//!
//! Invariant: every text from outside goes through [`escape`], as everywhere on the page.

use std::fmt::Write as _;

use super::super::history::{Sample, sum};
use super::{AdminState, Snapshot, age, escape};
use crate::config::TransportKind;
use crate::delivery::worker::AccountDelivery;
use crate::vocab::envelope::Envelope;

pub(super) fn accounts_section(out: &mut String, state: &AdminState, snapshot: &Snapshot) {
    out.push_str(
        "<section id=\"accounts\"><h2>Accounts</h2><div class=\"scroll\"><table>\
<tr><th>Account</th><th>Transport</th><th>Mailbox</th><th>Token</th><th>Token requests</th>\
<th>Last delivery</th><th>Delivered since start</th><th>Failing since</th><th>State</th><th>Waiting</th>\
<th>Credential expiry</th></tr>",
    );
    for delivery in state.deliveries.load().iter() {
        let name = &delivery.account.name;
        let waiting: Vec<&Envelope> = snapshot
            .queued
            .iter()
            .filter(|e| &e.account == name)
            .collect();
        let latest = waiting
            .iter()
            .filter_map(|e| e.last_attempt.as_ref())
            .max_by_key(|a| a.at);
        let of_account = |metric: &str| -> u64 {
            let matching: Vec<Sample> = snapshot
                .samples
                .iter()
                .filter(|s| s.label("account") == Some(name.as_str()))
                .cloned()
                .collect();
            sum(&matching, metric)
        };
        let token_requests = of_account("smtp_oauth_relay_token_requests_total");
        let token_failures = of_account("smtp_oauth_relay_token_failures_total");
        let delivered = of_account("smtp_oauth_relay_messages_delivered_total");
        let state_cell = match (delivery.failing_since(), latest) {
            (Some(since), attempt) => {
                let mut cell = format!(
                    "<span class=\"bad\">failing for {}</span> <span class=\"muted\">(since {})</span>",
                    age(snapshot.now.saturating_sub(since)),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(since)
                    )
                );
                if let Some(attempt) = attempt {
                    let _ = write!(
                        cell,
                        "<div class=\"muted\">{} at {}: {}</div><div class=\"fix\">Fix: {}</div>",
                        escape(&attempt.class),
                        escape(&attempt.stage),
                        escape(&attempt.reply),
                        escape(&attempt.hint)
                    );
                } else {
                    cell.push_str("<div class=\"muted\">no message has been tried yet; see the log for the reason</div>");
                }
                cell
            }
            (None, Some(attempt)) => format!(
                "<span class=\"ok\">working</span><div class=\"muted\">last deferral: {}</div><div class=\"fix\">Fix: {}</div>",
                escape(&attempt.reply),
                escape(&attempt.hint)
            ),
            (None, None) => "<span class=\"ok\">working</span>".to_string(),
        };
        let _ = write!(
            out,
            "<tr class=\"account\" data-account=\"{n}\"><td data-label=\"Account\">{n}</td><td data-label=\"Transport\" class=\"transport\">{transport}</td><td data-label=\"Mailbox\">{mailbox}</td>\
<td data-label=\"Token\" class=\"token\">{token}</td>\
<td data-label=\"Token requests\">{token_requests} ({token_failures} failed)</td>\
<td data-label=\"Last delivery\" class=\"last-delivery\">{last_delivery}</td>\
<td data-label=\"Delivered since start\">{delivered}</td>\
<td data-label=\"Failing since\" class=\"failing-since\">{failing_since}</td><td data-label=\"State\">{state_cell}</td>\
<td data-label=\"Waiting\" class=\"waiting\">{waiting}</td>\
<td data-label=\"Credential expiry\" class=\"credential-expiry\">{credential}</td></tr>",
            n = escape(name),
            transport = transport_cell(delivery),
            mailbox = escape(&delivery.account.mailbox.to_string()),
            token = token_cell(&delivery.tokens.status(), snapshot.now),
            last_delivery = delivery.health.last_delivered().map_or_else(
                || "<span class=\"muted\">none since the relay started</span>".to_string(),
                |at| moment(at, snapshot.now)
            ),
            failing_since = delivery.failing_since().map_or_else(
                || "<span class=\"muted\">not failing</span>".to_string(),
                |since| format!("<span class=\"bad\">{}</span>", moment(since, snapshot.now))
            ),
            waiting = waiting.len(),
            credential = credential_cell(&delivery.account, snapshot.now),
        );
    }
    out.push_str("</table></div><p class=\"muted\">Token requests and deliveries are totals since the relay started. Accounts of one app share one token (and so its state). Failing since: the first failure of the account's current failing streak (token, connection or AUTH), until a delivery.</p></section>");
}

/// The account's transport and the server it reaches: `SMTP` or `Graph`, then the provider
/// and the host.
fn transport_cell(delivery: &AccountDelivery) -> String {
    let kind = match delivery.account.transport {
        TransportKind::Smtp => "SMTP",
        TransportKind::Graph => "Graph",
    };
    format!(
        "{kind}<div class=\"muted\">{} · {}</div>",
        delivery.account.provider.name(),
        escape(&delivery.transport.server())
    )
}

/// `2026-12-04T21:00:00Z (5m 3s ago)`, or `(in …)` for a moment ahead.
fn moment(at: u64, now: u64) -> String {
    let text = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
    );
    if at > now {
        format!("{text} (in {})", age(at - now))
    } else {
        format!("{text} ({} ago)", age(now - at))
    }
}

fn unix(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The account's token: valid until when, or the last error (never the token).
fn token_cell(status: &crate::oauth::token::TokenStatus, now: u64) -> String {
    let mut cell = match status.valid_until {
        Some(until) if unix(until) > now => {
            format!(
                "<span class=\"ok\">valid until</span> {}",
                moment(unix(until), now)
            )
        }
        Some(until) => format!(
            "<span class=\"muted\">expired at {}; a new one is fetched for the next delivery</span>",
            moment(unix(until), now)
        ),
        None => "<span class=\"muted\">none cached</span>".to_string(),
    };
    if let Some((at, error)) = &status.last_error {
        let _ = write!(
            cell,
            "<div class=\"bad token-error\">last error {}: {}</div>",
            moment(unix(*at), now),
            escape(error)
        );
    }
    cell
}

/// Days until the account's credential expires, or what to configure for a secret.
fn credential_cell(account: &crate::config::AccountSettings, now: u64) -> String {
    let now_time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now);
    match account.credential_expiry() {
        None if account.provider == crate::vocab::provider::Provider::Google => {
            "<span class=\"muted\">service account key (no expiry in the key file)</span>"
                .to_string()
        }
        None => "<span class=\"muted\">no date for the secret: set client_secret_expires</span>"
            .to_string(),
        Some(expiry) => {
            let days = expiry.days_left(now_time);
            let class = if days < 14 {
                "bad"
            } else if days < 30 {
                "fix"
            } else {
                "ok"
            };
            format!(
                "<span class=\"{class}\">{days} days</span> <span class=\"muted\">({} {})</span>",
                expiry.kind.as_str(),
                escape(&expiry.summary(now_time))
            )
        }
    }
}
