//! Large messages over Graph (issue 13 item 4), the pure part: finding, in one streaming pass
//! over the spooled message, the top-level MIME parts that go through upload sessions, the
//! bytes left for the draft (the "skeleton"), and decoding a part's base64 piece by piece.
//!
//! The candidates are the base64 parts of the top-level multipart but its first (the body
//! text stays in the draft). [`choose`] sends those of at least [`UPLOAD_SESSION_MINIMUM`]
//! decoded bytes through upload sessions (Graph refuses smaller ones there), then, while the
//! rest still does not fit one request, the largest of the others by a plain `POST` on the
//! draft's attachments (each must fit one request itself). The skeleton is the message with
//! the chosen parts cut out from their delimiter line to the next one, so it stays a
//! well-formed multipart with the remaining parts byte for byte.
//!
//! Invariants: pure (no I/O); memory is bounded whatever the input: a line is kept only up to
//! [`LINE_PREFIX`] bytes (enough to recognise a boundary), a header section up to
//! [`MAX_PART_HEADER`] bytes; positions are absolute byte offsets in the content.

use std::ops::Range;

use base64::Engine as _;

/// Graph takes an attachment through an upload session from this size on (3 MiB, as the
/// emulator and Graph's "3 MB" minimum).
pub const UPLOAD_SESSION_MINIMUM: u64 = 3 * 1024 * 1024;
/// Bytes of one `PUT` to an upload URL. Graph allows up to 4 MB per request; the relay's
/// memory for an upload is several times a range (the range, the HTTP/TLS write buffers),
/// so a smaller range keeps it low: 20 MB take 20 requests.
pub const UPLOAD_CHUNK: usize = 1024 * 1024;
/// The beginning of a line kept to compare with the boundary.
const LINE_PREFIX: usize = 256;
/// The largest header section read (the message's or a part's).
const MAX_PART_HEADER: usize = 64 * 1024;

/// One part that goes through an upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargePart {
    /// File name (`filename` of Content-Disposition, else `name` of Content-Type).
    pub name: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub is_inline: bool,
    /// Bytes cut from the skeleton: the part's delimiter line up to the next one.
    pub removed: Range<u64>,
    /// Its base64 body.
    pub body: Range<u64>,
    /// Its size once decoded.
    pub decoded_len: u64,
}

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    MessageHeader,
    Preamble,
    PartHeader,
    PartBody,
    /// After the closing delimiter, or in a message that is not multipart.
    Done,
}

/// The streaming scanner: feed it the content in pieces, then [`Scanner::finish`].
pub struct Scanner {
    phase: Phase,
    offset: u64,
    line_start: u64,
    line: Vec<u8>,
    header: Vec<u8>,
    boundary: Vec<u8>,
    /// The part being read: its delimiter line's start, its header end, base64 bytes seen.
    part_start: u64,
    body_start: u64,
    base64_chars: u64,
    padding: u64,
    part_header: Vec<u8>,
    parts_seen: usize,
    found: Vec<LargePart>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            phase: Phase::MessageHeader,
            offset: 0,
            line_start: 0,
            line: Vec::new(),
            header: Vec::new(),
            boundary: Vec::new(),
            part_start: 0,
            body_start: 0,
            base64_chars: 0,
            padding: 0,
            part_header: Vec::new(),
            parts_seen: 0,
            found: Vec::new(),
        }
    }
}

