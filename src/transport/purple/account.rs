//! `PurpleAccount`: a legacy account inside libpurple.
//!
//! Ownership: libpurple's account list owns every account (`purple_accounts_add`) until
//! [`Account::delete`]. wockd keeps one [`Account`] per legacy account in `Legacy::account`,
//! from `accounts::attach` to `accounts::remove` (which deletes it), so a handle found there is
//! alive; every call is made on the main thread.

use purple_sys as p;

use super::blist::Buddy;
use super::connection::Connection;
use super::ffi::{cstring, gslist, handle, string};

handle!(
    /// A libpurple account (see the module's ownership note).
    Account,
    p::PurpleAccount
);

/// The status kinds wockd maps to and from XMPP `<show/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    Available,
    Away,
    ExtendedAway,
    /// Busy (XMPP `dnd`).
    Unavailable,
    Mobile,
    Other,
}

impl StatusKind {
    pub(super) fn from_primitive(prim: p::PurpleStatusPrimitive) -> StatusKind {
        match prim {
            p::PURPLE_STATUS_AVAILABLE => StatusKind::Available,
            p::PURPLE_STATUS_AWAY => StatusKind::Away,
            p::PURPLE_STATUS_EXTENDED_AWAY => StatusKind::ExtendedAway,
            p::PURPLE_STATUS_UNAVAILABLE => StatusKind::Unavailable,
            p::PURPLE_STATUS_MOBILE => StatusKind::Mobile,
            _ => StatusKind::Other,
        }
    }

    fn primitive(self) -> p::PurpleStatusPrimitive {
        match self {
            StatusKind::Away => p::PURPLE_STATUS_AWAY,
            StatusKind::ExtendedAway => p::PURPLE_STATUS_EXTENDED_AWAY,
            StatusKind::Unavailable => p::PURPLE_STATUS_UNAVAILABLE,
            StatusKind::Mobile => p::PURPLE_STATUS_MOBILE,
            StatusKind::Available | StatusKind::Other => p::PURPLE_STATUS_AVAILABLE,
        }
    }
}

impl Account {
    /// The account libpurple loaded (from `accounts.xml`) or made for `username` on
    /// `protocol`, if any.
    pub fn find(username: &str, protocol: &str) -> Option<Account> {
        let user = cstring(username);
        let prpl = cstring(protocol);
        // SAFETY: main thread; purple_accounts_find returns a borrowed live account or NULL.
        Account::from_ptr(unsafe { p::purple_accounts_find(user.as_ptr(), prpl.as_ptr()) })
    }

    /// A new account, handed to libpurple's account list (which owns it from now on).
    pub fn create(username: &str, protocol: &str) -> Option<Account> {
        let user = cstring(username);
        let prpl = cstring(protocol);
        // SAFETY: main thread; libpurple copies both strings; the new account goes into its
        // list at once, which owns it until `delete`.
        unsafe {
            let a = p::purple_account_new(user.as_ptr(), prpl.as_ptr());
            if a.is_null() {
                return None;
            }
            p::purple_accounts_add(a);
            Account::from_ptr(a)
        }
    }

    /// Removes the account from libpurple (its buddies too) and frees it: the handle is dead
    /// afterwards, and so is every copy of it (the caller drops them all).
    pub fn delete(self) {
        // SAFETY: main thread; the account is live until this call, which frees it.
        unsafe { p::purple_accounts_delete(self.as_ptr()) };
    }

    pub fn set_remember_password(self, on: bool) {
        // SAFETY: main thread, live account.
        unsafe { p::purple_account_set_remember_password(self.as_ptr(), on as p::gboolean) };
    }

    pub fn set_bool(self, key: &str, value: bool) {
        let k = cstring(key);
        // SAFETY: main thread, live account; libpurple copies the key.
        unsafe { p::purple_account_set_bool(self.as_ptr(), k.as_ptr(), value as p::gboolean) };
    }

    pub fn set_int(self, key: &str, value: i32) {
        let k = cstring(key);
        // SAFETY: as in set_bool.
        unsafe { p::purple_account_set_int(self.as_ptr(), k.as_ptr(), value) };
    }

    pub fn set_string(self, key: &str, value: &str) {
        let k = cstring(key);
        let v = cstring(value);
        // SAFETY: as in set_bool; libpurple copies the value too.
        unsafe { p::purple_account_set_string(self.as_ptr(), k.as_ptr(), v.as_ptr()) };
    }

    /// A string setting, or `default`.
    pub fn get_string(self, key: &str, default: &str) -> String {
        let k = cstring(key);
        let d = cstring(default);
        // SAFETY: main thread, live account; the result is borrowed (the setting or `d`,
        // alive across the call) and copied at once.
        string(unsafe { p::purple_account_get_string(self.as_ptr(), k.as_ptr(), d.as_ptr()) })
    }

    /// Sets the password (kept in memory only while `remember_password` is off).
    pub fn set_password(self, password: &str) {
        let c = cstring(password);
        // SAFETY: main thread, live account; libpurple copies the password.
        unsafe { p::purple_account_set_password(self.as_ptr(), c.as_ptr()) };
    }

    pub fn set_enabled(self, ui: &str, on: bool) {
        let ui = cstring(ui);
        // SAFETY: main thread, live account; libpurple copies the UI id.
        unsafe { p::purple_account_set_enabled(self.as_ptr(), ui.as_ptr(), on as p::gboolean) };
    }

    pub fn is_disconnected(self) -> bool {
        // SAFETY: main thread, live account.
        unsafe { p::purple_account_is_disconnected(self.as_ptr()) != 0 }
    }

