//! The sender rules applied to the `From:` header (the envelope sender is decided at MAIL):
//! a `From:` outside the client's allowed senders is refused, or rewritten to the account's
//! mailbox with the display name kept and the original address moved to `Reply-To:` (when
//! there is none), so replies still reach the person. A message without `From:` gets one.
//!
//! Why: Exchange Online checks the `From:` of an SMTP AUTH submission after the final dot and
//! refuses a sender the mailbox may not use (`554 5.2.252 SendAsDenied`); catching it here
//! gives the client a clear answer while it is still connected, or fixes it by policy.
//!
//! Routing by sender ends here ([`route`]): once the header section is complete, the message
//! goes through the one account of the grant that may send as the envelope sender and every
//! `From:` address; when none may, through the default account, whose rules then apply to
//! `From:`. A `From:` the relay writes (rewritten or added) carries the chosen account's
//! `sender_name`, unless the client chose a display name (kept, except with
//! `sender_rewrite = "always"`).
//!
//! Pure: header bytes in, an edit or a refusal out. Addresses are read with mail-parser.

use mail_parser::MessageParser;

use super::display_name;
use crate::policy::{Grant, SenderDecision, SenderRewrite};
use crate::vocab::address::Address;

/// The account a message goes through, and its final envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The client's grant seen through the chosen account ([`Grant::through`]).
    pub grant: Grant,
    pub envelope_sender: Option<Address>,
}

/// Choose the account for a message whose header section is `headers`, under the client's
/// `grant`, with `envelope_sender` as decided at MAIL. See the module docs.
///
/// With no account covering the envelope sender and every `From:` address, the default
/// account is used; an envelope sender chosen for another account at MAIL is then decided
/// again under the default account's rules: rewritten to its mailbox when they say so, kept
/// otherwise (the client may use it; the `From:` rules still apply).
pub fn route(headers: &[u8], grant: &Grant, envelope_sender: Option<&Address>) -> Routing {
    let from: Vec<Address> = if field_present(headers, b"from") {
        from_addresses(headers)
            .iter()
            .map(|f| Address::parse(&f.address).ok())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if let Some(chosen) = grant.route_covering(envelope_sender, &from) {
        return Routing {
            grant: grant.through(chosen),
            envelope_sender: envelope_sender.cloned(),
        };
    }
    let envelope_sender = match grant.decide(envelope_sender) {
        SenderDecision::Rewrite(mailbox) => Some(mailbox),
        SenderDecision::Keep | SenderDecision::Refuse => envelope_sender.cloned(),
    };
    let default = grant
        .routes
        .iter()
        .find(|r| r.account == grant.account)
        .map_or_else(|| grant.clone(), |r| grant.through(r));
    Routing {
        grant: default,
        envelope_sender,
    }
}

/// What to change in the header section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenderEdit {
    /// Replace every `From:` field by this one (with CRLF).
    pub replace_from: Option<String>,
    /// Append these fields (with CRLF).
    pub append: Vec<String>,
}

/// The `From:` address is not allowed and rewriting is off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the From: header address <{0}> is not allowed")]
pub struct FromRefused(pub String);

/// One address of a `From:` field, with its display name.
struct FromAddress {
    name: Option<String>,
    address: String,
}

/// Every address of every `From:` field: a list (`a, b`), groups (`team: a, b;`) and a
/// repeated field all count, so no address can hide behind an allowed one.
fn from_addresses(headers: &[u8]) -> Vec<FromAddress> {
    let Some(parsed) = MessageParser::default().parse_headers(headers) else {
        return Vec::new();
    };
    parsed
        .header_values(mail_parser::HeaderName::From)
        .filter_map(mail_parser::HeaderValue::as_address)
        .flat_map(|list| list.iter())
        .map(|addr| FromAddress {
            name: addr
                .name()
                .map(str::to_string)
                .filter(|n| !n.trim().is_empty()),
            address: addr.address().unwrap_or_default().to_string(),
        })
        .collect()
}

