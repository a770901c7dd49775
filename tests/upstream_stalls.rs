//! The relay's SMTP client against a scripted server that stops answering at each step of
//! the conversation: every step is given up within its configured timeout, and the same
//! client delivers again as soon as the server behaves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PLAIN_TRUSTED, chain_toml};
use smtp_oauth_relay::config::Config;
use smtp_oauth_relay::metrics::Metrics;
use smtp_oauth_relay::oauth::token::{AccessToken, TokenProvider};
use smtp_oauth_relay::spool::Content;
use smtp_oauth_relay::testkit::{Testkit, TestkitOptions};
use smtp_oauth_relay::transport::smtp::{SmtpTransport, Timeouts};
use smtp_oauth_relay::vocab::envelope::{ClientInfo, Envelope};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Where the scripted server stops answering (it keeps the connection open, silent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StallAt {
    Nowhere,
    Banner,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    /// Stops reading during DATA (the content does not fit the socket buffers).
    MidData,
    AfterDot,
    Quit,
}

const STEP: Duration = Duration::from_secs(1);
/// Far beyond every step's timeout: reaching it means a wait without a deadline.
const HANG: Duration = Duration::from_secs(20);

async fn hold() {
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A plain-text SMTP server for one connection that stalls at `stall`. With `xoauth2`
/// false it does not offer AUTH XOAUTH2 (the client then says QUIT at once).
async fn scripted_server(stall: StallAt, xoauth2: bool) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        if stall == StallAt::Banner {
            let _socket = socket;
            return hold().await;
        }
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
        let mut in_data = false;
        for _ in 0..100_000 {
            let Ok(Ok(Some(line))) = tokio::time::timeout(HANG, lines.next_line()).await else {
                return;
            };
            if in_data {
                if line == "." {
                    in_data = false;
                    if stall == StallAt::AfterDot {
                        return hold().await;
                    }
                    let _ = write.write_all(b"250 2.0.0 OK queued\r\n").await;
                }
                continue;
            }
            let upper = line.to_ascii_uppercase();
            let (step, reply): (StallAt, &[u8]) = if upper.starts_with("EHLO") {
                match (stall, xoauth2) {
                    (StallAt::StartTls, _) => (StallAt::Ehlo, b"250-scripted\r\n250 STARTTLS\r\n"),
                    (_, true) => (
                        StallAt::Ehlo,
                        b"250-scripted\r\n250-8BITMIME\r\n250 AUTH XOAUTH2\r\n",
                    ),
                    (_, false) => (StallAt::Ehlo, b"250-scripted\r\n250 AUTH LOGIN\r\n"),
                }
            } else if upper.starts_with("STARTTLS") {
                // Say go ahead, then never answer the TLS handshake.
                let _ = write.write_all(b"220 2.0.0 Ready\r\n").await;
                return hold().await;
            } else if upper.starts_with("AUTH") {
                (StallAt::Auth, b"235 2.7.0 Authentication successful\r\n")
            } else if upper.starts_with("MAIL") {
                (StallAt::Mail, b"250 2.1.0 Sender OK\r\n")
            } else if upper.starts_with("DATA") {
                let _ = write.write_all(b"354 Go ahead\r\n").await;
                if stall == StallAt::MidData {
                    return hold().await;
                }
                in_data = true;
                continue;
            } else if upper.starts_with("QUIT") {
                (StallAt::Quit, b"221 2.0.0 Bye\r\n")
            } else {
                (StallAt::Nowhere, b"250 2.0.0 OK\r\n")
            };
            if step == stall && step != StallAt::Nowhere {
                return hold().await;
            }
            if write.write_all(reply).await.is_err() || step == StallAt::Quit {
                return;
            }
        }
    });
    address
}

struct Fixture {
    _kit: Testkit,
    _files: tempfile::TempDir,
    token: AccessToken,
    config: Config,
    envelope: Envelope,
}

