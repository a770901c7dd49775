//! Header work on accepted mail, applied while the content streams to the spool; the sender
//! rules for the `From:` header live in [`sender`].
//!
//! The relay forwards a message byte for byte as received, plus one `Received:` trace field
//! at the top (RFC 5321 §4.4) and, only when they are missing, `Date:` and `Message-ID:`
//! (RFC 5322 requires both; Exchange and receiving systems score mail without them).
//!
//! Invariants: only the header section is buffered, and only up to `max_header_size`; the
//! body passes through untouched in constant memory; header fields are appended at the end
//! of the header section, never reordered or rewritten; a message whose first line is not a
//! header gets an empty line after the added fields, so its body stays a body.

pub mod display_name;
mod helo;
pub mod sender;

use std::net::SocketAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Why the message cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("the header section is larger than the limit")]
    HeaderTooLarge,
    #[error(transparent)]
    FromRefused(#[from] sender::FromRefused),
}

/// The sender rules to apply to the `From:` header.
#[derive(Debug, Clone)]
pub struct SenderRules {
    /// The client's whole grant (every account it may send through): [`sender::route`]
    /// chooses the account when the header section is complete.
    pub grant: Arc<crate::policy::Grant>,
    /// The envelope sender chosen at MAIL (after any rewrite).
    pub envelope_sender: Option<crate::vocab::address::Address>,
}

/// Facts for the `Received:` field.
#[derive(Debug, Clone)]
pub struct TraceInfo<'a> {
    pub helo: Option<&'a str>,
    pub peer: SocketAddr,
    pub hostname: &'a str,
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// Named in the field only when the message has exactly one recipient.
    pub single_recipient: Option<&'a str>,
    pub now: OffsetDateTime,
}

