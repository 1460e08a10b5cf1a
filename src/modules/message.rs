//! Message delivery to local accounts (RFC 6121 §8.5.1–§8.5.3) and what the mailbox keeps of
//! it (XEP-0359 stanza ids; XEP-0160 offline storage through `offline.rs`; XEP-0334 hints).
//!
//! This module's hooks on `Deliver(Message, Bare|Full)` choose the sessions and send; the
//! archive (mam.rs), carbons (carbons.rs) and offline storage (offline.rs) hook the same points
//! (see [`CHOOSE`]). What happens, by type:
//!
//! | type       | no such account     | available resources (priority ≥ 0)   | none available        |
//! |------------|---------------------|---------------------------------------|-----------------------|
//! | normal     | service-unavailable | those of highest priority             | offline storage       |
//! | chat       | service-unavailable | those of highest priority             | offline storage       |
//! | headline   | service-unavailable | all of them                           | dropped               |
//! | groupchat  | service-unavailable | service-unavailable                   | service-unavailable   |
//! | error      | dropped             | dropped                               | dropped               |
//!
//! A message for a full JID whose resource is not online is handled as if sent to the bare JID
//! (RFC 6121 §8.5.3.2.1 allows that for chat; for normal it asks to drop or bounce — we store
//! it like Prosody does, since clients address normal messages to full JIDs too), except that a
//! headline for a resource that is gone is dropped. Resources with a negative priority never
//! get messages for the bare JID (§8.5.2.1.1).
//!
//! Messages with content for the user (chat and normal, with a body or a `<store/>` hint) are
//! archived in the recipient's mailbox with a server-assigned
//! `<stanza-id xmlns='urn:xmpp:sid:0' by='user@domain' id='…'/>` when delivered live too;
//! one a sender forged in the recipient's name is removed first (XEP-0359 §5); one the server
//! hands back (stream management's unacknowledged messages) is kept and not archived twice:
//! delivered live again it is not archived again, and stored offline its archive row becomes
//! pending again (a new row only if offline delivery has already passed that row). Offline storage
//! keeps every chat or normal message except bare chat-state notifications (XEP-0085 §5.6) and
//! messages with a `<no-store/>` hint.

use std::rc::Rc;

use jid::Jid;
use smallvec::SmallVec;

use crate::core::mailbox::own_stanza_id;
use crate::core::stanza::Condition;
use crate::core::{Connection, Flow, Module, Name, Point, Routed, Server, To, account};
use crate::store::mailbox::NewEntry;
use crate::xml::{Element, ns};

/// RFC 6121 §5.2.2 message types; anything unknown counts as normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Chat,
    Groupchat,
    Headline,
    Error,
}

impl Kind {
    pub fn of(el: &Element) -> Kind {
        match el.get_attr("type") {
            Some("chat") => Kind::Chat,
            Some("groupchat") => Kind::Groupchat,
            Some("headline") => Kind::Headline,
            Some("error") => Kind::Error,
            _ => Kind::Normal,
        }
    }
}

/// Priorities on `Deliver(Message, Bare|Full)`: this module chooses the sessions first, the
/// archive (mam.rs, 50) stamps the message, this module sends it (0), carbons (−50) copy it,
/// offline storage (offline.rs, −100) keeps what no resource took, and this module's last hook
/// ends the chain.
pub const CHOOSE: i32 = 100;
pub const SEND: i32 = 0;
pub const DONE: i32 = -1000;

pub fn install(m: &mut Module) {
    m.hook(Point::Deliver(Name::Message, To::Full), CHOOSE, choose_full);
    m.hook(Point::Deliver(Name::Message, To::Bare), CHOOSE, choose_bare);
    m.hook(Point::Deliver(Name::Message, To::Full), SEND, send);
    m.hook(Point::Deliver(Name::Message, To::Bare), SEND, send);
    m.hook(Point::Deliver(Name::Message, To::Full), DONE, done);
    m.hook(Point::Deliver(Name::Message, To::Bare), DONE, done);
}

/// A message for a full JID goes to that session; when it has none, it is handled as if sent
/// to the bare JID (see the module documentation).
fn choose_full(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let conn = ev.to_full().and_then(|to| {
        server
            .sessions
            .borrow()
            .get(to)
            .and_then(|s| s.connection())
    });
    match conn {
        Some(conn) => {
            ev.delivery.sessions.push(conn);
            ev.delivery.any_available = true;
            Flow::Continue
        }
        None => {
            // `into_bare` reuses the JID's string (`to_bare` would format a new one).
            if let Some(Ok(full)) = ev.to.take().map(Jid::try_into_full) {
                ev.to = Some(Jid::from(full.into_bare()));
            }
            ev.class = To::Bare;
            server
                .hooks
                .run(server, Point::Deliver(Name::Message, To::Bare), ev);
            Flow::Handled
        }
    }
}

