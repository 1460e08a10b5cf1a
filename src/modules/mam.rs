//! XEP-0313 Message Archive Management (urn:xmpp:mam:2) over the mailbox: the archive *is*
//! the mailbox, so messages stored while offline appear in it exactly once, with the same
//! XEP-0359 ids they were delivered with.
//!
//! Implemented: the query form (`with`, `start`, `end`, `before-id`, `after-id`), XEP-0059
//! paging forwards (`<after/>`) and backwards (`<before/>`, `<before>id</before>`), `<max/>`,
//! `<flip-page/>`, `<fin complete>`, `item-not-found` for unknown ids, the form's field list,
//! archive metadata (`urn:xmpp:mam:2#extended`), and preferences (`default` always/never/roster,
//! always/never lists) stored per account.
//!
//! Preferences decide what is archived of the messages exchanged *live*: those a local account
//! sends ([`archive_outgoing`]) and those delivered to one of its online resources
//! ([`archives_incoming`], asked by the message module). A message stored because the account
//! had no available resource is always kept whatever the preferences say: the mailbox is how it
//! reaches the user (and, being in the mailbox, it is in the archive). The rules, for the other
//! party's JID: a full JID in a list matches that JID only, a bare JID every JID with that
//! bare JID; the more specific match wins, and `never` wins over `always` for equal matches;
//! with no match the default applies, `roster` archiving only with contacts in the account's
//! roster (and with the account itself).

use jid::{BareJid, Jid};

use std::rc::Rc;

use crate::core::mailbox::{ROW_CAPACITY, archived_live, new_stanza_id, stamp_from};
use crate::core::stanza::Condition;
use crate::core::{
    AccountDeleted, AccountDiscoInfo, Flow, Incoming, Module, Name, Point, Routed, Server, Tick,
    To, account, bare_of,
};
use crate::store::mailbox::{self, Entry, Query};
use crate::xml::{Element, ns, parse};

pub const NS: &str = ns::MAM;
const RSM: &str = ns::RSM;
const FORWARD: &str = ns::FORWARD;
const DATA: &str = ns::DATA_FORMS;
const DELAY: &str = ns::DELAY;
/// Largest page, whatever the client asks.
const MAX_PAGE: usize = 250;
const DEFAULT_PAGE: usize = 50;

pub fn install(m: &mut Module) {
    m.iqs().rule(NS, "query").get(form).set(query);
    m.iqs().rule(NS, "metadata").get(metadata);
    m.iqs().rule(NS, "prefs").get(prefs).set(prefs);
    m.hook(Point::Pre(Name::Message, To::Any), -50, archive_sent);
    // After the message module chose the sessions, before it sends: the stanza id goes out
    // with the message.
    m.hook(Point::Deliver(Name::Message, To::Any), 50, archive_received);
    m.on(0, |_, e: &mut AccountDiscoInfo| e.features.push(NS));
    m.on(0, |server, e: &mut AccountDeleted| {
        if let Some(id) = e.id {
            forget(server, id);
        }
    });
    m.on(0, |server, _: &mut Tick| housekeeping(server));
}

/// `Pre(Message, Any)`: what a local user sends goes into its own archive (direction out) —
/// if it goes somewhere.
fn archive_sent(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if let (Some(from), Some(to)) = (ev.sender(), ev.to.as_ref())
        && ev.reachable
    {
        archive_outgoing(server, from, to, &ev.stanza);
    }
    Flow::Continue
}

