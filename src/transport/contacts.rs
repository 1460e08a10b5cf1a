//! The legacy buddy list as roster items, and presence both ways (RFC 6121 §3, §4).
//!
//! * Buddies (added by the prpl — e.g. prpl-jabber's roster import — or present at connect)
//!   become roster items of the owner, with the legacy alias as name and the legacy group,
//!   subscription `both` (legacy networks have their own authorisation; wockd mirrors the
//!   buddy list). Removed buddies are removed.
//! * Buddy status → presence from the contact JID: AVAILABLE → available, AWAY → `away`,
//!   EXTENDED_AWAY → `xa`, UNAVAILABLE (busy) → `dnd`, offline → `unavailable`; the status
//!   message as `<status/>`.
//! * The user's presence to the service JID (sent by the presence module's broadcast, since
//!   the service is in the roster) sets the status of every account on that service.
//! * `subscribe` to a contact JID adds the legacy buddy; `unsubscribe`/`unsubscribed` removes
//!   it; legacy authorisation requests become `subscribe` from the contact, answered with
//!   `subscribed`/`unsubscribed` (see `requests.rs` for the pending table).

use std::ffi::c_void;
use std::rc::Rc;

use jid::BareJid;
use purple_sys as p;

use super::ffi::{cstring, gslist, opt_string, string};
use super::{ServiceInfo, Transport, core, messages, requests, roster_bridge, text};
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::{Element, ns};

pub fn install_ui_ops() {
    // SAFETY: leaked ui-ops; blist-signals signatures: buddy-added/removed/signed-on/off
    // (PurpleBuddy *), buddy-status-changed (PurpleBuddy *, PurpleStatus *, PurpleStatus *).
    unsafe {
        p::purple_accounts_set_ui_ops(Box::leak(Box::new(p::PurpleAccountUiOps {
            request_authorize: Some(requests::request_authorize),
            close_account_request: Some(requests::close_account_request),
            ..Default::default()
        })));
        let h = p::purple_blist_get_handle();
        core::connect_signal(h, "buddy-added", buddy_added as *const ());
        core::connect_signal(h, "buddy-removed", buddy_removed as *const ());
        core::connect_signal(h, "buddy-signed-on", buddy_changed as *const ());
        core::connect_signal(h, "buddy-signed-off", buddy_changed as *const ());
        core::connect_signal(h, "buddy-status-changed", buddy_status as *const ());
        // A new picture: the presence carries its XEP-0153 hash, so send it again.
        core::connect_signal(h, "buddy-icon-changed", buddy_changed as *const ());
    }
}

/// (server, legacy id, owner, contact JID, legacy name) of a buddy of one of our accounts.
fn buddy_ctx(b: *mut p::PurpleBuddy) -> Option<(Rc<Server>, i64, BareJid, BareJid, String)> {
    let server = core::server()?;
    // SAFETY: b is live during the signal.
    let (acc, name) = unsafe {
        (
            p::purple_buddy_get_account(b),
            string(p::purple_buddy_get_name(b)),
        )
    };
    let t = Transport::get(&server);
    let id = t.id_of(acc)?;
    let (owner, protocol) = t
        .legacy
        .borrow()
        .get(&id)
        .map(|l| (l.owner.clone(), l.protocol.clone()))?;
    let name = messages::peer_name(&protocol, &name);
    let contact = t.contact_jid(id, &name)?;
    Some((server, id, owner, contact, name))
}

fn write_item(server: &Server, owner: &BareJid, contact: &BareJid, b: *mut p::PurpleBuddy) {
    // SAFETY: live buddy; the alias and group name are borrowed strings.
    let (alias, group) = unsafe {
        let alias = text::line(&opt_string(p::purple_buddy_get_alias(b)).unwrap_or_default());
        let g = p::purple_buddy_get_group(b);
        let group = if g.is_null() {
            None
        } else {
            opt_string(p::purple_group_get_name(g)).map(|g| text::line(&g))
        };
        (alias, group)
    };
    let groups: Vec<String> = group.into_iter().collect();
    roster_bridge::set_item(server, owner, &contact.to_string(), &alias, &groups, "both");
}

unsafe extern "C" fn buddy_added(b: *mut p::PurpleBuddy, _d: *mut c_void) {
    super::ffi::guard("buddy_added", (), || {
        let Some((server, _, owner, contact, _)) = buddy_ctx(b) else {
            return;
        };
        write_item(&server, &owner, &contact, b);
    })
}

