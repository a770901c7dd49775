//! Explaining a refused JWT bearer grant: the HTTP status and the OAuth error body
//! (`{"error": "...", "error_description": "..."}`) of Google's token endpoint, decoded into
//! what broke and which Cloud or Admin console setting fixes it (google-workspace.md §2,
//! "Error codes" table, and §3).
//!
//! Invariants:
//! - Pure and total: no I/O, no clock, never panics, whatever the body holds.
//! - Google's `error` values are coarse (`invalid_grant` covers a deleted key, a wrong
//!   subject and a skewed clock), so the table matches the `error` value and then a
//!   case-insensitive piece of `error_description`; the first matching row wins, rows with a
//!   description come before the row for the bare `error`.
//! - Network text reaches the operator only as one sanitised line of bounded length.
//! - Retry: HTTP 5xx, 408, 429 and bodies that are no OAuth error (a proxy's page) back off;
//!   every OAuth error Google documents here is a configuration fault.

use crate::vocab::text::one_line_excerpt;

/// The Admin console page where domain-wide delegation is granted.
pub const DELEGATION_PATH: &str = "Admin console (admin.google.com) → Security → Access and \
     data control → API controls → Domain-wide delegation";

/// One known refusal: the `error` value, a piece of the description (empty: any), and what it
/// means for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoogleExplanation {
    pub error: &'static str,
    pub description_contains: &'static str,
    /// What went wrong (no final period).
    pub meaning: &'static str,
    /// What the administrator changes (no final period).
    pub fix: &'static str,
}

/// The table, most specific first.
pub const EXPLANATIONS: &[GoogleExplanation] = &[
    GoogleExplanation {
        error: "unauthorized_client",
        description_contains: "Client is unauthorized to retrieve access tokens",
        meaning: "Google does not let this service account act for the mailbox: domain-wide \
                  delegation is missing for its client ID and https://mail.google.com/, was \
                  entered with the client email instead of the numeric client ID, or the \
                  mailbox is a group",
        fix: "in the Admin console (admin.google.com) → Security → Access and data control → \
              API controls → Domain-wide delegation → Add new: enter the numeric client_id of \
              the key file with the scope https://mail.google.com/ (changes take minutes, up \
              to 24 h); mailbox must be a user, not a group",
    },
    GoogleExplanation {
        error: "unauthorized_client",
        description_contains: "",
        meaning: "domain-wide delegation is not granted for this service account's client ID \
                  and the scope https://mail.google.com/",
        fix: "a super administrator adds the numeric client_id of the key file with the scope \
              https://mail.google.com/ in the Admin console (admin.google.com) → Security → \
              Access and data control → API controls → Domain-wide delegation (changes take \
              minutes, up to 24 h)",
    },
    GoogleExplanation {
        error: "access_denied",
        description_contains: "",
        meaning: "the delegation entry does not list every requested scope, or Gmail is \
                  turned off for the mailbox",
        fix: "make the delegation entry's scopes include https://mail.google.com/ exactly \
              (Admin console → Security → API controls → Domain-wide delegation) and check \
              that Gmail is on for the mailbox's organisational unit",
    },
    GoogleExplanation {
        error: "admin_policy_enforced",
        description_contains: "",
        meaning: "an Admin console policy blocks this app or its scopes",
        fix: "allow the service account's app in the Admin console → Security → Access and \
              data control → API controls → App access control",
    },
    GoogleExplanation {
        error: "invalid_grant",
        description_contains: "Invalid email or User ID",
        meaning: "the mailbox is not an active user of the Workspace domain (a typo, a \
                  suspended or deleted user, an alias, or the service account's own address \
                  used as mailbox)",
        fix: "set mailbox to the primary address of an active Workspace user (not the \
              service account's client_email, not an alias or a group)",
    },
    GoogleExplanation {
        error: "invalid_grant",
        description_contains: "Not a valid email",
        meaning: "the mailbox is not a valid user address",
        fix: "set mailbox to the primary address of an active Workspace user",
    },
    GoogleExplanation {
        error: "invalid_grant",
        description_contains: "Invalid JWT Signature",
        meaning: "Google does not know the key that signed the request: it was deleted, \
                  disabled or rotated in the Cloud console",
        fix: "create a new JSON key (Google Cloud console → IAM & Admin → Service accounts → \
              the account → Keys → Add key → JSON), point service_account_key at it and \
              reload the relay",
    },
    GoogleExplanation {
        error: "invalid_grant",
        description_contains: "short-lived token",
        meaning: "Google found the request's time window wrong: this host's clock is off",
        fix: "synchronise this host's clock (NTP: timedatectl set-ntp true, or chrony); the \
              relay signs with iat = now and exp = now + 1 h",
    },
    GoogleExplanation {
        error: "invalid_grant",
        description_contains: "account not found",
        meaning: "the service account no longer exists",
        fix: "recreate the service account and its key in the Google Cloud console, then \
              grant domain-wide delegation to its new client ID",
    },
    GoogleExplanation {
        error: "invalid_grant",
        description_contains: "",
        meaning: "Google refused the signed request (invalid_grant)",
        fix: "check the key file (a current key of the service account), mailbox (an active \
              user) and this host's clock",
    },
    GoogleExplanation {
        error: "invalid_client",
        description_contains: "",
        meaning: "Google does not know the service account (deleted, or the key file belongs \
                  to another project)",
        fix: "create a new key for an existing service account and point \
              service_account_key at it",
    },
    GoogleExplanation {
        error: "deleted_client",
        description_contains: "",
        meaning: "the service account was deleted",
        fix: "restore the service account (within 30 days) or create a new one with a key \
              and delegation",
    },
    GoogleExplanation {
        error: "disabled_client",
        description_contains: "",
        meaning: "the service account is disabled",
        fix: "enable it in the Google Cloud console → IAM & Admin → Service accounts",
    },
    GoogleExplanation {
        error: "invalid_scope",
        description_contains: "",
        meaning: "Google does not accept the requested scope",
        fix: "the relay asks for https://mail.google.com/; report a relay bug if this appears",
    },
    GoogleExplanation {
        error: "org_internal",
        description_contains: "",
        meaning: "the service account's project only admits accounts of another Cloud \
                  organisation",
        fix: "use a service account of a project in the Workspace's own Cloud organisation",
    },
];

