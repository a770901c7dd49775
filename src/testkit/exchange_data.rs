//! Pure (no I/O) pieces of the fake Exchange server: the DATA receiver (strict `CRLF.CRLF`
//! end, dot-unstuffing, bare-LF detection, size cap, SHA-256), header-field unfolding, the
//! `From:` address extraction used by the SendAs check, and MAIL/RCPT path parsing.
//!
//! Invariants:
//! - DATA ends only at `.` + CRLF at the start of a line that itself followed a CRLF (or the
//!   start of the data); `\n.\r\n`, `\n.\n` and `\r.\r\n` do not end it (SMTP smuggling);
//! - the stored body is the exact unstuffed bytes, never more than the size limit; past the
//!   limit the receiver keeps counting and hashing but stores nothing;
//! - the header block is kept (up to 1 MiB) even in fast mode, because the post-DATA checks
//!   need it.

use ring::digest::{Context, SHA256};

/// Cap of the captured header block.
const HEADER_BLOCK_CAP: usize = 1024 * 1024;

/// Whether DATA has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataProgress {
    /// More segments are needed.
    More,
    /// The terminating `.` line was seen.
    Complete,
}

/// What DATA delivered.
#[derive(Debug)]
pub struct ReceivedData {
    /// The unstuffed message, if stored (not in fast mode, not over the limit).
    pub body: Option<Vec<u8>>,
    /// The header section (unstuffed, without the empty line).
    pub header_block: Vec<u8>,
    /// Size of the unstuffed message.
    pub size: usize,
    /// `size` exceeded the limit.
    pub oversize: bool,
    /// A LF not preceded by CR was seen.
    pub bare_lf: bool,
    /// SHA-256 of the unstuffed message.
    pub sha256: [u8; 32],
}

/// Incremental DATA receiver fed with segments that end at LF (or are partial lines).
pub struct DataReceiver {
    keep_body: bool,
    limit: usize,
    body: Vec<u8>,
    header_block: Vec<u8>,
    header_done: bool,
    size: usize,
    oversize: bool,
    bare_lf: bool,
    at_line_start: bool,
    prev_last: Option<u8>,
    hasher: Context,
}

impl DataReceiver {
    /// A receiver storing at most `limit` bytes (nothing if `keep_body` is false).
    pub fn new(limit: usize, keep_body: bool) -> DataReceiver {
        DataReceiver {
            keep_body,
            limit,
            body: Vec::new(),
            header_block: Vec::new(),
            header_done: false,
            size: 0,
            oversize: false,
            bare_lf: false,
            at_line_start: true,
            prev_last: None,
            hasher: Context::new(&SHA256),
        }
    }

    /// Feeds one segment: bytes up to and including a LF, or a partial line without LF.
    pub fn push_segment(&mut self, segment: &[u8]) -> DataProgress {
        if self.at_line_start && segment == b".\r\n" {
            return DataProgress::Complete;
        }
        let content = if self.at_line_start && segment.first() == Some(&b'.') {
            segment.get(1..).unwrap_or_default()
        } else {
            segment
        };
        if segment.last() == Some(&b'\n') {
            let before = match segment.len() {
                0 | 1 => self.prev_last,
                n => segment.get(n - 2).copied(),
            };
            if before != Some(b'\r') {
                self.bare_lf = true;
            }
        }
        if !self.header_done {
            if self.at_line_start && (content == b"\r\n" || content == b"\n") {
                self.header_done = true;
            } else if self.header_block.len() + content.len() <= HEADER_BLOCK_CAP {
                self.header_block.extend_from_slice(content);
            } else {
                self.header_done = true;
            }
        }
        self.hasher.update(content);
        self.size = self.size.saturating_add(content.len());
        if self.size > self.limit {
            if !self.oversize {
                self.body = Vec::new();
            }
            self.oversize = true;
        } else if self.keep_body {
            self.body.extend_from_slice(content);
        }
        let ends_crlf =
            segment.ends_with(b"\r\n") || (segment == b"\n" && self.prev_last == Some(b'\r'));
        self.at_line_start = ends_crlf;
        self.prev_last = segment.last().copied().or(self.prev_last);
        DataProgress::More
    }

    /// Bytes received so far (unstuffed).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The result once [`DataProgress::Complete`] was returned.
    pub fn finish(self) -> ReceivedData {
        let mut sha256 = [0u8; 32];
        for (dst, src) in sha256.iter_mut().zip(self.hasher.finish().as_ref()) {
            *dst = *src;
        }
        let mut header_block = self.header_block;
        while header_block.ends_with(b"\n") {
            header_block.pop();
            if header_block.ends_with(b"\r") {
                header_block.pop();
            }
        }
        ReceivedData {
            body: (self.keep_body && !self.oversize).then_some(self.body),
            header_block,
            size: self.size,
            oversize: self.oversize,
            bare_lf: self.bare_lf,
            sha256,
        }
    }
}

/// One unfolded header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// Field name as written.
    pub name: String,
    /// Unfolded value, leading whitespace removed.
    pub value: String,
}

/// Splits a header block into unfolded fields (continuation lines start with SP or HTAB).
pub fn header_fields(block: &[u8]) -> Vec<HeaderField> {
    let text = String::from_utf8_lossy(block);
    let mut fields: Vec<HeaderField> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push(HeaderField {
                name: name.trim_end().to_owned(),
                value: value.trim_start().to_owned(),
            });
        }
    }
    fields
}

/// The first field whose value exceeds `max` characters: `(length, name)`.
pub fn oversized_header(fields: &[HeaderField], max: usize) -> Option<(usize, String)> {
    fields.iter().find_map(|field| {
        let length = field.value.chars().count();
        (length > max).then(|| (length, field.name.clone()))
    })
}

