//! The status page at `/` of the admin endpoint, on a running relay with one account failing
//! on purpose (its token endpoint and SMTP server refuse connections), a few messages waiting
//! for it, and a message that failed for good with an HTML-injection attempt in its sender
//! and in the server's reply: the page is HTML, names the failing account with its fix,
//! counts the queue as the spool holds it, escapes what came from outside, and wants the
//! token when `token_file` is set. Per account it shows the token's state (valid until, or
//! the last error), the last delivery, since when the account has been failing (the same
//! moment `/metrics` exports) and the days left of its credential (the failing account's
//! secret expires in ten days, computed from the clock). A headless Chromium loads it too (skipped, saying so, when
//! `chromium` is not installed) and keeps a screenshot in `target/test-artefacts/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use common::smtp_client::RawClient;
use common::{Chain, TestRelay, UNREACHABLE_ACCOUNT, eventually};
use smtp_oauth_relay::testkit::TestkitOptions;
use smtp_oauth_relay::vocab::envelope::Envelope;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "5e1d7a-status-page-token-for-the-tests-c3";
/// A sender whose quoted local part is an HTML-injection attempt.
const EVIL_SENDER: &str = "\"<script>alert('from')</script>&\"@contoso.com";
/// The recipient the testkit's Exchange refuses for good, with an injection in its reply.
const REFUSED_RECIPIENT: &str = "gone@fabrikam.example";
const EVIL_REPLY: &str = "550 5.1.10 <img src=x onerror=alert(1)> \"not found\" & gone";
/// Messages sent to the failing account.
const WAITING: usize = 3;

/// One HTTP/1.1 GET of `path` with `extra` header lines; returns (status, head, body).
async fn get(admin: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The failing account's secret expires on this day (today + 10 days, UTC), in so many
/// whole days from now.
fn secret_expiry() -> (String, i64) {
    let now = std::time::SystemTime::now();
    let at = now + Duration::from_secs(10 * 86_400 + 3600);
    let date = humantime::format_rfc3339_seconds(at).to_string()[..10].to_string();
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    let days = (unix(at) / 86_400 * 86_400 - unix(now)).div_euclid(86_400);
    (date, days)
}

/// The testkit's working account "m365" for 127.0.0.0/8, and the failing account "broken"
/// for 127.0.0.2 (the most specific network wins), whose secret expires per [`secret_expiry`].
fn rest() -> String {
    let broken = UNREACHABLE_ACCOUNT
        .replace("name = \"m365\"", "name = \"broken\"")
        .replace("relay@contoso.com", "broken@contoso.com")
        + &format!("client_secret_expires = \"{}\"\n", secret_expiry().0);
    format!(
        "{broken}\n[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"*@contoso.com\"]\n\
         [[network]]\ncidr = \"127.0.0.2/32\"\naccount = \"broken\"\nallowed_senders = [\"*@contoso.com\"]\n"
    )
}

/// A relay with [`WAITING`] messages for the failing account (each tried at least once, so
/// they carry the reason and the fix), two failed messages: one from [`EVIL_SENDER`] and
/// its bounce, and one message delivered by the working account.
async fn relay_with_a_failing_account() -> Chain {
    let chain = Chain::start(TestkitOptions::default(), |_, _| rest()).await;
    chain
        .kit
        .exchange
        .reject_recipient(REFUSED_RECIPIENT, EVIL_REPLY);
    let address = chain.relay.address(0);
    let mut client = RawClient::connect_greeted(address).await;
    client.expect("EHLO app", 250).await;
    let reply = client
        .send_message(
            EVIL_SENDER,
            &[REFUSED_RECIPIENT],
            b"From: x@contoso.com\r\nSubject: <script>alert('subject')</script>\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let reply = client
        .send_message(
            "relay@contoso.com",
            &["someone@fabrikam.example"],
            b"From: relay@contoso.com\r\nSubject: ok\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.expect("QUIT", 221).await;
    let mut client =
        RawClient::connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), address).await;
    assert_eq!(client.reply().await.code, 220);
    client.expect("EHLO printer", 250).await;
    for index in 0..WAITING {
        let reply = client
            .send_message(
                "scanner@contoso.com",
                &["someone@fabrikam.example"],
                format!("Subject: scan {index}\r\n\r\npage\r\n").as_bytes(),
            )
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.expect("RSET", 250).await;
    }
    client.expect("QUIT", 221).await;
    // The refused message fails for good, and so does its bounce (the testkit's Exchange
    // refuses the quoted sender as a recipient); the failing account's messages stay, at
    // least one of them tried.
    let settled = eventually(WAIT, || {
        let queued = chain.relay.queued_envelopes();
        chain.relay.failed_envelopes().len() == 2
            && chain.kit.exchange.message_count() >= 1
            && queued.len() == WAITING
            && queued.iter().all(|e| e.account == "broken")
            && queued.iter().any(|e| e.last_attempt.is_some())
    })
    .await;
    assert!(
        settled,
        "queued {:?}, failed {:?}",
        chain.relay.queued_envelopes(),
        chain.relay.failed_envelopes()
    );
    chain
}

/// (queued never tried, deferred, failed) as the spool holds them.
fn spool_counts(chain: &Chain) -> (usize, usize, usize) {
    let queued: Vec<Envelope> = chain.relay.queued_envelopes();
    let deferred = queued.iter().filter(|e| e.last_attempt.is_some()).count();
    (
        queued.len() - deferred,
        deferred,
        chain.relay.failed_envelopes().len(),
    )
}

/// The number in the element with `id` (`<b id="count-queued">3</b>`).
fn count_in(html: &str, id: &str) -> Option<usize> {
    let start = html.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    html[start..].split('<').next()?.trim().parse().ok()
}

/// The fix the failing account's messages carry (what the log and `queue show` give).
fn fix_of_failing_account(chain: &Chain) -> String {
    chain
        .relay
        .queued_envelopes()
        .into_iter()
        .filter_map(|e| e.last_attempt)
        .max_by_key(|a| a.at)
        .map(|a| a.hint)
        .expect("a tried message")
}

/// The text of the cell `<td … class="{class}">…</td>` in `row`.
fn cell<'a>(row: &'a str, class: &str) -> &'a str {
    row.split(&format!("class=\"{class}\">"))
        .nth(1)
        .and_then(|rest| rest.split("</td>").next())
        .unwrap_or_else(|| panic!("no {class} cell in {row}"))
}

