//! The Microsoft Graph transport (issue 13): delivery through `sendMail` over HTTPS for
//! tenants where SMTP AUTH is off. The message goes as base64 MIME (`Content-Type:
//! text/plain`, answered `202 Accepted`) to `{graph_endpoint}/v1.0/users/{mailbox}/sendMail`,
//! or through a draft when its headers name someone outside its envelope (`recipients`, `draft`)
//! or it is too large for one request (`large`, `upload`: upload sessions).
//!
//! Graph has no session: a [`GraphSession`] is the account's HTTPS client (connections kept
//! alive by reqwest) and the token it was opened with. It is given up when the token is due
//! for renewal, and when Graph refuses the token (the worker then fetches a new one once).
//!
//! Invariants:
//! - The token goes only in the `Authorization` header of requests to `graph_endpoint`, over
//!   TLS verified against the webpki roots plus `ca_file`; never in a log or a failure.
//! - The spooled message is never changed: an added `Bcc:` field exists only in the request.
//! - No request body passes [`MAX_REQUEST_BODY`]: a message whose base64 would goes as a
//!   draft without its large attachments plus upload sessions (`large`, `upload`), and one
//!   that still does not fit fails with [`GraphFailureKind::TooLarge`] (configuration).
//! - After a `Retry-After` (429, 503) no request of the account's sessions leaves before it
//!   has passed (the [`Transport`](super::Transport) shares one gate between its sessions),
//!   and delivery pauses the whole account until then (`not_before`).
//! - Every request is bounded in time ([`REQUEST_TIMEOUT`]); a connection lost after a
//!   sending request was written is an uncertain outcome ([`Stage::DataEnd`]).
//! - At most [`crate::config::GRAPH_MAX_CONCURRENT_REQUESTS`] workers per account (config),
//!   each with one request in flight: never a 5th concurrent request per mailbox.

pub mod classify;
mod draft;
mod failure;
pub mod large;
pub mod recipients;
mod upload;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::AccountSettings;
use crate::oauth::token::AccessToken;
use crate::spool::{Content, unix_now};
use crate::vocab::address::Address;
use crate::vocab::envelope::Envelope;
use crate::vocab::verdict::{ConnectionFailure, Stage, TlsFailure};

use super::SendResult;
pub use failure::{GraphFailure, GraphFailureKind, MAX_RETRY_AFTER, base64_len};
use recipients::Route;

/// Graph's request limit is 4 MB; the relay keeps its base64 bodies at or below this.
pub const MAX_REQUEST_BODY: u64 = 4_000_000;
/// How long one Graph request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// When the account may send again after a `Retry-After`, shared by its sessions.
type ThrottleGate = Arc<Mutex<Option<(Instant, u64)>>>;
/// Drafts given up (their URLs), deleted before the account's next message; shared by its
/// sessions.
type AbandonedDrafts = Arc<Mutex<Vec<String>>>;

/// How to reach Microsoft Graph for one account; built once per account.
#[derive(Clone)]
pub struct GraphTransport {
    http: reqwest::Client,
    /// `{graph_endpoint}/v1.0/users/{mailbox}`.
    user_url: String,
    endpoint: String,
    gate: ThrottleGate,
    abandoned: AbandonedDrafts,
}

impl std::fmt::Debug for GraphTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GraphTransport({})", self.user_url)
    }
}

/// `text` with every byte outside the URL path's unreserved set percent-encoded.
fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_' | b'~' | b'@') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl GraphTransport {
    /// The HTTPS client of `account` (webpki roots plus `ca_file`).
    ///
    /// # Errors
    /// When the client cannot be built (an unusable `ca_file` certificate).
    pub fn new(account: &AccountSettings) -> Result<GraphTransport, String> {
        let tls = crate::tls::client_config(&account.extra_roots)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("smtp-oauth-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTPS client for Graph: {e}"))?;
        Ok(GraphTransport {
            http,
            user_url: format!(
                "{}/v1.0/users/{}",
                account.graph_endpoint,
                path_segment(account.mailbox.as_str())
            ),
            endpoint: account.graph_endpoint.clone(),
            gate: Arc::default(),
            abandoned: Arc::default(),
        })
    }

    /// The Graph host (`host[:port]`, without the scheme), for logs and a DSN's `Remote-MTA`.
    pub fn server(&self) -> String {
        self.endpoint
            .strip_prefix("https://")
            .unwrap_or(&self.endpoint)
            .to_string()
    }

    /// A session with `token`: nothing goes over the network until a message is sent.
    pub fn open(&self, token: &AccessToken) -> GraphSession {
        GraphSession {
            transport: self.clone(),
            token: token.clone(),
            requests: 0,
        }
    }
}

