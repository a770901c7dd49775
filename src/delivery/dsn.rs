//! Delivery status notifications (RFC 3464 `multipart/report`) for mail that will not be
//! delivered. Pure: envelope, content and failures in, message bytes out.
//!
//! Invariants: one DSN per failure event, listing every failed recipient with its status and
//! the server's reply; the original header section (not the body) is attached as
//! `text/rfc822-headers`, capped in size; all lines end in CRLF and stay under 998 octets;
//! the message is marked `Auto-Submitted: auto-replied` so that well-behaved systems never
//! answer it. Whether a DSN is sent at all (never for a null sender, never for a DSN) is the
//! caller's decision, see [`should_bounce`].

use time::OffsetDateTime;

pub use crate::config::BouncePolicy;
use crate::message::rfc5322_date;
use crate::vocab::envelope::{Envelope, FailedRecipient};

/// The most of the original header section that is attached.
pub const MAX_ATTACHED_HEADERS: usize = 64 * 1024;
// Streamed spool content keeps this much of its beginning for DSNs.
const _: () = assert!(MAX_ATTACHED_HEADERS <= crate::spool::content::HEAD_LEN);

/// The address a DSN for `envelope` goes to, or `None` when no DSN may be sent: the policy
/// says none, the message is itself a DSN, or it has the null sender `<>`.
pub fn should_bounce(policy: &BouncePolicy, envelope: &Envelope) -> Option<String> {
    if envelope.is_bounce {
        return None;
    }
    match policy {
        BouncePolicy::None => None,
        BouncePolicy::To(address) => Some(address.clone()),
        BouncePolicy::Sender => envelope.sender.as_ref().map(|s| s.to_string()),
    }
}

/// Everything a DSN says.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// The relay's host name (`Reporting-MTA`).
    pub reporting_host: &'a str,
    /// The mailbox the DSN is sent from (the account's mailbox).
    pub from_mailbox: &'a str,
    /// The account's `sender_name`: the display name of the DSN's `From:` (else
    /// "Mail Delivery System").
    pub from_name: Option<&'a str>,
    /// Who gets the DSN.
    pub to: &'a str,
    /// The failed message's envelope.
    pub original: &'a Envelope,
    /// The failed message's content, or at least its first [`MAX_ATTACHED_HEADERS`] bytes (only
    /// the header section is used).
    pub original_content: &'a [u8],
    /// The failed recipients.
    pub failures: &'a [FailedRecipient],
    /// `host:port` of the upstream server (`Remote-MTA`).
    pub remote_mta: &'a str,
    pub now: OffsetDateTime,
    /// Random text for the MIME boundary and Message-ID.
    pub unique: &'a str,
}

