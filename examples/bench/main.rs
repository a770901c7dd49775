//! Benchmark of smtp-oauth-relay against Postfix and the loopback limit (issue 6).
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench -- [--clients 16] [--messages N] [--quick]
//! ```
//!
//! The relay runs as its release binary in a separate process (its RSS and CPU are read from
//! `/proc`), in front of the testkit's Entra and Exchange emulators in fast mode running inside
//! this process. The same tokio SMTP load generator drives the relay, the fake Exchange directly
//! (STARTTLS + XOAUTH2: the loopback limit of this setup) and, when installed, a private
//! Postfix instance relaying to `smtp-sink`. Everything listens on 127.0.0.1 only, every loop is
//! bounded in count and time, and every process started here is stopped at the end, also after
//! an error or Ctrl-C. Scenario (h) has the relay's clients AUTH for every message (with its
//! memory of proven credentials, then without it, each on a relay of its own). Scenario (i)
//! delivers through the testkit's Graph emulator (4 concurrent requests per mailbox enforced)
//! on a relay of its own, and measures delivery latency over Graph and over SMTP. See
//! BENCHMARKS.md.

mod auth;
mod graph;
mod postfix;
mod procs;
mod relay;
mod report;
mod smtp;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use smtp_oauth_relay::testkit::{ExchangeOptions, FakeGraph, Testkit, TestkitOptions};

use crate::postfix::PostfixBaseline;
use crate::relay::RelayProcess;
use crate::report::{Measured, Report};
use crate::smtp::{
    Client, LoadResult, Message, Style, Target, Timing, closed_loop, open_loop, per_second,
    quantile,
};

#[derive(Parser, Debug, Clone)]
#[command(about = "Benchmark the relay against Postfix and the loopback limit (BENCHMARKS.md)")]
struct Args {
    /// Concurrent SMTP clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Messages per 10 KB scenario (1 MB scenarios send a twentieth, at least one per client).
    #[arg(long)]
    messages: Option<u64>,
    /// A few seconds per scenario: checks that everything works, figures are rough.
    #[arg(long)]
    quick: bool,
    /// Skip the Postfix baseline even if Postfix is installed.
    #[arg(long)]
    no_postfix: bool,
    /// Run only these scenarios, e.g. `--only ad` (letters of BENCHMARKS.md: a b c d e h i).
    #[arg(long, default_value = SCENARIOS)]
    only: String,
    /// Record the relay with `perf record` (cpu-clock, DWARF call graphs) during this one
    /// scenario (a letter); the data goes to target/bench-perf-<letter>.data.
    #[arg(long, value_name = "LETTER")]
    perf: Option<char>,
    /// Directory on the disk under test for the relay's spool and Postfix's queue (default
    /// /var/tmp; never a tmpfs). E.g. a journaled ext4 mount to compare filesystems.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Markdown file the report is appended to (default: target/bench-report.md).
    #[arg(long)]
    report: Option<PathBuf>,
}

const SMALL: usize = 10 * 1024;
const LARGE: usize = 1024 * 1024;
/// Slightly under the relay's default `max_message_size` of 35 MiB.
const HUGE: usize = 34 * 1024 * 1024;
const SENDER: &str = "relay@contoso.com";
const IDLE_CONNECTIONS: usize = 1000;
/// Every scenario letter (`--only`); (f) and (g) are the CPU and token rows, not scenarios.
const SCENARIOS: &str = "abcdehi";
const LATENCY_RATE: f64 = 100.0;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    smtp_oauth_relay::tls::install_default_provider();
    tokio::select! {
        result = run(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; everything started was stopped"),
    }
}

/// The system a scenario runs against.
enum System<'a> {
    Relay {
        relay: &'a RelayProcess,
        kit: &'a Testkit,
    },
    Upstream {
        kit: &'a Testkit,
    },
    Postfix {
        postfix: &'a PostfixBaseline,
    },
    /// A relay whose account delivers through the Graph emulator (scenario (i)).
    Graph {
        relay: &'a RelayProcess,
        graph: &'a FakeGraph,
    },
}

