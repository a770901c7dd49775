//! A raw-socket SMTP client for tests: sends exactly the bytes a test wants (including broken
//! ones) and reads replies, multi-line aware, with a timeout on every read.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One reply: its code and its lines (without the code prefix).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

pub struct RawClient {
    stream: Box<dyn Io>,
    buffer: Vec<u8>,
}

impl RawClient {
    pub async fn connect(address: std::net::SocketAddr) -> RawClient {
        let stream = TcpStream::connect(address)
            .await
            .expect("connect to the relay");
        RawClient {
            stream: Box::new(stream),
            buffer: Vec::new(),
        }
    }

    /// A client over an already connected stream (e.g. implicit TLS).
    pub fn from_stream(stream: Box<dyn Io>) -> RawClient {
        RawClient {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Connect from a chosen local address (e.g. 127.0.0.2, to test trusted networks).
    pub async fn connect_from(local: std::net::IpAddr, address: std::net::SocketAddr) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::new(local, 0))
            .expect("bind local address");
        let stream = socket.connect(address).await.expect("connect to the relay");
        RawClient {
            stream: Box::new(stream),
            buffer: Vec::new(),
        }
    }

    /// Connect and read the greeting.
    pub async fn connect_greeted(address: std::net::SocketAddr) -> RawClient {
        let mut client = RawClient::connect(address).await;
        let greeting = client.reply().await;
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        client
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    pub async fn send_line(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Send a command and return its reply.
    pub async fn command(&mut self, line: &str) -> Reply {
        self.send_line(line).await;
        self.reply().await
    }

    /// Send a command and assert the reply code.
    pub async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.command(line).await;
        assert_eq!(reply.code, code, "{line} -> {reply:?}");
        reply
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("timed out waiting for the relay")
            .unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..read]);
        read > 0
    }

    /// Read one complete reply; panics on timeout, returns code 0 on EOF.
    pub async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            while let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=newline).collect();
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                let code: u16 = line
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .expect("reply code");
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line.get(4..).unwrap_or("").to_string());
                if last {
                    return Reply { code, lines };
                }
            }
            if !self.fill().await {
                return Reply { code: 0, lines };
            }
        }
    }

    /// True when the server closed the connection (EOF) within the read timeout.
    pub async fn closed(&mut self) -> bool {
        !self.fill().await && self.buffer.is_empty()
    }

    /// The underlying stream (for a custom TLS handshake).
    pub fn into_inner(self) -> Box<dyn Io> {
        self.stream
    }

    /// Upgrade to TLS after a `220` to STARTTLS, trusting `client_config`.
    pub async fn start_tls(self, client_config: std::sync::Arc<rustls::ClientConfig>) -> RawClient {
        let connector = tokio_rustls::TlsConnector::from(client_config);
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = connector
            .connect(name, self.stream)
            .await
            .expect("TLS handshake");
        RawClient {
            stream: Box::new(tls),
            buffer: Vec::new(),
        }
    }

    /// A full transaction after EHLO: MAIL, RCPT…, DATA, content (dot-stuffed here), final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], content: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for recipient in to {
            self.expect(&format!("RCPT TO:<{recipient}>"), 250).await;
        }
        self.expect("DATA", 354).await;
        let mut stuffed = Vec::with_capacity(content.len() + 64);
        let mut at_line_start = true;
        for &byte in content {
            if at_line_start && byte == b'.' {
                stuffed.push(b'.');
            }
            stuffed.push(byte);
            at_line_start = byte == b'\n';
        }
        if !stuffed.ends_with(b"\r\n") {
            stuffed.extend_from_slice(b"\r\n");
        }
        stuffed.extend_from_slice(b".\r\n");
        self.send_raw(&stuffed).await;
        self.reply().await
    }
}
