//! The one table of replies of the fake Gmail SMTP server, and its pure checks (blocked
//! attachment names, the XOAUTH2 error challenge). Codes and texts follow google-workspace.md
//! §4 and §7; every error carries Gmail's ` <id> - gsmtp` suffix.
//!
//! Texts marked "observed" in the fact sheet (535 5.7.8, 530 5.7.0, 550 5.4.5, 552 5.7.0,
//! 552 5.3.4) are used as observed; the wording of 501 "Cannot Decode response" and
//! 504 "Unrecognized authentication type." is a plausible guess. The blocked-extension list
//! is an abridged form of Google's "file types blocked in Gmail" page, which the fact sheet
//! does not cover (unverified).
//!
//! Invariant: every reply the Gmail session writes comes from here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde_json::json;

use super::google_workspace::GMAIL_FULL_SCOPE;

/// The `SIZE` smtp.gmail.com advertises (observed).
pub const GMAIL_ADVERTISED_SIZE: usize = 35_882_577;

/// Attachment extensions Gmail refuses (abridged; lowercase, without the dot).
pub const BLOCKED_EXTENSIONS: [&str; 24] = [
    "ade", "adp", "apk", "bat", "cab", "chm", "cmd", "com", "cpl", "dll", "dmg", "exe", "hta",
    "ins", "isp", "jar", "js", "jse", "lnk", "msi", "ps1", "scr", "vbs", "wsf",
];

pub const STARTTLS_READY: &str = "220 2.0.0 Ready to start TLS";
pub const AUTH_OK: &str = "235 2.7.0 Accepted";
pub const AUTH_CONTINUE_EMPTY: &str = "334 ";
pub const AUTH_LOGIN_USERNAME: &str = "334 VXNlcm5hbWU6";
pub const AUTH_LOGIN_PASSWORD: &str = "334 UGFzc3dvcmQ6";
pub const START_MAIL_INPUT: &str = "354 Go ahead";
pub const CLOSING: &str = "221 2.0.0 closing connection";

/// The EHLO lines after the greeting line (observed; CHUNKING left out, see `gmail`).
pub fn ehlo_lines(host: &str, peer_ip: &str, tls: bool) -> Vec<String> {
    let middle = if tls {
        "AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH"
    } else {
        "STARTTLS"
    };
    vec![
        format!("{host} at your service, [{peer_ip}]"),
        format!("SIZE {GMAIL_ADVERTISED_SIZE}"),
        "8BITMIME".to_owned(),
        middle.to_owned(),
        "ENHANCEDSTATUSCODES".to_owned(),
        "PIPELINING".to_owned(),
        "SMTPUTF8".to_owned(),
    ]
}

/// A reply line with Gmail's suffix.
fn with_id(text: &str, id: &str) -> String {
    format!("{text} {id} - gsmtp")
}

pub fn greeting(host: &str, id: &str) -> String {
    format!("220 {host} ESMTP {id} - gsmtp")
}

pub fn helo(host: &str) -> String {
    format!("250 {host} at your service")
}

pub fn ok(id: &str) -> String {
    with_id("250 2.1.0 OK", id)
}

pub fn recipient_ok(id: &str) -> String {
    with_id("250 2.1.5 OK", id)
}

pub fn queued(id: &str, unix: i64) -> String {
    with_id(&format!("250 2.0.0 OK  {unix}"), id)
}

pub fn must_starttls(id: &str) -> String {
    with_id("530 5.7.0 Must issue a STARTTLS command first.", id)
}

pub fn authentication_required(id: &str) -> String {
    format!(
        "530-5.7.0 Authentication Required. For more information, go to\r\n\
         530 5.7.0  https://support.google.com/mail/?p=WantAuthError {id} - gsmtp"
    )
}

pub fn bad_credentials(id: &str) -> String {
    format!(
        "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
         535 5.7.8  https://support.google.com/mail/?p=BadCredentials {id} - gsmtp"
    )
}

pub fn cannot_decode(id: &str) -> String {
    with_id("501 5.5.2 Cannot Decode response", id)
}

pub fn unrecognized_auth(id: &str) -> String {
    with_id("504 5.7.4 Unrecognized authentication type.", id)
}

pub fn already_authenticated(id: &str) -> String {
    with_id("503 5.5.1 Already authenticated.", id)
}

pub fn temporary_auth_problem(id: &str) -> String {
    with_id(
        "454 4.7.0 Cannot authenticate due to temporary system problem. Try again later.",
        id,
    )
}

pub fn too_many_logins(id: &str) -> String {
    with_id(
        "454 4.7.0 Too many login attempts, please try again later.",
        id,
    )
}

pub fn try_again_later(id: &str) -> String {
    with_id("421 4.7.0 Try again later, closing connection.", id)
}