/// Decide the edit for `headers` (the header section, CRLF lines) under `grant`.
/// `envelope_sender` is the sender chosen at MAIL (already rewritten if needed).
///
/// Every address in every `From:` field must be allowed; one that is not refuses the
/// message, or (with rewriting) makes the whole `From:` the account's mailbox.
pub fn sender_edit(
    headers: &[u8],
    grant: &Grant,
    envelope_sender: Option<&Address>,
) -> Result<SenderEdit, FromRefused> {
    let mut edit = SenderEdit::default();
    let sender_name = grant.sender_name.as_deref();
    if !field_present(headers, b"from") {
        let address = envelope_sender.unwrap_or(&grant.account_mailbox);
        edit.append.push(format!(
            "From: {}\r\n",
            display_name::mailbox(sender_name, address.as_str())
        ));
        return Ok(edit);
    }
    let from = from_addresses(headers);
    let parsed: Vec<Option<Address>> = from
        .iter()
        .map(|f| Address::parse(&f.address).ok())
        .collect();
    let readable = !from.is_empty() && parsed.iter().all(Option::is_some);
    if !readable {
        // A From: field that does not parse: only a rewrite can save it.
        if grant.sender_rewrite == SenderRewrite::Never {
            let shown = from
                .iter()
                .zip(&parsed)
                .find(|(_, p)| p.is_none())
                .map_or("(unreadable)".to_string(), |(f, _)| f.address.clone());
            return Err(FromRefused(shown));
        }
        edit.replace_from = Some(format!(
            "From: {}\r\n",
            display_name::mailbox(sender_name, grant.account_mailbox.as_str())
        ));
        return Ok(edit);
    }
    let mut rewrite_to = None;
    for (original, address) in from.iter().zip(parsed.iter().flatten()) {
        match grant.decide(Some(address)) {
            SenderDecision::Keep => {}
            SenderDecision::Refuse => return Err(FromRefused(original.address.clone())),
            SenderDecision::Rewrite(mailbox) => rewrite_to = Some(mailbox),
        }
    }
    let Some(mailbox) = rewrite_to else {
        return Ok(edit);
    };
    // The client's display name is kept, unless "always" puts the account's name in place.
    let client_name = from.first().and_then(|f| f.name.as_deref());
    let name = match (grant.sender_rewrite, sender_name) {
        (SenderRewrite::Always, Some(ours)) => Some(ours),
        _ => client_name.or(sender_name),
    };
    edit.replace_from = Some(format!(
        "From: {}\r\n",
        display_name::mailbox(name, mailbox.as_str())
    ));
    if !field_present(headers, b"reply-to") {
        let originals: Vec<String> = from
            .iter()
            .map(|f| display_name::mailbox(f.name.as_deref(), &f.address))
            .collect();
        edit.append
            .push(format!("Reply-To: {}\r\n", originals.join(", ")));
    }
    Ok(edit)
}

/// True when the header section has a field called `name` (lower-case).
pub fn field_present(headers: &[u8], name: &[u8]) -> bool {
    headers
        .split(|&b| b == b'\n')
        .any(|line| is_field(line, name))
}

/// True when `line` starts the field `name`; white space before the colon is allowed, as
/// RFC 5322's obsolete syntax (and every mail reader) allows it.
fn is_field(line: &[u8], name: &[u8]) -> bool {
    line.get(..name.len())
        .is_some_and(|n| n.eq_ignore_ascii_case(name))
        && line
            .get(name.len()..)
            .and_then(|rest| rest.iter().find(|&&b| b != b' ' && b != b'\t'))
            == Some(&b':')
}

