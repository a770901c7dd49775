//! Request handling of the fake Google token endpoint: routing (`/token` only), method,
//! form decoding, `grant_type` and `assertion` presence, then the grant checks of
//! `google_assertion`, token registration in the shared workspace, and the JSON answers.
//!
//! Answers before the grant checks (texts modelled on Google's, not confirmed by the fact
//! sheet): other path → 404; other method → 405 `invalid_request` "Invalid HTTP method.";
//! no `grant_type` → 400 `invalid_request` "Missing required parameter: grant_type"; another
//! grant → 400 `unsupported_grant_type` "Invalid grant_type: X"; no `assertion` → 400
//! `invalid_request` "Missing required parameter: assertion".
//!
//! Invariants: every request to `/token` is recorded exactly once (without the assertion or
//! the token); the request body is capped at 64 KiB.

use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::form::{form_value, parse_form};
use super::google_assertion::{
    AssertionSummary, GoogleTokenError, JWT_BEARER_GRANT, check_assertion, summarize,
};
use super::google_token::{
    GoogleTokenFault, GoogleTokenOutcome, GoogleTokenRecord, GoogleTokenShared,
};
use super::https_server::{ConnectionDropped, HttpResponse};

const MAX_BODY: usize = 64 * 1024;

/// Handles one HTTP request.
///
/// # Errors
/// [`ConnectionDropped`] when a fault says to close without answering.
pub(crate) async fn handle(
    shared: Arc<GoogleTokenShared>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ConnectionDropped> {
    if request.uri().path() != "/token" {
        let body = json!({"error": "not_found"});
        return Ok(json_response(StatusCode::NOT_FOUND, &body));
    }
    match shared.begin_request() {
        Some(GoogleTokenFault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(fault) => {
            record(
                &shared,
                AssertionSummary::default(),
                GoogleTokenOutcome::Fault(fault),
            );
            return match fault {
                GoogleTokenFault::CloseWithoutResponse => Err(ConnectionDropped),
                GoogleTokenFault::Unavailable => Ok(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable",
                )),
                GoogleTokenFault::ServerError | GoogleTokenFault::Delay(_) => Ok(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal Server Error",
                )),
            };
        }
        None => {}
    }
    let mut summary = AssertionSummary::default();
    let outcome = process(&shared, request, &mut summary).await;
    let (response, recorded) = match outcome {
        Ok(issued) => {
            let body = json!({
                "access_token": issued.access_token,
                "expires_in": issued.expires_in,
                "token_type": "Bearer",
            });
            (
                json_response(StatusCode::OK, &body),
                GoogleTokenOutcome::Issued {
                    expires_in: issued.expires_in,
                },
            )
        }
        Err(error) => {
            let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
            (
                json_response(status, &error.body()),
                GoogleTokenOutcome::Rejected {
                    status: error.status,
                    error: error.error.to_owned(),
                    description: error.description,
                },
            )
        }
    };
    record(&shared, summary, recorded);
    Ok(response)
}

fn record(shared: &GoogleTokenShared, summary: AssertionSummary, outcome: GoogleTokenOutcome) {
    tracing::debug!(issuer = ?summary.issuer, subject = ?summary.subject, ?outcome, "Google token request");
    shared.record(GoogleTokenRecord {
        at: SystemTime::now(),
        key_id: summary.key_id,
        issuer: summary.issuer,
        subject: summary.subject,
        scope: summary.scope,
        outcome,
    });
}

struct Issued {
    access_token: String,
    expires_in: u64,
}

async fn process(
    shared: &GoogleTokenShared,
    request: Request<Incoming>,
    summary: &mut AssertionSummary,
) -> Result<Issued, GoogleTokenError> {
    if request.method() != Method::POST {
        return Err(GoogleTokenError::new(
            405,
            "invalid_request",
            "Invalid HTTP method.",
        ));
    }
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let pairs = if is_form {
        parse_form(&body)
    } else {
        Vec::new()
    };
    let missing = |name: &str| {
        GoogleTokenError::new(
            400,
            "invalid_request",
            &format!("Missing required parameter: {name}"),
        )
    };
    let grant_type = form_value(&pairs, "grant_type").ok_or_else(|| missing("grant_type"))?;
    if grant_type != JWT_BEARER_GRANT {
        return Err(GoogleTokenError::new(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        ));
    }
    let assertion = form_value(&pairs, "assertion").ok_or_else(|| missing("assertion"))?;
    *summary = summarize(assertion);
    let lifetime = shared.token_lifetime();
    let issued = check_assertion(
        &shared.workspace,
        assertion,
        &shared.token_url,
        shared.now(),
        lifetime,
    )?;
    let access_token = shared.workspace.issue_token(issued);
    Ok(Issued {
        access_token,
        expires_in: lifetime.as_secs(),
    })
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