impl Scanner {
    /// The next piece of the content.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.phase != Phase::Done {
            let (piece, ends_line) = match memchr::memchr(b'\n', bytes) {
                Some(at) => (bytes.get(..=at).unwrap_or(bytes), true),
                None => (bytes, false),
            };
            bytes = bytes.get(piece.len()..).unwrap_or_default();
            self.take(piece);
            self.offset += piece.len() as u64;
            if ends_line {
                self.end_of_line();
                self.line.clear();
                self.line_start = self.offset;
            }
        }
    }

    /// The parts found (the last one unterminated is dropped).
    pub fn finish(self) -> Vec<LargePart> {
        self.found
    }

    /// Part of a line: kept for recognising it, counted in a part's body.
    fn take(&mut self, piece: &[u8]) {
        let room = LINE_PREFIX.saturating_sub(self.line.len());
        self.line
            .extend_from_slice(piece.get(..room.min(piece.len())).unwrap_or_default());
        match self.phase {
            Phase::MessageHeader if self.header.len() < MAX_PART_HEADER => {
                self.header.extend_from_slice(piece);
            }
            Phase::PartHeader if self.part_header.len() < MAX_PART_HEADER => {
                self.part_header.extend_from_slice(piece);
            }
            Phase::PartBody => {
                for &byte in piece {
                    if byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/' {
                        self.base64_chars += 1;
                    } else if byte == b'=' {
                        self.padding += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn end_of_line(&mut self) {
        let text = trim_line_end(&self.line);
        match self.phase {
            Phase::MessageHeader if text.is_empty() => {
                self.boundary = boundary_of(&self.header).unwrap_or_default();
                self.phase = if self.boundary.is_empty() {
                    Phase::Done
                } else {
                    Phase::Preamble
                };
            }
            Phase::Preamble => match self.delimiter(text) {
                Some(false) => self.start_part(),
                Some(true) => self.phase = Phase::Done,
                None => {}
            },
            Phase::PartHeader if text.is_empty() => {
                self.phase = Phase::PartBody;
                self.body_start = self.offset;
                self.base64_chars = 0;
                self.padding = 0;
            }
            Phase::PartBody => {
                if let Some(closing) = self.delimiter(text) {
                    // The line was counted as body: take its characters back.
                    let (chars, pads) = base64_counts(&self.line);
                    self.base64_chars = self.base64_chars.saturating_sub(chars);
                    self.padding = self.padding.saturating_sub(pads);
                    self.end_part();
                    if closing {
                        self.phase = Phase::Done;
                    } else {
                        self.start_part();
                    }
                }
            }
            _ => {}
        }
    }

    /// `Some(closing)` when `text` is a delimiter line of the top-level boundary.
    fn delimiter(&self, text: &[u8]) -> Option<bool> {
        let rest = text
            .strip_prefix(b"--")?
            .strip_prefix(self.boundary.as_slice())?;
        let rest = trim_trailing_space(rest);
        match rest {
            b"" => Some(false),
            b"--" => Some(true),
            _ => None,
        }
    }

    fn start_part(&mut self) {
        self.phase = Phase::PartHeader;
        self.part_start = self.line_start;
        self.part_header.clear();
    }

    fn end_part(&mut self) {
        let index = self.parts_seen;
        self.parts_seen += 1;
        // The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
        let body_end = self.line_start.saturating_sub(2).max(self.body_start);
        let decoded_len = (self.base64_chars + self.padding) / 4 * 3 - self.padding.min(2);
        let Some(headers) = PartHeaders::parse(&self.part_header) else {
            return;
        };
        if index == 0 || !headers.base64 || decoded_len == 0 {
            return;
        }
        self.found.push(LargePart {
            name: headers.name,
            content_type: headers.content_type,
            content_id: headers.content_id,
            is_inline: headers.inline,
            removed: self.part_start..self.line_start,
            body: self.body_start..body_end,
            decoded_len,
        });
    }
}

/// What the relay needs from a part's header section.
struct PartHeaders {
    name: String,
    content_type: String,
    content_id: Option<String>,
    inline: bool,
    base64: bool,
}

impl PartHeaders {
    fn parse(section: &[u8]) -> Option<PartHeaders> {
        use mail_parser::MimeHeaders as _;
        let mut owned = section.to_vec();
        owned.extend_from_slice(b"\r\n");
        let parsed = mail_parser::MessageParser::default().parse_headers(owned.as_slice())?;
        let content_type = parsed.content_type();
        let disposition = parsed.content_disposition();
        let name = disposition
            .and_then(|d| d.attribute("filename"))
            .or_else(|| content_type.and_then(|c| c.attribute("name")))
            .unwrap_or("attachment")
            .to_string();
        let mime_type = content_type.map_or_else(
            || "application/octet-stream".to_string(),
            |c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")),
        );
        Some(PartHeaders {
            name,
            content_type: mime_type,
            content_id: parsed
                .content_id()
                .map(|id| id.trim_matches(['<', '>']).to_string()),
            inline: disposition.is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline")),
            base64: parsed
                .content_transfer_encoding()
                .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64")),
        })
    }
}

/// The `boundary` of a multipart header section.
fn boundary_of(header: &[u8]) -> Option<Vec<u8>> {
    use mail_parser::MimeHeaders as _;
    let parsed = mail_parser::MessageParser::default().parse_headers(header)?;
    let content_type = parsed.content_type()?;
    if !content_type.ctype().eq_ignore_ascii_case("multipart") {
        return None;
    }
    content_type
        .attribute("boundary")
        .filter(|b| !b.is_empty())
        .map(|b| b.as_bytes().to_vec())
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_trailing_space(text: &[u8]) -> &[u8] {
    let end = text
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |at| at + 1);
    text.get(..end).unwrap_or_default()
}

/// Base64 alphabet characters and padding in `bytes`.
fn base64_counts(bytes: &[u8]) -> (u64, u64) {
    let mut chars = 0;
    let mut pads = 0;
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/' {
            chars += 1;
        } else if byte == b'=' {
            pads += 1;
        }
    }
    (chars, pads)
}

/// Bytes of JSON around a plain attachment's `contentBytes` (name, type, id), at most.
const ATTACHMENT_JSON_OVERHEAD: u64 = 2048;

/// The parts to upload and the parts to `POST`, in message order, so that the rest of a
/// `content_len`-byte message fits one request of `max_request` bytes as base64; `None` when
/// no choice makes it fit.
pub fn choose(
    candidates: Vec<LargePart>,
    content_len: u64,
    max_request: u64,
) -> Option<(Vec<LargePart>, Vec<LargePart>)> {
    let base64 = |bytes: u64| bytes.div_ceil(3).saturating_mul(4);
    let (uploads, mut rest): (Vec<LargePart>, Vec<LargePart>) = candidates
        .into_iter()
        .partition(|p| p.decoded_len >= UPLOAD_SESSION_MINIMUM);
    let removed = |parts: &[LargePart]| -> u64 {
        parts.iter().map(|p| p.removed.end - p.removed.start).sum()
    };
    let mut skeleton = content_len.saturating_sub(removed(&uploads));
    // Largest first: the fewest requests.
    rest.retain(|p| base64(p.decoded_len) + ATTACHMENT_JSON_OVERHEAD <= max_request);
    rest.sort_by_key(|p| std::cmp::Reverse(p.removed.end - p.removed.start));
    let mut posts = Vec::new();
    let mut rest = rest.into_iter();
    while base64(skeleton) > max_request {
        let part = rest.next()?;
        skeleton = skeleton.saturating_sub(part.removed.end - part.removed.start);
        posts.push(part);
    }
    posts.sort_by_key(|p| p.removed.start);
    Some((uploads, posts))
}

/// The bytes at `offset` (a piece of the content) that lie outside every `removed` range
/// (`parts` in message order).
pub fn skeleton_piece<'a>(offset: u64, piece: &'a [u8], parts: &[LargePart]) -> Vec<&'a [u8]> {
    let end = offset + piece.len() as u64;
    let mut kept = Vec::new();
    let mut at = offset;
    for part in parts {
        let (cut_start, cut_end) = (part.removed.start.max(at), part.removed.end.min(end));
        if cut_start >= cut_end {
            continue;
        }
        if at < cut_start {
            kept.push(slice(piece, offset, at..cut_start));
        }
        at = cut_end;
    }
    if at < end {
        kept.push(slice(piece, offset, at..end));
    }
    kept
}

