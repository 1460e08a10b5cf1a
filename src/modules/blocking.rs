//! XEP-0191 Blocking Command.
//!
//! * §3.2 get the blocklist; the requesting resource then receives pushes.
//! * §3.3 block, §3.4 unblock, §3.5 unblock all: stored, answered, and pushed to every resource
//!   of the account that requested the blocklist. `<block/>` without items: `bad-request`; an
//!   item whose `jid` is not a JID: `jid-malformed`. Only for one's own account (`forbidden`).
//! * §3.3 enforcement, on the routing path ([`intercept`], called by the router for every
//!   stanza a client sends): a stanza *to* a JID the sender blocked is not routed and gets
//!   `not-acceptable` + `<blocked xmlns='urn:xmpp:blocking:errors'/>`; a stanza *from* a JID
//!   the local recipient blocked is not delivered: presence silently, messages and IQ get/set
//!   with `service-unavailable` (so the user appears offline), other IQs and errors silently.
//! * JID matching as in XEP-0016 §2.1: an item `user@domain/resource` matches only that JID,
//!   `user@domain` any of its resources, `domain/resource` that JID, `domain` the domain and
//!   every JID at it.
//!
//! Blocklists are cached in memory (per account, on first use) because the check runs for
//! every routed stanza; the database is the source of truth across restarts.
//!
//! Not done here: the unavailable presence to a blocked contact (and current presence on
//! unblock) that §3.3/§3.4 ask for when the contact is subscribed — the presence module owns
//! subscriptions and should consult [`is_blocked`] when it broadcasts.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

use crate::core::account::{Addressee, addressee};
use crate::core::blocklist::{self, is_blocked, update_cache};
use crate::core::stanza::{Condition, ErrorType, error_reply};
use crate::core::{AccountDeleted, Flow, Incoming, Module, Name, Point, Routed, Server, To};
use crate::xml::{Element, ns};

pub fn install(m: &mut Module) {
    m.iqs().rule(ns::BLOCKING, "blocklist").get(get_blocklist);
    m.iqs().rule(ns::BLOCKING, "block").set(block);
    m.iqs().rule(ns::BLOCKING, "unblock").set(unblock);
    // Before anything else sees what a client sends.
    m.hook(Point::Pre(Name::Any, To::Any), 1000, enforce);
    m.hook(Point::Deliver(Name::Any, To::Bare), 1000, enforce_remote);
    m.hook(Point::Deliver(Name::Any, To::Full), 1000, enforce_remote);
    m.on(0, |server, e: &mut AccountDeleted| {
        forget(server, &e.account)
    });
}

/// `Pre(Any, Any)`: [`intercept`] on every stanza a client sends.
fn enforce(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    match (ev.connection(), ev.from_client()) {
        (Some(conn), Some(from)) if intercept(server, conn, from, ev.to.as_ref(), &ev.stanza) => {
            Flow::Handled
        }
        _ => Flow::Continue,
    }
}

/// `Deliver(Any, Bare|Full)` for stanzas from another server: a local recipient that blocked
/// the remote sender (or its domain) gets nothing; messages and IQ requests are answered with
/// `service-unavailable`, presence is dropped (XEP-0191 §3.3).
fn enforce_remote(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let (Some(sender), Some(to)) = (ev.from_remote(), ev.to.as_ref()) else {
        return Flow::Continue;
    };
    if !is_blocked(server, &to.to_bare(), sender) {
        return Flow::Continue;
    }
    let kind = ev.kind();
    let is_response = kind == Some("error") || (ev.stanza.name == "iq" && kind == Some("result"));
    if !is_response && ev.stanza.name != "presence" {
        ev.bounce(Condition::ServiceUnavailable, "");
    }
    Flow::Handled
}

#[derive(Default)]
struct Blocking {
    /// Resources that requested the blocklist, with the id of their connection (a later
    /// session with the same full JID has not asked, and gets no pushes).
    requested: RefCell<HashMap<BareJid, Vec<(FullJid, u64)>>>,
    next_push: Cell<u64>,
}

// ---- enforcement ------------------------------------------------------------------------------

