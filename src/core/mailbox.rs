//! The mailbox as modules see it: XEP-0359 stanza ids and the rows messages become. Rows are
//! queued with `Store::queue_mailbox` and committed by the store's writer thread in batches (see `store::writer`).

use jid::{BareJid, FullJid, Jid};
use rand::Rng;

use crate::store::mailbox::{Direction, NewEntry};
use crate::xml::{Element, Node, ns};

/// The XEP-0359 id `el` carries for `owner`'s archive, if any.
pub fn own_stanza_id<'a>(el: &'a Element, owner: &BareJid) -> Option<&'a str> {
    let by = owner.as_str();
    el.elements()
        .find(|c| c.is("stanza-id", ns::SID) && c.get_attr("by") == Some(by))
        .and_then(|c| c.get_attr("id"))
}

/// The first allocation of a row's XML: a chat message with a body and its stanza id is
/// 300–500 bytes, and growing a 256-byte buffer cost a reallocation per row.
pub const ROW_CAPACITY: usize = 640;

/// Stamps `el` with a new XEP-0359 stanza id for `owner`'s mailbox and builds its row.
pub fn stamp(owner: &BareJid, account: i64, el: &mut Element, offline: bool) -> NewEntry {
    stamp_from(owner, account, el, offline, None)
}

/// [`stamp`] for a message whose sender the caller knows (the full JID of the client that
/// sent it, which the router wrote into `from`): its bare JID is not parsed again.
pub fn stamp_from(
    owner: &BareJid,
    account: i64,
    el: &mut Element,
    offline: bool,
    sender: Option<&FullJid>,
) -> NewEntry {
    let by = owner.as_str();
    // XEP-0359 §5: a stanza id in our name that we did not add is a forgery.
    el.children.retain(|n| {
        !matches!(n, Node::Element(c) if c.is("stanza-id", ns::SID) && c.get_attr("by") == Some(by))
    });
    let (stanza_id, ts) = new_stanza_id();
    el.push(
        Element::new("stanza-id", ns::SID)
            .attr("id", stanza_id.as_str())
            .attr("by", by),
    );
    // A full JID's bare part ends at its first '/': no '/' in a localpart or a domain.
    let with = match sender.and_then(|j| j.as_str().split_once('/')) {
        Some((bare, _)) => bare.to_owned(),
        None => el
            .get_attr("from")
            .and_then(|f| Jid::new(f).ok())
            .map(|j| j.into_bare().into_inner())
            .unwrap_or_default(),
    };
    let mut xml = Vec::with_capacity(ROW_CAPACITY);
    // With its xmlns, so the row stands on its own.
    el.write_to(&mut xml, "");
    NewEntry {
        account,
        stanza_id,
        ts,
        with,
        direction: Direction::In,
        offline,
        xml,
    }
}

/// The URL-safe base64 alphabet in ASCII order, so that encoded ids sort like their bytes.
const SORTED_ALPHABET: &[u8; 64] =
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// Base64 of the 12 bytes of a stanza id in [`SORTED_ALPHABET`] (16 characters, no padding):
/// what the `base64` crate's engine gives (see the test), written out because the engine's
/// general path cost ~500 instructions per id, two ids per message.
fn encode_id(bytes: &[u8; 12]) -> String {
    let mut out = String::with_capacity(16);
    for chunk in bytes.chunks_exact(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b));
        for shift in [18, 12, 6, 0] {
            out.push(char::from(SORTED_ALPHABET[((n >> shift) & 63) as usize]));
        }
    }
    out
}

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
///
/// Returns the id and its timestamp, which is also the row's `ts` (one clock reading).
pub fn new_stanza_id() -> (String, i64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(super::time::now_micros()).unwrap_or(0);
    let mut micros = now;
    // Never fails: the closure always returns Some.
    let _ = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
        micros = now.max(last + 1);
        Some(micros)
    });
    let mut bytes = [0u8; 12];
    bytes[..7].copy_from_slice(&micros.to_be_bytes()[1..]);
    rand::thread_rng().fill(&mut bytes[7..]);
    (encode_id(&bytes), i64::try_from(micros).unwrap_or(i64::MAX))
}

fn hint(el: &Element, name: &str) -> bool {
    el.get_child(name, ns::HINTS).is_some()
}

/// Worth a place in the archive when delivered live: content a user reads later.
pub fn archived_live(el: &Element) -> bool {
    if hint(el, "no-store") || hint(el, "no-permanent-store") {
        return false;
    }
    el.get_child("body", ns::CLIENT).is_some() || hint(el, "store")
}

/// Kept for a user who is offline: anything but a bare chat-state notification (or a message
/// without any payload), unless a hint says otherwise.
pub fn stored_offline(el: &Element) -> bool {
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
    fn id_encoding_is_base64_in_the_sorted_alphabet() {
        use base64::Engine;
        let alphabet =
            base64::alphabet::Alphabet::new(std::str::from_utf8(SORTED_ALPHABET).unwrap()).unwrap();
        let engine =
            base64::engine::GeneralPurpose::new(&alphabet, base64::engine::general_purpose::NO_PAD);
        let mut bytes = [0u8; 12];
        for n in 0..2000u32 {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (n.wrapping_mul(2654435761).rotate_left(i as u32 * 3) >> (i % 4 * 8)) as u8;
            }
            if n == 1 {
                bytes = [0xFF; 12];
            }
            assert_eq!(encode_id(&bytes), engine.encode(bytes));
        }
    }

    #[test]
    fn stanza_ids_are_unique_and_grow() {
        let ids: Vec<String> = (0..1000).map(|_| new_stanza_id().0).collect();
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
        let entry = stamp(&owner, 7, &mut el, true);
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
