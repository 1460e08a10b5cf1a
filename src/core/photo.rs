//! XEP-0153 photo hashes of local accounts, as presence carries them: read from the vCard
//! store on first use and cached (cheap enough for every presence broadcast). The vCard module
//! updates the cache through [`set_hash`] and fires `PhotoChanged`.

use std::cell::RefCell;
use std::collections::HashMap;

use jid::BareJid;

use super::{AccountDeleted, Server};
use crate::xml::{Element, ns};

pub fn install(hooks: &super::Hooks) {
    hooks.on(0, |server, e: &mut AccountDeleted| {
        forget(server, &e.account)
    });
}

/// Photo hashes by account, as [`photo_hash`] returns them; filled on first use.
#[derive(Default)]
struct PhotoCache {
    hashes: RefCell<HashMap<BareJid, Option<String>>>,
}

/// The XEP-0153 hash to put in the account's presence (`<x xmlns='vcard-temp:x:update'>`):
/// `Some(hex SHA-1)` when its vCard has a photo, `Some("")` when it has a vCard without one
/// (an empty `<photo/>`: "no avatar"), `None` when it has no vCard (or is unknown), in which
/// case the server should add nothing. Cached: cheap enough for every presence broadcast.
pub fn photo_hash(server: &Server, account: &BareJid) -> Option<String> {
    let cache = server.ext::<PhotoCache>();
    if let Some(h) = cache.hashes.borrow().get(account) {
        return h.clone();
    }
    let loaded = server.store.account_id_of(account).and_then(|id| match id {
        Some(id) => server
            .store
            .vcard_photo_hash(id)
            .map(|h| Some(h.map(Option::unwrap_or_default))),
        None => Ok(None),
    });
    match loaded {
        // Only existing accounts are cached, so unknown JIDs cannot grow the cache.
        Ok(Some(h)) => {
            cache.hashes.borrow_mut().insert(account.clone(), h.clone());
            h
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(%account, "store error reading vCard photo hash: {e}");
            None
        }
    }
}

/// XEP-0153, on the client's behalf: adds `<x xmlns='vcard-temp:x:update'>` with the
/// account's [`photo_hash`] (`<photo>hex</photo>`, or an empty `<photo/>` for a vCard without
/// a photo) to `el`, available presence of `account`. Nothing is added when the account has no
/// vCard, and nothing is changed when `el` already has such an element (the client's own).
pub fn add_photo_update(server: &Server, account: &BareJid, el: &mut Element) {
    if el.get_child("x", ns::VCARD_UPDATE).is_some() {
        return;
    }
    let Some(hash) = photo_hash(server, account) else {
        return;
    };
    let mut photo = Element::new("photo", ns::VCARD_UPDATE);
    if !hash.is_empty() {
        photo = photo.text(hash);
    }
    el.push(Element::new("x", ns::VCARD_UPDATE).child(photo));
}

/// Drops what is cached for `account` (it was deleted).
fn forget(server: &Server, account: &BareJid) {
    server
        .ext::<PhotoCache>()
        .hashes
        .borrow_mut()
        .remove(account);
}

/// Records `account`'s new hash (the vCard module, after a vCard set).
pub fn set_hash(server: &Server, account: &BareJid, hash: Option<String>) {
    server
        .ext::<PhotoCache>()
        .hashes
        .borrow_mut()
        .insert(account.clone(), hash);
}