/// An RFC 5322 date, e.g. `Sat, 28 Nov 2026 22:54:09 +0000`.
pub fn rfc5322_date(when: OffsetDateTime) -> String {
    when.format(&Rfc2822)
        .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

/// The `Received:` field, folded, with CRLF.
pub fn received_field(trace: &TraceInfo<'_>) -> String {
    let ip = trace.peer.ip().to_canonical();
    // The client's argument is written only in a form that keeps the field's syntax intact.
    let from = match trace.helo.map(helo::trace_helo) {
        Some(helo::TraceHelo::Domain(domain)) => format!("{domain} ([{ip}])"),
        Some(helo::TraceHelo::Escaped(escaped)) => format!("unknown (helo={escaped} [{ip}])"),
        None => format!("unknown ([{ip}])"),
    };
    let mut field = format!(
        "Received: from {from}\r\n\tby {} (smtp-oauth-relay) with {} id {}",
        trace.hostname, trace.protocol, trace.queue_id
    );
    if let Some(recipient) = trace.single_recipient {
        field.push_str(&format!("\r\n\tfor <{recipient}>"));
    }
    field.push_str(&format!("; {}\r\n", rfc5322_date(trace.now)));
    field
}

/// Where the assembler is in the message: still buffering the header section, or streaming the
/// body.
enum HeaderStage {
    Headers(Vec<u8>),
    Body,
}

/// Streams content to the spool, adding the trace and missing fields. See the module docs.
pub struct MessageAssembler {
    stage: HeaderStage,
    received: String,
    hostname: String,
    queue_id: String,
    now: OffsetDateTime,
    max_header_size: usize,
    /// Where in the header buffer the next unchecked line starts.
    scanned: usize,
    sender_rules: Option<SenderRules>,
    /// The account chosen once the header section was complete (with sender rules only).
    routing: Option<sender::Routing>,
}

impl MessageAssembler {
    /// `received` is the field from [`received_field`].
    pub fn new(
        received: String,
        hostname: &str,
        queue_id: &str,
        now: OffsetDateTime,
        max_header_size: usize,
    ) -> MessageAssembler {
        MessageAssembler {
            stage: HeaderStage::Headers(Vec::new()),
            received,
            hostname: hostname.to_string(),
            queue_id: queue_id.to_string(),
            now,
            max_header_size,
            scanned: 0,
            sender_rules: None,
            routing: None,
        }
    }

    /// Apply the sender rules of a grant to the `From:` header.
    pub fn with_sender_rules(mut self, rules: SenderRules) -> MessageAssembler {
        self.sender_rules = Some(rules);
        self
    }

    /// The account the message goes through and its final envelope sender, once the header
    /// section is complete (only with sender rules).
    pub fn routing(&self) -> Option<&sender::Routing> {
        self.routing.as_ref()
    }

    /// Feed content (already unstuffed, CRLF line endings); bytes for the spool go to `out`.
    ///
    /// # Errors
    /// [`AssemblyError`] once the header section passes the limit or breaks the sender rules.
    pub fn push(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), AssemblyError> {
        let HeaderStage::Headers(buffer) = &mut self.stage else {
            out.extend_from_slice(content);
            return Ok(());
        };
        buffer.extend_from_slice(content);
        if let Some(end) = header_end(buffer, &mut self.scanned) {
            // The end may arrive in the same push that carries the section past the limit.
            if end > self.max_header_size {
                return Err(AssemblyError::HeaderTooLarge);
            }
            let buffer = std::mem::take(buffer);
            return self.emit(&buffer, end, out);
        }
        if buffer.len() > self.max_header_size {
            return Err(AssemblyError::HeaderTooLarge);
        }
        Ok(())
    }

    /// The content is complete: flush what is still buffered.
    ///
    /// # Errors
    /// [`AssemblyError`] if the whole message is one oversized header section, or breaks
    /// the sender rules.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), AssemblyError> {
        if let HeaderStage::Headers(buffer) = &mut self.stage {
            if buffer.len() > self.max_header_size {
                return Err(AssemblyError::HeaderTooLarge);
            }
            let buffer = std::mem::take(buffer);
            // Every complete line before `scanned` is a header line; the unterminated last
            // line belongs to the header section only if it is a field or continues one.
            let tail = buffer.get(self.scanned..).unwrap_or(&[]);
            let end = if tail.is_empty() || is_header_line(tail, self.scanned == 0) {
                buffer.len()
            } else {
                self.scanned
            };
            return self.emit(&buffer, end, out);
        }
        Ok(())
    }

    /// Write the trace field, the header section `buffer[..end]`, the missing fields, then the
    /// rest of the buffer, and switch to pass-through.
    fn emit(&mut self, buffer: &[u8], end: usize, out: &mut Vec<u8>) -> Result<(), AssemblyError> {
        let (headers, rest) = buffer.split_at(end.min(buffer.len()));
        let edit = match &self.sender_rules {
            Some(rules) => {
                let routing = sender::route(headers, &rules.grant, rules.envelope_sender.as_ref());
                let edit =
                    sender::sender_edit(headers, &routing.grant, routing.envelope_sender.as_ref())?;
                self.routing = Some(routing);
                edit
            }
            None => sender::SenderEdit::default(),
        };
        out.extend_from_slice(self.received.as_bytes());
        match &edit.replace_from {
            Some(from) => out.extend_from_slice(&sender::replace_from(headers, from)),
            None => out.extend_from_slice(headers),
        }
        if !headers.is_empty() && !headers.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        let mut added = !edit.append.is_empty();
        for field in &edit.append {
            out.extend_from_slice(field.as_bytes());
        }
        if !sender::field_present(headers, b"date") {
            out.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(self.now)).as_bytes());
            added = true;
        }
        if !sender::field_present(headers, b"message-id") {
            let random = crate::vocab::hex::lower(&crate::vocab::random::unique_bytes::<6>());
            out.extend_from_slice(
                format!(
                    "Message-ID: <{}.{random}@{}>\r\n",
                    self.queue_id, self.hostname
                )
                .as_bytes(),
            );
            added = true;
        }
        if added && !rest.is_empty() && !rest.starts_with(b"\r\n") {
            // The first line was not a header: keep it in the body.
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(rest);
        self.stage = HeaderStage::Body;
        Ok(())
    }
}

/// Find where the header section ends: the index of the empty line, or of the first line
/// that is not a header field. `scanned` remembers progress between calls.
fn header_end(buffer: &[u8], scanned: &mut usize) -> Option<usize> {
    loop {
        let rest = buffer.get(*scanned..)?;
        let Some(newline) = memchr::memchr(b'\n', rest) else {
            // An unfinished line that can no longer become a field already ends the section
            // (a body-only message with a long first line is not "a huge header").
            return (!may_start_header_line(rest, *scanned == 0)).then_some(*scanned);
        };
        let line = rest.get(..newline).unwrap_or(&[]);
        if !is_header_line(line, *scanned == 0) {
            return Some(*scanned);
        }
        *scanned += newline + 1;
    }
}

/// Whether `line` (without its LF) is part of the header section: a field, or the
/// continuation of one (not possible on the first line). An empty line ends the section.
fn is_header_line(line: &[u8], first_line: bool) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let is_continuation = matches!(line.first(), Some(b' ' | b'\t')) && !first_line;
    !line.is_empty() && (is_continuation || is_field_line(line))
}

