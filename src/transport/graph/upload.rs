//! Large messages over Graph (issue 13 item 4), the requests: a message whose base64 does not
//! fit one request goes as a draft built from its skeleton (the MIME without the attachments
//! [`choose`] picks, see [`large`](super::large)), with its recipients set to exactly the
//! envelope, then one upload session per attachment of 3 MiB or more (`createUploadSession`,
//! then `PUT`s of at most [`UPLOAD_CHUNK`] bytes with `Content-Range`, without the token: the
//! upload URL carries its own authorisation), a plain `POST …/attachments` for each smaller
//! one that had to leave the skeleton, then `/send`.
//!
//! Invariants: the message is read from the spool in passes (scan, skeleton, one per large
//! attachment), each verified against its checksum; memory holds at most the skeleton and
//! one upload chunk, whatever the message's size; nothing is sent before the last `PUT`
//! succeeded and the spooled copy read back intact (only `/send` sends).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::large::{
    Base64Stream, LargePart, Scanner, UPLOAD_CHUNK, choose, skeleton_piece, within,
};
use super::{
    GraphFailure, GraphFailureKind, GraphSession, MAX_REQUEST_BODY, Request, base64_len, lost,
};
use crate::spool::Content;
use crate::vocab::verdict::Stage;

/// One pass over the spooled content: `each(offset, piece)` for every piece, then whether the
/// content ended with the CRLF the pieces leave out.
fn pass(
    content: &Content,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), GraphFailure>,
) -> Result<bool, GraphFailure> {
    let damaged = Arc::new(AtomicBool::new(false));
    let flag = damaged.clone();
    let chunks = content
        .chunks(Box::new(move || flag.store(true, Ordering::SeqCst)))
        .map_err(|e| spool_failure(&e.to_string()))?;
    let mut offset = 0u64;
    for chunk in chunks {
        each(offset, &chunk)?;
        offset += chunk.len() as u64;
    }
    if damaged.load(Ordering::SeqCst) {
        return Err(spool_failure(
            "the message file changed or could not be read",
        ));
    }
    Ok(offset + 2 == content.len())
}

fn spool_failure(detail: &str) -> GraphFailure {
    GraphFailure {
        stage: Stage::Data,
        kind: GraphFailureKind::Spool(format!("cannot read the spooled message: {detail}")),
    }
}

impl GraphSession {
    /// Send `content`, too large for one request, as a draft with upload sessions.
    pub(super) async fn send_large(
        &self,
        content: &Content,
        to: &[String],
        cc: &[String],
        bcc: &[String],
    ) -> Result<String, GraphFailure> {
        let too_large = || GraphFailure {
            stage: Stage::Data,
            kind: GraphFailureKind::TooLarge {
                bytes: content.len(),
            },
        };
        let mut scanner = Scanner::default();
        let final_crlf = pass(content, |_, piece| {
            scanner.feed(piece);
            Ok(())
        })?;
        scanner.feed(b"\r\n");
        let Some((uploads, posts)) = choose(scanner.finish(), content.len(), MAX_REQUEST_BODY)
        else {
            return Err(too_large());
        };
        if uploads.is_empty() && posts.is_empty() {
            return Err(too_large());
        }
        let mut removed: Vec<LargePart> = uploads.iter().chain(&posts).cloned().collect();
        removed.sort_by_key(|p| p.removed.start);
        let mut skeleton = Vec::new();
        pass(content, |offset, piece| {
            for kept in skeleton_piece(offset, piece, &removed) {
                skeleton.extend_from_slice(kept);
            }
            Ok(())
        })?;
        if final_crlf {
            skeleton.extend_from_slice(b"\r\n");
        }
        if base64_len(skeleton.len() as u64) > MAX_REQUEST_BODY {
            return Err(too_large());
        }
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD
            .encode(&skeleton)
            .into_bytes();
        drop(skeleton);
        let message_url = self.create_draft(body, to, cc, bcc).await?;
        if let Err(failure) = self.attach(content, &message_url, &uploads, &posts).await {
            self.abandon(&message_url, &failure);
            return Err(failure);
        }
        self.send_draft(&message_url).await?;
        Ok(format!(
            "202 Accepted by Graph (draft with the envelope's recipients, {} attachment(s) through upload sessions and {} posted, sent)",
            uploads.len(),
            posts.len()
        ))
    }

    /// Every attachment that left the draft's MIME.
    async fn attach(
        &self,
        content: &Content,
        message_url: &str,
        uploads: &[LargePart],
        posts: &[LargePart],
    ) -> Result<(), GraphFailure> {
        for part in uploads {
            self.upload(content, message_url, part).await?;
        }
        for part in posts {
            self.post_attachment(content, message_url, part).await?;
        }
        Ok(())
    }

