//! The DATA receiver: turns the bytes a client sends after `354` into the message content.
//!
//! Invariants (the SMTP-smuggling rules):
//! - The data ends only at a strict `CRLF . CRLF`. A dot line closed by a bare LF or a bare CR
//!   (`\n.\n`, `\n.\r\n`, `\r.\r\n`, `\r\n.\r`, `\r\n.\n`) is content, never an end.
//! - The output uses CRLF everywhere, because Exchange refuses bare line feeds (`550 5.6.11`):
//!   a bare LF becomes CRLF, and so does a run of CRs before an LF (`\r\r\n` from clients
//!   that convert line ends twice). A bare CR inside a line is a line break in the body but a
//!   space in the header section, so it can never start a header field. A `.` line produced
//!   by any of this stays in the content and is dot-stuffed again by the SMTP client that
//!   sends it on.
//! - Dot-unstuffing (RFC 5321 §4.5.2) applies only to lines that start after a real CRLF.
//! - Output beyond `limit` bytes is counted but not kept, so an oversized message is drained
//!   in constant memory and answered at its end.
//!
//! Pure state machine: feed it any split of the input and the result is the same.

/// Where the receiver is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed a real CRLF (or the start of the data).
    LineStart,
    /// A `.` was seen at `LineStart`.
    Dot,
    /// `.` then CR at `LineStart`: one LF more ends the data.
    DotCr,
    /// Inside a line.
    MidLine,
    /// One or more CRs were seen inside a line (counted in `DataReceiver::crs`); an LF makes
    /// the run one real line end.
    Cr,
}

/// What [`DataReceiver::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All input was consumed; the end of data has not been seen yet.
    NeedMore,
    /// The end of data was seen after `consumed` bytes of the input; the rest belongs to the
    /// commands that follow (pipelining).
    Finished { consumed: usize },
}

/// Incremental, bounded DATA receiver. See the module documentation.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    /// CRs pending in [`State::Cr`].
    crs: u32,
    /// Still in the header section (no empty line yet).
    in_headers: bool,
    /// The current output line has content (so its end is not the empty line).
    line_has_content: bool,
    size: u64,
    limit: u64,
    exceeded: bool,
    eight_bit: bool,
}

impl DataReceiver {
    /// A receiver that keeps at most `limit` bytes of content.
    pub fn new(limit: u64) -> DataReceiver {
        DataReceiver {
            state: State::LineStart,
            crs: 0,
            in_headers: true,
            line_has_content: false,
            size: 0,
            limit,
            exceeded: false,
            eight_bit: false,
        }
    }

