//! `GET /` on the admin endpoint: a read-only HTML status page for an administrator's browser
//! (accounts, the queue, listeners, refusals and the last hour's traffic), server-rendered,
//! with inline CSS and an inline SVG chart, no script and no external asset, refreshing itself
//! every 15 seconds.
//!
//! Invariants: every text that comes from outside (addresses, replies, fixes, ids, labels)
//! goes through [`escape`]; the page names people, so the routes serve it under the same rule
//! as the queue API (loopback only, or the bearer token when `token_file` is set); it shows no
//! secret and no message content; it only reads (spool listings, the queue, the counters).
//! Per account it shows the token's state ([`crate::oauth::token::TokenProvider::status`]: its
//! expiry or the last error, never the token), the last delivery and "failing since" (the
//! account's [`crate::delivery::health::AccountHealth`]) and the credential's days left.
//! One page lists a bounded amount ([`FAILURES_SHOWN`], [`RECIPIENTS_SHOWN`], [`REASONS_SHOWN`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::AdminState;

mod accounts;

use super::history::{History, Sample, Traffic, parse_exposition, sum};
use crate::spool::unix_now;
use crate::vocab::envelope::Envelope;
use accounts::accounts_section;

/// Failed messages listed on the page, newest first.
pub const FAILURES_SHOWN: usize = 50;
/// Recipients shown per failed message (a message can have hundreds).
pub const RECIPIENTS_SHOWN: usize = 5;
/// Reasons of deferral shown, the commonest first (replies can differ per message).
pub const REASONS_SHOWN: usize = 20;

/// `text` made safe for HTML text and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// A duration in seconds for people: `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
fn age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// What the page shows, read from the relay's state.
struct Snapshot {
    now: u64,
    queued: Vec<Envelope>,
    failed: Vec<Envelope>,
    listing_errors: Vec<String>,
    samples: Vec<Sample>,
    minutes: Vec<Traffic>,
}

/// Render the page from the relay's state now.
pub async fn render(state: &AdminState, history: &History) -> String {
    let mut listing_errors = Vec::new();
    let queued = state.spool.list_queued().await.unwrap_or_else(|error| {
        listing_errors.push(format!("cannot list the queue: {error}"));
        Vec::new()
    });
    let failed = state.spool.list_failed().await.unwrap_or_else(|error| {
        listing_errors.push(format!("cannot list failed messages: {error}"));
        Vec::new()
    });
    let snapshot = Snapshot {
        now: unix_now(),
        queued,
        failed,
        listing_errors,
        samples: parse_exposition(&state.metrics.encode()),
        minutes: history.minutes(),
    };
    let mut body = String::new();
    accounts_section(&mut body, state, &snapshot);
    queue_section(&mut body, &snapshot);
    failures_section(&mut body, &snapshot);
    connections_section(&mut body, &snapshot);
    chart_section(&mut body, &snapshot.minutes);
    page(&body, snapshot.now)
}

