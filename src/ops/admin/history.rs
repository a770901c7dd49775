//! The last hour of traffic for the status page: a ring of 60 one-minute slots (accepted,
//! delivered, deferred), filled by a sampler that reads the existing counters once a minute,
//! and a reader of the metrics' text exposition the page uses for its totals.
//!
//! Invariants: the ring never holds more than [`SLOTS`] minutes (fixed memory); a slot is the
//! difference between two readings of monotonic counters, saturating at zero (a counter that
//! went back, which a fresh label cannot cause, never shows as a huge number); nothing here
//! sees message data or a secret, only counter values and their bounded labels.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Minutes kept: one hour.
pub const SLOTS: usize = 60;

/// How often the sampler reads the counters.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(60);

/// One series value: counter totals, or one minute's increase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub accepted: u64,
    pub delivered: u64,
    pub deferred: u64,
}

impl Traffic {
    /// The totals since start, summed over accounts and classes, from `/metrics` text.
    pub fn from_exposition(samples: &[Sample]) -> Traffic {
        Traffic {
            accepted: sum(samples, "smtp_oauth_relay_messages_accepted_total"),
            delivered: sum(samples, "smtp_oauth_relay_messages_delivered_total"),
            deferred: sum(samples, "smtp_oauth_relay_messages_deferred_total"),
        }
    }

    fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            accepted: self.accepted.saturating_sub(earlier.accepted),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            deferred: self.deferred.saturating_sub(earlier.deferred),
        }
    }
}

/// The minute-by-minute ring and the reading it was last computed from.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    minutes: VecDeque<Traffic>,
    last_totals: Option<Traffic>,
}

impl History {
    /// Record a reading of the totals; from the second one on, each adds one minute.
    pub fn record(&self, totals: Traffic) {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = ring.last_totals {
            if ring.minutes.len() == SLOTS {
                ring.minutes.pop_front();
            }
            ring.minutes.push_back(totals.since(last));
        }
        ring.last_totals = Some(totals);
    }

    /// The recorded minutes, oldest first (at most [`SLOTS`]).
    pub fn minutes(&self) -> Vec<Traffic> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.minutes.iter().copied().collect()
    }
}

/// Read the counters now and then once a minute into `history`, until `cancel`.
pub async fn sample(history: Arc<History>, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {
                let samples = parse_exposition(&metrics.encode());
                history.record(Traffic::from_exposition(&samples));
            }
        }
    }
}

/// One line of the metrics' text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Read the samples of an OpenMetrics text exposition (comments skipped; label values
/// unescaped for `\\`, `\"` and `\n`). Lines it cannot read are left out.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(line.get(open + 1..close)?)?,
                &line[close + 1..],
            )
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], Vec::new(), &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        }
        labels.push((key, value));
    }
}

/// The sum of every sample named `name`, as a whole number.
pub fn sum(samples: &[Sample], name: &str) -> u64 {
    let total: f64 = samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum();
    // Counter values are whole and far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = total.max(0.0) as u64;
    whole
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(accepted: u64, delivered: u64, deferred: u64) -> Traffic {
        Traffic {
            accepted,
            delivered,
            deferred,
        }
    }

    #[test]
    fn each_reading_after_the_first_adds_the_minute_increase() {
        let history = History::default();
        history.record(traffic(5, 3, 1));
        assert!(
            history.minutes().is_empty(),
            "the first reading is a baseline"
        );
        history.record(traffic(9, 4, 1));
        history.record(traffic(9, 6, 4));
        assert_eq!(history.minutes(), vec![traffic(4, 1, 0), traffic(0, 2, 3)]);
    }

    #[test]
    fn the_ring_keeps_the_last_hour_only() {
        let history = History::default();
        for minute in 0..=(SLOTS as u64 + 10) {
            history.record(traffic(minute * minute, 0, 0));
        }
        let minutes = history.minutes();
        assert_eq!(minutes.len(), SLOTS);
        // The newest minute is the increase from minute 69 to minute 70.
        assert_eq!(minutes.last().map(|m| m.accepted), Some(70 * 70 - 69 * 69));
        assert_eq!(minutes.first().map(|m| m.accepted), Some(11 * 11 - 10 * 10));
    }

    #[test]
    fn a_counter_going_back_shows_as_zero() {
        let history = History::default();
        history.record(traffic(10, 10, 10));
        history.record(traffic(2, 12, 10));
        assert_eq!(history.minutes(), vec![traffic(0, 2, 0)]);
    }

    #[test]
    fn the_totals_come_from_the_relays_own_counters() {
        let metrics = Metrics::new();
        metrics
            .accepted
            .get_or_create(&Metrics::account("a"))
            .inc_by(2);
        metrics
            .accepted
            .get_or_create(&Metrics::account("b"))
            .inc_by(3);
        metrics
            .delivered
            .get_or_create(&Metrics::account("a"))
            .inc_by(4);
        for class in ["transient", "configuration"] {
            metrics
                .deferred
                .get_or_create(&Metrics::class("a", class))
                .inc();
        }
        let samples = parse_exposition(&metrics.encode());
        assert_eq!(Traffic::from_exposition(&samples), traffic(5, 4, 2));
    }

    #[test]
    fn the_exposition_reader_takes_names_labels_and_values() {
        let text = "# HELP x y\n\
            smtp_oauth_relay_messages_accepted_total{account=\"a\"} 3\n\
            smtp_oauth_relay_messages_accepted_total{account=\"b\"} 4\n\
            smtp_oauth_relay_auth_failures_total 7\n\
            weird{reason=\"say \\\"hi\\\", \\\\ ok\"} 1.5\n\
            broken{reason=\"unterminated} 1\n\
            # EOF\n";
        let samples = parse_exposition(text);
        assert_eq!(sum(&samples, "smtp_oauth_relay_messages_accepted_total"), 7);
        assert_eq!(sum(&samples, "smtp_oauth_relay_auth_failures_total"), 7);
        let weird = samples.iter().find(|s| s.name == "weird");
        assert_eq!(
            weird.and_then(|s| s.label("reason")),
            Some("say \"hi\", \\ ok")
        );
        assert!(samples.iter().all(|s| s.name != "broken"));
    }
}
