//! Fuzzes the DATA receiver (`smtp::proto::data::DataReceiver`) with the input cut at
//! fuzzer-chosen points, whole, and byte by byte. Checks: the outcome does not depend on the
//! cuts; the output never holds a bare CR or LF; the data ends exactly after the first literal
//! CRLF.CRLF of the raw input (so `\n.\n`, `\n.\r\n`, `\r.\r\n`, `\r\n.\r`, `\r\n.\n` are
//! content, never an end); the content matches the reference model `fuzz_support::data_model`
//! (dot-unstuffing, CRLF normalisation); and the kept output never exceeds the limit, which is
//! reported by `exceeded()` whenever the content is larger.

#![no_main]

use fuzz_support::{Control, chunks, data_model, has_bare_cr_or_lf};
use libfuzzer_sys::fuzz_target;
use smtp_oauth_relay::smtp::proto::data::{DataReceiver, Feed};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    output: Vec<u8>,
    consumed: Option<usize>,
    size: u64,
    exceeded: bool,
    eight_bit: bool,
}

fn run(pieces: &[&[u8]], limit: u64) -> Outcome {
    let mut receiver = DataReceiver::new(limit);
    let mut output = Vec::new();
    let mut offset = 0;
    let mut consumed = None;
    for piece in pieces {
        let before = output.len();
        match receiver.feed(piece, &mut output) {
            Feed::NeedMore => offset += piece.len(),
            Feed::Finished { consumed: used } => {
                assert!(
                    used >= 1 && used <= piece.len(),
                    "consumed {used} of {}",
                    piece.len()
                );
                consumed = Some(offset + used);
                break;
            }
        }
        assert!(output.len() >= before);
        assert!(
            output.len() as u64 <= limit,
            "kept {} > limit {limit}",
            output.len()
        );
    }
    assert!(output.len() as u64 <= limit);
    Outcome {
        output,
        consumed,
        size: receiver.size(),
        exceeded: receiver.exceeded(),
        eight_bit: receiver.eight_bit(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut control = Control::new(data);
    let flags = control.byte();
    let limit = if flags & 1 == 1 {
        u64::from(control.byte()) * 3
    } else {
        u64::MAX
    };
    let sizes = control.chunk_sizes();
    let payload = control.rest();

    let whole = run(&[payload], limit);
    let split = run(&chunks(payload, &sizes), limit);
    let single: Vec<&[u8]> = payload.chunks(1).collect();
    let bytes = run(&single, limit);

    // Independent of the cuts. When the limit was passed the message is refused, so only the
    // counters (not the partial output) need to agree.
    for other in [&split, &bytes] {
        assert_eq!(whole.consumed, other.consumed);
        assert_eq!(whole.size, other.size);
        assert_eq!(whole.exceeded, other.exceeded);
        if !whole.exceeded {
            assert_eq!(whole.output, other.output);
            assert_eq!(whole.eight_bit, other.eight_bit);
        }
        assert!(
            !has_bare_cr_or_lf(&other.output),
            "bare CR/LF in {:?}",
            other.output
        );
    }
    assert!(!has_bare_cr_or_lf(&whole.output));

    // The end is exactly the first strict CRLF.CRLF, and the content matches the model.
    let (expected, end) = data_model(payload);
    assert_eq!(whole.consumed, end, "end of data");
    assert_eq!(whole.exceeded, whole.size > limit);
    if whole.exceeded {
        return;
    }
    assert_eq!(whole.size, whole.output.len() as u64);
    assert_eq!(whole.eight_bit, !whole.output.is_ascii());
    if end.is_some() {
        assert_eq!(whole.output, expected, "content differs from the model");
    } else {
        assert!(
            expected.starts_with(&whole.output),
            "unfinished output is not a prefix of the model's"
        );
    }
});
