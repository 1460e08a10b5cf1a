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

fn is_escape_seq(s: &str) -> bool {
    TABLE
        .iter()
        .any(|(_, e)| s.len() >= 3 && s[..3].eq_ignore_ascii_case(e))
}

/// Escapes a legacy name for use as a JID node. A backslash is escaped only where it would
/// otherwise start an escape sequence (XEP-0106 §4.2).
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, ch) in name.char_indices() {
        if ch == '\\' {
            if is_escape_seq(&name[i..]) {
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

/// Reverses [`escape`].
pub fn unescape(node: &str) -> String {
    let mut out = String::with_capacity(node.len());
    let mut i = 0;
    while i < node.len() {
        let rest = &node[i..];
        if rest.starts_with('\\')
            && let Some((c, _)) = TABLE
                .iter()
                .find(|(_, e)| rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(e))
        {
            out.push(*c);
            i += 3;
            continue;
        }
        let ch = rest.chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// Contact node for `name` on the account with disambiguation index `n` (0 = none).
pub fn contact_node(name: &str, n: usize) -> String {
    if n == 0 {
        escape(name)
    } else {
        format!("{}%{}", escape(name), n + 1)
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
}
