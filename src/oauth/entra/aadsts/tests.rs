//! Table tests for AADSTS explanations and token-failure verdicts.

use super::*;

/// Every code §1.6 lists, plus 70003 and 700024.
const DOCUMENTED_CODES: &[u32] = &[
    7000215, 7000222, 7000218, 700016, 90002, 900023, 90038, 500011, 70011, 700022, 700023,
    1002012, 700027, 50012, 50013, 500133, 50027, 7000112, 70001, 53003, 65001, 90094, 50196,
    90055, 50000, 50033, 90006, 90024, 90033, 90090, 9001023, 70003, 700024,
];

/// The §1.5 example body, with realistic ids.
const BAD_SECRET_BODY: &str = r#"{
  "error": "invalid_client",
  "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '00000000-0000-0000-0000-000000000000'.\r\nTrace ID: 0b8e7f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b\r\nCorrelation ID: 6c7d8e9f-0a1b-2c3d-4e5f-6a7b8c9d0e1f\r\nTimestamp: 2026-01-09 02:02:12Z",
  "error_codes": [7000215],
  "timestamp": "2026-01-09 02:02:12Z",
  "trace_id": "0b8e7f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
  "correlation_id": "6c7d8e9f-0a1b-2c3d-4e5f-6a7b8c9d0e1f",
  "error_uri": "https://login.microsoftonline.com/error?code=7000215"
}"#;

#[test]
fn every_documented_code_is_explained() {
    for &code in DOCUMENTED_CODES {
        let entry = explain(code).unwrap_or_else(|| panic!("AADSTS{code} is not explained"));
        assert_eq!(entry.code, code);
        assert!(!entry.meaning.trim().is_empty(), "AADSTS{code} meaning");
        assert!(!entry.fix.trim().is_empty(), "AADSTS{code} fix");
        assert!(
            !entry.meaning.ends_with('.'),
            "AADSTS{code} meaning ends with '.'"
        );
        assert!(!entry.fix.ends_with('.'), "AADSTS{code} fix ends with '.'");
    }
    assert_eq!(known_codes().len(), DOCUMENTED_CODES.len());
}

#[test]
fn codes_are_unique() {
    for entry in known_codes() {
        let count = known_codes()
            .iter()
            .filter(|e| e.code == entry.code)
            .count();
        assert_eq!(count, 1, "AADSTS{} appears {count} times", entry.code);
    }
}

#[test]
fn only_throttling_and_transient_codes_back_off() {
    let backoff = [50196, 90055, 50000, 50033, 90006, 90024, 90033, 90090];
    for entry in known_codes() {
        let expected = if backoff.contains(&entry.code) {
            TokenRetry::Backoff
        } else {
            TokenRetry::Never
        };
        assert_eq!(entry.retry, expected, "AADSTS{}", entry.code);
    }
}

