//! The transport's only way into the user's roster: wockd owns the roster, so legacy
//! contacts are written as items directly (`modules::roster::update`, which stores, bumps the
//! version and pushes to interested resources). Kept as a thin adapter so the transport could
//! switch to XEP-0356/0321 when running as a component.

use jid::BareJid;

use crate::core::roster;
use crate::server::Server;
use crate::store::roster::Subscription;

/// Adds or updates `contact` in `owner`'s roster with subscription `both` (or `to`), keeping
/// a name and groups the user set themselves.
pub fn set_item(
    server: &Server,
    owner: &BareJid,
    contact: &str,
    name: &str,
    groups: &[String],
    subscription: &str,
) {
    let Ok(contact) = BareJid::new(contact) else {
        tracing::warn!(%contact, "not a valid JID; roster item not written");
        return;
    };
    let sub = match subscription {
        "to" => Subscription::To,
        "from" => Subscription::From,
        "none" => Subscription::None,
        _ => Subscription::Both,
    };
    let name = (!name.is_empty()).then(|| name.to_owned());
    roster::update(server, owner, &contact, |row| {
        let fresh = !row.in_roster;
        row.in_roster = true;
        if fresh || row.name.is_none() {
            row.name.clone_from(&name);
        }
        if fresh || row.groups.is_empty() {
            row.groups = groups.to_vec();
        }
        row.subscription = sub;
        row.ask = false;
        row.pending_in = None;
    });
}

/// Removes `contact` from `owner`'s roster.
pub fn remove_item(server: &Server, owner: &BareJid, contact: &str) {
    let Ok(contact) = BareJid::new(contact) else {
        return;
    };
    roster::update(server, owner, &contact, |row| {
        row.in_roster = false;
        row.subscription = Subscription::None;
        row.ask = false;
        row.pending_in = None;
        row.approved = false;
    });
}

/// Records a subscription request from `contact` (re-sent at each login until answered).
pub fn pending_in(
    server: &Server,
    owner: &BareJid,
    contact: &BareJid,
    stanza: &crate::xml::Element,
) {
    roster::update(server, owner, contact, |row| {
        row.pending_in = Some(stanza.to_string())
    });
}