/// The `<tr>` of `account` (from its `data-account` attribute to the end of the row).
fn account_row<'a>(page: &'a str, account: &str) -> &'a str {
    page.split(&format!("data-account=\"{account}\">"))
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for {account}: {page}"))
}

/// `smtp_oauth_relay_account_failing_since_timestamp_seconds` of `account` in `/metrics`.
async fn failing_since_metric(admin: SocketAddr, account: &str) -> u64 {
    let (status, _, metrics) = get(admin, "/metrics", "").await;
    assert_eq!(status, 200);
    let prefix = format!(
        "smtp_oauth_relay_account_failing_since_timestamp_seconds{{account=\"{account}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .parse()
        .unwrap()
}

/// The failing account's token, failing-since and credential cells, and the working account's
/// token, last-delivery and failing-since cells, as `/metrics` and the clock say they must be.
async fn assert_account_state(page: &str, admin: SocketAddr) {
    let broken = account_row(page, "broken");
    let token = cell(broken, "token");
    assert!(
        token.contains("last error") && token.contains("token endpoint unreachable"),
        "{token}"
    );
    let since = failing_since_metric(admin, "broken").await;
    assert!(since > 0);
    let since_text =
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(since))
            .to_string();
    let failing = cell(broken, "failing-since");
    assert!(failing.contains(&since_text), "{since_text} in {failing}");
    let (date, days) = secret_expiry();
    let credential = cell(broken, "credential-expiry");
    assert!(
        credential.contains(&format!("{days} days")) && credential.contains(&date),
        "{credential}"
    );
    assert!(
        cell(broken, "last-delivery").contains("none since"),
        "{broken}"
    );

    let working = account_row(page, "m365");
    assert!(cell(working, "token").contains("valid until"), "{working}");
    let delivered = cell(working, "last-delivery");
    assert!(
        delivered.contains(" ago)") && !delivered.contains("none"),
        "{delivered}"
    );
    assert!(
        cell(working, "failing-since").contains("not failing"),
        "{working}"
    );
    assert_eq!(failing_since_metric(admin, "m365").await, 0);
    assert!(
        cell(working, "credential-expiry").contains("client_secret_expires"),
        "{working}"
    );
}

fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page, read until its counts match the spool read before and after it (a retry can
/// turn a waiting message into a deferred one between two reads); bounded in count.
async fn page_matching_the_spool(
    chain: &Chain,
    admin: SocketAddr,
) -> (String, (usize, usize, usize)) {
    let mut last = String::new();
    for _ in 0..20 {
        let before = spool_counts(chain);
        let (status, head, body) = get(admin, "/", "").await;
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        let after = spool_counts(chain);
        let shown = (
            count_in(&body, "count-queued"),
            count_in(&body, "count-deferred"),
            count_in(&body, "count-failed"),
        );
        if before == after && shown == (Some(before.0), Some(before.1), Some(before.2)) {
            return (body, before);
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("the page's counts never matched the spool: {last}");
}

#[tokio::test]
async fn the_status_page_shows_the_failing_account_its_fix_and_the_queue_escaped() {
    let chain = relay_with_a_failing_account().await;
    let admin = chain.relay.relay.admin_address().unwrap();
    let fix = fix_of_failing_account(&chain);
    let (page, counts) = page_matching_the_spool(&chain, admin).await;
    assert_eq!(counts.0 + counts.1, WAITING);
    assert_eq!(counts.2, 2);

    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("<meta name=\"viewport\""));
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"15\">"));
    assert!(page.contains("<svg") || page.contains("The chart fills in"));
    // No external asset and no script of its own.
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));

    // Both accounts, the failing one with its mailbox, failing state, fix and waiting count.
    let broken_row = page
        .split("<tr class=\"account\" data-account=\"broken\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("a row for the failing account");
    assert!(broken_row.contains("broken@contoso.com"), "{broken_row}");
    assert!(broken_row.contains("failing for"), "{broken_row}");
    assert!(
        broken_row.contains(&html_escaped(&fix)),
        "fix {fix:?} in {broken_row}"
    );
    assert!(
        broken_row.contains(&format!("class=\"waiting\">{WAITING}</td>")),
        "{broken_row}"
    );
    assert!(page.contains("data-account=\"m365\""), "{page}");
    let m365_transport = cell(account_row(&page, "m365"), "transport");
    assert!(
        m365_transport.starts_with("SMTP") && m365_transport.contains(&chain.kit.smtp_server()),
        "{m365_transport}"
    );
    assert_account_state(&page, admin).await;
    // A reload neither hides nor restarts the failing streak.
    let since = failing_since_metric(admin, "broken").await;
    chain.relay.reload(&chain.toml).await.unwrap();
    assert_eq!(failing_since_metric(admin, "broken").await, since);
    // The deferred messages link to their detail.
    let deferred_id = chain
        .relay
        .queued_envelopes()
        .into_iter()
        .find(|e| e.last_attempt.is_some())
        .map(|e| e.id)
        .unwrap();
    assert!(
        page.contains(&format!("href=\"/queue/{deferred_id}\"")),
        "{page}"
    );

    // The failure: sender, recipient, reply escaped, never raw.
    assert!(page.contains(&html_escaped(EVIL_SENDER)), "{page}");
    assert!(page.contains(&html_escaped(EVIL_REPLY)), "{page}");
    assert!(page.contains(REFUSED_RECIPIENT));
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("alert('from')"), "{page}");
    // The subject is message content: never on the page.
    assert!(!page.contains("subject')"), "{page}");
    chain.relay.stop().await;
}