/// Applies the blocklists of sender and recipient to a stanza a client sent (`from` is its
/// bound JID, `to` the parsed `to`). Returns true when the stanza must not be routed; it has
/// then been answered as XEP-0191 §3.3 says.
fn intercept(
    server: &Rc<Server>,
    conn: &crate::core::Connection,
    from: &FullJid,
    to: Option<&Jid>,
    el: &Element,
) -> bool {
    let Some(to) = to else { return false };
    let to_local = server.config.is_hosted(to.domain().as_str());
    // The server itself and one's own account are never "contacts".
    if to_local && to.node().is_none() {
        return false;
    }
    // Per routed stanza: `to_bare()` formats a new string; a bare `to` is borrowed as is and
    // the sender's bare JID is its full JID truncated.
    let me = from.clone().into_bare();
    let to_bare = crate::core::events::bare_of(to);
    let to_bare: &BareJid = &to_bare;
    if *to_bare == me {
        return false;
    }
    let kind = el.get_attr("type");
    let is_response = kind == Some("error") || (el.name == "iq" && kind == Some("result"));
    if is_blocked(server, &me, to) {
        if !is_response
            && let Some(mut reply) =
                error_reply(el, ErrorType::Cancel, Condition::NotAcceptable, None)
        {
            if let Some(err) = reply.get_child_mut("error", ns::CLIENT) {
                err.push(Element::new("blocked", ns::BLOCKING_ERRORS));
            }
            conn.send(&reply);
        }
        return true;
    }
    if to_local && is_blocked(server, to_bare, from) {
        if !is_response
            && el.name != "presence"
            && let Some(reply) =
                error_reply(el, ErrorType::Cancel, Condition::ServiceUnavailable, None)
        {
            conn.send(&reply);
        }
        return true;
    }
    false
}

// ---- the protocol -----------------------------------------------------------------------------

/// The sender's account, when the request is for it; otherwise answers `forbidden`.
fn own_account(iq: Incoming) -> Option<(Incoming, BareJid)> {
    match (addressee(&iq), iq.account()) {
        (Addressee::Unaddressed | Addressee::Own, Some(me)) => Some((iq, me)),
        _ => {
            iq.fail(Condition::Forbidden, "a blocklist belongs to its owner");
            None
        }
    }
}

fn account_id(iq: Incoming, me: &BareJid) -> Option<(Incoming, i64)> {
    match iq.server().store.account_id_of(me) {
        Ok(Some(id)) => Some((iq, id)),
        Ok(None) => {
            iq.fail(Condition::ItemNotFound, "no such account");
            None
        }
        Err(e) => {
            tracing::error!(%me, "store error looking up account: {e}");
            iq.fail(Condition::InternalServerError, "");
            None
        }
    }
}

fn get_blocklist(iq: Incoming) {
    let Some((iq, me)) = own_account(iq) else {
        return;
    };
    let Some((iq, _)) = account_id(iq, &me) else {
        return;
    };
    // The cached list: it has every change queued for the store, committed or not.
    let Some(list) = blocklist::list(iq.server(), &me) else {
        return iq.fail(Condition::InternalServerError, "");
    };
    let server = iq.server().clone();
    let state = server.ext::<Blocking>();
    if let (Some(full), Some(conn)) = (iq.from.clone(), iq.connection()) {
        let mut requested = state.requested.borrow_mut();
        let entry = requested.entry(me).or_default();
        entry.retain(|(j, _)| *j != full);
        entry.push((full, conn.id));
    }
    iq.result(Some(items_element("blocklist", &list)));
}

/// The `jid`s of the request's items, normalised; `Err` when one is missing or malformed.
fn item_jids(payload: &Element) -> Result<Vec<String>, ()> {
    payload
        .elements()
        .filter(|e| e.is("item", ns::BLOCKING))
        .map(|e| {
            let j = e.get_attr("jid").ok_or(())?;
            Jid::new(j).map(|j| j.to_string()).map_err(|_| ())
        })
        .collect()
}

