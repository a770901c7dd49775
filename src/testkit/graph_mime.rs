//! Pure message logic of the fake Graph: who a message goes to and who it claims to be from,
//! for both request forms — the MIME form (recipients read from the `To:`, `Cc:` and `Bcc:`
//! header fields with mail-parser, since Graph has no SMTP envelope, graph.md §2) and the JSON
//! form (`toRecipients` / `ccRecipients` / `bccRecipients` / `from` of a `message`) — plus the
//! copy recipients see (the `Bcc:` fields removed) and a MIME rendering of a JSON message.
//!
//! Invariants: addresses are lowercased and de-duplicated in first-seen order; removing
//! `Bcc:` changes nothing else in the bytes (other fields, their folding, the body);
//! an address without `local@domain` shape is reported, never silently dropped.

use mail_parser::{HeaderName, MessageParser};
use serde_json::Value;

/// The addresses a message names, by role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageAddresses {
    /// `To:` / `toRecipients`.
    pub to: Vec<String>,
    /// `Cc:` / `ccRecipients`.
    pub cc: Vec<String>,
    /// `Bcc:` / `bccRecipients`.
    pub bcc: Vec<String>,
    /// `From:` / `from`.
    pub from: Vec<String>,
    /// `Subject:` / `subject`.
    pub subject: Option<String>,
}

impl MessageAddresses {
    /// Every recipient (To, Cc, Bcc), lowercase, each once, in that order.
    pub fn all_recipients(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for address in self.to.iter().chain(&self.cc).chain(&self.bcc) {
            if !all.contains(address) {
                all.push(address.clone());
            }
        }
        all
    }

    /// The first recipient that is not shaped `local@domain`, if any.
    pub fn first_invalid_recipient(&self) -> Option<&str> {
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .find(|a| !is_plausible_address(a))
            .map(String::as_str)
    }
}

/// Reads the header section of `mime`.
pub fn mime_addresses(mime: &[u8]) -> MessageAddresses {
    let header_end = header_section_end(mime);
    let Some(parsed) =
        MessageParser::default().parse_headers(mime.get(..header_end).unwrap_or(mime))
    else {
        return MessageAddresses::default();
    };
    let collect = |name: HeaderName<'static>| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for address in parsed
            .header_values(name)
            .filter_map(mail_parser::HeaderValue::as_address)
            .flat_map(|list| list.iter())
        {
            let text = address
                .address()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !text.is_empty() && !out.contains(&text) {
                out.push(text);
            }
        }
        out
    };
    MessageAddresses {
        to: collect(HeaderName::To),
        cc: collect(HeaderName::Cc),
        bcc: collect(HeaderName::Bcc),
        from: collect(HeaderName::From),
        subject: parsed.subject().map(str::to_owned),
    }
}

/// Reads a Graph `message` resource (JSON form of sendMail, or a draft).
///
/// # Errors
/// A text naming the first recipient entry that has no `emailAddress.address` string.
pub fn json_addresses(message: &Value) -> Result<MessageAddresses, String> {
    let from = message
        .pointer("/from/emailAddress/address")
        .and_then(Value::as_str)
        .map(|a| vec![a.trim().to_ascii_lowercase()])
        .unwrap_or_default();
    Ok(MessageAddresses {
        to: recipient_list(message, "toRecipients")?.unwrap_or_default(),
        cc: recipient_list(message, "ccRecipients")?.unwrap_or_default(),
        bcc: recipient_list(message, "bccRecipients")?.unwrap_or_default(),
        from,
        subject: message
            .get("subject")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The addresses of a recipient collection (`None` when the field is absent).
fn recipient_list(message: &Value, field: &str) -> Result<Option<Vec<String>>, String> {
    let Some(entries) = message.get(field) else {
        return Ok(None);
    };
    let entries = entries
        .as_array()
        .ok_or_else(|| format!("'{field}' is not a collection"))?;
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        let address = entry
            .pointer("/emailAddress/address")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("an entry of '{field}' has no emailAddress.address"))?
            .trim()
            .to_ascii_lowercase();
        if !out.contains(&address) {
            out.push(address);
        }
    }
    Ok(Some(out))
}

/// Recipient collections set on a MIME draft with `PATCH` (each replaces the header's list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecipientOverrides {
    /// `toRecipients`, if set.
    pub to: Option<Vec<String>>,
    /// `ccRecipients`, if set.
    pub cc: Option<Vec<String>>,
    /// `bccRecipients`, if set.
    pub bcc: Option<Vec<String>>,
}

