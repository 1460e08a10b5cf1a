//! Message delivery to local accounts (RFC 6121 §8.5.1–§8.5.3) and what the mailbox keeps of
//! it (XEP-0359 stanza ids; XEP-0160 offline storage through `offline.rs`; XEP-0334 hints).
//!
//! The router delivers a message for an online full JID itself and hands everything else for a
//! local account to [`deliver_to_bare`]:
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

use base64::Engine;
use jid::{BareJid, FullJid, Jid};
use rand::Rng;

use crate::core::stanza::stanza_error;
use crate::core::stanza::{Condition, ErrorType, error_reply};
use crate::server::Server;
use crate::store::mailbox::{Direction, NewEntry};
use crate::stream::Connection;
use crate::xml::{Element, Node, ns};

use super::offline;

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

/// Delivers a message for the local account `to` that no online full JID took (see the
/// module documentation). `from_conn` is the sender's stream, for error replies; `None` for
/// messages the server or a service emits.
pub fn deliver_to_bare(
    server: &Rc<Server>,
    from_conn: Option<&Connection>,
    to: &BareJid,
    mut el: Element,
) {
    let kind = Kind::of(&el);
    if kind == Kind::Error {
        // Never answered, never stored: no bounce loops (RFC 6120 §8.3.1).
        return;
    }
    let bounce = |el: &Element, cond: Condition| {
        if let (Some(conn), Some(reply)) = (from_conn, stanza_error(el, cond, "")) {
            conn.send(&reply);
        }
    };
    let account = match account_id(server, to) {
        Ok(Some(id)) => id,
        // RFC 6121 §8.5.1.
        Ok(None) => return bounce(&el, Condition::ServiceUnavailable),
        Err(e) => {
            tracing::error!(%to, "store error looking up account: {e}");
            return bounce(&el, Condition::InternalServerError);
        }
    };
    // Only a JID with a slash can have a resource: most messages are for bare JIDs, and need
    // no parsing here.
    let for_resource = el
        .get_attr("to")
        .filter(|t| t.contains('/'))
        .and_then(|t| Jid::new(t).ok())
        .is_some_and(|j| j.resource().is_some());
    // Handed back by the server (stream management's unacknowledged messages) with our
    // stanza id: archived already, and carbon-copied already to the resources with carbons on.
    let redelivered = from_conn.is_none() && own_stanza_id(&el, to).is_some();
    let copied = redelivered && super::carbons::eligible(&el);
    let (targets, any_available): (Vec<Rc<Connection>>, bool) = {
        let sessions = server.sessions.borrow();
        let list = sessions.of(to);
        let best = list
            .iter()
            .filter_map(|s| s.priority)
            .filter(|p| *p >= 0)
            .max();
        let chosen: Vec<_> = list
            .iter()
            .filter(|s| match (kind, s.priority) {
                (Kind::Headline, Some(p)) => p >= 0,
                (_, Some(p)) => Some(p) == best,
                (_, None) => false,
            })
            .collect();
        let any = !chosen.is_empty();
        let targets = chosen
            .into_iter()
            .filter(|s| !(copied && s.carbons))
            .filter_map(|s| s.connection())
            .collect();
        (targets, any)
    };
    match kind {
        Kind::Error => {}
        Kind::Groupchat => bounce(&el, Condition::ServiceUnavailable),
        Kind::Headline => {
            if !for_resource {
                for c in &targets {
                    c.send(&el);
                }
            }
        }
        Kind::Chat | Kind::Normal if any_available => {
            let entry = (archived_live(&el)
                && !redelivered
                && super::mam::archives_incoming(server, account, to, el.get_attr("from")))
            .then(|| archive_entry(to, account, &mut el, false));
            send_all(&targets, &el, entry.as_ref());
            if let Some(entry) = entry {
                offline::append(server, entry);
            }
            // XEP-0280: the account's other devices get <received/> copies (once: not again
            // for a redelivered message).
            if !redelivered {
                super::carbons::received(server, to, &el, |s| {
                    targets
                        .iter()
                        .any(|c| std::ptr::eq(s.conn.as_ptr(), Rc::as_ptr(c)))
                });
            }
        }
        Kind::Chat | Kind::Normal => {
            if !stored_offline(&el) {
                return;
            }
            // Handed back by stream management: already in the archive, so the same row
            // becomes pending again rather than a second copy being stored.
            if from_conn.is_none()
                && let Some(id) = own_stanza_id(&el, to)
                && offline::put_back(server, to, account, id)
            {
                return;
            }
            let entry = archive_entry(to, account, &mut el, true);
            if let Err(full) = offline::store(server, to, entry)
                && let Some(conn) = from_conn
                && let Some(reply) = error_reply(
                    &el,
                    ErrorType::Wait,
                    Condition::ResourceConstraint,
                    Some(&full.to_string()),
                )
            {
                conn.send(&reply);
            }
        }
    }
}