/// The bytes of absolute `range` in `piece`, which starts at `offset`.
fn slice(piece: &[u8], offset: u64, range: Range<u64>) -> &[u8] {
    let start = usize::try_from(range.start - offset).unwrap_or(usize::MAX);
    let end = usize::try_from(range.end - offset).unwrap_or(usize::MAX);
    piece.get(start..end).unwrap_or_default()
}

/// The part of `piece` (at `offset`) inside `range`, if any.
pub fn within<'a>(offset: u64, piece: &'a [u8], range: &Range<u64>) -> &'a [u8] {
    let end = offset + piece.len() as u64;
    let (start, stop) = (range.start.max(offset), range.end.min(end));
    if start >= stop {
        return &[];
    }
    slice(piece, offset, start..stop)
}

/// Decodes base64 given in pieces of any length (line breaks and other white space skipped).
#[derive(Default)]
pub struct Base64Stream {
    pending: Vec<u8>,
}

impl Base64Stream {
    /// Decode what `piece` completes into `out`.
    ///
    /// # Errors
    /// The characters are not base64.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        self.pending
            .extend(piece.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        if whole == 0 {
            return Ok(());
        }
        let ready: Vec<u8> = self.pending.drain(..whole).collect();
        base64::engine::general_purpose::STANDARD
            .decode_vec(&ready, out)
            .map_err(|e| format!("a large part is not valid base64: {e}"))
    }

