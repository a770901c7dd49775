//! Property tests of the pure SMTP protocol layer and SASL decoding, through the public API
//! only: the command parser never panics and round-trips well-formed MAIL/RCPT lines; the DATA
//! receiver matches a simple reference model (the data ends exactly at the first CRLF.CRLF of
//! the raw input, dot-unstuffing and CRLF normalisation as specified) however its input is cut,
//! and never emits a bare CR or LF; the command-line reader matches a reference model however
//! its input is cut; SASL PLAIN and LOGIN encode→decode round-trip for any UTF-8 without NUL.
//!
//! The same models drive the fuzz targets in `fuzz/` (see `fuzz/src/lib.rs`); here they run
//! with proptest's default case count so that `cargo test` stays fast.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::BytesMut;
use proptest::prelude::*;
use smtp_oauth_relay::smtp::proto::command::{Command, MailFrom, parse_command};
use smtp_oauth_relay::smtp::proto::data::{DataReceiver, Feed};
use smtp_oauth_relay::smtp::proto::line::LineReader;
use smtp_oauth_relay::smtp::server::sasl::{decode_login_field, decode_plain};
use smtp_oauth_relay::vocab::address::Address;

// ---------------------------------------------------------------------------------------------
// Reference models
// ---------------------------------------------------------------------------------------------

/// Bytes consumed by the DATA phase: up to and including the first strict CRLF.CRLF, where the
/// start of the data counts as following a CRLF. `None` when the input has no end yet.
fn data_end(raw: &[u8]) -> Option<usize> {
    if raw.starts_with(b".\r\n") {
        return Some(3);
    }
    raw.windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|index| index + 5)
}

/// The content the DATA phase must produce from `content` (the raw bytes before the final
/// `.CRLF`): split into lines at strict CRLF only; a leading `.` is removed when anything but
/// CR or LF follows it (a `.` closed by a bare CR or LF is content and is kept); CRs just
/// before a CRLF merge into it; inside a line a bare LF, or a run of CRs followed by LF, is a
/// line end; any other run of CRs is one space in the header section (before the first empty
/// line) and one line end per CR in the body.
fn data_content_model(content: &[u8]) -> Vec<u8> {
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
    let (mut start, mut index) = (0, 0);
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
                        // Still pending at the end of an unfinished input.
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

fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Framed {
    Line(Vec<u8>),
    TooLong,
}

/// Command lines as the reference sees them: split the whole stream at LF, drop one CR before
/// the LF, refuse lines over `cap`; the unterminated tail is not a line yet.
fn line_model(stream: &[u8], cap: usize) -> Vec<Framed> {
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    pieces.pop();
    pieces
        .into_iter()
        .map(|piece| {
            let line = piece.strip_suffix(b"\r").unwrap_or(piece);
            if line.len() > cap {
                Framed::TooLong
            } else {
                Framed::Line(line.to_vec())
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------------------------

/// Cut `input` at the given points (sorted, clamped, duplicates allowed: empty feeds).
fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for point in points {
        pieces.push(&input[last..point]);
        last = point;
    }
    pieces.push(&input[last..]);
    pieces
}

#[derive(Debug, PartialEq, Eq)]
struct Received {
    output: Vec<u8>,
    consumed: Option<usize>,
    size: u64,
    exceeded: bool,
}

fn receive(pieces: &[&[u8]], limit: u64) -> Received {
    let mut receiver = DataReceiver::new(limit);
    let mut output = Vec::new();
    let mut offset = 0;
    let mut consumed = None;
    for piece in pieces {
        match receiver.feed(piece, &mut output) {
            Feed::NeedMore => offset += piece.len(),
            Feed::Finished { consumed: used } => {
                consumed = Some(offset + used);
                break;
            }
        }
    }
    Received {
        output,
        consumed,
        size: receiver.size(),
        exceeded: receiver.exceeded(),
    }
}

fn read_lines(pieces: &[&[u8]], cap: usize) -> Vec<Framed> {
    let mut reader = LineReader::new(cap);
    let mut buffer = BytesMut::new();
    let mut lines = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        while let Some(result) = reader.next_line(&mut buffer) {
            lines.push(match result {
                Ok(line) => {
                    assert!(line.len() <= cap);
                    Framed::Line(line.to_vec())
                }
                Err(_) => Framed::TooLong,
            });
        }
        assert!(
            buffer.len() <= cap + 1,
            "buffer {} over cap {cap}",
            buffer.len()
        );
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Raw DATA-phase bytes drawn from the pieces that matter: line endings, dots, the five
/// smuggling vectors, real ends, text and UTF-8.
fn data_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => Just(&b"\r\n"[..]),
        2 => Just(&b"\r"[..]),
        2 => Just(&b"\n"[..]),
        3 => Just(&b"."[..]),
        1 => Just(&b"\n.\n"[..]),
        1 => Just(&b"\n.\r\n"[..]),
        1 => Just(&b"\r.\r\n"[..]),
        1 => Just(&b"\r\n.\r"[..]),
        1 => Just(&b"\r\n.\n"[..]),
        1 => Just(&b"\r\n.\r\n"[..]),
        1 => Just(&b"\r\n..\r\n"[..]),
        4 => Just(&b"text"[..]),
        1 => Just(&b"MAIL FROM:<x@y.example>"[..]),
        1 => Just("é".as_bytes()),
        1 => Just(&b" "[..]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\\.[a-zA-Z0-9_-]{1,8}){0,2}",
        1 => "\"[a-zA-Z0-9 <>@,;:.]{0,10}\"",
        1 => "[a-zé]{1,6}ü[a-z]{0,4}",
    ]
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{2,6}){1,3}",
        1 => Just("[192.0.2.1]".to_string()),
        1 => Just("[IPv6:2001:db8::1]".to_string()),
        1 => "bücher\\.[a-z]{2,4}",
    ]
}

fn address() -> impl Strategy<Value = String> {
    (local_part(), domain()).prop_map(|(local, domain)| format!("{local}@{domain}"))
}

/// Randomly upper/lower-case the ASCII letters of `text`.
fn mixed_case(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// Bytes drawn from the SMTP command alphabet.
fn command_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("MAIL FROM:"),
        Just("RCPT TO:"),
        Just("EHLO "),
        Just("AUTH "),
        Just("DATA"),
        Just("<"),
        Just(">"),
        Just("@"),
        Just(":"),
        Just("="),
        Just(" "),
        Just("\t"),
        Just("\r"),
        Just("\n"),
        Just("."),
        Just("\""),
        Just("\\"),
        Just(","),
        Just("["),
        Just("]"),
        Just("SIZE=12"),
        Just("BODY=8BITMIME"),
        Just("SMTPUTF8"),
        Just("a"),
        Just("b.example"),
        Just("é"),
        Just("\u{0}"),
    ];
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.concat().into_bytes())
}

