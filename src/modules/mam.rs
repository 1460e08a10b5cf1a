//! XEP-0313 Message Archive Management (urn:xmpp:mam:2) over the mailbox: the archive *is*
//! the mailbox, so messages stored while offline appear in it exactly once, with the same
//! XEP-0359 ids they were delivered with.
//!
//! Implemented: the query form (`with`, `start`, `end`, `before-id`, `after-id`), XEP-0059
//! paging forwards (`<after/>`) and backwards (`<before/>`, `<before>id</before>`), `<max/>`,
//! `<flip-page/>`, `<fin complete>`, `item-not-found` for unknown ids, the form's field list,
//! archive metadata (`urn:xmpp:mam:2#extended`), and preferences (`default` always/never/roster,
//! always/never lists) stored per account.

use jid::{BareJid, Jid};

use crate::iq::Incoming;
use crate::server::Server;
use crate::stanza::Condition;
use crate::store::mailbox::{self, Entry, Query};
use crate::stream::Stream;
use crate::xml::{Element, parse};

pub const NS: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";
const DATA: &str = "jabber:x:data";
const DELAY: &str = "urn:xmpp:delay";
/// Largest page, whatever the client asks.
const MAX_PAGE: usize = 250;
const DEFAULT_PAGE: usize = 50;

pub fn install(s: &mut Stream) {
    s.iqs().rule(NS, "query").get(form).set(query);
    s.iqs().rule(NS, "metadata").get(metadata);
    s.iqs().rule(NS, "prefs").get(prefs).set(prefs);
}

/// The account whose archive `iq` may read: only one's own.
fn owner(iq: &Incoming) -> Result<(BareJid, i64), (Condition, &'static str)> {
    let Some(from) = &iq.from else {
        return Err((Condition::NotAuthorized, ""));
    };
    let bare = from.to_bare();
    if let Some(to) = &iq.to
        && to.node().is_some()
        && to.to_bare() != bare
    {
        return Err((Condition::Forbidden, "only your own archive"));
    }
    let node = bare.node().map(|n| n.to_string()).unwrap_or_default();
    match iq.server().store.account_id(&node, bare.domain().as_str()) {
        Ok(Some(id)) => Ok((bare, id)),
        _ => Err((Condition::ItemNotFound, "no such account")),
    }
}

fn field(var: &str, kind: &str) -> Element {
    Element::new("field", DATA)
        .attr("var", var)
        .attr("type", kind)
}

fn form(iq: Incoming) {
    let x = Element::new("x", DATA)
        .attr("type", "form")
        .child(field("FORM_TYPE", "hidden").child(Element::new("value", DATA).text(NS)))
        .child(field("with", "jid-single"))
        .child(field("start", "text-single"))
        .child(field("end", "text-single"))
        .child(field("before-id", "text-single"))
        .child(field("after-id", "text-single"));
    iq.result(Some(Element::new("query", NS).child(x)));
}

/// Parses an XEP-0082 DateTime into Unix microseconds.
fn parse_time(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_micros() as i64)
}

