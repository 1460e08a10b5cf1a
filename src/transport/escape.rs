//! XEP-0106 (JID Escaping) for legacy names in JID nodes, and the mapping between legacy
//! names and contact JIDs (`escaped-name[%n]@service`, where `%n` tells apart the user's
//! second, third… account on the same network).

/// XEP-0106 §3.2: the characters escaped, with their escape sequences.
const TABLE: [(char, &str); 10] = [
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
    ('\\', "\\5c"),
];

/// The character whose XEP-0106 escape sequence starts at byte `i` of `s`, if one does. Works
/// on bytes (every sequence is ASCII), so it never splits a multi-byte character.
fn escape_seq_at(s: &str, i: usize) -> Option<char> {
    let seq = s.as_bytes().get(i..i.checked_add(3)?)?;
    TABLE
        .iter()
        .find(|(_, e)| seq.eq_ignore_ascii_case(e.as_bytes()))
        .map(|(c, _)| *c)
}

/// Escapes a legacy name for use as a JID node. A backslash is escaped only where it would
/// otherwise start an escape sequence (XEP-0106 §4.2).
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, ch) in name.char_indices() {
        if ch == '\\' {
            if escape_seq_at(name, i).is_some() {
                out.push_str("\\5c");
            } else {
                out.push('\\');
            }
            continue;
        }
        match TABLE.iter().find(|(c, _)| *c == ch) {
            Some((_, e)) => out.push_str(e),
            None => out.push(ch),
        }
    }
    out
}

/// Reverses [`escape`]. Any text is accepted: what is not an escape sequence is kept as is.
pub fn unescape(node: &str) -> String {
    let mut out = String::with_capacity(node.len());
    let mut chars = node.char_indices();
    while let Some((i, ch)) = chars.next() {
        if ch == '\\'
            && let Some(c) = escape_seq_at(node, i)
        {
            out.push(c);
            // The two hex digits of the sequence: ASCII, one char each.
            chars.next();
            chars.next();
            continue;
        }
        out.push(ch);
    }
    out
}

/// Contact node for `name` on the account with disambiguation index `n` (0 = none).
pub fn contact_node(name: &str, n: usize) -> String {
    if n == 0 {
        escape(name)
    } else {
        format!("{}%{}", escape(name), n.saturating_add(1))
    }
}

/// Splits a contact node into (legacy name, account index).
pub fn parse_contact_node(node: &str) -> (String, usize) {
    if let Some((head, tail)) = node.rsplit_once('%')
        && let Ok(k) = tail.parse::<usize>()
        && k >= 2
    {
        return (unescape(head), k - 1);
    }
    (unescape(node), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xep0106_examples() {
        assert_eq!(escape("space cadet"), "space\\20cadet");
        assert_eq!(
            escape("call me \"ishmael\""),
            "call\\20me\\20\\22ishmael\\22"
        );
        assert_eq!(escape("at&t guy"), "at\\26t\\20guy");
        assert_eq!(escape("d'artagnan"), "d\\27artagnan");
        assert_eq!(escape("/.fanboy"), "\\2f.fanboy");
        assert_eq!(escape("::foo::"), "\\3a\\3afoo\\3a\\3a");
        assert_eq!(escape("<foo>"), "\\3cfoo\\3e");
        assert_eq!(escape("user@host"), "user\\40host");
        assert_eq!(escape("c:\\net"), "c\\3a\\net");
        assert_eq!(escape("c:\\\\net"), "c\\3a\\\\net");
        assert_eq!(escape("c:\\cool stuff"), "c\\3a\\cool\\20stuff");
        assert_eq!(escape("c:\\5commas"), "c\\3a\\5c5commas");
        for s in [
            "space cadet",
            "user@host",
            "c:\\5commas",
            "#wockd",
            "bob@localhost/res",
        ] {
            assert_eq!(unescape(&escape(s)), s);
        }
    }

    #[test]
    fn contact_nodes_disambiguate_accounts() {
        assert_eq!(contact_node("bob", 0), "bob");
        assert_eq!(contact_node("bob@x", 1), "bob\\40x%2");
        assert_eq!(parse_contact_node("bob\\40x%2"), ("bob@x".into(), 1));
        assert_eq!(parse_contact_node("bob"), ("bob".into(), 0));
    }

    #[test]
    fn backslash_before_multibyte_does_not_panic() {
        // Issue 10: `\aé` used to slice the `é` in half.
        for node in [
            "\\aé",
            "\\é",
            "\\5",
            "\\",
            "a\\",
            "\\5é",
            "\\2",
            "é\\2f",
            "\\a\u{1F600}",
        ] {
            let _ = unescape(node);
            let _ = parse_contact_node(node);
            assert_eq!(unescape(&escape(node)), node);
        }
        assert_eq!(unescape("\\aé"), "\\aé");
        assert_eq!(unescape("\\2fé"), "/é");
        assert_eq!(escape("\\é"), "\\é");
        assert_eq!(contact_node("x", usize::MAX), "x%18446744073709551615");
    }

    proptest::proptest! {
        #[test]
        fn escape_round_trips(s in "\\PC*") {
            proptest::prop_assert_eq!(unescape(&escape(&s)), s);
        }

        #[test]
        fn escape_round_trips_backslash_heavy(s in "[\\\\0-9a-fA-F é@/: %\u{1F600}]{0,24}") {
            proptest::prop_assert_eq!(unescape(&escape(&s)), s);
        }

        #[test]
        fn contact_nodes_round_trip(s in "\\PC*", n in 1usize..1000) {
            let node = contact_node(&s, n);
            let (name, index) = parse_contact_node(&node);
            proptest::prop_assert_eq!(index, n);
            proptest::prop_assert_eq!(name, s);
        }

        #[test]
        fn unescape_and_parse_never_panic(s in proptest::string::string_regex("(?s).{0,64}").unwrap()) {
            let _ = unescape(&s);
            let _ = parse_contact_node(&s);
            let _ = escape(&s);
        }

        #[test]
        fn unescape_never_panics_on_any_utf8(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = unescape(&s);
            let _ = parse_contact_node(&s);
        }
    }
}