/// A message for a local account's bare JID: which of its resources get it (RFC 6121 §8.5.2).
fn choose_bare(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let kind = Kind::of(&ev.stanza);
    if kind == Kind::Error {
        // Never answered, never stored: no bounce loops (RFC 6120 §8.3.1).
        return Flow::Handled;
    }
    let Some(to) = ev.to_bare() else {
        return Flow::Continue;
    };
    let account = match account::id(server, to) {
        Ok(Some(id)) => id,
        // RFC 6121 §8.5.1.
        Ok(None) => {
            ev.bounce(Condition::ServiceUnavailable, "");
            return Flow::Handled;
        }
        Err(e) => {
            tracing::error!(%to, "store error looking up account: {e}");
            ev.bounce(Condition::InternalServerError, "");
            return Flow::Handled;
        }
    };
    // Handed back by the server (stream management's unacknowledged messages) with our
    // stanza id: archived already, and carbon-copied already to the resources with carbons on.
    let redelivered =
        matches!(ev.origin, crate::core::Origin::Local) && own_stanza_id(&ev.stanza, to).is_some();
    let (targets, any_available) = {
        let sessions = server.sessions.borrow();
        let list = sessions.of(to);
        let best = list
            .iter()
            .filter_map(|s| s.priority)
            .filter(|p| *p >= 0)
            .max();
        let chosen = list.iter().filter(|s| match (kind, s.priority) {
            (Kind::Headline, Some(p)) => p >= 0,
            (_, Some(p)) => Some(p) == best,
            (_, None) => false,
        });
        let mut any = false;
        let targets: SmallVec<[Rc<Connection>; 2]> = chosen
            .inspect(|_| any = true)
            .filter_map(|s| s.connection())
            .collect();
        (targets, any)
    };
    match kind {
        Kind::Error => Flow::Handled,
        Kind::Groupchat => {
            ev.bounce(Condition::ServiceUnavailable, "");
            Flow::Handled
        }
        Kind::Headline => {
            // Only a JID with a slash can have a resource: most messages are for bare JIDs,
            // and need no parsing here. A headline for a resource that is gone is dropped.
            let for_resource = ev
                .stanza
                .get_attr("to")
                .filter(|t| t.contains('/'))
                .and_then(|t| Jid::new(t).ok())
                .is_some_and(|j| j.resource().is_some());
            if !for_resource {
                for c in &targets {
                    c.send(&ev.stanza);
                }
            }
            Flow::Handled
        }
        Kind::Chat | Kind::Normal => {
            ev.delivery.account = Some(account);
            ev.delivery.redelivered = redelivered;
            ev.delivery.any_available = any_available;
            ev.delivery.sessions = targets;
            Flow::Continue
        }
    }
}

/// Sends the message to the chosen sessions, and queues its archive row if the archive stamped
/// one.
fn send(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if !ev.delivery.any_available {
        return Flow::Continue;
    }
    send_all(
        &ev.delivery.sessions,
        &ev.stanza,
        ev.delivery.entry.as_ref(),
    );
    if let Some(entry) = ev.delivery.entry.take() {
        server.store.queue_mailbox(entry);
    }
    Flow::Continue
}

fn done(_: &Rc<Server>, _: &mut Routed<'_>) -> Flow {
    Flow::Handled
}

/// Sends `el` to `targets`. When `entry` is its mailbox row, the row's XML (serialised from
/// `el` just before) is reused rather than serialising `el` again for the streams.
fn send_all(targets: &[Rc<Connection>], el: &Element, entry: Option<&NewEntry>) {
    match entry.and_then(|e| stream_form(el, &e.xml)) {
        Some(pieces) => targets.iter().for_each(|c| c.send_serialised(el, pieces)),
        None => targets.iter().for_each(|c| c.send(el)),
    }
}

/// `row`, the serialisation of `el` that stands on its own (`el.write_to(_, "")`, as the
/// mailbox keeps it), as a top-level stanza of a client stream (`el.to_bytes()`): the same bytes
/// without the `jabber:client` declaration, which `Element::write_to` puts right after the
/// name. `None` for anything else.
fn stream_form<'a>(el: &Element, row: &'a [u8]) -> Option<[&'a [u8]; 2]> {
    const DECLARATION: &[u8] = b" xmlns=\"jabber:client\"";
    if el.ns != ns::CLIENT {
        return None;
    }
    let at = 1 + el.name.len();
    let end = at + DECLARATION.len();
    (row.get(at..end) == Some(DECLARATION)).then(|| [&row[..at], &row[end..]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use jid::BareJid;

    fn parse(s: &str) -> Element {
        crate::xml::parse::element(
            s.as_bytes(),
            &crate::xml::parse::Scope::with_default(ns::CLIENT),
        )
        .unwrap()
    }

    #[test]
    fn row_serialisation_serves_the_streams() {
        let owner = BareJid::new("alice@localhost").unwrap();
        for xml in [
            "<message from='bob@localhost/x' to='alice@localhost' type='chat' id='1'><body>a &amp; b</body></message>",
            "<message><x xmlns='urn:x'><y/></x></message>",
            "<message xml:lang='de' to='alice@localhost'/>",
        ] {
            let mut el = parse(xml);
            let entry = crate::core::mailbox::stamp(&owner, 7, &mut el, false);
            let pieces = stream_form(&el, &entry.xml).unwrap();
            assert_eq!(pieces.concat(), el.to_bytes(), "{xml}");
        }
        let other = Element::new("message", "urn:other");
        let mut row = Vec::new();
        other.write_to(&mut row, "");
        assert!(stream_form(&other, &row).is_none());
    }
}
