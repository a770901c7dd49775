//! `application/x-www-form-urlencoded` decoding for the token endpoint, written here so the
//! kit needs no extra crate. Follows the WHATWG URL standard's parser: `&` separates pairs,
//! the first `=` splits name and value, `+` is a space, `%XX` is a byte, and a `%` not followed
//! by two hex digits is kept literally; bytes are then read as UTF-8 (lossily).
//!
//! Invariant: decoding never fails; malformed input yields best-effort pairs, as real servers
//! do, so the endpoint reports the *semantic* error (missing parameter) rather than a parse
//! error.

/// Decodes a form body into `(name, value)` pairs, in order, skipping empty segments.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let mut parts = segment.splitn(2, |b| *b == b'=');
            let name = parts.next().unwrap_or_default();
            let value = parts.next().unwrap_or_default();
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// The first value of `name` in `pairs`.
pub fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Decodes `+` and `%XX` escapes.
pub fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some((&byte, tail)) = rest.split_first() {
        match byte {
            b'+' => {
                out.push(b' ');
                rest = tail;
            }
            b'%' => match (tail.first().and_then(hex), tail.get(1).and_then(hex)) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    rest = tail.get(2..).unwrap_or_default();
                }
                _ => {
                    out.push(b'%');
                    rest = tail;
                }
            },
            other => {
                out.push(other);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: &u8) -> Option<u8> {
    char::from(*digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_browser() {
        let pairs = parse_form(
            b"grant_type=client_credentials&scope=https%3A%2F%2Foutlook.office365.com%2F.default\
              &client_secret=a%2Bb+c%7E%&empty=&flag&&x=1=2",
        );
        assert_eq!(form_value(&pairs, "grant_type"), Some("client_credentials"));
        assert_eq!(
            form_value(&pairs, "scope"),
            Some("https://outlook.office365.com/.default")
        );
        assert_eq!(form_value(&pairs, "client_secret"), Some("a+b c~%"));
        assert_eq!(form_value(&pairs, "empty"), Some(""));
        assert_eq!(form_value(&pairs, "flag"), Some(""));
        assert_eq!(form_value(&pairs, "x"), Some("1=2"));
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9".as_bytes()), "café");
    }
}
