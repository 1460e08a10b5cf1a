//! Which account a request is about: the one place that reads an IQ's addressing and looks up
//! an account's id.

use jid::BareJid;

use super::Server;
use crate::iq::Incoming;
use crate::store::StoreError;

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

/// The id of the local account `bare` (`None`: no such account).
pub fn id(server: &Server, bare: &BareJid) -> Result<Option<i64>, StoreError> {
    let node = bare.node().map_or("", |n| n.as_str());
    server.store.account_id(node, bare.domain().as_str())
}
