//! XEP-0352 Client State Indication: while a client says it is inactive (a phone in a pocket),
//! unimportant stanzas are held back and coalesced; anything important goes out at once, after
//! what was held, so order is kept.
//!
//! What counts as important follows Prosody's mod_csi_simple: IQs, nonzas, errors,
//! subscription requests, and messages a person would want to see now — with a body or a
//! subject, an encrypted payload (OMEMO, OpenPGP, XEP-0380), an invitation, a call
//! (XEP-0353), the user's own message sent from another device (a `<sent/>` carbon), a result
//! of the client's own archive query; a `<received/>` carbon counts as what it carries.
//! Groupchat messages with a body (mentions among them) are important like any other.
//! Unimportant: presence updates, and messages that carry only chat states, receipts, chat
//! markers or PEP notifications (`<event xmlns='…pubsub#event'>`).
//!
//! Coalescing, while held: one presence per sender (only the latest matters), and one PEP
//! notification per publisher and node for nodes whose single item is the current state
//! (avatar metadata, nickname, OMEMO device lists, tune, mood, activity, location); on other
//! nodes (bookmarks, where each item is one bookmark) one per publisher, node and item, so a
//! retraction replaces the publication of the same item but no other item's news is lost.
//!
//! State owned here ([`CsiState`], the connection's `csi` cell): whether the client is
//! inactive, and the stanzas held back meanwhile. The output path asks [`Connection::csi_inactive`]
//! and [`Connection::csi_hold`]; resumption takes the held stanzas with
//! [`Connection::csi_take_held`].

use super::Connection;
use crate::xml::{Element, ns};

pub const NS: &str = ns::CSI;
/// Held stanzas before the queue is flushed anyway (memory bound, like Prosody's 256).
const MAX_HELD: usize = 256;

const CARBONS: &str = ns::CARBONS;
const FORWARD: &str = ns::FORWARD;
const MAM: &str = ns::MAM;
const MUC_USER: &str = ns::MUC_USER;
/// XEP-0249 direct MUC invitations.
const CONFERENCE: &str = ns::CONFERENCE;
/// Namespaces whose payload means the message has content for the user: end-to-end encrypted
/// messages (OMEMO legacy and 2, OpenPGP for XMPP, legacy OpenPGP, XEP-0380 hints) and calls
/// (XEP-0353 Jingle Message Initiation).
const CONTENT: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
    "urn:xmpp:eme:0",
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle-message:1",
];
/// PEP nodes holding one item, the current state: a newer notification makes older ones moot.
const STATE_NODES: &[&str] = &[
    "urn:xmpp:avatar:metadata",
    "http://jabber.org/protocol/nick",
    "http://jabber.org/protocol/tune",
    "http://jabber.org/protocol/mood",
    "http://jabber.org/protocol/activity",
    "http://jabber.org/protocol/geoloc",
    "eu.siacs.conversations.axolotl.devicelist",
    "urn:xmpp:omemo:2:devices",
];

fn important(el: &Element) -> bool {
    match el.name.as_str() {
        "presence" => {
            // Subscription requests and errors are about the user, not about contacts' status.
            matches!(
                el.get_attr("type"),
                Some("subscribe" | "unsubscribe" | "subscribed" | "unsubscribed" | "error")
            )
        }
        "message" => important_message(el),
        _ => true,
    }
}

fn important_message(el: &Element) -> bool {
    if el.get_attr("type") == Some("error") {
        // A delivery failure of something the user sent.
        return true;
    }
    if el.get_child("sent", CARBONS).is_some() {
        // The user is writing from another device: this one may stop notifying.
        return true;
    }
    let carried = el
        .get_child("received", CARBONS)
        .and_then(|r| r.get_child("forwarded", FORWARD))
        .and_then(|f| f.get_child("message", ns::CLIENT));
    carried
        .unwrap_or(el)
        .elements()
        .any(|c| match (c.ns.as_str(), c.name.as_str()) {
            (ns::CLIENT, "body" | "subject") | (CONFERENCE, "x") | (MAM, "result") => true,
            (MUC_USER, "x") => c.get_child("invite", MUC_USER).is_some(),
            (other, _) => CONTENT.contains(&other),
        })
}