/// The account's Graph client with the token it sends.
pub struct GraphSession {
    transport: GraphTransport,
    token: AccessToken,
    requests: u32,
}

/// One request to Graph and what it means if it is lost.
struct Request {
    method: reqwest::Method,
    url: String,
    content_type: &'static str,
    body: Vec<u8>,
    /// True when carrying it out sends the message.
    sends: bool,
}

impl GraphSession {
    /// Messages sent (or attempted) with this session.
    pub fn transactions(&self) -> u32 {
        self.requests
    }

    /// The token this session sends.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    /// True when the token should be renewed: the worker then opens a new session.
    pub fn token_due_for_renewal(&self) -> bool {
        self.token.due_for_renewal()
    }

    /// Send `content` to exactly `recipients` (see [`recipients`]): Graph accepts a message
    /// for all its recipients or none.
    ///
    /// # Errors
    /// [`GraphFailure`] naming the stage that failed.
    pub async fn send(
        &mut self,
        _envelope: &Envelope,
        recipients: &[Address],
        content: &Content,
    ) -> Result<SendResult<GraphFailure>, GraphFailure> {
        self.requests += 1;
        if let Some(not_before) = self.throttled() {
            return Err(GraphFailure {
                stage: Stage::Data,
                kind: GraphFailureKind::Waiting { not_before },
            });
        }
        self.delete_abandoned_drafts().await;
        let headers = recipients::header_recipients(content.head());
        let route = recipients::plan(&headers, recipients);
        let extra = match &route {
            Route::SendMail { add_bcc } if !add_bcc.is_empty() => recipients::bcc_field(add_bcc),
            _ => Vec::new(),
        };
        let total = content.len().saturating_add(extra.len() as u64);
        if base64_len(total) > MAX_REQUEST_BODY {
            // Too large for one request: a draft with upload sessions (`upload`).
            let (to, cc, bcc) = recipients::exact(&headers, recipients);
            let reply = self
                .send_large(content, &to, &cc, &bcc)
                .await
                .map_err(|f| f.naming_from(&headers.from))?;
            return Ok(SendResult {
                accepted: recipients.to_vec(),
                rejected: Vec::new(),
                reply: Some(reply),
            });
        }
        let body = encoded(content, &extra)?;
        let reply = match route {
            Route::SendMail { .. } => {
                let url = format!("{}/sendMail", self.transport.user_url);
                self.request(Request::base64(url, body, true))
                    .await
                    .map(|_| "202 Accepted by Graph sendMail".to_string())
            }
            Route::Draft { to, cc, bcc } => self.send_as_draft(body, &to, &cc, &bcc).await,
        }
        .map_err(|f| f.naming_from(&headers.from))?;
        Ok(SendResult {
            accepted: recipients.to_vec(),
            rejected: Vec::new(),
            reply: Some(reply),
        })
    }

    /// What can be proven without sending (`check`): `sendMail` with an empty body. Graph
    /// checks the token (401), the user (404) and, as the emulator does, `Mail.Send` and the
    /// app's mailbox scope (403) before it reads the body; a 400 about the empty body means
    /// the request got that far. Nothing can be sent from an empty body.
    ///
    /// # Errors
    /// Any answer other than a 400, or none, as the [`GraphFailure`] delivery would see.
    pub async fn probe(&self) -> Result<String, GraphFailure> {
        let url = format!("{}/sendMail", self.transport.user_url);
        match self.request(Request::base64(url, Vec::new(), true)).await {
            Ok(_) => Ok("Graph answered 2xx to an empty sendMail".to_string()),
            Err(GraphFailure {
                kind: GraphFailureKind::Reply { status, code, .. },
                ..
            }) if status == 400 && !is_too_large(&code) => Ok(format!(
                "an empty sendMail was refused with {status} {code}, as expected: Graph accepted the token for this mailbox and read the request (a missing permission or RBAC scope answers 403 before that; send-test proves the rest); nothing was sent"
            )),
            Err(failure) => Err(failure),
        }
    }

