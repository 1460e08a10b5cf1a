//! XEP-0280 Message Carbons (urn:xmpp:carbons:2): every device of an account that enabled
//! carbons sees the account's conversations — messages received by another of its resources
//! (`<received/>` copies) and messages its other resources sent (`<sent/>` copies).
//!
//! Eligible (XEP-0280 §6): type `chat`, or `normal` with a body; never errors, groupchat or
//! headlines; never when the sender marked it `<private/>` or `<no-copy/>` (XEP-0334), and
//! never a message that is itself a carbon or a forwarded archive result.

use std::rc::Rc;

use jid::{BareJid, FullJid};

use crate::core::sessions::{Session, Sessions};
use crate::core::stanza::{Condition, IqResult, StanzaError};
use crate::core::{Bind2Request, Flow, Incoming, Module, Name, Point, Routed, Server, To, bare_of};
use crate::xml::{Element, ns};

pub const NS: &str = ns::CARBONS;
const FORWARD: &str = ns::FORWARD;

pub fn install(m: &mut Module) {
    m.iqs()
        .rule(NS, "enable")
        .set_result(|iq| set_enabled(iq, true));
    m.iqs()
        .rule(NS, "disable")
        .set_result(|iq| set_enabled(iq, false));
    m.on(0, inline_enable);
    m.hook(Point::Pre(Name::Message, To::Any), -50, copy_sent);
    // After the message module chose the sessions, before it sends.
    m.hook(Point::Deliver(Name::Message, To::Bare), 90, skip_copied);
    m.hook(Point::Deliver(Name::Message, To::Any), -50, copy_received);
}

/// `Pre(Message, Any)`: the sender's other resources get a `<sent/>` copy (XEP-0280 §7) — of
/// a message that goes somewhere (one bounced with remote-server-not-found was not sent).
fn copy_sent(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if let Some(from) = ev.sender()
        && ev.reachable
    {
        sent(server, from, &ev.stanza);
    }
    Flow::Continue
}

/// A message the server hands back (stream management's unacknowledged messages) was
/// carbon-copied already: the resources with carbons on had their copy, so they do not get it
/// again.
fn skip_copied(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if !ev.delivery.redelivered || !eligible(&ev.stanza) {
        return Flow::Continue;
    }
    let Some(to) = ev.to_bare() else {
        return Flow::Continue;
    };
    let sessions = server.sessions.borrow();
    let copied = sessions.of(to);
    ev.delivery.sessions.retain(|c| {
        !copied
            .iter()
            .any(|s| enabled(s) && std::ptr::eq(s.conn.as_ptr(), Rc::as_ptr(c)))
    });
    Flow::Continue
}

/// `Deliver(Message, Any)`: some resources of the recipient received the message; the others
/// with carbons on get a `<received/>` copy (XEP-0280 §6) — once: not again for a message
/// handed back by stream management.
fn copy_received(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if !ev.delivery.any_available || ev.delivery.redelivered {
        return Flow::Continue;
    }
    let Some(to) = ev.to.as_ref() else {
        return Flow::Continue;
    };
    let owner = bare_of(to);
    let delivered = &ev.delivery.sessions;
    received(server, &owner, &ev.stanza, |s| {
        delivered
            .iter()
            .any(|c| std::ptr::eq(s.conn.as_ptr(), Rc::as_ptr(c)))
    });
    Flow::Continue
}

/// §4: a resource enables or disables carbons for itself.
fn set_enabled(iq: &Incoming, on: bool) -> IqResult {
    let from = iq.from.as_ref().ok_or(Condition::NotAuthorized)?;
    if iq
        .to
        .as_ref()
        .is_some_and(|t| t.to_bare() != from.to_bare() && t.node().is_some())
    {
        let text = "carbons are set on your own account";
        return Err(StanzaError::new(Condition::Forbidden, text));
    }
    if let Some(s) = iq.server().sessions.borrow_mut().get_mut(from) {
        s.ext.set(Carbons(on));
    }
    Ok(None)
}

