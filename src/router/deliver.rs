//! The server's own delivery hooks, installed before any module's: IQ requests for the server
//! or an account go to the IQ rules (the seed's API), responses to IQs the server sent go to
//! their callbacks, IQs for a full JID go to that session, and everything for a service domain
//! goes to the service.

use std::rc::Rc;

use crate::core::events::Routed;
use crate::core::hooks::{Flow, Hooks, Name, Point, To};
use crate::core::stanza::{Condition, request_parts};
use crate::iq::{Incoming, ReplyTo};
use crate::server::Server;

pub fn install(hooks: &Hooks) {
    hooks.hook(Point::Deliver(Name::Iq, To::Host), 0, iq_for_server);
    hooks.hook(Point::Deliver(Name::Iq, To::Bare), 0, iq_for_server);
    hooks.hook(Point::Deliver(Name::Iq, To::Full), 0, to_session);
    hooks.hook(Point::Deliver(Name::Any, To::Service), 0, to_service);
}

/// IQs to this server or to an account on it (RFC 6120 §10.3.3, §10.5.3.1).
fn iq_for_server(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if let Some(remote) = ev.from_remote() {
        return remote_iq_for_server(server, ev, remote.clone());
    }
    let Some(from) = ev.from_client() else {
        return Flow::Continue;
    };
    let Some(id) = ev.stanza.get_attr("id") else {
        return Flow::Handled;
    };
    if let Some("result" | "error") = ev.kind() {
        let id = id.to_owned();
        let el = std::mem::replace(&mut ev.stanza, crate::xml::Element::stanza("iq"));
        server.iq_response(from, &id, el);
        return Flow::Handled;
    }
    let Some((iq_type, payload)) = request_parts(&ev.stanza) else {
        ev.bounce(
            Condition::BadRequest,
            "a get or set IQ has exactly one child",
        );
        return Flow::Handled;
    };
    let Some(handler) =
        server
            .stream
            .session_stage()
            .rules()
            .find(&payload.ns, &payload.name, iq_type)
    else {
        ev.bounce(Condition::ServiceUnavailable, "");
        return Flow::Handled;
    };
    let conn = ev.connection().map(Rc::downgrade);
    let Some(conn) = conn else {
        return Flow::Continue;
    };
    let id = id.to_owned();
    let lang = ev.stanza.get_attr("xml:lang").map(str::to_owned);
    let payload = payload.clone();
    handler(Incoming::new(
        server.clone(),
        ReplyTo::Stream(conn),
        id,
        iq_type,
        Some(from.clone()),
        ev.to.take(),
        lang,
        payload,
    ));
    Flow::Handled
}

/// An IQ from another server for this server or an account on it: served by the same IQ
/// rules, answered over federation. The requester is `from` when it is a full JID (a remote
/// user), nobody's account here either way (see `Incoming::account`).
fn remote_iq_for_server(server: &Rc<Server>, ev: &mut Routed<'_>, remote: jid::Jid) -> Flow {
    let Some(id) = ev.stanza.get_attr("id") else {
        return Flow::Handled;
    };
    // Answers to IQs the server sent remotely: none are sent yet, so they are dropped.
    if let Some("result" | "error") = ev.kind() {
        return Flow::Handled;
    }
    let Some((iq_type, payload)) = request_parts(&ev.stanza) else {
        ev.bounce(
            Condition::BadRequest,
            "a get or set IQ has exactly one child",
        );
        return Flow::Handled;
    };
    let Some(handler) =
        server
            .stream
            .session_stage()
            .rules()
            .find(&payload.ns, &payload.name, iq_type)
    else {
        ev.bounce(Condition::ServiceUnavailable, "");
        return Flow::Handled;
    };
    let id = id.to_owned();
    let lang = ev.stanza.get_attr("xml:lang").map(str::to_owned);
    let payload = payload.clone();
    let from = remote.try_as_full().ok().cloned();
    handler(Incoming::new(
        server.clone(),
        ReplyTo::Remote(remote),
        id,
        iq_type,
        from,
        ev.to.take(),
        lang,
        payload,
    ));
    Flow::Handled
}

/// An IQ for a local session.
fn to_session(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    match ev.to_full() {
        Some(full) if server.deliver_to_full(full, &ev.stanza) => Flow::Handled,
        _ => Flow::Continue,
    }
}

/// Anything for a service domain.
fn to_service(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let (Some(from), Some(to)) = (ev.from_client(), ev.to.as_ref()) else {
        return Flow::Continue;
    };
    let Some(service) = server.service(to.domain().as_str()) else {
        return Flow::Continue;
    };
    let el = std::mem::replace(&mut ev.stanza, crate::xml::Element::stanza(""));
    service.handle(server, el, from);
    Flow::Handled
}
