//! Request handling of the fake Graph: routing, the bearer-token checks, the mailbox and
//! permission checks, throttling, injected faults and bounded body reading, in the order
//! documented in [`graph`](super::graph); the operations themselves are in `graph_mail` and
//! `graph_upload`.
//!
//! Invariants: every request is recorded exactly once in the log (without its token or the
//! upload `authtoken`); a body is never buffered beyond [`GRAPH_REQUEST_LIMIT`] — past it the
//! rest is read and discarded (up to a bound) so the client sees the 413 instead of a reset;
//! a `client-request-id` header is echoed, as Graph does, else the request id is used.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request};

use super::graph::{GRAPH_REQUEST_LIMIT, GraphFault, GraphOperation, GraphRequestRecord};
use super::graph_body::BodyReader;
use super::graph_errors::{GraphError, GraphResponse, RequestIds, retry_after_seconds};
use super::graph_mail;
use super::graph_state::GraphShared;
use super::graph_upload;
use super::issuance::GRAPH_RESOURCE;
use super::jwt::{Claims, TokenRejection};
use super::random::new_guid;

/// Graph's application id, also accepted as `aud`.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

use super::https_server::ConnectionDropped;

/// A routed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// An operation on `/v1.0/users/{user}/…`.
    Api {
        operation: GraphOperation,
        user: String,
        message: Option<String>,
    },
    /// `PUT`/`DELETE` on an upload URL.
    Upload {
        operation: GraphOperation,
        session: String,
        authtoken: Option<String>,
    },
    /// Nothing here: the first unknown segment.
    Unknown(String),
}

/// Who is asking, once the checks passed.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub client_id: String,
    pub mailbox: String,
    pub ids: RequestIds,
}

/// How a handler ends.
pub(crate) enum Outcome {
    Answer(GraphResponse),
    Refuse(GraphError),
    Drop,
}

