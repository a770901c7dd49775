//! The fake Graph's large-message path through reqwest: a MIME draft, a small attachment by
//! POST, a 20 MB attachment through an upload session in 4 MiB chunks without
//! `Authorization`, then `/send`; and the errors of each step.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::graph_support::{Answer, GraphKit, assert_graph_error, graph_kit};
use crate::testkit::graph::GRAPH_REQUEST_LIMIT;
use crate::testkit::{GraphOperation, SendPath};

const MIME: &[u8] = b"From: relay@contoso.com\r\nTo: a@example.com\r\nBcc: b@example.com\r\n\
Subject: big\r\n\r\nSee attachments.\r\n";

fn session_request(size: u64) -> Value {
    json!({"AttachmentItem": {
        "attachmentType": "file", "name": "big.bin", "size": size,
        "contentType": "application/octet-stream", "isInline": false
    }})
}

async fn create_session(g: &GraphKit, draft: &str, size: u64) -> Answer {
    let path = format!(
        "/v1.0/users/{}/messages/{draft}/attachments/createUploadSession",
        g.mailbox()
    );
    g.post_json(&path, &session_request(size)).await
}

async fn put(g: &GraphKit, url: &str, range: &str, bytes: Vec<u8>) -> Answer {
    GraphKit::answer(
        g.client
            .put(url)
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .body(bytes),
    )
    .await
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn a_20_mb_attachment_through_an_upload_session_then_send() {
    let g = graph_kit().await;
    let draft = g.create_mime_draft(MIME).await;
    assert!(
        draft.starts_with("AAMkAD") && draft.ends_with('='),
        "{draft}"
    );

    let small = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "small.txt", "contentType": "text/plain",
        "contentBytes": STANDARD.encode(b"small attachment")
    });
    let path = format!("/v1.0/users/{}/messages/{draft}/attachments", g.mailbox());
    let answer = g.post_json(&path, &small).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["size"], 16);

    let total = 20 * 1024 * 1024;
    let answer = create_session(&g, &draft, total as u64).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["nextExpectedRanges"], json!(["0-"]));
    assert!(
        answer.body["expirationDateTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let url = answer.body["uploadUrl"].as_str().unwrap().to_owned();
    assert!(
        url.contains("/AttachmentSessions('") && url.contains("?authtoken="),
        "{url}"
    );

    let data = pattern(total);
    let mut offset = 0;
    while offset < total {
        let end = (offset + GRAPH_REQUEST_LIMIT).min(total);
        let range = format!("bytes {offset}-{}/{total}", end - 1);
        let answer = put(&g, &url, &range, data[offset..end].to_vec()).await;
        if end < total {
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(answer.body["nextExpectedRanges"], json!([end.to_string()]));
            assert!(answer.body["ExpirationDateTime"].is_string());
        } else {
            assert_eq!(answer.status, 201, "{}", answer.body);
            let location = answer.headers["location"].to_str().unwrap();
            assert!(location.contains("/Attachments('AAMkAD"), "{location}");
        }
        offset = end;
    }
    assert_eq!(g.graph.open_upload_sessions(), 0);
    let send = format!("/v1.0/users/{}/messages/{draft}/send", g.mailbox());
    let answer = GraphKit::answer(g.post(&send).header("content-length", "0")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    let message = &g.graph.wait_for_delivered(1, super::STEP).await.unwrap()[0];
    assert_eq!(message.path, SendPath::Draft);
    assert_eq!(message.raw_mime.as_deref(), Some(MIME));
    assert_eq!(message.recipients, ["a@example.com", "b@example.com"]);
    assert!(!String::from_utf8_lossy(&message.seen_by_recipients).contains("b@example.com"));
    assert_eq!(message.attachments.len(), 2);
    let big = &message.attachments[1];
    assert!(big.via_upload_session);
    assert_eq!(big.size, total as u64);
    let on_disk = std::fs::metadata(big.stored_file().unwrap()).unwrap().len();
    assert_eq!(
        on_disk, total as u64,
        "upload bytes live in a temporary file"
    );
    assert_eq!(message.attachments[0].stored_file(), None);
    assert_eq!(big.read_bytes().unwrap(), data);
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    assert_eq!(
        big.sha256,
        crate::testkit::random::hex_lower(digest.as_ref())
    );
    assert_eq!(g.graph.draft_count(), 0);

    let uploads: Vec<_> = g
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.operation == GraphOperation::UploadChunk)
        .collect();
    assert_eq!(uploads.len(), 5);
    assert!(
        uploads
            .iter()
            .all(|r| !r.had_authorization && !r.path.contains("authtoken"))
    );
    assert!(
        uploads
            .iter()
            .all(|r| r.mailbox.as_deref() == Some("relay@contoso.com"))
    );
}

#[tokio::test]
async fn upload_session_errors() {
    let g = graph_kit().await;
    let draft = g.create_mime_draft(MIME).await;
    let answer = create_session(&g, &draft, 3 * 1024 * 1024 - 1).await;
    assert_graph_error(
        &answer,
        400,
        "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
    );
    let answer = create_session(&g, "AAMkADnope=", 4 * 1024 * 1024).await;
    assert_graph_error(&answer, 404, "ErrorItemNotFound");

    let total = 5 * 1024 * 1024;
    let answer = create_session(&g, &draft, total as u64).await;
    let url = answer.body["uploadUrl"].as_str().unwrap().to_owned();
    let answer = put(&g, &url, "bytes 1-10/5242880", vec![0; 10]).await;
    assert_graph_error(&answer, 416, "ErrorRangeNotSatisfiable");
    let answer = put(&g, &url, "bytes 0-9/5242880", vec![0; 9]).await;
    assert_graph_error(&answer, 400, "ErrorInvalidContentRange");
    let answer = put(&g, &url, "bytes 0-9/6000000", vec![0; 10]).await;
    assert_graph_error(&answer, 400, "ErrorInvalidContentRange");
    let answer = put(
        &g,
        &url,
        &format!("bytes 0-{}/{total}", GRAPH_REQUEST_LIMIT),
        vec![],
    )
    .await;
    assert_graph_error(&answer, 400, "ErrorInvalidContentRange");
    let answer = GraphKit::answer(g.client.put(&url).body(vec![0; 10])).await;
    assert_graph_error(&answer, 400, "ErrorInvalidContentRange");
    let forged = url.replace("authtoken=", "authtoken=x");
    let answer = put(&g, &forged, "bytes 0-9/5242880", vec![0; 10]).await;
    assert_graph_error(&answer, 401, "InvalidAuthenticationToken");

    let answer = GraphKit::answer(
        g.client
            .put(&url)
            .bearer_auth(&g.token)
            .header("content-range", "bytes 0-9/5242880")
            .body(vec![0; 10]),
    )
    .await;
    let text = assert_graph_error(&answer, 401, "InvalidAudienceForResource");
    assert!(
        text.contains("Audience claim is 'https://graph.microsoft.com/'"),
        "{text}"
    );

    // The session still expects byte 0: the refused chunks left no trace.
    let answer = put(&g, &url, "bytes 0-9/5242880", vec![7; 10]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["nextExpectedRanges"], json!(["10"]));
    let answer = GraphKit::answer(g.client.delete(&url)).await;
    assert_eq!(answer.status, 204);
    let answer = put(&g, &url, "bytes 10-19/5242880", vec![7; 10]).await;
    assert_graph_error(&answer, 404, "ErrorItemNotFound");
    assert_eq!(g.graph.open_upload_sessions(), 0);
}

#[tokio::test]
async fn the_large_path_needs_mail_read_write_and_respects_the_size_limit() {
    let g = graph_kit().await;
    let draft = g.create_mime_draft(MIME).await;
    let total = 4 * 1024 * 1024;
    let answer = create_session(&g, &draft, total as u64).await;
    let url = answer.body["uploadUrl"].as_str().unwrap().to_owned();
    let range = format!("bytes 0-{}/{total}", total - 1);
    assert_eq!(put(&g, &url, &range, pattern(total)).await.status, 201);

    g.graph
        .set_mailbox_size_limit(&g.mailbox(), 4 * 1024 * 1024);
    let send = format!("/v1.0/users/{}/messages/{draft}/send", g.mailbox());
    let answer = GraphKit::answer(g.post(&send)).await;
    assert_graph_error(&answer, 400, "ErrorMessageSizeExceeded");
    assert_eq!(g.graph.draft_count(), 1, "a refused draft stays in Drafts");
    g.graph
        .set_mailbox_size_limit(&g.mailbox(), 35 * 1024 * 1024);
    assert_eq!(GraphKit::answer(g.post(&send)).await.status, 202);
    let answer = GraphKit::answer(g.post(&send)).await;
    assert_graph_error(&answer, 404, "ErrorItemNotFound");

    g.graph
        .set_roles(g.kit.client_id(), &["Mail.Send"])
        .unwrap();
    let send_only = g.kit.mint_graph_token().unwrap();
    let path = format!("/v1.0/users/{}/messages", g.mailbox());
    let draft =
        json!({"subject": "s", "toRecipients": [{"emailAddress": {"address": "a@example.com"}}]});
    let answer = GraphKit::answer(
        g.client
            .post(g.url(&path))
            .bearer_auth(&send_only)
            .json(&draft),
    )
    .await;
    assert_graph_error(&answer, 403, "ErrorAccessDenied");

    // A JSON draft, with the full roles again.
    let answer = g.post_json(&path, &draft).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["isDraft"], true);
    let id = answer.body["id"].as_str().unwrap();
    let answer = GraphKit::answer(g.post(&format!("{path}/{id}/send"))).await;
    assert_eq!(answer.status, 202);
    let last = g.graph.delivered().pop().unwrap();
    assert_eq!(last.recipients, ["a@example.com"]);
    assert!(last.json.is_some());
}