/// `Deliver(Message, Any)`: a message delivered live to a resource of the recipient is
/// archived, by its preferences, and stamped with the archive's XEP-0359 id (the message
/// module queues the row once it has sent the stamped message).
fn archive_received(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if !ev.delivery.any_available
        || ev.delivery.redelivered
        || matches!(ev.kind(), Some("groupchat" | "headline" | "error"))
        || !archived_live(&ev.stanza)
    {
        return Flow::Continue;
    }
    let Some(to) = ev.to.as_ref() else {
        return Flow::Continue;
    };
    let owner = bare_of(to);
    let account = match ev.delivery.account {
        Some(id) => id,
        None => match account::id(server, &owner) {
            Ok(Some(id)) => id,
            Ok(None) => return Flow::Continue,
            Err(e) => {
                tracing::error!(%owner, "store error looking up account: {e}");
                return Flow::Continue;
            }
        },
    };
    let sender = ev.sender();
    if archives_incoming(server, account, &owner, sender, ev.stanza.get_attr("from")) {
        ev.delivery.entry = Some(stamp_from(&owner, account, &mut ev.stanza, false, sender));
    }
    Flow::Continue
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

/// Parses an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, TZD `Z` or `±hh:mm`; taken as
/// UTC when missing) into Unix microseconds, with the length of the interval the text names:
/// `…:07Z` is a whole second, `…:07.250Z` a whole millisecond. `end` covers all of it, so a
/// delay stamp given out by the archive (milliseconds) finds its own message again.
fn parse_time(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    let (local, offset_secs) = match s.strip_suffix(['Z', 'z']) {
        Some(l) => (l, 0),
        None => match s.len().checked_sub(6).filter(|&i| s.is_char_boundary(i)) {
            Some(i) if matches!(s.as_bytes()[i], b'+' | b'-') => (&s[..i], offset(&s[i..])?),
            _ => (s, 0),
        },
    };
    let fraction_digits = local.split_once('.').map_or(0, |(_, f)| f.len()).min(6) as u32;
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    let micros = i64::try_from(d.as_micros()).ok()? - offset_secs * 1_000_000;
    Some((micros, 10i64.pow(6 - fraction_digits)))
}

/// `+hh:mm` or `-hh:mm` in seconds east of UTC.
fn offset(tzd: &str) -> Option<i64> {
    let (sign, rest) = tzd.split_at(1);
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    let secs = h * 3600 + m * 60;
    Some(if sign == "-" { -secs } else { secs })
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

/// Archive reads see every message routed before them: they run once the rows queued so far
/// are committed (at once when nothing waits).
fn after_queued_rows(iq: Incoming, read: fn(Incoming)) {
    let server = iq.server().clone();
    server.store.after_commit(move || read(iq));
}

fn query(iq: Incoming) {
    after_queued_rows(iq, query_now);
}

fn query_now(iq: Incoming) {
    let (owner, account) = match owner(&iq) {
        Ok(o) => o,
        Err((c, t)) => return iq.fail(c, t),
    };
    let server = iq.server().clone();
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
                Some((t, _)) if var == "start" => q.start = Some(t),
                // Inclusive (XEP-0313 §4.1.1): everything up to the end of the named instant.
                Some((t, unit)) => q.end = Some(t + unit - 1),
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
    let original = parse::element(&row.xml, &parse::Scope::new()).ok()?;
    let mut result = Element::new("result", NS).attr("id", row.stanza_id.as_str());
    if let Some(q) = queryid {
        result.set_attr("queryid", q);
    }
    result.push(
        Element::new("forwarded", FORWARD)
            .child(Element::new("delay", DELAY).attr("stamp", crate::core::time::datetime(row.ts)))
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
    after_queued_rows(iq, metadata_now);
}

fn metadata_now(iq: Incoming) {
    let (_, account) = match owner(&iq) {
        Ok(o) => o,
        Err((c, t)) => return iq.fail(c, t),
    };
    let server = iq.server().clone();
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
                .attr("timestamp", crate::core::time::datetime(e.ts))
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

/// Archive preferences (XEP-0313 §6, XEP-0441). Stored per account; they decide what is
/// archived of the messages exchanged live (see the module documentation); offline storage
/// always happens, as it is how messages reach the user.
fn prefs(iq: Incoming) {
    let (_, account) = match owner(&iq) {
        Ok(o) => o,
        Err((c, t)) => return iq.fail(c, t),
    };
    let server = iq.server().clone();
    if iq.kind == crate::core::IqType::Set {
        let default = iq.payload.get_attr("default").unwrap_or("always");
        if Mode::parse(default).is_none() {
            return iq.fail(
                Condition::BadRequest,
                "default must be always, never or roster",
            );
        }
        // Each JID normalised (so that matching compares like with like), each once.
        let list = |name: &str| -> Result<Vec<String>, ()> {
            let mut out: Vec<String> = Vec::new();
            let Some(l) = iq.payload.get_child(name, NS) else {
                return Ok(out);
            };
            for j in l.elements().filter(|j| j.name == "jid") {
                let jid = Jid::new(j.text_content().trim()).map_err(|_| ())?;
                let jid = jid.to_string();
                if !out.contains(&jid) {
                    out.push(jid);
                }
            }
            Ok(out)
        };
        let (Ok(always), Ok(never)) = (list("always"), list("never")) else {
            return iq.fail(Condition::JidMalformed, "bad JID in a list");
        };
        // Archiving follows the new preferences at once; the store has them once the job is
        // committed, and the request is answered then (with what is stored).
        let cached = Prefs::new(default, &always, &never);
        server
            .ext::<PrefsCache>()
            .0
            .borrow_mut()
            .insert(account, cached);
        let default = default.to_owned();
        server.store.write(
            move |tx| crate::store::mam::write_prefs(tx, account, &default, &always, &never),
            move |done| match done {
                Ok(()) => answer_prefs(iq, account),
                Err(e) => {
                    tracing::error!("storing archive prefs: {e}");
                    let server = iq.server().clone();
                    forget(&server, account);
                    iq.fail(Condition::InternalServerError, "");
                }
            },
        );
        return;
    }
    // Read once the writes queued so far are committed: a get right behind a set sees it.
    server.store.after_commit(move || answer_prefs(iq, account));
}

/// Answers a prefs request with the stored preferences of `account`.
fn answer_prefs(iq: Incoming, account: i64) {
    let server = iq.server().clone();
    let (default, always, never) = match crate::store::mam::prefs(&server.store, account) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("reading archive prefs: {e}");
            return iq.fail(Condition::InternalServerError, "");
        }
    };
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
fn archive_outgoing(server: &Rc<Server>, from: &jid::FullJid, to: &Jid, el: &Element) {
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
    let owner = from.clone().into_bare();
    let node = owner.node().map_or("", |n| n.as_str());
    let Ok(Some(account)) = server.store.account_id(node, owner.domain().as_str()) else {
        return;
    };
    if !archives(server, account, &owner, to) {
        return;
    }
    let with = bare_of(to).as_str().to_owned();
    let (stanza_id, ts) = new_stanza_id();
    let sid = Element::new("stanza-id", crate::xml::ns::SID)
        .attr("id", stanza_id.as_str())
        .attr("by", owner.as_str());
    let mut xml = Vec::with_capacity(ROW_CAPACITY);
    // The row is the message with the stanza id; written straight from the routed stanza,
    // which goes on unstamped to its recipient (no clone of the whole stanza).
    el.write_with_child(&mut xml, "", &sid);
    server.store.queue_mailbox(mailbox::NewEntry {
        account,
        stanza_id,
        ts,
        with,
        direction: mailbox::Direction::Out,
        offline: false,
        xml,
    });
}

/// Whether the archive of `owner` (account `account`) keeps a message delivered live to one of
/// its resources from `from` (the message's `from` attribute), by the account's preferences.
/// For the message module: messages stored because no resource was available are kept
/// whatever this says (offline delivery goes through the mailbox).
fn archives_incoming(
    server: &Server,
    account: i64,
    owner: &BareJid,
    sender: Option<&jid::FullJid>,
    from: Option<&str>,
) -> bool {
    // A local client's message: its `from` is the client's JID, no need to parse it again.
    if let Some(sender) = sender {
        return archives(server, account, owner, &Jid::from(sender.clone()));
    }
    // Without a usable sender the message comes from the server itself.
    let from = from
        .and_then(|f| Jid::new(f).ok())
        .or_else(|| Jid::new(owner.domain().as_str()).ok());
    match from {
        Some(from) => archives(server, account, owner, &from),
        None => true,
    }
}

/// The `default` of XEP-0313 preferences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Always,
    Never,
    Roster,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "always" => Some(Mode::Always),
            "never" => Some(Mode::Never),
            "roster" => Some(Mode::Roster),
            _ => None,
        }
    }
}

