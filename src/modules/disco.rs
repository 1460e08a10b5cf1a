//! XEP-0030 Service Discovery: `disco#info` (§3) and `disco#items` (§4).
//!
//! * The server (`to` = a hosted domain): identity `server/im`; features are the namespaces of
//!   every IQ rule of an authenticated session plus those registered with
//!   [`Stream::disco_feature`], so one registration both enables and advertises a feature.
//!   Items are the service domains (transports, torrent…).
//! * An account (its bare JID, or no `to` at all, which RFC 6120 §10.3.3 makes the sender's own
//!   account): identity `account/registered` and the features the server answers on the
//!   account's behalf; no items. Answered for the owner, and for others only when they may see
//!   the account's presence (a subscription); everyone else gets `service-unavailable`, the same
//!   answer as for an account that does not exist, so disco does not reveal which accounts do.
//! * Nodes (§3.2) are not used: a request naming one gets `item-not-found`.
//!
//! What an account answers beyond its identity comes from the modules that serve it, through
//! the `AccountDiscoInfo`, `AccountDiscoItems` and `AccountDiscoNode` events (PEP, MAM…), so
//! nothing is advertised that is not installed.

use std::collections::BTreeSet;

use jid::BareJid;

use crate::core::account::{Addressee, addressee};
use crate::core::roster::may_see_presence;
use crate::core::stanza::Condition;
use crate::core::{
    AccountDiscoInfo, AccountDiscoItems, AccountDiscoNode, Incoming, Module, ServiceDiscoInfo,
};
use crate::xml::{Element, ns};

/// Features the server answers on behalf of an account at its bare JID besides those the
/// modules add through `AccountDiscoInfo`.
const ACCOUNT_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::LAST, ns::VCARD];

pub fn install(s: &mut Module) {
    s.iqs().rule(ns::DISCO_INFO, "query").get(info);
    s.iqs().rule(ns::DISCO_ITEMS, "query").get(items);
}

/// Answers once the writes queued so far are committed: what an account's service reports
/// (PEP nodes) then includes a change its owner sent just before.
fn info(iq: Incoming) {
    let server = iq.server().clone();
    server.store.after_commit(move || info_now(iq));
}

fn info_now(iq: Incoming) {
    let addressee = addressee(&iq);
    if let Some(node) = node(&iq) {
        // An account's nodes are its PEP nodes (XEP-0060 §5.3); the server has none.
        let owner = match &addressee {
            Addressee::Unaddressed | Addressee::Server => None,
            Addressee::Own => iq.account(),
            Addressee::Other(bare) => Some(bare.clone()),
        };
        let found = owner.zip(iq.account()).and_then(|(owner, requester)| {
            let mut event = AccountDiscoNode {
                owner,
                requester,
                node: node.to_owned(),
                answer: None,
            };
            iq.server().hooks.fire(iq.server(), &mut event);
            event.answer
        });
        return match found {
            Some(Ok(q)) => iq.result(Some(q)),
            Some(Err(cond)) => iq.fail(cond, ""),
            None => iq.fail(Condition::ItemNotFound, "no such node"),
        };
    }
    match addressee {
        Addressee::Server => {
            let mut q = Element::new("query", ns::DISCO_INFO).child(
                Element::new("identity", ns::DISCO_INFO)
                    .attr("category", "server")
                    .attr("type", "im")
                    .attr("name", "wockd"),
            );
            let mut extra = ServiceDiscoInfo {
                features: Vec::new(),
            };
            iq.server().hooks.fire(iq.server(), &mut extra);
            let mut features = server_features(iq.server().stream.session_stage());
            features.extend(extra.features);
            for f in features {
                q.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
            }
            iq.result(Some(q));
        }
        Addressee::Unaddressed | Addressee::Own => {
            let q = iq.account().map(|own| account_info(&iq, own));
            iq.result(q.or_else(|| Some(Element::new("query", ns::DISCO_INFO))))
        }
        Addressee::Other(bare) => {
            if may_discover(&iq, &bare) {
                let q = account_info(&iq, bare);
                iq.result(Some(q));
            } else {
                iq.fail(Condition::ServiceUnavailable, "");
            }
        }
    }
}

/// Answers once the writes queued so far are committed (see [`info`]).
fn items(iq: Incoming) {
    let server = iq.server().clone();
    server.store.after_commit(move || items_now(iq));
}

fn items_now(iq: Incoming) {
    if has_node(&iq) {
        return iq.fail(Condition::ItemNotFound, "no such node");
    }
    // An account's items are the PEP nodes the requester may access (XEP-0060 §5.2).
    let pep_items = |iq: &Incoming, owner: &BareJid| {
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        if let Some(requester) = iq.account() {
            let mut event = AccountDiscoItems {
                owner: owner.clone(),
                requester,
                items: Vec::new(),
            };
            iq.server().hooks.fire(iq.server(), &mut event);
            for item in event.items {
                q.push(item);
            }
        }
        q
    };
    match addressee(&iq) {
        Addressee::Server => {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            for domain in iq.server().service_domains() {
                q.push(Element::new("item", ns::DISCO_ITEMS).attr("jid", domain));
            }
            iq.result(Some(q));
        }
        Addressee::Unaddressed | Addressee::Own => {
            let q = iq.account().map(|own| pep_items(&iq, &own));
            iq.result(q.or_else(|| Some(Element::new("query", ns::DISCO_ITEMS))))
        }
        Addressee::Other(bare) => {
            if may_discover(&iq, &bare) {
                let q = pep_items(&iq, &bare);
                iq.result(Some(q));
            } else {
                iq.fail(Condition::ServiceUnavailable, "");
            }
        }
    }
}

/// The server's features, sorted and without duplicates.
pub fn server_features(stage: &crate::core::Stage) -> BTreeSet<&str> {
    stage
        .rules()
        .namespaces()
        .chain(stage.disco_features())
        .collect()
}

/// What an account's bare JID answers: the account and what the modules add (its PEP service,
/// XEP-0163 §8.1; its message archive, XEP-0313 §7).
fn account_info(iq: &Incoming, owner: BareJid) -> Element {
    let requester = iq.account().unwrap_or_else(|| owner.clone());
    let mut event = AccountDiscoInfo {
        owner,
        requester,
        identities: Vec::new(),
        features: Vec::new(),
    };
    iq.server().hooks.fire(iq.server(), &mut event);
    let mut q = Element::new("query", ns::DISCO_INFO).child(
        Element::new("identity", ns::DISCO_INFO)
            .attr("category", "account")
            .attr("type", "registered"),
    );
    for identity in event.identities {
        q.push(identity);
    }
    let features: BTreeSet<&str> = ACCOUNT_FEATURES
        .iter()
        .chain(event.features.iter())
        .copied()
        .collect();
    for f in features {
        q.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
    }
    q
}

fn node(iq: &Incoming) -> Option<&str> {
    iq.payload.get_attr("node").filter(|n| !n.is_empty())
}

fn has_node(iq: &Incoming) -> bool {
    node(iq).is_some()
}

/// Another user may discover an existing account they are allowed to see the presence of.
fn may_discover(iq: &Incoming, account: &BareJid) -> bool {
    let Some(requester) = iq.account() else {
        return false;
    };
    iq.server().account_exists(account) && may_see_presence(iq.server(), account, &requester)
}