    pub fn connect(self) {
        // SAFETY: main thread, live account.
        unsafe { p::purple_account_connect(self.as_ptr()) };
    }

    pub fn disconnect(self) {
        // SAFETY: main thread, live account.
        unsafe { p::purple_account_disconnect(self.as_ptr()) };
    }

    /// The account's connection, in whatever state it is.
    pub fn connection(self) -> Option<Connection> {
        // SAFETY: main thread, live account; the connection is the account's (alive while
        // it is connecting or connected).
        Connection::from_ptr(unsafe { p::purple_account_get_connection(self.as_ptr()) })
    }

    pub fn protocol_id(self) -> String {
        // SAFETY: main thread, live account; a borrowed string copied at once.
        string(unsafe { p::purple_account_get_protocol_id(self.as_ptr()) })
    }

    /// Activates the account's status of kind `kind` (else, for anything but available, its
    /// away status), with `message` (markup) where the status type has a message attribute.
    /// False if the account has no such status type.
    pub fn set_status(self, kind: StatusKind, message: Option<&str>) -> bool {
        let prim = kind.primitive();
        let acc = self.as_ptr();
        // SAFETY: main thread, live account; the attribute list holds borrowed C strings that
        // outlive the call, and is freed (not its data) afterwards. Status types are the
        // account's.
        unsafe {
            let mut st = p::purple_account_get_status_type_with_primitive(acc, prim);
            if st.is_null() && prim != p::PURPLE_STATUS_AVAILABLE {
                st = p::purple_account_get_status_type_with_primitive(acc, p::PURPLE_STATUS_AWAY);
            }
            if st.is_null() {
                return false;
            }
            let key = cstring("message");
            let val = cstring(message.unwrap_or_default());
            let mut attrs: *mut glib::ffi::GList = std::ptr::null_mut();
            if message.is_some() && !p::purple_status_type_get_attr(st, key.as_ptr()).is_null() {
                attrs = glib::ffi::g_list_append(attrs, key.as_ptr() as glib::ffi::gpointer);
                attrs = glib::ffi::g_list_append(attrs, val.as_ptr() as glib::ffi::gpointer);
            }
            p::purple_account_set_status_list(
                acc,
                p::purple_status_type_get_id(st),
                1,
                attrs as *mut p::GList,
            );
            glib::ffi::g_list_free(attrs);
        }
        true
    }

    /// Every buddy of the account.
    pub fn buddies(self) -> Vec<Buddy> {
        // SAFETY: main thread, live account; the returned GSList is ours to free (not its
        // buddies, which the buddy list owns).
        unsafe {
            let list = p::purple_find_buddies(self.as_ptr(), std::ptr::null());
            let v = gslist(list);
            glib::ffi::g_slist_free(list as *mut glib::ffi::GSList);
            v.into_iter()
                .filter_map(|b| Buddy::from_ptr(b as *mut p::PurpleBuddy))
                .collect()
        }
    }

    pub fn find_buddy(self, name: &str) -> Option<Buddy> {
        let n = cstring(name);
        // SAFETY: main thread, live account; a borrowed buddy or NULL.
        Buddy::from_ptr(unsafe { p::purple_find_buddy(self.as_ptr(), n.as_ptr()) })
    }

    /// Adds `name` to the buddy list in `group` (made if missing) and tells the server.
    pub fn add_buddy(self, name: &str, group: &str) {
        let n = cstring(name);
        let g = cstring(group);
        // SAFETY: main thread, live account; the group and buddy are handed to the buddy
        // list, which owns them.
        unsafe {
            let mut grp = p::purple_find_group(g.as_ptr());
            if grp.is_null() {
                grp = p::purple_group_new(g.as_ptr());
                p::purple_blist_add_group(grp, std::ptr::null_mut());
            }
            let b = p::purple_buddy_new(self.as_ptr(), n.as_ptr(), std::ptr::null());
            p::purple_blist_add_buddy(b, std::ptr::null_mut(), grp, std::ptr::null_mut());
            p::purple_account_add_buddy(self.as_ptr(), b);
        }
    }

    /// Removes a buddy from the server and the buddy list (which frees it: `b` is dead after).
    pub fn remove_buddy(self, b: Buddy) {
        // SAFETY: main thread, live account and buddy; the buddy list frees the buddy.
        unsafe {
            p::purple_account_remove_buddy(
                self.as_ptr(),
                b.as_ptr(),
                p::purple_buddy_get_group(b.as_ptr()),
            );
            p::purple_blist_remove_buddy(b.as_ptr());
        }
    }

    /// The buddy icon libpurple keeps for `name`: its bytes and file extension.
    pub fn buddy_icon(self, name: &str) -> Option<(Vec<u8>, String)> {
        let n = cstring(name);
        // SAFETY: main thread; `purple_buddy_icons_find` returns a new reference we release;
        // the data is owned by the icon and copied before the release.
        unsafe {
            let icon = p::purple_buddy_icons_find(self.as_ptr(), n.as_ptr());
            if icon.is_null() {
                return None;
            }
            let mut len = 0usize;
            let data = p::purple_buddy_icon_get_data(icon, &mut len);
            let out = (!data.is_null() && len > 0).then(|| {
                let bytes = std::slice::from_raw_parts(data as *const u8, len).to_vec();
                (bytes, string(p::purple_buddy_icon_get_extension(icon)))
            });
            p::purple_buddy_icon_unref(icon);
            out
        }
    }
}
