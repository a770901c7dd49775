//! SMTP replies: a three-digit code, an RFC 3463 enhanced status code and text, rendered as
//! one or more CRLF-terminated lines (`250-…` continuation, `250 …` final).
//!
//! Invariants: a rendered line never exceeds [`MAX_REPLY_LINE`] octets (RFC 5321 §4.5.3.1.5
//! allows 512 including CRLF), never contains a bare CR or LF from the text, and every reply of
//! class 2, 4 or 5 that is built with [`Reply::new`] carries an enhanced code.

use std::borrow::Cow;
use std::fmt;

/// Longest reply line we emit, excluding CRLF (RFC 5321: 512 octets including CRLF).
pub const MAX_REPLY_LINE: usize = 510;

/// One SMTP reply, possibly multi-line.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A single-line reply with an enhanced status code, e.g. `Reply::new(250, "2.1.0", "Ok")`.
    pub fn new(code: u16, enhanced: &str, text: impl Into<Cow<'static, str>>) -> Reply {
        let text = text.into();
        let line = if enhanced.is_empty() {
            text
        } else {
            Cow::Owned(format!("{enhanced} {text}"))
        };
        Reply {
            code,
            lines: vec![line],
        }
    }

    /// A reply whose lines carry no enhanced code: the greeting, EHLO/HELO answers and the
    /// intermediate `334`/`354` replies (RFC 2034 §3 excludes those).
    pub fn bare(code: u16, lines: Vec<Cow<'static, str>>) -> Reply {
        Reply { code, lines }
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply text, lines joined with a space (for logs).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Append the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let code = self.code.min(999);
        let count = self.lines.len().max(1);
        for index in 0..count {
            let text = self.lines.get(index).map(|l| l.as_ref()).unwrap_or("");
            let separator = if index + 1 == count { ' ' } else { '-' };
            out.extend_from_slice(format!("{code:03}{separator}").as_bytes());
            let mut written = 0;
            for ch in text.chars() {
                let ch = if ch == '\r' || ch == '\n' || ch.is_control() {
                    ' '
                } else {
                    ch
                };
                if written + ch.len_utf8() > MAX_REPLY_LINE - 4 {
                    break;
                }
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                written += ch.len_utf8();
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The wire form as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_enhanced_code() {
        let reply = Reply::new(250, "2.1.0", "Ok");
        assert_eq!(reply.to_bytes(), b"250 2.1.0 Ok\r\n");
    }

    #[test]
    fn multi_line_uses_dash_continuation() {
        let reply = Reply::bare(
            250,
            vec!["relay Hello".into(), "PIPELINING".into(), "SIZE 10".into()],
        );
        assert_eq!(
            reply.to_bytes(),
            b"250-relay Hello\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
    }

    #[test]
    fn empty_reply_renders_code_only() {
        let reply = Reply::bare(334, vec![]);
        assert_eq!(reply.to_bytes(), b"334 \r\n");
    }

    #[test]
    fn control_characters_and_overlong_text_are_neutralised() {
        let reply = Reply::new(550, "5.7.1", format!("a\r\nb{}", "x".repeat(2000)));
        let bytes = reply.to_bytes();
        assert!(bytes.len() <= MAX_REPLY_LINE + 2);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(bytes.starts_with(b"550 5.7.1 a  b"));
    }
}
