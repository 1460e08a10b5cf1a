//! Room lists (`purple_roomlist_get_list`) and the room-list ui-ops.
//!
//! Ownership: the prpl owns a `PurpleRoomlist`; [`fetch`] takes a reference on it, which the
//! caller gives back with [`Roomlist::unref`] once it has read the list (the prpl still holds
//! its own while it calls the ui-ops, so that never frees the list under it). Rooms and their
//! field values are borrowed for the `add_room` call and copied out.

use std::cell::Cell;

use purple_sys as p;

use super::connection::Connection;
use super::ffi::{glist, guard, handle, prpl_info, string, take_gstring};

handle!(
    /// A room list being fetched (see the module's ownership note).
    Roomlist,
    p::PurpleRoomlist
);

/// One public room as the prpl listed it.
#[derive(Clone, Debug)]
pub struct ListedRoom {
    /// The name that joins it (what `chat_info_defaults` accepts: IRC `#chan`,
    /// XMPP `room@conference.host`).
    pub name: String,
    pub users: Option<i64>,
    /// The topic or description field, as markup.
    pub topic: Option<String>,
}

/// Asks the prpl of `gc` for its room list; `None` if it has none. The list comes with a
/// reference of ours (see the module's ownership note).
pub fn fetch(gc: Connection) -> Option<Roomlist> {
    let prpl = gc.prpl_info();
    // SAFETY: main thread, live connection; the prpl's static vtable. The list returned is the
    // prpl's; we take a reference so it stays valid until we have read it.
    unsafe {
        if prpl.is_null() || (*prpl).roomlist_get_list.is_none() {
            return None;
        }
        let list = Roomlist::from_ptr(p::purple_roomlist_get_list(gc.as_ptr()))?;
        p::purple_roomlist_ref(list.as_ptr());
        Some(list)
    }
}

impl Roomlist {
    /// The prpl answered at once (a cached list): complete already.
    pub fn is_complete(self) -> bool {
        // SAFETY: a list we hold a reference on; plain field reads.
        unsafe { (*self.as_ptr()).in_progress == 0 && !(*self.as_ptr()).rooms.is_null() }
    }

    /// Gives back the reference [`fetch`] took.
    pub fn unref(self) {
        // SAFETY: the reference taken in `fetch`, given back once by the caller.
        unsafe { p::purple_roomlist_unref(self.as_ptr()) };
    }
}

/// Reads a room's joinable name and its users/topic fields (by the fields' names, which
/// prpls share: `users`, `topic`; prpl-jabber's description is `description`).
///
/// # Safety
/// `list` and `room` must be live.
unsafe fn read_room(
    list: *mut p::PurpleRoomlist,
    room: *mut p::PurpleRoomlistRoom,
) -> Option<ListedRoom> {
    unsafe {
        if p::purple_roomlist_room_get_type(room) & p::PURPLE_ROOMLIST_ROOMTYPE_ROOM == 0 {
            return None;
        }
        let mut name = string(p::purple_roomlist_room_get_name(room));
        // prpl-jabber lists the bare room name; its serialisation is the joinable room@host.
        let gc = p::purple_account_get_connection((*list).account);
        if !gc.is_null() {
            let prpl = prpl_info(p::purple_connection_get_prpl(gc));
            if !prpl.is_null()
                && let Some(ser) = (*prpl).roomlist_room_serialize
                && let Some(s) = take_gstring(ser(room))
                && !s.is_empty()
            {
                name = s;
            }
        }
        if name.is_empty() {
            return None;
        }
        let fields = glist(p::purple_roomlist_get_fields(list));
        let values = glist(p::purple_roomlist_room_get_fields(room));
        let (mut users, mut topic) = (None, None);
        for (f, v) in fields.iter().zip(values.iter()) {
            let f = *f as *mut p::PurpleRoomlistField;
            if f.is_null() {
                continue;
            }
            let key = string((*f).name);
            match ((*f).type_, key.as_str()) {
                (p::PURPLE_ROOMLIST_FIELD_INT, "users") => users = Some(*v as i64),
                (p::PURPLE_ROOMLIST_FIELD_STRING, "topic" | "description") if !v.is_null() => {
                    topic = Some(string(*v as *const std::ffi::c_char));
                }
                _ => {}
            }
        }
        Some(ListedRoom { name, users, topic })
    }
}

/// The room-list ui-ops, as safe functions.
#[derive(Clone, Copy)]
pub struct UiOps {
    pub add_room: fn(Roomlist, ListedRoom),
    /// The list is complete (`in_progress(FALSE)`).
    pub finished: fn(Roomlist),
    /// The list is being destroyed (maybe before completing: connection lost).
    pub destroyed: fn(Roomlist),
}

thread_local! {
    static OPS: Cell<Option<UiOps>> = const { Cell::new(None) };
}

/// Sets the room-list ui-ops (once, on the main thread).
pub fn set_ui_ops(ops: UiOps) {
    OPS.set(Some(ops));
    // SAFETY: main thread; the struct is leaked so it outlives libpurple.
    unsafe {
        p::purple_roomlist_set_ui_ops(Box::leak(Box::new(p::PurpleRoomlistUiOps {
            show_with_account: None,
            create: None,
            set_fields: None,
            add_room: Some(add_room),
            in_progress: Some(in_progress),
            destroy: Some(destroyed),
            _purple_reserved1: None,
            _purple_reserved2: None,
            _purple_reserved3: None,
            _purple_reserved4: None,
        })));
    }
}

unsafe extern "C" fn add_room(list: *mut p::PurpleRoomlist, room: *mut p::PurpleRoomlistRoom) {
    guard("add_room", (), || {
        let (Some(ops), Some(l)) = (OPS.get(), Roomlist::from_ptr(list)) else {
            return;
        };
        if room.is_null() {
            return;
        }
        // SAFETY: libpurple passes a live list and room for the duration of the call.
        if let Some(listed) = unsafe { read_room(list, room) } {
            (ops.add_room)(l, listed)
        }
    })
}

unsafe extern "C" fn in_progress(list: *mut p::PurpleRoomlist, flag: p::gboolean) {
    guard("in_progress", (), || {
        if let (0, Some(ops), Some(l)) = (flag, OPS.get(), Roomlist::from_ptr(list)) {
            (ops.finished)(l)
        }
    })
}

unsafe extern "C" fn destroyed(list: *mut p::PurpleRoomlist) {
    guard("destroyed", (), || {
        if let (Some(ops), Some(l)) = (OPS.get(), Roomlist::from_ptr(list)) {
            (ops.destroyed)(l)
        }
    })
}