/// XEP-0313 preferences of an account, parsed: the default, the JIDs always archived and the
/// JIDs never archived.
#[derive(Debug)]
struct Prefs {
    default: Mode,
    always: Vec<Jid>,
    never: Vec<Jid>,
}

/// What the preferences say about one JID.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Archive,
    Skip,
    /// Archive if the JID is in the owner's roster.
    IfInRoster,
}

impl Prefs {
    fn load(server: &Server, account: i64) -> Result<Prefs, crate::store::StoreError> {
        let (default, always, never) = crate::store::mam::prefs(&server.store, account)?;
        Ok(Prefs::new(&default, &always, &never))
    }

    /// From stored (or just checked) values.
    fn new(default: &str, always: &[String], never: &[String]) -> Prefs {
        let jids = |l: &[String]| l.iter().filter_map(|j| Jid::new(j).ok()).collect();
        Prefs {
            // Stored values were checked when set; anything else is read as the default.
            default: Mode::parse(default).unwrap_or(Mode::Always),
            always: jids(always),
            never: jids(never),
        }
    }

    fn verdict(&self, other: &Jid) -> Verdict {
        // 2: the full JID itself; 1: its bare JID (which covers every resource).
        let rank = |list: &[Jid]| {
            list.iter()
                .filter_map(|j| {
                    if j == other {
                        Some(2)
                    } else if j.resource().is_none()
                        && j.node() == other.node()
                        && j.domain() == other.domain()
                    {
                        Some(1)
                    } else {
                        None
                    }
                })
                .max()
        };
        match (rank(&self.always), rank(&self.never)) {
            (Some(a), Some(n)) if a > n => Verdict::Archive,
            (_, Some(_)) => Verdict::Skip,
            (Some(_), None) => Verdict::Archive,
            (None, None) => match self.default {
                Mode::Always => Verdict::Archive,
                Mode::Never => Verdict::Skip,
                Mode::Roster => Verdict::IfInRoster,
            },
        }
    }
}

