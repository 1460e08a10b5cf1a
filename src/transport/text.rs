//! Text from legacy networks made fit for stanzas (and so for the archive).
//!
//! Legacy text may hold what XML 1.0 cannot: IRC's formatting codes (colour `\x03fg[,bg]`,
//! hex colour `\x04RRGGBB[,RRGGBB]`, bold `\x02`, italic `\x1d`, underline `\x1f`,
//! strikethrough `\x1e`, monospace `\x11`, reverse `\x16`, reset `\x0f`), bells and other C0
//! controls, U+FFFE/U+FFFF. prpl-irc turns some codes into markup for messages but not
//! everywhere (topics, nicks, names, notices) and not all of them. Everything displayed that
//! comes from libpurple goes through [`display`] (multi-line text) or [`line`] (names,
//! topics, aliases) before it is put into an element.
//!
//! Identifiers (legacy names that become JIDs, room names) are not cleaned: a name changed
//! here would address someone else; JID validation refuses those that cannot be addressed.

use std::borrow::Cow;

use crate::xml::chars;

/// `s` without IRC formatting codes: the code characters, and the colour digits after `\x03`
/// (one or two, then optionally `,` and one or two) and the hex colours after `\x04`.
pub fn strip_irc_formatting(s: &str) -> Cow<'_, str> {
    const CODES: [char; 9] = [
        '\x02', '\x03', '\x04', '\x0f', '\x11', '\x16', '\x1d', '\x1e', '\x1f',
    ];
    if !s.contains(CODES) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    // Copies runs of text between codes; all codes and colour digits are ASCII, so every
    // index below is a character boundary.
    while let Some(off) = s.get(i..).and_then(|rest| rest.find(CODES)) {
        out.push_str(s.get(i..i + off).unwrap_or_default());
        i += off;
        let code = b.get(i).copied().unwrap_or_default();
        i += 1;
        match code {
            b'\x03' => {
                let fg = digits(b, i, 2, |c| c.is_ascii_digit());
                i += fg;
                if fg > 0 && b.get(i) == Some(&b',') {
                    let bg = digits(b, i + 1, 2, |c| c.is_ascii_digit());
                    if bg > 0 {
                        i += 1 + bg;
                    }
                }
            }
            b'\x04' if digits(b, i, 6, |c| c.is_ascii_hexdigit()) == 6 => {
                i += 6;
                if b.get(i) == Some(&b',') && digits(b, i + 1, 6, |c| c.is_ascii_hexdigit()) == 6 {
                    i += 7;
                }
            }
            _ => {}
        }
    }
    out.push_str(s.get(i..).unwrap_or_default());
    Cow::Owned(out)
}

/// How many of the (at most `max`) bytes from `at` satisfy `ok`, in a row.
fn digits(b: &[u8], at: usize, max: usize, ok: impl Fn(&u8) -> bool) -> usize {
    b.iter().skip(at).take(max).take_while(|c| ok(c)).count()
}

/// Multi-line legacy text (message bodies, status messages, prompts, error texts): IRC
/// formatting stripped, then every character XML cannot carry.
pub fn display(s: &str) -> String {
    chars::sanitize(&strip_irc_formatting(s)).into_owned()
}

/// Single-line legacy text (nicks shown as names, topics, aliases, groups, labels): as
/// [`display`], with line breaks and tabs as spaces.
pub fn line(s: &str) -> String {
    chars::sanitize_line(&strip_irc_formatting(s)).into_owned()
}

/// Whether `s` holds a control character that has no place in a single-line form field
/// (C0 other than TAB: CR and LF would end an IRC line and start another command).
pub fn first_control(s: &str) -> Option<char> {
    s.chars()
        .find(|c| c.is_ascii_control() && *c != '\t' && *c != '\x7f')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irc_codes() {
        assert_eq!(strip_irc_formatting("plain"), "plain");
        assert!(matches!(strip_irc_formatting("plain é"), Cow::Borrowed(_)));
        assert_eq!(
            strip_irc_formatting("\x02bold\x02 \x034,12red on blue\x03 \x0399x"),
            "bold red on blue x"
        );
        // At most two digits each; a comma without a digit after it stays.
        assert_eq!(strip_irc_formatting("\x03123"), "3");
        assert_eq!(strip_irc_formatting("\x034,"), ",");
        assert_eq!(strip_irc_formatting("\x03,5"), ",5");
        assert_eq!(strip_irc_formatting("\x0304,05,06"), ",06");
        assert_eq!(strip_irc_formatting("a\x03"), "a");
        assert_eq!(
            strip_irc_formatting("\x04FF0000red\x04 \x04ff0000,00ff00x"),
            "red x"
        );
        assert_eq!(strip_irc_formatting("\x04FF00"), "FF00");
        assert_eq!(
            strip_irc_formatting("\x1ditalic\x1f \x1e\x11\x16\x0f"),
            "italic "
        );
        assert_eq!(strip_irc_formatting("é\x03é"), "éé");
    }

    #[test]
    fn display_and_line() {
        assert_eq!(
            display("\x07ding\x034,1 hi\u{FFFF}\nthere"),
            "ding hi\nthere"
        );
        assert_eq!(line("a\r\nb\x07\tc"), "a  b c");
        assert_eq!(first_control("nick\r\nQUIT"), Some('\r'));
        assert_eq!(first_control("tab\tok é"), None);
        assert_eq!(first_control("nul\0"), Some('\0'));
    }

    proptest::proptest! {
        #[test]
        fn cleaned_text_is_xml(s in proptest::string::string_regex("(?s).{0,80}").unwrap()) {
            let d = display(&s);
            proptest::prop_assert!(chars::is_xml_str(&d));
            proptest::prop_assert!(!d.contains(['\x02', '\x03', '\x04', '\x0f', '\x1d', '\x1f']));
            let l = line(&s);
            proptest::prop_assert!(chars::is_xml_str(&l));
            proptest::prop_assert!(!l.contains(['\n', '\r', '\t']));
        }

        #[test]
        fn clean_text_is_kept(s in "[^\\x00-\\x1f\\u{FFFE}\\u{FFFF}]{0,80}") {
            proptest::prop_assert_eq!(display(&s), s.clone());
            proptest::prop_assert_eq!(line(&s), s);
        }
    }
}
