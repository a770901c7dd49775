//! The mail operations of the fake Graph, once a request passed the checks of `graph_http`:
//! `sendMail` (MIME base64 as `text/plain`, or JSON), draft creation, `PATCH` of a draft's
//! recipient collections (for a MIME draft they replace the header lists, and the
//! recipients' copy gets regenerated `To:`/`Cc:` fields), small attachments and sending a
//! draft; `createUploadSession` is handed to `graph_upload`.
//!
//! Submission checks, in this order, for every way of sending: each `From:` address is the
//! mailbox or one it has SendAs on (403 `ErrorSendAsDenied`) → at least one recipient
//! (400 `ErrorInvalidRecipients`) → every recipient is `local@domain` (same) → at most
//! `max_recipients` (same) → the counted size fits the mailbox limit
//! (`ErrorMessageSizeExceeded`) → delivered, `202 Accepted` with an empty body.
//!
//! Invariants: what is stored as delivered is exactly what was received (MIME bytes decoded
//! from base64, untouched) plus the recipients' copy without `Bcc:`; a draft is removed when
//! it is sent, together with its unfinished upload sessions.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::graph::{
    DeliveredMessage, GraphAttachment, GraphOperation, SendPath, UPLOAD_SESSION_MINIMUM,
};
use super::graph_errors::{GraphError, empty_response, json_response};
use super::graph_http::{Caller, Outcome};
use super::graph_mime::{
    MessageAddresses, RecipientOverrides, json_addresses, mime_addresses, recipients_copy,
    render_json_message, strip_bcc,
};
use super::graph_state::{AttachmentItem, Draft, DraftContent, GraphShared};
use super::graph_upload;

/// Runs `operation` with the request body `bytes`; with `deliver == false` (a drop fault
/// that loses the request) nothing happens.
pub(crate) async fn dispatch(
    shared: &Arc<GraphShared>,
    caller: &Caller,
    operation: GraphOperation,
    message_id: Option<&str>,
    content_type: &str,
    bytes: Vec<u8>,
    deliver: bool,
) -> Outcome {
    if !deliver {
        return Outcome::Drop;
    }
    let message_id = message_id.unwrap_or_default();
    let result = match operation {
        GraphOperation::SendMail => send_mail(shared, caller, content_type, &bytes),
        GraphOperation::CreateDraft => create_draft(shared, caller, content_type, &bytes),
        GraphOperation::UpdateDraft => {
            update_draft(shared, caller, message_id, content_type, &bytes)
        }
        GraphOperation::AddAttachment => add_attachment(shared, caller, message_id, &bytes),
        GraphOperation::CreateUploadSession => {
            graph_upload::create(shared, caller, message_id, &bytes).await
        }
        GraphOperation::SendDraft => send_draft(shared, caller, message_id),
        GraphOperation::DeleteDraft => delete_draft(shared, caller, message_id),
        _ => Err(GraphError::method_not_allowed()),
    };
    match result {
        Ok(response) => Outcome::Answer(response),
        Err(error) => Outcome::Refuse(error),
    }
}

type HandlerResult = Result<super::graph_errors::GraphResponse, GraphError>;

/// Decodes base64 MIME as Graph does: white space (line breaks) ignored, padding required.
pub(crate) fn decode_mime_base64(body: &[u8]) -> Result<Vec<u8>, GraphError> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(GraphError::invalid_base64());
    }
    STANDARD
        .decode(&compact)
        .map_err(|_| GraphError::invalid_base64())
}

fn is_json(content_type: &str) -> bool {
    content_type.starts_with("application/json")
}

fn is_mime(content_type: &str) -> bool {
    content_type.starts_with("text/plain")
}

fn parse_json(bytes: &[u8]) -> Result<Value, GraphError> {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(GraphError::unreadable_json)
}