#[tokio::test]
async fn patched_recipient_collections_decide_who_gets_a_mime_draft() {
    let g = graph_kit().await;
    let mime = b"From: relay@contoso.com\r\nTo: a@example.com\r\nCc: header-only@example.com\r\n\
Subject: s\r\n\r\nbody\r\n";
    let draft = g.create_mime_draft(mime).await;
    let path = format!("/v1.0/users/{}/messages/{draft}", g.mailbox());
    let patch = json!({
        "ccRecipients": [],
        "bccRecipients": [{"emailAddress": {"address": "envelope-only@example.com"}}]
    });
    let answer = GraphKit::answer(
        g.client
            .patch(g.url(&path))
            .bearer_auth(&g.token)
            .json(&patch),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["ccRecipients"], json!([]));
    assert_eq!(
        answer.body["bccRecipients"][0]["emailAddress"]["address"],
        "envelope-only@example.com"
    );
    let answer = GraphKit::answer(
        g.client
            .patch(g.url("/v1.0/users/relay@contoso.com/messages/AAMkADnone="))
            .bearer_auth(&g.token)
            .json(&patch),
    )
    .await;
    assert_graph_error(&answer, 404, "ErrorItemNotFound");

    let answer = GraphKit::answer(g.post(&format!("{path}/send"))).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let message = &g.graph.delivered()[0];
    assert_eq!(
        message.recipients,
        ["a@example.com", "envelope-only@example.com"]
    );
    assert_eq!(message.raw_mime.as_deref(), Some(&mime[..]));
    assert_eq!(
        String::from_utf8_lossy(&message.seen_by_recipients),
        "From: relay@contoso.com\r\nTo: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"
    );
}

