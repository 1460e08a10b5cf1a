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
//! Also home of [`addressee`], which the other modules of this folder use to tell requests to
//! the server from requests to an account.

use std::collections::BTreeSet;

use jid::BareJid;

use crate::core::stanza::Condition;
use crate::iq::Incoming;
use crate::stream::Stream;
use crate::xml::{Element, ns};

/// Features the server answers on behalf of an account at its bare JID.
const ACCOUNT_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::LAST,
    ns::VCARD,
    super::mam::NS,
];

pub fn install(s: &mut Stream) {
    s.iqs().rule(ns::DISCO_INFO, "query").get(info);
    s.iqs().rule(ns::DISCO_ITEMS, "query").get(items);
}

/// Whom an IQ handed to a rule is addressed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addressee {
    /// No `to`: the server, acting for the sender's account (RFC 6120 §10.3.3). Each protocol
    /// decides whether that means the server or the account.
    Unaddressed,
    /// A hosted domain.
    Server,
    /// The sender's own bare JID.
    Own,
    /// Another local account's bare JID (which may not exist).
    Other(BareJid),
}

/// Classifies the `to` of a request handed to a rule (rules only get IQs for the server or
/// for bare JIDs on hosted domains).
pub fn addressee(iq: &Incoming) -> Addressee {
    let Some(to) = &iq.to else {
        return Addressee::Unaddressed;
    };
    let bare = to.to_bare();
    if bare.node().is_none() {
        return Addressee::Server;
    }
    if iq.account().as_ref() == Some(&bare) {
        Addressee::Own
    } else {
        Addressee::Other(bare)
    }
}

fn info(iq: Incoming) {
    let addressee = addressee(&iq);
    if let Some(node) = node(&iq) {
        // An account's nodes are its PEP nodes (XEP-0060 §5.3); the server has none.
        let owner = match &addressee {
            Addressee::Unaddressed | Addressee::Server => None,
            Addressee::Own => iq.account(),
            Addressee::Other(bare) => Some(bare.clone()),
        };
        let found = owner.zip(iq.account()).and_then(|(owner, requester)| {
            super::pep::disco_node_info(iq.server(), &owner, &requester, node)
        });
        return match found {
            Some(q) => iq.result(Some(q)),
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
            for f in server_features(iq.server().stream.session_stage()) {
                q.push(Element::new("feature", ns::DISCO_INFO).attr("var", f));
            }
            iq.result(Some(q));
        }
        Addressee::Unaddressed | Addressee::Own => iq.result(Some(account_info())),
        Addressee::Other(bare) => {
            if may_discover(&iq, &bare) {
                iq.result(Some(account_info()));
            } else {
                iq.fail(Condition::ServiceUnavailable, "");
            }
        }
    }
}

fn items(iq: Incoming) {
    if has_node(&iq) {
        return iq.fail(Condition::ItemNotFound, "no such node");
    }
    // An account's items are the PEP nodes the requester may access (XEP-0060 §5.2).
    let pep_items = |iq: &Incoming, owner: &BareJid| {
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        if let Some(requester) = iq.account() {
            for item in super::pep::disco_items(iq.server(), owner, &requester) {
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
pub fn server_features(stage: &crate::stream::Stage) -> BTreeSet<&str> {
    stage
        .rules()
        .namespaces()
        .chain(stage.disco_features())
        .collect()
}

/// What an account's bare JID answers: the account, its PEP service (XEP-0163 §8.1) and its
/// message archive (XEP-0313 §7).
fn account_info() -> Element {
    let mut q = Element::new("query", ns::DISCO_INFO)
        .child(
            Element::new("identity", ns::DISCO_INFO)
                .attr("category", "account")
                .attr("type", "registered"),
        )
        .child(super::pep::account_identity());
    let features: BTreeSet<&str> = ACCOUNT_FEATURES
        .iter()
        .chain(super::pep::account_features())
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
    iq.server().account_exists(account)
        && super::last::may_see_presence(iq.server(), account, &requester)
}
