//! Explaining failed token requests: turns the HTTP status and body of a refused Microsoft Entra
//! client-credentials request into a retry decision and one log line that says what broke and
//! which admin setting fixes it (`exchange-online.md` §1.5 and §1.6).
//!
//! Invariants:
//! - Pure: no I/O, no clock; every function is total and never panics, whatever the body holds.
//! - Branching follows Microsoft's advice: on the OAuth `error` value, the first of
//!   `error_codes` and the HTTP status, never on `error_description`. The only exception is the
//!   fallback that reads a leading `AADSTSnnnn:` from the description when `error_codes` is absent.
//! - Text that came from the network is shown to the operator only as one sanitised line of
//!   bounded length (no line breaks or control characters), so a log line stays one line.
//!   Entra never echoes the client secret; its descriptions may name the client id.
//! - Retry: HTTP 5xx, 408, 429, `temporarily_unavailable` and a few AADSTS codes (throttling,
//!   loop detection, transient STS errors) back off; any other 4xx is a configuration fault
//!   ([`TokenRetry::Never`]). A body that is not an Entra error (an HTML proxy page, say) is
//!   unknown and therefore retried. Network errors, which have no HTTP answer, are the caller's
//!   and always back off.

mod codes;
#[cfg(test)]
mod tests;

use crate::vocab::text::one_line_excerpt;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer};

/// How a failed token request should be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRetry {
    /// A configuration fault: it clears only after an admin fixes it. Keep mail queued, alert and
    /// retry slowly; the caller decides the pace.
    Never,
    /// Transient or throttled: retry with exponential back-off.
    Backoff,
}

/// What one AADSTS code means for this relay and what the admin should change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AadstsExplanation {
    /// The AADSTS number, without the `AADSTS` prefix.
    pub code: u32,
    /// What went wrong, in plain words (a lowercase fragment, no final period).
    pub meaning: &'static str,
    /// What to change: the Entra admin center location and the relay config key.
    pub fix: &'static str,
    /// Whether the relay may retry by itself.
    pub retry: TokenRetry,
}

/// Looks up the explanation for one AADSTS code.
pub fn explain(code: u32) -> Option<&'static AadstsExplanation> {
    codes::EXPLANATIONS.iter().find(|entry| entry.code == code)
}

/// Every AADSTS code this module explains (for diagnostics output and tests).
pub fn known_codes() -> &'static [AadstsExplanation] {
    codes::EXPLANATIONS
}

/// Longest piece of `error_description` shown to an operator, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 300;
/// Longest excerpt of an unexpected (non-Entra) body shown to an operator, in characters.
const MAX_BODY_EXCERPT_CHARS: usize = 100;
/// Longest short field (`error`, ids, timestamp) shown to an operator, in characters.
const MAX_FIELD_CHARS: usize = 64;

/// The decoded Microsoft identity platform error body (§1.5). Only `error` is required; unknown
/// fields are ignored because Microsoft adds fields over time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TokenErrorBody {
    /// The OAuth error class, e.g. `invalid_client` or `temporarily_unavailable`.
    pub error: String,
    /// Human text; its first line starts with `AADSTSnnnn:`. Shown, never branched on.
    #[serde(default)]
    pub error_description: Option<String>,
    /// AADSTS numbers; the first one is the one that matters.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub error_codes: Vec<u32>,
    /// Identifies the request for Microsoft support.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// Identifies the request for Microsoft support.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// When Entra answered, e.g. `2026-01-09 02:02:12Z`.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Microsoft's lookup page for the code.
    #[serde(default)]
    pub error_uri: Option<String>,
}

/// Accepts `"error_codes": null` as an empty list.
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
    Ok(Option::<Vec<u32>>::deserialize(deserializer)?.unwrap_or_default())
}

impl TokenErrorBody {
    /// The AADSTS code: `error_codes[0]`, or else the number in a leading `AADSTSnnnn:` of
    /// `error_description`.
    pub fn primary_code(&self) -> Option<u32> {
        self.error_codes.first().copied().or_else(|| {
            self.error_description
                .as_deref()
                .and_then(code_in_description)
        })
    }

    /// The first line of `error_description` (Entra puts trace ids on later lines), trimmed and
    /// cut to [`MAX_DESCRIPTION_CHARS`] characters; empty when there is no description.
    pub fn first_line_of_description(&self) -> &str {
        truncate_chars(self.whole_first_line(), MAX_DESCRIPTION_CHARS).0
    }

    /// The first line of `error_description`, trimmed but not cut.
    fn whole_first_line(&self) -> &str {
        let description = self.error_description.as_deref().unwrap_or("");
        description.lines().next().unwrap_or("").trim()
    }
}

