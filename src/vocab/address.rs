//! Mailbox addresses as they appear in SMTP paths (`MAIL FROM:<…>`, `RCPT TO:<…>`).
//!
//! Pure parsing, no I/O. Liberal where old devices are sloppy (a space after the colon, a
//! missing pair of angle brackets, an RFC 821 source route) and strict where it matters: no
//! control characters, no unbalanced brackets or quotes, bounded lengths, always a domain.
//! UTF-8 local parts and domains are accepted (SMTPUTF8); [`Address::is_ascii`] tells the
//! delivery side whether it must ask Exchange for SMTPUTF8.

use std::fmt;

/// Longest address we accept (RFC 5321 §4.5.3.1.3: a path is at most 256 octets with brackets).
pub const MAX_ADDRESS_LEN: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;

/// A syntactically valid `local@domain` mailbox.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    text: String,
    at: usize,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than 254 octets")]
    TooLong,
    #[error("the address has no @domain")]
    MissingDomain,
    #[error("the local part is empty or longer than 64 octets")]
    BadLocalPart,
    #[error("the domain is not a valid host name or address literal")]
    BadDomain,
    #[error("the address contains characters that are not allowed")]
    BadCharacter,
    #[error("unbalanced angle brackets or quotes")]
    Unbalanced,
}

impl Address {
    /// Parse a bare `local@domain` (no angle brackets).
    pub fn parse(input: &str) -> Result<Address, AddressError> {
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        if input.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::TooLong);
        }
        let at = split_at_sign(input)?;
        let local = input.get(..at).ok_or(AddressError::MissingDomain)?;
        let domain = input.get(at + 1..).ok_or(AddressError::MissingDomain)?;
        validate_local_part(local)?;
        validate_domain(domain)?;
        Ok(Address {
            text: input.to_string(),
            at,
        })
    }

    /// The part before the last `@`.
    pub fn local_part(&self) -> &str {
        self.text.get(..self.at).unwrap_or("")
    }

    /// The part after the last `@`.
    pub fn domain(&self) -> &str {
        self.text.get(self.at + 1..).unwrap_or("")
    }

    /// The whole address as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when no character needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.text.is_ascii()
    }

    /// Case-insensitive comparison, as mailbox owners expect (`Scanner@Contoso.com` is
    /// `scanner@contoso.com` for every mail system the relay talks to).
    pub fn eq_ignore_case(&self, other: &str) -> bool {
        self.text.to_lowercase() == other.to_lowercase()
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Address::parse(&value)
    }
}

impl From<Address> for String {
    fn from(value: Address) -> String {
        value.text
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.text)
    }
}

/// Parse the path that follows `FROM:` or `TO:`: `<addr>`, `<>` (only when `allow_null`),
/// `addr` without brackets, or `<@route,@route:addr>`. Returns the address (`None` for the
/// null path) and the rest of the line (the ESMTP parameters).
pub fn parse_path(input: &str, allow_null: bool) -> Result<(Option<Address>, &str), AddressError> {
    let input = input.trim_start_matches([' ', '\t']);
    let (inner, rest) = if let Some(after) = input.strip_prefix('<') {
        let close = find_closing_bracket(after)?;
        let inner = after.get(..close).ok_or(AddressError::Unbalanced)?;
        let rest = after.get(close + 1..).ok_or(AddressError::Unbalanced)?;
        (inner, rest)
    } else {
        let end = input.find([' ', '\t']).unwrap_or(input.len());
        let (inner, rest) = input.split_at(end);
        if inner.contains(['<', '>']) {
            return Err(AddressError::Unbalanced);
        }
        (inner, rest)
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(AddressError::BadCharacter);
    }
    let inner = strip_source_route(inner)?;
    if inner.is_empty() {
        return if allow_null {
            Ok((None, rest))
        } else {
            Err(AddressError::Empty)
        };
    }
    Ok((Some(Address::parse(inner)?), rest))
}

fn find_closing_bracket(after_open: &str) -> Result<usize, AddressError> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (index, ch) in after_open.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => return Ok(index),
            '<' if !in_quotes => return Err(AddressError::Unbalanced),
            _ => {}
        }
    }
    Err(AddressError::Unbalanced)
}

/// `@a,@b:user@domain` → `user@domain` (RFC 5321 §4.1.2: routes are accepted and ignored).
fn strip_source_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let colon = inner.find(':').ok_or(AddressError::BadDomain)?;
    let route = inner.get(..colon).unwrap_or("");
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::BadDomain)?;
        validate_domain(domain)?;
    }
    Ok(inner.get(colon + 1..).unwrap_or(""))
}

/// Index of the `@` that separates local part and domain (the last one outside quotes).
fn split_at_sign(input: &str) -> Result<usize, AddressError> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut at = None;
    for (index, ch) in input.char_indices() {
        match ch {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '@' if !in_quotes => at = Some(index),
            _ => {}
        }
    }
    if in_quotes {
        return Err(AddressError::Unbalanced);
    }
    at.ok_or(AddressError::MissingDomain)
}