#[tokio::test]
async fn lost_answers_on_the_large_path_leave_the_work_done() {
    let g = graph_kit().await;
    let draft = g.create_mime_draft(MIME).await;
    let total = 4 * 1024 * 1024;
    let answer = create_session(&g, &draft, total as u64).await;
    let url = answer.body["uploadUrl"].as_str().unwrap().to_owned();
    let data = pattern(total);
    g.graph.fail_next_for(
        GraphOperation::UploadChunk,
        1,
        crate::testkit::GraphFault::DropAfterBody { deliver: true },
    );
    let half = total / 2;
    let request = g
        .client
        .put(&url)
        .header("content-range", format!("bytes 0-{}/{total}", half - 1))
        .body(data[..half].to_vec());
    assert!(request.send().await.is_err(), "the answer is lost");
    // The chunk was taken: the client that resends it is told where to continue.
    let answer = put(
        &g,
        &url,
        &format!("bytes 0-{}/{total}", half - 1),
        data[..half].to_vec(),
    )
    .await;
    assert_graph_error(&answer, 416, "ErrorRangeNotSatisfiable");
    let range = format!("bytes {half}-{}/{total}", total - 1);
    assert_eq!(
        put(&g, &url, &range, data[half..].to_vec()).await.status,
        201
    );

    g.graph.fail_next_for(
        GraphOperation::SendDraft,
        1,
        crate::testkit::GraphFault::DropAfterBody { deliver: true },
    );
    let send = format!("/v1.0/users/{}/messages/{draft}/send", g.mailbox());
    assert!(g.post(&send).send().await.is_err());
    assert_eq!(
        g.graph.delivered_count(),
        1,
        "sent before the answer was lost"
    );
    let answer = GraphKit::answer(g.post(&send)).await;
    assert_graph_error(&answer, 404, "ErrorItemNotFound");
    assert_eq!(
        g.graph.delivered()[0].attachments[0].read_bytes().unwrap(),
        data
    );
}
