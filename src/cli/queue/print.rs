//! How the `queue` commands show their answers: a table for listings, a field per line for
//! one message, a sentence for changes; `--json` prints the admin endpoint's JSON as is.

use serde_json::Value;

use super::QueueCommand;

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b}B"),
        b if b < 1024 * 1024 => format!("{:.1}K", b as f64 / 1024.0),
        b => format!("{:.1}M", b as f64 / (1024.0 * 1024.0)),
    }
}

pub(super) fn print(command: &QueueCommand, value: &Value, json: bool) {
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
        return;
    }
    match command {
        QueueCommand::List | QueueCommand::Failed => {
            let entries = value.as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                crate::outln!(
                    "{}",
                    if matches!(command, QueueCommand::List) {
                        "the queue is empty"
                    } else {
                        "no failed messages"
                    }
                );
                return;
            }
            crate::outln!(
                "{:<16}  {:>6}  {:>7}  {:>3}  {:<8}  SENDER -> RECIPIENTS / LAST REPLY",
                "ID",
                "AGE",
                "SIZE",
                "TRY",
                "NEXT"
            );
            for entry in &entries {
                print_entry(entry, matches!(command, QueueCommand::Failed));
            }
            crate::outln!("{} message(s)", entries.len());
        }
        QueueCommand::Show { .. } => print_details(value),
        QueueCommand::Retry { .. } => crate::outln!(
            "retry scheduled for {} message(s)",
            value["retried"].as_u64().unwrap_or(0)
        ),
        QueueCommand::Delete { id } => crate::outln!("deleted {id}"),
        QueueCommand::Requeue { .. } => {
            crate::outln!(
                "{} message(s) back in the queue, due now",
                value["requeued"].as_u64().unwrap_or(0)
            );
            for error in value["errors"].as_array().into_iter().flatten() {
                crate::outln!("not requeued: {}", error.as_str().unwrap_or_default());
            }
        }
        // Written by `export` itself.
        QueueCommand::Export { .. } => {}
    }
}

/// `queue show`: one message, a field per line.
fn print_details(entry: &Value) {
    let text = |pointer: &str| {
        entry
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let number = |pointer: &str| entry.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let list = |key: &str| {
        entry[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let sender = text("/sender");
    let next = if entry["in_flight"].as_bool() == Some(true) {
        "being delivered now".to_string()
    } else {
        match number("/next_attempt_in_s") {
            0 => "now".to_string(),
            s => format!("in {}", human_duration(s)),
        }
    };
    crate::outln!("id:            {}", text("/id"));
    crate::outln!("account:       {}", text("/account"));
    crate::outln!("client:        {}", text("/client"));
    crate::outln!("sender:        <{sender}>");
    crate::outln!("recipients:    {}", list("recipients"));
    if !list("delivered").is_empty() {
        crate::outln!("delivered to:  {}", list("delivered"));
    }
    crate::outln!("size:          {}", human_size(number("/size")));
    crate::outln!("age:           {}", human_duration(number("/age_s")));
    crate::outln!("attempts:      {}", number("/attempts"));
    crate::outln!("next attempt:  {next}");
    if entry["last_attempt"].is_object() {
        crate::outln!(
            "last attempt:  {} at {}: {}",
            text("/last_attempt/class"),
            text("/last_attempt/stage"),
            text("/last_attempt/reply")
        );
        let hint = text("/last_attempt/hint");
        if !hint.is_empty() {
            crate::outln!("what to do:    {hint}");
        }
    }
}

fn print_entry(entry: &Value, failed: bool) {
    let recipients: Vec<String> = entry["recipients"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let first = recipients.first().cloned().unwrap_or_default();
    let more = if recipients.len() > 1 {
        format!(" (+{})", recipients.len() - 1)
    } else {
        String::new()
    };
    let next = if failed {
        "failed".to_string()
    } else if entry["in_flight"].as_bool() == Some(true) {
        "sending".to_string()
    } else {
        match entry["next_attempt_in_s"].as_u64().unwrap_or(0) {
            0 => "now".to_string(),
            s => format!("in {}", human_duration(s)),
        }
    };
    crate::outln!(
        "{:<16}  {:>6}  {:>7}  {:>3}  {:<8}  {} -> {first}{more}",
        entry["id"].as_str().unwrap_or(""),
        human_duration(entry["age_s"].as_u64().unwrap_or(0)),
        human_size(entry["size"].as_u64().unwrap_or(0)),
        entry["attempts"].as_u64().unwrap_or(0),
        next,
        entry["sender"]
            .as_str()
            .map(|s| if s.is_empty() { "<>" } else { s })
            .unwrap_or("<>"),
    );
    let reason = if failed {
        entry
            .pointer("/failures/0/reply")
            .and_then(Value::as_str)
            .map(str::to_string)
    } else {
        entry["last_attempt"].as_object().map(|a| {
            format!(
                "{} at {}: {}",
                a.get("class").and_then(Value::as_str).unwrap_or(""),
                a.get("stage").and_then(Value::as_str).unwrap_or(""),
                a.get("reply").and_then(Value::as_str).unwrap_or("")
            )
        })
    };
    if let Some(reason) = reason {
        crate::outln!(
            "{:<16}  {}",
            "",
            crate::vocab::text::one_line_excerpt(&reason, 160)
        );
    }
}
