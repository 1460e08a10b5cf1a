//! Routing of stanzas (RFC 6120 §10, RFC 6121 §8.5), in the manner of Prosody's
//! `core_post_stanza`: the router stamps `from`, classifies `to` (this host, a local account's
//! bare or full JID, a service domain, a remote domain), fires `Pre(name, class)` for what a
//! local user sends and then `Deliver(name, class)`, and answers what no hook handled with the
//! RFC's default error. It names no module: blocking, carbons, the archive, message delivery,
//! offline storage, presence and the IQ rules are hooks (see `crate::core::hooks`).
//!
//! The few delivery hooks that are the server's own plumbing — IQ requests to the IQ rules,
//! IQs to a session, stanzas to a service — are in [`deliver`].

pub mod deliver;

use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

use crate::core::events::{Delivery, Origin, Routed};
use crate::core::hooks::{Flow, Name, Point, To};
use crate::core::stanza::{Condition, parse_to};
use crate::server::Server;
use crate::stream::Connection;
use crate::xml::Element;

pub use crate::core::sessions::{Session, Sessions};

/// A service reachable at its own domain (transport, torrent…), handed every stanza
/// addressed to that domain or a JID under it — the shape of an XEP-0114 component.
pub trait Service {
    fn handle(&self, server: &Rc<Server>, stanza: Element, from: &FullJid);
}

/// The way back: what a service sends to the server's own users. Services write every
/// outgoing stanza through this (inside wockd, `Rc<Server>` implements it), so a service could
/// later run attached to another server over XEP-0114: plain routing for the first three, and
/// XEP-0356 privileged messages for [`ServiceHost::sent_elsewhere`].
pub trait ServiceHost {
    /// A stanza to one session (IQ results, errors, room traffic for the joined resource).
    fn to_session(&self, to: &FullJid, stanza: &Element);
    /// Presence to every available session of `owner` (contacts' and the service's presence).
    fn to_available(&self, owner: &BareJid, stanza: &Element);
    /// A message to `owner`'s bare JID, the normal route: delivered by priority, carbons,
    /// archived, kept in the mailbox while the user is offline.
    fn to_account(&self, owner: &BareJid, message: Element);
    /// A message the user sent from another client of a foreign network: sent carbons to the
    /// user's devices and the archive, as if a local client had sent it (`from` is the user).
    fn sent_elsewhere(&self, from: &FullJid, to: &BareJid, message: &Element);
}

impl ServiceHost for Rc<Server> {
    // A user of another server (a service of `wockd component` acts for the host's users):
    // the stanza is routed by its `to`, which takes it over the component link.

    fn to_session(&self, to: &FullJid, stanza: &Element) {
        if !self.deliver_to_full(to, stanza) && !self.config.is_hosted(to.domain().as_str()) {
            let mut el = stanza.clone();
            el.set_attr("to", to.as_str());
            self.route_local(el);
        }
    }

    fn to_available(&self, owner: &BareJid, stanza: &Element) {
        if crate::core::uplink::is_foreign(self, owner) {
            // The host delivers presence to a bare JID to every available resource.
            let mut el = stanza.clone();
            el.set_attr("to", owner.as_str());
            return self.route_local(el);
        }
        let conns: Vec<Rc<Connection>> = self.sessions.borrow().available_connections(owner);
        for c in conns {
            c.send(stanza);
        }
    }

    fn to_account(&self, owner: &BareJid, mut message: Element) {
        if crate::core::uplink::is_foreign(self, owner) {
            message.set_attr("to", owner.as_str());
            return self.route_local(message);
        }
        deliver_to_account(self, owner, message);
    }