fn page(body: &str, now: u64) -> String {
    let generated = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(now),
    );
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"15\">\
<title>smtp-oauth-relay status</title><style>{CSS}</style></head><body>\
<header><h1>smtp-oauth-relay</h1><p class=\"muted\">status at {generated} (refreshes every 15 s)</p></header>\
{body}</body></html>\n"
    )
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;\
max-width:1200px;padding:12px;color:#1b1f24;background:#f6f7f9}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .4em}\
section{background:#fff;border:1px solid #d8dce1;border-radius:6px;padding:8px 12px;margin:10px 0}\
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef1;vertical-align:top;\
overflow-wrap:break-word}th{font-weight:600;background:#f0f2f5}\
.muted{color:#5b6470;font-size:.9em}.bad{color:#b3261e;font-weight:600}.ok{color:#1e7b34;font-weight:600}\
.fix{background:#fff4e5;border-left:3px solid #e08a00;padding:4px 8px}\
.counts{display:flex;flex-wrap:wrap;gap:8px}.count{flex:1 1 120px;border:1px solid #d8dce1;\
border-radius:6px;padding:6px 10px}.count b{display:block;font-size:1.6em}\
svg{max-width:100%;height:auto}\
@media (max-width:640px){table,tbody,tr,td{display:block;width:auto}th,tr:has(th){display:none}\
tr{border-bottom:2px solid #d8dce1;padding:4px 0}td{border:0;padding:2px 4px}\
td[data-label]::before{content:attr(data-label) \": \";font-weight:600;color:#5b6470}}";

fn queue_section(out: &mut String, snapshot: &Snapshot) {
    let (deferred, first_try): (Vec<&Envelope>, Vec<&Envelope>) = snapshot
        .queued
        .iter()
        .partition(|e| e.last_attempt.is_some());
    let oldest = snapshot
        .queued
        .iter()
        .map(|e| {
            crate::vocab::envelope::id_created_millis(&e.id)
                .map_or(e.received_at, |millis| millis / 1000)
        })
        .min()
        .map_or_else(
            || "none waiting".to_string(),
            |at| age(snapshot.now.saturating_sub(at)),
        );
    let _ = write!(
        out,
        "<section id=\"queue\"><h2>Queue</h2><div class=\"counts\">\
<div class=\"count\">queued<b id=\"count-queued\">{}</b></div>\
<div class=\"count\">deferred<b id=\"count-deferred\">{}</b></div>\
<div class=\"count\">failed<b id=\"count-failed\">{}</b></div>\
<div class=\"count\">oldest waiting<b id=\"oldest\">{}</b></div></div>\
<p class=\"muted\">queued: not tried yet; deferred: tried and waiting for the next attempt; failed: given up (kept in the spool's failed/).</p>",
        first_try.len(),
        deferred.len(),
        snapshot.failed.len(),
        oldest
    );
    for error in &snapshot.listing_errors {
        let _ = write!(out, "<p class=\"bad\">{}</p>", escape(error));
    }
    let mut by_reason: BTreeMap<(&str, &str, &str), Vec<&Envelope>> = BTreeMap::new();
    for envelope in &deferred {
        if let Some(attempt) = &envelope.last_attempt {
            by_reason
                .entry((&attempt.reply, &attempt.class, &attempt.hint))
                .or_default()
                .push(envelope);
        }
    }
    if !by_reason.is_empty() {
        out.push_str(
            "<h2>Deferred, by reason</h2><div class=\"scroll\"><table>\
<tr><th>Messages</th><th>Last reply</th><th>Class</th><th>Fix</th><th>Detail</th></tr>",
        );
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort_by_key(|(_, envelopes)| std::cmp::Reverse(envelopes.len()));
        let hidden = reasons.len().saturating_sub(REASONS_SHOWN);
        for ((reply, class, hint), envelopes) in reasons.iter().take(REASONS_SHOWN) {
            let links: Vec<String> = envelopes
                .iter()
                .take(10)
                .map(|e| format!("<a href=\"/queue/{id}\">{id}</a>", id = escape(&e.id)))
                .collect();
            let _ = write!(
                out,
                "<tr class=\"deferred-reason\"><td data-label=\"Messages\">{}</td><td data-label=\"Last reply\">{}</td><td data-label=\"Class\">{}</td><td data-label=\"Fix\">{}</td><td data-label=\"Detail\">{}</td></tr>",
                envelopes.len(),
                escape(reply),
                escape(class),
                escape(hint),
                links.join(" ")
            );
        }
        out.push_str("</table></div>");
        if hidden > 0 {
            let _ = write!(
                out,
                "<p class=\"muted\">and {hidden} rarer reasons (see <code>smtp-oauth-relay queue list</code>)</p>"
            );
        }
    }
    out.push_str("</section>");
}

fn failures_section(out: &mut String, snapshot: &Snapshot) {
    let mut failed: Vec<&Envelope> = snapshot.failed.iter().collect();
    let failed_at = |e: &Envelope| {
        e.failures
            .iter()
            .map(|f| f.at)
            .max()
            .unwrap_or(e.received_at)
    };
    failed.sort_by_key(|e| std::cmp::Reverse(failed_at(e)));
    let _ = write!(
        out,
        "<section id=\"failures\"><h2>Last failures</h2><p class=\"muted\">the newest {FAILURES_SHOWN} of {} failed messages; details as JSON: <a href=\"/failed\">/failed</a></p>",
        snapshot.failed.len()
    );
    if failed.is_empty() {
        out.push_str("<p>No failed message.</p></section>");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table><tr><th>When</th><th>Message</th><th>From</th>\
<th>Recipient</th><th>Reply</th><th>Class</th><th>Fix</th></tr>",
    );
    for envelope in failed.into_iter().take(FAILURES_SHOWN) {
        let sender = envelope
            .sender
            .as_ref()
            .map_or_else(|| "<>".to_string(), ToString::to_string);
        for failure in envelope.failures.iter().take(RECIPIENTS_SHOWN) {
            let _ = write!(
                out,
                "<tr class=\"failure\"><td data-label=\"When\">{} ago</td><td data-label=\"Message\"><a href=\"/failed\">{}</a></td><td data-label=\"From\">{}</td><td data-label=\"Recipient\">{}</td>\
<td data-label=\"Reply\">{}</td><td data-label=\"Class\">{}</td><td data-label=\"Fix\">{}</td></tr>",
                age(snapshot.now.saturating_sub(failure.at)),
                escape(&envelope.id),
                escape(&sender),
                escape(&failure.recipient.to_string()),
                escape(&failure.reply),
                escape(&failure.class),
                escape(&failure.hint)
            );
        }
        let more = envelope.failures.len().saturating_sub(RECIPIENTS_SHOWN);
        if more > 0 {
            let _ = write!(
                out,
                "<tr class=\"failure-more\"><td colspan=\"7\" class=\"muted\">and {more} more recipients of {}</td></tr>",
                escape(&envelope.id)
            );
        }
    }
    out.push_str("</table></div></section>");
}

fn connections_section(out: &mut String, snapshot: &Snapshot) {
    out.push_str(
        "<section id=\"connections\"><h2>Listeners</h2><div class=\"scroll\"><table>\
<tr><th>Listener</th><th>Connections now</th><th>Connections since start</th></tr>",
    );
    let listeners: Vec<&Sample> = snapshot
        .samples
        .iter()
        .filter(|s| s.name == "smtp_oauth_relay_inbound_connections_active")
        .collect();
    for active in listeners {
        let listener = active.label("listener").unwrap_or_default();
        let total: Vec<Sample> = snapshot
            .samples
            .iter()
            .filter(|s| {
                s.name == "smtp_oauth_relay_inbound_connections_total"
                    && s.label("listener") == Some(listener)
            })
            .cloned()
            .collect();
        let _ = write!(
            out,
            "<tr><td data-label=\"Listener\">{}</td><td data-label=\"Connections now\">{}</td><td data-label=\"Connections since start\">{}</td></tr>",
            escape(listener),
            active.value,
            sum(&total, "smtp_oauth_relay_inbound_connections_total")
        );
    }
    let _ = write!(
        out,
        "</table></div><h2>Refusals since start</h2><p class=\"muted\">totals since the relay started (the relay keeps no per-hour count; the chart below and Prometheus give rates)</p>\
<div class=\"scroll\"><table><tr><th>What</th><th>Reason</th><th>Count</th></tr>\
<tr><td data-label=\"What\">AUTH failures</td><td data-label=\"Reason\"></td><td data-label=\"Count\">{}</td></tr>",
        sum(&snapshot.samples, "smtp_oauth_relay_auth_failures_total")
    );
    for (metric, what) in [
        (
            "smtp_oauth_relay_inbound_connections_refused_total",
            "connections refused",
        ),
        (
            "smtp_oauth_relay_messages_refused_total",
            "messages refused",
        ),
    ] {
        for sample in snapshot.samples.iter().filter(|s| s.name == metric) {
            let _ = write!(
                out,
                "<tr><td data-label=\"What\">{what}</td><td data-label=\"Reason\">{}</td><td data-label=\"Count\">{}</td></tr>",
                escape(sample.label("reason").unwrap_or_default()),
                sample.value
            );
        }
    }
    out.push_str("</table></div></section>");
}

const CHART_WIDTH: u64 = 600;
const CHART_HEIGHT: u64 = 160;

fn chart_section(out: &mut String, minutes: &[Traffic]) {
    out.push_str("<section id=\"traffic\"><h2>Last hour, per minute</h2>");
    if minutes.is_empty() {
        out.push_str("<p class=\"muted\">The chart fills in one point a minute from the relay's start.</p></section>");
        return;
    }
    let peak = minutes
        .iter()
        .map(|m| m.accepted.max(m.delivered).max(m.deferred))
        .max()
        .unwrap_or(0)
        .max(1);
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"messages per minute\">\
<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#fafbfc\" stroke=\"#d8dce1\"/>\
<text x=\"4\" y=\"12\" font-size=\"11\" fill=\"#5b6470\">{peak}/min</text>",
        w = CHART_WIDTH,
        h = CHART_HEIGHT
    );
    for (series, color, value) in [
        (
            "accepted",
            "#2f6fdf",
            (|m: &Traffic| m.accepted) as fn(&Traffic) -> u64,
        ),
        ("delivered", "#1e7b34", |m: &Traffic| m.delivered),
        ("deferred", "#e08a00", |m: &Traffic| m.deferred),
    ] {
        let points: Vec<String> = minutes
            .iter()
            .enumerate()
            .map(|(index, minute)| {
                let slots = super::history::SLOTS as u64 - 1;
                let offset = (super::history::SLOTS - minutes.len()) as u64;
                let x = (offset + index as u64) * CHART_WIDTH / slots;
                let y = CHART_HEIGHT - 4 - value(minute) * (CHART_HEIGHT - 20) / peak;
                format!("{x},{y}")
            })
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"{series}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    let total = |value: fn(&Traffic) -> u64| minutes.iter().map(value).sum::<u64>();
    let _ = write!(
        out,
        "</svg><p class=\"muted\"><span style=\"color:#2f6fdf\">■</span> accepted {} \
<span style=\"color:#1e7b34\">■</span> delivered {} <span style=\"color:#e08a00\">■</span> deferred {} \
over the last {} minutes (one point a minute, the newest on the right)</p></section>",
        total(|m| m.accepted),
        total(|m| m.delivered),
        total(|m| m.deferred),
        minutes.len()
    );
}

#[cfg(test)]
#[path = "status_page_tests.rs"]
mod tests;