/// Preferences per account, cached: consulted for every archived message.
#[derive(Default)]
struct PrefsCache(std::cell::RefCell<foldhash::HashMap<i64, Prefs>>);

/// Drops the cached preferences of account `account` (it was deleted: its id may be reused).
fn forget(server: &Server, account: i64) {
    server.ext::<PrefsCache>().0.borrow_mut().remove(&account);
}

/// Whether the archive of `owner` (account `account`) keeps a message exchanged live with
/// `other`, either direction (its preferences).
fn archives(server: &Server, account: i64, owner: &BareJid, other: &Jid) -> bool {
    let verdict = {
        let cache = server.ext::<PrefsCache>();
        let mut cache = cache.0.borrow_mut();
        let prefs = match cache.entry(account) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match Prefs::load(server, account) {
                Ok(p) => v.insert(p),
                Err(e) => {
                    // Archiving is the safe side when the preferences cannot be read.
                    tracing::error!(%owner, "reading archive prefs: {e}");
                    return true;
                }
            },
        };
        prefs.verdict(other)
    };
    match verdict {
        Verdict::Archive => true,
        Verdict::Skip => false,
        Verdict::IfInRoster => {
            let bare = other.to_bare();
            bare == *owner || crate::core::roster::item(server, owner, &bare).is_some()
        }
    }
}

// ---- retention and size ----------------------------------------------------------------------

/// Rows one cleanup step deletes at most (one short transaction; the loop runs in between).
const CLEANUP_BATCH: usize = 500;

/// The cleanup's progress (`server.ext`).
#[derive(Default)]
struct Cleanup {
    /// When the last pass started.
    last: std::cell::Cell<Option<std::time::Instant>>,
    /// Accounts the running pass has still to visit (`None`: no pass running).
    todo: std::cell::RefCell<Option<Vec<i64>>>,
}

/// Called every second by the server's housekeeping: starts a cleanup pass every
/// `mam.cleanup_interval_secs` when retention (`mam.keep`) or a size limit
/// (`mam.max_messages_per_account`) is configured. A pass visits every account and deletes,
/// in steps of at most [`CLEANUP_BATCH`] rows with the loop running between steps, the
/// messages older than `keep` and the oldest messages beyond the size limit — never a message
/// still waiting for offline delivery (those are bounded by the offline quota instead).
fn housekeeping(server: &Rc<Server>) {
    let config = &server.config.mam;
    if config.keep().is_none() && config.max_messages_per_account == 0 {
        return;
    }
    let state = server.ext::<Cleanup>();
    if state.todo.borrow().is_some() {
        return;
    }
    let interval = std::time::Duration::from_secs(config.cleanup_interval_secs);
    if state.last.get().is_some_and(|t| t.elapsed() < interval) {
        return;
    }
    state.last.set(Some(std::time::Instant::now()));
    let accounts = match mailbox::account_ids(server.store.conn()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("archive cleanup: cannot list accounts: {e}");
            return;
        }
    };
    // Visited from the end of the list.
    *state.todo.borrow_mut() = Some(accounts);
    cleanup_step(server);
}