/// What makes a held stanza superseded by a newer one with the same key.
#[derive(PartialEq, Eq)]
enum Key<'a> {
    /// A presence update from this sender.
    Presence(Option<&'a str>),
    /// A PEP notification: publisher, node and (except on state nodes) the item.
    Pep(&'a str, &'a str, Option<&'a str>),
}

fn coalescing_key(el: &Element) -> Option<Key<'_>> {
    match el.name.as_str() {
        "presence" => Some(Key::Presence(el.get_attr("from"))),
        "message" => {
            // Only the plain case: one <items> with one <item> or <retract> (deletions, purges
            // and several items at once keep their place).
            let event = el.get_child("event", ns::PUBSUB_EVENT)?;
            let mut children = event.elements();
            let items = children.next().filter(|i| i.name == "items")?;
            let mut entries = items.elements();
            let entry = entries
                .next()
                .filter(|e| matches!(e.name.as_str(), "item" | "retract"))?;
            if children.next().is_some() || entries.next().is_some() {
                return None;
            }
            let node = items.get_attr("node")?;
            let item = if STATE_NODES.contains(&node) {
                None
            } else {
                Some(entry.get_attr("id")?)
            };
            Some(Key::Pep(el.get_attr("from")?, node, item))
        }
        _ => None,
    }
}

/// Per-connection client state indication.
#[derive(Default)]
pub(crate) struct CsiState {
    inactive: bool,
    held: Vec<Element>,
}

impl CsiState {
    /// Holds `el` back if it is unimportant, coalescing it with what it supersedes. `None`
    /// when it must go out now (after what is held); `Some(full)` when held, `full` once the
    /// queue reached its bound and must be flushed anyway.
    fn hold(&mut self, el: &Element) -> Option<bool> {
        if el.ns != ns::CLIENT || important(el) {
            return None;
        }
        if let Some(key) = coalescing_key(el) {
            self.held
                .retain(|h| coalescing_key(h).as_ref() != Some(&key));
        }
        self.held.push(el.clone());
        Some(self.held.len() >= MAX_HELD)
    }

    /// The stanzas held back, for a resumed stream to send (they were never sent, so stream
    /// management does not have them).
    fn take_held(&mut self) -> Vec<Element> {
        std::mem::take(&mut self.held)
    }
}

impl Connection {
    pub(crate) fn on_csi(&self, el: &Element) {
        match el.name.as_str() {
            "inactive" => self.csi.borrow_mut().inactive = true,
            "active" => {
                self.csi.borrow_mut().inactive = false;
                self.release_held();
            }
            _ => {}
        }
    }

    /// The client said it is inactive: [`send`](Self::send) offers stanzas to
    /// [`csi_hold`](Self::csi_hold).
    pub(super) fn csi_inactive(&self) -> bool {
        self.csi.borrow().inactive
    }

    /// Called by `send` for stanzas while the client is inactive. Returns true if `el` was
    /// held back.
    pub(super) fn csi_hold(&self, el: &Element) -> bool {
        let held = self.csi.borrow_mut().hold(el);
        match held {
            None => {
                self.release_held();
                false
            }
            Some(full) => {
                if full {
                    self.release_held();
                }
                true
            }
        }
    }

    /// The stanzas held back (see [`CsiState::take_held`]).
    pub(super) fn csi_take_held(&self) -> Vec<Element> {
        self.csi.borrow_mut().take_held()
    }

    fn release_held(&self) {
        let held = self.csi.borrow_mut().take_held();
        if held.is_empty() {
            return;
        }
        // Sent with the hold bypassed (the state is flipped for the duration).
        let was = std::mem::replace(&mut self.csi.borrow_mut().inactive, false);
        for el in &held {
            self.send(el);
        }
        self.csi.borrow_mut().inactive = was;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        crate::xml::parse::element(
            s.as_bytes(),
            &crate::xml::parse::Scope::with_default(ns::CLIENT),
        )
        .unwrap()
    }

