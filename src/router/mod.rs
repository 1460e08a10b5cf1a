//! Routing of stanzas from authenticated sessions (RFC 6120 §10, RFC 6121 §8.5 in part):
//! the server stamps `from`, IQs for the server or an account go to the IQ rules, full JIDs to
//! their session, service domains to their service; other domains get
//! `remote-server-not-found` at once (no federation yet).

pub mod sessions;

use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

pub use sessions::{Session, Sessions};

use crate::core::stanza::Condition;
use crate::core::stanza::{parse_to, request_parts, stanza_error};
use crate::iq::{Incoming, ReplyTo};
use crate::server::Server;
use crate::stream::Connection;
use crate::xml::Element;

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
    fn to_session(&self, to: &FullJid, stanza: &Element) {
        self.deliver_to_full(to, stanza);
    }

    fn to_available(&self, owner: &BareJid, stanza: &Element) {
        for (_, c) in crate::modules::presence::available_sessions(self, owner) {
            c.send(stanza);
        }
    }

    fn to_account(&self, owner: &BareJid, message: Element) {
        crate::modules::message::deliver_to_bare(self, None, owner, message);
    }

    fn sent_elsewhere(&self, from: &FullJid, to: &BareJid, message: &Element) {
        crate::modules::carbons::sent(self, from, message);
        crate::modules::mam::archive_outgoing(self, from, &Jid::from(to.clone()), message);
    }
}

/// Answers `stanza` with an error on the connection it came from.
fn bounce(conn: &Connection, stanza: &Element, cond: Condition, text: &str) {
    if let Some(reply) = stanza_error(stanza, cond, text) {
        conn.send(&reply);
    }
}

/// Entry point for every stanza a bound client sends.
pub fn route_from_client(server: &Rc<Server>, conn: &Rc<Connection>, mut el: Element) {
    let Some(from) = conn.jid() else { return };
    // No spoofing: whatever the client wrote, the stanza is from its bound JID.
    el.set_attr("from", from.as_str());
    let to = match parse_to(&el) {
        Ok(to) => to,
        Err(()) => return bounce(conn, &el, Condition::JidMalformed, "malformed 'to' address"),
    };
    // XEP-0191: stanzas to a JID the sender blocked, or from a JID the local recipient blocked,
    // stop here (answered as the XEP says by modules::blocking).
    if crate::modules::blocking::intercept(server, conn, &from, to.as_ref(), &el) {
        return;
    }
    match el.name.as_str() {
        "iq" => route_iq(server, conn, &from, to, el),
        "message" => route_message(server, conn, &from, to, el),
        _ => route_presence(server, conn, &from, to, el),
    }
}

/// True when `to` names this server or an account on it rather than a session.
fn handled_by_server(server: &Server, to: &Option<Jid>) -> bool {
    match to {
        None => true,
        Some(j) => j.resource().is_none() && server.config.is_hosted(j.domain().as_str()),
    }
}

fn route_iq(
    server: &Rc<Server>,
    conn: &Rc<Connection>,
    from: &FullJid,
    to: Option<Jid>,
    el: Element,
) {
    let kind = el.get_attr("type").unwrap_or("");
    let Some(id) = el.get_attr("id").map(str::to_owned) else {
        if matches!(kind, "get" | "set") {
            bounce(conn, &el, Condition::BadRequest, "an IQ needs an id");
        }
        return;
    };
    match kind {
        "get" | "set" => {}
        "result" | "error" => {
            if handled_by_server(server, &to) {
                server.iq_response(from, &id, el);
            } else {
                deliver_elsewhere(server, conn, from, to, el);
            }
            return;
        }
        _ => {
            return bounce(
                conn,
                &el,
                Condition::BadRequest,
                "IQ type must be get, set, result or error",
            );
        }
    }
    if !handled_by_server(server, &to) {
        return deliver_elsewhere(server, conn, from, to, el);
    }
    let Some((iq_type, payload)) = request_parts(&el) else {
        return bounce(
            conn,
            &el,
            Condition::BadRequest,
            "a get or set IQ has exactly one child",
        );
    };
    let Some(handler) =
        server
            .stream
            .session_stage()
            .rules()
            .find(&payload.ns, &payload.name, iq_type)
    else {
        return bounce(conn, &el, Condition::ServiceUnavailable, "");
    };
    let lang = el.get_attr("xml:lang").map(str::to_owned);
    let payload = payload.clone();
    handler(Incoming::new(
        server.clone(),
        ReplyTo::Stream(Rc::downgrade(conn)),
        id,
        iq_type,
        Some(from.clone()),
        to,
        lang,
        payload,
    ));
}

fn route_message(
    server: &Rc<Server>,
    conn: &Rc<Connection>,
    from: &FullJid,
    to: Option<Jid>,
    mut el: Element,
) {
    let to = match to {
        Some(to) => to,
        None => {
            // A message without 'to' is for the sender's own account (RFC 6120 §10.3.1).
            let bare = from.to_bare();
            el.set_attr("to", bare.to_string());
            Jid::from(bare)
        }
    };
    // The sender's other devices see what it sent, and its archive keeps it (XEP-0280, -0313)
    // — unless it goes nowhere: a message bounced with remote-server-not-found was not sent.
    let domain = to.domain().as_str();
    let hosted = server.config.is_hosted(domain);
    if hosted || server.service(domain).is_some() {
        crate::modules::carbons::sent(server, from, &el);
        crate::modules::mam::archive_outgoing(server, from, &to, &el);
    }
    if !hosted {
        return deliver_elsewhere(server, conn, from, Some(to), el);
    }
    // `into_bare` reuses the JID's string (`to_bare` would format a new one).
    let bare = match to.try_into_full() {
        Ok(full) => match crate::modules::message::deliver_to_full(server, &full, el) {
            Ok(()) => return,
            Err(back) => {
                el = back;
                full.into_bare()
            }
        },
        Err(bare) => bare,
    };
    server.deliver_message_to_bare(conn, &bare, el);
}

fn route_presence(
    server: &Rc<Server>,
    conn: &Rc<Connection>,
    from: &FullJid,
    to: Option<Jid>,
    el: Element,
) {
    match to {
        None => server.own_presence(conn, from, el),
        Some(to) if server.config.is_hosted(to.domain().as_str()) => match to.try_as_full() {
            Ok(full) => crate::modules::presence::directed_to_full(server, from, full, el),
            Err(_) => server.directed_presence_to_bare(from, &to.to_bare(), el),
        },
        Some(to) => deliver_elsewhere(server, conn, from, Some(to), el),
    }
}

/// Full JIDs of local sessions, services, and domains we do not serve.
fn deliver_elsewhere(
    server: &Rc<Server>,
    conn: &Rc<Connection>,
    from: &FullJid,
    to: Option<Jid>,
    el: Element,
) {
    let Some(to) = to else { return };
    let domain = to.domain().as_str();
    if server.config.is_hosted(domain) {
        if let Ok(full) = to.try_as_full()
            && server.deliver_to_full(full, &el)
        {
            return;
        }
        // RFC 6121 §8.5.3.2.1/§8.5.4: an IQ for a resource that is not online.
        if el.name == "iq" {
            bounce(conn, &el, Condition::ServiceUnavailable, "");
        }
        return;
    }
    if let Some(service) = server.service(domain) {
        service.handle(server, el, from);
        return;
    }
    if el.get_attr("type") != Some("error") {
        bounce(
            conn,
            &el,
            Condition::RemoteServerNotFound,
            "this server does not federate",
        );
    }
}
