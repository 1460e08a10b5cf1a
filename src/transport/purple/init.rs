//! libpurple's initialisation (checklist in `../shared/reference/libpurple.md` §3.1): user
//! dir, debug output, core and event-loop ui-ops, DNS, `purple_core_init`, D-Bus off, logging
//! and idle reporting off, the buddy list.

use std::cell::Cell;
use std::path::Path;

use glib::ffi as g;
use purple_sys as p;

use super::ffi::{cstring, guard};

thread_local! {
    static UI_INIT: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// libpurple could not be initialised.
#[derive(Debug, thiserror::Error)]
pub enum CoreInitFailed {
    /// The library could not be opened (it is loaded at run time, see `purple_sys::load`).
    #[error("{0}")]
    Load(#[from] p::LoadError),
    /// `purple_core_init` returned false.
    #[error("purple_core_init failed (see the purple log target)")]
    Core,
}

/// Initialises libpurple (once per process, on the main thread) with its user dir at `dir`
/// and UI id `ui`. `ui_init` runs when libpurple asks the UI to set its ui-ops; DNS answers
/// keep the addresses `dns_filter` lets through.
pub fn init(
    dir: &Path,
    ui: &str,
    ui_init: fn(),
    dns_filter: super::dns::Filter,
) -> Result<(), CoreInitFailed> {
    p::load()?;
    UI_INIT.set(Some(ui_init));
    let dir_c = cstring(&dir.to_string_lossy());
    let ui = cstring(ui);
    let (dns, srv) = super::dns::ui_ops(dns_filter);
    // SAFETY: all of this runs on the main thread before any other libpurple use. The ui-ops
    // structs are leaked: libpurple keeps the pointers for the life of the process.
    unsafe {
        p::purple_util_set_user_dir(dir_c.as_ptr());
        p::purple_debug_set_enabled(0); // no printing to stdout; the ui-op gets it all
        p::purple_debug_set_verbose(0);
        p::purple_debug_set_unsafe(0); // prpl-jabber then masks credentials in its own output
        p::purple_debug_set_ui_ops(super::debug::ui_ops());
        p::purple_core_set_ui_ops(Box::leak(Box::new(p::PurpleCoreUiOps {
            ui_init: Some(ui_init_cb),
            get_ui_info: Some(ui_info),
            ..Default::default()
        })));
        p::purple_eventloop_set_ui_ops(super::eventloop::ui_ops());
        p::purple_dnsquery_set_ui_ops(dns);
        p::purple_srv_txt_query_set_ui_ops(srv);
        if p::purple_core_init(ui.as_ptr()) == 0 {
            return Err(CoreInitFailed::Core);
        }
        // Desktop privacy: no other process on a session bus may drive the accounts.
        p::purple_dbus_uninit();
        for (k, v) in [
            ("/purple/logging/log_ims", false),
            ("/purple/logging/log_chats", false),
            ("/purple/logging/log_system", false),
            ("/purple/away/away_when_idle", false),
        ] {
            let k = cstring(k);
            p::purple_prefs_set_bool(k.as_ptr(), v as p::gboolean);
        }
        let k = cstring("/purple/away/idle_reporting");
        let v = cstring("none");
        p::purple_prefs_set_string(k.as_ptr(), v.as_ptr());
        p::purple_set_blist(p::purple_blist_new());
        p::purple_blist_load();
    }
    Ok(())
}

/// The `(major, minor, micro)` version of the libpurple loaded at run time (after `init`).
pub fn version() -> Option<(u32, u32, u32)> {
    purple_sys::version()
}

/// Every feature's ui-ops and signal handlers, installed when libpurple asks for them.
unsafe extern "C" fn ui_init_cb() {
    guard("ui_init", (), || {
        if let Some(f) = UI_INIT.get() {
            f()
        }
    })
}

unsafe extern "C" fn ui_info() -> *mut p::GHashTable {
    guard("ui_info", std::ptr::null_mut(), || {
        thread_local! {
            static INFO: usize = {
                // SAFETY: a string table of static strings, created once and never freed.
                unsafe {
                    let t = g::g_hash_table_new(Some(g::g_str_hash), Some(g::g_str_equal));
                    for (k, v) in [
                        (c"name", c"wockd"),
                        (c"version", c"0.1"),
                        (c"website", c"https://wockd.org/"),
                        (c"client_type", c"pc"),
                    ] {
                        g::g_hash_table_insert(t, k.as_ptr() as g::gpointer, v.as_ptr() as g::gpointer);
                    }
                    t as usize
                }
            };
        }
        INFO.with(|t| *t as *mut p::GHashTable)
    })
}
