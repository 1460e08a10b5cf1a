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

use crate::core::account::{Addressee, addressee};
use crate::core::stanza::{Condition, IqResult, StanzaError};
use crate::core::{Incoming, Module};
use crate::store::xeps::{PrivateXmlError, set_private_xml};
use crate::xml::{Element, ns, parse};

pub fn install(m: &mut Module) {
    m.iqs()
        .rule(ns::PRIVATE, "query")
        .get(|iq| {
            // Reads run once the writes queued so far are committed: a get right behind a
            // set sees what it stored.
            let server = iq.server().clone();
            server.store.after_commit(move || {
                let result = get(&iq);
                iq.answer(result);
            });
        })
        .set(set);
}

fn reserved(namespace: &str) -> bool {
    namespace.starts_with("jabber:")
        || namespace.starts_with("http://jabber.org/")
        || namespace == ns::VCARD
}

fn refuse(cond: Condition, text: &'static str) -> StanzaError {
    StanzaError::new(cond, text)
}

/// The account id of the sender when the request is for its own account.
fn own_account(iq: &Incoming) -> Result<i64, StanzaError> {
    if !matches!(addressee(iq), Addressee::Unaddressed | Addressee::Own) {
        return Err(refuse(
            Condition::Forbidden,
            "private data belongs to its owner",
        ));
    }
    let account = iq.account().ok_or(Condition::Forbidden)?;
    iq.server()
        .store
        .account_id_of(&account)?
        .ok_or_else(|| Condition::Forbidden.into())
}

fn get(iq: &Incoming) -> IqResult {
    let account = own_account(iq)?;
    let mut children = iq.payload.elements();
    let wanted = children
        .next()
        .ok_or_else(|| refuse(Condition::NotAcceptable, "name the element to fetch"))?;
    if children.next().is_some() {
        return Err(refuse(
            Condition::BadRequest,
            "fetch one namespace at a time",
        ));
    }
    if reserved(&wanted.ns) {
        return Err(refuse(Condition::NotAcceptable, "reserved namespace"));
    }
    let stored = iq
        .server()
        .store
        .private_xml(account, &wanted.ns, &wanted.name)?;
    let el = match stored {
        Some(xml) => parse::element(xml.as_bytes(), &parse::Scope::new()).map_err(|e| {
            tracing::error!("stored private XML does not parse: {e}");
            StanzaError::from(Condition::InternalServerError)
        })?,
        // Nothing stored: the request's element comes back empty.
        None => Element::new(wanted.name.as_str(), wanted.ns.as_str()),
    };
    Ok(Some(Element::new("query", ns::PRIVATE).child(el)))
}

fn set(iq: Incoming) {
    let (account, items) = match checked_set(&iq) {
        Ok(set) => set,
        Err(e) => return iq.fail_with(e),
    };
    let quotas = &iq.server().config.quotas;
    let (max_items, max_bytes) = (quotas.private_max_items, quotas.private_max_bytes);
    let server = iq.server().clone();
    // Written by the store's writer thread; answered once committed. `Ok(Err(()))`: the quota
    // refused it (nothing was stored).
    server.store.write(
        move |tx| match set_private_xml(tx, account, &items, max_items, max_bytes) {
            Ok(()) => Ok(Ok(())),
            Err(PrivateXmlError::Quota { .. }) => Ok(Err(())),
            Err(PrivateXmlError::Store(e)) => Err(e),
        },
        move |done| match done {
            Ok(Ok(())) => iq.result(None),
            Ok(Err(())) => iq.fail_with(StanzaError::new(
                Condition::ResourceConstraint,
                format!(
                    "private storage is limited to {max_items} items and {max_bytes} bytes \
                         per account"
                ),
            )),
            Err(e) => iq.fail_with(e.into()),
        },
    );
}

/// A stored item: namespace, element name, serialised XML.
type Item = (String, String, String);

/// The account and the items of a set, once checked.
fn checked_set(iq: &Incoming) -> Result<(i64, Vec<Item>), StanzaError> {
    let account = own_account(iq)?;
    if iq.payload.elements().any(|c| reserved(&c.ns)) {
        return Err(refuse(Condition::NotAcceptable, "reserved namespace"));
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
        return Err(refuse(Condition::NotAcceptable, "nothing to store"));
    }
    Ok((account, items))
}
