//! A display name written into a header by the relay (`sender_name`, or a client's name kept
//! in a rewritten `From:`), as an RFC 5322 phrase.
//!
//! ASCII names become a quoted-string (`"` and `\` escaped, so specials like `,` `<` `@` `;`
//! cannot end the name or start an address); other names become RFC 2047 encoded words
//! (`=?utf-8?B?…?=`), each at most 75 characters and never splitting a character, folded
//! onto continuation lines so no header line passes 998 octets. Control characters and line
//! breaks are dropped and runs of white space become one space, so a name can never inject a
//! header field. Pure.

use base64::Engine;

/// Longest name kept, in characters (longer names are cut with `…`).
const MAX_NAME_CHARS: usize = 200;

/// Bytes of UTF-8 per encoded word: 45 bytes are 60 base64 characters, and with
/// `=?utf-8?B?` and `?=` the word is 72 characters, under RFC 2047's 75.
const WORD_BYTES: usize = 45;

/// `name` as a phrase for `From:` / `Reply-To:`; `None` when nothing printable is left.
pub fn phrase(name: &str) -> Option<String> {
    let name = crate::vocab::text::one_line_excerpt(name, MAX_NAME_CHARS);
    if name.is_empty() {
        return None;
    }
    if name.is_ascii() {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        return Some(format!("\"{escaped}\""));
    }
    let mut words = Vec::new();
    let mut word = String::new();
    for ch in name.chars() {
        if word.len() + ch.len_utf8() > WORD_BYTES {
            words.push(encoded_word(&word));
            word.clear();
        }
        word.push(ch);
    }
    if !word.is_empty() {
        words.push(encoded_word(&word));
    }
    // White space between encoded words is not part of the name (RFC 2047 §6.2).
    Some(words.join("\r\n "))
}

fn encoded_word(text: &str) -> String {
    format!(
        "=?utf-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    )
}

/// `Name <address>`, or `<address>` without a name.
pub fn mailbox(name: Option<&str>, address: &str) -> String {
    match name.and_then(phrase) {
        Some(phrase) => format!("{phrase} <{address}>"),
        None => format!("<{address}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    /// The name a mail reader sees in `From: {mailbox}`.
    fn read_back(field: &str) -> Option<String> {
        let headers = format!("From: {field}\r\n\r\n");
        let parsed = MessageParser::default().parse_headers(headers.as_bytes())?;
        let from = parsed.from()?.first()?;
        assert_eq!(from.address(), Some("info@contoso.com"), "{field}");
        from.name().map(str::to_string)
    }

    #[test]
    fn phrases_table() {
        // (name, exact phrase written, the name a reader gets back)
        let cases: [(&str, Option<&str>, Option<&str>); 8] = [
            (
                "Contoso Scanners",
                Some("\"Contoso Scanners\""),
                Some("Contoso Scanners"),
            ),
            ("Smith, John", Some("\"Smith, John\""), Some("Smith, John")),
            ("a <b@c> d", Some("\"a <b@c> d\""), Some("a <b@c> d")),
            ("say \"hi\"", Some("\"say \\\"hi\\\"\""), Some("say \"hi\"")),
            (
                "back\\slash",
                Some("\"back\\\\slash\""),
                Some("back\\slash"),
            ),
            (
                "Drücker Büro",
                Some("=?utf-8?B?RHLDvGNrZXIgQsO8cm8=?="),
                Some("Drücker Büro"),
            ),
            (
                "  two\r\nlines\tand\u{7}bell ",
                Some("\"two lines andbell\""),
                Some("two lines andbell"),
            ),
            ("  \r\n ", None, None),
        ];
        for (name, written, read) in cases {
            assert_eq!(phrase(name).as_deref(), written, "{name:?}");
            let field = mailbox(Some(name), "info@contoso.com");
            assert!(
                !field.replace("\r\n ", "").contains(['\r', '\n']),
                "only folds: {field:?}"
            );
            assert_eq!(read_back(&field).as_deref(), read, "{field:?}");
        }
    }

    #[test]
    fn long_non_ascii_names_become_several_short_words_on_folded_lines() {
        let name = "Geschäftsführung Überweisungen und Rechnungsprüfung — Zentralbüro Köln-Süd";
        let written = phrase(name).unwrap();
        for line in written.split("\r\n") {
            let word = line.trim_start();
            assert!(
                word.starts_with("=?utf-8?B?") && word.ends_with("?="),
                "{line}"
            );
            assert!(word.len() <= 75, "{} characters: {word}", word.len());
        }
        assert!(
            written.contains("\r\n "),
            "several words, folded: {written}"
        );
        assert_eq!(
            read_back(&mailbox(Some(name), "info@contoso.com")).as_deref(),
            Some(name)
        );
        // 200 characters of 3-byte UTF-8 still keep every line well under 998 octets.
        let huge = "€".repeat(500);
        let written = phrase(&huge).unwrap();
        assert!(written.split("\r\n").all(|line| line.len() < 100));
    }
}
