//! XEP-0054 vcard-temp and the server side of XEP-0153 vCard-based avatars.
//!
//! * Get (§3.1, §3.2): no `to` or one's own bare JID gives one's own vCard; another local
//!   account's bare JID gives that account's vCard. No vCard stored: `item-not-found`; no such
//!   account: `service-unavailable` (RFC 6121 §8.5.1); the server's own domain has none
//!   (`service-unavailable`).
//! * Set (§3.3): only one's own vCard (else `forbidden`); the element is stored whole, as XML
//!   text, replacing the previous one. A vCard larger than `quotas.vcard_max_bytes` (serialised,
//!   photo included; 256 KiB by default) is refused with `not-acceptable` (type `modify`: the
//!   client has to send a smaller one; the XEP names no condition for it).
//! * XEP-0153 §4: the SHA-1 of the decoded PHOTO/BINVAL is computed on set and kept with the
//!   vCard; [`photo_hash`] serves it (cached in memory, per account). A BINVAL that is not
//!   base64 gets `bad-request`.
//! * XEP-0153 on the clients' behalf, as ejabberd's mod_vcard_xupdate does: available presence
//!   of an account with a vCard that carries no `<x xmlns='vcard-temp:x:update'/>` gets one
//!   from the server ([`add_photo_update`], called by presence.rs wherever such presence leaves
//!   the server); one the client put in is left alone. A set that changes the hash has the
//!   account's available resources broadcast their presence again, with the new hash.

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::core::account::{Addressee, addressee};
use crate::core::photo::{photo_hash, set_hash};
use crate::core::stanza::Condition;
use crate::core::{Incoming, Module, PhotoChanged};
use crate::xml::{Element, ns, parse};

pub fn install(m: &mut Module) {
    m.iqs().rule(ns::VCARD, "vCard").get(get).set(set);
}

/// Reads run once the writes queued so far are committed: a get right behind a set (from the
/// same client or any other) sees the new vCard.
fn get(iq: Incoming) {
    let server = iq.server().clone();
    server.store.after_commit(move || get_now(iq));
}

fn get_now(iq: Incoming) {
    let account = match addressee(&iq) {
        Addressee::Unaddressed | Addressee::Own => iq.account(),
        Addressee::Server => None,
        Addressee::Other(bare) => Some(bare).filter(|b| iq.server().account_exists(b)),
    };
    let Some(account) = account else {
        return iq.fail(Condition::ServiceUnavailable, "");
    };
    let server = iq.server().clone();
    let stored = server
        .store
        .account_id_of(&account)
        .and_then(|id| match id {
            Some(id) => server.store.vcard(id),
            None => Ok(None),
        });
    match stored {
        Ok(Some(v)) => match parse::element(v.xml.as_bytes(), &parse::Scope::new()) {
            Ok(el) => iq.result(Some(el)),
            Err(e) => {
                tracing::error!(%account, "stored vCard does not parse: {e}");
                iq.fail(Condition::InternalServerError, "");
            }
        },
        Ok(None) => iq.fail(Condition::ItemNotFound, "no vCard"),
        Err(e) => {
            tracing::error!(%account, "store error reading vCard: {e}");
            iq.fail(Condition::InternalServerError, "");
        }
    }
}

fn set(iq: Incoming) {
    let account = match addressee(&iq) {
        Addressee::Unaddressed | Addressee::Own => iq.account(),
        Addressee::Server | Addressee::Other(_) => None,
    };
    let Some(account) = account else {
        return iq.fail(Condition::Forbidden, "only your own vCard can be set");
    };
    let mut xml = Vec::new();
    iq.payload.write_to(&mut xml, "");
    let max = iq.server().config.quotas.vcard_max_bytes;
    if xml.len() > max {
        return iq.fail(
            Condition::NotAcceptable,
            &format!("a vCard may have at most {max} bytes; make the photo smaller"),
        );
    }
    let hash = match photo_sha1(&iq.payload) {
        Ok(h) => h,
        Err(()) => return iq.fail(Condition::BadRequest, "PHOTO/BINVAL is not base64"),
    };
    let xml = String::from_utf8_lossy(&xml).into_owned();
    let server = iq.server().clone();
    // Loaded into the cache now if it was not (a set is rare, presence is not), so that what
    // contacts were last told is known when the write is committed.
    photo_hash(&server, &account);
    let id = match server.store.account_id_of(&account) {
        Ok(Some(id)) => id,
        Ok(None) => return iq.fail(Condition::ItemNotFound, "no such account"),
        Err(e) => {
            tracing::error!(%account, "store error writing vCard: {e}");
            return iq.fail(Condition::InternalServerError, "");
        }
    };
    // Written by the store's writer thread; answered (and announced) once committed.
    let job_hash = hash.clone();
    server.store.write(
        move |tx| crate::store::xeps::set_vcard(tx, id, &xml, job_hash.as_deref()),
        move |done| match done {
            Ok(()) => {
                let server = iq.server().clone();
                let before = photo_hash(&server, &account);
                let after = Some(hash.unwrap_or_default());
                set_hash(&server, &account, after.clone());
                iq.result(None);
                // XEP-0153: contacts learn of the new avatar from presence.
                if before != after {
                    server
                        .hooks
                        .fire(&server, &mut PhotoChanged { user: account });
                }
            }
            Err(e) => {
                tracing::error!(%account, "store error writing vCard: {e}");
                iq.fail(Condition::InternalServerError, "");
            }
        },
    );
}

/// The hex SHA-1 of the decoded PHOTO/BINVAL of a vCard, `None` without one; `Err` when the
/// BINVAL is not base64.
fn photo_sha1(vcard: &Element) -> Result<Option<String>, ()> {
    let Some(binval) = vcard
        .get_child("PHOTO", ns::VCARD)
        .and_then(|p| p.get_child("BINVAL", ns::VCARD))
    else {
        return Ok(None);
    };
    // Base64 in vCards is often folded over lines.
    let b64: String = binval
        .text_content()
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if b64.is_empty() {
        return Ok(None);
    }
    let data = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ())?;
    let digest = Sha1::digest(&data);
    Ok(Some(digest.iter().map(|b| format!("{b:02x}")).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_hash_is_sha1_of_decoded_binval() {
        let v = |binval: &str| {
            Element::new("vCard", ns::VCARD).child(
                Element::new("PHOTO", ns::VCARD)
                    .child(Element::new("TYPE", ns::VCARD).text("image/png"))
                    .child(Element::new("BINVAL", ns::VCARD).text(binval)),
            )
        };
        // sha1("hello")
        assert_eq!(
            photo_sha1(&v("aGVs\n bG8=")).unwrap().as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
        assert_eq!(photo_sha1(&v("")).unwrap(), None);
        assert_eq!(photo_sha1(&Element::new("vCard", ns::VCARD)).unwrap(), None);
        assert!(photo_sha1(&v("not base64!")).is_err());
    }
}