fn block(iq: Incoming) {
    let Some((iq, me)) = own_account(iq) else {
        return;
    };
    let Ok(jids) = item_jids(&iq.payload) else {
        return iq.error(
            ErrorType::Modify,
            Condition::JidMalformed,
            "an item's jid is not a JID",
        );
    };
    if jids.is_empty() {
        return iq.fail(Condition::BadRequest, "block at least one JID");
    }
    let Some((iq, id)) = account_id(iq, &me) else {
        return;
    };
    let server = iq.server().clone();
    // Routing applies the change at once; the store has it once the job is committed, and
    // the request is answered then.
    if update_cache(&server, &me, |list| list.extend(jids.iter().cloned())).is_none() {
        return iq.fail(Condition::InternalServerError, "");
    }
    let payload = items_element("block", &jids);
    server.store.write(
        move |tx| crate::store::xeps::block(tx, id, &jids),
        move |done| stored(iq, me, done, payload),
    );
}

/// Answers a block or unblock once its write is committed, and pushes the change.
fn stored(iq: Incoming, me: BareJid, done: Result<(), crate::store::StoreError>, payload: Element) {
    let server = iq.server().clone();
    match done {
        Ok(()) => {
            iq.result(None);
            push(&server, &me, payload);
        }
        Err(e) => {
            tracing::error!(%me, "store error writing blocklist: {e}");
            // What routing applies may no longer be what is stored: read it again.
            blocklist::forget(&server, &me);
            iq.fail(Condition::InternalServerError, "");
        }
    }
}

fn unblock(iq: Incoming) {
    let Some((iq, me)) = own_account(iq) else {
        return;
    };
    let Ok(jids) = item_jids(&iq.payload) else {
        return iq.error(
            ErrorType::Modify,
            Condition::JidMalformed,
            "an item's jid is not a JID",
        );
    };
    let Some((iq, id)) = account_id(iq, &me) else {
        return;
    };
    let server = iq.server().clone();
    let changed = update_cache(&server, &me, |list| {
        if jids.is_empty() {
            list.clear();
        } else {
            for j in &jids {
                list.remove(j);
            }
        }
    });
    if changed.is_none() {
        return iq.fail(Condition::InternalServerError, "");
    }
    let payload = items_element("unblock", &jids);
    server.store.write(
        move |tx| {
            if jids.is_empty() {
                crate::store::xeps::unblock_all(tx, id)
            } else {
                crate::store::xeps::unblock(tx, id, &jids)
            }
        },
        move |done| stored(iq, me, done, payload),
    );
}

fn items_element(name: &str, jids: &[String]) -> Element {
    let mut el = Element::new(name, ns::BLOCKING);
    for j in jids {
        el.push(Element::new("item", ns::BLOCKING).attr("jid", j.as_str()));
    }
    el
}

/// Sends `payload` as an IQ set to every resource of `me` that requested the blocklist.
fn push(server: &Server, me: &BareJid, payload: Element) {
    let state = server.ext::<Blocking>();
    let targets: Vec<FullJid> = {
        let sessions = server.sessions.borrow();
        let mut requested = state.requested.borrow_mut();
        let Some(list) = requested.get_mut(me) else {
            return;
        };
        // Forget resources whose session has gone (or been replaced by another connection).
        list.retain(|(jid, conn_id)| {
            sessions
                .get(jid)
                .and_then(|s| s.connection())
                .is_some_and(|c| c.id == *conn_id)
        });
        if list.is_empty() {
            requested.remove(me);
            return;
        }
        list.iter().map(|(j, _)| j.clone()).collect()
    };
    for to in targets {
        let n = state.next_push.get() + 1;
        state.next_push.set(n);
        let iq = Element::stanza("iq")
            .attr("type", "set")
            .attr("id", format!("block-push-{n}"))
            .attr("to", to.to_string())
            .child(payload.clone());
        server.deliver_to_full(&to, &iq);
    }
}

/// Drops what is remembered for `account` (it was deleted).
fn forget(server: &Server, account: &BareJid) {
    server
        .ext::<Blocking>()
        .requested
        .borrow_mut()
        .remove(account);
}