    /// The unix second the account must wait for, if an earlier `Retry-After` still holds.
    fn throttled(&self) -> Option<u64> {
        let gate = self.transport.gate.lock().ok()?;
        gate.filter(|(until, _)| Instant::now() < *until)
            .map(|(_, unix)| unix)
    }

    /// Remember a `Retry-After` for every session of the account; the unix second to wait for.
    fn throttle(&self, after: Duration) -> u64 {
        let after = after.min(MAX_RETRY_AFTER);
        // Whole seconds, rounded up, plus one for the second already begun.
        let not_before = unix_now() + after.as_secs() + u64::from(after.subsec_nanos() > 0) + 1;
        let until = Instant::now() + after;
        if let Ok(mut gate) = self.transport.gate.lock() {
            let later = gate.is_none_or(|(current, _)| current < until);
            if later {
                *gate = Some((until, not_before));
            }
        }
        not_before
    }

    /// One request; the body of a 2xx answer, or the failure.
    async fn request(&self, request: Request) -> Result<Vec<u8>, GraphFailure> {
        let sending_stage = if request.sends {
            Stage::DataEnd
        } else {
            Stage::Data
        };
        let response = self
            .transport
            .http
            .request(request.method, &request.url)
            .bearer_auth(self.token.secret().expose())
            .header(reqwest::header::CONTENT_TYPE, request.content_type)
            .body(request.body)
            .send()
            .await
            .map_err(|e| lost(&e, sending_stage))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| crate::vocab::text::one_line_excerpt(v, 80));
        let body = answer(response, sending_stage).await?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let not_before = match (status, retry_after) {
            (429 | 503, Some(after)) => Some(self.throttle(after)),
            // A 429 without Retry-After: wait a little anyway.
            (429, None) => Some(self.throttle(Duration::from_secs(5))),
            _ => None,
        };
        let (code, mut message) = error_of(&body);
        if let Some(id) = request_id {
            message = format!("{message} (request-id {id})");
        }
        Err(GraphFailure {
            stage: classify::stage_for(status, &code, request.sends),
            kind: GraphFailureKind::Reply {
                status,
                code,
                message,
                not_before,
                sends: request.sends,
            },
        })
    }
}

impl Request {
    /// A JSON request (`body` may be empty).
    fn json(method: reqwest::Method, url: String, body: Vec<u8>, sends: bool) -> Request {
        Request {
            method,
            url,
            content_type: "application/json",
            body,
            sends,
        }
    }

    /// A POST of base64 MIME.
    fn base64(url: String, body: Vec<u8>, sends: bool) -> Request {
        Request {
            method: reqwest::Method::POST,
            url,
            content_type: "text/plain",
            body,
            sends,
        }
    }
}

/// The wait `Retry-After` asks for, in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| failure::retry_after_wait(v, std::time::SystemTime::now()))
}

/// `extra` followed by the content, as base64: encoded as the content is read (a piece of the
/// spool file at a time), so only the request body is held, not the message as well.
fn encoded(content: &Content, extra: &[u8]) -> Result<Vec<u8>, GraphFailure> {
    use std::io::Write as _;
    let total = content.len().saturating_add(extra.len() as u64);
    let capacity = usize::try_from(base64_len(total)).unwrap_or(0);
    let mut encoder = base64::write::EncoderWriter::new(
        Vec::with_capacity(capacity),
        &base64::engine::general_purpose::STANDARD,
    );
    let unreadable = |e: std::io::Error| GraphFailure {
        stage: Stage::Data,
        kind: GraphFailureKind::Spool(format!("cannot read the spooled message: {e}")),
    };
    encoder.write_all(extra).map_err(unreadable)?;
    content.write_to(&mut encoder).map_err(unreadable)?;
    encoder.finish().map_err(unreadable)
}