    fn sent_elsewhere(&self, from: &FullJid, to: &BareJid, message: &Element) {
        let user = from.to_bare();
        if crate::core::uplink::is_foreign(self, &user) {
            // XEP-0356 "outgoing" when the host granted it; else the host's user has no sent
            // copy (as with Slidge or Spectrum 2 without privileges).
            let service = to.domain().as_str();
            let grants = crate::core::uplink::Uplinks::get(self, service);
            if !grants.message_outgoing {
                return;
            }
            let mut inner = message.clone();
            inner.set_attr("from", user.as_str());
            inner.set_attr("to", to.as_str());
            let wrapped = Element::stanza("message")
                .attr("from", service)
                .attr("to", user.domain().as_str())
                .child(
                    Element::new("privilege", grants.ns)
                        .child(Element::new("forwarded", crate::xml::ns::FORWARD).child(inner)),
                );
            return self.route_local(wrapped);
        }
        // The Pre hooks of a message the user sent (sent carbons, the sender's archive),
        // without delivering it: the foreign network has it already.
        // The message as the service wrote it; `from` is the user in the origin.
        let mut ev = Routed {
            stanza: message.clone(),
            origin: Origin::OnBehalf { jid: from },
            to: Some(Jid::from(to.clone())),
            name: Name::Message,
            class: To::Service,
            reachable: true,
            delivery: Delivery::default(),
        };
        self.hooks
            .run(self, Point::Pre(Name::Message, To::Service), &mut ev);
    }
}

/// Delivers a message from the server or a service (or handed back by stream management) to
/// the local account `owner`, the normal way: by priority, archived, carbons, offline storage.
pub fn deliver_to_account(server: &Rc<Server>, owner: &BareJid, message: Element) {
    let mut ev = Routed::local(message, Jid::from(owner.clone()), Name::Message, To::Bare);
    deliver(server, &mut ev);
}

/// Entry point for every stanza a bound client sends.
pub fn route_from_client(server: &Rc<Server>, conn: &Rc<Connection>, mut el: Element) {
    let Some(from) = conn.jid() else { return };
    let Some(name) = Name::of(&el.name) else {
        return;
    };
    // No spoofing: whatever the client wrote, the stanza is from its bound JID.
    el.set_attr("from", from.as_str());
    let mut to = match parse_to(&el) {
        Ok(to) => to,
        Err(_) => {
            let ev = client_event(conn, &from, el, None, name, To::Host);
            return ev.bounce(Condition::JidMalformed, "malformed 'to' address");
        }
    };
    if name == Name::Iq && !valid_iq(conn, &el) {
        return;
    }
    if name == Name::Message && to.is_none() {
        // A message without 'to' is for the sender's own account (RFC 6120 §10.3.1).
        let bare = from.to_bare();
        el.set_attr("to", bare.as_str());
        to = Some(Jid::from(bare));
    }
    let class = classify(server, to.as_ref());
    let mut ev = client_event(conn, &from, el, to, name, class);
    ev.reachable = class != To::Remote || server.hooks.handles(Point::Deliver(name, To::Remote));
    if server.hooks.run(server, Point::Pre(name, class), &mut ev) == Flow::Handled {
        return;
    }
    deliver(server, &mut ev);
}

/// Entry point for every stanza another server sends (s2s): `from` is in a domain the stream
/// authenticated, `to` in one we serve. Runs the delivery hooks of `to`'s class; answers go
/// back over federation.
pub fn route_from_remote(server: &Rc<Server>, el: Element, from: Jid, to: Jid) {
    let Some(name) = Name::of(&el.name) else {
        return;
    };
    if name == Name::Iq && el.get_attr("id").is_none() {
        return;
    }
    let class = classify(server, Some(&to));
    let reply = |e: Element| server.route_local(e);
    let mut ev = Routed {
        stanza: el,
        origin: Origin::Remote {
            jid: &from,
            reply: &reply,
        },
        to: Some(to),
        name,
        class,
        reachable: true,
        delivery: Delivery::default(),
    };
    deliver(server, &mut ev);
}

/// A message a privileged component (XEP-0356 "outgoing") sends for the local user `from`:
/// routed as if the user had sent it from a client — the user's Pre hooks (blocking, sent
/// carbons, the sender's archive), then delivery to `to` — like ejabberd's and Prosody's
/// mod_privilege. `from` is the user's bare JID with a resource naming the component, so
/// every one of the user's own clients gets the sent carbon.
pub fn route_on_behalf(server: &Rc<Server>, from: &FullJid, mut el: Element) {
    let Some(name) = Name::of(&el.name) else {
        return;
    };
    el.set_attr("from", from.to_bare().as_str());
    let to = match parse_to(&el) {
        Ok(Some(to)) => to,
        _ => return,
    };
    let class = classify(server, Some(&to));
    let mut ev = Routed {
        stanza: el,
        origin: Origin::OnBehalf { jid: from },
        to: Some(to),
        name,
        class,
        reachable: class != To::Remote || server.hooks.handles(Point::Deliver(name, To::Remote)),
        delivery: Delivery::default(),
    };
    if server.hooks.run(server, Point::Pre(name, class), &mut ev) == Flow::Handled {
        return;
    }
    deliver(server, &mut ev);
}