fn form_fields(payload: &Element) -> Vec<(String, String)> {
    payload
        .get_child("x", DATA)
        .map(|x| {
            x.elements()
                .filter(|f| f.name == "field")
                .filter_map(|f| Some((f.get_attr("var")?.to_owned(), f.child_text("value", DATA)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn query(iq: Incoming) {
    let (owner, account) = match owner(&iq) {
        Ok(o) => o,
        Err((c, t)) => return iq.fail(c, t),
    };
    let server = iq.server().clone();
    if let Err(e) = crate::modules::offline::commit(&server) {
        tracing::error!("mailbox commit before archive query: {e}");
    }
    let conn = server.store.conn();
    let resolve = |sid: &str| mailbox::id_of(conn, account, sid).ok().flatten();

    let mut q = Query::default();
    let mut with_owned = None;
    for (var, value) in form_fields(&iq.payload) {
        match var.as_str() {
            "FORM_TYPE" if value != NS => {
                return iq.fail(Condition::BadRequest, "unknown FORM_TYPE");
            }
            "with" => match Jid::new(&value) {
                Ok(j) => with_owned = Some(j.to_bare().to_string()),
                Err(_) => return iq.fail(Condition::JidMalformed, "bad 'with'"),
            },
            "start" | "end" => match parse_time(&value) {
                Some(t) if var == "start" => q.start = Some(t),
                Some(t) => q.end = Some(t),
                None => return iq.fail(Condition::BadRequest, "bad timestamp"),
            },
            "after-id" => match resolve(&value) {
                Some(id) => q.after_id = Some(id),
                None => return iq.fail(Condition::ItemNotFound, "unknown after-id"),
            },
            "before-id" => match resolve(&value) {
                Some(id) => q.before_id = Some(id),
                None => return iq.fail(Condition::ItemNotFound, "unknown before-id"),
            },
            _ => {}
        }
    }
    q.with = with_owned.as_deref();

    let rsm = iq.payload.get_child("set", RSM);
    let max = rsm
        .and_then(|s| s.child_text("max", RSM))
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PAGE)
        .min(MAX_PAGE);
    if let Some(before) = rsm.and_then(|s| s.get_child("before", RSM)) {
        // <before/> alone: the last page; <before>id</before>: the page ending before id.
        q.newest_first = true;
        let id = before.text_content();
        if !id.trim().is_empty() {
            match resolve(id.trim()) {
                Some(id) => q.before_id = Some(q.before_id.map_or(id, |b| b.min(id))),
                None => return iq.fail(Condition::ItemNotFound, "unknown RSM before"),
            }
        }
    }
    if let Some(after) = rsm
        .and_then(|s| s.child_text("after", RSM))
        .filter(|a| !a.is_empty())
    {
        match resolve(&after) {
            Some(id) => q.after_id = Some(q.after_id.map_or(id, |a| a.max(id))),
            None => return iq.fail(Condition::ItemNotFound, "unknown RSM after"),
        }
    }
    // One more than asked tells whether the page is the last one.
    q.limit = max + 1;
    let mut rows = match mailbox::query(conn, account, &q) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("archive query: {e}");
            return iq.fail(Condition::InternalServerError, "");
        }
    };
    let complete = rows.len() <= max;
    if !complete {
        if q.newest_first {
            rows.remove(0);
        } else {
            rows.pop();
        }
    }
    if iq.payload.get_child("flip-page", NS).is_some() {
        rows.reverse();
    }
    let queryid = iq.payload.get_attr("queryid").map(str::to_owned);
    let Some(to) = iq.from.clone() else { return };
    let conn_out = iq.connection();
    for row in &rows {
        if let Some(msg) = result_message(&owner, &to.to_string(), queryid.as_deref(), row) {
            match &conn_out {
                Some(c) => c.send(&msg),
                None => {
                    server.deliver_to_full(&to, &msg);
                }
            }
        }
    }
    let mut set = Element::new("set", RSM);
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        set.push(Element::new("first", RSM).text(first.stanza_id.as_str()));
        set.push(Element::new("last", RSM).text(last.stanza_id.as_str()));
    }
    let mut fin = Element::new("fin", NS).child(set);
    if complete {
        fin.set_attr("complete", "true");
    }
    iq.result(Some(fin));
}

/// `<message><result queryid id><forwarded><delay/><message…/></forwarded></result></message>`.
fn result_message(
    owner: &BareJid,
    to: &str,
    queryid: Option<&str>,
    row: &Entry,
) -> Option<Element> {
    let original = parse::element(&row.xml, &Vec::new()).ok()?;
    let mut result = Element::new("result", NS).attr("id", row.stanza_id.as_str());
    if let Some(q) = queryid {
        result.set_attr("queryid", q);
    }
    result.push(
        Element::new("forwarded", FORWARD)
            .child(
                Element::new("delay", DELAY)
                    .attr("stamp", crate::modules::offline::datetime(row.ts)),
            )
            .child(original),
    );
    Some(
        Element::stanza("message")
            .attr("from", owner.to_string())
            .attr("to", to)
            .child(result),
    )
}

fn metadata(iq: Incoming) {
    let (_, account) = match owner(&iq) {
        Ok(o) => o,
        Err((c, t)) => return iq.fail(c, t),
    };
    let server = iq.server().clone();
    let _ = crate::modules::offline::commit(&server);
    let conn = server.store.conn();
    let edge = |newest| {
        mailbox::query(
            conn,
            account,
            &Query {
                limit: 1,
                newest_first: newest,
                ..Query::default()
            },
        )
        .ok()
        .and_then(|mut r| r.pop())
    };
    let mut md = Element::new("metadata", NS);
    if let (Some(first), Some(last)) = (edge(false), edge(true)) {
        let stamp = |e: &Entry| {
            Element::new("x", NS)
                .attr("id", e.stanza_id.as_str())
                .attr("timestamp", crate::modules::offline::datetime(e.ts))
        };
        let mut start = stamp(&first);
        start.name = "start".into();
        let mut end = stamp(&last);
        end.name = "end".into();
        md.push(start);
        md.push(end);
    }
    iq.result(Some(md));
}

/// Archive preferences (XEP-0313 §6). Stored per account; `default='never'` stops archiving
/// of live messages for the account (offline storage still happens: it is how they reach you).
fn prefs(iq: Incoming) {
    let (_, account) = match owner(&iq) {
        Ok(o) => o,
        Err((c, t)) => return iq.fail(c, t),
    };
    let server = iq.server().clone();
    if iq.kind == crate::iq::IqType::Set {
        let default = iq.payload.get_attr("default").unwrap_or("always");
        if !matches!(default, "always" | "never" | "roster") {
            return iq.fail(
                Condition::BadRequest,
                "default must be always, never or roster",
            );
        }
        let list = |name: &str| -> Vec<String> {
            iq.payload
                .get_child(name, NS)
                .map(|l| {
                    l.elements()
                        .map(|j| j.text_content().trim().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        server.ext::<PrefsCache>().0.borrow_mut().remove(&account);
        if let Err(e) = crate::store::mam::set_prefs(
            &server.store,
            account,
            default,
            &list("always"),
            &list("never"),
        ) {
            tracing::error!("storing archive prefs: {e}");
            return iq.fail(Condition::InternalServerError, "");
        }
    }
    let (default, always, never) = crate::store::mam::prefs(&server.store, account)
        .unwrap_or_else(|_| ("always".into(), vec![], vec![]));
    let jids = |name: &str, list: Vec<String>| {
        let mut e = Element::new(name, NS);
        for j in list {
            e.push(Element::new("jid", NS).text(j));
        }
        e
    };
    iq.result(Some(
        Element::new("prefs", NS)
            .attr("default", default)
            .child(jids("always", always))
            .child(jids("never", never)),
    ));
}

/// Keeps a copy of a message a local account sent in its own archive (direction out), with a
/// stanza id of that archive. The routed message itself is not changed.
pub fn archive_outgoing(server: &std::rc::Rc<Server>, from: &jid::FullJid, to: &Jid, el: &Element) {
    let kind = el.get_attr("type").unwrap_or("normal");
    if !matches!(kind, "chat" | "normal")
        || el.get_child("body", crate::xml::ns::CLIENT).is_none()
        || el.get_child("no-store", crate::xml::ns::HINTS).is_some()
        || el
            .get_child("no-permanent-store", crate::xml::ns::HINTS)
            .is_some()
    {
        return;
    }
    let owner = from.to_bare();
    let node = owner.node().map(|n| n.to_string()).unwrap_or_default();
    let Ok(Some(account)) = server.store.account_id(&node, owner.domain().as_str()) else {
        return;
    };
    let with = to.to_bare().to_string();
    if !archives(server, account, &with) {
        return;
    }
    let stanza_id = crate::modules::message::new_stanza_id();
    let mut copy = el.clone();
    copy.push(
        Element::new("stanza-id", crate::xml::ns::SID)
            .attr("id", stanza_id.as_str())
            .attr("by", owner.to_string()),
    );
    let mut xml = Vec::with_capacity(256);
    copy.write_to(&mut xml, "");
    crate::modules::offline::append(
        server,
        mailbox::NewEntry {
            account,
            stanza_id,
            ts: crate::modules::offline::now_micros(),
            with,
            direction: mailbox::Direction::Out,
            offline: false,
            xml,
        },
    );
}

/// XEP-0313 preferences of an account: the default (`always`, `never`, `roster`), the JIDs
/// always archived and the JIDs never archived.
type Prefs = (String, Vec<String>, Vec<String>);

/// Preferences per account, cached: consulted for every archived message.
#[derive(Default)]
struct PrefsCache(std::cell::RefCell<std::collections::HashMap<i64, Prefs>>);

/// Whether `account` archives live messages exchanged with `with` (its preferences).
pub fn archives(server: &Server, account: i64, with: &str) -> bool {
    let cache = server.ext::<PrefsCache>();
    let mut cache = cache.0.borrow_mut();
    let (default, always, never) = match cache.entry(account) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            match crate::store::mam::prefs(&server.store, account) {
                Ok(p) => v.insert(p),
                // Archiving is the safe side when the preferences cannot be read.
                Err(_) => return true,
            }
        }
    };
    if always.iter().any(|j| j == with) {
        true
    } else if never.iter().any(|j| j == with) {
        false
    } else {
        default != "never"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_time("2010-06-07T00:00:00.500Z"),
            Some(1_275_868_800_500_000)
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
