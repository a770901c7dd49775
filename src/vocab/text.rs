//! Making text from the network safe to put in one log line.

/// Whitespace runs become one space, other control characters are dropped, the result is cut
/// to `max_chars` and ends with `…` when cut. Used for every reply text, error description or
/// body excerpt that a remote server sent and the relay logs.
pub fn one_line_excerpt(text: &str, max_chars: usize) -> String {
    let mut excerpt = String::new();
    let mut kept = 0;
    let mut pending_space = false;
    for ch in text.trim().chars() {
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        if ch.is_control() {
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if kept + needed > max_chars {
            excerpt.push('…');
            return excerpt;
        }
        if pending_space {
            excerpt.push(' ');
            pending_space = false;
        }
        excerpt.push(ch);
        kept += needed;
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::one_line_excerpt;

    #[test]
    fn folds_strips_and_cuts() {
        assert_eq!(one_line_excerpt("  a\r\n\tb  c ", 10), "a b c");
        assert_eq!(one_line_excerpt("a\u{7}b", 10), "ab");
        assert_eq!(one_line_excerpt("abcdef", 3), "abc…");
        assert_eq!(one_line_excerpt("", 3), "");
    }
}
