//! The load generator: a small raw SMTP client on tokio, the same code for the relay, Postfix
//! and the fake Exchange (which additionally needs STARTTLS and AUTH XOAUTH2).
//!
//! Every read and write has a timeout, every run is bounded by a message count and an overall
//! deadline, and every address is on 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest wait for one reply or one write.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where the generator sends mail.
#[derive(Clone)]
pub enum Target {
    /// Plain SMTP, no authentication (the relay from a trusted network, Postfix).
    Plain(SocketAddr),
    /// Plain SMTP with `AUTH PLAIN` after EHLO (the relay's listener that allows AUTH in clear),
    /// each client from its own source address counted up from `first_source` (an address on
    /// no trusted network, so that AUTH is what lets the client send).
    PlainAuth {
        addr: SocketAddr,
        username: String,
        password: String,
        first_source: Ipv4Addr,
    },
    /// STARTTLS + AUTH XOAUTH2 with a ready token (the fake Exchange: the loopback limit).
    Xoauth2 {
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        mailbox: String,
        token: String,
    },
}

impl Target {
    fn addr(&self) -> SocketAddr {
        match self {
            Target::Plain(addr) | Target::PlainAuth { addr, .. } | Target::Xoauth2 { addr, .. } => {
                *addr
            }
        }
    }

    /// The source address of the `client`-th client, when the target wants one of its own
    /// (`PlainAuth`: `first_source` + `client`, wrapping after 250 clients).
    pub fn source(&self, client: usize) -> Option<IpAddr> {
        match self {
            Target::PlainAuth { first_source, .. } => {
                let offset = u32::try_from(client % 250).unwrap_or(0);
                Some(IpAddr::V4(Ipv4Addr::from(
                    u32::from(*first_source).wrapping_add(offset),
                )))
            }
            Target::Plain(_) | Target::Xoauth2 { .. } => None,
        }
    }
}

/// What the latency of a transaction in a closed loop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// From writing the final dot to reading the `250`.
    DataTo250,
    /// From the start of the connect to the reply to QUIT (or the client giving up waiting
    /// for it): greeting, EHLO, AUTH, the transaction and QUIT. One message per connection.
    WholeConnection,
}

/// How clients use their connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Connect, EHLO, one transaction, QUIT (printers, scripts). No pipelining.
    OnePerConnection,
    /// One session per client, transactions back to back, MAIL/RCPT/DATA pipelined.
    ManyPerSession,
}

/// A message ready to send: headers and body with CRLF line ends, followed by `.\r\n`.
pub struct Message {
    pub data: Vec<u8>,
    pub sender: String,
    pub recipient: String,
}

impl Message {
    /// A text message of about `size` bytes from `sender` (no line starts with a dot).
    pub fn of_size(size: usize, sender: &str) -> Message {
        Message::tagged(size, sender, "benchmark message", "bench")
    }

    /// Like [`Message::of_size`], with this `Subject:` and `Message-ID: <{id}@relay.bench>`
    /// (to find each message again upstream).
    pub fn tagged(size: usize, sender: &str, subject: &str, id: &str) -> Message {
        let recipient = "bench@fabrikam.example".to_owned();
        let mut data = format!(
            "From: Bench <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n\
             Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{id}@relay.bench>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        )
        .into_bytes();
        let line =
            b"The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTU\r\n";
        data.reserve(size.saturating_sub(data.len()) + line.len() + 3);
        while data.len() < size {
            data.extend_from_slice(line);
        }
        data.extend_from_slice(b".\r\n");
        Message {
            data,
            sender: sender.to_owned(),
            recipient,
        }
    }
}

/// One SMTP reply: its code and its last line.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
    /// The text of every line, for the EHLO keywords.
    pub lines: Vec<String>,
}

/// A client connection.
pub struct Client {
    stream: Box<dyn Io>,
    buffer: Vec<u8>,
    start: usize,
    pipelining: bool,
}