/// Handles one HTTP request.
///
/// # Errors
/// [`ConnectionDropped`] when a fault says to close without answering.
pub(crate) async fn handle(
    shared: Arc<GraphShared>,
    request: Request<Incoming>,
) -> Result<GraphResponse, ConnectionDropped> {
    let (parts, body) = request.into_parts();
    let request_id = new_guid();
    let client_request_id = header_text(&parts.headers, "client-request-id")
        .map_or_else(|| request_id.clone(), str::to_owned);
    let ids = RequestIds {
        request_id,
        client_request_id,
    };
    let route = route(&parts.method, parts.uri.path(), parts.uri.query());
    let operation = match &route {
        Route::Api { operation, .. } | Route::Upload { operation, .. } => *operation,
        Route::Unknown(_) => GraphOperation::Other,
    };
    let mut record = GraphRequestRecord {
        at: SystemTime::now(),
        arrived: Instant::now(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        operation,
        mailbox: None,
        client_id: None,
        had_authorization: parts.headers.contains_key(AUTHORIZATION),
        body_bytes: 0,
        status: 0,
        error_code: None,
        fault: None,
        retry_after: None,
        answered: Instant::now(),
    };
    let mut body = BodyReader::new(body);
    let outcome = process(&shared, &parts, &mut body, route, &ids, &mut record).await;
    record.body_bytes = body.read;
    let result = match outcome {
        Outcome::Answer(response) => {
            record.status = response.status().as_u16();
            Ok(response)
        }
        Outcome::Refuse(error) => {
            body.drain().await;
            record.status = error.status;
            record.retry_after = error
                .retry_after
                .map(|after| Duration::from_secs(retry_after_seconds(after)));
            record.error_code = Some(error.code.to_owned());
            Ok(error.response(&ids))
        }
        Outcome::Drop => Err(ConnectionDropped),
    };
    tracing::debug!(
        method = %record.method,
        path = %record.path,
        status = record.status,
        code = ?record.error_code,
        "Graph request"
    );
    record.answered = Instant::now();
    shared.record(record);
    result
}

async fn process(
    shared: &Arc<GraphShared>,
    parts: &hyper::http::request::Parts,
    body: &mut BodyReader,
    route: Route,
    ids: &RequestIds,
    record: &mut GraphRequestRecord,
) -> Outcome {
    let declared = header_text(&parts.headers, CONTENT_LENGTH.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > GRAPH_REQUEST_LIMIT as u64) {
        return Outcome::Refuse(GraphError::request_too_large());
    }
    let content_type = header_text(&parts.headers, CONTENT_TYPE.as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match route {
        Route::Unknown(segment) => Outcome::Refuse(GraphError::segment_not_found(&segment)),
        Route::Api {
            operation: GraphOperation::Other,
            ..
        } => Outcome::Refuse(GraphError::method_not_allowed()),
        Route::Api {
            operation,
            user,
            message,
        } => {
            let caller = match check_caller(shared, &parts.headers, &user, operation, ids) {
                Ok(caller) => caller,
                Err(error) => return Outcome::Refuse(error),
            };
            record.client_id = Some(caller.client_id.clone());
            record.mailbox = Some(caller.mailbox.clone());
            let _slot = match admit(shared, &caller.client_id, &caller.mailbox).await {
                Ok(slot) => slot,
                Err(error) => return Outcome::Refuse(error),
            };
            let deliver = match apply_fault(shared, operation, record) {
                FaultDecision::Proceed => true,
                FaultDecision::Refuse(error) => return Outcome::Refuse(error),
                FaultDecision::DropAfterBody { deliver } => deliver,
            };
            let bytes = match body.read_all().await {
                Ok(bytes) => bytes,
                Err(error) => return Outcome::Refuse(error),
            };
            let outcome = graph_mail::dispatch(
                shared,
                &caller,
                operation,
                message.as_deref(),
                &content_type,
                bytes,
                deliver,
            )
            .await;
            if record.fault.is_some() {
                return Outcome::Drop;
            }
            outcome
        }
        Route::Upload {
            operation,
            session,
            authtoken,
        } => {
            if parts.headers.contains_key(AUTHORIZATION) {
                let url = format!("{}{}", shared.base_url, parts.uri.path());
                return Outcome::Refuse(GraphError::upload_audience(&url));
            }
            let caller = match graph_upload::authorize(shared, &session, authtoken.as_deref(), ids)
            {
                Ok(caller) => caller,
                Err(error) => return Outcome::Refuse(error),
            };
            record.client_id = Some(caller.client_id.clone());
            record.mailbox = Some(caller.mailbox.clone());
            let _slot = match admit(shared, &caller.client_id, &caller.mailbox).await {
                Ok(slot) => slot,
                Err(error) => return Outcome::Refuse(error),
            };
            let deliver = match apply_fault(shared, operation, record) {
                FaultDecision::Proceed => true,
                FaultDecision::Refuse(error) => return Outcome::Refuse(error),
                FaultDecision::DropAfterBody { deliver } => deliver,
            };
            let outcome = if operation == GraphOperation::CancelUpload {
                graph_upload::cancel(shared, &caller, &session, deliver)
            } else {
                let range = header_text(&parts.headers, "content-range").map(str::to_owned);
                graph_upload::put_chunk(shared, &caller, &session, range.as_deref(), body, deliver)
                    .await
            };
            if record.fault.is_some() {
                let _ = body.read_all().await;
                return Outcome::Drop;
            }
            outcome
        }
    }
}

/// The concurrency slot and the rate window, then the test gate.
async fn admit(
    shared: &Arc<GraphShared>,
    client_id: &str,
    mailbox: &str,
) -> Result<super::graph_state::ConcurrencySlot, GraphError> {
    let (slot, over) = shared.enter(client_id, mailbox);
    if over {
        return Err(GraphError::concurrency_throttled(
            shared.options.concurrency_retry_after,
        ));
    }
    if let Err(wait) = shared.check_rate(client_id, mailbox) {
        return Err(GraphError::request_rate_throttled(wait));
    }
    shared.wait_released().await;
    Ok(slot)
}

enum FaultDecision {
    Proceed,
    Refuse(GraphError),
    DropAfterBody { deliver: bool },
}

fn apply_fault(
    shared: &GraphShared,
    operation: GraphOperation,
    record: &mut GraphRequestRecord,
) -> FaultDecision {
    let Some(fault) = shared.take_fault(operation) else {
        return FaultDecision::Proceed;
    };
    record.fault = Some(fault);
    match fault {
        GraphFault::Throttle { retry_after } => {
            FaultDecision::Refuse(GraphError::too_many_requests(retry_after))
        }
        GraphFault::Unavailable { retry_after } => {
            FaultDecision::Refuse(GraphError::service_unavailable(retry_after))
        }
        GraphFault::GatewayTimeout => FaultDecision::Refuse(GraphError::gateway_timeout()),
        GraphFault::ExpiredToken => FaultDecision::Refuse(GraphError::expired_token()),
        GraphFault::DropAfterBody { deliver } => FaultDecision::DropAfterBody { deliver },
    }
}

/// Token, user, REST flag, role and scope checks of an API request.
fn check_caller(
    shared: &GraphShared,
    headers: &HeaderMap,
    user: &str,
    operation: GraphOperation,
    ids: &RequestIds,
) -> Result<Caller, GraphError> {
    let claims = authenticate(shared, headers)?;
    let directory = &shared.directory;
    let mailbox = directory
        .mailbox(user)
        .ok_or_else(|| GraphError::invalid_user(user))?;
    if !directory.mailbox_rest_enabled(&mailbox.address) {
        return Err(GraphError::mailbox_not_enabled());
    }
    if !claims.has_role(required_role(operation)) {
        return Err(GraphError::access_denied());
    }
    if !directory.graph_mailbox_in_scope(&claims.appid, &mailbox.address) {
        return Err(GraphError::access_denied());
    }
    Ok(Caller {
        client_id: claims.appid.to_ascii_lowercase(),
        mailbox: mailbox.address,
        ids: ids.clone(),
    })
}

/// The application permission an operation needs.
pub(crate) fn required_role(operation: GraphOperation) -> &'static str {
    match operation {
        GraphOperation::SendMail | GraphOperation::SendDraft => super::graph::MAIL_SEND,
        _ => super::graph::MAIL_READ_WRITE,
    }
}

/// The bearer-token checks: signature and lifetime, audience, issuer, `roles` present.
fn authenticate(shared: &GraphShared, headers: &HeaderMap) -> Result<Claims, GraphError> {
    let token = header_text(headers, AUTHORIZATION.as_str())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty())
        .ok_or_else(GraphError::empty_token)?;
    let claims = shared
        .verifier
        .verify(token, SystemTime::now())
        .map_err(|rejection| match rejection {
            TokenRejection::Malformed if !token.contains('.') => GraphError::malformed_token(),
            TokenRejection::Expired => GraphError::expired_token(),
            TokenRejection::NotYetValid => GraphError::token_not_yet_valid(),
            _ => GraphError::token_validation_failure(),
        })?;
    let audience = claims.aud.trim_end_matches('/');
    if !audience.eq_ignore_ascii_case(GRAPH_RESOURCE) && audience != GRAPH_APP_ID {
        return Err(GraphError::invalid_audience());
    }
    let tenant = shared.directory.tenant_id();
    if claims.tid != tenant || claims.iss != format!("https://sts.windows.net/{tenant}/") {
        return Err(GraphError::invalid_issuer());
    }
    if claims.roles.as_ref().is_none_or(Vec::is_empty) {
        return Err(GraphError::no_permissions());
    }
    Ok(claims)
}

