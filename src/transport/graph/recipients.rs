//! Exact recipients over Graph (issue 13 item 3). Over SMTP the envelope decides who receives
//! a message; Graph reads the recipients from the MIME headers (To, Cc, Bcc). This module
//! decides, from the header section and the envelope recipients of one request, how the
//! message goes so that exactly the envelope's recipients receive it:
//!
//! - every header recipient is in the envelope: `sendMail` with the MIME, plus a `Bcc:` field
//!   naming the envelope recipients missing from To/Cc/Bcc (Graph keeps Bcc hidden from the
//!   other recipients); the field is added to the copy sent to Graph only, never to the spool;
//! - some header recipient is not in the envelope (the client split its envelope, a list was
//!   expanded elsewhere, or an earlier attempt already delivered to it): a draft from the
//!   MIME, whose To/Cc/Bcc collections are then set to exactly the envelope (To and Cc keep
//!   the header recipients that are in the envelope, for display; the rest go to Bcc), then
//!   sent. That needs `Mail.ReadWrite`.
//!
//! Invariants: pure (no I/O); addresses compare case-insensitively; the plan names each
//! envelope recipient exactly once and no one else.

use crate::vocab::address::Address;

/// How one message goes to Graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `sendMail` with the MIME; `add_bcc` (maybe empty) go into an added `Bcc:` field.
    SendMail { add_bcc: Vec<String> },
    /// A draft whose recipient collections are set to exactly these, then `/send`.
    Draft {
        to: Vec<String>,
        cc: Vec<String>,
        bcc: Vec<String>,
    },
}

/// The recipients the header section names, by field, lowercase, each once per field (and
/// the `From:` addresses, which Graph checks Send As on).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderRecipients {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub from: Vec<String>,
}

/// The end of the header section of `message` (after its empty line), or its length.
fn header_section(message: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(message, b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| memchr::memmem::find(message, b"\n\n").map(|at| at + 2))
        .unwrap_or(message.len());
    message.get(..end).unwrap_or(message)
}

/// The To, Cc and Bcc recipients of the header section of `message`.
pub fn header_recipients(message: &[u8]) -> HeaderRecipients {
    use mail_parser::HeaderName;
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(header_section(message))
    else {
        return HeaderRecipients::default();
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
    HeaderRecipients {
        to: collect(HeaderName::To),
        cc: collect(HeaderName::Cc),
        bcc: collect(HeaderName::Bcc),
        from: collect(HeaderName::From),
    }
}

/// The route that makes exactly `envelope` receive a message whose headers name `headers`.
pub fn plan(headers: &HeaderRecipients, envelope: &[Address]) -> Route {
    let mut wanted: Vec<String> = Vec::new();
    for recipient in envelope {
        let lower = recipient.as_str().to_ascii_lowercase();
        if !wanted.contains(&lower) {
            wanted.push(lower);
        }
    }
    let named = || headers.to.iter().chain(&headers.cc).chain(&headers.bcc);
    if named().all(|address| wanted.contains(address)) {
        let add_bcc = wanted
            .into_iter()
            .filter(|address| !named().any(|n| n == address))
            .collect();
        return Route::SendMail { add_bcc };
    }
    let to: Vec<String> = headers
        .to
        .iter()
        .filter(|a| wanted.contains(a))
        .cloned()
        .collect();
    let cc: Vec<String> = headers
        .cc
        .iter()
        .filter(|a| wanted.contains(a) && !to.contains(a))
        .cloned()
        .collect();
    let bcc = wanted
        .into_iter()
        .filter(|a| !to.contains(a) && !cc.contains(a))
        .collect();
    Route::Draft { to, cc, bcc }
}

/// The recipient collections of a draft that goes to exactly `envelope` (for messages that
/// take the draft route whatever their headers, like large ones): `To`/`Cc` as in the
/// headers when in the envelope, everyone else of the envelope in `Bcc`.
pub fn exact(
    headers: &HeaderRecipients,
    envelope: &[Address],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    match plan(headers, envelope) {
        Route::Draft { to, cc, bcc } => (to, cc, bcc),
        Route::SendMail { add_bcc } => {
            let mut bcc = headers.bcc.clone();
            bcc.extend(add_bcc);
            (headers.to.clone(), headers.cc.clone(), bcc)
        }
    }
}

/// A `Bcc:` field naming `addresses`, folded so no line passes 78 characters where it can.
pub fn bcc_field(addresses: &[String]) -> Vec<u8> {
    let mut field = String::from("Bcc:");
    let mut line_len = field.len();
    for (index, address) in addresses.iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        if index > 0 && line_len + address.len() + 2 > 78 {
            field.push_str(separator);
            field.push_str("\r\n ");
            line_len = 1;
        } else {
            field.push_str(separator);
            field.push(' ');
            line_len += separator.len() + 1;
        }
        field.push_str(address);
        line_len += address.len();
    }
    field.push_str("\r\n");
    field.into_bytes()
}