/// Delivers a message to the online session `to`, archiving it like [`deliver_to_bare`] does.
/// Gives the message back when `to` has no session. (For the router's full-JID path, so that
/// messages to full JIDs are archived and stamped too.)
pub fn deliver_to_full(server: &Rc<Server>, to: &FullJid, mut el: Element) -> Result<(), Element> {
    let Some(conn) = server
        .sessions
        .borrow()
        .get(to)
        .and_then(|s| s.connection())
    else {
        return Err(el);
    };
    let owner = to.clone().into_bare();
    let mut entry = None;
    if matches!(Kind::of(&el), Kind::Chat | Kind::Normal) && archived_live(&el) {
        match account_id(server, &owner) {
            Ok(Some(account))
                if super::mam::archives_incoming(server, account, &owner, el.get_attr("from")) =>
            {
                entry = Some(archive_entry(&owner, account, &mut el, false));
            }
            Ok(_) => {}
            Err(e) => tracing::error!(%owner, "store error looking up account: {e}"),
        }
    }
    send_all(std::slice::from_ref(&conn), &el, entry.as_ref());
    if let Some(entry) = entry {
        offline::append(server, entry);
    }
    super::carbons::received(server, &owner, &el, |s| s.jid == *to);
    Ok(())
}

fn account_id(server: &Server, bare: &BareJid) -> Result<Option<i64>, crate::store::StoreError> {
    let node = bare.node().map_or("", |n| n.as_str());
    server.store.account_id(node, bare.domain().as_str())
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

/// The XEP-0359 id `el` carries for `owner`'s archive, if any.
pub fn own_stanza_id<'a>(el: &'a Element, owner: &BareJid) -> Option<&'a str> {
    let by = owner.as_str();
    el.elements()
        .find(|c| c.is("stanza-id", ns::SID) && c.get_attr("by") == Some(by))
        .and_then(|c| c.get_attr("id"))
}

fn hint(el: &Element, name: &str) -> bool {
    el.get_child(name, ns::HINTS).is_some()
}

/// Worth a place in the archive when delivered live: content a user reads later.
fn archived_live(el: &Element) -> bool {
    if hint(el, "no-store") || hint(el, "no-permanent-store") {
        return false;
    }
    el.get_child("body", ns::CLIENT).is_some() || hint(el, "store")
}

/// Kept for a user who is offline: anything but a bare chat-state notification (or a message
/// without any payload), unless a hint says otherwise.
fn stored_offline(el: &Element) -> bool {
    if hint(el, "no-store") {
        return false;
    }
    hint(el, "store")
        || el.elements().any(|c| {
            !(c.ns == ns::CHATSTATES
                || c.ns == ns::HINTS
                || c.ns == ns::SID
                || c.is("thread", ns::CLIENT))
        })
}

/// Stamps `el` with a new XEP-0359 stanza id for `owner`'s mailbox and builds its row.
fn archive_entry(owner: &BareJid, account: i64, el: &mut Element, offline: bool) -> NewEntry {
    let by = owner.as_str();
    // XEP-0359 §5: a stanza id in our name that we did not add is a forgery.
    el.children.retain(|n| {
        !matches!(n, Node::Element(c) if c.is("stanza-id", ns::SID) && c.get_attr("by") == Some(by))
    });
    let stanza_id = new_stanza_id();
    el.push(
        Element::new("stanza-id", ns::SID)
            .attr("id", stanza_id.as_str())
            .attr("by", by),
    );
    let with = el
        .get_attr("from")
        .and_then(|f| Jid::new(f).ok())
        .map(|j| j.into_bare().into_inner())
        .unwrap_or_default();
    let mut xml = Vec::with_capacity(256);
    // With its xmlns, so the row stands on its own.
    el.write_to(&mut xml, "");
    NewEntry {
        account,
        stanza_id,
        ts: crate::core::time::now_micros(),
        with,
        direction: Direction::In,
        offline,
        xml,
    }
}

