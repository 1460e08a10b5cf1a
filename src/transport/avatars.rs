//! Legacy contacts' pictures as XMPP avatars: the buddy icon libpurple keeps for a contact is
//! served as the contact JID's vCard-temp `PHOTO` (XEP-0054), and its SHA-1 goes out in the
//! contact's presence (XEP-0153 `vcard-temp:x:update`), which is how Conversations, Dino and
//! Gajim notice a new picture and fetch it. A changed icon re-sends the contact's presence
//! (`buddy-icon-changed`, connected in `contacts.rs`).

use std::rc::Rc;

use base64::Engine as _;
use jid::{FullJid, Jid};
use sha1::{Digest, Sha1};

use super::purple::Account;
use super::{ServiceInfo, Transport, service};
use crate::core::stanza::Condition;
use crate::server::Server;
use crate::xml::Element;

pub const VCARD: &str = crate::xml::ns::VCARD;
pub const VCARD_UPDATE: &str = crate::xml::ns::VCARD_UPDATE;

/// The icon's bytes and its MIME type, copied out of libpurple.
fn icon(acc: Account, name: &str) -> Option<(Vec<u8>, &'static str)> {
    let (bytes, ext) = acc.buddy_icon(name)?;
    let mime = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        _ => "application/octet-stream",
    };
    Some((bytes, mime))
}

/// The XEP-0153 element for a contact's presence, if libpurple has a picture of them.
pub fn update_element(acc: Account, name: &str) -> Option<Element> {
    let (bytes, _) = icon(acc, name)?;
    let hash: String = Sha1::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(Element::new("x", VCARD_UPDATE).child(Element::new("photo", VCARD_UPDATE).text(hash)))
}

/// Answers a vCard-temp get to a contact JID: its display name and picture.
pub fn vcard(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, to: &Jid, el: &Element) {
    let node = to.node().map(|n| n.to_string()).unwrap_or_default();
    let t = Transport::get(server);
    let Some((id, name)) = t.resolve(&from.to_bare(), &info.domain, &node) else {
        return service::bounce(
            server,
            from,
            el,
            Condition::ItemNotFound,
            "no such contact on your accounts",
        );
    };
    let Some(acc) = t.legacy.borrow().get(&id).map(|l| l.account) else {
        return;
    };
    let mut card = Element::new("vCard", VCARD);
    let alias = acc
        .find_buddy(&name)
        .map(|b| super::text::line(&b.alias().unwrap_or_default()));
    card.push(
        Element::new("FN", VCARD).text(alias.filter(|a| !a.is_empty()).unwrap_or(name.clone())),
    );
    card.push(Element::new("NICKNAME", VCARD).text(name.clone()));
    if let Some((bytes, mime)) = icon(acc, &name) {
        card.push(
            Element::new("PHOTO", VCARD)
                .child(Element::new("TYPE", VCARD).text(mime))
                .child(
                    Element::new("BINVAL", VCARD)
                        .text(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                ),
        );
    }
    service::reply(server, from, el, card);
}
