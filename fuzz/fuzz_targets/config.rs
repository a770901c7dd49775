//! Fuzzes configuration loading (`config::Config::from_toml`) on arbitrary UTF-8. Checks:
//! it never panics; every error carries a message; a config that loads keeps its limits
//! inside the validated ranges.
//!
//! Relative paths resolve against a base directory that does not exist, so they never reach a
//! real file. Validation only ever reads files (client_secret_file, ca_file, certificates), it
//! never writes; to keep the run bounded, inputs naming device or kernel files (`/dev`,
//! `/proc`, `/sys`, which can block or never end) or using TOML unicode escapes next to a path
//! key (which could spell those names) are skipped.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::config::Config;

const BASE: &str = "/nonexistent/smtp-oauth-relay-fuzz/base";

fn skipped(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["/dev", "/proc", "/sys", "/run", "..", "fifo"]
        .iter()
        .any(|needle| lower.contains(needle))
        || (lower.contains("\\u") && lower.contains('/'))
        || (lower.contains("\\u")
            && ["file", "certificate", "private_key"]
                .iter()
                .any(|key| lower.contains(key)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if skipped(text) {
        return;
    }
    match Config::from_toml(text, Path::new(BASE)) {
        Ok(config) => {
            assert!((512..=65536).contains(&config.limits.max_line_length));
            assert!(config.limits.max_header_size > 0);
            let _ = format!("{config:?}");
        }
        Err(errors) => {
            let rendered = errors.to_string();
            assert!(!rendered.is_empty());
        }
    }
});
