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
/// than TAB, LF, CR, or U+FFFE / U+FFFF (surrogates cannot occur in valid UTF-8). The parser
/// runs it on every stanza, the serialiser on every text and attribute value.
///
/// Two passes per 64-byte chunk: a cheap one without early exit (which the compiler
/// vectorises) for bytes that may matter — a control byte or 0xEF, the lead byte of
/// U+F000–U+FFFF — and the exact test only for a chunk that has one.
pub fn has_forbidden_bytes(bytes: &[u8]) -> bool {
    const CHUNK: usize = 64;
    let mut at = 0;
    for chunk in bytes.chunks(CHUNK) {
        let suspicious = chunk.iter().fold(false, |acc, &b| {
            acc | ((b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r')) | (b == 0xEF)
        });
        if suspicious && forbidden_at(bytes, at, at + chunk.len()) {
            return true;
        }
        at += chunk.len();
    }
    false
}

/// The exact test of [`has_forbidden_bytes`] for `bytes[from..to]` (looking past `to` for the
/// rest of a character that starts before it).
fn forbidden_at(bytes: &[u8], from: usize, to: usize) -> bool {
    (from..to).any(|i| match bytes.get(i) {
        Some(b'\t' | b'\n' | b'\r') | None => false,
        Some(0..0x20) => true,
        Some(0xEF) => {
            bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF))
        }
        Some(_) => false,
    })
}

/// Appends `s` to `out` as XML character data, or as an attribute value between double quotes
/// when `attribute` (quotes escaped too), without the characters that are not XML 1.0 `Char`s:
/// the bytes of quick-xml's `escape(sanitize(s))` (`partial_escape` for text), in one pass
/// and without allocating. Hand-written because quick-xml's escaping returns a `Cow` per value
/// and tests every byte through a closure after `sanitize` has read it once already; this is on
/// the path of every attribute and text of every stanza the server writes.
pub fn write_escaped(out: &mut Vec<u8>, s: &str, attribute: bool) {
    let special = if attribute {
        &SPECIAL_IN_ATTR
    } else {
        &SPECIAL_IN_TEXT
    };
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut skip = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        if !special[usize::from(b)] {
            continue;
        }
        let entity: &[u8] = match b {
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'&' => b"&amp;",
            // A raw CR would become LF in the reader's line-end normalisation.
            b'\r' => b"&#13;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            // U+FFFE, U+FFFF: dropped.
            0xEF if bytes.get(i + 1) == Some(&0xBF)
                && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)) =>
            {
                skip = 2;
                b""
            }
            // Other characters from U+F000 on.
            0xEF => continue,
            // C0 controls other than TAB and LF (not special): dropped.
            _ => b"",
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        out.extend_from_slice(entity);
        start = i + 1 + skip;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

/// The bytes [`write_escaped`] looks at: the entities it writes, C0 controls but TAB and LF,
/// and 0xEF (the lead byte of U+FFFE and U+FFFF).
const fn special_bytes(attribute: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b != b'\t' as usize && b != b'\n' as usize;
        b += 1;
    }
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xEF] = true;
    t[b'"' as usize] = attribute;
    t[b'\'' as usize] = attribute;
    t
}
const SPECIAL_IN_TEXT: [bool; 256] = special_bytes(false);
const SPECIAL_IN_ATTR: [bool; 256] = special_bytes(true);

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

    /// The one-pass writer gives what quick-xml's escaping of the sanitised text gives, for
    /// every character class (controls, the entities, U+FFFE/U+FFFF around chunk borders).
    #[test]
    fn write_escaped_matches_quick_xml() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "a<b>&\"c'd".into(),
            "\x07bell\u{FFFE}x\u{FFFF}\u{FFFD}\u{F000}é\t\r\n".into(),
        ];
        for pad in 60..68 {
            samples.push(format!(
                "{}\u{FFFF}&{}\u{FFFE}",
                "x".repeat(pad),
                "\x01".repeat(pad % 3)
            ));
            samples.push(format!("{}\u{EFFF}<", "y".repeat(pad)));
        }
        let all: String = (0u32..0x300)
            .chain(0xEF00..0xF010)
            .chain(0xFFF0..0x10010)
            .filter_map(char::from_u32)
            .collect();
        samples.push(all);
        for s in &samples {
            let mut text = Vec::new();
            write_escaped(&mut text, s, false);
            assert_eq!(
                text,
                quick_xml::escape::partial_escape(sanitize(s).as_ref()).as_bytes(),
                "{s:?}"
            );
            let mut attr = Vec::new();
            write_escaped(&mut attr, s, true);
            assert_eq!(
                attr,
                quick_xml::escape::escape(sanitize(s).as_ref()).as_bytes(),
                "{s:?}"
            );
            let slow = s.chars().any(|c| !is_xml_char(c));
            assert_eq!(has_forbidden_bytes(s.as_bytes()), slow, "{s:?}");
        }
    }

    proptest::proptest! {
        /// Any text, with the characters that matter mixed in.
        #[test]
        fn write_escaped_is_escape_of_sanitize(
            s in "([<>&\"'\\r\\n\\t\\x00-\\x1f]|\u{FFFE}|\u{FFFF}|\u{F000}|\\PC){0,80}"
        ) {
            let mut attr = Vec::new();
            write_escaped(&mut attr, &s, true);
            let clean = sanitize(&s);
            let want_attr = quick_xml::escape::escape(clean.as_ref());
            proptest::prop_assert_eq!(attr.as_slice(), want_attr.as_bytes());
            let mut text = Vec::new();
            write_escaped(&mut text, &s, false);
            let want_text = quick_xml::escape::partial_escape(clean.as_ref());
            proptest::prop_assert_eq!(text.as_slice(), want_text.as_bytes());
            proptest::prop_assert_eq!(
                has_forbidden_bytes(s.as_bytes()),
                s.chars().any(|c| !is_xml_char(c))
            );
        }
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