/// Routes `path` (and the upload URL's query) for `method`.
pub(crate) fn route(method: &Method, path: &str, query: Option<&str>) -> Route {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode_path)
        .collect();
    let seg = |i: usize| segments.get(i).map(String::as_str).unwrap_or_default();
    let is = |i: usize, name: &str| seg(i).eq_ignore_ascii_case(name);
    if is(0, "api") && is(1, "v2.0") {
        return match upload_session_id(path) {
            Some(session) => {
                let operation = match *method {
                    Method::PUT => GraphOperation::UploadChunk,
                    Method::DELETE => GraphOperation::CancelUpload,
                    _ => GraphOperation::Other,
                };
                let authtoken = query.and_then(|q| {
                    q.split('&')
                        .find_map(|pair| pair.strip_prefix("authtoken="))
                        .map(percent_decode_path)
                });
                if operation == GraphOperation::Other {
                    return Route::Unknown(seg(segments.len().saturating_sub(1)).to_owned());
                }
                Route::Upload {
                    operation,
                    session,
                    authtoken,
                }
            }
            None => Route::Unknown(seg(2).to_owned()),
        };
    }
    if !is(0, "v1.0") {
        return Route::Unknown(seg(0).to_owned());
    }
    if !is(1, "users") || seg(2).is_empty() {
        return Route::Unknown(seg(1).to_owned());
    }
    let user = seg(2).to_ascii_lowercase();
    let api = |operation: GraphOperation, message: Option<&str>| {
        let expected = match operation {
            GraphOperation::UpdateDraft => Method::PATCH,
            GraphOperation::DeleteDraft => Method::DELETE,
            _ => Method::POST,
        };
        Route::Api {
            operation: if *method == expected {
                operation
            } else {
                GraphOperation::Other
            },
            user: user.clone(),
            message: message.map(str::to_owned),
        }
    };
    match segments.len() {
        4 if is(3, "sendMail") => api(GraphOperation::SendMail, None),
        5 if is(3, "messages") && *method == Method::DELETE => {
            api(GraphOperation::DeleteDraft, Some(seg(4)))
        }
        5 if is(3, "messages") => api(GraphOperation::UpdateDraft, Some(seg(4))),
        4 if is(3, "messages") => api(GraphOperation::CreateDraft, None),
        6 if is(3, "messages") && is(5, "send") => api(GraphOperation::SendDraft, Some(seg(4))),
        6 if is(3, "messages") && is(5, "attachments") => {
            api(GraphOperation::AddAttachment, Some(seg(4)))
        }
        7 if is(3, "messages") && is(5, "attachments") && is(6, "createUploadSession") => {
            api(GraphOperation::CreateUploadSession, Some(seg(4)))
        }
        _ => Route::Unknown(
            segments
                .iter()
                .skip(3)
                .find(|s| {
                    !["messages", "attachments", "send", "sendmail"]
                        .contains(&s.to_ascii_lowercase().as_str())
                })
                .or_else(|| segments.last())
                .cloned()
                .unwrap_or_default(),
        ),
    }
}