/// The status code for a failure: the enhanced code of the reply when it has a permanent one,
/// `5.4.7` for an expired message, `5.0.0` otherwise.
fn status_of(failure: &FailedRecipient) -> String {
    if failure.stage == "expired" {
        return "5.4.7".into();
    }
    let reply = failure.reply.trim_start();
    let after_code = reply
        .split_once(' ')
        .filter(|(code, _)| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .map_or(reply, |(_, rest)| rest);
    match crate::vocab::enhanced_status::enhanced_code(after_code) {
        Some(status) if status.class == 5 => status.to_string(),
        _ => "5.0.0".into(),
    }
}

/// The header section of `content` (up to the empty line), capped.
fn header_section(content: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(content, b"\r\n\r\n").map_or(content.len(), |i| i + 2);
    let end = end.min(MAX_ATTACHED_HEADERS);
    // Do not cut a line in half.
    let section = content.get(..end).unwrap_or(content);
    match memchr::memrchr(b'\n', section) {
        Some(last) => section.get(..=last).unwrap_or(section),
        None => &[],
    }
}

fn subject_of(headers: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(headers)
        .and_then(|message| message.subject().map(str::to_string))
        .map(|subject| crate::vocab::text::one_line_excerpt(&subject, 200))
        .unwrap_or_default()
}

/// A line for the human-readable part, wrapped far below the 998-octet limit; every line
/// starts with `indent`.
fn push_wrapped(out: &mut String, indent: &str, text: &str) {
    push_folded(out, indent, indent, text);
}

/// `text` wrapped at white space to about 76 characters: the first line starts with `first`,
/// the others with `rest` (a space, for a header field's continuation lines). A word longer
/// than 900 bytes is cut, so no line ever nears the 998-octet limit.
fn push_folded(out: &mut String, first: &str, rest: &str, text: &str) {
    const WIDTH: usize = 76;
    const LONGEST_WORD: usize = 900;
    let mut line = String::from(first);
    // True while `line` holds only its prefix.
    let mut bare = true;
    let end_line = |line: &mut String, bare: &mut bool, out: &mut String| {
        out.push_str(line);
        out.push_str("\r\n");
        line.clear();
        line.push_str(rest);
        *bare = true;
    };
    for mut word in text.split_whitespace() {
        // A word too long for any line is cut into pieces, each on a line of its own.
        while word.len() > LONGEST_WORD {
            if !bare {
                end_line(&mut line, &mut bare, out);
            }
            let cut = (1..=LONGEST_WORD)
                .rev()
                .find(|&i| word.is_char_boundary(i))
                .unwrap_or(word.len());
            let (head, tail) = word.split_at(cut);
            line.push_str(head);
            end_line(&mut line, &mut bare, out);
            word = tail;
        }
        if word.is_empty() {
            continue;
        }
        if !bare && line.len() + 1 + word.len() > WIDTH {
            end_line(&mut line, &mut bare, out);
        }
        if !bare {
            line.push(' ');
        }
        line.push_str(word);
        bare = false;
    }
    if !bare {
        out.push_str(&line);
        out.push_str("\r\n");
    }
}

/// Build the DSN message (headers and body, CRLF line endings).
pub fn build(input: &DsnInput<'_>) -> Vec<u8> {
    let headers = header_section(input.original_content);
    let subject = subject_of(headers);
    let boundary = format!("=_smtp-oauth-relay-{}", input.unique);
    let date = rfc5322_date(input.now);
    let arrival =
        OffsetDateTime::from_unix_timestamp(i64::try_from(input.original.received_at).unwrap_or(0))
            .map(rfc5322_date)
            .unwrap_or_else(|_| date.clone());

    let mut text = String::new();
    text.push_str(&format!(
        "This is the mail relay smtp-oauth-relay on {}.\r\n\r\n",
        input.reporting_host
    ));
    let intro = format!(
        "Your message could not be delivered to the recipient(s) below. It was handed to the relay by {} on {arrival}{}.",
        input.original.client.principal,
        if subject.is_empty() {
            String::new()
        } else {
            format!(", subject \"{subject}\"")
        }
    );
    push_wrapped(&mut text, "", &intro);
    text.push_str("\r\n");
    for failure in input.failures {
        push_wrapped(&mut text, "", &format!("<{}>:", failure.recipient));
        push_wrapped(&mut text, "    ", &failure.reply);
        if !failure.hint.is_empty() {
            push_wrapped(
                &mut text,
                "    ",
                &format!("For the administrator: {}", failure.hint),
            );
        }
        text.push_str("\r\n");
    }
    if !input.original.delivered.is_empty() {
        let delivered: Vec<String> = input
            .original
            .delivered
            .iter()
            .map(|a| format!("<{a}>"))
            .collect();
        push_wrapped(
            &mut text,
            "",
            &format!("It was delivered to: {}.", delivered.join(", ")),
        );
        text.push_str("\r\n");
    }
    push_wrapped(
        &mut text,
        "",
        "The relay will not try again for these recipients. The headers of your message are attached.",
    );

    let mut status = format!(
        "Reporting-MTA: dns; {}\r\nX-Queue-ID: {}\r\nArrival-Date: {arrival}\r\n",
        input.reporting_host, input.original.id
    );
    for failure in input.failures {
        let diagnostic = if failure.reply.starts_with(|c: char| c.is_ascii_digit()) {
            format!("smtp; {}", failure.reply)
        } else {
            format!("X-smtp-oauth-relay; {}", failure.reply)
        };
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nRemote-MTA: dns; {}\r\n",
            failure.recipient,
            status_of(failure),
            input.remote_mta.split(':').next().unwrap_or(input.remote_mta)
        ));
        push_folded(
            &mut status,
            "",
            " ",
            &format!("Diagnostic-Code: {diagnostic}"),
        );
        let last = OffsetDateTime::from_unix_timestamp(i64::try_from(failure.at).unwrap_or(0))
            .map(rfc5322_date)
            .unwrap_or_else(|_| date.clone());
        status.push_str(&format!("Last-Attempt-Date: {last}\r\n"));
    }

    let mut out = String::new();
    out.push_str(&format!(
        "From: {}\r\nTo: <{}>\r\nSubject: Undelivered Mail Returned to Sender{}\r\n\
         Date: {date}\r\nMessage-ID: <dsn.{}.{}@{}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n",
        crate::message::display_name::mailbox(
            Some(input.from_name.unwrap_or("Mail Delivery System")),
            input.from_mailbox
        ),
        input.to,
        if subject.is_empty() { String::new() } else { format!(": {}", subject.chars().take(120).collect::<String>()) },
        input.original.id,
        input.unique,
        input.reporting_host,
    ));
    out.push_str("This is a MIME-encapsulated delivery status notification.\r\n\r\n");
    out.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"));
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status}\r\n"
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
    );
    bytes.extend_from_slice(headers);
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::address::Address;
    use crate::vocab::envelope::ClientInfo;
    use mail_parser::{MessageParser, MimeHeaders};

    fn original() -> Envelope {
        let mut envelope = Envelope::new(
            "m365",
            Some(Address::parse("scanner@contoso.com").unwrap()),
            vec![
                Address::parse("a@x.example").unwrap(),
                Address::parse("b@x.example").unwrap(),
            ],
            ClientInfo {
                peer: "192.0.2.1:1".into(),
                helo: Some("printer".into()),
                principal: "user printer".into(),
            },
            1_795_900_000,
        );
        envelope.id = "1A2248742412E61A".into();
        envelope
    }

    fn failure(recipient: &str, reply: &str, stage: &str) -> FailedRecipient {
        FailedRecipient {
            recipient: Address::parse(recipient).unwrap(),
            at: 1_795_900_100,
            class: "permanent".into(),
            stage: stage.into(),
            reply: reply.into(),
            hint:
                "Add-RecipientPermission -Identity <sender> -Trustee <mailbox> -AccessRights SendAs"
                    .into(),
        }
    }

    /// The DSN for `original()` with `content` and `failures`, at a fixed time.
    fn dsn_for(content: &[u8], failures: &[FailedRecipient]) -> Vec<u8> {
        build(&DsnInput {
            reporting_host: "relay.test",
            from_mailbox: "relay@contoso.com",
            from_name: None,
            to: "scanner@contoso.com",
            original: &original(),
            original_content: content,
            failures,
            remote_mta: "smtp.office365.com:587",
            now: OffsetDateTime::from_unix_timestamp(1_795_900_200).unwrap(),
            unique: "abc123",
        })
    }

    #[test]
    fn a_dsn_is_a_well_formed_multipart_report() {
        let content = b"Received: x\r\nFrom: scanner@contoso.com\r\nSubject: Scan 0042\r\n\r\nsecret body text\r\n";
        let failures = [
            failure(
                "a@x.example",
                "554 5.2.252 SendAsDenied; relay@contoso.com not allowed to send as scanner@contoso.com",
                "data-end",
            ),
            failure(
                "b@x.example",
                "not delivered within 5days; last attempt: transient at connect",
                "expired",
            ),
        ];
        let bytes = dsn_for(content, &failures);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.replace("\r\n", "").contains('\n'), "bare LF");
        assert!(text.lines().all(|l| l.len() < 998));
        assert!(
            !text.contains("secret body text"),
            "only headers are attached"
        );
        let message = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(
            message.subject(),
            Some("Undelivered Mail Returned to Sender: Scan 0042")
        );
        let content_type = message.content_type().unwrap();
        assert_eq!(content_type.ctype(), "multipart");
        assert_eq!(content_type.subtype(), Some("report"));
        assert_eq!(
            content_type.attribute("report-type"),
            Some("delivery-status")
        );
        assert_eq!(
            message.parts.len(),
            4,
            "root + text + delivery-status + headers"
        );
        let status = String::from_utf8_lossy(message.parts[2].contents()).into_owned();
        assert!(
            status.contains("Reporting-MTA: dns; relay.test"),
            "{status}"
        );
        assert!(
            status.contains(
                "Final-Recipient: rfc822; a@x.example\r\nAction: failed\r\nStatus: 5.2.252"
            ),
            "{status}"
        );
        assert!(
            status.contains(
                "Final-Recipient: rfc822; b@x.example\r\nAction: failed\r\nStatus: 5.4.7"
            ),
            "{status}"
        );
        assert!(
            status.contains("Diagnostic-Code: smtp; 554 5.2.252"),
            "{status}"
        );
        let attached = String::from_utf8_lossy(message.parts[3].contents()).into_owned();
        assert!(attached.contains("Subject: Scan 0042"));
        let human = message.body_text(0).unwrap();
        assert!(human.contains("Add-RecipientPermission"), "{human}");
        assert!(human.contains("user printer"));
        assert!(text.contains("Auto-Submitted: auto-replied"));
    }

    #[test]
    fn long_diagnostics_fold_into_continuation_lines_that_unfold_to_the_reply() {
        let long_word = "x".repeat(2000);
        let replies = [
            "554 5.2.252 SendAsDenied; relay@contoso.com not allowed to send as scanner@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit message. 0.35250:0A000000, 1.36674:0A000000, 1.61250:00000000, 1.45378:02000000[EndDiagnosticData]".to_string(),
            format!("550 5.7.1 {long_word} tail"),
        ];
        let failures: Vec<_> = replies
            .iter()
            .map(|reply| failure("a@x.example", reply, "data-end"))
            .collect();
        let bytes = dsn_for(b"Subject: s\r\n\r\n", &failures);
        let message = MessageParser::default().parse(&bytes).unwrap();
        let status = String::from_utf8_lossy(message.parts[2].contents()).into_owned();
        const FIELDS: [&str; 9] = [
            "Reporting-MTA",
            "X-Queue-ID",
            "Arrival-Date",
            "Final-Recipient",
            "Action",
            "Status",
            "Remote-MTA",
            "Diagnostic-Code",
            "Last-Attempt-Date",
        ];
        for line in status.split("\r\n") {
            assert!(line.len() < 998, "{line}");
            if line.is_empty() || line.starts_with(' ') {
                continue;
            }
            let name = line.split(':').next().unwrap();
            assert!(FIELDS.contains(&name), "not a DSN field: {line}");
        }
        // Unfolded (RFC 5322 §2.2.3), each Diagnostic-Code is the reply again (the word cut
        // for length gains a space where it was cut).
        let unfolded = status.replace("\r\n ", " ");
        let diagnostics: Vec<&str> = unfolded
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("Diagnostic-Code: smtp; "))
            .collect();
        assert_eq!(diagnostics[0], replies[0]);
        assert_eq!(diagnostics[1].replace(' ', ""), replies[1].replace(' ', ""));
    }

    #[test]
    fn never_a_bounce_of_a_bounce_nor_to_the_null_sender() {
        let mut envelope = original();
        assert_eq!(
            should_bounce(&BouncePolicy::Sender, &envelope).as_deref(),
            Some("scanner@contoso.com")
        );
        assert_eq!(
            should_bounce(&BouncePolicy::To("admin@contoso.com".into()), &envelope).as_deref(),
            Some("admin@contoso.com")
        );
        assert_eq!(should_bounce(&BouncePolicy::None, &envelope), None);
        envelope.sender = None;
        assert_eq!(should_bounce(&BouncePolicy::Sender, &envelope), None);
        envelope.sender = Some(Address::parse("scanner@contoso.com").unwrap());
        envelope.is_bounce = true;
        assert_eq!(should_bounce(&BouncePolicy::Sender, &envelope), None);
        assert_eq!(
            should_bounce(&BouncePolicy::To("admin@contoso.com".into()), &envelope),
            None
        );
    }

    #[test]
    fn status_codes() {
        let cases = [
            ("554 5.2.252 SendAsDenied", "data-end", "5.2.252"),
            (
                "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
                "rcpt",
                "5.1.10",
            ),
            ("something else", "data-end", "5.0.0"),
            ("451 4.7.0 temporary", "data-end", "5.0.0"),
            ("whatever", "expired", "5.4.7"),
        ];
        for (reply, stage, status) in cases {
            assert_eq!(
                status_of(&failure("a@x.example", reply, stage)),
                status,
                "{reply}"
            );
        }
    }

    #[test]
    fn huge_header_sections_are_capped_at_a_line_boundary() {
        let mut content = Vec::new();
        for i in 0..5000 {
            content.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        content.extend_from_slice(b"\r\nbody\r\n");
        let section = header_section(&content);
        assert!(section.len() <= MAX_ATTACHED_HEADERS);
        assert!(section.ends_with(b"\r\n"));
    }
}
