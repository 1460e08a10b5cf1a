//! The buddy list: buddies, their presence, and the buddy-list signals.
//!
//! Ownership: the buddy list owns every `PurpleBuddy` (and its presence and statuses) until
//! `purple_blist_remove_buddy` or the account's deletion. A [`Buddy`] is used within the call
//! that produced it (a signal argument, or a lookup through `Account`), never kept.

use std::cell::Cell;
use std::ffi::c_void;

use purple_sys as p;

use super::account::{Account, StatusKind};
use super::ffi::{connect_signal, cstring, guard, handle, opt_string, string};

handle!(
    /// A buddy of a libpurple account (see the module's ownership note).
    Buddy,
    p::PurpleBuddy
);

/// A buddy's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    Offline,
    /// Online without an active status (nothing more is known).
    Online,
    /// Online in a status, with its message (libpurple markup), if any.
    Status(StatusKind, Option<String>),
}

impl Buddy {
    pub fn account(self) -> Option<Account> {
        // SAFETY: main thread, live buddy; its account outlives it.
        Account::from_ptr(unsafe { p::purple_buddy_get_account(self.as_ptr()) })
    }

    pub fn name(self) -> String {
        // SAFETY: main thread, live buddy; a borrowed string copied at once.
        string(unsafe { p::purple_buddy_get_name(self.as_ptr()) })
    }

    pub fn alias(self) -> Option<String> {
        // SAFETY: as in `name`.
        opt_string(unsafe { p::purple_buddy_get_alias(self.as_ptr()) })
    }

    /// The name of the buddy's group.
    pub fn group(self) -> Option<String> {
        // SAFETY: main thread, live buddy; the group belongs to the buddy list.
        unsafe {
            let g = p::purple_buddy_get_group(self.as_ptr());
            if g.is_null() {
                None
            } else {
                opt_string(p::purple_group_get_name(g))
            }
        }
    }

    pub fn presence(self) -> Presence {
        // SAFETY: main thread, live buddy; presence and status are owned by it.
        unsafe {
            let presence = p::purple_buddy_get_presence(self.as_ptr());
            if presence.is_null() || p::purple_presence_is_online(presence) == 0 {
                return Presence::Offline;
            }
            let status = p::purple_presence_get_active_status(presence);
            if status.is_null() {
                return Presence::Online;
            }
            let kind = StatusKind::from_primitive(p::purple_status_type_get_primitive(
                p::purple_status_get_type(status),
            ));
            let key = cstring("message");
            let msg = opt_string(p::purple_status_get_attr_string(status, key.as_ptr()));
            Presence::Status(kind, msg)
        }
    }
}

/// Buddy-list signal handlers, as safe functions.
#[derive(Clone, Copy)]
pub struct Signals {
    /// `buddy-added`.
    pub added: fn(Buddy),
    /// `buddy-removed`.
    pub removed: fn(Buddy),
    /// `buddy-signed-on`, `buddy-signed-off`, `buddy-status-changed`, `buddy-icon-changed`.
    pub changed: fn(Buddy),
}

thread_local! {
    static SIGNALS: Cell<Option<Signals>> = const { Cell::new(None) };
}

/// Connects the buddy-list signals (once, on the main thread).
pub fn connect(signals: Signals) {
    SIGNALS.set(Some(signals));
    // SAFETY: main thread; blist-signals signatures: buddy-added/removed/signed-on/off/
    // icon-changed (PurpleBuddy *), buddy-status-changed (PurpleBuddy *, PurpleStatus *,
    // PurpleStatus *).
    unsafe {
        let h = p::purple_blist_get_handle();
        connect_signal(h, "buddy-added", buddy_added as *const ());
        connect_signal(h, "buddy-removed", buddy_removed as *const ());
        connect_signal(h, "buddy-signed-on", buddy_changed as *const ());
        connect_signal(h, "buddy-signed-off", buddy_changed as *const ());
        connect_signal(h, "buddy-status-changed", buddy_status as *const ());
        // A new picture: the presence carries its XEP-0153 hash, so send it again.
        connect_signal(h, "buddy-icon-changed", buddy_changed as *const ());
    }
}

unsafe extern "C" fn buddy_added(b: *mut p::PurpleBuddy, _d: *mut c_void) {
    guard("buddy_added", (), || {
        if let (Some(s), Some(b)) = (SIGNALS.get(), Buddy::from_ptr(b)) {
            (s.added)(b)
        }
    })
}

unsafe extern "C" fn buddy_removed(b: *mut p::PurpleBuddy, _d: *mut c_void) {
    guard("buddy_removed", (), || {
        if let (Some(s), Some(b)) = (SIGNALS.get(), Buddy::from_ptr(b)) {
            (s.removed)(b)
        }
    })
}

unsafe extern "C" fn buddy_changed(b: *mut p::PurpleBuddy, _d: *mut c_void) {
    guard("buddy_changed", (), || {
        if let (Some(s), Some(b)) = (SIGNALS.get(), Buddy::from_ptr(b)) {
            (s.changed)(b)
        }
    })
}

unsafe extern "C" fn buddy_status(
    b: *mut p::PurpleBuddy,
    _old: *mut p::PurpleStatus,
    _new: *mut p::PurpleStatus,
    _d: *mut c_void,
) {
    guard("buddy_status", (), || {
        if let (Some(s), Some(b)) = (SIGNALS.get(), Buddy::from_ptr(b)) {
            (s.changed)(b)
        }
    })
}
