//! XEP-0012 Last Activity.
//!
//! * §5 server query (no `to`, or a hosted domain): `seconds` is the server's uptime.
//! * §4 offline user query (an account's bare JID): `seconds='0'` while the account has an
//!   available resource, else the seconds since its last session ended (recorded by
//!   [`session_ended`]) with the status text of that moment if one was recorded. Only the
//!   owner and entities allowed to see the account's presence may ask (§4, §8); others get
//!   `forbidden`, and an account that does not exist `service-unavailable` (RFC 6121 §8.5.1).
//!   An account that never logged out has nothing to tell: `item-not-found`.
//!
//! Full JIDs (§6, idle time) are the clients' business; the router delivers those.

use std::rc::Rc;

use jid::FullJid;

use crate::core::Incoming;
use crate::core::Module;
use crate::core::roster::may_see_presence;
use crate::core::stanza::Condition;
use crate::core::{Server, SessionEnded};
use crate::xml::{Element, ns};

use crate::core::account::{Addressee, addressee};

pub fn install(s: &mut Module) {
    s.on(10, |server, e: &mut SessionEnded| {
        session_ended(server, &e.jid)
    });
    s.iqs().rule(ns::LAST, "query").get(get);
}

fn get(iq: Incoming) {
    let account = match addressee(&iq) {
        Addressee::Unaddressed | Addressee::Server => {
            let q = Element::new("query", ns::LAST)
                .attr("seconds", iq.server().uptime().as_secs().to_string());
            return iq.result(Some(q));
        }
        Addressee::Own => match iq.account() {
            Some(a) => a,
            None => return iq.fail(Condition::Forbidden, ""),
        },
        Addressee::Other(bare) => {
            if !iq.server().account_exists(&bare) {
                return iq.fail(Condition::ServiceUnavailable, "");
            }
            let allowed = iq
                .account()
                .is_some_and(|me| may_see_presence(iq.server(), &bare, &me));
            if !allowed {
                return iq.fail(
                    Condition::Forbidden,
                    "last activity is shown to contacts with a presence subscription",
                );
            }
            bare
        }
    };
    let server = iq.server().clone();
    let online = server
        .sessions
        .borrow()
        .of(&account)
        .iter()
        .any(|s| s.priority.is_some());
    if online {
        return iq.result(Some(Element::new("query", ns::LAST).attr("seconds", "0")));
    }
    let logout = server
        .store
        .account_id_of(&account)
        .and_then(|id| match id {
            Some(id) => server.store.last_logout(id),
            None => Ok(None),
        });
    match logout {
        Ok(Some((at, status))) => {
            let secs = crate::core::time::now_secs().saturating_sub(at).max(0);
            let mut q = Element::new("query", ns::LAST).attr("seconds", secs.to_string());
            if let Some(s) = status.filter(|s| !s.is_empty()) {
                q = q.text(s);
            }
            iq.result(Some(q));
        }
        Ok(None) => iq.fail(Condition::ItemNotFound, "no logout recorded"),
        Err(e) => {
            tracing::error!(%account, "store error reading last activity: {e}");
            iq.fail(Condition::InternalServerError, "");
        }
    }
}

/// Records the time the account's last session ended. Call it whenever a session ends (before
/// or after it is removed from the session table): it writes only when `jid` was the account's
/// last session.
fn session_ended(server: &Rc<Server>, jid: &FullJid) {
    let bare = jid.to_bare();
    let others = server
        .sessions
        .borrow()
        .of(&bare)
        .iter()
        .any(|s| s.jid != *jid);
    if others {
        return;
    }
    match server.store.account_id_of(&bare) {
        // Written by the store's writer thread: a logout does not wait for the disk.
        Ok(Some(id)) => {
            let at = crate::core::time::now_secs();
            server.store.write(
                move |tx| Ok(crate::store::xeps::set_last_logout(tx, id, at, None)?),
                move |done| {
                    if let Err(e) = done {
                        tracing::error!(%bare, "store error recording last logout: {e}");
                    }
                },
            );
        }
        // Deleted meanwhile (XEP-0077 cancellation): nothing to remember.
        Ok(None) => {}
        Err(e) => tracing::error!(%bare, "store error recording last logout: {e}"),
    }
}