unsafe extern "C" fn buddy_removed(b: *mut p::PurpleBuddy, _d: *mut c_void) {
    super::ffi::guard("buddy_removed", (), || {
        let Some((server, _, owner, contact, _)) = buddy_ctx(b) else {
            return;
        };
        roster_bridge::remove_item(&server, &owner, &contact.to_string());
        let p = Element::stanza("presence")
            .attr("from", contact.to_string())
            .attr("to", owner.to_string())
            .attr("type", "unavailable");
        server.to_available(&owner, &p);
    })
}

unsafe extern "C" fn buddy_changed(b: *mut p::PurpleBuddy, _d: *mut c_void) {
    super::ffi::guard("buddy_changed", (), || {
        let Some((server, _, owner, contact, _)) = buddy_ctx(b) else {
            return;
        };
        server.to_available(&owner, &presence_of(b, &contact, &owner));
    })
}

unsafe extern "C" fn buddy_status(
    b: *mut p::PurpleBuddy,
    _old: *mut p::PurpleStatus,
    _new: *mut p::PurpleStatus,
    _d: *mut c_void,
) {
    super::ffi::guard("buddy_status", (), || {
        // SAFETY: forwarded with the same liveness.
        unsafe { buddy_changed(b, _d) };
    })
}

/// The XMPP presence for a buddy's current status.
fn presence_of(b: *mut p::PurpleBuddy, contact: &BareJid, owner: &BareJid) -> Element {
    let mut el = Element::stanza("presence")
        .attr("from", contact.to_string())
        .attr("to", owner.to_string());
    // SAFETY: live buddy; presence and status are owned by it.
    unsafe {
        let presence = p::purple_buddy_get_presence(b);
        if presence.is_null() || p::purple_presence_is_online(presence) == 0 {
            el.set_attr("type", "unavailable");
            return el;
        }
        let status = p::purple_presence_get_active_status(presence);
        if status.is_null() {
            return el;
        }
        let show = match p::purple_status_type_get_primitive(p::purple_status_get_type(status)) {
            p::PURPLE_STATUS_AWAY | p::PURPLE_STATUS_MOBILE => Some("away"),
            p::PURPLE_STATUS_EXTENDED_AWAY => Some("xa"),
            p::PURPLE_STATUS_UNAVAILABLE => Some("dnd"),
            _ => None,
        };
        if let Some(show) = show {
            el.push(Element::new("show", ns::CLIENT).text(show));
        }
        let key = cstring("message");
        if let Some(msg) = opt_string(p::purple_status_get_attr_string(status, key.as_ptr())) {
            let text = text::display(&super::ffi::html_to_text(&msg));
            if !text.is_empty() {
                el.push(Element::new("status", ns::CLIENT).text(text));
            }
        }
        let name = string(p::purple_buddy_get_name(b));
        if let Some(x) = super::avatars::update_element(p::purple_buddy_get_account(b), &name) {
            el.push(x);
        }
    }
    el
}

/// After a connect: every buddy the account has goes into the roster, with its presence.
pub fn sync(server: &Rc<Server>, id: i64) {
    let t = Transport::get(server);
    let Some((acc, owner)) = t
        .legacy
        .borrow()
        .get(&id)
        .map(|l| (l.account, l.owner.clone()))
    else {
        return;
    };
    // SAFETY: main thread; the returned GSList is ours to free (not its buddies).
    let buddies = unsafe {
        let list = p::purple_find_buddies(acc, std::ptr::null());
        let v = gslist(list);
        glib::ffi::g_slist_free(list as *mut glib::ffi::GSList);
        v
    };
    for b in buddies {
        let b = b as *mut p::PurpleBuddy;
        if let Some((_, _, _, contact, _)) = buddy_ctx(b) {
            write_item(server, &owner, &contact, b);
            server.to_available(&owner, &presence_of(b, &contact, &owner));
        }
    }
}