/// The URL-safe base64 alphabet in ASCII order, so that encoded ids sort like their bytes.
const SORTED_ALPHABET: base64::alphabet::Alphabet = match base64::alphabet::Alphabet::new(
    "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz",
) {
    Ok(a) => a,
    Err(_) => panic!("invalid base64 alphabet"),
};
const SORTED_BASE64: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(&SORTED_ALPHABET, base64::engine::general_purpose::NO_PAD);

/// A XEP-0359 stanza id: 16 URL-safe characters encoding 96 bits, a 56-bit timestamp (Unix
/// microseconds, strictly increasing within the process) followed by 40 random bits.
///
/// Time first, in an order-preserving encoding, because every id goes into the mailbox's
/// `UNIQUE` index: ids that grow are inserted at the end of that index, on the few pages a
/// loop turn's batch already writes, where random ids would dirty (and write to the WAL, and
/// checkpoint) about one 4 KiB index page per message. Uniqueness does not depend on luck:
/// the timestamp never repeats within the process, and the random bits separate ids of
/// processes whose clocks went back. The timestamp says nothing the archive's own time stamps
/// do not; the ids are only ever shown to the account that owns the archive.
pub fn new_stanza_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(crate::core::time::now_micros()).unwrap_or(0);
    let mut micros = now;
    // Never fails: the closure always returns Some.
    let _ = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        micros = now.max(last + 1);
        Some(micros)
    });
    let mut bytes = [0u8; 12];
    bytes[..7].copy_from_slice(&micros.to_be_bytes()[1..]);
    rand::thread_rng().fill(&mut bytes[7..]);
    SORTED_BASE64.encode(bytes)
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
    fn what_is_kept() {
        let body = parse("<message type='chat'><body>hi</body></message>");
        assert!(archived_live(&body) && stored_offline(&body));
        let state = parse(
            "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread></message>",
        );
        assert!(!archived_live(&state) && !stored_offline(&state));
        let receipt = parse("<message><received xmlns='urn:xmpp:receipts' id='x'/></message>");
        assert!(!archived_live(&receipt) && stored_offline(&receipt));
        let no_store = parse("<message><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>");
        assert!(!archived_live(&no_store) && !stored_offline(&no_store));
        let store = parse(
            "<message><active xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/></message>",
        );
        assert!(archived_live(&store) && stored_offline(&store));
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
            let entry = archive_entry(&owner, 7, &mut el, false);
            let pieces = stream_form(&el, &entry.xml).unwrap();
            assert_eq!(pieces.concat(), el.to_bytes(), "{xml}");
        }
        let other = Element::new("message", "urn:other");
        let mut row = Vec::new();
        other.write_to(&mut row, "");
        assert!(stream_form(&other, &row).is_none());
    }

    #[test]
    fn stanza_ids_are_unique_and_grow() {
        let ids: Vec<String> = (0..1000).map(|_| new_stanza_id()).collect();
        for pair in ids.windows(2) {
            // Byte order is what the mailbox's index (and SQLite's BINARY collation) uses.
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
        }
        for id in &ids {
            assert_eq!(id.len(), 16);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }

    #[test]
    fn stanza_id_replaces_forgery_and_row_stands_alone() {
        let owner = BareJid::new("alice@localhost").unwrap();
        let mut el = parse(
            "<message from='bob@localhost/x' to='alice@localhost'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc' id='kept'/></message>",
        );
        let entry = archive_entry(&owner, 7, &mut el, true);
        let ids: Vec<_> = el
            .elements()
            .filter(|c| c.is("stanza-id", ns::SID))
            .map(|c| c.get_attr("id").unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["kept".to_owned(), entry.stanza_id.clone()]);
        assert_eq!(entry.with, "bob@localhost");
        assert_eq!(entry.stanza_id.len(), 16);
        let back =
            crate::xml::parse::element(&entry.xml, &crate::xml::parse::Scope::new()).unwrap();
        assert_eq!(back, el);
    }
}