impl Client {
    /// Connect (optionally from `source`), read the greeting, EHLO, and for an XOAUTH2 target
    /// STARTTLS + EHLO + AUTH.
    pub async fn open(target: &Target, source: Option<IpAddr>) -> Result<Client> {
        let addr = target.addr();
        let tcp = match source {
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                timed(socket.connect(addr)).await?
            }
            None => timed(TcpStream::connect(addr)).await?,
        }
        .with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut client = Client {
            stream: Box::new(tcp),
            buffer: Vec::with_capacity(4096),
            start: 0,
            pipelining: false,
        };
        client.expect_reply(220).await.context("greeting")?;
        let ehlo = client.command("EHLO bench.client", 250).await?;
        client.pipelining = ehlo.lines.iter().any(|l| l.starts_with("PIPELINING"));
        if let Target::PlainAuth {
            username, password, ..
        } = target
        {
            let payload = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{username}\0{password}"));
            client
                .command(&format!("AUTH PLAIN {payload}"), 235)
                .await?;
        }
        if let Target::Xoauth2 {
            tls,
            mailbox,
            token,
            ..
        } = target
        {
            client.command("STARTTLS", 220).await?;
            let Client { stream, .. } = client;
            let name = rustls_pki_types::ServerName::try_from("localhost")?;
            let tls_stream =
                timed(tokio_rustls::TlsConnector::from(Arc::clone(tls)).connect(name, stream))
                    .await?
                    .context("TLS handshake")?;
            client = Client {
                stream: Box::new(tls_stream),
                buffer: Vec::with_capacity(4096),
                start: 0,
                pipelining: false,
            };
            let ehlo = client.command("EHLO bench.client", 250).await?;
            client.pipelining = ehlo.lines.iter().any(|l| l.starts_with("PIPELINING"));
            let payload = base64::engine::general_purpose::STANDARD
                .encode(format!("user={mailbox}\x01auth=Bearer {token}\x01\x01"));
            client
                .command(&format!("AUTH XOAUTH2 {payload}"), 235)
                .await?;
        }
        Ok(client)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        timed(self.stream.write_all(bytes)).await??;
        timed(self.stream.flush()).await??;
        Ok(())
    }

    async fn read_line(&mut self) -> Result<String> {
        loop {
            let pending = self.buffer.get(self.start..).unwrap_or_default();
            if let Some(pos) = memchr::memchr(b'\n', pending) {
                let line = pending.get(..pos).unwrap_or_default();
                let text = String::from_utf8_lossy(line).trim_end().to_owned();
                self.start += pos + 1;
                if self.start == self.buffer.len() {
                    self.buffer.clear();
                    self.start = 0;
                }
                return Ok(text);
            }
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 4096];
            let n = timed(self.stream.read(&mut chunk)).await??;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.buffer
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    /// Read one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| anyhow!("malformed reply line {line:?}"))?;
            let more = line.get(3..4) == Some("-");
            let text = line.get(4..).unwrap_or_default().to_owned();
            lines.push(text.clone());
            if !more {
                return Ok(Reply { code, text, lines });
            }
        }
    }

    async fn expect_reply(&mut self, code: u16) -> Result<Reply> {
        let reply = self.reply().await?;
        if reply.code != code {
            bail!("expected {code}, got {} {}", reply.code, reply.text);
        }
        Ok(reply)
    }

    async fn command(&mut self, line: &str, code: u16) -> Result<Reply> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.expect_reply(code)
            .await
            .with_context(|| format!("reply to {}", line.split(' ').next().unwrap_or(line)))
    }

    /// One transaction; returns the time from the final dot written to the `250` read.
    pub async fn send(&mut self, message: &Message) -> Result<Duration> {
        let mail = format!("MAIL FROM:<{}>\r\n", message.sender);
        let rcpt = format!("RCPT TO:<{}>\r\n", message.recipient);
        if self.pipelining {
            self.write(format!("{mail}{rcpt}DATA\r\n").as_bytes())
                .await?;
            self.expect_reply(250).await.context("MAIL FROM")?;
            self.expect_reply(250).await.context("RCPT TO")?;
            self.expect_reply(354).await.context("DATA")?;
        } else {
            self.command(mail.trim_end(), 250).await?;
            self.command(rcpt.trim_end(), 250).await?;
            self.command("DATA", 354).await?;
        }
        self.write(&message.data).await?;
        let sent = Instant::now();
        self.expect_reply(250).await.context("end of data")?;
        Ok(sent.elapsed())
    }

    /// Send `MAIL FROM:<sender>` and return the reply, whatever it is (to check that a source
    /// address is not trusted: an unauthenticated client from it gets `530`).
    pub async fn mail_from_reply(&mut self, sender: &str) -> Result<Reply> {
        self.write(format!("MAIL FROM:<{sender}>\r\n").as_bytes())
            .await?;
        self.reply().await
    }

    /// Disable pipelining even if offered (printer-like clients).
    pub fn without_pipelining(mut self) -> Client {
        self.pipelining = false;
        self
    }

    /// QUIT, waiting briefly for the 221.
    pub async fn quit(mut self) {
        if self.write(b"QUIT\r\n").await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.reply()).await;
        }
    }
}

