//! Scenario (i) of the benchmark: delivery through Microsoft Graph (issue 13) against the
//! testkit's Graph emulator with its limits on (4 concurrent requests per mailbox, 429 with
//! `Retry-After`, 4 MiB per request), on a relay process of its own whose account has
//! `transport = "graph"`; and, for comparison, the same delivery-latency measure on the main
//! relay, which delivers over SMTP to the fake Exchange.
//!
//! Invariants: every loop is bounded by a count and a deadline; the emulator runs with its
//! default limits (nothing relaxed for speed), so a 429 counted here is one the relay provoked;
//! latencies are end of data (the final dot written) → the upstream accepted the message
//! (Graph's 202, Exchange's 250), both clocks in this process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};

use smtp_oauth_relay::testkit::{DeliveredMessage, FakeGraph, GraphOptions, SendPath, Testkit};

use crate::relay::RelayProcess;
use crate::report::Measured;
use crate::smtp::{Client, Message, Style, Target, Timing, quantile};
use crate::{LATENCY_RATE, Plan, SENDER, SMALL, System, closed_scenario, mib, ms, procs, warm_up};

/// Delivery latency at a fixed rate: end of data → accepted upstream.
#[derive(Debug, Default, Clone)]
pub struct DeliveryLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// DATA→250 p99 of the same messages.
    pub data_p99_ms: f64,
    /// Messages answered `250` by the relay.
    pub accepted: u64,
    /// Transactions that failed.
    pub failed: u64,
    /// Accepted messages not found upstream in time.
    pub missing: u64,
}

/// What scenario (i) measured on the Graph relay.
#[derive(Debug, Default, Clone)]
pub struct GraphRun {
    /// That relay's RSS after its warm-up, MiB.
    pub idle_rss_mib: Option<f64>,
    /// 10 KB and 1 MB, one message per connection, as (a) and (c).
    pub small: Option<Measured>,
    pub large: Option<Measured>,
    pub latency: Option<DeliveryLatency>,
    /// Requests the emulator answered during (i), warm-up included.
    pub requests: u64,
    /// 429 answers among them.
    pub throttled: u64,
    /// Every other error answer, as `code × count`.
    pub other_errors: Vec<String>,
    /// The most requests for the mailbox in flight at once, as the emulator saw them.
    pub max_concurrency: usize,
    /// Requests that came before a `Retry-After` had passed.
    pub retry_after_violations: usize,
    /// Messages the relay accepted (warm-up included) and Graph delivered.
    pub accepted: u64,
    pub delivered: u64,
    /// WARN/ERROR lines in that relay's log.
    pub log_problems: usize,
    /// Token requests at the fake Entra during (i): the Graph relay's (Graph scope).
    pub token_requests: u64,
    /// What is wrong with the delivered messages, if anything (see [`check_delivered`]).
    pub delivered_check: Option<String>,
}

/// (i): a fresh relay whose account delivers through the Graph emulator (default options:
/// 4 concurrent requests per mailbox); warm-up, then 10 KB and 1 MB closed loops like (a) and
/// (c), then the delivery latency at [`LATENCY_RATE`].
pub async fn graph_delivery(
    binary: &Path,
    kit: &Testkit,
    scratch: &Path,
    plan: &Plan,
    small: &Arc<Message>,
    large: &Arc<Message>,
) -> Result<GraphRun> {
    let options = GraphOptions::default();
    let requests = 40 + plan.small_messages + plan.large_messages + plan.latency_messages;
    if requests > options.requests_per_window as u64 {
        eprintln!(
            "warning: (i) sends about {requests} messages, one request each, more than the \
             {} per {:?} Graph allows a mailbox: expect 429s (lower --messages)",
            options.requests_per_window, options.request_window
        );
    }
    let graph = kit.start_graph(options).await?;
    let tokens_before = kit.entra.token_requests();
    let mut relay =
        RelayProcess::start_graph(binary, kit, &scratch.join("graph"), &graph.base_url()).await?;
    eprintln!("relay: (i) delivery through the Graph emulator: a relay of its own");
    let outcome = graph_runs(&relay, &graph, kit.mailbox(), plan, small, large).await;
    let problems = relay.problems();
    relay.kill().await;
    graph.shutdown().await;
    let mut run = outcome?;
    run.log_problems = problems.len();
    run.token_requests = kit.entra.token_requests().saturating_sub(tokens_before);
    if let Some(first) = problems.first() {
        eprintln!(
            "relay (i) log: {} WARN/ERROR lines, first: {first}",
            problems.len()
        );
    }
    Ok(run)
}