impl RecipientOverrides {
    /// The recipient collections present in a `PATCH` body.
    ///
    /// # Errors
    /// A text naming a malformed collection.
    pub fn from_patch(patch: &Value) -> Result<RecipientOverrides, String> {
        Ok(RecipientOverrides {
            to: recipient_list(patch, "toRecipients")?,
            cc: recipient_list(patch, "ccRecipients")?,
            bcc: recipient_list(patch, "bccRecipients")?,
        })
    }

    /// Later settings win.
    pub fn merge(&mut self, later: RecipientOverrides) {
        self.to = later.to.or(self.to.take());
        self.cc = later.cc.or(self.cc.take());
        self.bcc = later.bcc.or(self.bcc.take());
    }

    /// Replaces the lists of `addresses` that were set.
    pub fn apply(&self, addresses: &mut MessageAddresses) {
        for (set, list) in [
            (&self.to, &mut addresses.to),
            (&self.cc, &mut addresses.cc),
            (&self.bcc, &mut addresses.bcc),
        ] {
            if let Some(set) = set {
                list.clone_from(set);
            }
        }
    }
}

/// `local@domain` with no white space or angle brackets, a non-empty local part and a domain
/// with a dot or a bracketed literal.
pub fn is_plausible_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let clean = |s: &str| {
        !s.is_empty()
            && !s
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b"<>,;".contains(&b))
    };
    clean(local) && clean(domain) && (domain.contains('.') || domain.starts_with('['))
}

/// Offset just past the blank line ending the header section (or the whole input).
pub fn header_section_end(mime: &[u8]) -> usize {
    let crlf = memchr::memmem::find(mime, b"\r\n\r\n").map(|i| i + 4);
    let lf = memchr::memmem::find(mime, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => mime.len(),
    }
}

/// `mime` without its `Bcc:` fields (with their continuation lines): the copy recipients see.
pub fn strip_bcc(mime: &[u8]) -> Vec<u8> {
    recipients_copy(mime, &RecipientOverrides::default())
}

/// The copy recipients see of a MIME draft whose recipient collections were set: no `Bcc:`,
/// and `To:` / `Cc:` regenerated from the collections that were set (an empty one leaves no
/// field), at the end of the header section. Everything else keeps its bytes.
pub fn recipients_copy(mime: &[u8], overrides: &RecipientOverrides) -> Vec<u8> {
    let end = header_section_end(mime);
    let (headers, body) = mime.split_at(end.min(mime.len()));
    let newline: &[u8] = if memchr::memmem::find(headers, b"\r\n").is_some() {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut added: Vec<u8> = Vec::new();
    for (name, set) in [("To", &overrides.to), ("Cc", &overrides.cc)] {
        if let Some(list) = set.as_ref().filter(|l| !l.is_empty()) {
            let joined: Vec<String> = list.iter().map(|a| format!("<{a}>")).collect();
            added.extend_from_slice(format!("{name}: {}", joined.join(", ")).as_bytes());
            added.extend_from_slice(newline);
        }
    }
    let dropped = |line: &[u8]| match field_name(line) {
        Some(name) if name.eq_ignore_ascii_case(b"bcc") => true,
        Some(name) if name.eq_ignore_ascii_case(b"to") => overrides.to.is_some(),
        Some(name) if name.eq_ignore_ascii_case(b"cc") => overrides.cc.is_some(),
        _ => false,
    };
    let mut out = Vec::with_capacity(mime.len() + added.len());
    let mut skipping = false;
    let mut inserted = false;
    for line in headers.split_inclusive(|b| *b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            out.extend_from_slice(&added);
            inserted = true;
            out.extend_from_slice(line);
            continue;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            skipping = dropped(line);
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    if !inserted {
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(newline);
        }
        out.extend_from_slice(&added);
    }
    out.extend_from_slice(body);
    out
}

/// The name of a field line (also the obsolete form with white space before the colon).
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', line)?;
    let name = line.get(..colon)?;
    let trimmed_len = name
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    name.get(..trimmed_len)
}