async fn fixture() -> Fixture {
    let kit = Testkit::start(TestkitOptions::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca = kit.write_ca_pem(&files.path().join("ca.pem")).unwrap();
    let toml = chain_toml(&kit, &ca, "", "", PLAIN_TRUSTED)
        .replace("{state}", &files.path().display().to_string());
    let config = Config::from_toml(&toml, files.path()).unwrap();
    let account = &config.accounts[0];
    let token = TokenProvider::new(&account.client_app(), Arc::new(Metrics::new()))
        .unwrap()
        .token()
        .await
        .unwrap();
    let envelope = Envelope::new(
        &account.name,
        Some(account.mailbox.clone()),
        vec![smtp_oauth_relay::vocab::address::Address::parse("a@fabrikam.example").unwrap()],
        ClientInfo {
            peer: "127.0.0.1".into(),
            helo: None,
            principal: "test".into(),
        },
        smtp_oauth_relay::spool::unix_now(),
    );
    Fixture {
        _kit: kit,
        _files: files,
        token,
        config,
        envelope,
    }
}

/// An upstream client for `server` whose every step times out after [`STEP`].
fn upstream_for(fixture: &Fixture, server: std::net::SocketAddr, tls: &str) -> SmtpTransport {
    let mut account = fixture.config.accounts[0].clone();
    account.smtp_host = server.ip().to_string();
    account.smtp_port = server.port();
    account.smtp_tls = match tls {
        "starttls" => smtp_oauth_relay::config::UpstreamTls::Starttls,
        _ => smtp_oauth_relay::config::UpstreamTls::None,
    };
    let mut upstream = SmtpTransport::new(&account, &fixture.config.relay.hostname).unwrap();
    upstream.timeouts = Timeouts {
        connect: STEP,
        command: STEP,
        data_start: STEP,
        data_end: STEP,
    };
    upstream
}

/// Open, send one message and quit against a server stalling at `stall`; returns how long
/// it took and whether the message was accepted.
async fn converse(fixture: &Fixture, stall: StallAt, xoauth2: bool, content: &Content) -> bool {
    let server = scripted_server(stall, xoauth2).await;
    let tls = if stall == StallAt::StartTls {
        "starttls"
    } else {
        "none"
    };
    let upstream = upstream_for(fixture, server, tls);
    let Ok(mut session) = upstream.open(&fixture.token).await else {
        return false;
    };
    let sent = session
        .send(&fixture.envelope, &fixture.envelope.recipients, content)
        .await;
    session.quit().await;
    sent.is_ok_and(|result| result.reply.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_step_is_given_up_within_its_timeout_and_the_client_delivers_again() {
    let fixture = fixture().await;
    let small = Content::in_memory(b"Subject: x\r\n\r\nx\r\n".to_vec());
    // Larger than any socket buffer pair on loopback, so a server that stops reading blocks
    // the writes.
    let mut large = b"Subject: large\r\n\r\n".to_vec();
    let line = "y".repeat(998) + "\r\n";
    for _ in 0..(32 * 1024) {
        large.extend_from_slice(line.as_bytes());
    }
    let large = Content::in_memory(large);
    for (stall, xoauth2, content, delivered) in [
        (StallAt::Banner, true, &small, false),
        (StallAt::Ehlo, true, &small, false),
        (StallAt::StartTls, true, &small, false),
        (StallAt::Auth, true, &small, false),
        (StallAt::Mail, true, &small, false),
        (StallAt::MidData, true, &large, false),
        (StallAt::AfterDot, true, &small, false),
        // The message is through; only the goodbye stalls.
        (StallAt::Quit, true, &small, true),
        // No XOAUTH2 offered: the client gives up at once, and its QUIT stalls.
        (StallAt::Quit, false, &small, false),
    ] {
        let started = Instant::now();
        let outcome = tokio::time::timeout(HANG, converse(&fixture, stall, xoauth2, content)).await;
        let elapsed = started.elapsed();
        let Ok(accepted) = outcome else {
            panic!("stalled at {stall:?} (xoauth2 {xoauth2}): still waiting after {HANG:?}");
        };
        assert_eq!(accepted, delivered, "{stall:?} (xoauth2 {xoauth2})");
        // At most the stalled step and the goodbye after it, with room for a loaded machine
        // (the goodbye alone used to take 10 s whatever the configured timeout).
        assert!(
            elapsed < Duration::from_secs(8),
            "{stall:?} (xoauth2 {xoauth2}) took {elapsed:?}"
        );
        eprintln!("{stall:?} (xoauth2 {xoauth2}): given up after {elapsed:?}");
    }
    // Once the server behaves, the same client delivers.
    let delivered = tokio::time::timeout(HANG, converse(&fixture, StallAt::Nowhere, true, &small))
        .await
        .expect("a behaving server is served at once");
    assert!(delivered);
}