async fn timed<F: Future>(future: F) -> Result<F::Output> {
    tokio::time::timeout(IO_TIMEOUT, future)
        .await
        .map_err(|_| anyhow!("no progress for {IO_TIMEOUT:?}"))
}

/// What a closed-loop run measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        per_second(self.ok, self.elapsed)
    }
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// `clients` concurrent clients send `messages` messages in total, as fast as they can; the
/// `client`-th connects from `target.source(client)`.
pub async fn closed_loop(
    target: &Target,
    style: Style,
    timing: Timing,
    clients: usize,
    messages: u64,
    message: Arc<Message>,
    deadline: Duration,
) -> LoadResult {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..clients.max(1) {
        let (target, next, message) = (target.clone(), Arc::clone(&next), Arc::clone(&message));
        let source = target.source(index);
        tasks.spawn(async move {
            let mut result = LoadResult::default();
            let mut session: Option<Client> = None;
            while next.fetch_add(1, Ordering::Relaxed) < messages && start.elapsed() < deadline {
                let began = Instant::now();
                let outcome = async {
                    let mut client = match session.take() {
                        Some(client) => client,
                        None => {
                            let client = Client::open(&target, source).await?;
                            if style == Style::OnePerConnection {
                                client.without_pipelining()
                            } else {
                                client
                            }
                        }
                    };
                    let latency = client.send(&message).await?;
                    Ok::<_, anyhow::Error>((client, latency))
                }
                .await;
                match outcome {
                    Ok((client, latency)) => {
                        result.ok += 1;
                        match style {
                            Style::OnePerConnection => client.quit().await,
                            Style::ManyPerSession => session = Some(client),
                        }
                        result.latencies.push(match timing {
                            Timing::DataTo250 => latency,
                            Timing::WholeConnection => began.elapsed(),
                        });
                    }
                    Err(error) => {
                        result.failed += 1;
                        result
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            if let Some(client) = session {
                client.quit().await;
            }
            result
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => {
                total.ok += part.ok;
                total.failed += part.failed;
                total.latencies.extend(part.latencies);
                if total.first_error.is_none() {
                    total.first_error = part.first_error;
                }
            }
            Err(error) => {
                total.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Open loop: one message per connection started every `1/rate` seconds, `count` in all,
/// whatever the server's pace. Returns the DATA→250 latencies.
pub async fn open_loop(
    target: &Target,
    rate: f64,
    count: u64,
    message: Arc<Message>,
) -> LoadResult {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (target, message) = (target.clone(), Arc::clone(&message));
        tasks.spawn(async move {
            let mut client = Client::open(&target, None).await?.without_pipelining();
            let latency = client.send(&message).await?;
            client.quit().await;
            Ok::<_, anyhow::Error>(latency)
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(latency) => {
                total.ok += 1;
                total.latencies.push(latency);
            }
            Err(error) => {
                total.failed += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// The `q`-quantile (0..=1) of `values`, sorted in place.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    values.sort_unstable();
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64) * q).ceil() as usize;
    let index = rank.clamp(1, values.len()) - 1;
    values.get(index).copied().unwrap_or_default()
}
