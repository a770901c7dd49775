//! The one table of replies of the fake Exchange server. Texts follow the transcripts and
//! catalogue of exchange-online.md §4.2 and §5; where the real text is unconfirmed, the code
//! and enhanced code are the ones documented and the text is a plausible Exchange phrasing.
//!
//! Invariant: every reply the session writes comes from here, so a reader can compare the
//! emulator with the reference in one place. Functions take the server host name where the
//! real reply embeds it.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Extensions advertised in EHLO before STARTTLS, after the `Hello` line (§4.2).
pub const EHLO_EXTENSIONS_PLAIN: [&str; 9] = [
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "STARTTLS",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
];

/// Extensions advertised in EHLO after STARTTLS: `AUTH LOGIN XOAUTH2` replaces `STARTTLS`.
pub const EHLO_EXTENSIONS_TLS: [&str; 9] = [
    "SIZE 157286400",
    "PIPELINING",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "AUTH LOGIN XOAUTH2",
    "8BITMIME",
    "BINARYMIME",
    "CHUNKING",
    "SMTPUTF8",
];

/// The service-wide size ceiling advertised in EHLO (150 MiB).
pub const ADVERTISED_SIZE: usize = 157_286_400;

pub const STARTTLS_READY: &str = "220 2.0.0 SMTP server ready";
pub const AUTH_OK: &str = "235 2.7.0 Authentication successful";
pub const AUTH_CONTINUE_EMPTY: &str = "334 ";
/// base64("Username:") / base64("Password:") challenges of AUTH LOGIN.
pub const AUTH_LOGIN_USERNAME: &str = "334 VXNlcm5hbWU6";
pub const AUTH_LOGIN_PASSWORD: &str = "334 UGFzc3dvcmQ6";
pub const AUTH_UNRECOGNIZED_TYPE: &str = "504 5.7.4 Unrecognized authentication type";
pub const AUTH_INVALID_XOAUTH2: &str = "501 5.5.124 Invalid XOAUTH2 auth data";
pub const AUTH_CANCELLED: &str = "501 5.0.0 Authentication cancelled";
pub const AUTH_ALREADY: &str = "503 5.5.2 Already authenticated";
pub const BASIC_AUTH_DISABLED: &str =
    "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.";
pub const SMTP_AUTH_DISABLED_MAILBOX: &str = "535 5.7.139 Authentication unsuccessful, \
     SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled \
     for more information.";
pub const SMTP_AUTH_DISABLED_TENANT: &str = "535 5.7.139 Authentication unsuccessful, \
     SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled \
     for more information.";
pub const SENDER_OK: &str = "250 2.1.0 Sender OK";
pub const RECIPIENT_OK: &str = "250 2.1.5 Recipient OK";
pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Too many recipients";
pub const START_MAIL_INPUT: &str = "354 Start mail input; end with <CRLF>.<CRLF>";
pub const BARE_LINEFEEDS: &str = "550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains \
     bare linefeeds, which cannot be sent via DATA";
pub const MESSAGE_TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";
pub const RESET_OK: &str = "250 2.0.0 Resetting";
pub const NOOP_OK: &str = "250 2.0.0 OK";
pub const VRFY_CANNOT: &str = "252 2.1.5 Cannot VRFY user, but will take message for this user";
pub const CLOSING: &str = "221 2.0.0 Service closing transmission channel";
pub const SERVICE_NOT_AVAILABLE: &str =
    "421 4.3.2 Service not available, closing transmission channel";
pub const TOO_MANY_ERRORS: &str =
    "421 4.7.0 Too many errors on this connection, closing transmission channel";
pub const IDLE_TIMEOUT: &str = "421 4.4.1 Connection timed out. Total session duration: idle";
pub const SEND_HELLO_FIRST: &str = "503 5.5.2 Send hello first";
pub const NEED_MAIL: &str = "503 5.5.2 Need mail command";
pub const NEED_RCPT: &str = "503 5.5.2 Need rcpt command";
pub const SENDER_ALREADY_SPECIFIED: &str = "503 5.5.2 Sender already specified";
pub const TLS_ALREADY_ACTIVE: &str = "503 5.5.2 TLS already active";
pub const INVALID_ARGUMENTS: &str = "501 5.5.4 Invalid arguments";
pub const INVALID_DOMAIN: &str = "501 5.5.4 Invalid domain name";
pub const LINE_TOO_LONG: &str = "500 5.3.3 Unrecognized command, line too long";
pub const BDAT_NOT_SUPPORTED: &str =
    "502 5.5.1 BDAT is advertised but not implemented by this emulator; use DATA";

