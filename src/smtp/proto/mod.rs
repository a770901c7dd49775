//! Pure SMTP protocol code: command parsing, addresses, command-line framing, the DATA
//! receiver and reply formatting. No tokio, no I/O, no clock; every function is total (never
//! panics on any input) and every buffer is bounded. Fuzzed from `fuzz/`.

pub mod command;
pub mod data;
pub mod line;
pub mod reply;