/// A plain MIME rendering of a JSON `message` as Exchange would submit it, without `Bcc:`.
pub fn render_json_message(message: &Value, sender: &str, message_id: &str) -> Vec<u8> {
    let addresses = json_addresses(message).unwrap_or_default();
    let from = addresses.from.first().map_or(sender, String::as_str);
    let mut out = format!("From: <{from}>\r\n");
    if sender != from {
        out.push_str(&format!("Sender: <{sender}>\r\n"));
    }
    for (name, list) in [("To", &addresses.to), ("Cc", &addresses.cc)] {
        if !list.is_empty() {
            let joined: Vec<String> = list.iter().map(|a| format!("<{a}>")).collect();
            out.push_str(&format!("{name}: {}\r\n", joined.join(", ")));
        }
    }
    let subject = addresses.subject.unwrap_or_default();
    out.push_str(&format!(
        "Subject: {subject}\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
    ));
    let content_type = message
        .pointer("/body/contentType")
        .and_then(Value::as_str)
        .unwrap_or("text");
    let content = message
        .pointer("/body/content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let subtype = if content_type.eq_ignore_ascii_case("html") {
        "html"
    } else {
        "plain"
    };
    out.push_str(&format!(
        "Content-Type: text/{subtype}; charset=\"utf-8\"\r\n\r\n{content}"
    ));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipients_come_from_every_address_field() {
        let table: [(&str, &[&str], &[&str]); 5] = [
            ("To: a@x.com\r\n\r\nbody", &["a@x.com"], &[]),
            (
                "To: A <A@X.com>, b@y.org\r\nCc: c@z.net\r\nBcc: d@w.io\r\n\r\n",
                &["a@x.com", "b@y.org", "c@z.net", "d@w.io"],
                &["d@w.io"],
            ),
            (
                "To: team: a@x.com, b@x.com;\r\nTo: c@x.com\r\n\r\n",
                &["a@x.com", "b@x.com", "c@x.com"],
                &[],
            ),
            ("To: a@x.com\r\nCc: A@x.com\r\n\r\n", &["a@x.com"], &[]),
            ("Subject: none\r\n\r\nTo: hidden@x.com\r\n", &[], &[]),
        ];
        for (mime, all, bcc) in table {
            let addresses = mime_addresses(mime.as_bytes());
            assert_eq!(addresses.all_recipients(), all, "{mime:?}");
            assert_eq!(addresses.bcc, bcc, "{mime:?}");
        }
    }

    #[test]
    fn from_and_subject_are_read() {
        let addresses = mime_addresses(b"From: \"Boss\" <CEO@contoso.com>\r\nSubject: Hi\r\n\r\n");
        assert_eq!(addresses.from, vec!["ceo@contoso.com"]);
        assert_eq!(addresses.subject.as_deref(), Some("Hi"));
    }

    #[test]
    fn strip_bcc_removes_only_bcc_fields() {
        let table: [(&str, &str); 5] = [
            (
                "To: a@x\r\nBcc: b@x\r\n\r\nBcc: body\r\n",
                "To: a@x\r\n\r\nBcc: body\r\n",
            ),
            (
                "Bcc: b@x,\r\n c@x\r\nSubject: s\r\n\r\nb",
                "Subject: s\r\n\r\nb",
            ),
            (
                "BCC:b@x\r\nbcc : obsolete form\r\nX: y\r\n\r\n",
                "X: y\r\n\r\n",
            ),
            (
                "Subject: Bcc: x\r\n X-Bcc: y\r\n\r\n",
                "Subject: Bcc: x\r\n X-Bcc: y\r\n\r\n",
            ),
            ("To: a@x\nBcc: b@x\n\nbody", "To: a@x\n\nbody"),
        ];
        for (input, expected) in table {
            assert_eq!(
                String::from_utf8(strip_bcc(input.as_bytes())).unwrap(),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn patched_recipients_replace_the_header_lists() {
        let mime = b"From: r@x.com\r\nTo: a@x.com,\r\n b@x.com\r\nCc: c@x.com\r\nBcc: d@x.com\r\nSubject: s\r\n\r\nTo: body\r\n";
        let overrides = RecipientOverrides {
            to: Some(vec!["a@x.com".to_owned()]),
            cc: Some(Vec::new()),
            bcc: Some(vec!["e@x.com".to_owned()]),
        };
        let copy = String::from_utf8(recipients_copy(mime, &overrides)).unwrap();
        assert_eq!(
            copy,
            "From: r@x.com\r\nSubject: s\r\nTo: <a@x.com>\r\n\r\nTo: body\r\n"
        );
        let mut addresses = mime_addresses(mime);
        overrides.apply(&mut addresses);
        assert_eq!(addresses.all_recipients(), ["a@x.com", "e@x.com"]);
        let only_bcc = RecipientOverrides {
            bcc: Some(vec!["z@x.com".to_owned()]),
            ..RecipientOverrides::default()
        };
        let copy = recipients_copy(mime, &only_bcc);
        assert_eq!(copy, strip_bcc(mime));
        assert_eq!(
            recipients_copy(b"Subject: no body", &overrides),
            b"Subject: no body\nTo: <a@x.com>\n"
        );
        let mut merged = RecipientOverrides::from_patch(
            &json!({"toRecipients": [{"emailAddress": {"address": "Q@x.com"}}]}),
        )
        .unwrap();
        merged.merge(RecipientOverrides::from_patch(&json!({"ccRecipients": []})).unwrap());
        assert_eq!(merged.to, Some(vec!["q@x.com".to_owned()]));
        assert_eq!(merged.cc, Some(Vec::new()));
        assert_eq!(merged.bcc, None);
    }

    #[test]
    fn json_messages() {
        let message = json!({
            "subject": "S",
            "body": {"contentType": "Text", "content": "hello"},
            "toRecipients": [{"emailAddress": {"address": "A@x.com"}}],
            "ccRecipients": [{"emailAddress": {"address": "c@x.com", "name": "C"}}],
            "bccRecipients": [{"emailAddress": {"address": "b@x.com"}}],
            "from": {"emailAddress": {"address": "Ceo@contoso.com"}}
        });
        let addresses = json_addresses(&message).unwrap();
        assert_eq!(
            addresses.all_recipients(),
            ["a@x.com", "c@x.com", "b@x.com"]
        );
        assert_eq!(addresses.from, ["ceo@contoso.com"]);
        let rendered =
            String::from_utf8(render_json_message(&message, "relay@contoso.com", "id@x")).unwrap();
        assert!(rendered.starts_with("From: <ceo@contoso.com>\r\nSender: <relay@contoso.com>\r\n"));
        assert!(rendered.contains("To: <a@x.com>\r\nCc: <c@x.com>\r\n"));
        assert!(!rendered.contains("b@x.com"));
        assert!(rendered.ends_with("\r\n\r\nhello"));
        assert!(json_addresses(&json!({"toRecipients": [{"name": "x"}]})).is_err());
        assert!(json_addresses(&json!({"toRecipients": "a@x.com"})).is_err());
    }

    #[test]
    fn plausible_addresses() {
        for (address, ok) in [
            ("a@x.com", true),
            ("a@[127.0.0.1]", true),
            ("a@localhost", false),
            ("@x.com", false),
            ("a b@x.com", false),
            ("undisclosed-recipients", false),
        ] {
            assert_eq!(is_plausible_address(address), ok, "{address}");
        }
    }
}