/// `220 <host> Microsoft ESMTP MAIL Service ready at <RFC 2822 date> [<session id>]`.
pub fn greeting(host: &str, now: SystemTime, session_id: &str) -> String {
    let date = OffsetDateTime::from(now)
        .format(&Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned());
    format!("220 {host} Microsoft ESMTP MAIL Service ready at {date} [{session_id}]")
}

/// The EHLO reply lines (without codes).
pub fn ehlo_lines(host: &str, peer_ip: &str, tls: bool) -> Vec<String> {
    let extensions = if tls {
        EHLO_EXTENSIONS_TLS
    } else {
        EHLO_EXTENSIONS_PLAIN
    };
    std::iter::once(format!("{host} Hello [{peer_ip}]"))
        .chain(extensions.iter().map(|e| (*e).to_owned()))
        .collect()
}

/// `250 <host> Hello [<ip>]` for HELO (no extension list).
pub fn helo(host: &str, peer_ip: &str) -> String {
    format!("250 {host} Hello [{peer_ip}]")
}

pub fn auth_unsuccessful(host: &str) -> String {
    format!("535 5.7.3 Authentication unsuccessful [{host}]")
}

pub fn not_authenticated(host: &str) -> String {
    format!("530 5.7.57 Client not authenticated to send mail. [{host}]")
}

pub fn unrecognized_command(verb: &str) -> String {
    let shown: String = verb
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    format!("500 5.3.3 Unrecognized command '{shown}'")
}

pub fn header_too_long(size: usize, header: &str) -> String {
    format!(
        "554 5.6.211 Invalid MIME Content: Single text value size ({size}) exceeded allowed \
         maximum (32768) for the '{header}' header"
    )
}

pub fn send_as_denied(mailbox: &str, sender: &str, host: &str) -> String {
    format!(
        "554 5.2.252 SendAsDenied; {mailbox} not allowed to send as {sender}; \
         STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to \
         process message due to a permanent exception with message [BeginDiagnosticData]Cannot \
         submit message. 0.35250:0A00E589, 1.36674:0A000000, 1.61250:00000000 \
         [EndDiagnosticData] [Hostname={host}]"
    )
}

pub fn concurrency_exceeded(host: &str) -> String {
    format!(
        "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending \
         for more information. [Hostname={host}]"
    )
}

pub fn temporary_server_error(host: &str) -> String {
    format!("451 4.7.0 Temporary server error. Please try again later. PRX4 [{host}]")
}

pub fn mailbox_logon_failure(host: &str) -> String {
    format!(
        "430 4.2.0 STOREDRV; mailbox logon failure; \
         STOREDRV.Submission.Exception:ConnectionFailedTransientException.MapiExceptionLogonFailed; \
         Failed to process message due to a transient exception with message [BeginDiagnosticData]\
         Cannot open mailbox. [EndDiagnosticData] [Hostname={host}]"
    )
}

pub fn queued(message_id: &str, host: &str) -> String {
    format!("250 2.0.0 OK {message_id} [Hostname={host}]")
}

/// Joins reply lines as `NNN-first`, ..., `NNN last`, each ending CRLF.
pub fn multiline(code: u16, lines: &[String]) -> String {
    let last = lines.len().saturating_sub(1);
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let sep = if i == last { ' ' } else { '-' };
            format!("{code}{sep}{line}\r\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_matches_the_observed_transcript() {
        let text = multiline(250, &ehlo_lines("H", "127.0.0.1", false));
        assert!(text.starts_with("250-H Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n"));
        assert!(text.contains("250-STARTTLS\r\n"));
        assert!(text.ends_with("250 SMTPUTF8\r\n"));
        let tls = multiline(250, &ehlo_lines("H", "127.0.0.1", true));
        assert!(tls.contains("250-AUTH LOGIN XOAUTH2\r\n"));
        assert!(!tls.contains("STARTTLS"));
        let hello = greeting("H", SystemTime::UNIX_EPOCH, "08DE2A6028D26C22");
        assert_eq!(
            hello,
            "220 H Microsoft ESMTP MAIL Service ready at Thu, 01 Jan 1970 00:00:00 +0000 [08DE2A6028D26C22]"
        );
    }
}
