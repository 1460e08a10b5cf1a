//! The table of bound resources: bare JID → its sessions.

use foldhash::HashMap;
use std::rc::{Rc, Weak};

use jid::{BareJid, FullJid};

use crate::stream::Connection;

/// One bound resource.
pub struct Session {
    pub jid: FullJid,
    pub conn: Weak<Connection>,
    /// Presence priority; `None` until the resource sends initial presence (not available).
    pub priority: Option<i8>,
    /// The last available presence the resource broadcast (sent again to new subscribers),
    /// as the client sent it: the XEP-0153 photo hash is added when it is sent out.
    pub presence: Option<crate::xml::Element>,
    /// What modules keep per session (carbons on, roster requested…), one value per type.
    pub ext: SessionExt,
}

/// A typed per-session extension map: each module keeps its per-session state under its own
/// type instead of a field here. A short list, not a hash map: a session holds a handful of
/// values, and reading one (on the path of every routed message) is a scan of a few type ids.
#[derive(Default)]
pub struct SessionExt(Vec<(std::any::TypeId, Box<dyn std::any::Any>)>);

impl SessionExt {
    /// The value of type `T`, if one was set.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let id = std::any::TypeId::of::<T>();
        self.0
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// Sets the value of type `T`.
    pub fn set<T: 'static>(&mut self, value: T) {
        let id = std::any::TypeId::of::<T>();
        match self.0.iter_mut().find(|(t, _)| *t == id) {
            Some((_, v)) => *v = Box::new(value),
            None => self.0.push((id, Box::new(value))),
        }
    }
}

impl Session {
    pub fn connection(&self) -> Option<Rc<Connection>> {
        self.conn.upgrade()
    }
}

/// Sessions by bare JID. Keyed by the bare JID's string, so that lookups by a full JID (one or
/// more per routed stanza) borrow its bare part instead of allocating a `BareJid`.
#[derive(Default)]
pub struct Sessions {
    by_bare: HashMap<String, Vec<Session>>,
}

impl Sessions {
    /// The bare part of `jid` (`node@domain`), borrowed: a full JID's normalised string is the
    /// bare JID, a slash and the resource.
    pub fn bare_str(jid: &FullJid) -> &str {
        let s = jid.as_str();
        &s[..s.len() - jid.resource().as_str().len() - 1]
    }

    /// Adds a session; returns the connection it replaces (same full JID), if any.
    pub fn bind(&mut self, jid: FullJid, conn: &Rc<Connection>) -> Option<Rc<Connection>> {
        let list = self
            .by_bare
            .entry(Self::bare_str(&jid).to_owned())
            .or_default();
        let old = list
            .iter()
            .position(|s| s.jid == jid)
            .map(|i| list.remove(i))
            .and_then(|s| s.conn.upgrade());
        list.push(Session {
            jid,
            conn: Rc::downgrade(conn),
            priority: None,
            presence: None,
            ext: SessionExt::default(),
        });
        old
    }

    /// Points an existing session at another connection (XEP-0198 resumption).
    pub fn rebind(&mut self, jid: &FullJid, conn: &Rc<Connection>) {
        if let Some(s) = self.get_mut(jid) {
            s.conn = Rc::downgrade(conn);
        }
    }

    /// Removes the session of `conn` (if it is still the one bound to `jid`).
    pub fn unbind(&mut self, jid: &FullJid, conn_id: u64) -> bool {
        let bare = Self::bare_str(jid);
        let Some(list) = self.by_bare.get_mut(bare) else {
            return false;
        };
        let before = list.len();
        list.retain(|s| !(s.jid == *jid && s.conn.upgrade().is_none_or(|c| c.id == conn_id)));
        let removed = list.len() != before;
        if list.is_empty() {
            self.by_bare.remove(bare);
        }
        removed
    }

    pub fn get(&self, jid: &FullJid) -> Option<&Session> {
        self.by_bare
            .get(Self::bare_str(jid))?
            .iter()
            .find(|s| s.jid == *jid)
    }

    pub fn get_mut(&mut self, jid: &FullJid) -> Option<&mut Session> {
        self.by_bare
            .get_mut(Self::bare_str(jid))?
            .iter_mut()
            .find(|s| s.jid == *jid)
    }

    pub fn of(&self, bare: &BareJid) -> &[Session] {
        self.by_bare
            .get(bare.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The sessions of `jid`'s account (`jid` among them if it is bound).
    pub fn of_account(&self, jid: &FullJid) -> &[Session] {
        self.by_bare
            .get(Self::bare_str(jid))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The streams of `bare`'s available resources (sent initial presence, not unavailable
    /// since).
    pub fn available_connections(&self, bare: &BareJid) -> Vec<Rc<Connection>> {
        self.of(bare)
            .iter()
            .filter(|s| s.priority.is_some())
            .filter_map(Session::connection)
            .collect()
    }

    /// The available resources of `bare`, with their streams.
    pub fn available(&self, bare: &BareJid) -> Vec<(FullJid, Rc<Connection>)> {
        self.of(bare)
            .iter()
            .filter(|s| s.priority.is_some())
            .filter_map(|s| Some((s.jid.clone(), s.connection()?)))
            .collect()
    }

    /// True when `bare` has at least one available resource.
    pub fn is_available(&self, bare: &BareJid) -> bool {
        self.of(bare).iter().any(|s| s.priority.is_some())
    }

    pub fn all(&self) -> impl Iterator<Item = &Session> {
        self.by_bare.values().flatten()
    }

    pub fn count(&self) -> usize {
        self.by_bare.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_part_of_full_jids() {
        for (full, bare) in [
            ("alice@example.org/phone", "alice@example.org"),
            ("example.org/a/b", "example.org"),
            ("x@y/z@w/", "x@y"),
        ] {
            let full = FullJid::new(full).unwrap();
            assert_eq!(Sessions::bare_str(&full), bare);
            assert_eq!(Sessions::bare_str(&full), full.to_bare().as_str());
        }
    }
}
