//! Rosters (RFC 6121 §2) with roster versioning (RFC 6121 §2.6, XEP-0237).
//!
//! Implemented: roster get (marks the resource "interested", §2.1.6), roster set and remove
//! with the error cases of §2.3.3 and §2.5.3, roster pushes to every interested resource, and
//! versioning: a get whose `ver` is current gets an empty result, any other `ver` the whole
//! roster (§2.6.3 allows that instead of replaying pushes). Items are bare JIDs; a client's
//! `subscription` (other than `remove`), `ask` and `approved` attributes are ignored, as the
//! server alone manages subscription states (§2.1.2.5, §3).
//!
//! The roster state itself (cache, reads, [`update`] with its pushes) is in `core::roster`:
//! the presence module's subscription state machine (RFC 6121 §3), PEP, the archive and the
//! transport read and change it too. Removing an item fires `RosterItemRemoved`, on which the
//! presence module cancels the subscriptions.

use std::collections::HashSet;
use std::rc::Rc;

use jid::{BareJid, Jid};

use crate::core::roster::{RosterRequested, item, item_element, load, update};
use crate::core::stanza::Condition;
use crate::core::{Incoming, Module, RosterItemRemoved, Server};
use crate::store::roster::RosterRow;
use crate::xml::{Element, ns};

/// Limits behind `not-acceptable` (§2.3.3 leaves them to the server).
const MAX_NAME_BYTES: usize = 1024;
const MAX_GROUP_BYTES: usize = 1024;
const MAX_GROUPS: usize = 64;
/// Beyond this many items a roster set adding one more is refused.
const MAX_ITEMS: usize = 5000;

pub fn install(m: &mut Module) {
    m.feature(Element::new("ver", ns::ROSTER_VER));
    m.iqs().rule(ns::ROSTER, "query").get(get).set(set);
}

// ---- IQ handlers ----------------------------------------------------------------------------

/// The account a roster request acts on: only one's own (§2.1.3, §2.1.5: `forbidden` else).
fn own_account(iq: &Incoming) -> Option<BareJid> {
    let user = iq.account()?;
    match &iq.to {
        None => Some(user),
        Some(to) if to.resource().is_none() && to.to_bare() == user => Some(user),
        Some(_) => None,
    }
}

fn get(iq: Incoming) {
    let Some(user) = own_account(&iq) else {
        return iq.fail(Condition::Forbidden, "you can only read your own roster");
    };
    let server = iq.server().clone();
    let Some(roster) = load(&server, &user) else {
        return iq.fail(
            Condition::InternalServerError,
            "the roster is not available",
        );
    };
    if let Some(from) = &iq.from
        && let Some(s) = server.sessions.borrow_mut().get_mut(from)
    {
        s.ext.set(RosterRequested);
    }
    let reply = {
        let r = roster.borrow();
        let ver = r.version.to_string();
        if iq.payload.get_attr("ver") == Some(ver.as_str()) {
            // §2.6.3: unchanged; the client uses its cached copy.
            None
        } else {
            let mut q = Element::new("query", ns::ROSTER).attr("ver", ver);
            for row in r.rows.values().filter(|r| r.in_roster) {
                q.push(item_element(row));
            }
            Some(q)
        }
    };
    iq.result(reply);
}

fn set(iq: Incoming) {
    let Some(user) = own_account(&iq) else {
        return iq.fail(Condition::Forbidden, "you can only change your own roster");
    };
    // Cloned so that `iq` is free to be answered (and moved) on every path.
    let item = match iq.payload.elements().count() {
        1 => iq
            .payload
            .elements()
            .next()
            .filter(|e| e.is("item", ns::ROSTER))
            .cloned(),
        _ => None,
    };
    let Some(item) = item else {
        return iq.fail(
            Condition::BadRequest,
            "a roster set carries exactly one item",
        );
    };
    let Some(contact) = item
        .get_attr("jid")
        .and_then(|j| Jid::new(j).ok())
        .filter(|j| j.resource().is_none())
        .map(|j| j.to_bare())
    else {
        return iq.fail(Condition::BadRequest, "the item needs a valid bare JID");
    };
    if contact == user {
        return iq.fail(
            Condition::NotAllowed,
            "you cannot add yourself to your roster",
        );
    }
    let server = iq.server().clone();
    if item.get_attr("subscription") == Some("remove") {
        return remove(&server, &user, &contact, iq);
    }
    let name = item
        .get_attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_BYTES) {
        return iq.fail(Condition::NotAcceptable, "the name is too long");
    }
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    for g in item.elements().filter(|g| g.is("group", ns::ROSTER)) {
        let text = g.text_content();
        if text.is_empty() {
            return iq.fail(Condition::NotAcceptable, "a group name is empty");
        }
        if text.len() > MAX_GROUP_BYTES {
            return iq.fail(Condition::NotAcceptable, "a group name is too long");
        }
        if !seen.insert(text.clone()) {
            return iq.fail(Condition::BadRequest, "the item lists a group twice");
        }
        groups.push(text);
    }
    if groups.len() > MAX_GROUPS {
        return iq.fail(Condition::NotAcceptable, "the item is in too many groups");
    }
    let Some(roster) = load(&server, &user) else {
        return iq.fail(
            Condition::InternalServerError,
            "the roster is not available",
        );
    };
    {
        let r = roster.borrow();
        let is_new = !r.rows.get(&contact).is_some_and(|r| r.in_roster);
        if is_new && r.rows.values().filter(|r| r.in_roster).count() >= MAX_ITEMS {
            drop(r);
            return iq.fail(Condition::NotAllowed, "the roster is full");
        }
    }
    // A privileged gateway (XEP-0356) states the subscription of its legacy contacts, as in
    // Prosody's mod_privilege; a client's `subscription` is ignored (§2.1.2.2).
    let subscription = item
        .get_attr("subscription")
        .filter(|_| iq.privileged())
        .and_then(crate::store::roster::Subscription::parse);
    let updated = update(&server, &user, &contact, |r| {
        r.in_roster = true;
        r.name = name;
        r.groups = groups;
        if let Some(s) = subscription {
            r.subscription = s;
        }
    });
    match updated {
        Some(_) => iq.result(None),
        None => iq.fail(
            Condition::InternalServerError,
            "the roster could not be saved",
        ),
    }
}

/// §2.5: removes the item and everything known about the contact, then cancels the
/// subscriptions both ways.
fn remove(server: &Rc<Server>, user: &BareJid, contact: &BareJid, iq: Incoming) {
    if item(server, user, contact).is_none() {
        return iq.fail(Condition::ItemNotFound, "the contact is not in the roster");
    }
    let removed = update(server, user, contact, |r| {
        *r = RosterRow {
            contact: r.contact.clone(),
            ..RosterRow::default()
        }
    });
    let Some(change) = removed else {
        return iq.fail(
            Condition::InternalServerError,
            "the roster could not be saved",
        );
    };
    let by = iq.from.clone();
    iq.result(None);
    server.hooks.fire(
        server,
        &mut RosterItemRemoved {
            user: user.clone(),
            contact: contact.clone(),
            before: change.before,
            by,
        },
    );
}
