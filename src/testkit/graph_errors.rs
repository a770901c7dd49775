//! The error catalogue of the fake Microsoft Graph and the JSON error body Graph sends
//! (graph.md §5, learn.microsoft.com/graph/errors):
//! `{"error":{"code":"…","message":"…","innerError":{"date":"…","request-id":"…","client-request-id":"…"}}}`
//! with the `request-id` / `client-request-id` response headers, `Retry-After` (seconds) on
//! throttling and `WWW-Authenticate` on 401.
//!
//! Invariant: this file is the only place that knows the HTTP status and `code` of each
//! rejection; the handlers only pick a constructor. Codes are the documented ones; where
//! graph.md marks a status or code unconfirmed, the choice is named in the constructor's doc.
//! Relays must branch on status and `code`, never on `message`.

use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::format_description;

/// The response type of every Graph handler.
pub(crate) type GraphResponse = Response<Full<Bytes>>;

/// Request ids of one request: Graph's `request-id` and the echoed `client-request-id`.
#[derive(Clone, Debug)]
pub(crate) struct RequestIds {
    pub request_id: String,
    pub client_request_id: String,
}

/// One rejection of a Graph request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GraphError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

const INVALID_TOKEN: &str = "InvalidAuthenticationToken";
const ACCESS_DENIED: &str = "ErrorAccessDenied";
const INVALID_RECIPIENTS: &str = "ErrorInvalidRecipients";