/// Reads `nnnn` from a description that starts with `AADSTSnnnn` followed by `:`, a space or
/// the end.
fn code_in_description(description: &str) -> Option<u32> {
    let rest = description.trim_start().strip_prefix("AADSTS")?;
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, after) = rest.split_at(digits_end);
    let well_terminated = after.is_empty() || after.starts_with(':') || after.starts_with(' ');
    if digits.is_empty() || !well_terminated {
        return None;
    }
    digits.parse().ok()
}

/// What the token endpoint sent back, as far as it could be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A Microsoft identity platform error body.
    Entra(TokenErrorBody),
    /// Valid JSON without an `error` string: a gateway's own error format.
    OtherJson { excerpt: String },
    /// Not JSON at all: an HTML proxy page, plain text or nothing.
    NotJson { excerpt: String },
}

/// The whole verdict on a failed token request: the HTTP status and the decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraRefusal {
    http_status: u16,
    answer: Answer,
}

impl EntraRefusal {
    /// Decodes a failed token response. Never fails: a body that is not an Entra error is kept
    /// as a short sanitised excerpt and still explained.
    pub fn from_response(http_status: u16, body: &str) -> Self {
        let answer = match serde_json::from_str::<TokenErrorBody>(body) {
            Ok(decoded) => Answer::Entra(decoded),
            Err(_) if serde_json::from_str::<serde_json::Value>(body).is_ok() => {
                Answer::OtherJson {
                    excerpt: one_line_excerpt(body, MAX_BODY_EXCERPT_CHARS),
                }
            }
            Err(_) => Answer::NotJson {
                excerpt: one_line_excerpt(body, MAX_BODY_EXCERPT_CHARS),
            },
        };
        Self {
            http_status,
            answer,
        }
    }

    /// The HTTP status the token endpoint answered with.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The decoded Entra error body, when the body was one.
    pub fn body(&self) -> Option<&TokenErrorBody> {
        match &self.answer {
            Answer::Entra(body) => Some(body),
            Answer::OtherJson { .. } | Answer::NotJson { .. } => None,
        }
    }

    /// The AADSTS code, when Entra sent one.
    pub fn code(&self) -> Option<u32> {
        self.body().and_then(TokenErrorBody::primary_code)
    }

    /// The table entry for the AADSTS code, when the code is known.
    pub fn explanation(&self) -> Option<&'static AadstsExplanation> {
        self.code().and_then(explain)
    }

    /// Whether the relay may retry by itself (see the module docs for the rules).
    pub fn retry(&self) -> TokenRetry {
        if status_is_transient(self.http_status) {
            return TokenRetry::Backoff;
        }
        let Some(body) = self.body() else {
            return TokenRetry::Backoff;
        };
        if body.error == "temporarily_unavailable" {
            return TokenRetry::Backoff;
        }
        if let Some(known) = self.explanation() {
            return known.retry;
        }
        if (400..500).contains(&self.http_status) {
            TokenRetry::Never
        } else {
            TokenRetry::Backoff
        }
    }

    /// One log line: the AADSTS code, what it means, what to change, and the ids Microsoft
    /// support asks for.
    pub fn operator_message(&self) -> String {
        let verb = match self.retry() {
            TokenRetry::Never => "token request refused",
            TokenRetry::Backoff => "token request failed, will retry",
        };
        let status = self.http_status;
        match &self.answer {
            Answer::Entra(body) => self.entra_message(verb, body),
            Answer::OtherJson { excerpt } => {
                let (what, fix) = unexpected_answer_hint(status);
                format!(
                    "{verb}: the token endpoint answered HTTP {status} with JSON that is not an \
                     Entra error response; {what} Body starts: \"{excerpt}\". Fix: {fix}."
                )
            }
            Answer::NotJson { excerpt } if excerpt.is_empty() => {
                let (what, fix) = unexpected_answer_hint(status);
                format!(
                    "{verb}: the token endpoint answered HTTP {status} with an empty body; \
                     {what} Fix: {fix}."
                )
            }
            Answer::NotJson { excerpt } => {
                let (what, fix) = unexpected_answer_hint(status);
                format!(
                    "{verb}: the token endpoint answered HTTP {status} with a non-JSON body; \
                     {what} Body starts: \"{excerpt}\". Fix: {fix}."
                )
            }
        }
    }

    /// The message for a decoded Entra error body.
    fn entra_message(&self, verb: &str, body: &TokenErrorBody) -> String {
        let error = one_line_excerpt(&body.error, MAX_FIELD_CHARS);
        let mut line = format!("{verb} (HTTP {}): ", self.http_status);
        if let Some(code) = body.primary_code() {
            let _ = write!(line, "AADSTS{code} ");
        }
        line.push_str(&error);
        let description = one_line_excerpt(body.whole_first_line(), MAX_DESCRIPTION_CHARS);
        match self.explanation() {
            Some(known) => {
                let _ = write!(line, " — {}.", known.meaning);
                if !description.is_empty() {
                    let _ = write!(line, " Entra said: \"{description}\".");
                }
                let _ = write!(line, " Fix: {}.", known.fix);
            }
            None => {
                if body.primary_code().is_some() {
                    line.push_str(" — an error code this relay does not know.");
                } else {
                    line.push('.');
                }
                if !description.is_empty() {
                    let _ = write!(line, " Entra said: \"{description}\".");
                }
                let _ = write!(line, " Fix: {}", hint_for_error_class(&body.error));
                if let Some(code) = body.primary_code() {
                    let _ = write!(
                        line,
                        "; Microsoft explains the code at \
                         https://login.microsoftonline.com/error?code={code}"
                    );
                }
                line.push('.');
            }
        }
        let ids = support_ids(body);
        if !ids.is_empty() {
            let _ = write!(line, " [{ids}]");
        }
        line
    }
}