/// Routes a stanza the server itself makes (an error for a local sender, an answer to a
/// remote one, presence for remote contacts) by its `to`: delivery hooks only, no Pre hooks.
pub fn route_local(server: &Rc<Server>, el: Element) {
    let (Some(name), Ok(Some(to))) = (Name::of(&el.name), parse_to(&el)) else {
        return;
    };
    let class = classify(server, Some(&to));
    let mut ev = Routed::local(el, to, name, class);
    deliver(server, &mut ev);
}

fn client_event<'a>(
    conn: &'a Rc<Connection>,
    from: &'a FullJid,
    stanza: Element,
    to: Option<Jid>,
    name: Name,
    class: To,
) -> Routed<'a> {
    Routed {
        stanza,
        origin: Origin::Client { conn, jid: from },
        to,
        name,
        class,
        reachable: true,
        delivery: Delivery::default(),
    }
}

/// RFC 6120 §8.2.3: an IQ has an id and one of the four types. Answers the sender otherwise.
fn valid_iq(conn: &Connection, el: &Element) -> bool {
    let kind = el.get_attr("type").unwrap_or("");
    let bad = |text: &str| {
        if let Some(reply) = crate::core::stanza::stanza_error(el, Condition::BadRequest, text) {
            conn.send(&reply);
        }
    };
    if el.get_attr("id").is_none() {
        if matches!(kind, "get" | "set") {
            bad("an IQ needs an id");
        }
        return false;
    }
    if !matches!(kind, "get" | "set" | "result" | "error") {
        bad("IQ type must be get, set, result or error");
        return false;
    }
    true
}

/// The class of a recipient address (`None`: the sender's own account).
pub fn classify(server: &Server, to: Option<&Jid>) -> To {
    let Some(to) = to else { return To::Bare };
    let domain = to.domain().as_str();
    if server.config.is_hosted(domain) {
        match (to.node().is_some(), to.resource().is_some()) {
            (_, true) => To::Full,
            (true, false) => To::Bare,
            (false, false) => To::Host,
        }
    } else if server.service(domain).is_some() || server.config.is_component(domain) {
        // External components are reached like in-process services (their own delivery
        // hook), but the rest of the server treats their JIDs as remote ones: RFC 6121
        // subscriptions, probes and rosters as with another server's users.
        To::Service
    } else {
        To::Remote
    }
}

/// Fires the delivery hooks of `ev`'s class and answers it if none handled it.
pub fn deliver(server: &Rc<Server>, ev: &mut Routed<'_>) {
    if server
        .hooks
        .run(server, Point::Deliver(ev.name, ev.class), ev)
        == Flow::Handled
    {
        return;
    }
    unhandled(ev);
}

/// The RFC's answer to a stanza nobody took.
fn unhandled(ev: &Routed<'_>) {
    match (ev.class, ev.name) {
        (To::Remote, _) => ev.bounce(
            Condition::RemoteServerNotFound,
            "this server does not federate",
        ),
        // RFC 6121 §8.5.3.2.1/§8.5.4: an IQ for a resource that is not online; RFC 6120
        // §8.4 for IQs nobody serves. Responses nobody waits for are dropped.
        (_, Name::Iq) if matches!(ev.kind(), Some("get" | "set")) || ev.class == To::Full => {
            ev.bounce(Condition::ServiceUnavailable, "");
        }
        (_, Name::Iq) => {}
        (To::Full, Name::Message) => {}
        (_, Name::Message) => ev.bounce(Condition::ServiceUnavailable, ""),
        // Presence nobody takes is dropped (RFC 6121 §8.5.2.1.3).
        _ => {}
    }
}
