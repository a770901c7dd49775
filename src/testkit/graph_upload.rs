//! Upload sessions of the fake Graph (graph.md §3, outlook-large-attachments):
//! `createUploadSession` on a draft's attachments (201 with `uploadUrl`,
//! `expirationDateTime`, `nextExpectedRanges: ["0-"]`), then `PUT {uploadUrl}` with
//! `Content-Range: bytes a-b/total`, chunks in order and at most 4 MiB each (200 with
//! `nextExpectedRanges: ["{next}"]` as Outlook answers, `201` + `Location` for the last), and
//! `DELETE {uploadUrl}` (204). The URL has the Outlook shape
//! `/api/v2.0/Users('…')/Messages('…')/AttachmentSessions('…')?authtoken=…`.
//!
//! Invariants: bytes are written to the session's temporary file at their offset and hashed in
//! order, never kept in memory beyond the current chunk; a chunk is accepted only when it
//! starts at the next expected byte, its length matches its range and the range's total is
//! the announced size; at most one chunk of a session is written at a time.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::StatusCode;
use hyper::header::{HeaderValue, LOCATION};
use serde_json::{Value, json};

use super::graph::{
    GRAPH_REQUEST_LIMIT, GraphAttachment, MAX_MAILBOX_SIZE_LIMIT, UPLOAD_SESSION_MINIMUM,
};
use super::graph_body::BodyReader;
use super::graph_errors::{GraphError, RequestIds, empty_response, json_response, odata_timestamp};
use super::graph_http::{Caller, Outcome};
use super::graph_state::{AttachmentItem, GraphShared, UploadSession};
use super::random::{hex_lower, random_b64url};

/// A parsed `Content-Range: bytes first-last/total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: u64,
}

impl ContentRange {
    pub fn len(self) -> u64 {
        self.last - self.first + 1
    }
}

/// Parses `bytes first-last/total` (first ≤ last < total).
pub(crate) fn parse_content_range(value: &str) -> Result<ContentRange, GraphError> {
    let invalid =
        || GraphError::invalid_content_range(&format!("'{value}' is not 'bytes first-last/total'"));
    let rest = value
        .trim()
        .strip_prefix("bytes")
        .ok_or_else(invalid)?
        .trim_start();
    let (range, total) = rest.split_once('/').ok_or_else(invalid)?;
    let (first, last) = range.split_once('-').ok_or_else(invalid)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| invalid());
    let (first, last, total) = (number(first)?, number(last)?, number(total)?);
    if first > last || last >= total {
        return Err(invalid());
    }
    Ok(ContentRange { first, last, total })
}

/// Finds the session and checks the URL's `authtoken`.
pub(crate) fn authorize(
    shared: &GraphShared,
    session_id: &str,
    authtoken: Option<&str>,
    ids: &RequestIds,
) -> Result<Caller, GraphError> {
    let runtime = shared.lock();
    let session = runtime
        .uploads
        .get(session_id)
        .ok_or_else(GraphError::item_not_found)?;
    if authtoken != Some(session.authtoken.as_str()) {
        return Err(GraphError::token_validation_failure());
    }
    if session.expires_at <= SystemTime::now() {
        return Err(GraphError::expired_token());
    }
    Ok(Caller {
        client_id: session.client_id.clone(),
        mailbox: session.mailbox.clone(),
        ids: ids.clone(),
    })
}