/// One step of a cleanup pass: one batch for the next account, then the next step on a later
/// loop turn (after sockets and timers: low priority).
fn cleanup_step(server: &std::rc::Rc<Server>) {
    let state = server.ext::<Cleanup>();
    let Some(account) = state.todo.borrow().as_ref().and_then(|t| t.last().copied()) else {
        *state.todo.borrow_mut() = None;
        return;
    };
    let config = &server.config.mam;
    let cutoff = config.keep().map(|keep| {
        let keep = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
        crate::core::time::now_micros().saturating_sub(keep)
    });
    let cap = config.max_messages_per_account;
    // On the writer, after every row queued before: the offline cursor it reads is current.
    let weak = std::rc::Rc::downgrade(server);
    server.store.write(
        move |tx| {
            let mut n = 0;
            if let Some(cutoff) = cutoff {
                n = mailbox::delete_older(tx, account, cutoff, CLEANUP_BATCH)?;
            }
            if cap > 0 && n < CLEANUP_BATCH {
                n += mailbox::delete_beyond(tx, account, cap, CLEANUP_BATCH - n)?;
            }
            Ok(n)
        },
        move |deleted| {
            let Some(server) = weak.upgrade() else { return };
            let more = match deleted {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(account, n, "archive cleanup: messages deleted");
                    }
                    n == CLEANUP_BATCH
                }
                Err(e) => {
                    tracing::error!(account, "archive cleanup failed: {e}");
                    false
                }
            };
            let state = server.ext::<Cleanup>();
            if !more && let Some(todo) = state.todo.borrow_mut().as_mut() {
                todo.pop();
            }
            let weak = std::rc::Rc::downgrade(&server);
            server.background(move || {
                if let Some(server) = weak.upgrade() {
                    cleanup_step(&server);
                }
            });
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_time("1970-01-01T00:00:01Z"),
            Some((1_000_000, 1_000_000))
        );
        assert_eq!(
            parse_time("2010-06-07T00:00:00.500Z"),
            Some((1_275_868_800_500_000, 1000))
        );
        assert_eq!(
            parse_time("2010-06-07T00:00:00.5Z"),
            Some((1_275_868_800_500_000, 100_000))
        );
        assert_eq!(
            parse_time("2010-06-07T00:00:00.123456789Z"),
            Some((1_275_868_800_123_456, 1))
        );
        // XEP-0082 offsets: 02:00 at +02:00 and 22:00 the day before at -02:00 are midnight UTC.
        assert_eq!(
            parse_time("2010-06-07T02:00:00+02:00"),
            Some((1_275_868_800_000_000, 1_000_000))
        );
        assert_eq!(
            parse_time("2010-06-06T22:00:00.000-02:00"),
            Some((1_275_868_800_000_000, 1000))
        );
        // No zone designator: UTC.
        assert_eq!(
            parse_time("2010-06-07T00:00:00"),
            Some((1_275_868_800_000_000, 1_000_000))
        );
        assert_eq!(parse_time("2010-06-07T00:00:00+2:00"), None);
        assert_eq!(parse_time("2010-06-07T00:00:00+24:00"), None);
        assert_eq!(parse_time("yesterday"), None);
        // What the archive gives out parses back to the same instant.
        let ts = 1_275_868_800_123_456;
        let (t, unit) = parse_time(&crate::core::time::datetime(ts)).unwrap();
        assert!(t <= ts && ts < t + unit);
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn preference_rules() {
        let prefs = Prefs {
            default: Mode::Roster,
            always: vec![jid("bob@example.org"), jid("carol@example.org/work")],
            never: vec![jid("carol@example.org"), jid("bob@example.org/spam")],
        };
        let v = |j: &str| prefs.verdict(&jid(j));
        assert_eq!(v("bob@example.org"), Verdict::Archive);
        assert_eq!(v("bob@example.org/phone"), Verdict::Archive);
        // The full JID is more specific than the bare one, whichever list it is in.
        assert_eq!(v("bob@example.org/spam"), Verdict::Skip);
        assert_eq!(v("carol@example.org/home"), Verdict::Skip);
        assert_eq!(v("carol@example.org/work"), Verdict::Archive);
        // A bare JID entry does not cover the domain or other accounts there.
        assert_eq!(v("example.org"), Verdict::IfInRoster);
        assert_eq!(v("dave@example.org"), Verdict::IfInRoster);

        let both = Prefs {
            default: Mode::Always,
            always: vec![jid("eve@example.org")],
            never: vec![jid("eve@example.org")],
        };
        assert_eq!(both.verdict(&jid("eve@example.org/x")), Verdict::Skip);
        assert_eq!(both.verdict(&jid("zed@example.org")), Verdict::Archive);
        let never = Prefs {
            default: Mode::Never,
            always: vec![],
            never: vec![],
        };
        assert_eq!(never.verdict(&jid("zed@example.org")), Verdict::Skip);
    }
}
