//! What the fake Graph lets tests observe: the request log ([`GraphRequestRecord`]), the
//! delivered messages with their final recipients, raw MIME and recipients' copy
//! ([`DeliveredMessage`]), their attachments ([`GraphAttachment`], kept in memory or in the
//! upload session's temporary file) and the counters ([`GraphStats`]).
//!
//! Invariants: records hold no token and no upload `authtoken`; an attachment's bytes stay
//! readable as long as any clone of it lives (the temporary file is shared, deleted with the
//! last clone).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::graph::{GraphFault, GraphOperation};
use super::graph_mime::MessageAddresses;

/// One request, without any token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphRequestRecord {
    /// When its headers arrived (wall clock).
    pub at: SystemTime,
    /// When its headers arrived (monotonic, for Retry-After assertions).
    pub arrived: Instant,
    /// HTTP method.
    pub method: String,
    /// Path without the query (the upload URL's `authtoken` is never recorded).
    pub path: String,
    /// What it asked for.
    pub operation: GraphOperation,
    /// The mailbox it acted on, once known.
    pub mailbox: Option<String>,
    /// The token's `appid` (or the upload session's app), once known.
    pub client_id: Option<String>,
    /// Whether an `Authorization` header was sent.
    pub had_authorization: bool,
    /// Body bytes read (0 if the answer came before the body).
    pub body_bytes: u64,
    /// HTTP status answered; 0 when the connection was dropped by a fault.
    pub status: u16,
    /// Graph `error.code`, for errors.
    pub error_code: Option<String>,
    /// The injected fault that answered, if any.
    pub fault: Option<GraphFault>,
    /// The `Retry-After` of the answer (429, 503), if any.
    pub retry_after: Option<Duration>,
    /// When the answer was handed to the connection (or the connection dropped).
    pub answered: Instant,
}

impl GraphRequestRecord {
    /// The earliest moment the client may come back for this mailbox, if the answer said
    /// `Retry-After`.
    pub fn retry_not_before(&self) -> Option<Instant> {
        self.retry_after.map(|after| self.answered + after)
    }
}

/// Requests that came before an earlier answer's `Retry-After` had elapsed, for the same
/// mailbox: pairs of (the answer with `Retry-After`, the request that came too early).
pub fn retry_after_violations(
    log: &[GraphRequestRecord],
) -> Vec<(GraphRequestRecord, GraphRequestRecord)> {
    let mut violations = Vec::new();
    for answer in log {
        let (Some(not_before), Some(mailbox)) = (answer.retry_not_before(), &answer.mailbox) else {
            continue;
        };
        for later in log {
            if later.mailbox.as_ref() == Some(mailbox)
                && later.arrived > answer.arrived
                && later.arrived < not_before
            {
                violations.push((answer.clone(), later.clone()));
            }
        }
    }
    violations
}

/// How a delivered message reached the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPath {
    /// sendMail with base64 MIME.
    MimeSendMail,
    /// sendMail with a JSON message.
    JsonSendMail,
    /// A draft sent with `/send`.
    Draft,
}

/// Where an attachment's bytes are kept.
#[derive(Clone, Debug)]
enum AttachmentContent {
    Memory(Arc<Vec<u8>>),
    File(Arc<tempfile::NamedTempFile>),
}

/// A file attachment of a draft or a delivered message.
#[derive(Clone, Debug)]
pub struct GraphAttachment {
    /// Its id.
    pub id: String,
    /// File name.
    pub name: String,
    /// Declared content type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// `isInline`.
    pub is_inline: bool,
    /// `contentId`, if given.
    pub content_id: Option<String>,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Whether it came through an upload session (else a plain POST or the JSON message).
    pub via_upload_session: bool,
    content: AttachmentContent,
}

impl GraphAttachment {
    pub(crate) fn in_memory(
        id: String,
        item: &super::graph_state::AttachmentItem,
        bytes: Vec<u8>,
    ) -> GraphAttachment {
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        GraphAttachment {
            id,
            name: item.name.clone(),
            content_type: item.content_type.clone(),
            size: bytes.len() as u64,
            is_inline: item.is_inline,
            content_id: item.content_id.clone(),
            sha256: super::random::hex_lower(digest.as_ref()),
            via_upload_session: false,
            content: AttachmentContent::Memory(Arc::new(bytes)),
        }
    }