impl System<'_> {
    fn delivered(&self) -> u64 {
        match self {
            System::Relay { kit, .. } | System::Upstream { kit } => kit.exchange.message_count(),
            System::Postfix { postfix } => postfix.delivered(),
            System::Graph { graph, .. } => graph.delivered_count(),
        }
    }

    fn cpu(&self) -> Option<f64> {
        match self {
            System::Relay { relay, .. } | System::Graph { relay, .. } => {
                procs::cpu_seconds(relay.pid)
            }
            System::Upstream { .. } => None,
            System::Postfix { postfix } => postfix.master_pid().map(procs::tree_cpu_seconds),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            System::Relay { relay, .. } | System::Graph { relay, .. } => Some(relay.pid),
            _ => None,
        }
    }
}

struct Plan {
    only: String,
    perf: Option<char>,
    perf_dir: PathBuf,
    clients: usize,
    small_messages: u64,
    large_messages: u64,
    latency_messages: u64,
    /// (h) with the credential cache off: every message pays argon2, so fewer.
    uncached_auth_messages: u64,
    deadline: Duration,
}

impl Plan {
    fn runs(&self, letter: char) -> bool {
        self.only.contains(letter)
    }

    /// Start `perf record` on the relay when `letter` is the scenario to profile.
    async fn perf_start(&self, system: &System<'_>, letter: char) -> Result<Option<Perf>> {
        match (self.perf, system.pid()) {
            (Some(wanted), Some(pid)) if wanted == letter => Perf::start(
                pid,
                &self.perf_dir.join(format!("bench-perf-{letter}.data")),
            )
            .await
            .map(Some),
            _ => Ok(None),
        }
    }

    async fn perf_stop(&self, recording: Option<Perf>) {
        if let Some(recording) = recording {
            recording.stop().await;
        }
    }
}

/// A `perf record` attached to the relay.
struct Perf {
    child: tokio::process::Child,
    output: PathBuf,
}

