//! The rosters (RFC 6121 §2) as the server keeps them: each account's roster is loaded from
//! SQLite on first use and kept in [`RosterCache`]; every change ([`update`]) is made to the
//! cache and queued for the store's writer thread at once, and pushed (§2.1.6) to the
//! resources that asked for the roster. The cache is ahead of the database only by writes
//! queued and not yet committed, and acknowledgements to the client that caused them wait for
//! that commit; a write that fails marks the cached roster stale, so the next use reads the
//! store again. The roster
//! protocol is `modules/roster.rs`; the subscription state machine, PEP, the archive and the
//! transport read and change rosters through here.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use jid::BareJid;

use super::{AccountDeleted, Server};
use crate::store::roster::{RosterRow, Subscription};
use crate::xml::{Element, ns, parse};

/// Per-session mark (`Session::ext`): the resource requested the roster (RFC 6121 §2.1.6: it
/// gets roster pushes).
pub struct RosterRequested;

/// Rosters are dropped from the cache with their account.
pub fn install(hooks: &super::Hooks) {
    hooks.on(0, |server, e: &mut AccountDeleted| {
        forget(server, &e.account)
    });
}

/// One account's roster in memory: every stored row, keyed by the contact's bare JID.
pub struct Roster {
    pub account: i64,
    pub version: i64,
    pub rows: BTreeMap<BareJid, RosterRow>,
    /// A queued write of this roster failed: the store, not this copy, is right.
    stale: bool,
}

/// The roster cache: module state on the server (`server.ext::<RosterCache>()`).
#[derive(Default)]
pub struct RosterCache {
    rosters: RefCell<HashMap<BareJid, Rc<RefCell<Roster>>>>,
    next_push: Cell<u64>,
}

/// What [`update`] did to one row.
#[derive(Clone, Debug)]
pub struct Change {
    pub before: RosterRow,
    pub after: RosterRow,
}

impl Change {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

// ---- the cache ------------------------------------------------------------------------------

/// The roster of local account `user`, loaded on first use; `None` when there is no such
/// account (or the store failed, which is logged).
pub fn load(server: &Server, user: &BareJid) -> Option<Rc<RefCell<Roster>>> {
    let cache = server.ext::<RosterCache>();
    let cached = cache.rosters.borrow().get(user).cloned();
    if let Some(r) = cached {
        if !r.borrow().stale {
            return Some(r);
        }
        cache.rosters.borrow_mut().remove(user);
    }
    let node = user.node()?;
    let domain = user.domain().as_str();
    if !server.config.is_hosted(domain) {
        return None;
    }
    let account = match server.store.account_id(node.as_str(), domain) {
        Ok(Some(id)) => id,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(%user, "cannot look up account: {e}");
            return None;
        }
    };
    let (version, stored) = match server.store.load_roster(account) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%user, "cannot load roster: {e}");
            return None;
        }
    };
    let mut rows = BTreeMap::new();
    for row in stored {
        match BareJid::new(&row.contact) {
            Ok(j) => {
                rows.insert(j, row);
            }
            Err(e) => {
                tracing::warn!(%user, contact = %row.contact, "skipping stored roster row: {e}")
            }
        }
    }
    let roster = Rc::new(RefCell::new(Roster {
        account,
        version,
        rows,
        stale: false,
    }));
    cache
        .rosters
        .borrow_mut()
        .insert(user.clone(), roster.clone());
    Some(roster)
}

/// Drops the cached roster of `user`: call it when the account is deleted (or its data
/// changed behind the server's back), so a later load reads the store again.
pub fn forget(server: &Server, user: &BareJid) {
    server
        .ext::<RosterCache>()
        .rosters
        .borrow_mut()
        .remove(user);
}

// ---- queries for other modules --------------------------------------------------------------

/// True when `user` is a local account (and its roster could be loaded).
pub fn exists(server: &Server, user: &BareJid) -> bool {
    load(server, user).is_some()
}

/// Everything stored about `contact` for `user`, including a pending-in request from a
/// contact who is not in the roster (`in_roster == false`).
pub fn row(server: &Server, user: &BareJid, contact: &BareJid) -> Option<RosterRow> {
    load(server, user)?.borrow().rows.get(contact).cloned()
}

/// The roster item for `contact`, if it is in `user`'s roster.
pub fn item(server: &Server, user: &BareJid, contact: &BareJid) -> Option<RosterRow> {
    row(server, user, contact).filter(|r| r.in_roster)
}

/// `user`'s subscription with `contact` (`None` when not in the roster or no such account).
pub fn subscription(server: &Server, user: &BareJid, contact: &BareJid) -> Subscription {
    row(server, user, contact)
        .map(|r| r.subscription)
        .unwrap_or_default()
}

