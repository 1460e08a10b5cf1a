//! XEP-0191 blocklists as routing consults them: cached in memory per account on first use
//! (the check runs for every routed stanza; the database is the source of truth across
//! restarts). The blocking protocol is `modules/blocking.rs`; presence and PEP consult
//! [`is_blocked`] too.

use foldhash::{HashMap, HashSet};
use std::cell::RefCell;

use jid::{BareJid, Jid};

use super::{AccountDeleted, Server};

#[derive(Default)]
struct Lists {
    /// Blocked JIDs (normalised strings) of the accounts looked at so far.
    lists: RefCell<HashMap<BareJid, HashSet<String>>>,
}

pub fn install(hooks: &super::Hooks) {
    hooks.on(0, |server, e: &mut AccountDeleted| {
        server.ext::<Lists>().lists.borrow_mut().remove(&e.account);
    });
}

/// Whether the local account `owner` blocked `other`.
pub fn is_blocked(server: &Server, owner: &BareJid, other: &Jid) -> bool {
    let state = server.ext::<Lists>();
    if let Some(list) = state.lists.borrow().get(owner) {
        return matches(list, other);
    }
    match load(server, owner) {
        Some(list) => {
            let hit = matches(&list, other);
            state.lists.borrow_mut().insert(owner.clone(), list);
            hit
        }
        None => false,
    }
}

/// The blocklist from the database; `None` (not cached) when `owner` is not an account, so
/// stanzas to made-up JIDs cannot grow the cache.
fn load(server: &Server, owner: &BareJid) -> Option<HashSet<String>> {
    let loaded = server.store.account_id_of(owner).and_then(|id| match id {
        Some(id) => server.store.blocklist(id).map(Some),
        None => Ok(None),
    });
    match loaded {
        Ok(list) => list.map(|l| l.into_iter().collect()),
        Err(e) => {
            tracing::error!(%owner, "store error reading blocklist: {e}");
            None
        }
    }
}

fn matches(list: &HashSet<String>, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let s = jid.as_str();
    // Node and domain cannot contain '/', so the first one starts the resource.
    let bare = s.split_once('/').map_or(s, |(b, _)| b);
    let domain = jid.domain().as_str();
    list.contains(s)
        || list.contains(bare)
        || list.contains(domain)
        || jid
            .resource()
            .is_some_and(|r| jid.node().is_some() && list.contains(&format!("{domain}/{r}")))
}

/// Changes `me`'s list in memory with `f`, loading it first if it is not cached. Call it when a
/// change is queued for the store (not when it is committed): routing then applies the change
/// at once, and the list read back ([`list`]) has it. `None` when `me` is not an account or
/// the store failed (logged).
pub fn update_cache(
    server: &Server,
    me: &BareJid,
    f: impl FnOnce(&mut HashSet<String>),
) -> Option<()> {
    let state = server.ext::<Lists>();
    let cached = state.lists.borrow().contains_key(me);
    if !cached {
        let list = load(server, me)?;
        state.lists.borrow_mut().insert(me.clone(), list);
    }
    let mut lists = state.lists.borrow_mut();
    f(lists.get_mut(me)?);
    Some(())
}

/// `owner`'s blocklist as routing applies it (changes queued for the store included), sorted;
/// `None` when `owner` is not an account or the store failed (logged).
pub fn list(server: &Server, owner: &BareJid) -> Option<Vec<String>> {
    let state = server.ext::<Lists>();
    let cached = state.lists.borrow().get(owner).cloned();
    let set = match cached {
        Some(set) => set,
        None => {
            let set = load(server, owner)?;
            state.lists.borrow_mut().insert(owner.clone(), set.clone());
            set
        }
    };
    let mut list: Vec<String> = set.into_iter().collect();
    list.sort();
    Some(list)
}

/// Drops `owner`'s cached list (a queued change failed to be stored): the next use reads the
/// store again.
pub fn forget(server: &Server, owner: &BareJid) {
    server.ext::<Lists>().lists.borrow_mut().remove(owner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jid_matching_follows_xep_0016() {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let j = |s: &str| Jid::new(s).unwrap();
        let full = list(&["romeo@montague.net/orchard"]);
        assert!(matches(&full, &j("romeo@montague.net/orchard")));
        assert!(!matches(&full, &j("romeo@montague.net/garden")));
        assert!(!matches(&full, &j("romeo@montague.net")));
        let bare = list(&["romeo@montague.net"]);
        assert!(matches(&bare, &j("romeo@montague.net/orchard")));
        assert!(matches(&bare, &j("romeo@montague.net")));
        assert!(!matches(&bare, &j("juliet@montague.net")));
        let domain = list(&["montague.net"]);
        assert!(matches(&domain, &j("romeo@montague.net/orchard")));
        assert!(matches(&domain, &j("montague.net")));
        assert!(!matches(&domain, &j("romeo@capulet.net")));
        let domres = list(&["montague.net/x"]);
        assert!(matches(&domres, &j("montague.net/x")));
        assert!(!matches(&domres, &j("montague.net")));
        assert!(matches(&domres, &j("romeo@montague.net/x")));
        assert!(!matches(&list(&[]), &j("a@b")));
    }
}