/// `POST …/messages/{id}/attachments/createUploadSession`.
pub(crate) async fn create(
    shared: &Arc<GraphShared>,
    caller: &Caller,
    message_id: &str,
    body: &[u8],
) -> Result<super::graph_errors::GraphResponse, GraphError> {
    let request: Value = serde_json::from_slice(body).map_err(|_| GraphError::unreadable_json())?;
    let item = request
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("AttachmentItem"))
        })
        .map(|(_, v)| v)
        .filter(|v| v.is_object())
        .ok_or_else(|| GraphError::invalid_request("The 'AttachmentItem' parameter is missing."))?;
    let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
    if !text("attachmentType").is_some_and(|t| t.eq_ignore_ascii_case("file")) {
        return Err(GraphError::invalid_request(
            "Only attachmentType 'file' is supported here.",
        ));
    }
    let size = item
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| GraphError::invalid_request("AttachmentItem.size is required."))?;
    if size < UPLOAD_SESSION_MINIMUM {
        return Err(GraphError::attachment_below_minimum());
    }
    if size > MAX_MAILBOX_SIZE_LIMIT as u64 {
        return Err(GraphError::attachment_above_maximum());
    }
    let item = AttachmentItem {
        name: text("name")
            .ok_or_else(|| GraphError::invalid_request("AttachmentItem.name is required."))?,
        size,
        content_type: text("contentType").unwrap_or_else(|| "application/octet-stream".to_owned()),
        is_inline: item
            .get("isInline")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        content_id: text("contentId"),
    };
    let dir = shared
        .options
        .upload_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let file = tokio::task::spawn_blocking(move || tempfile::NamedTempFile::new_in(dir))
        .await
        .map_err(|_| GraphError::service_unavailable(None))?
        .map_err(|_| GraphError::service_unavailable(None))?;
    let session_id = shared.new_item_id();
    let authtoken = random_b64url(48);
    let expires_at = SystemTime::now() + shared.options.upload_session_lifetime;
    {
        let mut runtime = shared.lock();
        if runtime
            .drafts
            .get(message_id)
            .is_none_or(|d| d.mailbox != caller.mailbox)
        {
            return Err(GraphError::item_not_found());
        }
        runtime.uploads.insert(
            session_id.clone(),
            UploadSession {
                authtoken: authtoken.clone(),
                mailbox: caller.mailbox.clone(),
                client_id: caller.client_id.clone(),
                message_id: message_id.to_owned(),
                item,
                file: Arc::new(file),
                received: 0,
                expires_at,
                digest: Some(ring::digest::Context::new(&ring::digest::SHA256)),
            },
        );
    }
    let upload_url = format!(
        "{}/api/v2.0/Users('{}')/Messages('{message_id}')/AttachmentSessions('{session_id}')?authtoken={authtoken}",
        shared.base_url, caller.mailbox
    );
    let body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": upload_url,
        "expirationDateTime": odata_timestamp(expires_at),
        "nextExpectedRanges": ["0-"],
    });
    Ok(json_response(StatusCode::CREATED, &body, &caller.ids))
}

/// `DELETE {uploadUrl}`.
pub(crate) fn cancel(
    shared: &GraphShared,
    caller: &Caller,
    session_id: &str,
    deliver: bool,
) -> Outcome {
    if !deliver {
        return Outcome::Drop;
    }
    match shared.lock().uploads.remove(session_id) {
        Some(_) => Outcome::Answer(empty_response(StatusCode::NO_CONTENT, &caller.ids)),
        None => Outcome::Refuse(GraphError::item_not_found()),
    }
}

/// `PUT {uploadUrl}` with one chunk.
pub(crate) async fn put_chunk(
    shared: &GraphShared,
    caller: &Caller,
    session_id: &str,
    content_range: Option<&str>,
    body: &mut BodyReader,
    deliver: bool,
) -> Outcome {
    match put_chunk_inner(shared, caller, session_id, content_range, body, deliver).await {
        Ok(Some(response)) => Outcome::Answer(response),
        Ok(None) => Outcome::Drop,
        Err(error) => Outcome::Refuse(error),
    }
}