fn send_mail(
    shared: &GraphShared,
    caller: &Caller,
    content_type: &str,
    body: &[u8],
) -> HandlerResult {
    if is_mime(content_type) {
        let mime = decode_mime_base64(body)?;
        let addresses = mime_addresses(&mime);
        let size = mime.len();
        submit(
            shared,
            caller,
            Submission {
                path: SendPath::MimeSendMail,
                addresses,
                seen_by_recipients: strip_bcc(&mime),
                raw_mime: Some(mime),
                json: None,
                saved_to_sent_items: true,
                attachments: Vec::new(),
                size,
            },
        )?;
    } else if is_json(content_type) {
        let request = parse_json(body)?;
        let message = request
            .get("message")
            .filter(|m| m.is_object())
            .cloned()
            .ok_or_else(|| GraphError::invalid_request("The 'message' parameter is missing."))?;
        let saved_to_sent_items = match request.get("saveToSentItems") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(value)) => *value,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => false,
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => true,
            Some(_) => return Err(GraphError::unreadable_json()),
        };
        let addresses = json_addresses(&message).map_err(GraphError::invalid_request)?;
        let attachments = json_attachments(shared, &message)?;
        let id = shared.new_item_id();
        let rendered = render_json_message(&message, &caller.mailbox, &format!("{id}@fake.graph"));
        let size = rendered.len() + attachments_size(&attachments);
        submit(
            shared,
            caller,
            Submission {
                path: SendPath::JsonSendMail,
                addresses,
                seen_by_recipients: rendered,
                raw_mime: None,
                json: Some(message),
                saved_to_sent_items,
                attachments,
                size,
            },
        )?;
    } else {
        return Err(GraphError::unsupported_media_type(content_type));
    }
    Ok(empty_response(StatusCode::ACCEPTED, &caller.ids))
}

/// What a submission carries, whatever the path.
struct Submission {
    path: SendPath,
    addresses: MessageAddresses,
    raw_mime: Option<Vec<u8>>,
    json: Option<Value>,
    seen_by_recipients: Vec<u8>,
    saved_to_sent_items: bool,
    attachments: Vec<GraphAttachment>,
    size: usize,
}

/// The submission checks of the module doc, then delivery.
fn submit(shared: &GraphShared, caller: &Caller, submission: Submission) -> Result<(), GraphError> {
    let addresses = &submission.addresses;
    for from in &addresses.from {
        if !shared.directory.may_send_as(&caller.mailbox, from) {
            return Err(GraphError::send_as_denied());
        }
    }
    let recipients = addresses.all_recipients();
    if recipients.is_empty() {
        return Err(GraphError::no_recipients());
    }
    if let Some(bad) = addresses.first_invalid_recipient() {
        return Err(GraphError::unresolved_recipient(bad));
    }
    let limit = shared.options.max_recipients;
    if recipients.len() > limit {
        return Err(GraphError::too_many_recipients(recipients.len(), limit));
    }
    if submission.size > shared.size_limit(&caller.mailbox) {
        return Err(GraphError::message_size_exceeded());
    }
    shared.deliver(DeliveredMessage {
        id: shared.new_item_id(),
        mailbox: caller.mailbox.clone(),
        client_id: caller.client_id.clone(),
        path: submission.path,
        recipients,
        addresses: submission.addresses,
        raw_mime: submission.raw_mime,
        json: submission.json,
        seen_by_recipients: submission.seen_by_recipients,
        saved_to_sent_items: submission.saved_to_sent_items,
        attachments: submission.attachments,
        counted_size: submission.size,
        delivered_at: SystemTime::now(),
    });
    Ok(())
}

/// Attachments count at their base64 size, as Exchange transmits them.
fn attachments_size(attachments: &[GraphAttachment]) -> usize {
    attachments
        .iter()
        .map(|a| usize::try_from(a.size.div_ceil(3) * 4).unwrap_or(usize::MAX))
        .fold(0usize, usize::saturating_add)
}

/// The `attachments` of a JSON message (file attachments with `contentBytes`).
fn json_attachments(
    shared: &GraphShared,
    message: &Value,
) -> Result<Vec<GraphAttachment>, GraphError> {
    let Some(list) = message.get("attachments") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| GraphError::invalid_request("'attachments' is not a collection."))?;
    list.iter()
        .map(|attachment| file_attachment(shared, attachment))
        .collect()
}

/// A `#microsoft.graph.fileAttachment` resource, decoded.
fn file_attachment(shared: &GraphShared, value: &Value) -> Result<GraphAttachment, GraphError> {
    let odata_type = value
        .get("@odata.type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !odata_type.eq_ignore_ascii_case("#microsoft.graph.fileAttachment") {
        return Err(GraphError::invalid_request(
            "A file attachment needs \"@odata.type\": \"#microsoft.graph.fileAttachment\".",
        ));
    }
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let name =
        text("name").ok_or_else(|| GraphError::invalid_request("The attachment has no name."))?;
    let bytes = text("contentBytes")
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .ok_or_else(|| GraphError::invalid_request("contentBytes is missing or not base64."))?;
    let item = AttachmentItem {
        name,
        size: bytes.len() as u64,
        content_type: text("contentType").unwrap_or_else(|| "application/octet-stream".to_owned()),
        is_inline: value
            .get("isInline")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        content_id: text("contentId"),
    };
    Ok(GraphAttachment::in_memory(
        shared.new_item_id(),
        &item,
        bytes,
    ))
}

