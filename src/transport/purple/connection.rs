//! `PurpleConnection`: an account's link to its server, and the connection ui-ops.
//!
//! Ownership: libpurple owns a connection from `purple_account_connect` until it finishes
//! tearing it down (after the `disconnected` ui-op). A [`Connection`] is used only within the
//! call that produced it (a ui-op argument, or `Account::connection` looked up anew each
//! time), never kept across loop turns.

use std::cell::Cell;
use std::ffi::c_char;

use purple_sys as p;

use super::account::Account;
use super::ffi::{cstring, glist, guard, opt_string, prpl_info, string};

super::ffi::handle!(
    /// A libpurple connection (see the module's ownership note).
    Connection,
    p::PurpleConnection
);

/// What the user is doing in a 1:1 conversation (XEP-0085 composing/paused/active).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Typing {
    /// `PURPLE_TYPING`.
    Composing,
    /// `PURPLE_TYPED`.
    Paused,
    /// `PURPLE_NOT_TYPING`.
    Stopped,
}

impl Typing {
    pub(super) fn raw(self) -> p::PurpleTypingState {
        match self {
            Typing::Composing => p::PURPLE_TYPING,
            Typing::Paused => p::PURPLE_TYPED,
            Typing::Stopped => p::PURPLE_NOT_TYPING,
        }
    }
}

impl Connection {
    pub fn account(self) -> Option<Account> {
        // SAFETY: main thread, live connection; its account outlives it.
        Account::from_ptr(unsafe { p::purple_connection_get_account(self.as_ptr()) })
    }

    /// Signed on (not connecting, not going down).
    pub fn is_connected(self) -> bool {
        // SAFETY: main thread, live connection.
        unsafe { p::purple_connection_get_state(self.as_ptr()) == p::PURPLE_CONNECTED }
    }

    /// The account's own name on the network (IRC: the nick), if known.
    pub fn display_name(self) -> Option<String> {
        // SAFETY: main thread, live connection; a borrowed string copied at once.
        opt_string(unsafe { p::purple_connection_get_display_name(self.as_ptr()) })
    }

    /// When data last came from the server (Unix seconds; 0 if the prpl does not record it).
    pub fn last_received(self) -> i64 {
        // SAFETY: main thread, live connection; a plain field read.
        #[allow(clippy::unnecessary_cast)] // time_t is i64 here, not on every target
        let last = unsafe { (*self.as_ptr()).last_received } as i64;
        last
    }

    /// Fails the connection as a network error: libpurple tears it down from its own idle
    /// callback, then the `report_disconnect_reason` ui-op runs.
    pub fn fail_network(self, text: &str) {
        let text = cstring(text);
        // SAFETY: main thread, live connection; libpurple copies the text.
        unsafe {
            p::purple_connection_error_reason(
                self.as_ptr(),
                p::PURPLE_CONNECTION_ERROR_NETWORK_ERROR,
                text.as_ptr(),
            )
        };
    }

    /// Sends a typing notification to `name`.
    pub fn send_typing(self, name: &str, state: Typing) {
        let n = cstring(name);
        // SAFETY: main thread, live connection; libpurple copies the name.
        unsafe { p::serv_send_typing(self.as_ptr(), n.as_ptr(), state.raw()) };
    }

    /// Asks the prpl to join `room` (`chat_info_defaults` + `serv_join_chat`), with `nick` as
    /// the `handle` component where the prpl has one.
    pub fn join_chat(self, room: &str, nick: &str) {
        let gc = self.as_ptr();
        // SAFETY: main thread, live connection. The components table is created by the prpl
        // and destroyed here after serv_join_chat (which copies what it keeps); the chat_info
        // list entries are the prpl's (borrowed for the look).
        unsafe {
            let info = prpl_info(p::purple_connection_get_prpl(gc));
            if info.is_null() {
                return;
            }
            let Some(defaults) = (*info).chat_info_defaults else {
                return;
            };
            let name = cstring(room);
            let comps = defaults(gc, name.as_ptr());
            if comps.is_null() {
                return;
            }
            let has_handle =
                glist(((*info).chat_info.map(|f| f(gc))).unwrap_or(std::ptr::null_mut()))
                    .into_iter()
                    .any(|e| string((*(e as *mut p::proto_chat_entry)).identifier) == "handle");
            if has_handle && !nick.is_empty() {
                let k = glib::ffi::g_strdup(c"handle".as_ptr());
                let v = glib::ffi::g_strdup(cstring(nick).as_ptr());
                glib::ffi::g_hash_table_replace(
                    comps as *mut glib::ffi::GHashTable,
                    k as _,
                    v as _,
                );
            }
            p::serv_join_chat(gc, comps);
            glib::ffi::g_hash_table_destroy(comps as *mut glib::ffi::GHashTable);
        }
    }

    pub(super) fn prpl_info(self) -> *mut p::PurplePluginProtocolInfo {
        // SAFETY: main thread, live connection; the plugin lives for the process.
        prpl_info(unsafe { p::purple_connection_get_prpl(self.as_ptr()) })
    }
}

/// The connection ui-ops, as safe functions.
#[derive(Clone, Copy)]
pub struct UiOps {
    pub connected: fn(Connection),
    pub disconnected: fn(Connection),
    /// The connection failed: `fatal` per `purple_connection_error_is_fatal`, and the text.
    pub report_disconnect_reason: fn(Connection, bool, &str),
}

thread_local! {
    static OPS: Cell<Option<UiOps>> = const { Cell::new(None) };
}

/// Sets the connection ui-ops (once, on the main thread, from the core's `ui_init`).
pub fn set_ui_ops(ops: UiOps) {
    OPS.set(Some(ops));
    // SAFETY: main thread; the struct is leaked: libpurple keeps the pointer for good.
    unsafe {
        p::purple_connections_set_ui_ops(Box::leak(Box::new(p::PurpleConnectionUiOps {
            connected: Some(connected),
            disconnected: Some(disconnected),
            report_disconnect_reason: Some(report_disconnect_reason),
            ..Default::default()
        })));
    }
}

unsafe extern "C" fn connected(gc: *mut p::PurpleConnection) {
    guard("connected", (), || {
        if let (Some(ops), Some(gc)) = (OPS.get(), Connection::from_ptr(gc)) {
            (ops.connected)(gc)
        }
    })
}

unsafe extern "C" fn disconnected(gc: *mut p::PurpleConnection) {
    guard("disconnected", (), || {
        if let (Some(ops), Some(gc)) = (OPS.get(), Connection::from_ptr(gc)) {
            (ops.disconnected)(gc)
        }
    })
}

unsafe extern "C" fn report_disconnect_reason(
    gc: *mut p::PurpleConnection,
    reason: p::PurpleConnectionError,
    text: *const c_char,
) {
    guard("report_disconnect_reason", (), || {
        let (Some(ops), Some(gc)) = (OPS.get(), Connection::from_ptr(gc)) else {
            return;
        };
        // SAFETY: a pure function of the enum.
        let fatal = unsafe { p::purple_connection_error_is_fatal(reason) } != 0;
        (ops.report_disconnect_reason)(gc, fatal, &string(text))
    })
}