impl Perf {
    async fn start(pid: u32, output: &Path) -> Result<Perf> {
        let child = tokio::process::Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(output)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start perf record (apt-get install linux-perf)")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("  perf record attached to the relay (pid {pid})");
        Ok(Perf {
            child,
            output: output.to_path_buf(),
        })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
        eprintln!(
            "  perf data: {} (perf report -i {} --no-children --sort sym)",
            self.output.display(),
            self.output.display()
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn closed_scenario(
    system: &System<'_>,
    target: &Target,
    style: Style,
    timing: Timing,
    clients: usize,
    count: u64,
    message: &Arc<Message>,
    deadline: Duration,
) -> Measured {
    let before = system.delivered();
    let cpu_before = system.cpu();
    let sampler = system
        .pid()
        .map(|pid| procs::PeakRss::start(pid, Duration::from_millis(20)));
    let start = Instant::now();
    let mut load: LoadResult = closed_loop(
        target,
        style,
        timing,
        clients,
        count,
        Arc::clone(message),
        deadline,
    )
    .await;
    let accepted_per_s = load.rate();
    let delivered_per_s = if matches!(system, System::Upstream { .. }) {
        Some(accepted_per_s)
    } else {
        let goal = before + load.ok;
        let limit = deadline.max(Duration::from_secs(60));
        let waited = Instant::now() + limit;
        while system.delivered() < goal && Instant::now() < waited {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = start.elapsed();
        (system.delivered() >= goal).then(|| per_second(load.ok, elapsed))
    };
    let cpu_per_1000 = match (cpu_before, system.cpu()) {
        (Some(a), Some(b)) if load.ok > 0 => Some((b - a) / load.ok as f64 * 1000.0),
        _ => None,
    };
    let peak_rss_kib = match (sampler, system.pid()) {
        (Some(sampler), Some(pid)) => Some(sampler.finish(pid).await),
        _ => None,
    };
    Measured {
        accepted: load.ok,
        accepted_per_s,
        delivered_per_s,
        cpu_per_1000,
        peak_rss_kib,
        failures: load.failed,
        first_error: load.first_error.take(),
        p99_ms: ms(quantile(&mut load.latencies, 0.99)),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Closed-loop scenarios (a), (b), (c) on one system, those selected.
async fn throughput(
    system: &System<'_>,
    target: &Target,
    plan: &Plan,
    small: &Arc<Message>,
    large: &Arc<Message>,
    name: &str,
) -> Result<[Option<Measured>; 3]> {
    let mut results: [Option<Measured>; 3] = [None, None, None];
    let scenarios = [
        (
            'a',
            "10 KB, one message per connection",
            Style::OnePerConnection,
            plan.small_messages,
            small,
        ),
        (
            'b',
            "10 KB, many messages per session",
            Style::ManyPerSession,
            plan.small_messages,
            small,
        ),
        (
            'c',
            "1 MB, one message per connection",
            Style::OnePerConnection,
            plan.large_messages,
            large,
        ),
    ];
    for (slot, (letter, label, style, count, message)) in results.iter_mut().zip(scenarios) {
        if !plan.runs(letter) {
            continue;
        }
        eprintln!("  {name}: ({letter}) {label}");
        let recording = plan.perf_start(system, letter).await?;
        let m = closed_scenario(
            system,
            target,
            style,
            Timing::DataTo250,
            plan.clients,
            count,
            message,
            plan.deadline,
        )
        .await;
        plan.perf_stop(recording).await;
        if m.failures > 0 {
            eprintln!(
                "  {name} ({letter}): {} failed transactions, first: {}",
                m.failures,
                m.first_error.as_deref().unwrap_or("?")
            );
        }
        *slot = Some(m);
    }
    Ok(results)
}

/// Warm-up: 40 trusted messages from 4 clients (the token, the upstream sessions, the
/// allocator).
async fn warm_up(target: &Target, message: &Arc<Message>, deadline: Duration) -> LoadResult {
    closed_loop(
        target,
        Style::OnePerConnection,
        Timing::DataTo250,
        4,
        40,
        Arc::clone(message),
        deadline,
    )
    .await
}

/// (d): DATA→250 at a fixed open-loop rate; (p50, p99, failures) in ms.
async fn latency(target: &Target, count: u64, message: &Arc<Message>) -> (f64, f64, u64) {
    let mut result = open_loop(target, LATENCY_RATE, count, Arc::clone(message)).await;
    let p50 = ms(quantile(&mut result.latencies, 0.50));
    let p99 = ms(quantile(&mut result.latencies, 0.99));
    if let Some(error) = &result.first_error {
        eprintln!("  latency: {} failed, first: {error}", result.failed);
    }
    (p50, p99, result.failed)
}

/// (e): RSS added by `IDLE_CONNECTIONS` idle sessions (greeted, after EHLO), from many
/// 127.0.1.x source addresses (10 per address, under the default per-address limit of 20).
async fn idle_connections(relay: &RelayProcess) -> Result<(usize, f64)> {
    let target = Target::Plain(relay.smtp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procs::rss_kib(relay.pid).context("relay RSS")?;
    let mut clients = Vec::with_capacity(IDLE_CONNECTIONS);
    let mut first_error = None;
    for batch in 0..IDLE_CONNECTIONS / 50 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let n = batch * 50 + i;
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (1 + n / 10) as u8));
            let target = target.clone();
            tasks.spawn(async move { Client::open(&target, Some(source)).await });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(client) => clients.push(client),
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procs::rss_kib(relay.pid).context("relay RSS")?;
    let opened = clients.len();
    if let Some(error) = first_error {
        eprintln!("  idle connections: {opened} opened; first failure: {error}");
    }
    for client in clients {
        drop(client);
    }
    Ok((opened, mib(after.saturating_sub(before))))
}

/// (e): RSS while receiving one 34 MiB message (until its 250), and the peak until it has been
/// delivered. Both as increases over the RSS just before, in MiB.
async fn huge_message(relay: &RelayProcess, kit: &Testkit) -> Result<(f64, f64)> {
    let message = Message::of_size(HUGE, SENDER);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procs::rss_kib(relay.pid).context("relay RSS")?;
    let delivered_before = kit.exchange.message_count();
    let sampler = procs::PeakRss::start(relay.pid, Duration::from_millis(5));
    let mut client = Client::open(&Target::Plain(relay.smtp), None)
        .await?
        .without_pipelining();
    client.send(&message).await.context("the 34 MiB message")?;
    client.quit().await;
    let receiving = sampler.finish(relay.pid).await;
    let sampler = procs::PeakRss::start(relay.pid, Duration::from_millis(5));
    let deadline = Instant::now() + Duration::from_secs(120);
    while kit.exchange.message_count() <= delivered_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delivering = sampler.finish(relay.pid).await;
    if kit.exchange.message_count() <= delivered_before {
        bail!("the 34 MiB message was not delivered within 120 s");
    }
    Ok((
        mib(receiving.saturating_sub(before)),
        mib(delivering.saturating_sub(before)),
    ))
}

/// (d) floor: what one durable write costs on this disk at the same pace: create a file in
/// `dir`, write 10 KB, fdatasync, close (the relay does this and more for every message;
/// Postfix about this). Returns (p50, p99) in ms.
async fn disk_floor(dir: &Path, count: u64) -> Result<(f64, f64)> {
    let dir = dir.join("disk-floor");
    std::fs::create_dir_all(&dir)?;
    let payload = Arc::new(vec![b'x'; SMALL]);
    let interval = Duration::from_secs_f64(1.0 / LATENCY_RATE);
    let start = tokio::time::Instant::now();
    let mut latencies = Vec::new();
    for i in 0..count {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (path, payload) = (dir.join(format!("f{i}")), Arc::clone(&payload));
        let took = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let began = Instant::now();
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&payload)?;
            file.sync_data()?;
            drop(file);
            let took = began.elapsed();
            std::fs::remove_file(&path)?;
            Ok::<_, std::io::Error>(took)
        })
        .await??;
        latencies.push(took);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok((
        ms(quantile(&mut latencies, 0.50)),
        ms(quantile(&mut latencies, 0.99)),
    ))
}

async fn wait_delivered(kit: &Testkit, count: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while kit.exchange.message_count() < count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} messages reached the fake Exchange within {limit:?}",
                kit.exchange.message_count()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn scratch_root(args: &Args) -> PathBuf {
    // /var/tmp is on the real disk here (not tmpfs), and Postfix's daemons can traverse it.
    args.scratch
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// The filesystem type of `path` (from /proc/mounts, longest matching mount point).
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount).then(|| {
                (
                    mount.len(),
                    format!(
                        "{kind}{} on {device} mounted at {mount}",
                        journal(kind, device)
                    ),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "?".to_owned(), |(_, text)| text)
}

/// For ext4: whether the device has a jbd2 journal (it changes what fsync and inode
/// allocation cost).
fn journal(kind: &str, device: &str) -> &'static str {
    if kind != "ext4" {
        return "";
    }
    let name = device.rsplit('/').next().unwrap_or(device);
    let prefix = format!("{name}-");
    let journaled = std::fs::read_dir("/proc/fs/jbd2").is_ok_and(|dir| {
        dir.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    });
    if journaled {
        " (with journal)"
    } else {
        " (without journal)"
    }
}

fn default_report_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-report.md")
}

async fn run(args: Args) -> Result<()> {
    let only = args.only.to_ascii_lowercase();
    if let Some(unknown) = only.chars().find(|c| !SCENARIOS.contains(*c)) {
        bail!(
            "--only {only}: there is no scenario ({unknown}); the scenarios are {SCENARIOS} \
             ((f) CPU and (g) token requests are rows of every run; AUTH for every message is (h), \
             delivery through Microsoft Graph (i))"
        );
    }
    let binary = relay::locate_binary()?;
    let scale = if args.quick { 300 } else { 4000 };
    let small_messages = args.messages.unwrap_or(scale).max(1);
    let plan = Plan {
        only,
        perf: args.perf.map(|c| c.to_ascii_lowercase()),
        perf_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        clients: args.clients.max(1),
        small_messages,
        large_messages: (small_messages / 20).max(args.clients as u64),
        latency_messages: if args.quick { 200 } else { 1000 },
        uncached_auth_messages: (small_messages / 4).max(1),
        deadline: Duration::from_secs(if args.quick { 60 } else { 300 }),
    };
    let scratch = tempfile::Builder::new()
        .prefix("smtp-relay-bench-")
        .tempdir_in(scratch_root(&args))
        .with_context(|| format!("scratch directory in {}", scratch_root(&args).display()))?;
    let filesystem = filesystem_of(scratch.path());
    if filesystem.starts_with("tmpfs") {
        bail!(
            "{} is a tmpfs: fsync would cost nothing; use a directory on a real disk (--scratch)",
            scratch.path().display()
        );
    }

    eprintln!(
        "starting the testkit (fast mode) and the relay {}",
        binary.display()
    );
    let kit = Testkit::start(TestkitOptions {
        exchange: ExchangeOptions {
            fast_mode: true,
            max_concurrent_sessions_per_mailbox: 100_000,
            ..ExchangeOptions::default()
        },
        ..TestkitOptions::default()
    })
    .await?;
    let mut relay = RelayProcess::start(&binary, &kit, scratch.path(), None).await?;
    let outcome = measure(&args, &plan, &kit, &relay, scratch.path()).await;
    let problems = relay.problems();
    relay.kill().await;
    kit.shutdown().await;
    let mut report = outcome?;
    report.relay_log_problems = problems.len();
    report.filesystem = filesystem;
    if let Some(first) = problems.first() {
        eprintln!(
            "relay log: {} WARN/ERROR lines, first: {first}",
            problems.len()
        );
    }
    let markdown = report.markdown(&args_line(&args));
    println!("{markdown}");
    let path = args.report.clone().unwrap_or_else(default_report_path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{markdown}\n").as_bytes()))
        .with_context(|| format!("append the report to {}", path.display()))?;
    eprintln!("report appended to {}", path.display());
    Ok(())
}

fn args_line(args: &Args) -> String {
    let mut line = format!("--clients {}", args.clients);
    if let Some(n) = args.messages {
        line.push_str(&format!(" --messages {n}"));
    }
    if args.quick {
        line.push_str(" --quick");
    }
    if let Some(dir) = &args.scratch {
        line.push_str(&format!(" --scratch {}", dir.display()));
    }
    if args.only != SCENARIOS {
        line.push_str(&format!(" --only {}", args.only));
    }
    line
}

async fn measure(
    args: &Args,
    plan: &Plan,
    kit: &Testkit,
    relay: &RelayProcess,
    scratch: &Path,
) -> Result<Report> {
    let small = Arc::new(Message::of_size(SMALL, SENDER));
    let large = Arc::new(Message::of_size(LARGE, SENDER));
    let relay_target = Target::Plain(relay.smtp);
    let system = System::Relay { relay, kit };
    let mut report = Report::new(plan.clients, plan.small_messages, plan.large_messages);

    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_fresh_mib = procs::rss_kib(relay.pid).map(mib);

    let warm = warm_up(&relay_target, &small, plan.deadline).await;
    if warm.ok == 0 {
        bail!(
            "warm-up failed: {}\nrelay log:\n{}",
            warm.first_error.unwrap_or_default(),
            relay.log_tail(20)
        );
    }
    wait_delivered(kit, warm.ok, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.rss_idle_mib = procs::rss_kib(relay.pid).map(mib);

    eprintln!("relay: throughput");
    report.relay = throughput(&system, &relay_target, plan, &small, &large, "relay").await?;
    if plan.runs('d') {
        eprintln!("relay: (d) latency at {LATENCY_RATE} msg/s");
        let recording = plan.perf_start(&system, 'd').await?;
        report.relay_latency = Some(latency(&relay_target, plan.latency_messages, &small).await);
        plan.perf_stop(recording).await;
        eprintln!("disk: one create + write + fdatasync at {LATENCY_RATE}/s");
        report.disk_floor = Some(disk_floor(scratch, plan.latency_messages).await?);
    }
    if plan.runs('e') {
        eprintln!("relay: (e) {IDLE_CONNECTIONS} idle connections");
        report.idle_connections = Some(idle_connections(relay).await?);
        eprintln!("relay: (e) one 34 MiB message");
        report.huge = Some(huge_message(relay, kit).await?);
    }
    if plan.runs('i') {
        eprintln!("relay: (i) SMTP delivery latency at {LATENCY_RATE} msg/s (for the Graph rows)");
        report.smtp_delivery_latency = Some(graph::smtp_delivery_latency(relay, kit, plan).await);
    }
    report.token_requests = kit.entra.token_requests();
    if plan.runs('h') {
        let binary = relay::locate_binary()?;
        report.auth = Some(auth::auth_per_message(&binary, kit, scratch, plan, &small).await?);
    }
    if plan.runs('i') {
        let binary = relay::locate_binary()?;
        report.graph =
            Some(graph::graph_delivery(&binary, kit, scratch, plan, &small, &large).await?);
    }
    report.relay_delivered_check = check_delivered(kit);

    eprintln!("loopback limit: the generator straight into the fake Exchange (STARTTLS + XOAUTH2)");
    let upstream_target = Target::Xoauth2 {
        addr: kit.smtp_addr(),
        tls: kit.pki.client_config(),
        mailbox: kit.mailbox().to_owned(),
        token: kit.mint_exchange_token()?,
    };
    let upstream = System::Upstream { kit };
    report.upstream = throughput(
        &upstream,
        &upstream_target,
        plan,
        &small,
        &large,
        "upstream",
    )
    .await?;
    if plan.runs('d') {
        report.upstream_latency =
            Some(latency(&upstream_target, plan.latency_messages, &small).await);
    }

    if args.no_postfix || !postfix::available() {
        eprintln!("Postfix baseline skipped (--no-postfix, or postfix/smtp-sink not installed)");
    } else {
        eprintln!("Postfix: private instance relaying to smtp-sink");
        match postfix_baseline(args, plan, &small, &large, &mut report).await {
            Ok(()) => {}
            Err(error) => eprintln!("Postfix baseline failed, its columns stay empty: {error:#}"),
        }
    }
    Ok(report)
}

/// The Postfix columns: a private instance relaying to smtp-sink.
async fn postfix_baseline(
    args: &Args,
    plan: &Plan,
    small: &Arc<Message>,
    large: &Arc<Message>,
    report: &mut Report,
) -> Result<()> {
    {
        let baseline = PostfixBaseline::start(&scratch_root(args)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let target = Target::Plain(baseline.smtp);
        let system = System::Postfix { postfix: &baseline };
        let warm = closed_loop(
            &target,
            Style::OnePerConnection,
            Timing::DataTo250,
            4,
            40,
            Arc::clone(small),
            plan.deadline,
        )
        .await;
        if warm.ok == 0 {
            bail!(
                "Postfix warm-up failed: {}",
                warm.first_error.unwrap_or_default()
            );
        }
        if !baseline
            .wait_delivered(warm.ok, Duration::from_secs(60))
            .await
        {
            bail!("Postfix did not deliver the warm-up messages to smtp-sink within 60 s");
        }
        report.postfix = throughput(&system, &target, plan, small, large, "postfix").await?;
        if plan.runs('d') {
            report.postfix_latency = Some(latency(&target, plan.latency_messages, small).await);
        }
        report.postfix_rss_mib = baseline
            .master_pid()
            .map(|pid| mib(procs::tree_pss_kib(pid)));
    }
    Ok(())
}

/// Every message the relay accepted reached the fake Exchange, none smaller than sent.
fn check_delivered(kit: &Testkit) -> Option<String> {
    let messages = kit.exchange.messages();
    let short = messages.iter().filter(|m| m.size < SMALL).count();
    let wrong = messages
        .iter()
        .filter(|m| m.auth_mailbox != kit.mailbox())
        .count();
    if short > 0 || wrong > 0 {
        Some(format!(
            "{short} delivered messages smaller than 10 KB, {wrong} authenticated as another mailbox"
        ))
    } else {
        None
    }
}