fn create_draft(
    shared: &GraphShared,
    caller: &Caller,
    content_type: &str,
    body: &[u8],
) -> HandlerResult {
    let content = if is_mime(content_type) {
        DraftContent::Mime(decode_mime_base64(body)?)
    } else if is_json(content_type) {
        DraftContent::Json(parse_json(body)?)
    } else {
        return Err(GraphError::unsupported_media_type(content_type));
    };
    let (addresses, attachments) = match &content {
        DraftContent::Mime(mime) => (mime_addresses(mime), Vec::new()),
        DraftContent::Json(message) => (
            json_addresses(message).map_err(GraphError::invalid_request)?,
            json_attachments(shared, message)?,
        ),
    };
    let id = shared.new_item_id();
    let body = message_json(caller, &id, &addresses, !attachments.is_empty());
    shared.lock().drafts.insert(
        id,
        Draft {
            mailbox: caller.mailbox.clone(),
            content,
            attachments,
            overrides: RecipientOverrides::default(),
        },
    );
    Ok(json_response(StatusCode::CREATED, &body, &caller.ids))
}

/// The message resource Graph answers for a draft.
fn message_json(caller: &Caller, id: &str, addresses: &MessageAddresses, attached: bool) -> Value {
    let recipients = |list: &[String]| -> Value {
        list.iter()
            .map(|a| json!({"emailAddress": {"name": a, "address": a}}))
            .collect()
    };
    json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#users('{}')/messages/$entity", caller.mailbox),
        "@odata.etag": "W/\"CQAAABYAAAAA\"",
        "id": id,
        "createdDateTime": super::graph_errors::odata_timestamp(SystemTime::now()),
        "subject": addresses.subject,
        "isDraft": true,
        "hasAttachments": attached,
        "toRecipients": recipients(&addresses.to),
        "ccRecipients": recipients(&addresses.cc),
        "bccRecipients": recipients(&addresses.bcc),
    })
}

/// The addresses a draft will be sent to: its MIME headers with the `PATCH`ed collections,
/// or its JSON message.
fn draft_addresses(draft: &Draft) -> Result<MessageAddresses, GraphError> {
    match &draft.content {
        DraftContent::Mime(mime) => {
            let mut addresses = mime_addresses(mime);
            draft.overrides.apply(&mut addresses);
            Ok(addresses)
        }
        DraftContent::Json(message) => json_addresses(message).map_err(GraphError::invalid_request),
    }
}

