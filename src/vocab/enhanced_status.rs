//! RFC 3463 enhanced status codes (`5.7.139`) as they open an SMTP reply's text: read by the
//! SMTP transport's classifier and by the DSN builder, which reports them.
//!
//! Invariant: pure and total; never panics on any text.

use std::fmt;

/// An RFC 3463 enhanced status code such as `5.7.139`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2, 4 or 5.
    pub class: u8,
    /// 0..=999.
    pub subject: u16,
    /// 0..=999.
    pub detail: u16,
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Parses the enhanced status code at the start of a reply text (leading whitespace allowed):
/// `class.subject.detail` with class 2, 4 or 5 and one to three digits in the others, followed
/// by the end of the text or a character that is not a letter, digit or dot.
pub fn enhanced_code(text: &str) -> Option<EnhancedStatus> {
    let text = text.trim_start();
    let token_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (token, rest) = text.split_at(token_end);
    if rest.starts_with(|c: char| c.is_alphanumeric()) {
        return None;
    }
    let mut parts = token.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let class = match class {
        "2" => 2,
        "4" => 4,
        "5" => 5,
        _ => return None,
    };
    Some(EnhancedStatus {
        class,
        subject: one_to_three_digits(subject)?,
        detail: one_to_three_digits(detail)?,
    })
}

/// Parses 1 to 3 ASCII digits.
fn one_to_three_digits(part: &str) -> Option<u16> {
    if (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()) {
        part.parse().ok()
    } else {
        None
    }
}
