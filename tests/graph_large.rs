//! Large messages through the Graph transport (issue 13 item 4), end to end against the
//! testkit's Graph emulator: a message too large for one request goes as a draft whose large
//! attachments arrive through upload sessions (ranges of 1 MiB, no token), smaller ones by a
//! plain POST when the rest still does not fit; a throttled range pauses the account and the
//! draft given up is deleted; without `Mail.ReadWrite` such a message waits with the fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::delivery::WAIT;
use common::eventually;
use common::graph::{
    delivered_once, graph_chain, message_with_attachment, sorted, sorted_strings, submit,
};
use smtp_oauth_relay::testkit::{GraphFault, SendPath};

#[tokio::test]
async fn a_20_mb_attachment_goes_through_upload_sessions() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    let (content, payload) = message_with_attachment("large", 20_000_000);
    let envelope = ["a@fabrikam.example", "unseen@fabrikam.example"];
    assert_eq!(
        submit(&chain.relay, "relay@contoso.com", &envelope, &content).await,
        250
    );
    let delivered = delivered_once(&chain.graph, "large").await;
    assert_eq!(delivered.path, SendPath::Draft);
    assert_eq!(sorted_strings(&delivered.recipients), sorted(&envelope));
    assert_eq!(delivered.attachments.len(), 1);
    let attachment = &delivered.attachments[0];
    assert!(attachment.via_upload_session);
    assert_eq!(attachment.name, "scan.pdf");
    assert_eq!(attachment.size, 20_000_000);
    let digest = ring::digest::digest(&ring::digest::SHA256, &payload);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        attachment.sha256, hex,
        "the attachment's bytes arrive intact"
    );
    let draft = String::from_utf8_lossy(delivered.raw_mime.as_deref().unwrap_or_default());
    assert!(
        draft.contains("the scan is attached"),
        "the text stays in the draft"
    );
    assert!(
        draft.len() < 4_000_000,
        "the attachment is not in the draft"
    );
    let requests = chain.graph.requests();
    let chunks: Vec<_> = requests
        .iter()
        .filter(|r| r.operation == smtp_oauth_relay::testkit::GraphOperation::UploadChunk)
        .collect();
    assert_eq!(chunks.len(), 20, "20 MB in ranges of 1 MiB");
    assert!(
        chunks
            .iter()
            .all(|r| !r.had_authorization && r.status < 300)
    );
    assert!(
        requests.iter().all(|r| r.body_bytes <= 4 * 1024 * 1024),
        "no request over 4 MB"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn smaller_attachments_of_a_large_message_are_posted_to_the_draft() {
    use base64::Engine as _;
    let chain = graph_chain("", |_, _, _| String::new()).await;
    // One attachment for an upload session, three of 1.5 MB: together too large for the draft.
    let sizes = [4_000_000usize, 1_500_000, 1_500_000, 1_500_000];
    let mut content = b"From: relay@contoso.com\r\nTo: a@fabrikam.example\r\nSubject: several\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n--sep\r\nContent-Type: text/plain\r\n\r\nfour scans\r\n".to_vec();
    let mut digests = Vec::new();
    for (n, size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..*size).map(|i| (i * 31 + n) as u8).collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, &payload);
        digests.push((
            format!("scan{n}.pdf"),
            digest
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ));
        let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
        content.extend_from_slice(format!("--sep\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"scan{n}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes());
        for line in encoded.as_bytes().chunks(76) {
            content.extend_from_slice(line);
            content.extend_from_slice(b"\r\n");
        }
    }
    content.extend_from_slice(b"--sep--\r\n");
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    let delivered = delivered_once(&chain.graph, "several").await;
    assert_eq!(delivered.path, SendPath::Draft);
    // scan0 through an upload session; scan1 and scan2 posted (the largest of the others, until
    // the rest fits one request); scan3 stays in the draft's MIME.
    let mut arrived: Vec<(String, String, bool)> = delivered
        .attachments
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone(), a.via_upload_session))
        .collect();
    arrived.sort();
    let expected: Vec<(String, String, bool)> = digests
        .iter()
        .take(3)
        .enumerate()
        .map(|(n, (name, sha))| (name.clone(), sha.clone(), n == 0))
        .collect();
    assert_eq!(arrived, expected, "the attachments arrive intact");
    let draft = String::from_utf8_lossy(delivered.raw_mime.as_deref().unwrap_or_default());
    assert!(draft.contains("four scans") && draft.contains("filename=\"scan3.pdf\""));
    assert!(
        !draft.contains("scan2.pdf"),
        "a posted one left the draft's MIME"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_throttled_upload_range_pauses_the_account_too() {
    let chain = graph_chain("", |_, _, _| String::new()).await;
    chain.graph.fail_next_for(
        smtp_oauth_relay::testkit::GraphOperation::UploadChunk,
        1,
        GraphFault::Throttle {
            retry_after: Duration::from_secs(2),
        },
    );
    let (content, payload) = message_with_attachment("upload-throttled", 4_000_000);
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    let delivered = delivered_once(&chain.graph, "upload-throttled").await;
    assert_eq!(delivered.attachments.len(), 1);
    assert_eq!(delivered.attachments[0].size, payload.len() as u64);
    assert_eq!(
        chain.graph.retry_after_violations(),
        Vec::new(),
        "nothing for the mailbox before the upload's Retry-After had passed"
    );
    assert_eq!(
        chain.graph.draft_count(),
        0,
        "the draft given up was deleted before the next attempt"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn without_mail_read_write_a_large_message_waits_and_says_why() {
    let chain = graph_chain("", |kit, graph, _| {
        graph.set_roles(kit.client_id(), &["Mail.Send"]).unwrap();
        String::new()
    })
    .await;
    let (content, _) = message_with_attachment("large-denied", 4_000_000);
    assert_eq!(
        submit(
            &chain.relay,
            "relay@contoso.com",
            &["a@fabrikam.example"],
            &content
        )
        .await,
        250
    );
    let attempted = || {
        chain
            .relay
            .queued_envelopes()
            .first()
            .is_some_and(|e| e.last_attempt.is_some())
    };
    assert!(eventually(WAIT, attempted).await, "no attempt recorded");
    let attempt = chain.relay.queued_envelopes()[0]
        .last_attempt
        .clone()
        .unwrap();
    assert_eq!(attempt.class, "configuration", "{attempt:?}");
    assert!(attempt.hint.contains("Mail.ReadWrite"), "{attempt:?}");
    assert!(
        chain.relay.failed_envelopes().is_empty(),
        "deferred, not bounced"
    );
    assert!(chain.graph.delivered().is_empty());
    chain.relay.stop().await;
}