async fn graph_runs(
    relay: &RelayProcess,
    graph: &FakeGraph,
    mailbox: &str,
    plan: &Plan,
    small: &Arc<Message>,
    large: &Arc<Message>,
) -> Result<GraphRun> {
    let system = System::Graph { relay, graph };
    let target = Target::Plain(relay.smtp);
    let warm = warm_up(&target, small, plan.deadline).await;
    if warm.ok == 0 {
        bail!(
            "(i) warm-up failed: {}\nrelay log:\n{}",
            warm.first_error.unwrap_or_default(),
            relay.log_tail(20)
        );
    }
    if !wait_for(
        || graph.delivered_count() >= warm.ok,
        Duration::from_secs(60),
    )
    .await
    {
        bail!(
            "(i) only {} of {} warm-up messages reached the Graph emulator within 60 s\nrelay \
             log:\n{}",
            graph.delivered_count(),
            warm.ok,
            relay.log_tail(20)
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut run = GraphRun {
        idle_rss_mib: procs::rss_kib(relay.pid).map(mib),
        accepted: warm.ok,
        ..GraphRun::default()
    };
    for (label, count, message, slot) in [
        ("10 KB", plan.small_messages, small, &mut run.small),
        ("1 MB", plan.large_messages, large, &mut run.large),
    ] {
        eprintln!("  graph relay: (i) {label}, one message per connection");
        // `--perf i` records the 10 KB loop only (one data file per letter).
        let recording = if label == "10 KB" {
            plan.perf_start(&system, 'i').await?
        } else {
            None
        };
        let m = closed_scenario(
            &system,
            &target,
            Style::OnePerConnection,
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
                "  graph relay (i) {label}: {} failed transactions, first: {}",
                m.failures,
                m.first_error.as_deref().unwrap_or("?")
            );
        }
        *slot = Some(m);
    }
    run.accepted += [&run.small, &run.large]
        .into_iter()
        .flatten()
        .map(|m| m.accepted)
        .sum::<u64>();
    eprintln!("  graph relay: (i) delivery latency at {LATENCY_RATE} msg/s");
    // The delivered list is copied once (every message, ~0.5 GB after a full run): the
    // latency lookup and the check share that copy.
    let check = std::cell::RefCell::new(None);
    let latency = delivery_latency(
        &target,
        plan.latency_messages,
        "bench-graph",
        plan.deadline,
        || graph.delivered_count(),
        || {
            let delivered = graph.delivered();
            check.replace(check_delivered(&delivered, mailbox, &small.recipient));
            delivered
                .into_iter()
                .filter_map(|m| Some((m.addresses.subject?, m.delivered_at)))
                .collect()
        },
    )
    .await;
    run.delivered_check = check.into_inner();
    run.accepted += latency.accepted;
    run.latency = Some(latency);
    run.delivered = graph.delivered_count();
    let stats = graph.stats();
    run.requests = stats.requests;
    run.throttled = stats.throttled_429;
    run.other_errors = stats
        .errors_by_code
        .iter()
        .filter(|(code, _)| !code.contains("TooManyRequests") && !code.contains("Throttl"))
        .map(|(code, count)| format!("{code} × {count}"))
        .collect();
    run.max_concurrency = graph.max_concurrency(mailbox);
    run.retry_after_violations = graph.retry_after_violations().len();
    Ok(run)
}

/// The SMTP counterpart of (i)'s latency: the main relay, delivering to the fake Exchange
/// (matched by `Message-ID`).
pub async fn smtp_delivery_latency(
    relay: &RelayProcess,
    kit: &Testkit,
    plan: &Plan,
) -> DeliveryLatency {
    delivery_latency(
        &Target::Plain(relay.smtp),
        plan.latency_messages,
        "bench-smtp",
        plan.deadline,
        || kit.exchange.message_count(),
        || {
            kit.exchange
                .messages()
                .into_iter()
                .filter_map(|m| {
                    let id = m.message_id.trim_matches(['<', '>']);
                    Some((id.split_once('@')?.0.to_owned(), m.accepted_at))
                })
                .collect()
        },
    )
    .await
}

/// Open loop: one 10 KB message per connection every `1/LATENCY_RATE` s, `count` in all (or
/// until `deadline`), each tagged `{tag}-{n}` in its Subject and Message-ID; then waits (at
/// most 60 s) for them upstream (`count_upstream`) and matches them by that tag in what
/// `arrivals` returns (tag → when accepted upstream).
async fn delivery_latency(
    target: &Target,
    count: u64,
    tag: &str,
    deadline: Duration,
    count_upstream: impl Fn() -> u64,
    arrivals: impl Fn() -> HashMap<String, SystemTime>,
) -> DeliveryLatency {
    let before = count_upstream();
    let interval = Duration::from_secs_f64(1.0 / LATENCY_RATE);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        if start.elapsed() > deadline {
            break;
        }
        tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
        let key = format!("{tag}-{n}");
        let message = Message::tagged(SMALL, SENDER, &key, &key);
        let target = target.clone();
        tasks.spawn(async move {
            let mut client = Client::open(&target, None).await?.without_pipelining();
            let data_to_250 = client.send(&message).await?;
            let end_of_data = SystemTime::now() - data_to_250;
            client.quit().await;
            Ok::<_, anyhow::Error>((key, end_of_data, data_to_250))
        });
    }
    let mut sent = Vec::new();
    let mut result = DeliveryLatency::default();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(done) => sent.push(done),
            Err(error) => {
                result.failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    if let Some(error) = first_error {
        eprintln!(
            "  delivery latency: {} failed, first: {error}",
            result.failed
        );
    }
    result.accepted = sent.len() as u64;
    let goal = before + result.accepted;
    wait_for(|| count_upstream() >= goal, Duration::from_secs(60)).await;
    let arrived = arrivals();
    let mut to_upstream = Vec::with_capacity(sent.len());
    let mut data_to_250 = Vec::with_capacity(sent.len());
    for (key, end_of_data, data) in sent {
        data_to_250.push(data);
        match arrived.get(&key) {
            Some(at) => to_upstream.push(at.duration_since(end_of_data).unwrap_or_default()),
            None => result.missing += 1,
        }
    }
    result.p50_ms = ms(quantile(&mut to_upstream, 0.50));
    result.p99_ms = ms(quantile(&mut to_upstream, 0.99));
    result.data_p99_ms = ms(quantile(&mut data_to_250, 0.99));
    result
}

/// Every message reached Graph by sendMail with base64 MIME from the account's mailbox, to
/// exactly its one envelope recipient, and no shorter than the 10 KB sent; else what is wrong.
fn check_delivered(
    delivered: &[DeliveredMessage],
    mailbox: &str,
    recipient: &str,
) -> Option<String> {
    let other_path = delivered
        .iter()
        .filter(|m| m.path != SendPath::MimeSendMail)
        .count();
    let wrong_recipients = delivered
        .iter()
        .filter(|m| {
            m.recipients.len() != 1 || m.recipients.first().map(String::as_str) != Some(recipient)
        })
        .count();
    let wrong_mailbox = delivered.iter().filter(|m| m.mailbox != mailbox).count();
    let short = delivered
        .iter()
        .filter(|m| m.raw_mime.as_ref().is_none_or(|mime| mime.len() < SMALL))
        .count();
    (other_path + wrong_recipients + wrong_mailbox + short > 0).then(|| {
        format!(
            "of {} messages, {other_path} not by sendMail with MIME, {wrong_recipients} not to \
             exactly {recipient}, {wrong_mailbox} from another mailbox, {short} shorter than 10 KB",
            delivered.len()
        )
    })
}

/// Polls `done` every 2 ms until it holds or `limit` passed; whether it holds.
async fn wait_for(done: impl Fn() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    done()
}

/// The rows of (i) in the report: (what, value in the relay column, decimals, target).
pub fn rows(
    run: Option<&GraphRun>,
    smtp_latency: Option<&DeliveryLatency>,
    clients: usize,
) -> Vec<(String, Option<f64>, usize, String)> {
    let mut rows = Vec::new();
    let mark = |ok: Option<bool>| match ok {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "? (not measured)",
    };
    for (label, m) in [
        ("10 KB", run.and_then(|r| r.small.as_ref())),
        ("1 MB", run.and_then(|r| r.large.as_ref())),
    ] {
        let what = format!("(i) Graph: {label}, {clients} clients, 1 msg/connection");
        rows.push((
            format!("{what}: durable acceptance, msg/s"),
            m.map(|m| m.accepted_per_s),
            0,
            String::new(),
        ));
        rows.push((
            format!("{what}: end-to-end delivered through Graph, msg/s"),
            m.and_then(|m| m.delivered_per_s),
            0,
            String::new(),
        ));
        rows.push((
            format!("{what}: DATA→250 p99 at saturation, ms"),
            m.map(|m| m.p99_ms),
            2,
            String::new(),
        ));
        rows.push((
            format!("{what}: CPU seconds per 1,000 messages incl. delivery"),
            m.and_then(|m| m.cpu_per_1000),
            2,
            String::new(),
        ));
        rows.push((
            format!("{what}: RSS peak, MiB"),
            m.and_then(|m| m.peak_rss_kib).map(|k| k as f64 / 1024.0),
            1,
            String::new(),
        ));
    }
    for (label, latency) in [
        (
            "Graph (the relay of (i))",
            run.and_then(|r| r.latency.as_ref()),
        ),
        ("SMTP (the main relay, fake Exchange)", smtp_latency),
    ] {
        let what = format!("(i) {label}: end of data → accepted upstream at {LATENCY_RATE} msg/s");
        rows.push((
            format!("{what}, p50 ms"),
            latency.map(|l| l.p50_ms),
            2,
            String::new(),
        ));
        rows.push((
            format!("{what}, p99 ms"),
            latency.map(|l| l.p99_ms),
            2,
            String::new(),
        ));
    }
    rows.push((
        "(i) Graph: RSS idle after warm-up (a relay of its own), MiB".into(),
        run.and_then(|r| r.idle_rss_mib),
        1,
        String::new(),
    ));
    let throttled = run.map(|r| r.throttled);
    rows.push((
        "(i) Graph: 429 answers from the emulator during (i)".into(),
        throttled.map(|t| t as f64),
        0,
        format!("= 0 {}", mark(throttled.map(|t| t == 0))),
    ));
    let concurrency = run.map(|r| r.max_concurrency);
    rows.push((
        "(i) Graph: most requests in flight for the mailbox at once".into(),
        concurrency.map(|c| c as f64),
        0,
        format!("≤ 4 {}", mark(concurrency.map(|c| c <= 4))),
    ));
    rows
}

/// The notes of (i) under the table.
pub fn notes(run: Option<&GraphRun>, smtp_latency: Option<&DeliveryLatency>) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(run) = run {
        for (label, m) in [("10 KB", &run.small), ("1 MB", &run.large)] {
            let Some(m) = m else { continue };
            if m.failures > 0 {
                notes.push(format!(
                    "relay (i) {label}: {} failed transactions (first: {})",
                    m.failures,
                    m.first_error.as_deref().unwrap_or("?")
                ));
            }
            if m.delivered_per_s.is_none() {
                notes.push(format!(
                    "relay (i) {label}: not everything was delivered in time"
                ));
            }
        }
        notes.push(format!(
            "(i) Graph emulator (default limits: 4 concurrent requests per mailbox, 10,000 per \
             10 min): {} messages accepted by the relay, {} delivered, {} requests, {} answered \
             429, {} requests before a Retry-After had passed, other errors: {}; token \
             requests of the Graph relay (its own, scope Graph): {}",
            run.accepted,
            run.delivered,
            run.requests,
            run.throttled,
            run.retry_after_violations,
            if run.other_errors.is_empty() {
                "none".to_owned()
            } else {
                run.other_errors.join(", ")
            },
            run.token_requests
        ));
        notes.push(match &run.delivered_check {
            None => format!(
                "(i) every one of the {} messages reached the Graph emulator by sendMail with \
                 base64 MIME, from the account's mailbox, to exactly its envelope recipient, \
                 none shorter than sent",
                run.delivered
            ),
            Some(problem) => format!("(i) delivery check: {problem}"),
        });
        if run.log_problems > 0 {
            notes.push(format!(
                "the relay of (i) logged {} WARN/ERROR lines",
                run.log_problems
            ));
        }
    }
    for (label, latency) in [
        ("Graph", run.and_then(|r| r.latency.as_ref())),
        ("SMTP", smtp_latency),
    ] {
        let Some(l) = latency else { continue };
        notes.push(format!(
            "(i) {label} latency run: {} accepted (DATA→250 p99 {:.2} ms), {} failed, {} not \
             found upstream within 60 s",
            l.accepted, l.data_p99_ms, l.failed, l.missing
        ));
    }
    notes
}
