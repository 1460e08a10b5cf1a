//! Presence (RFC 6121 §4): availability and priority of a session, directed presence.

use std::rc::Rc;

use jid::{BareJid, FullJid};

use crate::server::Server;
use crate::stream::Stream;
use crate::stream::Connection;
use crate::xml::{Element, ns};

pub fn install(_s: &mut Stream) {}

/// Presence without `to`: the session's own availability.
pub fn own_presence(server: &Rc<Server>, _conn: &Rc<Connection>, from: &FullJid, el: Element) {
    let kind = el.get_attr("type");
    let mut sessions = server.sessions.borrow_mut();
    let Some(s) = sessions.get_mut(from) else { return };
    match kind {
        None => {
            let prio = el
                .child_text("priority", ns::CLIENT)
                .and_then(|p| p.parse::<i8>().ok())
                .unwrap_or(0);
            s.priority = Some(prio);
        }
        Some("unavailable") => s.priority = None,
        _ => {}
    }
}

/// Directed presence to a bare JID goes to each of its available resources.
pub fn directed_to_bare(server: &Rc<Server>, _from: &FullJid, to: &BareJid, el: Element) {
    let targets: Vec<_> = server
        .sessions
        .borrow()
        .of(to)
        .iter()
        .filter(|s| s.priority.is_some())
        .filter_map(|s| s.connection())
        .collect();
    for c in targets {
        c.send(&el);
    }
}

/// A session ended while available.
pub fn session_gone(_server: &Rc<Server>, _jid: &FullJid) {}