#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(list: &[&str]) -> Vec<Address> {
        list.iter().map(|a| Address::parse(a).unwrap()).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_string()).collect()
    }

    #[test]
    fn the_headers_are_read_case_insensitively_and_only_from_the_header_section() {
        let message = b"From: x@contoso.com\r\nTo: \"A\" <A@Fabrikam.example>, b@fabrikam.example\r\nCc: c@fabrikam.example\r\nSubject: s\r\n\r\nTo: body@fabrikam.example\r\n";
        let headers = header_recipients(message);
        assert_eq!(
            headers.to,
            strings(&["a@fabrikam.example", "b@fabrikam.example"])
        );
        assert_eq!(headers.cc, strings(&["c@fabrikam.example"]));
        assert!(headers.bcc.is_empty());
    }

    #[test]
    fn the_envelope_decides_who_receives_the_message() {
        let headers = HeaderRecipients {
            to: strings(&["a@f.example", "b@f.example"]),
            cc: strings(&["c@f.example"]),
            bcc: Vec::new(),
            from: Vec::new(),
        };
        let cases: [(&[&str], Route); 4] = [
            // Exactly the header recipients: sendMail as it is.
            (
                &["a@f.example", "B@f.example", "c@f.example"],
                Route::SendMail { add_bcc: vec![] },
            ),
            // One more in the envelope: a Bcc for it.
            (
                &["a@f.example", "b@f.example", "c@f.example", "d@f.example"],
                Route::SendMail {
                    add_bcc: strings(&["d@f.example"]),
                },
            ),
            // b and c are not in the envelope: a draft for a (To) and d (Bcc) only.
            (
                &["a@f.example", "d@f.example"],
                Route::Draft {
                    to: strings(&["a@f.example"]),
                    cc: vec![],
                    bcc: strings(&["d@f.example"]),
                },
            ),
            // Only a Cc recipient in the envelope.
            (
                &["c@f.example"],
                Route::Draft {
                    to: vec![],
                    cc: strings(&["c@f.example"]),
                    bcc: vec![],
                },
            ),
        ];
        for (envelope, expected) in cases {
            assert_eq!(
                plan(&headers, &addresses(envelope)),
                expected,
                "{envelope:?}"
            );
        }
    }

    #[test]
    fn the_bcc_field_is_folded_and_names_everyone() {
        let many: Vec<String> = (0..20)
            .map(|n| format!("recipient{n}@fabrikam.example"))
            .collect();
        let field = String::from_utf8(bcc_field(&many)).unwrap();
        assert!(field.starts_with("Bcc: recipient0@fabrikam.example,"));
        assert!(field.ends_with("\r\n"));
        assert!(field.lines().all(|line| line.len() <= 78), "{field}");
        let parsed = header_recipients(format!("{field}\r\n").as_bytes());
        assert_eq!(parsed.bcc, many);
    }
}
