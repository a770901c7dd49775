//! Helpers of the fake-Graph tests: a kit with a running [`FakeGraph`] and a Graph token
//! fetched from the fake Entra over HTTPS, request helpers, the Graph error-shape assertion,
//! and a raw HTTPS client for requests reqwest cannot make (a chunked body past 4 MiB).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{STEP, https_client, kit, token_request};
use crate::testkit::{FakeGraph, GraphOptions, Testkit};

/// A kit, its Graph emulator, a client trusting the CA and a valid Graph token.
pub struct GraphKit {
    pub kit: Testkit,
    pub graph: FakeGraph,
    pub client: reqwest::Client,
    pub token: String,
}

/// An answer: status, JSON body (`Null` when empty or not JSON), headers.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

pub async fn graph_kit() -> GraphKit {
    graph_kit_with(GraphOptions::default()).await
}

pub async fn graph_kit_with(options: GraphOptions) -> GraphKit {
    let kit = kit().await;
    let graph = kit.start_graph(options).await.unwrap();
    let client = https_client(&kit);
    let token = fetch_graph_token(&kit).await;
    GraphKit {
        kit,
        graph,
        client,
        token,
    }
}

/// A Graph token over HTTPS from the fake Entra, as a relay gets it.
pub async fn fetch_graph_token(kit: &Testkit) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", kit.client_id()),
        ("client_secret", kit.client_secret()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = token_request(kit, &kit.tenant_id(), &form).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

impl GraphKit {
    pub fn mailbox(&self) -> String {
        self.kit.mailbox().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.graph.base_url())
    }

    pub async fn answer(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }

    /// POST with the kit's token.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(&self.token)
    }

    /// sendMail with `mime` (base64, text/plain) for `mailbox`, with `token`.
    pub async fn send_mime_as(&self, token: &str, mailbox: &str, mime: &[u8]) -> Answer {
        let request = self
            .client
            .post(self.url(&format!("/v1.0/users/{mailbox}/sendMail")))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body(STANDARD.encode(mime));
        Self::answer(request).await
    }

    /// sendMail with `mime` for the kit's mailbox and token.
    pub async fn send_mime(&self, mime: &[u8]) -> Answer {
        self.send_mime_as(&self.token, &self.mailbox(), mime).await
    }

    /// POST a JSON body to `path` with the kit's token.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        Self::answer(self.post(path).json(body)).await
    }

    /// Creates a draft from `mime`; returns its id.
    pub async fn create_mime_draft(&self, mime: &[u8]) -> String {
        let path = format!("/v1.0/users/{}/messages", self.mailbox());
        let answer = Self::answer(
            self.post(&path)
                .header("content-type", "text/plain")
                .body(STANDARD.encode(mime)),
        )
        .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body["id"].as_str().unwrap().to_owned()
    }
}

/// Asserts Graph's error shape and returns `error.message`.
pub fn assert_graph_error(answer: &Answer, status: u16, code: &str) -> String {
    let body = &answer.body;
    assert_eq!(answer.status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let inner = &body["error"]["innerError"];
    let request_id = inner["request-id"].as_str().unwrap();
    assert!(crate::testkit::random::is_guid(request_id), "{body}");
    assert_eq!(answer.headers["request-id"], request_id);
    assert!(inner["client-request-id"].is_string(), "{body}");
    let date = inner["date"].as_str().unwrap();
    assert_eq!(date.len(), 19, "{date}");
    assert!(date.contains('T') && !date.ends_with('Z'), "{date}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// A plain message from the kit's mailbox.
pub fn simple_mime(from: &str, to: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: Relay <{from}>\r\nTo: <{to}>\r\n{extra_headers}Subject: test\r\n\
         Message-ID: <m1@example.com>\r\n\r\nHello.\r\n"
    )
    .into_bytes()
}

/// Sends a raw HTTP/1.1 request (head then `body` chunks) over TLS and returns the status
/// and the head of the answer; for requests reqwest cannot build.
pub async fn raw_https(kit: &GraphKit, head: &str, body: &[&[u8]]) -> (u16, String) {
    let connector = tokio_rustls::TlsConnector::from(kit.kit.pki.client_config());
    let tcp = tokio::net::TcpStream::connect(kit.graph.addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let write = async {
        tls.write_all(head.as_bytes()).await?;
        for chunk in body {
            tls.write_all(chunk).await?;
        }
        tls.flush().await
    };
    // The server may answer before reading everything; a failed write is fine then.
    let _ = tokio::time::timeout(Duration::from_secs(60), write).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = tls.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() > 64 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(STEP, read).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
