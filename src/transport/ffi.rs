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
use std::panic::{AssertUnwindSafe, catch_unwind};

use purple_sys as p;

/// Runs the body of an `extern "C"` callback (a ui-op, a signal handler, a GLib trampoline):
/// a panic inside is caught here instead of unwinding into C (which would abort the process),
/// logged, and the callback returns `default` — the value that tells libpurple or GLib
/// "nothing done" (NULL, FALSE, 0). Every `extern "C" fn` in `src/transport` starts with it.
pub fn guard<R>(name: &'static str, default: R, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_owned());
            tracing::error!(
                callback = name,
                "panic in a libpurple callback, contained (the callback did nothing): {what}"
            );
            default
        }
    }
}

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
    fn guard_contains_panics() {
        assert_eq!(guard("ok", 0, || 7), 7);
        assert_eq!(guard("boom", 0, || -> i32 { panic!("boom") }), 0);
        let p: *mut c_void = guard("null", std::ptr::null_mut(), || {
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            let _ = v[3];
            std::ptr::dangling_mut()
        });
        assert!(p.is_null());
    }

    /// Every `extern "C" fn` defined in src/transport runs its body inside [`guard`] (the
    /// first statement of the body), so no panic can unwind into libpurple or GLib.
    #[test]
    fn every_callback_is_guarded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let src = std::fs::read_to_string(&path).unwrap();
            for (at, _) in src.match_indices("extern \"C\" fn ") {
                let rest = &src[at..];
                // A definition (not a fn-pointer type): the name is followed by `(`.
                let name_end = rest["extern \"C\" fn ".len()..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap();
                if name_end == 0 {
                    continue;
                }
                let open = rest.find('{').unwrap();
                let body = rest[open + 1..].trim_start();
                assert!(
                    body.starts_with("super::ffi::guard(") || body.starts_with("guard("),
                    "{}: an extern \"C\" fn whose body is not wrapped in ffi::guard: {}",
                    path.display(),
                    &rest[..rest.find('(').unwrap()]
                );
                checked += 1;
            }
        }
        assert!(checked >= 45, "only {checked} callbacks found");
    }

    #[test]
    fn escapes_plain_text_as_markup() {
        assert_eq!(
            text_to_html("a<b & 'c'\nd"),
            "a&lt;b &amp; &apos;c&apos;<br>d"
        );
    }
}