#[test]
fn documented_bad_secret_body_is_explained() {
    let failure = EntraRefusal::from_response(401, BAD_SECRET_BODY);
    let body = failure.body().unwrap();
    assert_eq!(body.error, "invalid_client");
    assert_eq!(failure.code(), Some(7000215));
    assert_eq!(failure.retry(), TokenRetry::Never);
    assert!(
        body.first_line_of_description()
            .starts_with("AADSTS7000215: Invalid")
    );
    assert!(!body.first_line_of_description().contains("Trace ID"));

    let message = failure.operator_message();
    assert!(message.starts_with("token request refused (HTTP 401): AADSTS7000215 invalid_client — the client secret is wrong"), "{message}");
    assert!(message.contains("Value"), "{message}");
    assert!(message.contains("client_secret"), "{message}");
    assert!(
        message.contains("trace_id=0b8e7f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
        "{message}"
    );
    assert!(
        message.contains("correlation_id=6c7d8e9f-0a1b-2c3d-4e5f-6a7b8c9d0e1f"),
        "{message}"
    );
    assert!(
        !message.contains('\n') && !message.contains('\r'),
        "{message}"
    );
}

/// (HTTP status, body, expected retry, text the message must contain).
#[rustfmt::skip]
const RETRY_CASES: &[(u16, &str, TokenRetry, &str)] = &[
    (400, r#"{"error":"temporarily_unavailable"}"#, TokenRetry::Backoff, "will retry"),
    (400, r#"{"error":"temporarily_unavailable","error_codes":[7000215]}"#, TokenRetry::Backoff, "AADSTS7000215"),
    (503, "<html><head><title>503 Service Unavailable</title></head></html>", TokenRetry::Backoff, "HTTP 503 with a non-JSON body; a proxy or outage?"),
    (502, "<html>\r\n<body>Bad gateway</body>\r\n</html>", TokenRetry::Backoff, "Body starts: \"<html> <body>Bad gateway</body> </html>\""),
    (404, "Not Found", TokenRetry::Backoff, "authority"),
    (407, "", TokenRetry::Backoff, "empty body"),
    (403, r#"{"message":"forbidden by gateway"}"#, TokenRetry::Backoff, "not an Entra error response"),
    (429, r#"{"error":"invalid_request","error_codes":[90055]}"#, TokenRetry::Backoff, "throttling"),
    (400, r#"{"error":"invalid_request","error_codes":[50196]}"#, TokenRetry::Backoff, "loop detected"),
    (400, r#"{"error":"invalid_client","error_codes":[9999999]}"#, TokenRetry::Never, "error?code=9999999"),
    (500, r#"{"error":"server_error","error_codes":[9999999]}"#, TokenRetry::Backoff, "does not know"),
    (400, r#"{"error":"invalid_scope","error_codes":[]}"#, TokenRetry::Never, "scope"),
    (401, r#"{"error":"invalid_client","error_codes":null,"error_description":"AADSTS7000222: The provided client secret keys are expired."}"#, TokenRetry::Never, "expired"),
    (400, r#"{"error":"invalid_request","error_codes":[9001023]}"#, TokenRetry::Never, "tenant_id"),
    (200, "{}", TokenRetry::Backoff, "captive portal"),
];

#[test]
fn retry_and_message_table() {
    for &(status, body, retry, needle) in RETRY_CASES {
        let failure = EntraRefusal::from_response(status, body);
        assert_eq!(failure.retry(), retry, "HTTP {status} {body}");
        let message = failure.operator_message();
        assert!(message.contains(needle), "HTTP {status} {body}: {message}");
        assert!(
            !message.contains('\n') && !message.contains('\r'),
            "{message}"
        );
    }
}

#[test]
fn code_is_read_from_description_when_error_codes_is_missing() {
    let failure = EntraRefusal::from_response(
        400,
        r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'contso.com' not found.\r\nTrace ID: x"}"#,
    );
    assert_eq!(failure.code(), Some(90002));
    assert_eq!(failure.retry(), TokenRetry::Never);
    assert!(failure.operator_message().contains("tenant_id"));
}

#[test]
fn description_code_parsing_edge_cases() {
    let cases: &[(&str, Option<u32>)] = &[
        ("AADSTS700016: Application not found", Some(700016)),
        ("  AADSTS53003 blocked", Some(53003)),
        ("AADSTS70011", Some(70011)),
        ("AADSTS: no digits", None),
        ("AADSTS12x: junk", None),
        ("Error AADSTS50000: not at the start", None),
        ("AADSTS99999999999: overflow", None),
        ("", None),
    ];
    for &(description, expected) in cases {
        assert_eq!(
            code_in_description(description),
            expected,
            "{description:?}"
        );
    }
}

#[test]
fn long_descriptions_are_capped_to_one_line() {
    let long = "A".repeat(5000);
    let body = format!(
        r#"{{"error":"invalid_request","error_codes":[123],"error_description":"{long}\r\nTrace ID: t"}}"#
    );
    let failure = EntraRefusal::from_response(400, &body);
    let first_line = failure.body().unwrap().first_line_of_description();
    assert_eq!(first_line.chars().count(), MAX_DESCRIPTION_CHARS);
    let message = failure.operator_message();
    assert!(message.len() < 1200, "{} bytes", message.len());
    assert!(!message.contains("Trace ID"), "{message}");
}

#[test]
fn hostile_bodies_never_break_the_line() {
    let bodies = [
        "\u{0}\u{1b}[31mred\u{7}",
        "ü".repeat(1000).as_str(),
        r#"{"error":"x\r\ny","trace_id":"a\nb"}"#,
        "[1,2,3]",
        "null",
    ]
    .map(str::to_owned);
    for body in &bodies {
        let message = EntraRefusal::from_response(400, body).operator_message();
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }
}

#[test]
fn excerpt_and_truncation_respect_character_boundaries() {
    assert_eq!(truncate_chars("äöü", 2), ("äö", true));
    assert_eq!(truncate_chars("äöü", 3), ("äöü", false));
    assert_eq!(one_line_excerpt("  a \r\n b\tc  ", 10), "a b c");
    assert_eq!(one_line_excerpt("abcdef", 3), "abc…");
    assert_eq!(one_line_excerpt("", 3), "");
}