/// True for the code of Graph's request-size refusal (not an answer about an empty body).
fn is_too_large(code: &str) -> bool {
    code.eq_ignore_ascii_case("RequestEntityTooLarge")
}

/// Graph's `error.code` and `error.message` (one bounded line).
fn error_of(body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let text = |key: &str| {
        error
            .and_then(|e| e.get(key))
            .and_then(|v| v.as_str())
            .map(|v| crate::vocab::text::one_line_excerpt(v, 300))
            .unwrap_or_default()
    };
    let message = match text("message") {
        m if m.is_empty() && error.is_none() => {
            crate::vocab::text::one_line_excerpt(&String::from_utf8_lossy(body), 200)
        }
        m => m,
    };
    (text("code"), message)
}

/// A request that got no answer: before it left (connect, TLS), or after (`stage`).
/// The answer's body, bounded ([`crate::oauth::http::bounded_body`]). One too long to read is
/// handled like a connection lost at `stage`: after a sending request, an uncertain outcome.
async fn answer(response: reqwest::Response, stage: Stage) -> Result<Vec<u8>, GraphFailure> {
    use crate::oauth::http::{AnswerError, MAX_ANSWER_BYTES, bounded_body};
    match bounded_body(response).await {
        Ok(body) => Ok(body),
        Err(AnswerError::Read(error)) => Err(lost(&error, stage)),
        Err(AnswerError::TooLong) => Err(GraphFailure {
            stage,
            kind: GraphFailureKind::Connection {
                failure: ConnectionFailure::Closed,
                detail: format!(
                    "Graph's answer was longer than {MAX_ANSWER_BYTES} bytes and was not read"
                ),
            },
        }),
    }
}

fn lost(error: &reqwest::Error, stage: Stage) -> GraphFailure {
    let detail = format!(
        "no answer from Graph: {}",
        crate::vocab::text::one_line_excerpt(&describe(error), 300)
    );
    if let Some(tls) = tls_failure(error) {
        return GraphFailure {
            stage: Stage::Tls,
            kind: GraphFailureKind::Connection {
                failure: ConnectionFailure::Tls(tls),
                detail,
            },
        };
    }
    if error.is_connect() {
        let failure = if detail.contains("dns") || detail.contains("lookup") {
            ConnectionFailure::Dns
        } else {
            ConnectionFailure::Refused
        };
        return GraphFailure {
            stage: Stage::Connect,
            kind: GraphFailureKind::Connection { failure, detail },
        };
    }
    let failure = if error.is_timeout() {
        ConnectionFailure::Timeout
    } else {
        ConnectionFailure::Closed
    };
    GraphFailure {
        stage,
        kind: GraphFailureKind::Connection { failure, detail },
    }
}

/// The error and its causes, in one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    for _ in 0..8 {
        let Some(inner) = source else { break };
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The TLS failure among `error`'s causes (rustls errors come wrapped in `io::Error`s).
fn tls_failure(error: &reqwest::Error) -> Option<TlsFailure> {
    let mut source = std::error::Error::source(error);
    for _ in 0..12 {
        let inner = source?;
        let tls = inner.downcast_ref::<rustls::Error>().or_else(|| {
            inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|e| e.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(match tls {
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                    TlsFailure::CertificateInvalid
                }
                rustls::Error::PeerIncompatible(_) => TlsFailure::ProtocolVersion,
                _ => TlsFailure::HandshakeFailed,
            });
        }
        source = inner.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_base64_of_the_extra_field_and_the_whole_message() {
        use base64::Engine as _;
        for message in [
            &b"Subject: a\r\n\r\nbody\r\n"[..],
            b"Subject: b\r\n\r\nno final line break",
            b"",
        ] {
            for extra in [&b""[..], b"Bcc: x@example.com\r\n", b"B"] {
                let body = encoded(&Content::in_memory(message.to_vec()), extra).unwrap();
                let mut expected = extra.to_vec();
                expected.extend_from_slice(message);
                assert_eq!(
                    body,
                    base64::engine::general_purpose::STANDARD
                        .encode(&expected)
                        .into_bytes()
                );
                assert_eq!(body.len() as u64, base64_len(expected.len() as u64));
            }
        }
    }
}
