//! libpurple's message markup (HTML-ish) to and from text and XHTML.

use std::ffi::c_char;

use purple_sys as p;

use super::ffi::{cstring, take_gstring};

/// Converts libpurple's message markup to plain text: tags stripped, entities decoded,
/// `<br>` to newlines.
pub fn html_to_text(html: &str) -> String {
    let c = cstring(html);
    // SAFETY: `c` lives across the call; purple_markup_strip_html returns a newly allocated
    // string, which take_gstring copies and frees.
    take_gstring(unsafe { p::purple_markup_strip_html(c.as_ptr()) }).unwrap_or_default()
}

/// libpurple's HTML as XHTML (`purple_markup_html_to_xhtml`, what prpl-jabber sends as
/// XHTML-IM): closes tags, quotes attributes, maps `<font>` to styles.
pub fn html_to_xhtml(html: &str) -> String {
    let c = cstring(html);
    let mut xhtml: *mut c_char = std::ptr::null_mut();
    // SAFETY: libpurple allocates the result (ours: g_free'd by take_gstring); a NULL plain
    // pointer is allowed.
    unsafe { p::purple_markup_html_to_xhtml(c.as_ptr(), &mut xhtml, std::ptr::null_mut()) };
    take_gstring(xhtml).unwrap_or_default()
}

/// Escapes plain text as libpurple message markup (`&`, `<`, `>`, quotes; newlines as `<br>`).
pub fn text_to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_plain_text_as_markup() {
        assert_eq!(
            text_to_html("a<b & 'c'\nd"),
            "a&lt;b &amp; &apos;c&apos;<br>d"
        );
    }
}