/// Longest piece of remote text shown, in characters.
const MAX_REMOTE_CHARS: usize = 200;

/// A refused token request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleRefusal {
    http_status: u16,
    error: Option<String>,
    description: Option<String>,
    excerpt: String,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl GoogleRefusal {
    /// Decodes the endpoint's answer (any status but 200).
    pub fn from_response(http_status: u16, body: &str) -> GoogleRefusal {
        match serde_json::from_str::<ErrorBody>(body) {
            Ok(parsed) => GoogleRefusal {
                http_status,
                error: Some(one_line_excerpt(&parsed.error, 64)),
                description: parsed
                    .error_description
                    .map(|d| one_line_excerpt(&d, MAX_REMOTE_CHARS)),
                excerpt: String::new(),
            },
            Err(_) => GoogleRefusal {
                http_status,
                error: None,
                description: None,
                excerpt: one_line_excerpt(body, 100),
            },
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        self.http_status
    }

    /// The OAuth `error` value, if the body was an OAuth error.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The table row that explains this refusal.
    pub fn explanation(&self) -> Option<&'static GoogleExplanation> {
        let error = self.error.as_deref()?;
        let description = self.description.as_deref().unwrap_or_default();
        EXPLANATIONS.iter().find(|row| {
            row.error == error
                && (row.description_contains.is_empty()
                    || contains_ignoring_case(description, row.description_contains))
        })
    }

    /// True when only an administrator can clear it (no back-off will).
    pub fn is_configuration(&self) -> bool {
        if matches!(self.http_status, 408 | 429 | 500..=599) {
            return false;
        }
        self.error.is_some()
    }

    /// What to change, in one line.
    pub fn fix(&self) -> &'static str {
        match self.explanation() {
            Some(row) => row.fix,
            None if matches!(self.http_status, 404 | 405) => {
                "no token endpoint at that URL: check token_uri in the key file (https://oauth2.googleapis.com/token)"
            }
            None if self.is_configuration() => {
                "read Google's answer above; check the key file, mailbox and domain-wide delegation"
            }
            None => "Google's token endpoint is failing; the relay retries with back-off",
        }
    }

    /// One line for the log: Google's answer and its meaning (the fix is separate).
    pub fn operator_message(&self) -> String {
        let answer = match (&self.error, &self.description) {
            (Some(error), Some(description)) => format!("{error}: {description}"),
            (Some(error), None) => error.clone(),
            _ if self.excerpt.is_empty() => "an empty body".to_owned(),
            _ => format!("not an OAuth error: {}", self.excerpt),
        };
        match self.explanation() {
            Some(row) => format!(
                "Google refused the token request (HTTP {}, {answer}): {}",
                self.http_status, row.meaning
            ),
            None => format!(
                "Google refused the token request (HTTP {}, {answer})",
                self.http_status
            ),
        }
    }
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack
        .to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, description: &str) -> String {
        serde_json::json!({"error": error, "error_description": description}).to_string()
    }

    #[test]
    fn each_documented_refusal_gets_its_meaning_and_fix() {
        // (status, error, description, piece of the meaning, piece of the fix, configuration)
        let table: &[(u16, &str, &str, &str, &str, bool)] = &[
            (
                401,
                "unauthorized_client",
                "Unauthorized client or scope in request.",
                "delegation is not granted",
                "Domain-wide delegation",
                true,
            ),
            (
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
                "numeric client ID",
                "numeric client_id",
                true,
            ),
            (
                400,
                "invalid_grant",
                "Invalid email or User ID",
                "not an active user",
                "not the service account's client_email",
                true,
            ),
            (
                400,
                "invalid_grant",
                "Not a valid email",
                "not a valid user",
                "primary address",
                true,
            ),
            (
                400,
                "invalid_grant",
                "Invalid JWT Signature.",
                "deleted, disabled or rotated",
                "create a new JSON key",
                true,
            ),
            (
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
                "clock is off",
                "NTP",
                true,
            ),
            (
                400,
                "invalid_grant",
                "account not found",
                "no longer exists",
                "recreate",
                true,
            ),
            (
                400,
                "invalid_grant",
                "something new",
                "refused the signed request",
                "clock",
                true,
            ),
            (
                400,
                "access_denied",
                "Requested client not authorized.",
                "every requested scope",
                "https://mail.google.com/",
                true,
            ),
            (
                400,
                "admin_policy_enforced",
                "",
                "policy blocks",
                "App access control",
                true,
            ),
            (
                401,
                "invalid_client",
                "The OAuth client was not found.",
                "does not know",
                "create a new key",
                true,
            ),
            (
                401,
                "disabled_client",
                "The OAuth client was disabled.",
                "disabled",
                "enable it",
                true,
            ),
            (400, "deleted_client", "", "deleted", "restore", true),
            (
                400,
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
                "scope",
                "relay bug",
                true,
            ),
            (400, "org_internal", "", "another Cloud", "own Cloud", true),
        ];
        for (status, error, description, meaning, fix, configuration) in table {
            let refusal = GoogleRefusal::from_response(*status, &body(error, description));
            let row = refusal
                .explanation()
                .unwrap_or_else(|| panic!("{error} {description}"));
            assert!(
                row.meaning.contains(meaning),
                "{error} {description}: {}",
                row.meaning
            );
            assert!(
                refusal.fix().contains(fix),
                "{error} {description}: {}",
                refusal.fix()
            );
            assert_eq!(refusal.is_configuration(), *configuration, "{error}");
            let message = refusal.operator_message();
            assert!(
                message.contains(error) && message.contains(row.meaning),
                "{message}"
            );
        }
    }

    #[test]
    fn outages_and_foreign_bodies_back_off() {
        for (status, text) in [
            (503, r#"{"error":"temporarily_unavailable"}"#),
            (500, "<html>Internal</html>"),
            (429, r#"{"error":"rate_limit_exceeded"}"#),
            (400, "<html>proxy says no\r\nsecond line</html>"),
            (200, ""),
        ] {
            let refusal = GoogleRefusal::from_response(status, text);
            assert!(!refusal.is_configuration(), "{status} {text}");
            assert!(!refusal.operator_message().contains('\n'));
        }
        let not_found = GoogleRefusal::from_response(404, "Not Found");
        assert!(not_found.fix().contains("token_uri"), "{}", not_found.fix());
        let unknown = GoogleRefusal::from_response(400, &body("new_error", "x"));
        assert!(unknown.is_configuration());
        assert!(unknown.explanation().is_none());
        assert!(unknown.fix().contains("delegation"));
    }
}
