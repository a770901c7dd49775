//! A minimal, independent SMTP client for the tests: writes lines as given, reads multi-line
//! replies (`NNN-` ... `NNN `), upgrades with tokio-rustls trusting only the kit's CA. Every
//! read is bounded by [`STEP`].

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::STEP;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One server reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The full text of the last line, code included.
    pub fn last(&self) -> String {
        self.lines.last().cloned().unwrap_or_default()
    }

    /// The text of every line after the code and separator.
    pub fn texts(&self) -> Vec<String> {
        self.lines.iter().map(|l| l[4..].to_owned()).collect()
    }
}

pub struct RawSmtp {
    io: Option<BufReader<Box<dyn Io>>>,
}

impl RawSmtp {
    /// Connects and returns the client plus the greeting.
    pub async fn connect(addr: SocketAddr) -> (RawSmtp, Reply) {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let mut client = RawSmtp {
            io: Some(BufReader::new(Box::new(tcp))),
        };
        let greeting = client.read_reply().await;
        (client, greeting)
    }

    fn io(&mut self) -> &mut BufReader<Box<dyn Io>> {
        self.io.as_mut().unwrap()
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let io = self.io().get_mut();
        io.write_all(bytes).await.unwrap();
        io.flush().await.unwrap();
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> Reply {
        self.try_read_reply().await.expect("connection closed")
    }

    /// Reads one reply, or `None` on EOF.
    pub async fn try_read_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        for _ in 0..100 {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP, self.io().read_line(&mut line))
                .await
                .expect("reply timed out")
                .ok()?;
            if n == 0 {
                return None;
            }
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end_matches("\r\n").to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        let code = lines.last()?.get(..3)?.parse().ok()?;
        Some(Reply { code, lines })
    }

    /// Sends `line` + CRLF and reads the reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// STARTTLS + handshake (does not EHLO again).
    pub async fn starttls(&mut self, client_config: Arc<rustls::ClientConfig>) -> Reply {
        let reply = self.cmd("STARTTLS").await;
        assert_eq!(reply.code, 220, "{reply:?}");
        self.upgrade_tls(client_config).await;
        reply
    }

    /// The TLS handshake, once the `220` to STARTTLS has been read.
    pub async fn upgrade_tls(&mut self, client_config: Arc<rustls::ClientConfig>) {
        let io = self.io.take().unwrap();
        assert!(io.buffer().is_empty(), "server sent bytes after its 220");
        let inner = io.into_inner();
        let connector = tokio_rustls::TlsConnector::from(client_config);
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio::time::timeout(STEP, connector.connect(name, inner))
            .await
            .unwrap()
            .unwrap();
        self.io = Some(BufReader::new(Box::new(tls)));
    }

    /// EHLO, STARTTLS, EHLO: ready for AUTH.
    pub async fn secure(&mut self, client_config: Arc<rustls::ClientConfig>) {
        assert_eq!(self.cmd("EHLO relay.test").await.code, 250);
        self.starttls(client_config).await;
        assert_eq!(self.cmd("EHLO relay.test").await.code, 250);
    }

    /// `AUTH XOAUTH2 <initial response>`.
    pub async fn auth_xoauth2(&mut self, user: &str, token: &str) -> Reply {
        self.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(user, token)))
            .await
    }

    /// Sends DATA, the (already stuffed) payload and the terminator; returns the final reply.
    pub async fn data(&mut self, stuffed: &[u8]) -> Reply {
        let reply = self.cmd("DATA").await;
        assert_eq!(reply.code, 354, "{reply:?}");
        self.send_raw(stuffed).await;
        self.send_raw(b"\r\n.\r\n").await;
        self.read_reply().await
    }

    /// MAIL, RCPT, DATA of `body` (must not contain lone dots; CRLF lines).
    pub async fn send_message(&mut self, from: &str, to: &str, body: &str) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
        assert_eq!(self.cmd(&format!("RCPT TO:<{to}>")).await.code, 250);
        self.data(body.as_bytes()).await
    }

    /// Whether the server closed the connection (EOF within [`STEP`]).
    pub async fn is_closed(&mut self) -> bool {
        self.try_read_reply().await.is_none()
    }
}

/// The XOAUTH2 initial response.
pub fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// A minimal message from `from` to `to`.
pub fn simple_message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: Relay <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\nHello.\r\n"
    )
}

/// Connects, secures and authenticates with `token` as the kit's mailbox.
pub async fn authenticated(kit: &crate::testkit::Testkit, token: &str) -> RawSmtp {
    let (mut client, greeting) = RawSmtp::connect(kit.smtp_addr()).await;
    assert_eq!(greeting.code, 220);
    client.secure(kit.pki.client_config()).await;
    let reply = client.auth_xoauth2(kit.mailbox(), token).await;
    assert_eq!(reply.last(), "235 2.7.0 Authentication successful");
    client
}
