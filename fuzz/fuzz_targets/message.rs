//! Fuzzes the header work on accepted mail (`message::MessageAssembler`), fed either content
//! straight from the fuzzer (line endings made CRLF, as the DATA receiver guarantees) or the
//! DATA receiver's own output for raw client bytes, in fuzzer-chosen chunks. Checks: it never
//! panics; the outcome does not depend on the chunking; a header section longer than the limit
//! is always refused and one that (with the line that ends it) fits is always accepted; an
//! accepted message is exactly `Received:` field + the original header section + only the
//! missing `Date:`/`Message-ID:` (+ an empty line when the body does not start with one) + the
//! rest of the content byte for byte.

#![no_main]

use fuzz_support::{Control, chunks, has_field, header_end_model};
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::message::MessageAssembler;
use smtp_oauth_relay::smtp::proto::data::{DataReceiver, Feed};
use time::OffsetDateTime;

const RECEIVED: &str = "Received: from fuzz ([192.0.2.1])\r\n\tby relay.fuzz (smtp-oauth-relay) with ESMTP id FUZZID; Sat, 28 Nov 2026 22:54:09 +0000\r\n";
const DATE: &str = "Date: Sat, 28 Nov 2026 22:54:09 +0000\r\n";
const ID_PREFIX: &[u8] = b"Message-ID: <FUZZID.";
const ID_SUFFIX: &[u8] = b"@relay.fuzz>\r\n";

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_795_906_449).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn assemble(pieces: &[&[u8]], max_header: usize) -> Option<Vec<u8>> {
    let mut assembler = MessageAssembler::new(
        RECEIVED.to_string(),
        "relay.fuzz",
        "FUZZID",
        now(),
        max_header,
    );
    let mut out = Vec::new();
    for piece in pieces {
        assembler.push(piece, &mut out).ok()?;
    }
    assembler.finish(&mut out).ok()?;
    Some(out)
}

/// Replace the random part of a generated Message-ID (the field starting at `at`) with `X`s,
/// after checking it is lower-case hex.
fn mask_message_id(out: &mut [u8], at: usize) {
    let random = at + ID_PREFIX.len();
    if out.get(at..random) == Some(ID_PREFIX)
        && let Some(hex) = out.get_mut(random..random + 12)
        && hex
            .iter()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        hex.fill(b'X');
    }
}

fn normalise(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut index = 0;
    while let Some(&byte) = payload.get(index) {
        match byte {
            b'\r' if payload.get(index + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                index += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            other => out.push(other),
        }
        index += 1;
    }
    out
}

fn check(pieces: &[&[u8]], max_header: usize) {
    let content: Vec<u8> = pieces.concat();
    let end = header_end_model(&content);
    let (headers, rest) = content.split_at(end);
    let deciding_line = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |p| p + 1);

    let chunked = assemble(pieces, max_header);
    let whole = assemble(&[&content], max_header);
    let single: Vec<&[u8]> = content.chunks(1).collect();
    let bytes = assemble(&single, max_header);

    if end > max_header {
        assert!(
            chunked.is_none() && whole.is_none() && bytes.is_none(),
            "header section of {end} bytes accepted over the limit {max_header}"
        );
        return;
    }
    if end + deciding_line <= max_header {
        assert!(
            chunked.is_some() && whole.is_some() && bytes.is_some(),
            "header section of {end} bytes refused under the limit {max_header}"
        );
    }
    let mut expected = RECEIVED.as_bytes().to_vec();
    expected.extend_from_slice(headers);
    if !headers.is_empty() && !headers.ends_with(b"\n") {
        expected.extend_from_slice(b"\r\n");
    }
    let mut added = false;
    if !has_field(headers, "date") {
        expected.extend_from_slice(DATE.as_bytes());
        added = true;
    }
    let mut id_at = None;
    if !has_field(headers, "message-id") {
        id_at = Some(expected.len());
        expected.extend_from_slice(ID_PREFIX);
        expected.extend_from_slice(b"XXXXXXXXXXXX");
        expected.extend_from_slice(ID_SUFFIX);
        added = true;
    }
    if added && !rest.is_empty() && !rest.starts_with(b"\r\n") {
        expected.extend_from_slice(b"\r\n");
    }
    expected.extend_from_slice(rest);

    let mut outputs: Vec<Vec<u8>> = [chunked, whole, bytes].into_iter().flatten().collect();
    if let Some(at) = id_at {
        for out in &mut outputs {
            mask_message_id(out, at);
        }
    }
    let Some(first) = outputs.first() else {
        return;
    };
    for other in &outputs {
        assert_eq!(first, other, "output depends on the chunking");
    }
    assert!(first.starts_with(RECEIVED.as_bytes()));
    assert!(
        first.ends_with(rest),
        "the body was not passed through unchanged"
    );
    assert_eq!(
        String::from_utf8_lossy(first),
        String::from_utf8_lossy(&expected),
        "header section ends at {end}"
    );
    assert_eq!(first, &expected);
}

fuzz_target!(|data: &[u8]| {
    let mut control = Control::new(data);
    let flags = control.byte();
    let max_header = usize::from(control.byte()) * 4;
    let sizes = control.chunk_sizes();
    let payload = control.rest();

    if flags & 1 == 0 {
        let content = normalise(payload);
        check(&chunks(&content, &sizes), max_header);
    } else {
        // What the connection driver does: raw bytes through the DATA receiver, each piece of
        // its output pushed as it comes; only a finished DATA phase is assembled.
        let mut receiver = DataReceiver::new(u64::MAX);
        let mut produced: Vec<Vec<u8>> = Vec::new();
        let mut finished = false;
        for piece in chunks(payload, &sizes) {
            let mut out = Vec::new();
            let feed = receiver.feed(piece, &mut out);
            produced.push(out);
            if matches!(feed, Feed::Finished { .. }) {
                finished = true;
                break;
            }
        }
        if finished {
            let pieces: Vec<&[u8]> = produced.iter().map(Vec::as_slice).collect();
            check(&pieces, max_header);
        }
    }
});
