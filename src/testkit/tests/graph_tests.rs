//! The fake Graph's sendMail through reqwest: delivery of the MIME and JSON forms with their
//! final recipients and the recipients' copy, and every token, permission, mailbox, SendAs
//! and content error with Graph's JSON error shape.

use std::time::Duration;

use serde_json::json;

use super::graph_support::{GraphKit, assert_graph_error, graph_kit, simple_mime};
use crate::testkit::{GraphOperation, Resource, SendPath, TokenSigner};

#[tokio::test]
async fn mime_send_mail_delivers_the_bytes_with_bcc_recipients_hidden() {
    let g = graph_kit().await;
    let mime = b"From: Relay <relay@contoso.com>\r\nTo: A <a@example.com>, b@example.org\r\n\
Cc: c@example.net\r\nBcc: hidden@example.com,\r\n other@example.com\r\nSubject: hi\r\n\
Message-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n\
Bcc: this body line stays\r\n";
    let request = g
        .post(&format!("/v1.0/users/{}/sendMail", g.mailbox()))
        .header("content-type", "text/plain")
        .header("client-request-id", "7d6e0c3a-1111-4222-8333-444455556666")
        .body(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            mime,
        ));
    let answer = GraphKit::answer(request).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(
        answer.body,
        serde_json::Value::Null,
        "202 has an empty body"
    );
    assert_eq!(
        answer.headers["client-request-id"],
        "7d6e0c3a-1111-4222-8333-444455556666"
    );
    assert!(answer.headers.contains_key("request-id"));

    let delivered = g.graph.wait_for_delivered(1, super::STEP).await.unwrap();
    let message = &delivered[0];
    assert_eq!(message.path, SendPath::MimeSendMail);
    assert_eq!(message.mailbox, "relay@contoso.com");
    assert_eq!(message.client_id, g.kit.client_id());
    assert_eq!(message.raw_mime.as_deref(), Some(&mime[..]));
    assert_eq!(
        message.recipients,
        [
            "a@example.com",
            "b@example.org",
            "c@example.net",
            "hidden@example.com",
            "other@example.com"
        ]
    );
    let expected_seen = String::from_utf8_lossy(mime)
        .replace("Bcc: hidden@example.com,\r\n other@example.com\r\n", "");
    assert_eq!(
        String::from_utf8_lossy(&message.seen_by_recipients),
        expected_seen
    );
    assert!(message.saved_to_sent_items);
    let log = g.graph.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].operation, GraphOperation::SendMail);
    assert!(log[0].had_authorization);
    assert_eq!(log[0].status, 202);
    assert!(
        !format!("{log:?}").contains(&g.token[..40]),
        "token in the log"
    );
}

