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

use std::rc::Rc;

use jid::BareJid;

use super::purple::blist::{self, Presence};
use super::purple::markup::{html_to_text, text_to_html};
use super::purple::{Account, Buddy, StatusKind};
use super::{ServiceInfo, Transport, core, messages, requests, roster_bridge, text};
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::{Element, ns};

pub fn install_ui_ops() {
    blist::connect(blist::Signals {
        added: buddy_added,
        removed: buddy_removed,
        changed: buddy_changed,
    });
}

/// (server, legacy id, owner, contact JID, legacy name) of a buddy of one of our accounts.
fn buddy_ctx(b: Buddy) -> Option<(Rc<Server>, i64, BareJid, BareJid, String)> {
    let server = core::server()?;
    let acc = b.account()?;
    let name = b.name();
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

fn write_item(server: &Rc<Server>, owner: &BareJid, contact: &BareJid, b: Buddy) {
    let alias = text::line(&b.alias().unwrap_or_default());
    let groups: Vec<String> = b.group().map(|g| text::line(&g)).into_iter().collect();
    roster_bridge::set_item(server, owner, &contact.to_string(), &alias, &groups, "both");
}

fn buddy_added(b: Buddy) {
    let Some((server, _, owner, contact, _)) = buddy_ctx(b) else {
        return;
    };
    write_item(&server, &owner, &contact, b);
}

fn buddy_removed(b: Buddy) {
    let Some((server, _, owner, contact, _)) = buddy_ctx(b) else {
        return;
    };
    roster_bridge::remove_item(&server, &owner, &contact.to_string());
    let p = Element::stanza("presence")
        .attr("from", contact.to_string())
        .attr("to", owner.to_string())
        .attr("type", "unavailable");
    server.to_available(&owner, &p);
}

/// Signed on or off, a new status, a new picture.
fn buddy_changed(b: Buddy) {
    let Some((server, _, owner, contact, _)) = buddy_ctx(b) else {
        return;
    };
    server.to_available(&owner, &presence_of(b, &contact, &owner));
}

/// The XMPP presence for a buddy's current status.
fn presence_of(b: Buddy, contact: &BareJid, owner: &BareJid) -> Element {
    let mut el = Element::stanza("presence")
        .attr("from", contact.to_string())
        .attr("to", owner.to_string());
    let (kind, message) = match b.presence() {
        Presence::Offline => {
            el.set_attr("type", "unavailable");
            return el;
        }
        Presence::Online => return el,
        Presence::Status(kind, message) => (kind, message),
    };
    let show = match kind {
        StatusKind::Away | StatusKind::Mobile => Some("away"),
        StatusKind::ExtendedAway => Some("xa"),
        StatusKind::Unavailable => Some("dnd"),
        _ => None,
    };
    if let Some(show) = show {
        el.push(Element::new("show", ns::CLIENT).text(show));
    }
    if let Some(msg) = message {
        let text = text::display(&html_to_text(&msg));
        if !text.is_empty() {
            el.push(Element::new("status", ns::CLIENT).text(text));
        }
    }
    if let Some(acc) = b.account()
        && let Some(x) = super::avatars::update_element(acc, &b.name())
    {
        el.push(x);
    }
    el
}

/// Subscribes to the lifecycle events: a link that comes up syncs the roster.
pub fn subscribe(events: &super::events::Events) {
    events.link_up.subscribe(|server, e| sync(server, e.id));
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
    for b in acc.buddies() {
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
    let kind = match show.as_str() {
        "away" => StatusKind::Away,
        "xa" => StatusKind::ExtendedAway,
        "dnd" => StatusKind::Unavailable,
        _ => StatusKind::Available,
    };
    let t = Transport::get(server);
    for id in t.accounts_of(owner, &info.domain) {
        if super::accounts::connection(server, id).is_none() {
            continue;
        }
        let Some(acc) = t.legacy.borrow().get(&id).map(|l| l.account) else {
            continue;
        };
        acc.set_status(kind, Some(&text_to_html(&message)));
    }
}

fn add_buddy(acc: Account, name: &str) {
    if acc.find_buddy(name).is_some() {
        return;
    }
    acc.add_buddy(name, "Buddies");
}

fn remove_buddy(acc: Account, name: &str) {
    if let Some(b) = acc.find_buddy(name) {
        acc.remove_buddy(b);
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
            if let Some(b) = acc.find_buddy(&name) {
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
            let el = match acc.find_buddy(&name) {
                Some(b) => presence_of(b, &contact, owner),
                None => reply("unavailable"),
            };
            server.to_available(owner, &el);
        }
        _ => {}
    }
}