/// Per-session state (`Session::ext`): the resource enabled carbons.
struct Carbons(bool);

fn enabled(s: &Session) -> bool {
    s.ext.get::<Carbons>().is_some_and(|c| c.0)
}

/// XEP-0386 §4: carbons enabled in the same round trip as the bind.
fn inline_enable(server: &Rc<Server>, e: &mut Bind2Request) {
    if e.request.get_child("enable", NS).is_some()
        && let Some(s) = server.sessions.borrow_mut().get_mut(&e.jid)
    {
        s.ext.set(Carbons(true));
    }
}

/// Whether `el` gets carbon copies.
pub fn eligible(el: &Element) -> bool {
    let kind = el.get_attr("type").unwrap_or("normal");
    let typed = kind == "chat" || (kind == "normal" && el.get_child("body", ns::CLIENT).is_some());
    typed
        && el.get_child("private", NS).is_none()
        && el.get_child("no-copy", ns::HINTS).is_none()
        && el.get_child("received", NS).is_none()
        && el.get_child("sent", NS).is_none()
        && !el
            .elements()
            .any(|c| c.name == "result" && c.get_child("forwarded", FORWARD).is_some())
}

fn wrap(direction: &str, account: &str, to: &FullJid, el: &Element) -> Element {
    Element::stanza("message")
        .attr("from", account)
        .attr("to", to.as_str())
        .attr("type", el.get_attr("type").unwrap_or("normal"))
        .child(
            Element::new(direction, NS).child(Element::new("forwarded", FORWARD).child(el.clone())),
        )
        .child(Element::new("no-copy", ns::HINTS))
}

/// Sends copies of `el` (which must be [`eligible`]) to the carbon-enabled sessions among
/// `sessions` (those of the account `account`) except those `skip` names: the resources that
/// sent or already received it. Allocates nothing when no session wants a copy, the usual case
/// on the path of every routed message.
fn copy(
    server: &Rc<Server>,
    direction: &str,
    account: &str,
    el: &Element,
    sessions: impl FnOnce(&Sessions) -> &[Session],
    skip: impl Fn(&Session) -> bool,
) {
    // Collected first: sending must not happen with the session table borrowed.
    let targets: Vec<_> = sessions(&server.sessions.borrow())
        .iter()
        .filter(|s| enabled(s) && s.priority.is_some() && !skip(s))
        .filter_map(|s| s.connection().map(|c| (s.jid.clone(), c)))
        .collect();
    for (jid, conn) in targets {
        conn.send(&wrap(direction, account, &jid, el));
    }
}

/// Some resources of `account` received `el`: the others get a `<received/>` copy. `delivered`
/// tells the sessions that did receive it.
fn received(
    server: &Rc<Server>,
    account: &BareJid,
    el: &Element,
    delivered: impl Fn(&Session) -> bool,
) {
    if eligible(el) {
        copy(
            server,
            "received",
            account.as_str(),
            el,
            |s| s.of(account),
            delivered,
        );
    }
}

/// The resource `from` sent `el`: the account's other resources get a `<sent/>` copy.
fn sent(server: &Rc<Server>, from: &FullJid, el: &Element) {
    if eligible(el) {
        let account = Sessions::bare_str(from);
        copy(
            server,
            "sent",
            account,
            el,
            |s| s.of_account(from),
            |s| s.jid == *from,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility() {
        let body = || Element::new("body", ns::CLIENT).text("x");
        assert!(eligible(&Element::stanza("message").attr("type", "chat")));
        assert!(eligible(&Element::stanza("message").child(body())));
        assert!(!eligible(&Element::stanza("message")));
        assert!(!eligible(
            &Element::stanza("message")
                .attr("type", "groupchat")
                .child(body())
        ));
        assert!(!eligible(
            &Element::stanza("message")
                .attr("type", "chat")
                .child(Element::new("private", NS))
        ));
        assert!(!eligible(
            &Element::stanza("message")
                .attr("type", "chat")
                .child(Element::new("no-copy", ns::HINTS))
        ));
    }
}
