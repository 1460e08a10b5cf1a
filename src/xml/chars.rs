//! XML 1.0 `Char` (§2.2): which characters may appear in a document at all, and a sanitizer for
//! text that comes from somewhere that does not care (legacy networks, libpurple, old archives).
//!
//! Pure and allocation-free when the text is already valid.

use std::borrow::Cow;

/// `Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]`.
/// (A Rust `char` is never a surrogate, so the surrogate block needs no test.)
pub fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// True when every character of `s` is an XML 1.0 `Char`.
pub fn is_xml_str(s: &str) -> bool {
    !has_forbidden_bytes(s.as_bytes())
}

/// True if valid UTF-8 `bytes` hold a character outside XML 1.0 `Char`: a C0 control other
/// than TAB, LF, CR, or U+FFFE / U+FFFF (surrogates cannot occur in valid UTF-8). One pass,
/// byte-wise: the parser runs it on every stanza, the serialiser on every text.
pub fn has_forbidden_bytes(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0..0x20 => true,
        0xEF => bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)),
        _ => false,
    })
}

/// `s` with every character that is not an XML 1.0 `Char` removed (C0 controls other than
/// TAB/LF/CR, U+FFFE, U+FFFF). Borrows when there is nothing to remove.
pub fn sanitize(s: &str) -> Cow<'_, str> {
    if !has_forbidden_bytes(s.as_bytes()) {
        return Cow::Borrowed(s);
    }
    match s.find(|c: char| !is_xml_char(c)) {
        None => Cow::Borrowed(s),
        Some(first) => {
            let (head, tail) = s.split_at(first);
            let mut out = String::with_capacity(s.len());
            out.push_str(head);
            out.extend(tail.chars().filter(|&c| is_xml_char(c)));
            Cow::Owned(out)
        }
    }
}

/// Like [`sanitize`], for single-line text (names, nicks, topics, subjects): TAB, CR and LF
/// become a space as well.
pub fn sanitize_line(s: &str) -> Cow<'_, str> {
    let bad = |c: char| !is_xml_char(c) || matches!(c, '\t' | '\n' | '\r');
    match s.find(bad) {
        None => Cow::Borrowed(s),
        Some(first) => {
            let (head, tail) = s.split_at(first);
            let mut out = String::with_capacity(s.len());
            out.push_str(head);
            for c in tail.chars() {
                if matches!(c, '\t' | '\n' | '\r') {
                    out.push(' ');
                } else if is_xml_char(c) {
                    out.push(c);
                }
            }
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_classes() {
        for ok in [
            '\t', '\n', '\r', ' ', 'a', 'é', '\u{D7FF}', '\u{E000}', '\u{FFFD}',
        ] {
            assert!(is_xml_char(ok), "{ok:?}");
        }
        assert!(is_xml_char('\u{10000}'));
        assert!(is_xml_char('\u{10FFFF}'));
        for bad in [
            '\0', '\x02', '\x03', '\x07', '\x0b', '\x0c', '\x1f', '\u{FFFE}', '\u{FFFF}',
        ] {
            assert!(!is_xml_char(bad), "{bad:?}");
        }
        // DEL and C1 controls are XML 1.0 Chars.
        assert!(is_xml_char('\x7f'));
        assert!(is_xml_char('\u{85}'));
    }

    #[test]
    fn sanitize_strips_only_invalid() {
        assert!(matches!(sanitize("plain é\ttext\n"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\x07b\x00c\u{FFFF}d\u{FFFE}"), "abcd");
        assert_eq!(sanitize("\x1fé\x02"), "é");
        assert_eq!(sanitize(""), "");
        assert_eq!(sanitize_line("a\r\nb\tc\x07"), "a  b c");
        assert!(matches!(sanitize_line("one line"), Cow::Borrowed(_)));
    }

    #[test]
    fn sanitized_is_valid() {
        let all: String = (0u32..0x300)
            .chain(0xFFF0..0x10010)
            .filter_map(char::from_u32)
            .collect();
        assert!(is_xml_str(&sanitize(&all)));
        assert!(is_xml_str(&sanitize_line(&all)));
    }
}
