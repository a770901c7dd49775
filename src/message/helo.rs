//! The client's HELO/EHLO argument as the `Received:` field writes it.
//!
//! The argument is whatever the client typed (any bytes but spaces and controls), and the
//! field is read by every system downstream, so it is written only in a form that cannot break
//! the trace syntax (RFC 5321 §4.4, RFC 5322 §3.6.7):
//! - a domain name (letters, digits, `-`, `_`, dot-separated labels of at most 63 characters)
//!   or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is kept as is, in the
//!   `from` clause;
//! - anything else goes into the comment as `helo=…`, with every character outside a safe set
//!   (ASCII letters, digits, `-._:[]`) percent-encoded from its UTF-8 bytes, cut to
//!   [`MAX_ESCAPED_HELO`] characters; the `from` clause then says `unknown`.
//!
//! Invariant: what this module returns is printable ASCII without spaces, parentheses,
//! backslashes, semicolons or quotes.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest escaped argument written in the comment (an escape is never cut in half).
pub const MAX_ESCAPED_HELO: usize = 64;

/// How the `Received:` field names the client's HELO argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceHelo {
    /// Safe as the `from` domain.
    Domain(String),
    /// Unsafe or not a domain: escaped, for the comment.
    Escaped(String),
}

/// Classify and, where needed, escape a HELO argument (see the module docs).
pub fn trace_helo(helo: &str) -> TraceHelo {
    if is_domain(helo) || is_address_literal(helo) {
        TraceHelo::Domain(helo.to_string())
    } else {
        TraceHelo::Escaped(escape(helo))
    }
}

fn is_domain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_address_literal(text: &str) -> bool {
    let Some(inside) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return false;
    };
    match inside.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inside
            .get(5..)
            .is_some_and(|v6| v6.parse::<Ipv6Addr>().is_ok()),
        _ => inside.parse::<Ipv4Addr>().is_ok(),
    }
}

fn escape(text: &str) -> String {
    let mut escaped = String::new();
    for byte in text.bytes() {
        let piece = if byte.is_ascii_alphanumeric() || b"-._:[]".contains(&byte) {
            char::from(byte).to_string()
        } else {
            format!("%{byte:02X}")
        };
        if escaped.len() + piece.len() > MAX_ESCAPED_HELO {
            break;
        }
        escaped.push_str(&piece);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helo_arguments_in_the_trace() {
        let domain = |s: &str| TraceHelo::Domain(s.into());
        let escaped = |s: &str| TraceHelo::Escaped(s.into());
        let long_label = "a".repeat(64);
        let cases = [
            ("printer.lan", domain("printer.lan")),
            ("HP_LaserJet-4", domain("HP_LaserJet-4")),
            ("[192.0.2.7]", domain("[192.0.2.7]")),
            ("[IPv6:2001:db8::1]", domain("[IPv6:2001:db8::1]")),
            ("[ipv6:::1]", domain("[ipv6:::1]")),
            ("x)", escaped("x%29")),
            ("(x", escaped("%28x")),
            ("a\\b", escaped("a%5Cb")),
            ("héllo", escaped("h%C3%A9llo")),
            ("a;b=\"c\"", escaped("a%3Bb%3D%22c%22")),
            ("a..b", escaped("a..b")),
            (".lan", escaped(".lan")),
            ("[300.1.1.1]", escaped("[300.1.1.1]")),
            ("[IPv6:nope]", escaped("[IPv6:nope]")),
            ("%41", escaped("%2541")),
            (
                long_label.as_str(),
                escaped(&long_label[..MAX_ESCAPED_HELO]),
            ),
        ];
        for (helo, expected) in cases {
            assert_eq!(trace_helo(helo), expected, "{helo}");
        }
    }

    #[test]
    fn escaped_arguments_are_cut_without_splitting_an_escape() {
        let TraceHelo::Escaped(cut) = trace_helo(&"é".repeat(100)) else {
            unreachable!("not a domain");
        };
        assert!(cut.len() <= MAX_ESCAPED_HELO, "{cut}");
        assert_eq!(cut.len() % 3, 0, "{cut}");
        assert!(cut.starts_with("%C3%A9"));
        for helo in [
            "x)",
            "héllo",
            "((((",
            "a\\)",
            "\u{7f}",
            "a b",
            "\u{202e}evil",
        ] {
            let written = match trace_helo(helo) {
                TraceHelo::Domain(d) | TraceHelo::Escaped(d) => d,
            };
            assert!(
                written
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()\\;\"".contains(&b)),
                "{helo} -> {written}"
            );
        }
    }
}
