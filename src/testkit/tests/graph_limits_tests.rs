//! The fake Graph's limits and faults over real sockets: the 4 MiB request limit (declared
//! and actually sent), 4 concurrent requests per (app, mailbox), the request-rate window,
//! and injected 429/503/504 answers and dropped connections.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::graph_support::{GraphKit, assert_graph_error, graph_kit, raw_https, simple_mime};
use crate::testkit::graph::GRAPH_REQUEST_LIMIT;
use crate::testkit::{GraphFault, GraphOperation};

#[tokio::test]
async fn requests_over_4_mib_are_refused_with_413() {
    let g = graph_kit().await;
    let path = format!("/v1.0/users/{}/sendMail", g.mailbox());
    // Exactly at the limit is still read (and refused for its content, not its size).
    let at_limit = vec![b'A'; GRAPH_REQUEST_LIMIT];
    let answer = GraphKit::answer(
        g.post(&path)
            .header("content-type", "text/plain")
            .body(at_limit),
    )
    .await;
    assert_ne!(answer.status, 413, "{}", answer.body);

    let over = vec![b'A'; GRAPH_REQUEST_LIMIT + 1];
    let answer = GraphKit::answer(
        g.post(&path)
            .header("content-type", "text/plain")
            .body(over),
    )
    .await;
    assert_graph_error(&answer, 413, "RequestEntityTooLarge");

    // A chunked body declares no length: the bytes actually read decide.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        g.token
    );
    let chunk = format!("{:x}\r\n{}\r\n", 1024 * 1024, "Q".repeat(1024 * 1024));
    let chunks: Vec<&[u8]> = std::iter::repeat_n(chunk.as_bytes(), 5)
        .chain(std::iter::once(&b"0\r\n\r\n"[..]))
        .collect();
    let (status, head) = raw_https(&g, &head, &chunks).await;
    assert_eq!(status, 413, "{head}");
    let log = g.graph.requests();
    let last = log.last().unwrap();
    assert_eq!(last.status, 413);
    assert!(last.body_bytes > GRAPH_REQUEST_LIMIT as u64);
    assert_eq!(g.graph.delivered_count(), 0);
}

#[tokio::test]
async fn a_fifth_concurrent_request_gets_429_mailbox_concurrency() {
    let g = graph_kit().await;
    let mime = simple_mime("relay@contoso.com", "a@example.com", "");
    g.graph.hold_requests();
    let mut held = Vec::new();
    for _ in 0..4 {
        let request = g
            .post(&format!("/v1.0/users/{}/sendMail", g.mailbox()))
            .header("content-type", "text/plain")
            .body(STANDARD.encode(&mime));
        held.push(tokio::spawn(GraphKit::answer(request)));
    }
    let started = Instant::now();
    while g.graph.in_flight(&g.mailbox()) < 4 {
        assert!(started.elapsed() < super::STEP, "4 requests never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = g.send_mime(&mime).await;
    let text = assert_graph_error(&answer, 429, "ApplicationThrottled");
    assert_eq!(text, "Application is over its MailboxConcurrency limit.");
    assert_eq!(answer.headers["retry-after"], "1");
    g.graph.release_requests();
    for task in held {
        assert_eq!(task.await.unwrap().status, 202);
    }
    assert_eq!(g.graph.max_concurrency(&g.mailbox()), 5);
    assert_eq!(g.graph.in_flight(&g.mailbox()), 0);
    assert_eq!(g.graph.delivered_count(), 4);
    // The budget is free again.
    assert_eq!(g.send_mime(&mime).await.status, 202);
    assert_eq!(g.graph.stats().throttled_429, 1);
}

#[tokio::test]
async fn the_request_window_throttles_per_mailbox() {
    let g = graph_kit().await;
    g.graph.set_request_rate_limit(3, Duration::from_secs(60));
    let mime = simple_mime("relay@contoso.com", "a@example.com", "");
    for _ in 0..3 {
        assert_eq!(g.send_mime(&mime).await.status, 202);
    }
    let answer = g.send_mime(&mime).await;
    assert_graph_error(&answer, 429, "ApplicationThrottled");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    g.kit.directory.add_mailbox("other@contoso.com");
    let other = simple_mime("other@contoso.com", "a@example.com", "");
    assert_eq!(
        g.send_mime_as(&g.token, "other@contoso.com", &other)
            .await
            .status,
        202
    );
}

#[tokio::test]
async fn injected_throttling_and_transient_failures() {
    let g = graph_kit().await;
    let mime = simple_mime("relay@contoso.com", "a@example.com", "");
    g.graph.fail_next(
        2,
        GraphFault::Throttle {
            retry_after: Duration::from_secs(2),
        },
    );
    g.graph.fail_next(
        1,
        GraphFault::Unavailable {
            retry_after: Some(Duration::from_secs(3)),
        },
    );
    g.graph.fail_next(1, GraphFault::GatewayTimeout);
    for _ in 0..2 {
        let answer = g.send_mime(&mime).await;
        assert_graph_error(&answer, 429, "TooManyRequests");
        assert_eq!(answer.headers["retry-after"], "2");
    }
    let answer = g.send_mime(&mime).await;
    assert_graph_error(&answer, 503, "ServiceUnavailable");
    assert_eq!(answer.headers["retry-after"], "3");
    let answer = g.send_mime(&mime).await;
    assert_graph_error(&answer, 504, "GatewayTimeout");
    assert!(!answer.headers.contains_key("retry-after"));
    assert_eq!(g.send_mime(&mime).await.status, 202);

    let log = g.graph.requests();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 503, 504, 202]);
    assert!(log.windows(2).all(|w| w[0].arrived <= w[1].arrived));
    assert!(log[0].fault.is_some() && log[4].fault.is_none());
    assert_eq!(g.graph.delivered_count(), 1);

    // A fault for one operation leaves the others alone.
    g.graph
        .fail_next_for(GraphOperation::SendDraft, 1, GraphFault::GatewayTimeout);
    assert_eq!(g.send_mime(&mime).await.status, 202);
    g.graph.clear_faults();
}