/// `headers` with every `From:` field (and its continuation lines) replaced by `from` once.
pub fn replace_from(headers: &[u8], from: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() + from.len());
    let mut skipping = false;
    let mut replaced = false;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation && skipping {
            continue;
        }
        skipping = false;
        if is_field(line, b"from") {
            skipping = true;
            if !replaced {
                out.extend_from_slice(from.as_bytes());
                replaced = true;
            }
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Principal, SenderPattern, SenderRewrite};

    fn grant(rewrite: SenderRewrite) -> Grant {
        Grant {
            principal: Principal::User("printer".into()),
            account: "m365".into(),
            account_mailbox: Address::parse("relay@contoso.com").unwrap(),
            allowed_senders: vec![SenderPattern::parse("*@contoso.com").unwrap()],
            sender_rewrite: rewrite,
            sender_name: None,
            routes: vec![],
        }
    }

    #[test]
    fn allowed_from_is_kept() {
        let headers = b"From: Scanner <scan@contoso.com>\r\nSubject: x\r\n";
        assert_eq!(
            sender_edit(headers, &grant(SenderRewrite::Never), None),
            Ok(SenderEdit::default())
        );
    }

    #[test]
    fn no_address_hides_behind_an_allowed_one() {
        // (header section, the address that must be refused)
        let table: [(&[u8], &str); 6] = [
            (
                b"From: relay@contoso.com, boss@evil.example\r\n",
                "boss@evil.example",
            ),
            (
                b"From: relay@contoso.com,\r\n boss@evil.example\r\n",
                "boss@evil.example",
            ),
            (
                b"From: team: relay@contoso.com, boss@evil.example;\r\n",
                "boss@evil.example",
            ),
            (
                b"From: boss@evil.example\r\nFrom: relay@contoso.com\r\n",
                "boss@evil.example",
            ),
            (
                b"From: relay@contoso.com\r\nFrom: boss@evil.example\r\n",
                "boss@evil.example",
            ),
            (
                b"Subject: x\r\nFrom : boss@evil.example\r\n",
                "boss@evil.example",
            ),
        ];
        for (headers, refused) in table {
            let shown = String::from_utf8_lossy(headers);
            assert_eq!(
                sender_edit(headers, &grant(SenderRewrite::Never), None),
                Err(FromRefused(refused.into())),
                "{shown}"
            );
            // With rewriting, the whole From: becomes the mailbox and every original address
            // goes to Reply-To.
            let edit = sender_edit(headers, &grant(SenderRewrite::WhenNotAllowed), None).unwrap();
            assert!(
                edit.replace_from
                    .as_deref()
                    .is_some_and(|f| f.ends_with("<relay@contoso.com>\r\n")),
                "{shown}: {edit:?}"
            );
            assert!(
                edit.append
                    .iter()
                    .any(|f| f.starts_with("Reply-To:") && f.contains(refused)),
                "{shown}: {edit:?}"
            );
            let rewritten = replace_from(headers, edit.replace_from.as_deref().unwrap());
            assert!(
                !String::from_utf8_lossy(&rewritten).contains("evil"),
                "every From: field is replaced: {shown}"
            );
        }
        // Several allowed addresses are fine.
        assert_eq!(
            sender_edit(
                b"From: a@contoso.com, b@contoso.com\r\n",
                &grant(SenderRewrite::Never),
                None
            ),
            Ok(SenderEdit::default())
        );
    }

    #[test]
    fn a_from_outside_the_grant_is_refused_without_rewrite() {
        let headers = b"From: Scanner <scan@printers.lan>\r\n";
        assert_eq!(
            sender_edit(headers, &grant(SenderRewrite::Never), None),
            Err(FromRefused("scan@printers.lan".into()))
        );
    }

    #[test]
    fn rewrite_keeps_the_display_name_and_adds_reply_to() {
        let headers = b"From: \"Scanner 3rd floor\" <scan@printers.lan>\r\nSubject: x\r\n";
        let edit = sender_edit(headers, &grant(SenderRewrite::WhenNotAllowed), None).unwrap();
        assert_eq!(
            edit.replace_from.as_deref(),
            Some("From: \"Scanner 3rd floor\" <relay@contoso.com>\r\n")
        );
        assert_eq!(
            edit.append,
            vec!["Reply-To: \"Scanner 3rd floor\" <scan@printers.lan>\r\n".to_string()]
        );
        // An existing Reply-To is kept.
        let headers = b"From: scan@printers.lan\r\nReply-To: helpdesk@contoso.com\r\n";
        let edit = sender_edit(headers, &grant(SenderRewrite::WhenNotAllowed), None).unwrap();
        assert_eq!(
            edit.replace_from.as_deref(),
            Some("From: <relay@contoso.com>\r\n")
        );
        assert!(edit.append.is_empty());
    }

    #[test]
    fn non_ascii_display_names_are_encoded() {
        let headers = "From: =?utf-8?Q?Dr=C3=BCcker?= <scan@printers.lan>\r\n".as_bytes();
        let edit = sender_edit(headers, &grant(SenderRewrite::Always), None).unwrap();
        let from = edit.replace_from.unwrap();
        assert!(from.starts_with("From: =?utf-8?B?"), "{from}");
        let parsed = MessageParser::default()
            .parse_headers(from.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.from().unwrap().first().unwrap().name(),
            Some("Drücker")
        );
    }

    #[test]
    fn always_rewrites_even_allowed_senders_but_not_the_mailbox_itself() {
        let edit = sender_edit(
            b"From: a@contoso.com\r\n",
            &grant(SenderRewrite::Always),
            None,
        )
        .unwrap();
        assert!(edit.replace_from.is_some());
        let edit = sender_edit(
            b"From: relay@contoso.com\r\n",
            &grant(SenderRewrite::Always),
            None,
        )
        .unwrap();
        assert_eq!(edit, SenderEdit::default());
    }

    #[test]
    fn a_missing_from_is_added() {
        let sender = Address::parse("scan@contoso.com").unwrap();
        let edit = sender_edit(
            b"Subject: x\r\n",
            &grant(SenderRewrite::Never),
            Some(&sender),
        )
        .unwrap();
        assert_eq!(
            edit.append,
            vec!["From: <scan@contoso.com>\r\n".to_string()]
        );
        let edit = sender_edit(b"Subject: x\r\n", &grant(SenderRewrite::Never), None).unwrap();
        assert_eq!(
            edit.append,
            vec!["From: <relay@contoso.com>\r\n".to_string()]
        );
    }

    #[test]
    fn replace_from_handles_folding_and_duplicates() {
        let headers = b"Subject: a\r\nFrom: x\r\n <x@y>\r\nTo: b\r\nfrom: again@z\r\n";
        assert_eq!(
            replace_from(headers, "From: <relay@contoso.com>\r\n"),
            b"Subject: a\r\nFrom: <relay@contoso.com>\r\nTo: b\r\n"
        );
    }

    fn routed_grant(rewrite: SenderRewrite) -> Grant {
        let route =
            |account: &str, mailbox: &str, name: Option<&str>| crate::policy::AccountRoute {
                account: account.into(),
                mailbox: Address::parse(mailbox).unwrap(),
                send_as: vec![],
                sender_name: name.map(str::to_string),
            };
        Grant {
            principal: Principal::User("printer".into()),
            account: "m365".into(),
            account_mailbox: Address::parse("relay@contoso.com").unwrap(),
            allowed_senders: vec![SenderPattern::parse("*@contoso.com").unwrap()],
            sender_rewrite: rewrite,
            sender_name: Some("Relay".into()),
            routes: vec![
                route("m365", "relay@contoso.com", Some("Relay")),
                route("alerts", "alerts@contoso.com", Some("Alerts")),
            ],
        }
    }

    /// (rewrite, header section, envelope sender at MAIL, account, final envelope, From:
    /// written)
    type RouteCase<'a> = (
        SenderRewrite,
        &'a [u8],
        Option<&'a Address>,
        &'a str,
        Option<&'a Address>,
        Option<&'a str>,
    );

    #[test]
    fn route_and_sender_name_table() {
        let alerts = Address::parse("alerts@contoso.com").unwrap();
        let relay = Address::parse("relay@contoso.com").unwrap();
        // (rewrite, header section, envelope sender at MAIL, account, final envelope, From: written)
        let cases: [RouteCase<'_>; 7] = [
            // A missing From: is added with the chosen account's name.
            (
                SenderRewrite::Never,
                b"Subject: x\r\n",
                Some(&alerts),
                "alerts",
                Some(&alerts),
                Some("From: \"Alerts\" <alerts@contoso.com>\r\n"),
            ),
            (
                SenderRewrite::Never,
                b"From: alerts@contoso.com\r\n",
                Some(&alerts),
                "alerts",
                Some(&alerts),
                None,
            ),
            // From: of the default account, envelope of another: the default account.
            (
                SenderRewrite::Never,
                b"From: relay@contoso.com\r\n",
                Some(&alerts),
                "m365",
                Some(&alerts),
                None,
            ),
            // ... and with "always" the envelope follows the default account too.
            (
                SenderRewrite::Always,
                b"From: relay@contoso.com\r\n",
                Some(&alerts),
                "m365",
                Some(&relay),
                None,
            ),
            // A rewrite writes the account's name when the client gave none ...
            (
                SenderRewrite::WhenNotAllowed,
                b"From: scan@printers.lan\r\n",
                Some(&relay),
                "m365",
                Some(&relay),
                Some("From: \"Relay\" <relay@contoso.com>\r\n"),
            ),
            // ... keeps the client's name ...
            (
                SenderRewrite::WhenNotAllowed,
                b"From: Scanner <scan@printers.lan>\r\n",
                Some(&relay),
                "m365",
                Some(&relay),
                Some("From: \"Scanner\" <relay@contoso.com>\r\n"),
            ),
            // ... unless "always".
            (
                SenderRewrite::Always,
                b"From: Scanner <scan@printers.lan>\r\n",
                Some(&relay),
                "m365",
                Some(&relay),
                Some("From: \"Relay\" <relay@contoso.com>\r\n"),
            ),
        ];
        for (rewrite, headers, envelope, account, final_envelope, written) in cases {
            let shown = String::from_utf8_lossy(headers);
            let routing = route(headers, &routed_grant(rewrite), envelope);
            assert_eq!(routing.grant.account, account, "{rewrite:?} {shown}");
            assert_eq!(
                routing.envelope_sender.as_ref(),
                final_envelope,
                "{rewrite:?} {shown}"
            );
            let edit =
                sender_edit(headers, &routing.grant, routing.envelope_sender.as_ref()).unwrap();
            let from = edit
                .replace_from
                .or_else(|| edit.append.into_iter().find(|f| f.starts_with("From:")));
            assert_eq!(from.as_deref(), written, "{rewrite:?} {shown}");
        }
    }
}