    /// One attachment under 3 MiB by a plain `POST` on the draft's attachments.
    async fn post_attachment(
        &self,
        content: &Content,
        message_url: &str,
        part: &LargePart,
    ) -> Result<(), GraphFailure> {
        let mut decoder = Base64Stream::default();
        let capacity = usize::try_from(part.decoded_len).unwrap_or(0);
        let mut decoded = Vec::with_capacity(capacity);
        let mut failed = None;
        pass(content, |offset, piece| {
            let piece = within(offset, piece, &part.body);
            if !piece.is_empty()
                && failed.is_none()
                && let Err(e) = decoder.push(piece, &mut decoded)
            {
                failed = Some(e);
            }
            Ok(())
        })?;
        if let Some(error) = failed {
            return Err(GraphFailure::local(Stage::Data, error));
        }
        if !decoder.is_complete() || decoded.len() as u64 != part.decoded_len {
            return Err(GraphFailure::local(
                Stage::Data,
                format!("the attachment {} is not whole base64", part.name),
            ));
        }
        // The JSON by hand around the base64, so it is not copied once more.
        let text = |value: &str| serde_json::Value::from(value).to_string();
        let mut body = format!(
            "{{\"@odata.type\":\"#microsoft.graph.fileAttachment\",\"name\":{},\"contentType\":{},\"isInline\":{}",
            text(&part.name),
            text(&part.content_type),
            part.is_inline
        );
        if let Some(id) = &part.content_id {
            body.push_str(&format!(",\"contentId\":{}", text(id)));
        }
        body.push_str(",\"contentBytes\":\"");
        let mut body = body.into_bytes();
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&decoded);
        drop(decoded);
        body.extend_from_slice(encoded.as_bytes());
        drop(encoded);
        body.extend_from_slice(b"\"}");
        self.request(Request::json(
            reqwest::Method::POST,
            format!("{message_url}/attachments"),
            body,
            false,
        ))
        .await?;
        Ok(())
    }

    /// One large attachment: its upload session, then its decoded bytes in ranges.
    async fn upload(
        &self,
        content: &Content,
        message_url: &str,
        part: &LargePart,
    ) -> Result<(), GraphFailure> {
        let mut item = serde_json::json!({
            "attachmentType": "file",
            "name": part.name,
            "size": part.decoded_len,
            "contentType": part.content_type,
            "isInline": part.is_inline,
        });
        if let (Some(id), Some(fields)) = (&part.content_id, item.as_object_mut()) {
            fields.insert("contentId".into(), serde_json::Value::from(id.as_str()));
        }
        let created = self
            .request(Request::json(
                reqwest::Method::POST,
                format!("{message_url}/attachments/createUploadSession"),
                serde_json::json!({ "AttachmentItem": item })
                    .to_string()
                    .into_bytes(),
                false,
            ))
            .await?;
        let upload_url = serde_json::from_slice::<serde_json::Value>(&created)
            .ok()
            .and_then(|v| {
                v.get("uploadUrl")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned)
            })
            .filter(|u| u.starts_with("https://"))
            .ok_or_else(|| {
                GraphFailure::local(Stage::Data, "Graph's upload session has no https uploadUrl")
            })?;
        // Decode in passes over the spool, sending a range whenever one is full.
        let mut decoder = Base64Stream::default();
        let mut buffer: Vec<u8> = Vec::with_capacity(UPLOAD_CHUNK + 256 * 1024);
        let mut sent = 0u64;
        let damaged = Arc::new(AtomicBool::new(false));
        let flag = damaged.clone();
        let chunks = content
            .chunks(Box::new(move || flag.store(true, Ordering::SeqCst)))
            .map_err(|e| spool_failure(&e.to_string()))?;
        let mut offset = 0u64;
        for chunk in chunks {
            let piece = within(offset, &chunk, &part.body);
            offset += chunk.len() as u64;
            if piece.is_empty() {
                continue;
            }
            decoder
                .push(piece, &mut buffer)
                .map_err(|e| GraphFailure::local(Stage::Data, e))?;
            while buffer.len() >= UPLOAD_CHUNK {
                let rest = buffer.split_off(UPLOAD_CHUNK);
                let full = std::mem::replace(&mut buffer, rest);
                // One allocation per range, not a doubling one.
                buffer.reserve(UPLOAD_CHUNK + 256 * 1024);
                sent = self.put_range(&upload_url, full, sent, part).await?;
            }
        }
        if damaged.load(Ordering::SeqCst) || !decoder.is_complete() {
            return Err(spool_failure(
                "the message file changed, or a large part ends in the middle of its base64",
            ));
        }
        if !buffer.is_empty() {
            sent = self.put_range(&upload_url, buffer, sent, part).await?;
        }
        if sent != part.decoded_len {
            return Err(GraphFailure::local(
                Stage::Data,
                format!(
                    "the attachment {} decoded to {sent} bytes, not the {} counted",
                    part.name, part.decoded_len
                ),
            ));
        }
        Ok(())
    }

    /// `PUT` `bytes` at `start` of the upload; the next start.
    async fn put_range(
        &self,
        upload_url: &str,
        bytes: Vec<u8>,
        start: u64,
        part: &LargePart,
    ) -> Result<u64, GraphFailure> {
        let end = start + bytes.len() as u64;
        let response = self
            .transport
            .http
            .put(upload_url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(
                reqwest::header::CONTENT_RANGE,
                format!(
                    "bytes {start}-{}/{}",
                    end.saturating_sub(1),
                    part.decoded_len
                ),
            )
            .body(bytes)
            .send()
            .await
            .map_err(|e| lost(&e, Stage::Data))?;
        let status = response.status().as_u16();
        let retry_after = super::retry_after(response.headers());
        let body = super::answer(response, Stage::Data).await?;
        if (200..300).contains(&status) {
            return Ok(end);
        }
        let not_before = match (status, retry_after) {
            (429 | 503, Some(after)) => Some(self.throttle(after)),
            _ => None,
        };
        let (code, message) = super::error_of(&body);
        Err(GraphFailure {
            stage: Stage::Data,
            kind: GraphFailureKind::Reply {
                status,
                code,
                message: format!("upload of {}: {message}", part.name),
                not_before,
                sends: false,
            },
        })
    }
}