#[tokio::test]
async fn dropped_connections_after_the_body_deliver_or_not() {
    let g = graph_kit().await;
    let mime = simple_mime("relay@contoso.com", "a@example.com", "");
    g.graph
        .fail_next(1, GraphFault::DropAfterBody { deliver: true });
    let request = g
        .post(&format!("/v1.0/users/{}/sendMail", g.mailbox()))
        .header("content-type", "text/plain")
        .body(STANDARD.encode(&mime));
    assert!(request.send().await.is_err(), "the connection must drop");
    assert_eq!(g.graph.delivered_count(), 1, "delivered before the drop");

    g.graph
        .fail_next(1, GraphFault::DropAfterBody { deliver: false });
    let request = g
        .post(&format!("/v1.0/users/{}/sendMail", g.mailbox()))
        .header("content-type", "text/plain")
        .body(STANDARD.encode(&mime));
    assert!(request.send().await.is_err());
    assert_eq!(g.graph.delivered_count(), 1, "lost before delivery");

    let log = g.graph.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.status == 0 && r.body_bytes > 0));
    assert_eq!(g.graph.stats().dropped, 2);
    assert_eq!(g.send_mime(&mime).await.status, 202);
}

#[tokio::test]
async fn retry_after_violations_are_detected() {
    let g = graph_kit().await;
    let mime = simple_mime("relay@contoso.com", "a@example.com", "");
    let throttle = |secs| GraphFault::Throttle {
        retry_after: Duration::from_secs(secs),
    };
    g.graph.fail_next(1, throttle(30));
    assert_eq!(g.send_mime(&mime).await.status, 429);
    assert_eq!(g.send_mime(&mime).await.status, 202, "came back at once");
    let violations = g.graph.retry_after_violations();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].0.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(violations[0].1.status, 202);

    // Another mailbox, whose client waits as told.
    g.kit.directory.add_mailbox("other@contoso.com");
    let other = simple_mime("other@contoso.com", "a@example.com", "");
    g.graph.fail_next(1, throttle(1));
    let answer = g.send_mime_as(&g.token, "other@contoso.com", &other).await;
    assert_eq!(answer.status, 429);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = g.send_mime_as(&g.token, "other@contoso.com", &other).await;
    assert_eq!(answer.status, 202);
    assert_eq!(
        g.graph.retry_after_violations().len(),
        1,
        "waiting is no violation"
    );
}