    #[test]
    fn importance() {
        let p = Element::stanza("presence");
        assert!(!important(&p));
        assert!(important(
            &Element::stanza("presence").attr("type", "subscribe")
        ));
        assert!(important(&Element::stanza("iq")));
        for yes in [
            "<message type='chat'><body>hi</body></message>",
            "<message type='groupchat'><body>alice: look</body></message>",
            "<message type='groupchat'><subject>topic</subject></message>",
            "<message type='error'><error type='cancel'/></message>",
            "<message><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted></message>",
            "<message><encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>",
            "<message><x xmlns='jabber:x:conference' jid='room@muc'/></message>",
            "<message><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>",
            "<message><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>",
            "<message><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></sent></message>",
            "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client'><body>hi</body></message></forwarded></received></message>",
            "<message><result xmlns='urn:xmpp:mam:2' id='x'/></message>",
            // A notification that also carries a body is shown to the user.
            "<message type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'/><body>news</body></message>",
        ] {
            assert!(important(&parse(yes)), "{yes}");
        }
        for no in [
            "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message><received xmlns='urn:xmpp:receipts' id='x'/></message>",
            "<message><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>",
            "<message><x xmlns='http://jabber.org/protocol/muc#user'><status code='110'/></x></message>",
            "<message><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client'><paused xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></received></message>",
            "<message type='headline' from='bob@x'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
             <items node='urn:xmpp:avatar:metadata'><item id='h'/></items></event></message>",
        ] {
            assert!(!important(&parse(no)), "{no}");
        }
    }

    #[test]
    fn holding() {
        let mut csi = CsiState::default();
        assert_eq!(csi.hold(&parse("<message><body>hi</body></message>")), None);
        assert_eq!(csi.hold(&Element::new("r", "urn:xmpp:sm:3")), None);
        let p1 = Element::stanza("presence").attr("from", "bob@x/a");
        let p2 = Element::stanza("presence")
            .attr("from", "bob@x/a")
            .attr("id", "2");
        let p3 = Element::stanza("presence").attr("from", "carol@x/a");
        assert_eq!(csi.hold(&p1), Some(false));
        assert_eq!(csi.hold(&p3), Some(false));
        assert_eq!(csi.hold(&p2), Some(false));
        // The newer presence from bob replaces the older; order of the rest is kept.
        assert_eq!(csi.take_held(), vec![p3, p2]);
        assert!(csi.take_held().is_empty());
        for n in 1..MAX_HELD {
            let p = Element::stanza("presence").attr("from", format!("u{n}@x/a"));
            assert_eq!(csi.hold(&p), Some(false));
        }
        let last = Element::stanza("presence").attr("from", "last@x/a");
        assert_eq!(csi.hold(&last), Some(true), "full: flushed anyway");
        assert_eq!(csi.take_held().len(), MAX_HELD);
    }

    #[test]
    fn coalescing() {
        let event = |from: &str, node: &str, entry: &str| {
            parse(&format!(
                "<message type='headline' from='{from}'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <items node='{node}'>{entry}</items></event></message>"
            ))
        };
        let avatar1 = event("bob@x", "urn:xmpp:avatar:metadata", "<item id='h1'/>");
        let avatar2 = event("bob@x", "urn:xmpp:avatar:metadata", "<item id='h2'/>");
        let other = event("carol@x", "urn:xmpp:avatar:metadata", "<item id='h2'/>");
        let key = |e| coalescing_key(e).unwrap();
        // A state node: per publisher and node, whatever the item.
        assert!(key(&avatar1) == key(&avatar2));
        assert!(key(&avatar1) != key(&other));
        // Other nodes: per item; a retraction replaces the publication of the same item.
        let mark1 = event("a@x", "urn:xmpp:bookmarks:1", "<item id='r1@muc'/>");
        let mark2 = event("a@x", "urn:xmpp:bookmarks:1", "<item id='r2@muc'/>");
        let gone1 = event("a@x", "urn:xmpp:bookmarks:1", "<retract id='r1@muc'/>");
        assert!(key(&mark1) != key(&mark2));
        assert!(key(&mark1) == key(&gone1));
        // Several items at once, or a purge, keep their place.
        assert!(
            coalescing_key(&event(
                "a@x",
                "urn:xmpp:bookmarks:1",
                "<item id='1'/><item id='2'/>"
            ))
            .is_none()
        );
        assert!(
            coalescing_key(&parse(
                "<message from='a@x'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
                 <purge node='urn:xmpp:bookmarks:1'/></event></message>"
            ))
            .is_none()
        );
        let p = Element::stanza("presence").attr("from", "bob@x/a");
        assert!(coalescing_key(&p) == Some(Key::Presence(Some("bob@x/a"))));
        assert!(coalescing_key(&parse("<message><body>x</body></message>")).is_none());
    }
}
