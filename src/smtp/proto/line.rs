//! Command-line framing: splits the input buffer into command lines, with a hard cap.
//!
//! A command line ends at LF (an optional CR before it is removed), which is liberal towards
//! devices that send bare LF in the command phase; the DATA phase has its own strict rules
//! in [`super::data`]. A line longer than the cap is discarded up to its end and reported
//! once as [`LineTooLong`], so the session can answer `500 5.5.2` and stay usable, and the
//! buffer never grows beyond the cap.

use bytes::{Buf, BytesMut};

/// The line was longer than the cap and has been discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Incremental command-line splitter.
#[derive(Debug, Clone)]
pub struct LineReader {
    max_line: usize,
    discarding: bool,
}

impl LineReader {
    /// A reader that accepts lines of at most `max_line` bytes (without the line ending).
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            max_line,
            discarding: false,
        }
    }

    /// Take the next complete line out of `buffer`. `None` means more input is needed.
    /// Cancel-safe: all state lives in `self` and `buffer`.
    pub fn next_line(&mut self, buffer: &mut BytesMut) -> Option<Result<BytesMut, LineTooLong>> {
        // The cap plus one byte for the CR; saturating, so a cap of `usize::MAX` means "no cap"
        // instead of overflowing.
        let max_with_cr = self.max_line.saturating_add(1);
        match memchr::memchr(b'\n', buffer) {
            Some(position) => {
                if self.discarding || position > max_with_cr {
                    buffer.advance(position + 1);
                    self.discarding = false;
                    return Some(Err(LineTooLong));
                }
                let mut line = buffer.split_to(position + 1);
                line.truncate(position);
                if line.last() == Some(&b'\r') {
                    line.truncate(position - 1);
                }
                if line.len() > self.max_line {
                    return Some(Err(LineTooLong));
                }
                Some(Ok(line))
            }
            None => {
                if buffer.len() > max_with_cr {
                    self.discarding = true;
                    buffer.clear();
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_and_bare_lf() {
        let mut reader = LineReader::new(100);
        let mut buffer = BytesMut::from(&b"EHLO a\r\nNOOP\nQUI"[..]);
        assert_eq!(
            reader.next_line(&mut buffer),
            Some(Ok(BytesMut::from(&b"EHLO a"[..])))
        );
        assert_eq!(
            reader.next_line(&mut buffer),
            Some(Ok(BytesMut::from(&b"NOOP"[..])))
        );
        assert_eq!(reader.next_line(&mut buffer), None);
        buffer.extend_from_slice(b"T\r\n");
        assert_eq!(
            reader.next_line(&mut buffer),
            Some(Ok(BytesMut::from(&b"QUIT"[..])))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn overlong_line_is_discarded_in_bounded_memory_and_reported_once() {
        let mut reader = LineReader::new(10);
        let mut buffer = BytesMut::new();
        for _ in 0..1000 {
            buffer.extend_from_slice(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            assert_eq!(reader.next_line(&mut buffer), None);
            assert!(buffer.len() <= 64);
        }
        buffer.extend_from_slice(b"xx\r\nNOOP\r\n");
        assert_eq!(reader.next_line(&mut buffer), Some(Err(LineTooLong)));
        assert_eq!(
            reader.next_line(&mut buffer),
            Some(Ok(BytesMut::from(&b"NOOP"[..])))
        );
    }

    /// Found by `fuzz/fuzz_targets/line.rs`: `max_line + 1` overflowed (a panic in debug
    /// builds, and a cap of 0 in release builds) for a cap of `usize::MAX`.
    #[test]
    fn maximal_cap_does_not_overflow() {
        let mut reader = LineReader::new(usize::MAX);
        let mut buffer = BytesMut::from(&b"NOOP\r\nQUI"[..]);
        assert_eq!(
            reader.next_line(&mut buffer),
            Some(Ok(BytesMut::from(&b"NOOP"[..])))
        );
        assert_eq!(reader.next_line(&mut buffer), None);
        assert_eq!(&buffer[..], b"QUI");
    }

    #[test]
    fn exact_cap_is_accepted() {
        let mut reader = LineReader::new(4);
        let mut buffer = BytesMut::from(&b"NOOP\r\nNOOPX\r\n"[..]);
        assert_eq!(
            reader.next_line(&mut buffer),
            Some(Ok(BytesMut::from(&b"NOOP"[..])))
        );
        assert_eq!(reader.next_line(&mut buffer), Some(Err(LineTooLong)));
    }
}