fn validate_local_part(local: &str) -> Result<(), AddressError> {
    if local.is_empty() || local.len() > MAX_LOCAL_PART_LEN {
        return Err(AddressError::BadLocalPart);
    }
    if let Some(quoted) = local.strip_prefix('"') {
        let body = quoted.strip_suffix('"').ok_or(AddressError::Unbalanced)?;
        let mut escaped = false;
        for ch in body.chars() {
            if ch.is_control() && ch != '\t' {
                return Err(AddressError::BadCharacter);
            }
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return Err(AddressError::Unbalanced),
                _ => {}
            }
        }
        return if escaped {
            Err(AddressError::Unbalanced)
        } else {
            Ok(())
        };
    }
    // Dot-atom, with tolerance for the consecutive or trailing dots that some devices send.
    if local.starts_with('.') {
        return Err(AddressError::BadLocalPart);
    }
    for ch in local.chars() {
        let allowed = ch.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~.".contains(ch)
            || (!ch.is_ascii() && !ch.is_control() && !ch.is_whitespace());
        if !allowed {
            return Err(AddressError::BadCharacter);
        }
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() || domain.len() > 253 {
        return Err(AddressError::BadDomain);
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal.strip_suffix(']').ok_or(AddressError::BadDomain)?;
        let ok = literal.parse::<std::net::Ipv4Addr>().is_ok()
            || literal
                .strip_prefix("IPv6:")
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
        return if ok {
            Ok(())
        } else {
            Err(AddressError::BadDomain)
        };
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::BadDomain);
        }
        let ok = label.chars().all(|ch| {
            ch.is_ascii_alphanumeric()
                || ch == '-'
                || ch == '_'
                || (!ch.is_ascii() && ch.is_alphanumeric())
        });
        if !ok {
            return Err(AddressError::BadDomain);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    type PathCase = (
        &'static str,
        bool,
        Result<Option<&'static str>, AddressError>,
        &'static str,
    );

    #[test]
    fn paths_table() {
        let cases: &[PathCase] = &[
            ("<a@b.example>", false, Ok(Some("a@b.example")), ""),
            (
                "<a@b.example> SIZE=10",
                false,
                Ok(Some("a@b.example")),
                " SIZE=10",
            ),
            (" <a@b.example>", false, Ok(Some("a@b.example")), ""),
            ("a@b.example", false, Ok(Some("a@b.example")), ""),
            (
                "a@b.example BODY=8BITMIME",
                false,
                Ok(Some("a@b.example")),
                " BODY=8BITMIME",
            ),
            ("<>", true, Ok(None), ""),
            ("<>", false, Err(AddressError::Empty), ""),
            (
                "<@relay.example,@x.example:a@b.example>",
                false,
                Ok(Some("a@b.example")),
                "",
            ),
            (
                "<\"john doe\"@b.example>",
                false,
                Ok(Some("\"john doe\"@b.example")),
                "",
            ),
            (
                "<\"a>b\"@b.example>",
                false,
                Ok(Some("\"a>b\"@b.example")),
                "",
            ),
            (
                "<jörg@bücher.example>",
                false,
                Ok(Some("jörg@bücher.example")),
                "",
            ),
            ("<a@[192.0.2.1]>", false, Ok(Some("a@[192.0.2.1]")), ""),
            (
                "<a@[IPv6:2001:db8::1]>",
                false,
                Ok(Some("a@[IPv6:2001:db8::1]")),
                "",
            ),
            ("<a@b.example", false, Err(AddressError::Unbalanced), ""),
            ("<a@b.example>x", false, Err(AddressError::BadCharacter), ""),
            ("<postmaster>", false, Err(AddressError::MissingDomain), ""),
            (
                "<a b@c.example>",
                false,
                Err(AddressError::BadCharacter),
                "",
            ),
            ("<a@b..example>", false, Err(AddressError::BadDomain), ""),
            ("<a@-b.example>", false, Err(AddressError::BadDomain), ""),
            ("<@b.example>", false, Err(AddressError::BadDomain), ""),
            ("<a@>", false, Err(AddressError::BadDomain), ""),
            (
                "<\u{1}a@b.example>",
                false,
                Err(AddressError::BadCharacter),
                "",
            ),
            ("<a@b<c.example>", false, Err(AddressError::Unbalanced), ""),
        ];
        for (input, allow_null, expected, expected_rest) in cases {
            let got = parse_path(input, *allow_null);
            match (got, expected) {
                (Ok((addr, rest)), Ok(want)) => {
                    assert_eq!(addr.as_ref().map(Address::as_str), *want, "{input}");
                    assert_eq!(rest, *expected_rest, "{input}");
                }
                (Err(err), Err(want)) => assert_eq!(err, *want, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn overlong_parts_are_refused() {
        let local = "a".repeat(65);
        assert_eq!(
            Address::parse(&format!("{local}@b.example")),
            Err(AddressError::BadLocalPart)
        );
        let long = format!("a@{}.example", "b".repeat(250));
        assert_eq!(Address::parse(&long), Err(AddressError::TooLong));
    }

    #[test]
    fn parts_and_case() {
        let addr = Address::parse("Scanner@Contoso.com").unwrap();
        assert_eq!(addr.local_part(), "Scanner");
        assert_eq!(addr.domain(), "Contoso.com");
        assert!(addr.eq_ignore_case("scanner@contoso.COM"));
        assert!(addr.is_ascii());
    }
}