impl GraphError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> GraphError {
        GraphError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, after: Duration) -> GraphError {
        self.retry_after = Some(after);
        self
    }

    // ----- authentication and authorisation ----------------------------------------------

    pub fn empty_token() -> GraphError {
        GraphError::new(401, INVALID_TOKEN, "Access token is empty.")
    }

    pub fn malformed_token() -> GraphError {
        GraphError::new(
            401,
            INVALID_TOKEN,
            "IDX14100: JWT is not well formed, there are no dots (.). The token needs to be in \
             JWS or JWE Compact Serialization Format.",
        )
    }

    pub fn token_validation_failure() -> GraphError {
        GraphError::new(401, INVALID_TOKEN, "Access token validation failure.")
    }

    pub fn expired_token() -> GraphError {
        GraphError::new(
            401,
            INVALID_TOKEN,
            "Lifetime validation failed, the token is expired.",
        )
    }

    pub fn token_not_yet_valid() -> GraphError {
        GraphError::new(
            401,
            INVALID_TOKEN,
            "Lifetime validation failed, the token is not yet valid.",
        )
    }

    pub fn invalid_audience() -> GraphError {
        GraphError::new(
            401,
            INVALID_TOKEN,
            "Access token validation failure. Invalid audience.",
        )
    }

    pub fn invalid_issuer() -> GraphError {
        GraphError::new(
            401,
            INVALID_TOKEN,
            "Access token validation failure. Invalid issuer.",
        )
    }

    /// A Graph token sent to the pre-authenticated upload URL (an Outlook resource), as
    /// observed in microsoftgraph/msgraph-sdk-java#409.
    pub fn upload_audience(url: &str) -> GraphError {
        GraphError::new(
            401,
            "InvalidAudienceForResource",
            format!(
                "The audience claim value is invalid for current resource. Audience claim is \
                 'https://graph.microsoft.com/', request url is '{url}'."
            ),
        )
    }

    pub fn no_permissions() -> GraphError {
        GraphError::new(
            403,
            "NoPermissionsInAccessToken",
            "The token contains no permissions, or permissions can not be understood.",
        )
    }

    pub fn access_denied() -> GraphError {
        GraphError::new(
            403,
            ACCESS_DENIED,
            "Access is denied. Check credentials and try again.",
        )
    }

    pub fn send_as_denied() -> GraphError {
        GraphError::new(
            403,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to \
             send mail on behalf of the specified sending account., Cannot submit message.",
        )
    }

    // ----- mailbox ------------------------------------------------------------------------

    pub fn invalid_user(user: &str) -> GraphError {
        GraphError::new(
            404,
            "ErrorInvalidUser",
            format!("The requested user '{user}' is invalid."),
        )
    }

    /// The status is unconfirmed (graph.md §5); 404 is the emulator's choice.
    pub fn mailbox_not_enabled() -> GraphError {
        GraphError::new(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    }

    pub fn item_not_found() -> GraphError {
        GraphError::new(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    }

    // ----- request content ----------------------------------------------------------------

    pub fn request_too_large() -> GraphError {
        GraphError::new(
            413,
            "RequestEntityTooLarge",
            "The maximum request length supported is 4MB.",
        )
    }

    pub fn invalid_base64() -> GraphError {
        GraphError::new(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        )
    }

    pub fn unreadable_json() -> GraphError {
        GraphError::new(
            400,
            "RequestBodyRead",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and \
             payload is of valid JSON format.",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> GraphError {
        GraphError::new(
            415,
            "UnsupportedMediaType",
            format!("The content type '{content_type}' is not supported for this request."),
        )
    }

    pub fn invalid_request(message: impl Into<String>) -> GraphError {
        GraphError::new(400, "ErrorInvalidRequest", message)
    }

    pub fn segment_not_found(segment: &str) -> GraphError {
        GraphError::new(
            400,
            "BadRequest",
            format!("Resource not found for the segment '{segment}'."),
        )
    }

    pub fn method_not_allowed() -> GraphError {
        GraphError::new(
            405,
            "BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        )
    }

    pub fn no_recipients() -> GraphError {
        GraphError::new(
            400,
            INVALID_RECIPIENTS,
            "At least one recipient is not valid., A message can't be sent because it contains \
             no recipients.",
        )
    }

    pub fn unresolved_recipient(recipient: &str) -> GraphError {
        GraphError::new(
            400,
            INVALID_RECIPIENTS,
            format!(
                "At least one recipient is not valid., Recipient '{recipient}' is not resolved. \
                 All recipients must be resolved before a message can be submitted."
            ),
        )
    }

    /// Exchange may accept and NDR instead; the emulator refuses at once (graph.md §4: 500
    /// recipients per message).
    pub fn too_many_recipients(count: usize, limit: usize) -> GraphError {
        GraphError::new(
            400,
            INVALID_RECIPIENTS,
            format!(
                "At least one recipient is not valid., The message has {count} recipients; the \
                 limit is {limit}."
            ),
        )
    }

    /// The status is unconfirmed (graph.md §5); 400 is the emulator's choice.
    pub fn message_size_exceeded() -> GraphError {
        GraphError::new(
            400,
            "ErrorMessageSizeExceeded",
            "The message exceeds the maximum supported size.",
        )
    }

    pub fn attachment_below_minimum() -> GraphError {
        GraphError::new(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
        )
    }

    /// Code unconfirmed: the docs only say plain POST is for attachments under 3 MB.
    pub fn attachment_above_maximum() -> GraphError {
        GraphError::new(
            400,
            "ErrorAttachmentSizeShouldNotBeGreaterThanMaximumSize",
            "Attachment size must be less than the maximum size.",
        )
    }

    /// A malformed `Content-Range`, a chunk over 4 MB or a length mismatch (code unconfirmed).
    pub fn invalid_content_range(detail: &str) -> GraphError {
        GraphError::new(
            400,
            "ErrorInvalidContentRange",
            format!("The Content-Range header is invalid: {detail}"),
        )
    }

    /// A chunk that does not start at the next expected byte (code unconfirmed).
    pub fn range_not_satisfiable(expected: u64) -> GraphError {
        GraphError::new(
            416,
            "ErrorRangeNotSatisfiable",
            format!(
                "The requested range is not satisfiable; the next expected byte is {expected}."
            ),
        )
    }

    // ----- throttling and transient failures ----------------------------------------------

    pub fn concurrency_throttled(after: Duration) -> GraphError {
        GraphError::new(
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        )
        .retry_after(after)
    }

    /// The 10,000-requests-per-10-minutes limit (message text unconfirmed).
    pub fn request_rate_throttled(after: Duration) -> GraphError {
        GraphError::new(
            429,
            "ApplicationThrottled",
            "Application is over its MailboxRequests limit.",
        )
        .retry_after(after)
    }

    pub fn too_many_requests(after: Duration) -> GraphError {
        GraphError::new(
            429,
            "TooManyRequests",
            "Too many requests. Please retry after the time given in Retry-After.",
        )
        .retry_after(after)
    }

    pub fn service_unavailable(after: Option<Duration>) -> GraphError {
        let error = GraphError::new(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        );
        match after {
            Some(after) => error.retry_after(after),
            None => error,
        }
    }

    pub fn gateway_timeout() -> GraphError {
        GraphError::new(
            504,
            "GatewayTimeout",
            "The gateway did not receive a timely response from the upstream server.",
        )
    }

    /// The JSON body with the given ids and date.
    pub fn body(&self, ids: &RequestIds, now: SystemTime) -> serde_json::Value {
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": inner_error_date(now),
                    "request-id": ids.request_id,
                    "client-request-id": ids.client_request_id,
                }
            }
        })
    }

    /// The full HTTP response.
    pub fn response(&self, ids: &RequestIds) -> GraphResponse {
        let body = self.body(ids, SystemTime::now());
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = json_response(status, &body, ids);
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds(after)));
        }
        if self.status == 401 {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
                ),
            );
        }
        response
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub(crate) fn retry_after_seconds(after: Duration) -> u64 {
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    seconds.max(1)
}

