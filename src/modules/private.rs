//! XEP-0049 Private XML Storage (`jabber:iq:private`), for one's own account only.
//!
//! * Set: every child of `<query/>` is stored under its (namespace, element name), replacing
//!   what was there; at least one child is required (`not-acceptable`).
//! * Get: exactly one child names what to fetch (none: `not-acceptable`; several:
//!   `bad-request`); the answer carries the stored element, or the empty request element when
//!   nothing is stored.
//! * Reserved namespaces (`jabber:*`, `http://jabber.org/*`, `vcard-temp`) are refused with
//!   `not-acceptable`, as the XEP allows; requests addressed to anyone but the sender's own
//!   account get `forbidden` (the XEP's preferred condition).
//! * Quotas (`[quotas]`): an account holds at most `private_max_items` items and
//!   `private_max_bytes` bytes of serialised XML; a set that would go beyond either stores
//!   nothing and gets `resource-constraint` (type `wait`: it fits once the client stores less),
//!   the XEP naming no condition for it.

use crate::core::Incoming;
use crate::core::Module;
use crate::core::stanza::Condition;
use crate::store::xeps::PrivateXmlError;
use crate::xml::{Element, ns, parse};

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
    s.iqs().rule(ns::PRIVATE, "query").get(get).set(set);
}

fn reserved(namespace: &str) -> bool {
    namespace.starts_with("jabber:")
        || namespace.starts_with("http://jabber.org/")
        || namespace == ns::VCARD
}

/// The account id of the sender when the request is for its own account; else the request
/// has been answered.
fn own_account(iq: Incoming) -> Option<(Incoming, i64)> {
    if !matches!(addressee(&iq), Addressee::Unaddressed | Addressee::Own) {
        iq.fail(Condition::Forbidden, "private data belongs to its owner");
        return None;
    }
    let id = iq.account().map(|a| iq.server().store.account_id_of(&a));
    match id {
        Some(Ok(Some(id))) => Some((iq, id)),
        Some(Err(e)) => {
            tracing::error!("store error looking up account: {e}");
            iq.fail(Condition::InternalServerError, "");
            None
        }
        _ => {
            iq.fail(Condition::Forbidden, "");
            None
        }
    }
}

fn get(iq: Incoming) {
    let Some((iq, account)) = own_account(iq) else {
        return;
    };
    let (wanted, more) = {
        let mut children = iq.payload.elements();
        (children.next().cloned(), children.next().is_some())
    };
    let Some(wanted) = wanted else {
        return iq.fail(Condition::NotAcceptable, "name the element to fetch");
    };
    if more {
        return iq.fail(Condition::BadRequest, "fetch one namespace at a time");
    }
    if reserved(&wanted.ns) {
        return iq.fail(Condition::NotAcceptable, "reserved namespace");
    }
    let stored = iq
        .server()
        .store
        .private_xml(account, &wanted.ns, &wanted.name);
    let el = match stored {
        Ok(Some(xml)) => match parse::element(xml.as_bytes(), &parse::Scope::new()) {
            Ok(el) => el,
            Err(e) => {
                tracing::error!("stored private XML does not parse: {e}");
                return iq.fail(Condition::InternalServerError, "");
            }
        },
        // Nothing stored: the request's element comes back empty.
        Ok(None) => Element::new(wanted.name.as_str(), wanted.ns.as_str()),
        Err(e) => {
            tracing::error!("store error reading private XML: {e}");
            return iq.fail(Condition::InternalServerError, "");
        }
    };
    iq.result(Some(Element::new("query", ns::PRIVATE).child(el)));
}

fn set(iq: Incoming) {
    let Some((iq, account)) = own_account(iq) else {
        return;
    };
    if iq.payload.elements().any(|c| reserved(&c.ns)) {
        return iq.fail(Condition::NotAcceptable, "reserved namespace");
    }
    let items: Vec<_> = iq
        .payload
        .elements()
        .map(|child| {
            let mut xml = Vec::new();
            child.write_to(&mut xml, "");
            (
                child.ns.clone(),
                child.name.clone(),
                String::from_utf8_lossy(&xml).into_owned(),
            )
        })
        .collect();
    if items.is_empty() {
        return iq.fail(Condition::NotAcceptable, "nothing to store");
    }
    let quotas = &iq.server().config.quotas;
    let (max_items, max_bytes) = (quotas.private_max_items, quotas.private_max_bytes);
    match iq
        .server()
        .store
        .set_private_xml(account, &items, max_items, max_bytes)
    {
        Ok(()) => iq.result(None),
        Err(PrivateXmlError::Quota { .. }) => iq.fail(
            Condition::ResourceConstraint,
            &format!(
                "private storage is limited to {max_items} items and {max_bytes} bytes per account"
            ),
        ),
        Err(PrivateXmlError::Store(e)) => {
            tracing::error!("store error writing private XML: {e}");
            iq.fail(Condition::InternalServerError, "");
        }
    }
}