#[tokio::test]
async fn json_send_mail_uses_the_recipient_fields() {
    let g = graph_kit().await;
    let body = json!({
        "message": {
            "subject": "Report",
            "body": {"contentType": "Text", "content": "See attached."},
            "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
            "ccRecipients": [{"emailAddress": {"address": "c@example.com"}}],
            "bccRecipients": [{"emailAddress": {"address": "b@example.com"}}],
            "attachments": [{
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "a.txt", "contentType": "text/plain", "contentBytes": "aGVsbG8="
            }]
        },
        "saveToSentItems": false
    });
    let answer = g
        .post_json(&format!("/v1.0/users/{}/sendMail", g.mailbox()), &body)
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let message = &g.graph.delivered()[0];
    assert_eq!(message.path, SendPath::JsonSendMail);
    assert_eq!(
        message.recipients,
        ["a@example.com", "c@example.com", "b@example.com"]
    );
    assert!(!message.saved_to_sent_items);
    assert_eq!(message.raw_mime, None);
    let seen = String::from_utf8_lossy(&message.seen_by_recipients).into_owned();
    assert!(
        seen.contains("To: <a@example.com>") && !seen.contains("b@example.com"),
        "{seen}"
    );
    assert_eq!(message.attachments[0].read_bytes().unwrap(), b"hello");

    let no_recipients = json!({"message": {"subject": "x"}});
    let answer = g
        .post_json(
            &format!("/v1.0/users/{}/sendMail", g.mailbox()),
            &no_recipients,
        )
        .await;
    assert_graph_error(&answer, 400, "ErrorInvalidRecipients");
    let answer = GraphKit::answer(
        g.post(&format!("/v1.0/users/{}/sendMail", g.mailbox()))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_graph_error(&answer, 400, "RequestBodyRead");
}

#[tokio::test]
async fn token_checks_follow_graph() {
    let g = graph_kit().await;
    let mime = simple_mime("relay@contoso.com", "a@example.com", "");
    let mailbox = g.mailbox();

    let answer = GraphKit::answer(
        g.client
            .post(g.url(&format!("/v1.0/users/{mailbox}/sendMail")))
            .header("content-type", "text/plain")
            .body("eA=="),
    )
    .await;
    let text = assert_graph_error(&answer, 401, "InvalidAuthenticationToken");
    assert_eq!(text, "Access token is empty.");
    assert!(answer.headers.contains_key("www-authenticate"));

    let exchange = g.kit.mint_exchange_token().unwrap();
    let answer = g.send_mime_as(&exchange, &mailbox, &mime).await;
    let text = assert_graph_error(&answer, 401, "InvalidAuthenticationToken");
    assert_eq!(text, "Access token validation failure. Invalid audience.");

    let expired = g
        .kit
        .directory
        .mint_access_token(g.kit.client_id(), Resource::Graph, Duration::ZERO)
        .unwrap();
    let answer = g.send_mime_as(&expired, &mailbox, &mime).await;
    let text = assert_graph_error(&answer, 401, "InvalidAuthenticationToken");
    assert!(text.contains("expired"), "{text}");

    let claims = crate::testkit::jwt::decode_claims_unverified(&g.token).unwrap();
    let forged = TokenSigner::new().unwrap().sign(&claims).unwrap();
    let answer = g.send_mime_as(&forged, &mailbox, &mime).await;
    assert_graph_error(&answer, 401, "InvalidAuthenticationToken");
    let answer = g.send_mime_as("not-a-jwt", &mailbox, &mime).await;
    assert_graph_error(&answer, 401, "InvalidAuthenticationToken");

    g.kit
        .directory
        .revoke_admin_consent(g.kit.client_id())
        .unwrap();
    let no_roles = g.kit.mint_graph_token().unwrap();
    let answer = g.send_mime_as(&no_roles, &mailbox, &mime).await;
    assert_graph_error(&answer, 403, "NoPermissionsInAccessToken");
    let answer = g.send_mime_as(&g.token, &mailbox, &mime).await;
    assert_eq!(
        answer.status, 202,
        "a token issued before the revocation keeps its roles"
    );

    g.graph
        .set_roles(g.kit.client_id(), &["Mail.ReadWrite"])
        .unwrap();
    let read_write_only = g.kit.mint_graph_token().unwrap();
    let answer = g.send_mime_as(&read_write_only, &mailbox, &mime).await;
    let text = assert_graph_error(&answer, 403, "ErrorAccessDenied");
    assert_eq!(text, "Access is denied. Check credentials and try again.");

    g.graph
        .set_roles(g.kit.client_id(), &["Mail.Send"])
        .unwrap();
    let send_only = g.kit.mint_graph_token().unwrap();
    let answer = GraphKit::answer(
        g.client
            .post(g.url(&format!("/v1.0/users/{mailbox}/messages")))
            .bearer_auth(&send_only)
            .header("content-type", "text/plain")
            .body("eA=="),
    )
    .await;
    assert_graph_error(&answer, 403, "ErrorAccessDenied");
    let answer = g.send_mime_as(&send_only, &mailbox, &mime).await;
    assert_eq!(answer.status, 202);
    assert_eq!(g.graph.delivered_count(), 2);
}

#[tokio::test]
async fn mailbox_scope_user_and_rest_checks() {
    let g = graph_kit().await;
    g.kit.directory.add_mailbox("other@contoso.com");
    let mime = simple_mime("other@contoso.com", "a@example.com", "");

    let answer = g.send_mime_as(&g.token, "other@contoso.com", &mime).await;
    assert_eq!(
        answer.status, 202,
        "the tenant-wide grant reaches every mailbox"
    );

    g.graph
        .set_mailbox_scope(g.kit.client_id(), Some(&["relay@contoso.com"]))
        .unwrap();
    let answer = g.send_mime_as(&g.token, "other@contoso.com", &mime).await;
    assert_graph_error(&answer, 403, "ErrorAccessDenied");
    let own = simple_mime("relay@contoso.com", "a@example.com", "");
    assert_eq!(g.send_mime(&own).await.status, 202);

    let answer = g.send_mime_as(&g.token, "nobody@contoso.com", &mime).await;
    let text = assert_graph_error(&answer, 404, "ErrorInvalidUser");
    assert_eq!(text, "The requested user 'nobody@contoso.com' is invalid.");

    g.kit
        .directory
        .set_mailbox_rest_enabled("relay@contoso.com", false)
        .unwrap();
    let answer = g.send_mime(&own).await;
    assert_graph_error(&answer, 404, "MailboxNotEnabledForRESTAPI");
    assert_eq!(g.graph.delivered_count(), 2);
}

#[tokio::test]
async fn send_as_needs_the_right_on_the_from_address() {
    let g = graph_kit().await;
    let mime = simple_mime("ceo@contoso.com", "a@example.com", "");
    let answer = g.send_mime(&mime).await;
    assert_graph_error(&answer, 403, "ErrorSendAsDenied");
    g.kit
        .directory
        .grant_send_as("relay@contoso.com", "ceo@contoso.com")
        .unwrap();
    assert_eq!(g.send_mime(&mime).await.status, 202);
    let without_from = b"To: a@example.com\r\nSubject: s\r\n\r\nbody\r\n";
    assert_eq!(g.send_mime(without_from).await.status, 202);
}

#[tokio::test]
async fn content_errors() {
    let g = graph_kit().await;
    let path = format!("/v1.0/users/{}/sendMail", g.mailbox());
    let answer = GraphKit::answer(
        g.post(&path)
            .header("content-type", "text/plain")
            .body("From: x@y.z\r\n\r\nnot base64"),
    )
    .await;
    let text = assert_graph_error(&answer, 400, "ErrorMimeContentInvalidBase64String");
    assert_eq!(text, "Invalid base64 string for MIME content.");

    let answer = g
        .send_mime(b"From: relay@contoso.com\r\nSubject: s\r\n\r\nb")
        .await;
    assert_graph_error(&answer, 400, "ErrorInvalidRecipients");
    let answer = g
        .send_mime(&simple_mime("relay@contoso.com", "not-an-address", ""))
        .await;
    assert_graph_error(&answer, 400, "ErrorInvalidRecipients");

    let many: Vec<String> = (0..501).map(|i| format!("r{i}@example.com")).collect();
    let mime = simple_mime(
        "relay@contoso.com",
        "a@example.com",
        &format!("Bcc: {}\r\n", many[1..500].join(", ")),
    );
    assert_eq!(g.send_mime(&mime).await.status, 202, "500 recipients pass");
    let mime = simple_mime(
        "relay@contoso.com",
        "a@example.com",
        &format!("Bcc: {}\r\n", many.join(", ")),
    );
    assert_graph_error(&g.send_mime(&mime).await, 400, "ErrorInvalidRecipients");

    g.graph.set_mailbox_size_limit(&g.mailbox(), 200);
    let mime = simple_mime(
        "relay@contoso.com",
        "a@example.com",
        &format!("X-Pad: {}\r\n", "p".repeat(200)),
    );
    assert_graph_error(&g.send_mime(&mime).await, 400, "ErrorMessageSizeExceeded");

    let answer =
        GraphKit::answer(g.post(&path).header("content-type", "image/png").body("x")).await;
    assert_graph_error(&answer, 415, "UnsupportedMediaType");
    let answer = GraphKit::answer(g.client.get(g.url(&path)).bearer_auth(&g.token)).await;
    assert_graph_error(&answer, 405, "BadRequest");
    let answer = GraphKit::answer(g.post("/v1.0/me/sendMail")).await;
    let text = assert_graph_error(&answer, 400, "BadRequest");
    assert_eq!(text, "Resource not found for the segment 'me'.");
    assert_eq!(g.graph.delivered_count(), 1);
    let codes = g.graph.stats().errors_by_code;
    assert_eq!(codes["ErrorInvalidRecipients"], 3);
}