    pub(crate) fn in_file(
        id: String,
        item: &super::graph_state::AttachmentItem,
        file: Arc<tempfile::NamedTempFile>,
        sha256: String,
    ) -> GraphAttachment {
        GraphAttachment {
            id,
            name: item.name.clone(),
            content_type: item.content_type.clone(),
            size: item.size,
            is_inline: item.is_inline,
            content_id: item.content_id.clone(),
            sha256,
            via_upload_session: true,
            content: AttachmentContent::File(file),
        }
    }

    /// The temporary file holding the bytes of an uploaded attachment (`None` when they
    /// came in a request body and are kept in memory).
    pub fn stored_file(&self) -> Option<&std::path::Path> {
        match &self.content {
            AttachmentContent::Memory(_) => None,
            AttachmentContent::File(file) => Some(file.path()),
        }
    }

    /// Reads the bytes (from memory or from the upload's temporary file).
    ///
    /// # Errors
    /// The temporary file cannot be read.
    pub fn read_bytes(&self) -> std::io::Result<Vec<u8>> {
        match &self.content {
            AttachmentContent::Memory(bytes) => Ok(bytes.as_ref().clone()),
            AttachmentContent::File(file) => std::fs::read(file.path()),
        }
    }
}

/// A message Graph accepted for delivery (what a 202 led to).
#[derive(Clone, Debug)]
pub struct DeliveredMessage {
    /// The emulator's item id.
    pub id: String,
    /// The mailbox of the URL (the sending mailbox).
    pub mailbox: String,
    /// The token's `appid`.
    pub client_id: String,
    /// How it was sent.
    pub path: SendPath,
    /// The final recipient set: To + Cc + Bcc, lowercase, each once.
    pub recipients: Vec<String>,
    /// The addresses by role, as read from the MIME headers or the JSON message.
    pub addresses: MessageAddresses,
    /// The MIME exactly as received (decoded from base64); `None` for JSON messages.
    pub raw_mime: Option<Vec<u8>>,
    /// The JSON message as received, for the JSON paths.
    pub json: Option<serde_json::Value>,
    /// The copy recipients see: the MIME without `Bcc:` (a rendering for JSON messages).
    pub seen_by_recipients: Vec<u8>,
    /// Whether a copy went to Sent Items (always for MIME and drafts).
    pub saved_to_sent_items: bool,
    /// File attachments added to the draft or the JSON message.
    pub attachments: Vec<GraphAttachment>,
    /// The size counted against the mailbox limit.
    pub counted_size: usize,
    /// When it was accepted.
    pub delivered_at: SystemTime,
}

/// Counters of the emulator.
#[derive(Clone, Debug, Default)]
pub struct GraphStats {
    /// Requests answered or dropped.
    pub requests: u64,
    /// 429 answers (throttling and injected).
    pub throttled_429: u64,
    /// Requests answered by an injected fault.
    pub faults: u64,
    /// Connections dropped by a fault.
    pub dropped: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Error answers by `error.code`.
    pub errors_by_code: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mailbox: &str, arrived: Instant, retry_after: Option<u64>) -> GraphRequestRecord {
        GraphRequestRecord {
            at: SystemTime::now(),
            arrived,
            method: "POST".to_owned(),
            path: "/".to_owned(),
            operation: GraphOperation::SendMail,
            mailbox: Some(mailbox.to_owned()),
            client_id: Some("app".to_owned()),
            had_authorization: true,
            body_bytes: 0,
            status: if retry_after.is_some() { 429 } else { 202 },
            error_code: None,
            fault: None,
            retry_after: retry_after.map(Duration::from_secs),
            answered: arrived,
        }
    }

    #[test]
    fn violations_are_requests_inside_the_retry_window_of_the_same_mailbox() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let table: [(Vec<GraphRequestRecord>, usize); 5] = [
            (
                vec![record("m", at(0), Some(5)), record("m", at(5), None)],
                0,
            ),
            (
                vec![record("m", at(0), Some(5)), record("m", at(4), None)],
                1,
            ),
            (
                vec![record("m", at(0), Some(5)), record("n", at(1), None)],
                0,
            ),
            (
                vec![
                    record("m", at(0), Some(5)),
                    record("m", at(1), Some(5)),
                    record("m", at(2), None),
                ],
                3,
            ),
            (vec![record("m", at(0), None), record("m", at(0), None)], 0),
        ];
        for (log, expected) in table {
            assert_eq!(retry_after_violations(&log).len(), expected, "{log:?}");
        }
    }
}