/// Whether the beginning of a line (no LF yet) may still turn out to be part of the header
/// section: a continuation, or a field name (printable, no space) possibly followed by white
/// space, then a colon or nothing yet.
fn may_start_header_line(partial: &[u8], first_line: bool) -> bool {
    if partial.is_empty() || (!first_line && matches!(partial.first(), Some(b' ' | b'\t'))) {
        return true;
    }
    if memchr::memchr(b':', partial).is_some() {
        return is_field_line(partial);
    }
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    let name_end = partial
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(partial.len());
    let (name, gap) = partial.split_at(name_end);
    name.iter().all(|&b| (33..=126).contains(&b)) && gap.iter().all(|&b| b == b' ' || b == b'\t')
}

/// `name: value` with a printable, space-free name; white space between the name and the
/// colon is allowed (RFC 5322 §4.5.3 obsolete syntax, which readers still honour, so a
/// field written that way must not slip into the body unchecked).
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let name = line.get(..colon).unwrap_or_default();
    let name_end = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |last| last + 1);
    name_end > 0
        && name
            .get(..name_end)
            .is_some_and(|name| name.iter().all(|&b| (33..=126).contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 22:54:09 UTC);

    fn assemble(content: &[u8], chunk: usize) -> Result<Vec<u8>, AssemblyError> {
        let mut assembler =
            MessageAssembler::new("Received: x\r\n".into(), "relay.test", "ID1", NOW, 200);
        let mut out = Vec::new();
        for piece in content.chunks(chunk.max(1)) {
            assembler.push(piece, &mut out)?;
        }
        assembler.finish(&mut out)?;
        Ok(out)
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn complete_message_gets_only_the_trace_field() {
        let input = b"Date: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <a@b>\r\nSubject: hi\r\n\r\nbody\r\n.line\r\n";
        for chunk in [1, 3, 7, 1000] {
            let out = assemble(input, chunk).unwrap();
            let mut expected = b"Received: x\r\n".to_vec();
            expected.extend_from_slice(input);
            assert_eq!(out, expected, "chunk {chunk}");
        }
    }

    #[test]
    fn missing_date_and_message_id_are_added_at_the_end_of_the_headers() {
        let out = text(assemble(b"Subject: hi\r\n\r\nbody\r\n", 4).unwrap());
        let (headers, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(headers.starts_with("Received: x\r\nSubject: hi\r\nDate: Sat, 28 Nov 2026 22:54:09 +0000\r\nMessage-ID: <ID1."));
        assert!(headers.ends_with("@relay.test>"));
        assert_eq!(body, "body\r\n");
    }

    #[test]
    fn case_insensitive_and_folded_headers() {
        let input = b"DATE: x\r\nmessage-id:\r\n <a@b>\r\nSubject: a\r\n folded\r\n\r\nb\r\n";
        let out = assemble(input, 5).unwrap();
        assert_eq!(out, [b"Received: x\r\n".as_slice(), input].concat());
    }

    #[test]
    fn a_field_with_space_before_its_colon_stays_in_the_header_section() {
        let input = b"Subject: a\r\nFrom : boss@evil.example\r\nTo: b@x.example\r\n\r\nbody\r\n";
        let out = text(assemble(input, 4).unwrap());
        let (headers, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(headers.contains("From : boss@evil.example"), "{out}");
        assert!(headers.contains("To: b@x.example"), "{out}");
        assert_eq!(body, "body\r\n");
    }

    #[test]
    fn body_without_headers_stays_a_body() {
        let out = text(assemble(b"just a line of text\r\nmore\r\n", 3).unwrap());
        assert!(out.starts_with("Received: x\r\nDate: "));
        assert!(
            out.ends_with("\r\n\r\njust a line of text\r\nmore\r\n"),
            "{out}"
        );
    }

    #[test]
    fn headers_only_and_empty_messages() {
        let out = text(assemble(b"Subject: only headers\r\n", 2).unwrap());
        assert!(out.starts_with("Received: x\r\nSubject: only headers\r\nDate: "));
        let out = text(assemble(b"", 1).unwrap());
        assert!(out.starts_with("Received: x\r\nDate: "));
        let out = text(assemble(b"\r\nbody only\r\n", 1).unwrap());
        assert!(out.starts_with("Received: x\r\nDate: "));
        assert!(out.ends_with(">\r\n\r\nbody only\r\n"), "{out}");
    }

    #[test]
    fn oversized_header_section_is_refused() {
        let huge = format!("Subject: {}\r\n\r\nbody\r\n", "x".repeat(300));
        assert_eq!(
            assemble(huge.as_bytes(), 10),
            Err(AssemblyError::HeaderTooLarge)
        );
        // A large body is fine: only headers are buffered.
        let big_body = format!("Subject: a\r\n\r\n{}\r\n", "y".repeat(10_000));
        assert!(assemble(big_body.as_bytes(), 100).is_ok());
        // So is a body-only message whose first line is longer than the limit, and a header
        // line cut anywhere is still waited for.
        for first_line in ["just text, no header", "word", "From  x"] {
            let body_only = format!("{first_line}{}\r\n", " y".repeat(5_000));
            for chunk in [1, 7, 100, 20_000] {
                let out = text(assemble(body_only.as_bytes(), chunk).unwrap());
                assert!(out.ends_with(&format!("\r\n\r\n{body_only}")), "{chunk}");
            }
        }
    }

    #[test]
    fn a_partial_line_ends_the_header_section_only_when_it_cannot_be_a_field() {
        for (partial, first, may) in [
            (&b""[..], true, true),
            (b"\r", true, true),
            (b"Subj", true, true),
            (b"From  ", true, true),
            (b"From : x", true, true),
            (b" folded", false, true),
            (b" folded", true, false),
            (b"From x", true, false),
            (b"just text", true, false),
            (b"Bad\x01name", true, false),
        ] {
            assert_eq!(
                may_start_header_line(partial, first),
                may,
                "{:?}",
                String::from_utf8_lossy(partial)
            );
        }
    }

    /// Found by `fuzz/fuzz_targets/message.rs`: when the header section and its end arrived in
    /// one push, the limit was not checked, so acceptance depended on how the content was cut.
    #[test]
    fn oversized_header_section_is_refused_however_it_arrives() {
        let huge = format!("Subject: {}\r\n\r\nbody\r\n", "x".repeat(300));
        for chunk in [1, 7, 64, huge.len()] {
            assert_eq!(
                assemble(huge.as_bytes(), chunk),
                Err(AssemblyError::HeaderTooLarge),
                "chunk {chunk}"
            );
        }
    }

    /// Found by `fuzz/fuzz_targets/message.rs`: an unterminated last line that is not a header
    /// field was taken into the header section, so body text ended up above the added `Date:`
    /// and `Message-ID:` fields. (The DATA receiver always ends content with CRLF, so the relay
    /// itself never fed such content; the assembler's contract does not require it.)
    #[test]
    fn unterminated_last_line_stays_in_the_body() {
        for chunk in [1, 4, 1000] {
            let out = text(assemble(b"Subject: hi\r\nno header", chunk).unwrap());
            assert!(
                out.starts_with("Received: x\r\nSubject: hi\r\nDate: "),
                "{out}"
            );
            assert!(out.ends_with(">\r\n\r\nno header"), "{out}");
            let out = text(assemble(b"\0", chunk).unwrap());
            assert!(out.ends_with(">\r\n\r\n\0"), "{out:?}");
            // A last line that is a field stays a header.
            let out = text(assemble(b"Subject: hi", chunk).unwrap());
            assert!(
                out.starts_with("Received: x\r\nSubject: hi\r\nDate: "),
                "{out}"
            );
            assert!(out.ends_with(">\r\n"), "{out}");
        }
    }

    #[test]
    fn received_field_format() {
        let field = received_field(&TraceInfo {
            helo: Some("printer.lan"),
            peer: "[::ffff:192.0.2.5]:1234".parse().unwrap(),
            hostname: "relay.test",
            protocol: "ESMTPSA",
            queue_id: "ABC",
            single_recipient: Some("a@x.example"),
            now: NOW,
        });
        assert_eq!(
            field,
            "Received: from printer.lan ([192.0.2.5])\r\n\tby relay.test (smtp-oauth-relay) with ESMTPSA id ABC\r\n\tfor <a@x.example>; Sat, 28 Nov 2026 22:54:09 +0000\r\n"
        );
    }

    #[test]
    fn received_field_never_carries_an_unsafe_helo() {
        let first_line = |helo: Option<&str>| {
            let field = received_field(&TraceInfo {
                helo,
                peer: "127.0.0.2:1234".parse().unwrap(),
                hostname: "relay.test",
                protocol: "ESMTP",
                queue_id: "ABC",
                single_recipient: None,
                now: NOW,
            });
            field.lines().next().unwrap_or_default().to_string()
        };
        let cases = [
            (Some("x)"), "Received: from unknown (helo=x%29 [127.0.0.2])"),
            (
                Some("héllo"),
                "Received: from unknown (helo=h%C3%A9llo [127.0.0.2])",
            ),
            (
                Some("[127.0.0.2]"),
                "Received: from [127.0.0.2] ([127.0.0.2])",
            ),
            (None, "Received: from unknown ([127.0.0.2])"),
        ];
        for (helo, expected) in cases {
            assert_eq!(first_line(helo), expected, "{helo:?}");
        }
    }
}
