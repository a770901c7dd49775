//! `demo`: the whole chain on one machine. Starts the testkit's Entra-like token endpoint and
//! Exchange-like SMTP server (with `--transport graph`, its Graph-like mail API, and the
//! relay's account sends through it), then a real relay in front of them, and either waits for the
//! user's own clients (printing the commands to try) or, with `--once`, pushes one sample
//! message through with an independent SMTP client (lettre) and checks that it arrived at the
//! emulator byte for byte (plus the relay's `Received:` field).
//!
//! Nothing here is used by `serve`; it exists so that a new user sees the product work within
//! a minute of cloning it, without a Microsoft 365 tenant.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;

use crate::app::Relay;
use crate::config::Config;
use crate::testkit::{ExchangeOptions, FakeGraph, GraphOptions, Testkit, TestkitOptions};

/// Options of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Send one sample message through the whole chain, check that it arrived intact, exit
    /// 0 if it did and 1 if not.
    #[arg(long)]
    pub once: bool,
    /// Address of the relay's SMTP listener [default: 127.0.0.1:2525; with --once, a free
    /// port].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Folder for the spool, the generated relay.toml and the delivered messages [default: a
    /// new temporary folder].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How the relay's account delivers: `smtp` (to the Exchange emulator, SMTP AUTH) or
    /// `graph` (to the Graph emulator, `sendMail` over HTTPS).
    #[arg(long, value_enum, default_value_t = DemoTransport::Smtp)]
    pub transport: DemoTransport,
}

/// The transports `demo` can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoTransport {
    Smtp,
    Graph,
}

const SENDER: &str = "relay@contoso.com";
const RECIPIENT: &str = "colleague@fabrikam.example";

/// The sample message of `--once` (no trailing CRLF: the SMTP client ends the last line).
fn sample_message() -> String {
    format!(
        "From: Scanner <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: smtp-oauth-relay demo\r\n\
         Date: Sat, 28 Nov 2026 09:00:00 +0000\r\nMessage-ID: <demo-once@contoso.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         Hello from a legacy device.\r\n.A line that starts with a dot.\r\n\
         Grüße, ¡hola!, 你好 — 8-bit UTF-8 survives.\r\n{}\r\nEnd.",
        "x".repeat(998)
    )
}

/// Run `demo`.
pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("demo failed: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (dir, _temporary) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("smtp-oauth-relay-demo-")
                .tempdir()
                .context("cannot create a temporary folder")?;
            if args.once {
                (temp.path().to_path_buf(), Some(temp))
            } else {
                (temp.keep(), None)
            }
        }
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let delivered = dir.join("delivered");
    std::fs::create_dir_all(&delivered).context("cannot create the delivered/ folder")?;

    let kit = Testkit::start(TestkitOptions {
        exchange: ExchangeOptions {
            eml_dir: Some(delivered.clone()),
            ..ExchangeOptions::default()
        },
        ..TestkitOptions::default()
    })
    .await
    .context("cannot start the Exchange and Entra emulators")?;
    let ca_file = kit
        .write_ca_pem(&dir.join("testkit-ca.pem"))
        .context("cannot write the emulator's CA certificate")?;
    let listen = args.listen.unwrap_or_else(|| {
        if args.once {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 2525))
        }
    });
    let graph = match args.transport {
        DemoTransport::Smtp => None,
        DemoTransport::Graph => Some(
            kit.start_graph(GraphOptions::default())
                .await
                .context("cannot start the Graph emulator")?,
        ),
    };
    let toml = relay_toml(&kit, graph.as_ref(), &dir, &ca_file, listen);
    // It holds the emulated app's client secret: private from its creation, like a real one.
    write_private(&dir.join("relay.toml"), &toml)?;
    let config = Config::from_toml(&toml, &dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let relay = Relay::start(config)
        .await
        .context("cannot start the relay")?;
    let address = relay
        .listener_addresses()
        .first()
        .copied()
        .context("the relay has no listener")?;

    // The admin endpoint took a free port: write it into relay.toml, so that `queue`,
    // `healthcheck` and `check` run against this config find the running demo.
    if let Some(admin) = relay.admin_address() {
        let toml = toml.replace(
            "[admin]\naddress = \"127.0.0.1:0\"",
            &format!("[admin]\naddress = \"{admin}\""),
        );
        write_private(&dir.join("relay.toml"), &toml)?;
    }
    let code = if args.once {
        match &graph {
            Some(graph) => once_graph(graph, address).await,
            None => once(&kit, address).await,
        }
    } else {
        std::fs::write(
            dir.join("message.txt"),
            "Subject: hello through smtp-oauth-relay\r\nFrom: relay@contoso.com\r\n\r\nHello!\r\n",
        )
        .context("cannot write message.txt")?;
        print_instructions(
            address,
            relay.admin_address(),
            &dir,
            &delivered,
            graph.is_some(),
        );
        wait_for_stop(graph.as_ref(), &delivered).await;
        println!(
            "\nstopping; delivered messages stay in {}",
            delivered.display()
        );
        ExitCode::SUCCESS
    };
    relay.shutdown(Duration::from_secs(10)).await;
    kit.shutdown().await;
    Ok(code)
}

