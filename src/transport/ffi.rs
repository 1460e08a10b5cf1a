//! Small helpers for crossing the libpurple FFI boundary safely.
//!
//! Ownership rules used throughout `src/transport/`:
//! * A `*const c_char` libpurple hands to a callback is borrowed for the duration of that call
//!   only; [`string`] copies it into an owned `String` at once.
//! * Strings we pass in are `CString`s that live until the call returns; libpurple copies
//!   what it keeps (`g_strdup`), which every setter used here documents.
//! * Strings libpurple returns as `gchar *` "to be freed" go through [`take_gstring`], which
//!   copies and `g_free`s.
//! * libpurple objects (`PurpleAccount`, `PurpleConversation`, …) are never owned by Rust: we
//!   keep raw pointers only while libpurple says they are alive (accounts until
//!   `purple_accounts_delete`, conversations until `destroy_conversation`) and re-validate
//!   anything deferred to a later loop turn.

use std::ffi::{CStr, CString, c_char, c_void};

use purple_sys as p;

/// Copies a borrowed C string; `None` for NULL.
pub fn opt_string(s: *const c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: libpurple passes NUL-terminated strings valid for the duration of the call.
    Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

/// Copies a borrowed C string; empty for NULL.
pub fn string(s: *const c_char) -> String {
    opt_string(s).unwrap_or_default()
}

/// Copies and frees a `gchar *` libpurple gave us ownership of.
pub fn take_gstring(s: *mut c_char) -> Option<String> {
    let out = opt_string(s);
    if !s.is_null() {
        // SAFETY: the caller obtained `s` from a libpurple/GLib function documented as
        // returning newly allocated memory to be freed with g_free.
        unsafe { glib::ffi::g_free(s as *mut c_void) };
    }
    out
}

/// A C string for an argument; interior NULs (never valid in XMPP text anyway) are dropped.
pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// The `data` pointers of a `GList`, in order. The list is borrowed, not freed.
pub fn glist(mut l: *mut p::GList) -> Vec<*mut c_void> {
    let mut out = Vec::new();
    while !l.is_null() {
        // SAFETY: a GList node is valid while the list is; we only read it.
        unsafe {
            out.push((*l).data);
            l = (*l).next;
        }
    }
    out
}

/// The `data` pointers of a `GSList`, in order. Borrowed, not freed.
pub fn gslist(mut l: *mut p::GSList) -> Vec<*mut c_void> {
    let mut out = Vec::new();
    while !l.is_null() {
        // SAFETY: as for `glist`.
        unsafe {
            out.push((*l).data);
            l = (*l).next;
        }
    }
    out
}

/// `PURPLE_PLUGIN_PROTOCOL_INFO(plugin)`: the prpl's vtable, or NULL.
pub fn prpl_info(plugin: *mut p::PurplePlugin) -> *mut p::PurplePluginProtocolInfo {
    if plugin.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: a PurplePlugin of type PROTOCOL keeps its PurplePluginProtocolInfo in
    // info->extra_info (plugin.h); both live as long as the plugin is loaded (process life).
    unsafe {
        let info = (*plugin).info;
        if info.is_null() || (*info).type_ != p::PURPLE_PLUGIN_PROTOCOL {
            return std::ptr::null_mut();
        }
        (*info).extra_info as *mut p::PurplePluginProtocolInfo
    }
}

/// Converts libpurple's message markup to plain text: tags stripped, entities decoded,
/// `<br>` to newlines.
pub fn html_to_text(html: &str) -> String {
    let c = cstring(html);
    // SAFETY: purple_markup_strip_html returns a newly allocated string.
    take_gstring(unsafe { p::purple_markup_strip_html(c.as_ptr()) }).unwrap_or_default()
}

/// libpurple's HTML as XHTML (`purple_markup_html_to_xhtml`, what prpl-jabber sends as
/// XHTML-IM): closes tags, quotes attributes, maps `<font>` to styles.
pub fn html_to_xhtml(html: &str) -> String {
    let c = cstring(html);
    let mut xhtml: *mut c_char = std::ptr::null_mut();
    // SAFETY: libpurple allocates the result (g_free); a NULL plain pointer is allowed.
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
