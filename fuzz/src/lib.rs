//! Shared helpers for the fuzz targets: turning fuzzer bytes into chunk splits, mapping bytes
//! into the SMTP alphabet (as smtp-proto's fuzz target does), and the small reference models
//! the targets compare the relay's incremental parsers against. Panicking is the point here:
//! a failed assertion is a finding.

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// Reads control values from the front of the fuzzer input; the rest is the payload.
pub struct Control<'a> {
    data: &'a [u8],
}

impl<'a> Control<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Control { data }
    }

    /// One control byte (0 when the input is exhausted).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// A list of up to 15 chunk sizes (each 0..=255; 0 means an empty feed).
    pub fn chunk_sizes(&mut self) -> Vec<usize> {
        let count = usize::from(self.byte() % 16);
        (0..count).map(|_| usize::from(self.byte())).collect()
    }

    /// Everything not consumed as control.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Cut `payload` into chunks of the given sizes (clamped); the remainder is the last chunk.
pub fn chunks<'a>(payload: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    for &size in sizes {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// Tokens of the SMTP command alphabet. Bytes that are ASCII letters or digits stay
/// themselves; every other byte selects one of these.
const TOKENS: &[&str] = &[
    "MAIL FROM:",
    "RCPT TO:",
    "EHLO ",
    "HELO ",
    "AUTH ",
    "DATA",
    "RSET",
    "QUIT",
    "NOOP",
    "VRFY ",
    "STARTTLS",
    "BDAT ",
    "<",
    ">",
    "<>",
    "@",
    ":",
    "=",
    " ",
    "  ",
    "\t",
    "\r",
    "\n",
    "\r\n",
    ".",
    "..",
    ",",
    "\"",
    "\\",
    "[",
    "]",
    "IPv6:",
    "2001:db8::1",
    "192.0.2.1",
    "SIZE=",
    "BODY=",
    "8BITMIME",
    "7BIT",
    "SMTPUTF8",
    "AUTH=",
    "PLAIN",
    "LOGIN",
    "XOAUTH2",
    "-",
    "_",
    "+",
    "a@b.example",
    "contoso.com",
    "é",
    "ü",
    "日本",
    "\u{a0}",
    "\u{2028}",
    "\u{0}",
    "\u{7f}",
    "\u{1}",
    "*",
    "%",
    "!",
    "'",
    "/",
    "0",
    "99999999999999999999999",
];

/// Map arbitrary bytes into the SMTP alphabet (verbs, brackets, `@`, `:`, `=`, spaces, CR, LF,
/// dots, quotes, UTF-8) so that the fuzzer spends its time on inputs the parser takes seriously.
pub fn smtp_alphabet(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 2);
    for &byte in data {
        if byte.is_ascii_alphanumeric() {
            out.push(byte);
        } else {
            out.extend_from_slice(TOKENS[usize::from(byte) % TOKENS.len()].as_bytes());
        }
    }
    out
}

/// True when `bytes` contains a CR not followed by LF or an LF not preceded by CR.
pub fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    })
}

/// Where the DATA phase ends in `raw` (the number of bytes it consumes): right after the first
/// strict `CRLF . CRLF`, where the data's own start counts as following a CRLF.
pub fn data_end(raw: &[u8]) -> Option<usize> {
    if raw.starts_with(b".\r\n") {
        return Some(3);
    }
    raw.windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|index| index + 5)
}

/// Reference model of the DATA receiver, written for clarity, not speed. Returns the content
/// and the consumed length; for unfinished input, the content of `raw` closed by a real end.
///
/// The content is split into lines at strict CRLF only. A line starting with `.` loses that dot
/// when something other than CR or LF follows it (RFC 5321 §4.5.2 transparency); a `.` ended by
/// a bare CR or LF is kept (it is content, and the sending client stuffs it again). Then every
/// bare CR and bare LF becomes CRLF.
pub fn data_model(raw: &[u8]) -> (Vec<u8>, Option<usize>) {
    let (content, end) = match data_end(raw) {
        Some(end) => (&raw[..end - 3], Some(end)),
        None => {
            let mut closed = raw.to_vec();
            closed.extend_from_slice(b"\r\n.\r\n");
            let end = data_end(&closed).unwrap_or(closed.len());
            return (data_model_content(&closed[..end - 3]), None);
        }
    };
    (data_model_content(content), end)
}

