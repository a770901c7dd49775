//! Scenario (h) of the benchmark: AUTH PLAIN for every message (issue 10), with the relay's
//! memory of proven credentials and without it, each half on a relay process of its own.
//!
//! Invariant: it measures AUTH only if its clients' source addresses are trusted by no
//! `[[network]]`, which is checked before each half (MAIL without AUTH must get `530`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use smtp_oauth_relay::testkit::Testkit;

use crate::relay::{self, RelayProcess};
use crate::report::{AuthRun, AuthRuns};
use crate::smtp::{Client, Message, Style, Target, Timing};
use crate::{Plan, SENDER, System, closed_scenario, mib, procs, wait_delivered, warm_up};

/// (h): each client connects from its own untrusted address, EHLO, AUTH PLAIN as the bench's
/// `[[user]]`, one 10 KB message, QUIT. Twice, each on a fresh relay process warmed up like the
/// main one: with the relay's memory of proven credentials (the default `auth_cache_ttl`), and
/// with `auth_cache_ttl = "0s"`. (Not one relay reloaded in between: a reload leaves the
/// relay 19 MiB larger, which would be counted against the AUTH load.)
pub async fn auth_per_message(
    binary: &Path,
    kit: &Testkit,
    scratch: &Path,
    plan: &Plan,
    message: &Arc<Message>,
) -> Result<AuthRuns> {
    let mut runs = Vec::new();
    for (ttl, count, label) in [
        (None, plan.small_messages, "credential cache on (default)"),
        (
            Some("0s"),
            plan.uncached_auth_messages,
            "credential cache off (auth_cache_ttl = \"0s\")",
        ),
    ] {
        let dir = scratch.join(if ttl.is_some() {
            "auth-cache-off"
        } else {
            "auth-cache-on"
        });
        let mut relay = RelayProcess::start(binary, kit, &dir, ttl).await?;
        eprintln!("relay: (h) 10 KB, AUTH PLAIN per message, {label}: a relay of its own");
        let outcome = auth_half(&relay, kit, plan, count, message).await;
        let problems = relay.problems();
        relay.kill().await;
        let mut run = outcome?;
        run.log_problems = problems.len();
        if let Some(first) = problems.first() {
            eprintln!(
                "relay (h) log: {} WARN/ERROR lines, first: {first}",
                problems.len()
            );
        }
        runs.push(run);
    }
    let mut runs = runs.into_iter();
    match (runs.next(), runs.next()) {
        (Some(cached), Some(uncached)) => Ok(AuthRuns { cached, uncached }),
        _ => bail!("scenario (h) did not run both halves"),
    }
}

/// One half of (h) on `relay`: warm-up, idle RSS, the closed loop, the relay's AUTH counters.
async fn auth_half(
    relay: &RelayProcess,
    kit: &Testkit,
    plan: &Plan,
    count: u64,
    message: &Arc<Message>,
) -> Result<AuthRun> {
    let system = System::Relay { relay, kit };
    untrusted_source_check(relay).await?;
    let delivered = kit.exchange.message_count();
    let warm = warm_up(&Target::Plain(relay.smtp), message, plan.deadline).await;
    if warm.ok == 0 {
        bail!(
            "(h) warm-up failed: {}\nrelay log:\n{}",
            warm.first_error.unwrap_or_default(),
            relay.log_tail(20)
        );
    }
    wait_delivered(kit, delivered + warm.ok, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_mib = procs::rss_kib(relay.pid).map(mib);
    let target = Target::PlainAuth {
        addr: relay.auth_smtp,
        username: relay::AUTH_USERNAME.to_owned(),
        password: relay::AUTH_PASSWORD.to_owned(),
        first_source: relay::AUTH_FIRST_SOURCE,
    };
    let successes = relay.counter(AUTH_SUCCESSES).await?;
    let hits = relay.counter(AUTH_CACHE_HITS).await?;
    let recording = plan.perf_start(&system, 'h').await?;
    let measured = closed_scenario(
        &system,
        &target,
        Style::OnePerConnection,
        Timing::WholeConnection,
        plan.clients,
        count,
        message,
        plan.deadline,
    )
    .await;
    plan.perf_stop(recording).await;
    if measured.failures > 0 {
        eprintln!(
            "  relay (h): {} failed transactions, first: {}",
            measured.failures,
            measured.first_error.as_deref().unwrap_or("?")
        );
    }
    let logins = relay
        .counter(AUTH_SUCCESSES)
        .await?
        .saturating_sub(successes);
    let from_memory = relay.counter(AUTH_CACHE_HITS).await?.saturating_sub(hits);
    Ok(AuthRun {
        measured,
        idle_rss_mib,
        logins,
        from_memory,
        log_problems: 0,
    })
}

const AUTH_SUCCESSES: &str = "smtp_oauth_relay_auth_successes_total";
const AUTH_CACHE_HITS: &str = "smtp_oauth_relay_auth_cache_hits_total";

/// (h) measures what it should only if its source addresses are trusted by no `[[network]]`:
/// a client from there that has not authenticated must get `530` at MAIL.
async fn untrusted_source_check(relay: &RelayProcess) -> Result<()> {
    let mut client = Client::open(
        &Target::Plain(relay.auth_smtp),
        Some(IpAddr::V4(relay::AUTH_FIRST_SOURCE)),
    )
    .await
    .context("connect from scenario (h)'s source address")?;
    let reply = client.mail_from_reply(SENDER).await?;
    client.quit().await;
    if reply.code != 530 {
        bail!(
            "MAIL without AUTH from {} got {} {} instead of 530: that address is trusted, (h) \
             would not measure AUTH",
            relay::AUTH_FIRST_SOURCE,
            reply.code,
            reply.text
        );
    }
    Ok(())
}