/// A response with a JSON body and Graph's id headers.
pub(crate) fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    ids: &RequestIds,
) -> GraphResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"),
    );
    add_id_headers(&mut response, ids);
    response
}

/// An empty response (`202 Accepted`, `204 No Content`, `201` with `Location`).
pub(crate) fn empty_response(status: StatusCode, ids: &RequestIds) -> GraphResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    add_id_headers(&mut response, ids);
    response
}

fn add_id_headers(response: &mut GraphResponse, ids: &RequestIds) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("request-id", &ids.request_id),
        ("client-request-id", &ids.client_request_id),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    headers.insert(
        "x-ms-ags-diagnostic",
        HeaderValue::from_static(
            r#"{"ServerInfo":{"DataCenter":"Testkit","Slice":"E","Ring":"1","ScaleUnit":"000","RoleInstance":"FAKEGRAPH01","ADSiteName":"TK"}}"#,
        ),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
}

/// `2026-01-09T02:02:12`, the format of `innerError.date` (no fraction, no zone).
pub(crate) fn inner_error_date(now: SystemTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    OffsetDateTime::from(now)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00".to_owned())
}

/// `2019-09-25T01:09:30.7671707Z`, the format of `expirationDateTime`.
pub(crate) fn odata_timestamp(at: SystemTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
    OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.0000000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_graph_shape() {
        let ids = RequestIds {
            request_id: "r-id".to_owned(),
            client_request_id: "c-id".to_owned(),
        };
        let body = GraphError::access_denied().body(&ids, SystemTime::UNIX_EPOCH);
        assert_eq!(body["error"]["code"], "ErrorAccessDenied");
        assert_eq!(
            body["error"]["message"],
            "Access is denied. Check credentials and try again."
        );
        assert_eq!(body["error"]["innerError"]["date"], "1970-01-01T00:00:00");
        assert_eq!(body["error"]["innerError"]["request-id"], "r-id");
        assert_eq!(body["error"]["innerError"]["client-request-id"], "c-id");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn headers_of_throttling_and_401() {
        let ids = RequestIds {
            request_id: "r".to_owned(),
            client_request_id: "c".to_owned(),
        };
        let response =
            GraphError::concurrency_throttled(Duration::from_millis(1500)).response(&ids);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert_eq!(response.headers()["request-id"], "r");
        let response = GraphError::invalid_audience().response(&ids);
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        assert!(!response.headers().contains_key(RETRY_AFTER));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let table = [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (30_000, 30)];
        for (millis, expected) in table {
            assert_eq!(
                retry_after_seconds(Duration::from_millis(millis)),
                expected,
                "{millis} ms"
            );
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            odata_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            "1970-01-01T00:00:01.5000000Z"
        );
    }
}