#[tokio::test]
async fn a_graph_account_shows_its_transport_and_the_graph_host() {
    let chain = common::graph::graph_chain("", |_, _, _| String::new()).await;
    let admin = chain.relay.relay.admin_address().unwrap();
    let (status, _, page) = get(admin, "/", "").await;
    assert_eq!(status, 200);
    let transport = cell(account_row(&page, "m365"), "transport");
    let host = chain.graph.base_url().replace("https://", "");
    assert!(
        transport.starts_with("Graph") && transport.contains(&format!("microsoft · {host}")),
        "{transport} should name Graph and {host}"
    );
    chain.relay.stop().await;
}

#[tokio::test]
async fn with_a_token_file_the_status_page_wants_the_token() {
    let files = tempfile::tempdir().unwrap();
    let token_file = files.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let relay = TestRelay::start(&format!(
        "[relay]\nhostname = \"relay.test\"\nstate_dir = \"{{state}}\"\n{UNREACHABLE_ACCOUNT}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[network]]\ncidr = \"127.0.0.0/8\"\naccount = \"m365\"\nallowed_senders = [\"relay@contoso.com\"]\n\
         [admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token_file.display()
    ))
    .await;
    let admin = relay.relay.admin_address().unwrap();
    let (status, head, body) = get(admin, "/", "").await;
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(!body.contains("relay@contoso.com"), "{body}");
    let (status, _, body) = get(
        admin,
        "/",
        &format!("Authorization: Bearer wrong-{TOKEN}\r\n"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = get(admin, "/", &format!("Authorization: Bearer {TOKEN}\r\n")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("relay@contoso.com"), "{body}");
    // The probes stay open.
    assert_eq!(get(admin, "/healthz", "").await.0, 200);
    assert_eq!(get(admin, "/metrics", "").await.0, 200);
    relay.stop().await;
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    })
}

/// Run chromium headless with `arguments` (bounded in time); returns its stdout.
async fn run_chromium(binary: &PathBuf, profile: &std::path::Path, arguments: &[String]) -> String {
    let mut command = tokio::process::Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(arguments)
        .env("HOME", profile)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium finishes in time")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_real_browser_renders_the_failing_account_and_the_queue() {
    let Some(browser) = chromium() else {
        println!(
            "SKIPPED: chromium not found (install Debian's chromium package to run this test)"
        );
        return;
    };
    let chain = relay_with_a_failing_account().await;
    let admin = chain.relay.relay.admin_address().unwrap();
    let fix = fix_of_failing_account(&chain);
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{admin}/");

    let mut matched = None;
    for _ in 0..5 {
        let before = spool_counts(&chain);
        let dom = run_chromium(
            &browser,
            profile.path(),
            &["--dump-dom".into(), url.clone()],
        )
        .await;
        let after = spool_counts(&chain);
        let shown = (
            count_in(&dom, "count-queued"),
            count_in(&dom, "count-deferred"),
            count_in(&dom, "count-failed"),
        );
        if before == after && shown == (Some(before.0), Some(before.1), Some(before.2)) {
            matched = Some(dom);
            break;
        }
    }
    let dom = matched.expect("the rendered counts match the spool");
    let broken_row = dom
        .split("data-account=\"broken\">")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the failing account is rendered");
    // The DOM serializer escapes only what text needs (&, <, >): compare on those.
    let fix_in_dom = fix
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        broken_row.contains(&fix_in_dom),
        "fix {fix:?} in {broken_row}"
    );
    assert!(broken_row.contains("failing for"), "{broken_row}");
    // Token state, failing since, last delivery and credential expiry, as rendered.
    assert_account_state(&dom, admin).await;
    // The injection stayed text: no element came from it.
    assert!(!dom.contains("<img"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");

    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let screenshot = artefacts.join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    // STATUS_PAGE_WINDOW=--window-size=390,1800 takes the screenshot at a phone's width.
    run_chromium(
        &browser,
        profile.path(),
        &[
            format!("--screenshot={}", screenshot.display()),
            std::env::var("STATUS_PAGE_WINDOW")
                .unwrap_or_else(|_| "--window-size=1280,1600".into()),
            url,
        ],
    )
    .await;
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    println!("screenshot kept at {}", screenshot.display());
    chain.relay.stop().await;
}
