//! Who may see a node (XEP-0060 §4.5 access models), who gets its event notifications
//! (XEP-0163 §4), and the messages that carry them.

use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

use super::caps::{self, Interest};
use crate::core::{Server, blocklist as blocking, roster};
use crate::store::pep::{AccessModel, PepItem, PepNode, SendLast};
use crate::xml::{Element, ns, parse};

/// Why an entity may not see a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// `presence`: not subscribed to the owner's presence (§6.5.9.8).
    PresenceSubscriptionRequired,
    /// `roster`: not in an allowed roster group (§6.5.9.9).
    NotInRosterGroup,
    /// `whitelist`: only the owner (§6.5.9.10).
    ClosedNode,
}

/// Whether `requester` may retrieve items of (and be notified about) `owner`'s node. The
/// owner always may (XEP-0163 §7); the owner's roster decides for everyone else.
pub fn access(
    server: &Server,
    owner: &BareJid,
    requester: &BareJid,
    node: &PepNode,
) -> Result<(), Denied> {
    if owner == requester {
        return Ok(());
    }
    let c = &node.config;
    match c.access_model {
        AccessModel::Open => Ok(()),
        AccessModel::Presence => roster::subscription(server, owner, requester)
            .has_from()
            .then_some(())
            .ok_or(Denied::PresenceSubscriptionRequired),
        AccessModel::Roster => roster::item(server, owner, requester)
            .is_some_and(|row| row.groups.iter().any(|g| c.roster_groups.contains(g)))
            .then_some(())
            .ok_or(Denied::NotInRosterGroup),
        AccessModel::Whitelist => Err(Denied::ClosedNode),
    }
}

/// A contact that may get notifications of `owner`'s node: allowed by the access model and
/// not blocked by the owner (XEP-0163 §4.3.3).
fn may_notify(server: &Server, owner: &BareJid, contact: &BareJid, node: &PepNode) -> bool {
    access(server, owner, contact, node).is_ok()
        && (owner == contact || !blocking::is_blocked(server, owner, &Jid::from(contact.clone())))
}

/// The resources that get `owner`'s notifications about `node` (XEP-0163 §4.3): its own and
/// those of contacts with a presence subscription to it, each available with a non-negative
/// priority and a `+notify` for the node in its caps.
fn recipients(server: &Server, owner: &BareJid, node: &PepNode) -> Vec<FullJid> {
    let mut bares = vec![owner.clone()];
    bares.extend(
        roster::subscribers(server, owner)
            .into_iter()
            .filter(|c| c != owner && may_notify(server, owner, c, node)),
    );
    let sessions = server.sessions.borrow();
    bares
        .iter()
        .flat_map(|b| sessions.of(b))
        .map(|s| s.jid.clone())
        .filter(|j| caps::wants(server, j, &node.name))
        .collect()
}

/// Sends `<event>{payload}</event>` about `owner`'s `node` to every recipient.
pub fn broadcast(server: &Rc<Server>, owner: &BareJid, node: &PepNode, payload: &Element) {
    if !node.config.deliver_notifications {
        return;
    }
    for to in recipients(server, owner, node) {
        server.deliver_to_full(&to, &message(owner, to.as_str(), payload.clone(), None));
    }
    // Subscribers on other servers: their resources' caps are not known here, so the event
    // goes to the bare JID and their server delivers it (to its available resources).
    for to in remote_subscribers(server, owner, node) {
        server.route_local(message(owner, to.as_str(), payload.clone(), None));
    }
}

/// `owner`'s subscribers at other servers that may get notifications about `node`.
fn remote_subscribers(server: &Server, owner: &BareJid, node: &PepNode) -> Vec<BareJid> {
    roster::subscribers(server, owner)
        .into_iter()
        .filter(|c| {
            let d = c.domain().as_str();
            !server.config.is_hosted(d)
                && server.service(d).is_none()
                && may_notify(server, owner, c, node)
        })
        .collect()
}

/// `<items node=…><item id=…>payload</item></items>` (the payload left out when the node does
/// not deliver payloads, §7.1.2.2).
pub fn items_event(node: &PepNode, item: &PepItem, payload: Option<Element>) -> Element {
    let mut el = Element::new("item", ns::PUBSUB_EVENT).attr("id", item.item_id.as_str());
    if node.config.deliver_payloads
        && let Some(p) = payload
    {
        el.push(p);
    }
    Element::new("items", ns::PUBSUB_EVENT)
        .attr("node", node.name.as_str())
        .child(el)
}

/// The headline carrying a notification (XEP-0163 §4.3.1: from the owner's bare JID), with a
/// XEP-0203 delay for a last item sent later.
fn message(owner: &BareJid, to: &str, payload: Element, published: Option<i64>) -> Element {
    let mut m = Element::stanza("message")
        .attr("from", owner.to_string())
        .attr("to", to)
        .attr("type", "headline")
        .attr("id", super::new_id())
        .child(Element::new("event", ns::PUBSUB_EVENT).child(payload));
    if let Some(micros) = published {
        m.push(
            Element::new("delay", ns::DELAY)
                .attr("from", owner.to_string())
                .attr("stamp", crate::core::time::datetime(micros.max(0))),
        );
    }
    m
}

/// Parses a stored payload; `None` (logged) if it does not parse.
pub fn payload_of(item: &PepItem) -> Option<Element> {
    match parse::element(item.payload.as_bytes(), &parse::Scope::new()) {
        Ok(el) => Some(el),
        Err(e) => {
            tracing::error!(item = %item.item_id, "stored PEP payload does not parse: {e}");
            None
        }
    }
}

/// XEP-0163 §4.3.2: a resource that became available (or newly wants `nodes`) gets the last
/// item of each of those nodes of its own account and of the contacts whose presence it
/// receives, where the node sends its last item on presence and lets it see the item.
pub fn send_last_items(server: &Rc<Server>, to: &FullJid, nodes: &Interest) {
    let user = to.to_bare();
    let mut owners = vec![user.clone()];
    owners.extend(
        roster::subscribed_to(server, &user)
            .into_iter()
            .filter(|c| *c != user && roster::subscription(server, c, &user).has_from()),
    );
    for owner in owners {
        send_last_items_of(server, to, &owner, nodes);
    }
}

/// The last item of each of `owner`'s nodes in `nodes` that `to` may see and that sends its
/// last item on subscription and presence.
pub fn send_last_items_of(server: &Rc<Server>, to: &FullJid, owner: &BareJid, nodes: &Interest) {
    let user = to.to_bare();
    let stored = server
        .store
        .account_id_of(owner)
        .and_then(|account| match account {
            Some(a) => server.store.pep_nodes(a),
            None => Ok(Vec::new()),
        });
    let owned = match stored {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(%owner, "store error reading PEP nodes: {e}");
            return;
        }
    };
    for node in owned {
        if !nodes.contains(&node.name)
            || node.config.send_last != SendLast::OnSubAndPresence
            || !node.config.deliver_notifications
            || !may_notify(server, owner, &user, &node)
        {
            continue;
        }
        let item = match server.store.pep_last_item(node.id) {
            Ok(Some(item)) => item,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(%owner, node = %node.name, "store error reading last item: {e}");
                continue;
            }
        };
        let Some(payload) = payload_of(&item) else {
            continue;
        };
        let event = items_event(&node, &item, Some(payload));
        server.deliver_to_full(
            to,
            &message(owner, to.as_str(), event, Some(item.published)),
        );
    }
}