    /// True when no characters wait for the rest of their group.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }
}

#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    /// A multipart message: a text part, then parts of `sizes` decoded bytes (base64, 76
    /// characters a line).
    fn message(sizes: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut out = b"From: a@contoso.com\r\nTo: b@fabrikam.example\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"==b1==\"\r\n\r\npreamble\r\n--==b1==\r\nContent-Type: text/plain\r\n\r\nhello\r\n".to_vec();
        let mut payloads = Vec::new();
        for (n, size) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..*size).map(|i| (i * 7 + n) as u8).collect();
            let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
            out.extend_from_slice(format!("--==b1==\r\nContent-Type: application/pdf; name=\"p{n}.pdf\"\r\nContent-Disposition: attachment; filename=\"file{n}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n").as_bytes());
            for line in encoded.as_bytes().chunks(76) {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
            payloads.push(payload);
        }
        out.extend_from_slice(b"--==b1==--\r\nepilogue\r\n");
        (out, payloads)
    }

    /// The parts [`choose`] uploads.
    fn scan(message: &[u8], piece: usize) -> Vec<LargePart> {
        scan_all(message, piece)
            .into_iter()
            .filter(|p| p.decoded_len >= UPLOAD_SESSION_MINIMUM)
            .collect()
    }

    fn scan_all(message: &[u8], piece: usize) -> Vec<LargePart> {
        let mut scanner = Scanner::default();
        for chunk in message.chunks(piece) {
            scanner.feed(chunk);
        }
        scanner.finish()
    }

    /// (decoded sizes, max request, (uploaded, posted) by index of size, or None)
    type ChoiceCase<'a> = (&'a [usize], u64, Option<(&'a [usize], &'a [usize])>);

    #[test]
    fn choose_uploads_the_large_and_posts_the_largest_others_until_the_rest_fits() {
        const MB: usize = 1_000_000;
        let big = UPLOAD_SESSION_MINIMUM as usize;
        // (decoded sizes, max request) → (uploaded, posted) by index of size, or None
        let cases: [ChoiceCase<'_>; 5] = [
            (&[big, 10], 4_000_000, Some((&[0], &[]))),
            (&[MB, 2 * MB, MB, MB], 4_000_000, Some((&[], &[1, 0]))),
            (&[big, 2 * MB, 2 * MB], 4_000_000, Some((&[0], &[1]))),
            (&[1000], 100, None),
            (&[10, 20], 1_000_000_000, Some((&[], &[]))),
        ];
        for (sizes, max_request, expected) in cases {
            let (msg, _) = message(sizes);
            let parts = scan_all(&msg, 65536);
            let name = |p: &LargePart| -> usize { p.name[4..p.name.len() - 4].parse().unwrap() };
            let chosen = choose(parts, msg.len() as u64, max_request).map(|(u, p)| {
                (
                    u.iter().map(name).collect::<Vec<_>>(),
                    p.iter().map(name).collect::<Vec<_>>(),
                )
            });
            let mut expected = expected.map(|(u, p)| (u.to_vec(), p.to_vec()));
            if let Some((_, posts)) = expected.as_mut() {
                posts.sort_unstable();
            }
            assert_eq!(chosen, expected, "{sizes:?}");
        }
    }

    #[test]
    fn large_base64_parts_are_found_whatever_the_piece_size() {
        let big = UPLOAD_SESSION_MINIMUM as usize;
        // (decoded sizes, how many go to upload sessions)
        let cases: [(&[usize], usize); 4] = [
            (&[1000], 0),
            (&[big - 1], 0),
            (&[big, 10], 1),
            (&[big + 1, 5000, big + 2], 2),
        ];
        for (sizes, expected) in cases {
            let (msg, payloads) = message(sizes);
            for piece in [7, 4096, 256 * 1024] {
                let parts = scan(&msg, piece);
                assert_eq!(parts.len(), expected, "{sizes:?} in pieces of {piece}");
                for part in &parts {
                    let n: usize = part.name[4..part.name.len() - 4].parse().unwrap();
                    assert_eq!(part.decoded_len, payloads[n].len() as u64);
                    assert_eq!(part.content_type, "application/pdf");
                    let body = &msg[part.body.start as usize..part.body.end as usize];
                    let mut out = Vec::new();
                    let mut stream = Base64Stream::default();
                    for chunk in body.chunks(1000) {
                        stream.push(chunk, &mut out).unwrap();
                    }
                    assert!(stream.is_complete());
                    assert_eq!(out, payloads[n], "{sizes:?}");
                }
            }
        }
    }

    #[test]
    fn the_skeleton_is_the_message_without_the_large_parts() {
        let big = UPLOAD_SESSION_MINIMUM as usize;
        let (msg, _) = message(&[big, 10]);
        let parts = scan(&msg, 65536);
        let mut skeleton = Vec::new();
        for (index, chunk) in msg.chunks(1000).enumerate() {
            for kept in skeleton_piece(index as u64 * 1000, chunk, &parts) {
                skeleton.extend_from_slice(kept);
            }
        }
        let text = String::from_utf8(skeleton).unwrap();
        assert!(text.starts_with("From: a@contoso.com\r\n"));
        assert!(!text.contains("file0.pdf"), "the large part is gone");
        assert!(text.contains("file1.pdf"), "the small one stays");
        assert!(text.contains("--==b1==\r\nContent-Type: text/plain\r\n\r\nhello\r\n--==b1==\r\nContent-Type: application/pdf; name=\"p1.pdf\""));
        assert!(text.ends_with("--==b1==--\r\nepilogue\r\n"));
    }

    #[test]
    fn not_multipart_or_first_part_or_not_base64_stays() {
        let big = "A".repeat(UPLOAD_SESSION_MINIMUM as usize * 2);
        let cases = [
            format!("Subject: x\r\nContent-Type: text/plain\r\n\r\n{big}\r\n"),
            format!(
                "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n{big}\r\n--b--\r\n"
            ),
            format!(
                "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{big}\r\n--b--\r\n"
            ),
        ];
        for message in cases {
            assert!(scan(message.as_bytes(), 4096).is_empty());
        }
    }
}
