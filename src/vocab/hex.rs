//! Hexadecimal text of bytes: lower case for checksums, ids and nonces, upper case where a
//! standard asks for it (certificate thumbprints as Entra shows them).

use std::fmt::Write;

/// Lower-case hex of `bytes`.
pub fn lower(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Upper-case hex of `bytes`.
pub fn upper(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02X}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::{lower, upper};

    #[test]
    fn both_cases_pad_every_byte_to_two_digits() {
        let cases: [(&[u8], &str, &str); 3] = [
            (&[], "", ""),
            (&[0x00, 0x0a, 0xff], "000aff", "000AFF"),
            (&[0x12, 0xab], "12ab", "12AB"),
        ];
        for (bytes, expected_lower, expected_upper) in cases {
            assert_eq!(lower(bytes), expected_lower);
            assert_eq!(upper(bytes), expected_upper);
        }
    }
}