fn no_nul() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn command_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_command(&raw);
    }

    #[test]
    fn command_parser_never_panics_on_smtp_alphabet(raw in command_bytes()) {
        if let Err(error) = parse_command(&raw) {
            let reply = error.reply().to_bytes();
            prop_assert!(reply.len() <= 512);
            prop_assert!(!has_bare_cr_or_lf(&reply));
        }
    }

    #[test]
    fn well_formed_mail_from_round_trips(
        sender in prop::option::of(address()),
        size in prop::option::of(any::<u64>()),
        body in prop_oneof![Just(None), Just(Some("8BITMIME")), Just(Some("7BIT"))],
        smtputf8 in any::<bool>(),
        spacing in 0usize..4,
        case_mask in any::<u64>(),
    ) {
        let path = sender.as_deref().unwrap_or("");
        let keyword = ["MAIL FROM:", "MAIL FROM: ", "MAIL FROM : ", "MAIL  FROM:"][spacing];
        let mut line = format!("{}<{path}>", mixed_case(keyword, case_mask));
        if let Some(size) = size {
            line.push_str(&format!(" {}={size}", mixed_case("SIZE", case_mask >> 7)));
        }
        if let Some(body) = body {
            line.push_str(&format!(" BODY={}", mixed_case(body, case_mask >> 13)));
        }
        if smtputf8 {
            line.push_str(&format!(" {}", mixed_case("SMTPUTF8", case_mask >> 23)));
        }
        let expected = Command::Mail(MailFrom {
            sender: sender.as_deref().map(|s| Address::parse(s).unwrap()),
            declared_size: size,
            eight_bit_mime: body == Some("8BITMIME"),
            smtputf8,
        });
        let parsed = parse_command(line.as_bytes());
        prop_assert_eq!(&parsed, &Ok(expected.clone()), "{}", line);
        // Rendered canonically, it parses to the same command again.
        let Command::Mail(mail) = &expected else { unreachable!() };
        let mut canonical = format!(
            "MAIL FROM:<{}>",
            mail.sender.as_ref().map(Address::as_str).unwrap_or("")
        );
        if let Some(size) = mail.declared_size {
            canonical.push_str(&format!(" SIZE={size}"));
        }
        if mail.eight_bit_mime {
            canonical.push_str(" BODY=8BITMIME");
        }
        if mail.smtputf8 {
            canonical.push_str(" SMTPUTF8");
        }
        prop_assert_eq!(parse_command(canonical.as_bytes()), Ok(expected));
    }

    #[test]
    fn well_formed_rcpt_to_round_trips(
        recipient in address(),
        brackets in any::<bool>(),
        case_mask in any::<u64>(),
    ) {
        let keyword = mixed_case("RCPT TO:", case_mask);
        let line = if brackets || recipient.contains('"') {
            format!("{keyword}<{recipient}>")
        } else {
            format!("{keyword}{recipient}")
        };
        let expected = Address::parse(&recipient).unwrap();
        prop_assert_eq!(parse_command(line.as_bytes()), Ok(Command::Rcpt(expected.clone())));
        let canonical = format!("RCPT TO:<{expected}>");
        prop_assert_eq!(parse_command(canonical.as_bytes()), Ok(Command::Rcpt(expected)));
    }

    #[test]
    fn data_receiver_matches_the_model_however_the_input_is_cut(
        raw in data_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let whole = receive(&[&raw], u64::MAX);
        let split = receive(&cut(&raw, &cuts), u64::MAX);
        let single: Vec<&[u8]> = raw.chunks(1).collect();
        let bytes = receive(&single, u64::MAX);
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(&whole, &bytes);
        prop_assert!(!has_bare_cr_or_lf(&whole.output), "{:?}", whole.output);
        prop_assert_eq!(whole.size, whole.output.len() as u64);

        // The end is exactly the first strict CRLF.CRLF of the raw input, nothing else.
        let end = data_end(&raw);
        prop_assert_eq!(whole.consumed, end);
        match end {
            Some(end) => {
                prop_assert_eq!(&whole.output, &data_content_model(&raw[..end - 3]));
            }
            None => {
                // Unfinished: what was produced so far is the start of what a real end gives.
                let mut closed = raw.clone();
                closed.extend_from_slice(b"\r\n.\r\n");
                let end = data_end(&closed).unwrap();
                let full = data_content_model(&closed[..end - 3]);
                prop_assert!(full.starts_with(&whole.output));
            }
        }
    }

    #[test]
    fn smuggling_vectors_never_end_the_data(
        before in "[a-zA-Z ]{1,10}",
        vector in prop::sample::select(vec![
            &b"\n.\n"[..], &b"\n.\r\n"[..], &b"\r.\r\n"[..], &b"\r\n.\r"[..], &b"\r\n.\n"[..],
        ]),
        after in "[A-Z][A-Z:<>@. ]{0,19}",
        cuts in prop::collection::vec(any::<usize>(), 0..4),
    ) {
        let mut raw = before.into_bytes();
        raw.extend_from_slice(vector);
        raw.extend_from_slice(after.as_bytes());
        let vector_end = raw.len();
        raw.extend_from_slice(b"\r\n.\r\n");
        let got = receive(&cut(&raw, &cuts), u64::MAX);
        prop_assert_eq!(got.consumed, Some(raw.len()));
        prop_assert!(got.output.len() >= vector_end);
        prop_assert!(!has_bare_cr_or_lf(&got.output));
    }

    #[test]
    fn data_receiver_keeps_at_most_the_limit(
        raw in data_bytes(),
        limit in 0u64..200,
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let unlimited = receive(&[&raw], u64::MAX);
        let got = receive(&cut(&raw, &cuts), limit);
        prop_assert_eq!(got.consumed, unlimited.consumed);
        prop_assert_eq!(got.size, unlimited.size);
        prop_assert!(got.output.len() as u64 <= limit);
        prop_assert_eq!(got.exceeded, unlimited.size > limit);
        if !got.exceeded {
            prop_assert_eq!(&got.output, &unlimited.output);
        }
    }

    #[test]
    fn line_reader_matches_the_model_however_the_input_is_cut(
        raw in prop::collection::vec(
            prop_oneof![4 => Just(b'a'), 2 => Just(b'\r'), 2 => Just(b'\n'), 1 => any::<u8>()],
            0..200,
        ),
        cap in 0usize..20,
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let expected = line_model(&raw, cap);
        prop_assert_eq!(read_lines(&[&raw], cap), expected.clone());
        prop_assert_eq!(read_lines(&cut(&raw, &cuts), cap), expected.clone());
        let single: Vec<&[u8]> = raw.chunks(1).collect();
        prop_assert_eq!(read_lines(&single, cap), expected);
    }

    #[test]
    fn sasl_plain_round_trips(
        user in no_nul().prop_filter("a user name", |u| !u.is_empty() && u.len() <= 1024),
        password in no_nul().prop_filter("a short password", |p| p.len() <= 1024),
        with_authzid in any::<bool>(),
        padded in any::<bool>(),
    ) {
        let authzid = if with_authzid { user.as_str() } else { "" };
        let message = format!("{authzid}\0{user}\0{password}");
        let line = if padded {
            STANDARD.encode(&message)
        } else {
            STANDARD_NO_PAD.encode(&message)
        };
        let (got_user, got_password) = decode_plain(&line).unwrap();
        prop_assert_eq!(got_user, user);
        prop_assert_eq!(got_password.expose(), password.as_str());
    }

    #[test]
    fn sasl_login_field_round_trips(
        value in no_nul().prop_filter("short", |v| v.len() <= 1024),
        padded in any::<bool>(),
    ) {
        let line = if value.is_empty() {
            "=".to_string()
        } else if padded {
            STANDARD.encode(&value)
        } else {
            STANDARD_NO_PAD.encode(&value)
        };
        prop_assert_eq!(decode_login_field(&line), Ok(value));
    }
}
