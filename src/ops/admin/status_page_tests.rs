//! Table tests of the status page's pure parts: escaping, ages, the chart, the caps on
//! what one page lists.

use super::*;

#[test]
fn escape_makes_untrusted_text_inert() {
    let cases = [
        ("plain@example.com", "plain@example.com"),
        (
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ),
        ("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;"),
        ("a & b &amp;", "a &amp; b &amp;amp;"),
        ("\" onmouseover=\"x", "&quot; onmouseover=&quot;x"),
        ("", ""),
        ("550 5.7.1 ünïcode", "550 5.7.1 ünïcode"),
    ];
    for (input, expected) in cases {
        assert_eq!(escape(input), expected, "escaping {input:?}");
    }
}

#[test]
fn ages_read_well() {
    let cases = [
        (0, "0s"),
        (59, "59s"),
        (60, "1m 0s"),
        (3599, "59m 59s"),
        (3600, "1h 0m"),
        (90061, "1d 1h"),
    ];
    for (seconds, expected) in cases {
        assert_eq!(age(seconds), expected);
    }
}

#[test]
fn the_chart_draws_one_point_per_minute_within_the_box() {
    let minutes: Vec<Traffic> = (0..5)
        .map(|i| Traffic {
            accepted: i * 10,
            delivered: i,
            deferred: 0,
        })
        .collect();
    let mut out = String::new();
    chart_section(&mut out, &minutes);
    assert!(out.contains("<svg"), "{out}");
    assert_eq!(out.matches("<polyline").count(), 3);
    assert!(!out.contains("<script"));
    let accepted = out
        .split("class=\"accepted\"")
        .nth(1)
        .and_then(|rest| rest.split("points=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    let points: Vec<(u64, u64)> = accepted
        .split(' ')
        .filter_map(|p| p.split_once(','))
        .filter_map(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
        .collect();
    assert_eq!(points.len(), 5);
    assert!(
        points
            .iter()
            .all(|&(x, y)| x <= CHART_WIDTH && y <= CHART_HEIGHT)
    );
    // The busiest minute is the highest point (smallest y); the last slot is at the right edge.
    assert_eq!(points.last().map(|p| p.0), Some(CHART_WIDTH));
    assert!(points[4].1 < points[0].1);
    assert!(out.contains("accepted 100"));
}

fn envelope(id: &str, recipients: usize, reply: &str) -> Envelope {
    use crate::vocab::address::Address;
    let address =
        |n: usize| Address::parse(&format!("r{n}@example.com")).unwrap_or_else(|e| panic!("{e}"));
    let mut envelope = Envelope::new(
        "m365",
        Some(address(0)),
        (0..recipients).map(address).collect(),
        crate::vocab::envelope::ClientInfo {
            peer: "127.0.0.1:1".into(),
            helo: None,
            principal: "network 127.0.0.0/8".into(),
        },
        1_000,
    );
    envelope.id = id.to_string();
    envelope.failures = envelope
        .recipients
        .iter()
        .map(|recipient| crate::vocab::envelope::FailedRecipient {
            recipient: recipient.clone(),
            at: 1_000,
            class: "permanent".into(),
            stage: "rcpt".into(),
            reply: reply.into(),
            hint: "fix".into(),
        })
        .collect();
    envelope.last_attempt = Some(crate::vocab::envelope::LastAttempt {
        at: 1_000,
        class: "transient".into(),
        stage: "data-end".into(),
        reply: reply.into(),
        hint: "wait".into(),
    });
    envelope
}

fn snapshot(queued: Vec<Envelope>, failed: Vec<Envelope>) -> Snapshot {
    Snapshot {
        now: 2_000,
        queued,
        failed,
        listing_errors: Vec::new(),
        samples: Vec::new(),
        minutes: Vec::new(),
    }
}

#[test]
fn a_page_lists_at_most_the_newest_failures_and_a_few_recipients_each() {
    let failed: Vec<Envelope> = (0..FAILURES_SHOWN + 7)
        .map(|n| envelope(&format!("F{n:03}"), RECIPIENTS_SHOWN + 3, "550 gone"))
        .collect();
    let mut out = String::new();
    failures_section(&mut out, &snapshot(Vec::new(), failed));
    assert_eq!(
        out.matches("<tr class=\"failure\">").count(),
        FAILURES_SHOWN * RECIPIENTS_SHOWN
    );
    assert_eq!(out.matches("and 3 more recipients").count(), FAILURES_SHOWN);
    assert!(out.contains(&format!("of {} failed messages", FAILURES_SHOWN + 7)));
}

#[test]
fn deferred_messages_group_by_reply_the_commonest_first_and_capped() {
    let mut queued = Vec::new();
    for reason in 0..REASONS_SHOWN + 4 {
        for copy in 0..=usize::from(reason == 7) * 2 {
            queued.push(envelope(
                &format!("Q{reason}-{copy}"),
                1,
                &format!("451 reason {reason}"),
            ));
        }
    }
    let mut out = String::new();
    queue_section(&mut out, &snapshot(queued, Vec::new()));
    assert_eq!(
        out.matches("<tr class=\"deferred-reason\">").count(),
        REASONS_SHOWN
    );
    assert!(out.contains("and 4 rarer reasons"), "{out}");
    let first = out
        .split("<tr class=\"deferred-reason\">")
        .nth(1)
        .unwrap_or_default();
    assert!(
        first.contains(">3</td>") && first.contains("451 reason 7"),
        "{first}"
    );
    assert!(
        out.contains(
            "id=\"count-deferred\">{}</b>"
                .replace("{}", &(REASONS_SHOWN + 6).to_string())
                .as_str()
        )
    );
}
