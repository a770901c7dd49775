//! `demo`: the whole chain on one machine. Starts the testkit's Entra-like token endpoint and
//! Exchange-like SMTP server (with `--transport graph`, its Graph-like mail API; with
//! `--provider google`, its Google token endpoint and Gmail-like SMTP server: `emulators`),
//! then a real relay in front of them, and either waits for the
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

mod emulators;
use emulators::Emulators;

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
    /// The cloud to emulate behind the relay: Microsoft (Entra and Exchange Online) or Google
    /// (a Workspace service account and Gmail).
    #[arg(long, default_value = "microsoft", value_parser = ["microsoft", "google"])]
    pub provider: String,
    /// How the relay's account delivers: `smtp` (to the Exchange or Gmail emulator, SMTP
    /// AUTH) or `graph` (Microsoft only: to the Graph emulator, `sendMail` over HTTPS).
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

    let graph = args.transport == DemoTransport::Graph;
    let (kit, account) = Emulators::start(&args.provider, graph, SENDER, &dir, &delivered).await?;
    let listen = args.listen.unwrap_or_else(|| {
        if args.once {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([127, 0, 0, 1], 2525))
        }
    });
    let toml = relay_toml(&account, kit.account_name(), &dir, listen);
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
        once(&kit, address).await
    } else {
        std::fs::write(
            dir.join("message.txt"),
            "Subject: hello through smtp-oauth-relay\r\nFrom: relay@contoso.com\r\n\r\nHello!\r\n",
        )
        .context("cannot write message.txt")?;
        print_instructions(&kit, address, relay.admin_address(), &dir, &delivered);
        wait_for_stop(&kit, &delivered).await;
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

/// Wait for Ctrl-C or SIGTERM; meanwhile write what Graph delivers into `delivered/`.
async fn wait_for_stop(kit: &Emulators, delivered: &Path) {
    let stop = crate::app::wait_for_signal();
    tokio::pin!(stop);
    let mut written = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        kit.write_graph_deliveries(delivered, &mut written);
    }
}

fn relay_toml(account: &str, name: &str, dir: &Path, listen: SocketAddr) -> String {
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
account = "{name}"
allowed_senders = ["*@contoso.com"]

[[user]]
username = "demo"
password_hash = "{demo_hash}"
account = "{name}"
allowed_senders = ["*@contoso.com"]
"#,
        state = dir.join("state").display(),
        demo_hash = crate::policy::hash_password(&crate::vocab::secret::Secret::new("demo"))
            .unwrap_or_default(),
    )
}

fn print_instructions(
    kit: &Emulators,
    address: SocketAddr,
    admin: Option<SocketAddr>,
    dir: &Path,
    delivered: &Path,
) {
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
  Delivered messages:  {delivered}/  (one .eml file per message {service} accepted)
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
        behind = kit.description(),
        service = kit.service(),
    );
}

/// Send the sample with lettre, wait for it at the emulator, compare the bytes.
async fn once(kit: &Emulators, address: SocketAddr) -> ExitCode {
    let sample = sample_message();
    match send_sample(address, &sample).await {
        Ok(reply) => println!("relay accepted the sample message: {reply}"),
        Err(error) => {
            println!("FAILED: the relay did not accept the sample message: {error:#}");
            return ExitCode::from(1);
        }
    }
    let service = kit.service();
    let message = match kit.first_message(Duration::from_secs(60)).await {
        Ok(message) => message,
        Err(error) => {
            println!(
                "FAILED: the message did not reach the {service} emulator within 60 s: {error}"
            );
            return ExitCode::from(1);
        }
    };
    let expected = format!("{sample}\r\n");
    let after_trace = skip_first_field(&message.body);
    let intact = after_trace == expected.as_bytes() && message.body.starts_with(b"Received: from ");
    println!("{service} emulator accepted it: {}", message.how);
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
