//! A service attached to another server (`wockd component`, `[[component_link]]`): what the
//! host granted it under XEP-0356, so that the service picks the privileged request (roster
//! set, outgoing message, PEP publish on the user's behalf) or its degraded form (subscription
//! presences, nothing) the way Slidge and Spectrum 2 do. Written by `component::uplink` when
//! the host's `<privilege/>` arrives; read by the services through the server.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use jid::BareJid;

use crate::server::Server;
use crate::xml::Element;

pub const NS_PRIVILEGE: &str = crate::iq::NS_PRIVILEGE;
/// XEP-0356 0.2.x, what ejabberd up to 23.x and Spectrum 2's hosts speak.
pub const NS_PRIVILEGE_1: &str = "urn:xmpp:privilege:1";

/// What one service domain was granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub roster_set: bool,
    pub message_outgoing: bool,
    /// Namespaces of `privileged_iq` requests the service may send as `set`.
    pub iq_set: BTreeSet<String>,
    /// The XEP-0356 namespace the host advertised in (`:2`, or `:1` from older hosts);
    /// privileged requests are wrapped in the same one.
    pub ns: &'static str,
}

impl Grants {
    /// Reads a `<privilege xmlns='urn:xmpp:privilege:2'/>` (or `:1`) advertisement. `:1`
    /// has no `iq` permission; its roster and message permissions read the same.
    pub fn parse(privilege: &Element) -> Grants {
        let mut g = Grants {
            ns: if privilege.is("privilege", NS_PRIVILEGE_1) {
                NS_PRIVILEGE_1
            } else {
                NS_PRIVILEGE
            },
            ..Grants::default()
        };
        for perm in privilege.elements().filter(|e| e.name == "perm") {
            let kind = perm.get_attr("type").unwrap_or("none");
            match perm.get_attr("access") {
                Some("roster") => g.roster_set = matches!(kind, "set" | "both"),
                Some("message") => g.message_outgoing = kind == "outgoing",
                Some("iq") if g.ns == NS_PRIVILEGE => {
                    for n in perm.elements().filter(|e| e.name == "namespace") {
                        if let (Some(ns), Some("set" | "both")) =
                            (n.get_attr("ns"), n.get_attr("type"))
                        {
                            g.iq_set.insert(ns.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        g
    }
}

/// `Server::ext` state: grants by service domain, and the roster sets awaiting the host's
/// answer (id → user, contact) so that a refusal falls back to a subscription request.
#[derive(Default)]
pub struct Uplinks {
    grants: RefCell<HashMap<String, Grants>>,
    roster_sets: RefCell<HashMap<String, (BareJid, BareJid)>>,
}

/// Roster sets remembered at once, at most (the oldest are forgotten: their answer is long
/// overdue).
const MAX_PENDING_ROSTER_SETS: usize = 10_000;

impl Uplinks {
    /// A roster set with `id` went to the host for `user`'s item `contact`.
    pub fn roster_set_sent(server: &Server, id: &str, user: &BareJid, contact: &BareJid) {
        let u = server.ext::<Uplinks>();
        let mut m = u.roster_sets.borrow_mut();
        if m.len() >= MAX_PENDING_ROSTER_SETS {
            m.clear();
        }
        m.insert(id.to_owned(), (user.clone(), contact.clone()));
    }

    /// The host answered `id`: the roster set's user and contact when it was one, and
    /// whether it was refused. A refusal also withdraws the roster grant of the contact's
    /// service (the next items go the XEP-0100 way at once).
    pub fn roster_set_answered(
        server: &Server,
        id: &str,
        refused: bool,
    ) -> Option<(BareJid, BareJid)> {
        let u = server.ext::<Uplinks>();
        let entry = u.roster_sets.borrow_mut().remove(id)?;
        if refused {
            if let Some(g) = u.grants.borrow_mut().get_mut(entry.1.domain().as_str()) {
                g.roster_set = false;
            }
            return Some(entry);
        }
        None
    }

    pub fn set(&self, domain: &str, grants: Grants) {
        self.grants.borrow_mut().insert(domain.to_owned(), grants);
    }

    pub fn get(server: &Server, domain: &str) -> Grants {
        server
            .ext::<Uplinks>()
            .grants
            .borrow()
            .get(domain)
            .cloned()
            .unwrap_or_default()
    }
}

/// `user` is not an account of this server: a service of a component process acting for a
/// user of the host server.
pub fn is_foreign(server: &Server, user: &BareJid) -> bool {
    !server.config.is_hosted(user.domain().as_str())
}

/// A `privileged_iq` set of `payload` on `user`'s own account, from `service` (XEP-0356 §5).
pub fn privileged_set(service: &str, user: &BareJid, id: &str, payload: Element) -> Element {
    Element::stanza("iq")
        .attr("type", "set")
        .attr("id", id)
        .attr("from", service)
        .attr("to", user.to_string())
        .child(
            Element::new("privileged_iq", NS_PRIVILEGE).child(
                Element::stanza("iq")
                    .attr("type", "set")
                    .attr("id", id)
                    .attr("to", user.to_string())
                    .child(payload),
            ),
        )
}
