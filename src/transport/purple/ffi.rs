//! Small helpers for crossing the libpurple FFI boundary, used by the wrappers in this folder
//! only (the raw-pointer helpers are not visible outside `purple/`).
//!
//! Ownership rules used throughout `src/transport/purple/`:
//! * A `*const c_char` libpurple hands to a callback is borrowed for the duration of that call
//!   only; [`string`] copies it into an owned `String` at once.
//! * Strings we pass in are `CString`s that live until the call returns; libpurple copies
//!   what it keeps (`g_strdup`), which every setter used here documents.
//! * Strings libpurple returns as `gchar *` "to be freed" go through [`take_gstring`], which
//!   copies and `g_free`s.
//! * libpurple objects (`PurpleAccount`, `PurpleConversation`, …) are never owned by Rust: the
//!   handle types (`Account`, `Connection`, `Conversation`, `Buddy`, …) hold raw pointers only
//!   while libpurple says they are alive (accounts until `purple_accounts_delete`,
//!   conversations until `destroy_conversation`) and anything deferred to a later loop turn
//!   is looked up again.

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

/// Copies a borrowed C string; `None` for NULL. `s` must be NULL or a NUL-terminated string
/// valid for the duration of the call (what libpurple passes and returns).
pub(super) fn opt_string(s: *const c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: libpurple passes NUL-terminated strings valid for the duration of the call.
    Some(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

/// Copies a borrowed C string; empty for NULL.
pub(super) fn string(s: *const c_char) -> String {
    opt_string(s).unwrap_or_default()
}

/// Copies and frees a `gchar *` libpurple gave us ownership of.
pub(super) fn take_gstring(s: *mut c_char) -> Option<String> {
    let out = opt_string(s);
    if !s.is_null() {
        // SAFETY: the caller obtained `s` from a libpurple/GLib function documented as
        // returning newly allocated memory to be freed with g_free.
        unsafe { glib::ffi::g_free(s as *mut c_void) };
    }
    out
}

/// A C string for an argument; interior NULs (never valid in XMPP text anyway) are dropped.
pub(super) fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// The `data` pointers of a `GList`, in order. The list is borrowed, not freed.
pub(super) fn glist(mut l: *mut p::GList) -> Vec<*mut c_void> {
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
pub(super) fn gslist(mut l: *mut p::GSList) -> Vec<*mut c_void> {
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
pub(super) fn prpl_info(plugin: *mut p::PurplePlugin) -> *mut p::PurplePluginProtocolInfo {
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

/// Connects `handler` to a libpurple signal of `instance`; `handler` must have the C
/// signature the signal documents.
///
/// # Safety
/// `handler` must be an `extern "C"` function whose signature matches the signal's.
pub(super) unsafe fn connect_signal(instance: *mut c_void, signal: &str, handler: *const ()) {
    thread_local! {
        // libpurple needs a non-NULL handle identifying the connector.
        static HANDLE: u8 = const { 0 };
    }
    let name = cstring(signal);
    HANDLE.with(|h| {
        // SAFETY: the caller guarantees the signature; the handle outlives the connection
        // (it lives as long as the thread, and so does libpurple).
        unsafe {
            p::purple_signal_connect(
                instance,
                name.as_ptr(),
                h as *const u8 as *mut c_void,
                std::mem::transmute::<*const (), p::PurpleCallback>(handler),
                std::ptr::null_mut(),
            );
        }
    });
}

/// A safe handle on a libpurple object owned by libpurple: a non-NULL pointer, compared by
/// address. Ownership: libpurple owns the object; a handle is made only from a pointer
/// libpurple handed us (a ui-op or signal argument, a lookup result) and used only on the
/// main thread while libpurple keeps the object (see each type's note).
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub struct $name(std::ptr::NonNull<$raw>);

        impl $name {
            #[allow(dead_code)]
            pub(in crate::transport::purple) fn from_ptr(p: *mut $raw) -> Option<Self> {
                std::ptr::NonNull::new(p).map(Self)
            }

            #[allow(dead_code)]
            pub(in crate::transport::purple) fn as_ptr(self) -> *mut $raw {
                self.0.as_ptr()
            }

            /// The object's address, as a key for tables (never dereferenced from it).
            #[allow(dead_code)]
            pub fn addr(self) -> usize {
                self.0.as_ptr() as usize
            }
        }
    };
}
pub(super) use handle;

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

    /// The `.rs` files under `dir`, recursively.
    fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
        out
    }

    /// Every `extern "C" fn` defined in src/transport (the wrappers in `purple/` included)
    /// runs its body inside [`guard`] (the first statement of the body), so no panic can
    /// unwind into libpurple or GLib.
    #[test]
    fn every_callback_is_guarded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport");
        let mut checked = 0;
        for path in sources(&dir) {
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

    /// Every `unsafe` of the transport is in this folder: the feature files (everything
    /// directly in src/transport) call the safe wrappers and contain no `unsafe` at all, nor
    /// the raw bindings or raw pointers.
    #[test]
    fn feature_files_have_no_unsafe() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let src = std::fs::read_to_string(&path).unwrap();
            for (n, line) in src.lines().enumerate() {
                for banned in ["unsafe", "purple_sys", "*mut ", "*const "] {
                    assert!(
                        !line.contains(banned),
                        "{}:{}: `{banned}` in a feature file (it belongs in src/transport/purple/): {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
            files += 1;
        }
        assert!(files >= 15, "only {files} feature files found");
    }
}