    /// Content bytes seen so far (including those not kept after the limit).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once the content went over the limit; the output is then incomplete.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// True when the content has a byte outside 7-bit ASCII.
    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.limit {
            self.exceeded = true;
        }
        if !self.exceeded {
            if !self.eight_bit && !bytes.is_ascii() {
                self.eight_bit = true;
            }
            out.extend_from_slice(bytes);
        }
    }

    /// Bytes within a line.
    fn text(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if !bytes.is_empty() {
            self.line_has_content = true;
            self.emit(bytes, out);
        }
    }

    /// A line end (always written as CRLF); the first empty line ends the header section.
    fn line_end(&mut self, out: &mut Vec<u8>) {
        if !self.line_has_content {
            self.in_headers = false;
        }
        self.line_has_content = false;
        self.emit(b"\r\n", out);
    }

    /// A run of bare CRs inside a line (not followed by LF). In the header section it becomes
    /// one space: a CR must not start a new field (`Subject: x\rBcc: y`). In the body each
    /// CR is a line break, as old Mac text meant it.
    fn bare_crs(&mut self, out: &mut Vec<u8>) {
        if self.in_headers {
            self.text(b" ", out);
        } else {
            for _ in 0..self.crs {
                self.line_end(out);
            }
        }
        self.crs = 0;
    }

    /// Consume `input`, appending content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut index = 0;
        while let Some(rest) = input.get(index..) {
            let Some(&byte) = rest.first() else { break };
            match self.state {
                State::MidLine => match memchr::memchr2(b'\r', b'\n', rest) {
                    None => {
                        self.text(rest, out);
                        index = input.len();
                    }
                    Some(position) => {
                        self.text(rest.get(..position).unwrap_or(&[]), out);
                        index += position + 1;
                        if rest.get(position) == Some(&b'\r') {
                            self.crs = 1;
                            self.state = State::Cr;
                        } else {
                            self.line_end(out);
                        }
                    }
                },
                State::Cr => match byte {
                    // CR LF, and CR CR LF from clients that convert line ends twice: one
                    // line end.
                    b'\n' => {
                        index += 1;
                        self.crs = 0;
                        self.line_end(out);
                        self.state = State::LineStart;
                    }
                    b'\r' => {
                        index += 1;
                        self.crs = self.crs.saturating_add(1);
                    }
                    _ => {
                        self.bare_crs(out);
                        self.state = State::MidLine;
                    }
                },
                State::LineStart => {
                    if byte == b'.' {
                        index += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::MidLine;
                    }
                }
                State::Dot => match byte {
                    b'\r' => {
                        index += 1;
                        self.state = State::DotCr;
                    }
                    b'\n' => {
                        // ".\n": a dot line ended by a bare LF is content, not the end.
                        index += 1;
                        self.text(b".", out);
                        self.line_end(out);
                        self.state = State::MidLine;
                    }
                    // A transparency dot: drop it and read the rest of the line as it is.
                    _ => self.state = State::MidLine,
                },
                State::DotCr => {
                    if byte == b'\n' {
                        return Feed::Finished {
                            consumed: index + 1,
                        };
                    }
                    // ".\r" followed by something else: a "." line ended by a bare CR.
                    self.text(b".", out);
                    self.crs = 1;
                    self.state = State::Cr;
                }
            }
        }
        Feed::NeedMore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in every two-way split and in single bytes; all must agree.
    fn receive(input: &[u8]) -> (Vec<u8>, Option<usize>) {
        let whole = receive_chunks(input, &[input.len()]);
        for cut in 0..=input.len() {
            assert_eq!(
                receive_chunks(input, &[cut, input.len() - cut]),
                whole,
                "split at {cut}"
            );
        }
        let ones = vec![1; input.len()];
        assert_eq!(receive_chunks(input, &ones), whole, "byte by byte");
        whole
    }

    fn receive_chunks(input: &[u8], sizes: &[usize]) -> (Vec<u8>, Option<usize>) {
        let mut receiver = DataReceiver::new(u64::MAX);
        let mut out = Vec::new();
        let mut offset = 0;
        for &size in sizes {
            let chunk = &input[offset..offset + size];
            if let Feed::Finished { consumed } = receiver.feed(chunk, &mut out) {
                return (out, Some(offset + consumed));
            }
            offset += size;
        }
        (out, None)
    }

    #[test]
    fn end_and_unstuffing_table() {
        let cases: &[(&[u8], &[u8], Option<usize>)] = &[
            (b".\r\n", b"", Some(3)),
            (b"a\r\n.\r\n", b"a\r\n", Some(6)),
            (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", Some(6)),
            (b"..a\r\n.\r\n", b".a\r\n", Some(8)),
            (b"a\r\n..\r\n.\r\n", b"a\r\n.\r\n", Some(10)),
            (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n", Some(11)),
            (b"a.b\r\n.\r\n", b"a.b\r\n", Some(8)),
            (b"a\r\n.", b"a\r\n", None),
            (b"a\r\n.\r", b"a\r\n", None),
        ];
        for (input, content, end) in cases {
            let (out, consumed) = receive(input);
            assert_eq!(out, *content, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(consumed, *end, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn smuggling_vectors_are_content_never_an_end() {
        // Each vector is followed by more content and a real end; the vector must stay content
        // with CRLF line endings, and the data must end only at the real CRLF.CRLF.
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"a\n.\nMAIL FROM:<x@y.example>\r\n.\r\n",
                b"a\r\n.\r\nMAIL FROM:<x@y.example>\r\n",
            ),
            (b"a\n.\r\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r.\r\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r\n.\rMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r\n.\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r\n.\r\r\nMAIL\r\n.\r\n", b"a\r\n.\r\nMAIL\r\n"),
            (b"a\r\n.\r\rMAIL\r\n.\r\n", b"a\r\n.\r\n\r\nMAIL\r\n"),
            (b"a\n\n.\n\nb\r\n.\r\n", b"a\r\n\r\n.\r\n\r\nb\r\n"),
        ];
        for (vector, content) in cases {
            // In the body (after a header section), where line ends are normalised.
            let input = [b"S: x\r\n\r\n".as_slice(), vector].concat();
            let content = [b"S: x\r\n\r\n".as_slice(), content].concat();
            let (out, consumed) = receive(&input);
            assert_eq!(out, content, "{:?}", String::from_utf8_lossy(&input));
            assert_eq!(
                consumed,
                Some(input.len()),
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        // Body: bare LF and bare CR are line breaks; CR CR LF is one line end.
        let (out, consumed) = receive(b"S: x\r\n\r\none\ntwo\rthree\r\r\nfour\r\n.\r\n");
        assert_eq!(out, b"S: x\r\n\r\none\r\ntwo\r\nthree\r\nfour\r\n");
        assert_eq!(consumed, Some(33));
    }

    #[test]
    fn a_bare_cr_never_starts_a_header_field() {
        let cases: &[(&[u8], &[u8])] = &[
            // A CR in a header value (an app that put form input into Subject:).
            (
                b"Subject: X\rReply-To: attacker@evil.example\r\n\r\nbody\r\n",
                b"Subject: X Reply-To: attacker@evil.example\r\n\r\nbody\r\n",
            ),
            // CR CR LF line ends keep the header section whole.
            (
                b"Subject: X\r\r\nFrom: a@contoso.com\r\r\n\r\r\nbody\r\r\n",
                b"Subject: X\r\nFrom: a@contoso.com\r\n\r\nbody\r\n",
            ),
            // Bare LF line ends are still line ends in the header section.
            (
                b"Subject: X\nFrom: a@contoso.com\n\nbody\r\n",
                b"Subject: X\r\nFrom: a@contoso.com\r\n\r\nbody\r\n",
            ),
        ];
        for (input, content) in cases {
            let input = [*input, b".\r\n"].concat();
            let (out, consumed) = receive(&input);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(content)
            );
            assert_eq!(consumed, Some(input.len()));
        }
    }

    #[test]
    fn limit_counts_without_keeping() {
        let mut receiver = DataReceiver::new(10);
        let mut out = Vec::new();
        let body = vec![b'x'; 100];
        assert_eq!(receiver.feed(&body, &mut out), Feed::NeedMore);
        assert!(receiver.exceeded());
        assert!(out.len() <= 10);
        assert_eq!(
            receiver.feed(b"\r\n.\r\n", &mut out),
            Feed::Finished { consumed: 5 }
        );
        assert_eq!(receiver.size(), 102);
    }

    #[test]
    fn eight_bit_is_noticed() {
        let mut receiver = DataReceiver::new(u64::MAX);
        let mut out = Vec::new();
        receiver.feed("Grüße\r\n.\r\n".as_bytes(), &mut out);
        assert!(receiver.eight_bit());
        let mut ascii = DataReceiver::new(u64::MAX);
        ascii.feed(b"plain\r\n.\r\n", &mut out);
        assert!(!ascii.eight_bit());
    }
}