/// Write `relay.toml` with mode 0600 whatever the umask, also over an older, more open one
/// left in a reused `--dir`.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::spool::fsio::write_private(path, text.as_bytes())
        .and_then(|()| {
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// How to run this very binary from a shell: after `cargo run` it is not on the PATH.
fn this_binary() -> String {
    std::env::current_exe().map_or_else(
        |_| "smtp-oauth-relay".to_string(),
        |path| path.display().to_string(),
    )
}

/// Wait for Ctrl-C or SIGTERM; meanwhile write each message the Graph emulator delivers to
/// `delivered/graph-N.eml` (its MIME as Graph received it), as the Exchange emulator does.
async fn wait_for_stop(graph: Option<&FakeGraph>, delivered: &Path) {
    let stop = crate::app::wait_for_signal();
    tokio::pin!(stop);
    let mut written = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let Some(graph) = graph else { continue };
        for message in graph.delivered().iter().skip(written) {
            written += 1;
            let path = delivered.join(format!("graph-{written}.eml"));
            let bytes = message.raw_mime.as_deref().unwrap_or_default();
            if let Err(error) = std::fs::write(&path, bytes) {
                eprintln!("cannot write {}: {error}", path.display());
            }
        }
    }
}

fn relay_toml(
    kit: &Testkit,
    graph: Option<&FakeGraph>,
    dir: &Path,
    ca_file: &Path,
    listen: SocketAddr,
) -> String {
    let mut account = kit.relay_account_toml("exchange-emulator", ca_file);
    if let Some(graph) = graph {
        account.push_str(&format!(
            "transport = \"graph\"\ngraph_endpoint = \"{}\"\n",
            graph.base_url()
        ));
    }
    format!(
        r#"# Generated by `smtp-oauth-relay demo`: a relay in front of the built-in emulators.
[relay]
hostname = "relay.demo.lan"
state_dir = "{state}"

[queue]
retry_schedule = ["2s", "5s", "10s"]

[admin]
address = "127.0.0.1:0"

[[listener]]
address = "{listen}"
tls = "none"
allow_auth_without_tls = true

{account}
[[network]]
cidr = "127.0.0.0/8"
account = "exchange-emulator"
allowed_senders = ["*@contoso.com"]

[[user]]
username = "demo"
password_hash = "{demo_hash}"
account = "exchange-emulator"
allowed_senders = ["*@contoso.com"]
"#,
        state = dir.join("state").display(),
        account = account,
        demo_hash = crate::policy::hash_password(&crate::vocab::secret::Secret::new("demo"))
            .unwrap_or_default(),
    )
}

fn print_instructions(
    address: SocketAddr,
    admin: Option<SocketAddr>,
    dir: &Path,
    delivered: &Path,
    graph: bool,
) {
    let behind = if graph {
        "an Entra-like token endpoint and a Graph-like mail API (sendMail over HTTPS,\n                       drafts, upload sessions, Graph's errors and limits) on 127.0.0.1."
    } else {
        "an Entra-like token endpoint and an Exchange-like SMTP server\n                       (STARTTLS, AUTH XOAUTH2, Microsoft's reply codes) on 127.0.0.1."
    };
    let host = address.ip();
    let port = address.port();
    let admin = admin.map_or_else(
        || "off".to_string(),
        |a| format!("http://{a}/metrics, /healthz, /readyz"),
    );
    println!(
        r#"
smtp-oauth-relay demo is running.

  Relay (plain SMTP):  {address}
    Clients on 127.0.0.0/8 are trusted; AUTH PLAIN/LOGIN as demo / demo also works.
    Allowed senders: *@contoso.com (the emulated mailbox is {SENDER}).
  Behind it:           {behind}
  Delivered messages:  {delivered}/  (one .eml file per message accepted)
  Relay config:        {dir}/relay.toml
  Admin endpoint:      {admin}
    {binary} queue --config {dir}/relay.toml list    (and check, healthcheck)

Try one of:
  swaks --server {host}:{port} --from {SENDER} --to anyone@example.com
  curl smtp://{host}:{port} --mail-from {SENDER} --mail-rcpt anyone@example.com -T {dir}/message.txt
  python3 -c "import smtplib; smtplib.SMTP('{host}', {port}).sendmail('{SENDER}', ['anyone@example.com'], 'Subject: hi\r\n\r\nhello\r\n')"

A sender outside contoso.com is refused (550 5.7.1), as on a real deployment.
Press Ctrl-C to stop."#,
        delivered = delivered.display(),
        dir = dir.display(),
        binary = this_binary(),
    );
}

/// `--once --transport graph`: send the sample, wait for it at the Graph emulator, compare
/// the MIME Graph received with what was sent.
async fn once_graph(graph: &FakeGraph, address: SocketAddr) -> ExitCode {
    let sample = sample_message();
    match send_sample(address, &sample).await {
        Ok(reply) => println!("relay accepted the sample message: {reply}"),
        Err(error) => {
            println!("FAILED: the relay did not accept the sample message: {error:#}");
            return ExitCode::from(1);
        }
    }
    let arrived = match graph.wait_for_delivered(1, Duration::from_secs(60)).await {
        Ok(messages) => messages,
        Err(error) => {
            println!("FAILED: the message did not reach the Graph emulator within 60 s: {error}");
            return ExitCode::from(1);
        }
    };
    let Some(message) = arrived.first() else {
        println!("FAILED: the Graph emulator holds no message");
        return ExitCode::from(1);
    };
    let expected = format!("{sample}\r\n");
    let body = message.raw_mime.as_deref().unwrap_or_default();
    let after_trace = skip_first_field(body);
    let intact = after_trace == expected.as_bytes() && body.starts_with(b"Received: from ");
    println!(
        "Graph emulator accepted it: sendMail as {} ({:?}), recipients {}",
        message.mailbox,
        message.path,
        message.recipients.join(", ")
    );
    if intact {
        println!("OK: the message arrived byte for byte, plus the relay's Received: field.");
        ExitCode::SUCCESS
    } else {
        println!(
            "FAILED: the content differs ({} bytes sent, {} bytes after the Received: field arrived)",
            expected.len(),
            after_trace.len()
        );
        ExitCode::from(1)
    }
}

/// Send the sample with lettre, wait for it at the emulator, compare the bytes.
async fn once(kit: &Testkit, address: SocketAddr) -> ExitCode {
    let sample = sample_message();
    match send_sample(address, &sample).await {
        Ok(reply) => println!("relay accepted the sample message: {reply}"),
        Err(error) => {
            println!("FAILED: the relay did not accept the sample message: {error:#}");
            return ExitCode::from(1);
        }
    }
    let arrived = match kit
        .exchange
        .wait_for_messages(1, Duration::from_secs(60))
        .await
    {
        Ok(messages) => messages,
        Err(error) => {
            println!(
                "FAILED: the message did not reach the Exchange emulator within 60 s: {error}"
            );
            return ExitCode::from(1);
        }
    };
    let Some(message) = arrived.first() else {
        println!("FAILED: the Exchange emulator holds no message");
        return ExitCode::from(1);
    };
    let expected = format!("{sample}\r\n");
    let body = message.body();
    let after_trace = skip_first_field(body);
    let intact = after_trace == expected.as_bytes() && body.starts_with(b"Received: from ");
    println!(
        "Exchange emulator accepted it: authenticated as {} over XOAUTH2, envelope {} -> {}",
        message.auth_mailbox,
        message.envelope_from,
        message.recipients.join(", ")
    );
    if intact {
        println!("OK: the message arrived byte for byte, plus the relay's Received: field.");
        ExitCode::SUCCESS
    } else {
        println!(
            "FAILED: the content differs ({} bytes sent, {} bytes after the Received: field arrived)",
            expected.len(),
            after_trace.len()
        );
        ExitCode::from(1)
    }
}

async fn send_sample(address: SocketAddr, sample: &str) -> anyhow::Result<String> {
    let mut connection = AsyncSmtpConnection::connect_tokio1(
        address,
        Some(Duration::from_secs(10)),
        &ClientId::Domain("legacy-device.demo.lan".into()),
        None,
        None,
    )
    .await
    .context("cannot connect to the relay")?;
    let envelope = lettre::address::Envelope::new(
        Some(SENDER.parse().context("sender")?),
        vec![RECIPIENT.parse().context("recipient")?],
    )
    .context("envelope")?;
    let response = connection
        .send(&envelope, sample.as_bytes())
        .await
        .context("the relay refused the message")?;
    let _ = connection.quit().await;
    Ok(format!(
        "{} {}",
        u16::from(response.code()),
        response.message().collect::<Vec<_>>().join(" ")
    ))
}

/// The bytes after the first header field and its folded continuation lines.
fn skip_first_field(body: &[u8]) -> &[u8] {
    let mut index = 0;
    loop {
        let Some(newline) = body
            .get(index..)
            .and_then(|rest| memchr::memchr(b'\n', rest))
        else {
            return &[];
        };
        index += newline + 1;
        if !matches!(body.get(index), Some(b' ' | b'\t')) {
            return body.get(index..).unwrap_or(&[]);
        }
    }
}
