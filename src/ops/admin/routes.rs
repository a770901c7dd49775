//! The admin endpoint's routes: health, readiness, metrics, the status page and the queue API,
//! behind the rules of [`super::access`].
//!
//! Invariants: a request that fails the `Host` or `Origin` rule gets its refusal and nothing
//! else; the queue API (listings name senders and recipients; retry, requeue and delete change
//! the queue) answers only on the loopback interface without `token_file`, and with it only
//! to requests bearing the token, wherever they come from; nothing here logs or returns a secret or message content.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::AdminState;
use super::access::Refusal;
use super::history::History;
use crate::metrics::Metrics;
use crate::spool::{SpoolError, unix_now};
use crate::vocab::envelope::Envelope;

/// An HTTP response of the admin endpoint (not to be confused with an SMTP reply).
type HttpResponse = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn html(body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    // No script, no frame, no outside resource: the page is inline HTML, CSS and SVG only.
    headers.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'",
        ),
    );
    response
}

fn refused(refusal: &Refusal) -> HttpResponse {
    let mut response = text(refusal.status, format!("{}\n", refusal.reason));
    if refusal.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"smtp-oauth-relay admin\""),
        );
    }
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string() + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) async fn handle(
    state: &AdminState,
    history: &History,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> HttpResponse {
    let access = state.access.load();
    if let Err(refusal) = access.check_request(
        request.method(),
        request.uri().authority().map(|a| a.as_str()),
        request.headers(),
    ) {
        return refused(&refusal);
    }
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => return readiness(state).await,
        (&Method::GET, ["metrics"]) => return metrics(state),
        _ => {}
    }
    // Envelopes name people (senders, recipients, client addresses), and the status page shows
    // them: like every change to the queue, they are for the host's own `queue` command only; with a token_file, for those
    // who hold the token, from loopback too (a sidecar proxy makes remote callers look local)
    // and from elsewhere (a remote `queue` or a monitoring host).
    if !access.requires_token() && !peer.ip().to_canonical().is_loopback() {
        return text(
            StatusCode::FORBIDDEN,
            "the status page and the queue API answer only on the loopback interface (run `smtp-oauth-relay queue` on the relay's host, or set [admin] token_file)\n",
        );
    }
    if let Err(refusal) = access.check_token(request.headers()) {
        return refused(&refusal);
    }
    match (request.method(), segments.as_slice()) {
        (&Method::GET, []) => html(super::status_page::render(state, history).await),
        (&Method::GET, ["queue"]) => listing(state, state.spool.list_queued().await),
        (&Method::GET, ["failed"]) => listing(state, state.spool.list_failed().await),
        (&Method::GET, ["queue", id]) => match state.spool.load(id).await {
            Ok(envelope) => json_response(StatusCode::OK, &summary(state, &envelope)),
            Err(_) => text(StatusCode::NOT_FOUND, format!("no queued message {id}\n")),
        },
        (&Method::POST, ["queue", "retry"]) => {
            let mut count = 0;
            for (_, queue) in state.queue.accounts() {
                if let Ok(entries) = state.spool.list_queued().await {
                    for entry in entries
                        .iter()
                        .filter(|e| queue.contains(&e.id) && !queue.is_in_flight(&e.id))
                    {
                        queue.schedule(&entry.id, unix_now());
                        count += 1;
                    }
                }
                queue.resume();
            }
            tracing::info!(count, "retry of every queued message requested");
            json_response(StatusCode::OK, &json!({ "retried": count }))
        }
        (&Method::POST, ["queue", id, "retry"]) => match state.queue.find(id) {
            Some(queue) if queue.is_in_flight(id) => text(
                StatusCode::CONFLICT,
                format!("{id} is being delivered right now\n"),
            ),
            Some(queue) => {
                queue.schedule(id, unix_now());
                queue.resume();
                tracing::info!(queue_id = %id, "retry requested");
                json_response(StatusCode::OK, &json!({ "retried": 1 }))
            }
            None => text(StatusCode::NOT_FOUND, format!("no queued message {id}\n")),
        },
        (&Method::POST, ["failed", "requeue"]) => {
            let failed = match state.spool.list_failed().await {
                Ok(failed) => failed,
                Err(error) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"));
                }
            };
            let mut requeued = Vec::new();
            let mut errors = Vec::new();
            for entry in failed {
                match requeue(state, &entry.id).await {
                    Ok(id) => requeued.push(id),
                    Err(error) => errors.push(format!("{}: {error}", entry.id)),
                }
            }
            json_response(
                StatusCode::OK,
                &json!({ "requeued": requeued.len(), "errors": errors }),
            )
        }
        (&Method::POST, ["failed", id, "requeue"]) => match requeue(state, id).await {
            Ok(_) => json_response(StatusCode::OK, &json!({ "requeued": 1 })),
            Err(SpoolError::NotFound(_)) => {
                text(StatusCode::NOT_FOUND, format!("no failed message {id}\n"))
            }
            Err(error) => text(StatusCode::CONFLICT, format!("{error}\n")),
        },
        (&Method::DELETE, ["queue", id]) => match state.queue.find(id) {
            Some(queue) if queue.is_in_flight(id) => text(
                StatusCode::CONFLICT,
                format!("{id} is being delivered right now; try again\n"),
            ),
            Some(queue) => match state.spool.remove(id).await {
                Ok(()) => {
                    queue.finish(id);
                    tracing::warn!(queue_id = %id, "queued message deleted by an administrator");
                    json_response(StatusCode::OK, &json!({ "deleted": id }))
                }
                Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
            },
            None => text(StatusCode::NOT_FOUND, format!("no queued message {id}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "routes: /healthz /readyz /metrics / (status page) /queue /queue/ID /failed; from loopback: POST /queue/retry, /queue/ID/retry, /failed/requeue, /failed/ID/requeue, DELETE /queue/ID\n",
        ),
    }
}

/// Put a failed message back in the queue and schedule it now.
async fn requeue(state: &AdminState, id: &str) -> Result<String, SpoolError> {
    let envelope = state.spool.requeue(id).await?;
    if state.queue.submit(&envelope) {
        tracing::warn!(queue_id = %id, recipients = envelope.recipients.len(), "failed message put back in the queue by an administrator");
    } else {
        tracing::warn!(queue_id = %id, account = %envelope.account, "failed message put back in the queue, but its account is not configured; it waits until it is");
    }
    Ok(envelope.id)
}

fn listing(
    state: &AdminState,
    entries: Result<Vec<Envelope>, crate::spool::SpoolError>,
) -> HttpResponse {
    match entries {
        Ok(entries) => json_response(
            StatusCode::OK,
            &json!(
                entries
                    .iter()
                    .map(|e| summary(state, e))
                    .collect::<Vec<_>>()
            ),
        ),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

fn metrics(state: &AdminState) -> HttpResponse {
    let now_ms = unix_now() * 1000;
    for (account, queue) in state.queue.accounts() {
        let label = Metrics::account(&account);
        state
            .metrics
            .queue_depth
            .get_or_create(&label)
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
        let age = queue
            .oldest()
            .and_then(|id| crate::vocab::envelope::id_created_millis(&id))
            .map_or(0, |created| now_ms.saturating_sub(created) / 1000);
        state
            .metrics
            .queue_oldest_age
            .get_or_create(&label)
            .set(i64::try_from(age).unwrap_or(i64::MAX));
    }
    state
        .metrics
        .record_spool_reserve(&state.spool.reserve().status());
    record_account_health(state);
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

/// The per-account gauges read at scrape time: failing since (0 when healthy) and the
/// credential's expiry, from the running accounts. (An expiring credential is not a readiness
/// problem: [`readiness`] ignores it.)
fn record_account_health(state: &AdminState) {
    let deliveries = state.deliveries.load();
    let expiries: Vec<_> = deliveries
        .iter()
        .map(|d| d.account.credential_expiry())
        .collect();
    state
        .metrics
        .record_accounts(deliveries.iter().zip(&expiries).map(|(delivery, expiry)| {
            (
                delivery.account.name.as_str(),
                delivery.failing_since(),
                expiry.as_ref().map(|e| (e.kind.as_str(), e.unix_seconds())),
            )
        }));
}

async fn readiness(state: &AdminState) -> HttpResponse {
    let mut problems = Vec::new();
    if let Err(error) = state.spool.probe_writable().await {
        problems.push(format!("the spool is not writable: {error}"));
    }
    problems.extend(state.spool.reserve().problem());
    let now = unix_now();
    for delivery in state.deliveries.load().iter() {
        if let Some(since) = delivery.failing_since()
            && now.saturating_sub(since) > state.failing_threshold.as_secs()
        {
            problems.push(format!(
                "account {} has been failing for {} (see the log for the reason and the fix)",
                delivery.account.name,
                humantime::format_duration(Duration::from_secs(now - since))
            ));
        }
    }
    if problems.is_empty() {
        json_response(StatusCode::OK, &json!({ "ready": true }))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ready": false, "problems": problems }),
        )
    }
}

/// One entry as the `queue` command shows it.
fn summary(state: &AdminState, envelope: &Envelope) -> serde_json::Value {
    let in_flight = state
        .queue
        .find(&envelope.id)
        .is_some_and(|q| q.is_in_flight(&envelope.id));
    entry_summary(envelope, in_flight)
}

/// An entry for people and scripts: the envelope without internals, with ages in seconds.
pub fn entry_summary(envelope: &Envelope, in_flight: bool) -> serde_json::Value {
    let now = unix_now();
    json!({
        "id": envelope.id,
        "account": envelope.account,
        "sender": envelope.sender.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        "recipients": envelope.recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "delivered": envelope.delivered.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "size": envelope.body_len,
        "received_at": envelope.received_at,
        "age_s": now.saturating_sub(envelope.received_at),
        "attempts": envelope.attempts,
        "next_attempt": envelope.next_attempt,
        "next_attempt_in_s": envelope.next_attempt.saturating_sub(now),
        "in_flight": in_flight,
        "last_attempt": envelope.last_attempt,
        "failures": envelope.failures,
        "is_bounce": envelope.is_bounce,
        "client": envelope.client.principal,
    })
}