pub fn too_many_recipients(id: &str) -> String {
    with_id(
        "452 4.5.3 Your message has too many recipients. For more information regarding \
         Google's sending limits, go to https://support.google.com/mail/?p=TooManyRecipientsError",
        id,
    )
}

pub fn daily_limit_exceeded(id: &str) -> String {
    format!(
        "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n\
         550-5.4.5 sending limits go to\r\n\
         550 5.4.5  https://support.google.com/a/answer/166852 ?p=DailyLimitExceeded {id} - gsmtp"
    )
}

pub fn blocked_attachment(id: &str) -> String {
    format!(
        "552-5.7.0 This message was blocked because its content presents a potential\r\n\
         552-5.7.0 security issue. Please visit\r\n\
         552-5.7.0  https://support.google.com/mail/?p=BlockedMessage to review our\r\n\
         552 5.7.0 message content and attachment content guidelines. {id} - gsmtp"
    )
}

pub fn policy_violation(domain: &str, id: &str) -> String {
    with_id(
        &format!("550 5.7.1 This message violates {domain} email policy. - gcdp"),
        id,
    )
}

pub fn message_too_big(id: &str) -> String {
    with_id(
        "552 5.3.4 Your message exceeded Google's message size limits. For more information, \
         visit https://support.google.com/mail/?p=MaxSizeError",
        id,
    )
}

pub fn bad_sequence(what: &str, id: &str) -> String {
    with_id(&format!("503 5.5.1 {what}"), id)
}

pub fn syntax_error(id: &str) -> String {
    with_id("555 5.5.2 Syntax error.", id)
}

pub fn unrecognized_command(id: &str) -> String {
    with_id("502 5.5.1 Unrecognized command.", id)
}

pub fn too_many_errors(id: &str) -> String {
    with_id("421 4.7.0 Too many errors, closing connection.", id)
}

pub fn idle_timeout(id: &str) -> String {
    with_id("421 4.4.2 Timeout - closing connection.", id)
}

/// The `334` challenge of a failed XOAUTH2: base64 of
/// `{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}` (the scheme
/// as in Google's xoauth2 page; some captures show `"Bearer"`).
pub fn xoauth2_error_challenge(status: u16) -> String {
    let json = json!({
        "status": status.to_string(),
        "schemes": "bearer mac",
        "scope": GMAIL_FULL_SCOPE,
    });
    format!("334 {}", STANDARD.encode(json.to_string()))
}

/// The first attachment whose file name has a blocked extension, if any (names from
/// `Content-Disposition: filename=` or `Content-Type: name=`, any MIME depth).
pub fn blocked_attachment_name(message: &[u8]) -> Option<String> {
    let parsed = MessageParser::default().parse(message)?;
    parsed
        .parts
        .iter()
        .filter_map(|part| part.attachment_name())
        .find(|name| {
            name.rsplit_once('.').is_some_and(|(_, extension)| {
                BLOCKED_EXTENSIONS.contains(&extension.trim().to_ascii_lowercase().as_str())
            })
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_attachments_are_found_by_mime_file_name() {
        let multipart = |name: &str, via_type: bool| {
            let header = if via_type {
                format!("Content-Type: application/octet-stream; name=\"{name}\"")
            } else {
                format!(
                    "Content-Type: application/octet-stream\r\n\
                     Content-Disposition: attachment; filename=\"{name}\""
                )
            };
            format!(
                "From: a@example.com\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
                 Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n{header}\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\nTVo=\r\n--b--\r\n"
            )
        };
        let cases = [
            ("setup.exe", false, Some("setup.exe")),
            ("SETUP.EXE", true, Some("SETUP.EXE")),
            ("run.ps1", false, Some("run.ps1")),
            ("report.pdf", false, None),
            ("exe", false, None),
            ("archive.exe.txt", true, None),
        ];
        for (name, via_type, expected) in cases {
            assert_eq!(
                blocked_attachment_name(multipart(name, via_type).as_bytes()).as_deref(),
                expected,
                "{name} via_type={via_type}"
            );
        }
        let plain = b"From: a@example.com\r\nSubject: setup.exe\r\n\r\nsee setup.exe\r\n";
        assert_eq!(blocked_attachment_name(plain), None);
    }

    #[test]
    fn error_challenge_is_base64_json() {
        let challenge = xoauth2_error_challenge(400);
        let decoded = STANDARD
            .decode(challenge.strip_prefix("334 ").unwrap())
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(value["status"], "400");
        assert_eq!(value["scope"], "https://mail.google.com/");
        assert!(bad_credentials("x").ends_with("BadCredentials x - gsmtp"));
        assert!(bad_credentials("x").starts_with("535-5.7.8 Username and Password not accepted."));
    }
}