/// Every item of `user`'s roster.
pub fn items(server: &Server, user: &BareJid) -> Vec<RosterRow> {
    load(server, user)
        .map(|r| {
            r.borrow()
                .rows
                .values()
                .filter(|r| r.in_roster)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Contacts that receive `user`'s presence (subscription `from` or `both`).
pub fn subscribers(server: &Server, user: &BareJid) -> Vec<BareJid> {
    contacts_where(server, user, |r| r.subscription.has_from())
}

/// Contacts whose presence `user` receives (subscription `to` or `both`).
pub fn subscribed_to(server: &Server, user: &BareJid) -> Vec<BareJid> {
    contacts_where(server, user, |r| r.subscription.has_to())
}

fn contacts_where(
    server: &Server,
    user: &BareJid,
    pred: impl Fn(&RosterRow) -> bool,
) -> Vec<BareJid> {
    load(server, user)
        .map(|r| {
            r.borrow()
                .rows
                .iter()
                .filter(|(_, r)| pred(r))
                .map(|(j, _)| j.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The subscription requests `user` has not answered yet, as the stanzas that made them.
pub fn pending_requests(server: &Server, user: &BareJid) -> Vec<Element> {
    let Some(roster) = load(server, user) else {
        return Vec::new();
    };
    let scope = parse::Scope::with_default(ns::CLIENT);
    let stored: Vec<String> = roster
        .borrow()
        .rows
        .values()
        .filter_map(|r| r.pending_in.clone())
        .collect();
    stored
        .iter()
        .filter_map(|s| match parse::element(s.as_bytes(), &scope) {
            Ok(el) => Some(el),
            Err(e) => {
                tracing::warn!(%user, "unreadable stored subscription request: {e}");
                None
            }
        })
        .collect()
}

/// The current roster version of `user` (XEP-0237), as a number.
pub fn version(server: &Server, user: &BareJid) -> Option<i64> {
    load(server, user).map(|r| r.borrow().version)
}

// ---- changes --------------------------------------------------------------------------------

/// Changes what is stored about `contact` for `user` with `f`, writes it through to the store
/// and, when the visible roster item changed, bumps the version and pushes the item (or its
/// removal) to `user`'s interested resources. A row left without state is deleted.
///
/// Returns `None` when `user` is not a local account or its roster could not be loaded (then
/// nothing changed). The change is written by the store's writer thread; a failure there is
/// logged and makes the cached roster stale. `f` must not call back into this module.
pub fn update(
    server: &Server,
    user: &BareJid,
    contact: &BareJid,
    f: impl FnOnce(&mut RosterRow),
) -> Option<Change> {
    let roster = load(server, user)?;
    let (change, pushed_version) = {
        let mut r = roster.borrow_mut();
        let before = r.rows.get(contact).cloned().unwrap_or_else(|| RosterRow {
            contact: contact.to_string(),
            ..RosterRow::default()
        });
        let mut after = before.clone();
        f(&mut after);
        after.contact.clone_from(&before.contact);
        if after == before {
            return Some(Change { before, after });
        }
        let visible_changed = visible(&before) != visible(&after);
        let version = r.version + i64::from(visible_changed);
        // Written by the store's writer thread, with the version numbered here.
        let (account, row, bump) = (r.account, after.clone(), visible_changed.then_some(version));
        let failed = Rc::downgrade(&roster);
        let (owner, who) = (user.clone(), contact.clone());
        server.store.write(
            move |tx| crate::store::roster::save_row(tx, account, &row, bump),
            move |done| {
                if let Err(e) = done {
                    tracing::error!(user = %owner, contact = %who, "cannot store roster change: {e}");
                    if let Some(r) = failed.upgrade() {
                        r.borrow_mut().stale = true;
                    }
                }
            },
        );
        r.version = version;
        if after.is_empty() {
            r.rows.remove(contact);
        } else {
            r.rows.insert(contact.clone(), after.clone());
        }
        (Change { before, after }, visible_changed.then_some(version))
    };
    if let Some(v) = pushed_version {
        push(server, user, &change.after, v);
    }
    Some(change)
}

/// The `<item/>` of a row as results and pushes show it.
pub fn item_element(row: &RosterRow) -> Element {
    let mut item = Element::new("item", ns::ROSTER).attr("jid", row.contact.as_str());
    if let Some(name) = &row.name {
        item.set_attr("name", name.as_str());
    }
    item.set_attr("subscription", row.subscription.as_str());
    if row.ask {
        item.set_attr("ask", "subscribe");
    }
    if row.approved {
        item.set_attr("approved", "true");
    }
    for g in &row.groups {
        item.push(Element::new("group", ns::ROSTER).text(g.as_str()));
    }
    item
}

fn visible(row: &RosterRow) -> Option<Element> {
    row.in_roster.then(|| item_element(row))
}

/// Sends a roster push (§2.1.6) to every interested resource of `user`. Clients answer pushes
/// with results nobody waits for; the router drops those.
fn push(server: &Server, user: &BareJid, row: &RosterRow, version: i64) {
    let item = visible(row).unwrap_or_else(|| {
        Element::new("item", ns::ROSTER)
            .attr("jid", row.contact.as_str())
            .attr("subscription", "remove")
    });
    let query = Element::new("query", ns::ROSTER)
        .attr("ver", version.to_string())
        .child(item);
    let targets: Vec<_> = server
        .sessions
        .borrow()
        .of(user)
        .iter()
        .filter(|s| s.ext.get::<RosterRequested>().is_some())
        .filter_map(|s| Some((s.jid.clone(), s.connection()?)))
        .collect();
    let cache = server.ext::<RosterCache>();
    for (jid, conn) in targets {
        let n = cache.next_push.get() + 1;
        cache.next_push.set(n);
        let iq = Element::stanza("iq")
            .attr("type", "set")
            .attr("id", format!("roster-push-{n}"))
            .attr("to", jid.to_string())
            .child(query.clone());
        conn.send(&iq);
    }
}

/// Whether `requester` may see `owner`'s presence: `owner` itself, or a contact with a
/// subscription to it (RFC 6121 §3). Disco and last activity answer only such requesters.
pub fn may_see_presence(server: &Server, owner: &BareJid, requester: &BareJid) -> bool {
    owner == requester || subscription(server, owner, requester).has_from()
}
