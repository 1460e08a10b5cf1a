//! Message delivery to bare JIDs (RFC 6121 §8.5.2).

use std::rc::Rc;

use jid::BareJid;

use crate::server::Server;
use crate::stanza::Condition;
use crate::stream::Connection;
use crate::stream::negotiate::stanza_error;
use crate::xml::Element;

/// Delivers to the available resources with the highest non-negative priority.
pub fn deliver_to_bare(server: &Rc<Server>, from_conn: Option<&Connection>, to: &BareJid, el: Element) {
    let kind = el.get_attr("type").unwrap_or("normal");
    let targets: Vec<_> = {
        let sessions = server.sessions.borrow();
        let list = sessions.of(to);
        let best = list.iter().filter_map(|s| s.priority).filter(|p| *p >= 0).max();
        match best {
            Some(best) => list
                .iter()
                .filter(|s| s.priority == Some(best) || (kind == "headline" && s.priority.is_some_and(|p| p >= 0)))
                .filter_map(|s| s.connection())
                .collect(),
            None => Vec::new(),
        }
    };
    if !targets.is_empty() {
        for c in targets {
            c.send(&el);
        }
        return;
    }
    if !server.account_exists(to) {
        if kind != "error"
            && kind != "groupchat"
            && kind != "headline"
            && let (Some(conn), Some(reply)) = (from_conn, stanza_error(&el, Condition::ServiceUnavailable, ""))
        {
            conn.send(&reply);
        }
        return;
    }
    tracing::debug!(%to, "no available resource; message not delivered");
}