/// The id inside `AttachmentSessions('…')` of an upload URL's path.
fn upload_session_id(path: &str) -> Option<String> {
    let decoded = percent_decode_path(path);
    let start = decoded.find("AttachmentSessions('")? + "AttachmentSessions('".len();
    let rest = decoded.get(start..)?;
    let end = rest.find("')")?;
    let id = rest.get(..end)?;
    (!id.is_empty()).then(|| id.to_owned())
}

/// Percent-decoding of a path segment (`+` stays `+`).
fn percent_decode_path(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(operation: GraphOperation, user: &str, message: Option<&str>) -> Route {
        Route::Api {
            operation,
            user: user.to_owned(),
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn routes() {
        let post = Method::POST;
        let table = [
            (
                &post,
                "/v1.0/users/Relay%40contoso.com/sendMail",
                api(GraphOperation::SendMail, "relay@contoso.com", None),
            ),
            (
                &post,
                "/v1.0/users/relay@contoso.com/sendmail",
                api(GraphOperation::SendMail, "relay@contoso.com", None),
            ),
            (
                &post,
                "/v1.0/users/r@x.com/messages",
                api(GraphOperation::CreateDraft, "r@x.com", None),
            ),
            (
                &Method::DELETE,
                "/v1.0/users/r@x.com/messages/AAMk=",
                api(GraphOperation::DeleteDraft, "r@x.com", Some("AAMk=")),
            ),
            (
                &post,
                "/v1.0/users/r@x.com/messages/AAMk=/send",
                api(GraphOperation::SendDraft, "r@x.com", Some("AAMk=")),
            ),
            (
                &post,
                "/v1.0/users/r@x.com/messages/AAMk%3D/attachments",
                api(GraphOperation::AddAttachment, "r@x.com", Some("AAMk=")),
            ),
            (
                &post,
                "/v1.0/users/r@x.com/messages/A/attachments/createUploadSession",
                api(GraphOperation::CreateUploadSession, "r@x.com", Some("A")),
            ),
            (
                &Method::GET,
                "/v1.0/users/r@x.com/sendMail",
                api(GraphOperation::Other, "r@x.com", None),
            ),
            (
                &Method::PATCH,
                "/v1.0/users/r@x.com/messages/AAMk=",
                api(GraphOperation::UpdateDraft, "r@x.com", Some("AAMk=")),
            ),
            (
                &post,
                "/v1.0/users/r@x.com/messages/AAMk=",
                api(GraphOperation::Other, "r@x.com", Some("AAMk=")),
            ),
            (
                &post,
                "/beta/users/r@x.com/sendMail",
                Route::Unknown("beta".to_owned()),
            ),
            (&post, "/v1.0/me/sendMail", Route::Unknown("me".to_owned())),
            (
                &post,
                "/v1.0/users/r@x.com/mailFolders",
                Route::Unknown("mailFolders".to_owned()),
            ),
        ];
        for (method, path, expected) in table {
            assert_eq!(route(method, path, None), expected, "{method} {path}");
        }
    }

    #[test]
    fn upload_urls() {
        let path = "/api/v2.0/Users('r@x.com')/Messages('AAMk=')/AttachmentSessions('S1%3D')";
        assert_eq!(
            route(&Method::PUT, path, Some("authtoken=abc%2Bd")),
            Route::Upload {
                operation: GraphOperation::UploadChunk,
                session: "S1=".to_owned(),
                authtoken: Some("abc+d".to_owned()),
            }
        );
        assert!(matches!(
            route(&Method::DELETE, path, None),
            Route::Upload {
                operation: GraphOperation::CancelUpload,
                authtoken: None,
                ..
            }
        ));
        assert!(matches!(
            route(&Method::POST, path, None),
            Route::Unknown(_)
        ));
        assert!(matches!(
            route(&Method::PUT, "/api/v2.0/Users('r')/Messages('m')", None),
            Route::Unknown(_)
        ));
    }

    #[test]
    fn roles_per_operation() {
        assert_eq!(required_role(GraphOperation::SendMail), "Mail.Send");
        assert_eq!(required_role(GraphOperation::SendDraft), "Mail.Send");
        assert_eq!(required_role(GraphOperation::CreateDraft), "Mail.ReadWrite");
        assert_eq!(
            required_role(GraphOperation::CreateUploadSession),
            "Mail.ReadWrite"
        );
    }
}