/// HTTP statuses that are retried whatever the body says (Microsoft: 5xx and 429; 408 is a
/// proxy's request timeout).
fn status_is_transient(http_status: u16) -> bool {
    matches!(http_status, 408 | 429 | 500..=599)
}

/// What an answer that did not come from Entra most likely means (a sentence with its final
/// punctuation) and what to check, by status.
fn unexpected_answer_hint(http_status: u16) -> (&'static str, &'static str) {
    match http_status {
        404 => (
            "the token URL does not exist there.",
            "set authority to the Entra host only (e.g. https://login.microsoftonline.com, no \
             path) and check tenant_id",
        ),
        407 => (
            "an HTTP proxy between the relay and Entra demands authentication.",
            "let the relay host reach the authority host through the proxy",
        ),
        408 | 429 | 500..=599 => (
            "a proxy or outage?",
            "none if it clears; if it lasts, check Microsoft 365 service health and any proxy \
             between the relay and the authority host",
        ),
        _ => (
            "a captive portal, proxy or wrong host?",
            "check that authority points at Microsoft Entra (https://login.microsoftonline.com \
             worldwide) and that nothing in between intercepts HTTPS",
        ),
    }
}

/// A generic fix for an unknown AADSTS code, by OAuth error class.
fn hint_for_error_class(error: &str) -> &'static str {
    match error {
        "invalid_client" => {
            "check client_id and the credential (client_secret / client_secret_file / \
             client_secret_env or client_certificate) against Entra admin center → App \
             registrations → <app>"
        }
        "invalid_scope" | "invalid_resource" => {
            "set scope to https://outlook.office365.com/.default, or remove the scope key to use \
             that default"
        }
        "unauthorized_client" => {
            "check that the app exists and is enabled in the mailbox's tenant (Entra admin center \
             → Enterprise applications) and that client_id and tenant_id are right"
        }
        "invalid_grant" => {
            "check the credential and the relay host's clock; for a certificate, that \
             client_certificate is the one uploaded to the app"
        }
        "unsupported_grant_type" => {
            "set tenant_id to the tenant GUID or verified domain (not common or consumers) and \
             check authority"
        }
        "access_denied" => {
            "a Conditional Access policy or tenant restriction blocked the app; the \
             service-principal sign-in logs in Entra admin center name it"
        }
        "temporarily_unavailable" => "none needed: the relay retries with back-off",
        "not_found" => {
            "no token endpoint at that URL: authority is the base URL only (e.g. \
             https://login.microsoftonline.com, no tenant or path), tenant_id goes in its own key"
        }
        _ => "check tenant_id, client_id, the credential keys and scope",
    }
}

/// `trace_id=…, correlation_id=…, timestamp=…` for the fields that are present.
fn support_ids(body: &TokenErrorBody) -> String {
    let fields = [
        ("trace_id", &body.trace_id),
        ("correlation_id", &body.correlation_id),
        ("timestamp", &body.timestamp),
    ];
    let mut ids = String::new();
    for (name, value) in fields {
        let Some(value) = value.as_deref() else {
            continue;
        };
        if !ids.is_empty() {
            ids.push_str(", ");
        }
        let _ = write!(ids, "{name}={}", one_line_excerpt(value, MAX_FIELD_CHARS));
    }
    ids
}

/// Cuts `text` to at most `max_chars` characters; the flag tells whether anything was cut.
fn truncate_chars(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        Some((cut_at, _)) => (text.get(..cut_at).unwrap_or(text), true),
        None => (text, false),
    }
}