/// The user's own presence (sent to the service JID) → the status of their accounts there.
pub fn user_status(server: &Rc<Server>, info: &ServiceInfo, owner: &BareJid, el: &Element) {
    let show = el.child_text("show", ns::CLIENT).unwrap_or_default();
    let message = el.child_text("status", ns::CLIENT).unwrap_or_default();
    let prim = match show.as_str() {
        "away" => p::PURPLE_STATUS_AWAY,
        "xa" => p::PURPLE_STATUS_EXTENDED_AWAY,
        "dnd" => p::PURPLE_STATUS_UNAVAILABLE,
        _ => p::PURPLE_STATUS_AVAILABLE,
    };
    let t = Transport::get(server);
    for id in t.accounts_of(owner, &info.domain) {
        if super::accounts::connection(server, id).is_none() {
            continue;
        }
        let Some(acc) = t.legacy.borrow().get(&id).map(|l| l.account) else {
            continue;
        };
        // SAFETY: main thread, live account; the attribute list holds borrowed C strings that
        // outlive the call, and is freed (not its data) afterwards.
        unsafe {
            let mut st = p::purple_account_get_status_type_with_primitive(acc, prim);
            if st.is_null() && prim != p::PURPLE_STATUS_AVAILABLE {
                st = p::purple_account_get_status_type_with_primitive(acc, p::PURPLE_STATUS_AWAY);
            }
            if st.is_null() {
                continue;
            }
            let key = cstring("message");
            let val = cstring(&super::ffi::text_to_html(&message));
            let has_msg = !p::purple_status_type_get_attr(st, key.as_ptr()).is_null();
            let mut attrs: *mut glib::ffi::GList = std::ptr::null_mut();
            if has_msg {
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
    }
}

fn find_buddy(acc: *mut p::PurpleAccount, name: &str) -> *mut p::PurpleBuddy {
    let n = cstring(name);
    // SAFETY: main thread; borrowed buddy or NULL.
    unsafe { p::purple_find_buddy(acc, n.as_ptr()) }
}

fn add_buddy(acc: *mut p::PurpleAccount, name: &str) {
    if !find_buddy(acc, name).is_null() {
        return;
    }
    let n = cstring(name);
    let g = cstring("Buddies");
    // SAFETY: main thread; the buddy is handed to the buddy list, which owns it.
    unsafe {
        let mut group = p::purple_find_group(g.as_ptr());
        if group.is_null() {
            group = p::purple_group_new(g.as_ptr());
            p::purple_blist_add_group(group, std::ptr::null_mut());
        }
        let b = p::purple_buddy_new(acc, n.as_ptr(), std::ptr::null());
        p::purple_blist_add_buddy(b, std::ptr::null_mut(), group, std::ptr::null_mut());
        p::purple_account_add_buddy(acc, b);
    }
}

fn remove_buddy(acc: *mut p::PurpleAccount, name: &str) {
    let b = find_buddy(acc, name);
    if b.is_null() {
        return;
    }
    // SAFETY: main thread; the buddy list frees the buddy.
    unsafe {
        p::purple_account_remove_buddy(acc, b, p::purple_buddy_get_group(b));
        p::purple_blist_remove_buddy(b);
    }
}

/// Presence from the user to a contact JID (subscriptions and probes).
pub fn presence_to_contact(
    server: &Rc<Server>,
    info: &ServiceInfo,
    owner: &BareJid,
    node: &str,
    kind: Option<&str>,
) {
    let t = Transport::get(server);
    let Some((id, name)) = t.resolve(owner, &info.domain, node) else {
        return;
    };
    let Some(contact) = t.contact_jid(id, &name) else {
        return;
    };
    let Some(acc) = t.legacy.borrow().get(&id).map(|l| l.account) else {
        return;
    };
    let reply = |kind: &str| {
        Element::stanza("presence")
            .attr("from", contact.to_string())
            .attr("to", owner.to_string())
            .attr("type", kind)
    };
    match kind {
        Some("subscribe") => {
            add_buddy(acc, &name);
            roster_bridge::set_item(server, owner, &contact.to_string(), &name, &[], "both");
            server.to_available(owner, &reply("subscribed"));
            let b = find_buddy(acc, &name);
            if !b.is_null() {
                server.to_available(owner, &presence_of(b, &contact, owner));
            }
        }
        Some("subscribed") => {
            requests::answer_authorization(server, id, &name, true);
        }
        Some("unsubscribed") if requests::answer_authorization(server, id, &name, false) => {}
        Some("unsubscribe") | Some("unsubscribed") => {
            remove_buddy(acc, &name);
            roster_bridge::remove_item(server, owner, &contact.to_string());
            server.to_available(owner, &reply("unsubscribed"));
        }
        Some("probe") => {
            let b = find_buddy(acc, &name);
            let el = if b.is_null() {
                reply("unavailable")
            } else {
                presence_of(b, &contact, owner)
            };
            server.to_available(owner, &el);
        }
        _ => {}
    }
}