/// The value of the first field named `name` (case-insensitive).
pub fn header_value<'a>(fields: &'a [HeaderField], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value.as_str())
}

/// The addr-specs of a `From:` value (`Name <a@b>, c@d (comment)`), lowercase.
pub fn mailbox_list_addresses(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut angle, mut comment) = (false, false, 0usize);
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            '<' if !quoted && comment == 0 => {
                angle = true;
                current.clear();
            }
            '>' if !quoted && comment == 0 => angle = false,
            ',' if !quoted && !angle && comment == 0 => {
                items.push(std::mem::take(&mut current));
            }
            _ if comment > 0 || quoted => {}
            _ => current.push(c),
        }
    }
    items.push(current);
    items
        .into_iter()
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| item.contains('@'))
        .collect()
}

/// Parses `FROM:<path> params` / `TO:<path> params`. Exchange requires the angle brackets.
/// Returns the address (without a source route) and the parameter string.
pub fn parse_path_argument<'a>(argument: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let (head, rest) = argument.split_at_checked(keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('<')?;
    let (path, params) = rest.split_once('>')?;
    let address = path.rsplit_once(':').map_or(path, |(_, addr)| addr);
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some((address.to_owned(), params.trim()))
}

/// The `SIZE=` value of MAIL parameters, if any.
pub fn size_parameter(params: &str) -> Option<u64> {
    params.split_whitespace().find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.eq_ignore_ascii_case("SIZE")
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` the way the socket reader does (at LF, or every `chunk` bytes).
    fn receive(input: &[u8], chunk: usize, limit: usize) -> (DataProgress, usize, DataReceiver) {
        let mut receiver = DataReceiver::new(limit, true);
        let mut consumed = 0;
        let mut rest = input;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .map_or(rest.len(), |p| p + 1)
                .min(chunk);
            let (segment, tail) = rest.split_at(end);
            consumed += segment.len();
            if receiver.push_segment(segment) == DataProgress::Complete {
                return (DataProgress::Complete, consumed, receiver);
            }
            rest = tail;
        }
        (DataProgress::More, consumed, receiver)
    }

    #[test]
    fn unstuffs_and_ends_at_strict_crlf_dot_crlf() {
        for chunk in [3, 4, 7, 1000] {
            let input = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
            let (progress, consumed, receiver) = receive(input, chunk, 1000);
            assert_eq!(progress, DataProgress::Complete, "chunk {chunk}");
            assert_eq!(&input[consumed..], b"QUIT\r\n");
            let data = receiver.finish();
            assert_eq!(data.body.unwrap(), b"Subject: x\r\n\r\n.leading dot\r\n");
            assert_eq!(data.header_block, b"Subject: x");
            assert!(!data.bare_lf);
        }
    }

    #[test]
    fn smuggling_sequences_do_not_end_data() {
        for input in [
            &b"a\n.\r\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\nb\r\n",
            b"a\r.\r\nb\r\n",
        ] {
            let (progress, _, receiver) = receive(input, 1000, 1000);
            assert_eq!(progress, DataProgress::More, "{input:?}");
            let _ = receiver;
        }
        let (progress, _, receiver) = receive(b"a\nb\r\n.\r\n", 1000, 1000);
        assert_eq!(progress, DataProgress::Complete);
        assert!(receiver.finish().bare_lf);
        // A CRLF split across two partial segments is not a bare LF.
        let (progress, _, receiver) = receive(b"abcdef\r\n.\r\n", 7, 1000);
        assert_eq!(progress, DataProgress::Complete);
        assert!(!receiver.finish().bare_lf);
    }

    #[test]
    fn empty_message_and_size_limit() {
        let (progress, _, receiver) = receive(b".\r\n", 1000, 10);
        assert_eq!(progress, DataProgress::Complete);
        assert_eq!(receiver.finish().size, 0);
        let (_, _, receiver) = receive(b"0123456789ABC\r\n.\r\n", 1000, 10);
        let data = receiver.finish();
        assert!(data.oversize);
        assert_eq!(data.size, 15);
        assert!(data.body.is_none());
    }

    #[test]
    fn headers_unfold_and_from_addresses_parse() {
        let block = b"From: \"Doe, John\" <John@Contoso.com>\r\nSubject: a\r\n b\r\nX: y";
        let fields = header_fields(block);
        assert_eq!(header_value(&fields, "subject"), Some("a b"));
        assert_eq!(
            mailbox_list_addresses(header_value(&fields, "FROM").unwrap()),
            vec!["john@contoso.com".to_owned()]
        );
        assert_eq!(
            mailbox_list_addresses("a@b.c (x, y), Name <d@e.f>"),
            vec!["a@b.c".to_owned(), "d@e.f".to_owned()]
        );
        let long = format!("X-Long: {}", "v".repeat(32769));
        assert_eq!(
            oversized_header(&header_fields(long.as_bytes()), 32768),
            Some((32769, "X-Long".to_owned()))
        );
    }

    #[test]
    fn paths_need_angle_brackets() {
        assert_eq!(
            parse_path_argument("FROM:<a@b.c> BODY=8BITMIME SIZE=10", "FROM"),
            Some(("a@b.c".to_owned(), "BODY=8BITMIME SIZE=10"))
        );
        assert_eq!(
            parse_path_argument("from: <>", "FROM"),
            Some((String::new(), ""))
        );
        assert_eq!(
            parse_path_argument("TO:<@r1,@r2:u@d>", "TO"),
            Some(("u@d".to_owned(), ""))
        );
        assert_eq!(parse_path_argument("FROM:a@b.c", "FROM"), None);
        assert_eq!(size_parameter("BODY=8BITMIME SIZE=42"), Some(42));
    }
}
