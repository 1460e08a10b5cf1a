//! The transport's only way into the user's roster. Inside wockd, legacy contacts are written
//! as items directly (`core::roster::update`, which stores, bumps the version and pushes to
//! interested resources). Attached to another server (`wockd component`), the user's roster is
//! the host's: a XEP-0356 roster set when the host granted it, else the XEP-0100 way, a
//! subscription request from the legacy contact that the user approves.

use std::rc::Rc;

use jid::BareJid;

use crate::core::roster;
use crate::core::uplink::{Uplinks, is_foreign};
use crate::server::Server;
use crate::store::roster::Subscription;
use crate::xml::{Element, ns};

/// Attached to another server: the user's roster is changed there (see the module doc).
fn remote_item(
    server: &Rc<Server>,
    owner: &BareJid,
    contact: &BareJid,
    item: Option<(&str, &[String], &str)>,
) {
    let service = contact.domain().as_str();
    if Uplinks::get(server, service).roster_set {
        let mut el = Element::new("item", ns::ROSTER).attr("jid", contact.as_str());
        match item {
            Some((name, groups, subscription)) => {
                el.set_attr("subscription", subscription);
                if !name.is_empty() {
                    el.set_attr("name", name);
                }
                for g in groups {
                    el.push(Element::new("group", ns::ROSTER).text(g.as_str()));
                }
            }
            None => el.set_attr("subscription", "remove"),
        }
        let id = crate::net::link::random_id();
        if item.is_some() {
            Uplinks::roster_set_sent(server, &id, owner, contact);
        }
        server.route_local(
            Element::stanza("iq")
                .attr("type", "set")
                .attr("id", id)
                .attr("from", service)
                .attr("to", owner.as_str())
                .child(Element::new("query", ns::ROSTER).child(el)),
        );
        return;
    }
    let kinds: &[&str] = if item.is_some() {
        &["subscribe"]
    } else {
        &["unsubscribe", "unsubscribed"]
    };
    for kind in kinds {
        server.route_local(
            Element::stanza("presence")
                .attr("type", *kind)
                .attr("from", contact.as_str())
                .attr("to", owner.as_str()),
        );
    }
}

/// Adds or updates `contact` in `owner`'s roster with subscription `both` (or `to`), keeping
/// a name and groups the user set themselves.
pub fn set_item(
    server: &Rc<Server>,
    owner: &BareJid,
    contact: &str,
    name: &str,
    groups: &[String],
    subscription: &str,
) {
    let Ok(contact) = BareJid::new(contact) else {
        tracing::warn!(%contact, "not a valid JID; roster item not written");
        return;
    };
    if is_foreign(server, owner) {
        return remote_item(server, owner, &contact, Some((name, groups, subscription)));
    }
    let sub = match subscription {
        "to" => Subscription::To,
        "from" => Subscription::From,
        "none" => Subscription::None,
        _ => Subscription::Both,
    };
    let name = (!name.is_empty()).then(|| name.to_owned());
    roster::update(server, owner, &contact, |row| {
        let fresh = !row.in_roster;
        row.in_roster = true;
        if fresh || row.name.is_none() {
            row.name.clone_from(&name);
        }
        if fresh || row.groups.is_empty() {
            row.groups = groups.to_vec();
        }
        row.subscription = sub;
        row.ask = false;
        row.pending_in = None;
    });
}

/// Removes `contact` from `owner`'s roster.
pub fn remove_item(server: &Rc<Server>, owner: &BareJid, contact: &str) {
    let Ok(contact) = BareJid::new(contact) else {
        return;
    };
    if is_foreign(server, owner) {
        return remote_item(server, owner, &contact, None);
    }
    roster::update(server, owner, &contact, |row| {
        row.in_roster = false;
        row.subscription = Subscription::None;
        row.ask = false;
        row.pending_in = None;
        row.approved = false;
    });
}

/// Records a subscription request from `contact` (re-sent at each login until answered).
pub fn pending_in(
    server: &Rc<Server>,
    owner: &BareJid,
    contact: &BareJid,
    stanza: &crate::xml::Element,
) {
    if is_foreign(server, owner) {
        // The host keeps it until answered.
        let mut el = stanza.clone();
        el.set_attr("to", owner.as_str());
        return server.route_local(el);
    }
    roster::update(server, owner, contact, |row| {
        row.pending_in = Some(stanza.to_string())
    });
}