fn data_model_content(content: &[u8]) -> Vec<u8> {
    // Split at strict CRLF; unstuff a leading dot followed by anything but CR or LF; CRs just
    // before a CRLF merge into it; inside a line a bare LF, or CRs followed by LF, is a line
    // end; other CR runs are one space in the header section (before the first empty line)
    // and one line end per CR in the body.
    struct Out {
        bytes: Vec<u8>,
        in_headers: bool,
        line_has_content: bool,
    }
    impl Out {
        fn text(&mut self, byte: u8) {
            self.bytes.push(byte);
            self.line_has_content = true;
        }
        fn line_end(&mut self) {
            if !self.line_has_content {
                self.in_headers = false;
            }
            self.line_has_content = false;
            self.bytes.extend_from_slice(b"\r\n");
        }
    }
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut index = 0;
    while index + 1 < content.len() {
        if content[index] == b'\r' && content[index + 1] == b'\n' {
            lines.push(&content[start..index]);
            index += 2;
            start = index;
        } else {
            index += 1;
        }
    }
    lines.push(&content[start..]);
    let mut out = Out {
        bytes: Vec::new(),
        in_headers: true,
        line_has_content: false,
    };
    let last = lines.len() - 1;
    for (number, line) in lines.iter().enumerate() {
        if number > 0 {
            out.line_end();
        }
        let mut line = match (line.first(), line.get(1)) {
            (Some(b'.'), Some(next)) if *next != b'\r' && *next != b'\n' => &line[1..],
            _ => *line,
        };
        if number < last {
            while let Some(rest) = line.strip_suffix(b"\r") {
                line = rest;
            }
        }
        let mut i = 0;
        while i < line.len() {
            match line[i] {
                b'\n' => {
                    out.line_end();
                    i += 1;
                }
                b'\r' => {
                    let run = line[i..].iter().take_while(|&&b| b == b'\r').count();
                    let after = i + run;
                    match line.get(after) {
                        Some(b'\n') => {
                            out.line_end();
                            i = after + 1;
                        }
                        None => i = after,
                        Some(_) => {
                            if out.in_headers {
                                out.text(b' ');
                            } else {
                                for _ in 0..run {
                                    out.line_end();
                                }
                            }
                            i = after;
                        }
                    }
                }
                byte => {
                    out.text(byte);
                    i += 1;
                }
            }
        }
    }
    out.bytes
}

/// One framed command line as the reference model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLine {
    Line(Vec<u8>),
    TooLong,
}

/// Reference model of the command-line reader: split the whole stream at LF, drop one CR
/// before the LF, refuse lines longer than `cap`. The unterminated tail is not a line yet.
pub fn line_model(stream: &[u8], cap: usize) -> Vec<ModelLine> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    pieces.pop();
    for piece in pieces {
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        if line.len() > cap {
            out.push(ModelLine::TooLong);
        } else {
            out.push(ModelLine::Line(line.to_vec()));
        }
    }
    out
}

/// Reference model of where a message's header section ends: the first line (complete or the
/// unterminated last one) that is empty or is neither a `name: value` field nor a continuation
/// of one. Returns its offset, or the length when every line is part of the header section.
pub fn header_end_model(content: &[u8]) -> usize {
    let mut offset = 0;
    for (number, piece) in content.split(|&b| b == b'\n').enumerate() {
        if offset >= content.len() {
            break;
        }
        let line = piece.strip_suffix(b"\r").unwrap_or(piece);
        let continuation = number > 0 && matches!(line.first(), Some(b' ' | b'\t'));
        // A printable name, optionally followed by white space, then the colon.
        let field = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let name = &line[..colon];
                let trimmed = name.len()
                    - name
                        .iter()
                        .rev()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                trimmed > 0 && name[..trimmed].iter().all(|&b| (33..=126).contains(&b))
            }
            None => false,
        };
        if line.is_empty() || !(continuation || field) {
            return offset;
        }
        offset += piece.len() + 1;
    }
    content.len()
}

/// Whether the header section has the field `name` (case-insensitive; white space may come
/// before the `:`).
pub fn has_field(headers: &[u8], name: &str) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()..]
                .iter()
                .find(|&&b| b != b' ' && b != b'\t')
                == Some(&b':')
    })
}