async fn put_chunk_inner(
    shared: &GraphShared,
    caller: &Caller,
    session_id: &str,
    content_range: Option<&str>,
    body: &mut BodyReader,
    deliver: bool,
) -> Result<Option<super::graph_errors::GraphResponse>, GraphError> {
    let range = parse_content_range(
        content_range.ok_or_else(|| GraphError::invalid_content_range("the header is missing"))?,
    )?;
    if range.len() > GRAPH_REQUEST_LIMIT as u64 {
        return Err(GraphError::invalid_content_range(
            "a chunk may carry at most 4 MB",
        ));
    }
    let (file, mut digest, message_id) = {
        let mut runtime = shared.lock();
        let session = runtime
            .uploads
            .get_mut(session_id)
            .ok_or_else(GraphError::item_not_found)?;
        if range.total != session.item.size {
            return Err(GraphError::invalid_content_range(&format!(
                "the total {} is not the announced size {}",
                range.total, session.item.size
            )));
        }
        if range.first != session.received || session.digest.is_none() {
            return Err(GraphError::range_not_satisfiable(session.received));
        }
        let digest = session
            .digest
            .take()
            .unwrap_or_else(|| ring::digest::Context::new(&ring::digest::SHA256));
        (
            Arc::clone(&session.file),
            digest,
            session.message_id.clone(),
        )
    };
    let release = |digest: ring::digest::Context| {
        if let Some(session) = shared.lock().uploads.get_mut(session_id) {
            session.digest = Some(digest);
        }
    };
    let chunk = match body.read_all().await {
        Ok(chunk) => chunk,
        Err(error) => {
            release(digest);
            return Err(error);
        }
    };
    if chunk.len() as u64 != range.len() || !deliver {
        release(digest);
        if !deliver {
            return Ok(None);
        }
        return Err(GraphError::invalid_content_range(&format!(
            "the range names {} bytes but the body has {}",
            range.len(),
            chunk.len()
        )));
    }
    digest.update(&chunk);
    let offset = range.first;
    let written =
        tokio::task::spawn_blocking(move || file.as_file().write_all_at(&chunk, offset)).await;
    if !matches!(written, Ok(Ok(()))) {
        release(digest);
        return Err(GraphError::service_unavailable(None));
    }
    let next = range.last + 1;
    if next < range.total {
        let expires_at = {
            let mut runtime = shared.lock();
            let session = runtime
                .uploads
                .get_mut(session_id)
                .ok_or_else(GraphError::item_not_found)?;
            session.received = next;
            session.digest = Some(digest);
            session.expires_at
        };
        let body = json!({
            "@odata.context": format!(
                "https://outlook.office.com/api/v2.0/$metadata#Users('{}')/Messages('{message_id}')/AttachmentSessions/$entity",
                caller.mailbox
            ),
            "ExpirationDateTime": odata_timestamp(expires_at),
            "nextExpectedRanges": [next.to_string()],
        });
        return Ok(Some(json_response(StatusCode::OK, &body, &caller.ids)));
    }
    let attachment_id = shared.new_item_id();
    {
        let mut runtime = shared.lock();
        let session = runtime
            .uploads
            .remove(session_id)
            .ok_or_else(GraphError::item_not_found)?;
        let sha256 = hex_lower(digest.finish().as_ref());
        let attachment =
            GraphAttachment::in_file(attachment_id.clone(), &session.item, session.file, sha256);
        let draft = runtime
            .drafts
            .get_mut(&message_id)
            .ok_or_else(GraphError::item_not_found)?;
        draft.attachments.push(attachment);
    }
    let mut response = empty_response(StatusCode::CREATED, &caller.ids);
    let location = format!(
        "{}/api/v2.0/Users('{}')/Messages('{message_id}')/Attachments('{attachment_id}')",
        shared.base_url, caller.mailbox
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(Some(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        let ok = |first, last, total| Some(ContentRange { first, last, total });
        let table = [
            ("bytes 0-2097151/3483322", ok(0, 2_097_151, 3_483_322)),
            (
                "bytes 2097152-3483321/3483322",
                ok(2_097_152, 3_483_321, 3_483_322),
            ),
            (" bytes  0-0/1 ", ok(0, 0, 1)),
            ("bytes 0-9/5", None),
            ("bytes 5-4/10", None),
            ("bytes */10", None),
            ("bytes 0-9", None),
            ("items 0-9/10", None),
            ("bytes -1-9/10", None),
        ];
        for (value, expected) in table {
            assert_eq!(parse_content_range(value).ok(), expected, "{value}");
        }
        assert_eq!(
            ContentRange {
                first: 2,
                last: 5,
                total: 9
            }
            .len(),
            4
        );
    }
}