/// `PATCH /users/{id}/messages/{id}`: a JSON draft takes the given properties; a MIME draft
/// takes the recipient collections (other properties are accepted and ignored).
fn update_draft(
    shared: &GraphShared,
    caller: &Caller,
    message_id: &str,
    content_type: &str,
    body: &[u8],
) -> HandlerResult {
    if !is_json(content_type) {
        return Err(GraphError::unsupported_media_type(content_type));
    }
    let patch = parse_json(body)?;
    let overrides = RecipientOverrides::from_patch(&patch).map_err(GraphError::invalid_request)?;
    let mut runtime = shared.lock();
    let draft = runtime
        .drafts
        .get_mut(message_id)
        .filter(|d| d.mailbox == caller.mailbox)
        .ok_or_else(GraphError::item_not_found)?;
    match &mut draft.content {
        DraftContent::Mime(_) => draft.overrides.merge(overrides),
        DraftContent::Json(message) => {
            if let (Some(target), Some(fields)) = (message.as_object_mut(), patch.as_object()) {
                for (key, value) in fields {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
    }
    let addresses = draft_addresses(draft)?;
    let body = message_json(
        caller,
        message_id,
        &addresses,
        !draft.attachments.is_empty(),
    );
    drop(runtime);
    Ok(json_response(StatusCode::OK, &body, &caller.ids))
}

fn add_attachment(
    shared: &GraphShared,
    caller: &Caller,
    message_id: &str,
    body: &[u8],
) -> HandlerResult {
    let value = parse_json(body)?;
    let attachment = file_attachment(shared, &value)?;
    if attachment.size >= UPLOAD_SESSION_MINIMUM {
        return Err(GraphError::attachment_above_maximum());
    }
    let response = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#users('{}')/messages('{message_id}')/attachments/$entity", caller.mailbox),
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": attachment.id,
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.size,
        "isInline": attachment.is_inline,
        "contentId": attachment.content_id,
    });
    let mut runtime = shared.lock();
    let draft = runtime
        .drafts
        .get_mut(message_id)
        .filter(|d| d.mailbox == caller.mailbox)
        .ok_or_else(GraphError::item_not_found)?;
    draft.attachments.push(attachment);
    drop(runtime);
    Ok(json_response(StatusCode::CREATED, &response, &caller.ids))
}

/// `DELETE …/messages/{id}` of a draft: it and its unfinished upload sessions go (`204`).
fn delete_draft(shared: &GraphShared, caller: &Caller, message_id: &str) -> HandlerResult {
    let mut runtime = shared.lock();
    if runtime
        .drafts
        .get(message_id)
        .is_none_or(|d| d.mailbox != caller.mailbox)
    {
        return Err(GraphError::item_not_found());
    }
    runtime.drafts.remove(message_id);
    runtime
        .uploads
        .retain(|_, session| session.message_id != message_id);
    drop(runtime);
    Ok(empty_response(StatusCode::NO_CONTENT, &caller.ids))
}

fn send_draft(shared: &GraphShared, caller: &Caller, message_id: &str) -> HandlerResult {
    let draft = shared
        .lock()
        .drafts
        .get(message_id)
        .filter(|d| d.mailbox == caller.mailbox)
        .cloned()
        .ok_or_else(GraphError::item_not_found)?;
    let attachments_size = attachments_size(&draft.attachments);
    let addresses = draft_addresses(&draft)?;
    let submission = match draft.content {
        DraftContent::Mime(mime) => Submission {
            path: SendPath::Draft,
            addresses,
            seen_by_recipients: recipients_copy(&mime, &draft.overrides),
            size: mime.len().saturating_add(attachments_size),
            raw_mime: Some(mime),
            json: None,
            saved_to_sent_items: true,
            attachments: draft.attachments,
        },
        DraftContent::Json(message) => {
            let rendered = render_json_message(
                &message,
                &caller.mailbox,
                &format!("{message_id}@fake.graph"),
            );
            Submission {
                path: SendPath::Draft,
                addresses,
                size: rendered.len().saturating_add(attachments_size),
                seen_by_recipients: rendered,
                raw_mime: None,
                json: Some(message),
                saved_to_sent_items: true,
                attachments: draft.attachments,
            }
        }
    };
    submit(shared, caller, submission)?;
    let mut runtime = shared.lock();
    runtime.drafts.remove(message_id);
    runtime
        .uploads
        .retain(|_, session| session.message_id != message_id);
    drop(runtime);
    Ok(empty_response(StatusCode::ACCEPTED, &caller.ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decoding_like_graph() {
        let table: [(&str, Option<&str>); 5] = [
            ("VG86IGFAeC5jb20NCg0KaGk=", Some("To: a@x.com\r\n\r\nhi")),
            (
                "VG86IGFAeC5j\r\nb20NCg0KaGk=\r\n",
                Some("To: a@x.com\r\n\r\nhi"),
            ),
            ("To: a@x.com", None),
            ("VG86IGFAeC5jb20NCg0KaGk", None),
            ("", None),
        ];
        for (input, expected) in table {
            let decoded = decode_mime_base64(input.as_bytes()).ok();
            assert_eq!(decoded.as_deref(), expected.map(str::as_bytes), "{input:?}");
        }
    }

    #[test]
    fn attachments_count_at_their_base64_size() {
        let item = AttachmentItem {
            name: "a".to_owned(),
            size: 0,
            content_type: "x/y".to_owned(),
            is_inline: false,
            content_id: None,
        };
        let three = GraphAttachment::in_memory("1".to_owned(), &item, vec![0; 3]);
        let four = GraphAttachment::in_memory("2".to_owned(), &item, vec![0; 4]);
        assert_eq!(attachments_size(std::slice::from_ref(&three)), 4);
        assert_eq!(attachments_size(&[three, four]), 12);
        assert_eq!(attachments_size(&[]), 0);
    }
}
