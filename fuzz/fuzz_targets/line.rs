//! Fuzzes the command-line reader (`smtp::proto::line::LineReader`) fed in fuzzer-chosen
//! chunks, the way the connection driver does (append a chunk, take lines until `None`).
//! Checks: the buffer never holds more than the cap (+1 for a CR) plus the chunk just read;
//! every returned line is at most the cap; the lines and `LineTooLong` reports match the
//! reference model `fuzz_support::line_model` whatever the chunking.

#![no_main]

use bytes::BytesMut;
use fuzz_support::{Control, ModelLine, chunks, line_model};
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::smtp::proto::line::LineReader;

fn run(pieces: &[&[u8]], cap: usize) -> (Vec<ModelLine>, usize) {
    let mut reader = LineReader::new(cap);
    let mut buffer = BytesMut::new();
    let mut lines = Vec::new();
    for piece in pieces {
        let before = buffer.len();
        assert!(
            before <= cap.saturating_add(1),
            "buffer {before} over cap {cap} between reads"
        );
        buffer.extend_from_slice(piece);
        while let Some(result) = reader.next_line(&mut buffer) {
            match result {
                Ok(line) => {
                    assert!(line.len() <= cap, "line of {} over cap {cap}", line.len());
                    lines.push(ModelLine::Line(line.to_vec()));
                }
                Err(_) => lines.push(ModelLine::TooLong),
            }
            assert!(buffer.len() <= before + piece.len());
        }
        assert!(
            buffer.len() <= cap.saturating_add(1),
            "buffer {} over cap {cap} after a read",
            buffer.len()
        );
        assert!(
            !buffer.contains(&b'\n'),
            "a complete line was left in the buffer"
        );
    }
    (lines, buffer.len())
}

fuzz_target!(|data: &[u8]| {
    let mut control = Control::new(data);
    let cap = match control.byte() {
        255 => usize::MAX,
        254 => 4096,
        other => usize::from(other % 64),
    };
    let sizes = control.chunk_sizes();
    let payload = control.rest();

    let expected = line_model(payload, cap);
    let (whole, _) = run(&[payload], cap);
    assert_eq!(whole, expected, "whole input differs from the model");
    let (split, _) = run(&chunks(payload, &sizes), cap);
    assert_eq!(split, expected, "chunked input differs from the model");
    let single: Vec<&[u8]> = payload.chunks(1).collect();
    let (bytes, _) = run(&single, cap);
    assert_eq!(bytes, expected, "byte-by-byte input differs from the model");
});
