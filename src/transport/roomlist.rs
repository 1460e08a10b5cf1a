//! Room discovery (XEP-0045 §6.3): disco#items on a service JID lists the legacy network's
//! public rooms, fetched with libpurple's room-list API (prpl-irc: `LIST`; prpl-jabber: the
//! conference service's items), plus the rooms the user has joined or will re-join.
//!
//! A room list arrives asynchronously and can be huge (a big IRC network answers `LIST` with
//! tens of thousands of channels), so:
//! * at most one fetch per legacy account runs at a time; later requests wait for it;
//! * a finished list is kept for [`CACHE_FOR`], so browsing does not re-`LIST` the network;
//! * the reply goes out when every account's list is complete, or after [`WAIT`] with what
//!   has arrived (the fetch goes on and fills the cache);
//! * rooms are sorted by occupant count and cut to the request's XEP-0059 `max` (default
//!   [`DEFAULT_MAX`]), with the total in `<count/>`.
//!
//! libpurple calls the ui-ops below on the main thread; fetches are keyed by the
//! `PurpleRoomlist` pointer, which we hold a reference on from request to completion.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use jid::FullJid;

use super::purple::roomlist::{self as purple_roomlist, ListedRoom, Roomlist};
use super::{ServiceInfo, Transport, accounts, core, forms};
use crate::server::Server;
use crate::xml::Element;

const RSM: &str = crate::xml::ns::RSM;
/// How long a finished list is reused.
const CACHE_FOR: Duration = Duration::from_secs(300);
/// How long a disco#items request waits for lists before answering with what it has.
const WAIT: Duration = Duration::from_secs(20);
/// Items per reply when the request names no RSM `max`; also the upper bound.
const DEFAULT_MAX: usize = 500;
/// disco#items requests of one user that may wait for lists at the same time.
const MAX_WAITING: usize = 8;
/// prpls whose room list asks the user a question first (prpl-jabber: "Enter a Conference
/// Server"): browsing must not pop up a prompt, so these list only the user's own rooms.
const PROMPTING: &[&str] = &["prpl-jabber"];

/// One public room as the prpl listed it.
#[derive(Clone, Debug)]
struct Listed {
    /// The name that joins it (what `chat_info_defaults` accepts: IRC `#chan`,
    /// XMPP `room@conference.host`).
    name: String,
    users: Option<i64>,
    topic: Option<String>,
}

/// A disco#items request waiting for room lists.
struct Waiter {
    token: u64,
    from: FullJid,
    req: Element,
    info: ServiceInfo,
    pending: HashSet<i64>,
    max: usize,
    timer: Option<glib::Source>,
}

#[derive(Default)]
struct State {
    /// Running fetches: room list address → (legacy account id, rooms so far).
    fetching: HashMap<usize, (i64, Vec<Listed>)>,
    /// Finished lists by legacy account id.
    cache: HashMap<i64, (Instant, Rc<Vec<Listed>>)>,
    waiting: Vec<Waiter>,
    next_token: u64,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

pub fn install_ui_ops() {
    purple_roomlist::set_ui_ops(purple_roomlist::UiOps {
        add_room,
        finished: in_progress_done,
        destroyed,
    });
}

/// Subscribes to the lifecycle events: a removed account's cached list is forgotten.
pub fn subscribe(events: &super::events::Events) {
    events.account_removed.subscribe(|_, e| forget(e.id));
}

/// Answers disco#items on the service JID `info.domain` for `from` (request `el`, payload `q`).
pub fn items(server: &Rc<Server>, info: &ServiceInfo, from: &FullJid, el: Element, q: &Element) {
    let max = q
        .get_child("set", RSM)
        .and_then(|s| s.child_text("max", RSM))
        .and_then(|m| m.trim().parse::<usize>().ok())
        .map_or(DEFAULT_MAX, |m| m.min(DEFAULT_MAX));
    let owner = from.to_bare();
    let t = Transport::get(server);
    let mut pending = HashSet::new();
    for id in t.accounts_of(&owner, &info.domain) {
        if start_fetch(server, id) {
            pending.insert(id);
        }
    }
    let mut w = Waiter {
        token: 0,
        from: from.clone(),
        req: el,
        info: info.clone(),
        pending,
        max,
        timer: None,
    };
    // A client asking again and again while a list is slow to come gets what there is,
    // rather than piling up waiting requests.
    let queued = STATE.with_borrow(|s| {
        s.waiting
            .iter()
            .filter(|o| o.from.to_bare() == owner)
            .count()
    });
    if w.pending.is_empty() || queued >= MAX_WAITING {
        return answer(server, w);
    }
    let token = STATE.with_borrow_mut(|s| {
        s.next_token += 1;
        s.next_token
    });
    w.token = token;
    let weak = Rc::downgrade(server);
    w.timer = Some(server.after(WAIT, move || {
        super::purple::ffi::guard("room list wait", (), || {
            let Some(server) = weak.upgrade() else { return };
            let w = STATE.with_borrow_mut(|s| {
                let i = s.waiting.iter().position(|w| w.token == token)?;
                Some(s.waiting.swap_remove(i))
            });
            if let Some(mut w) = w {
                w.timer = None; // this timer is the one firing; GLib removes it
                answer(&server, w);
            }
        })
    }));
    STATE.with_borrow_mut(|s| s.waiting.push(w));
}

/// Makes sure account `id`'s list is fresh or being fetched; true if the caller must wait.
fn start_fetch(server: &Server, id: i64) -> bool {
    let (fresh, running) = STATE.with_borrow(|s| {
        let fresh = s
            .cache
            .get(&id)
            .is_some_and(|(at, _)| at.elapsed() < CACHE_FOR);
        let running = s.fetching.values().any(|(i, _)| *i == id);
        (fresh, running)
    });
    if fresh {
        return false;
    }
    if running {
        return true;
    }
    let Some(gc) = accounts::connection(server, id) else {
        return false;
    };
    if PROMPTING.contains(&accounts::protocol(server, id).as_str()) {
        return false;
    }
    // The prpl owns the list; `fetch` takes a reference for us, dropped in `finish_fetch`.
    let Some(list) = purple_roomlist::fetch(gc) else {
        return false;
    };
    STATE.with_borrow_mut(|s| s.fetching.insert(list.addr(), (id, Vec::new())));
    // The prpl may have answered synchronously (a cached list); then it is done already.
    if list.is_complete() {
        finish_fetch(list);
        return false;
    }
    // The LIST goes out when Gateway::handle flushes prpl-irc's queue after this stanza.
    true
}

fn add_room(list: Roomlist, room: ListedRoom) {
    if !core::on_main_thread() {
        return;
    }
    let ListedRoom { name, users, topic } = room;
    let topic = topic
        .map(|t| super::text::line(&super::purple::markup::html_to_text(&t)))
        .filter(|t| !t.trim().is_empty());
    let listed = Listed { name, users, topic };
    STATE.with_borrow_mut(|s| {
        if let Some((_, rooms)) = s.fetching.get_mut(&list.addr()) {
            rooms.push(listed);
        }
    });
}

fn in_progress_done(list: Roomlist) {
    if core::on_main_thread() {
        finish_fetch(list);
    }
}

fn destroyed(list: Roomlist) {
    // A list destroyed before completing (connection lost): keep what arrived.
    if core::on_main_thread() {
        complete(list.addr());
    }
}

/// A list is complete: cache it, drop our reference, answer the requests it completes.
fn finish_fetch(list: Roomlist) {
    if complete(list.addr()) {
        // The reference taken in `start_fetch`; the prpl still holds its own while it calls
        // in_progress(FALSE), so this never frees the list under the caller.
        list.unref();
    }
}

/// Moves a fetch into the cache and answers the requests now complete; false if unknown.
fn complete(key: usize) -> bool {
    let Some((id, rooms)) = STATE.with_borrow_mut(|s| s.fetching.remove(&key)) else {
        return false;
    };
    let rooms = sorted(rooms);
    let done: Vec<Waiter> = STATE.with_borrow_mut(|s| {
        s.cache.insert(id, (Instant::now(), Rc::new(rooms)));
        for w in &mut s.waiting {
            w.pending.remove(&id);
        }
        let (done, left) = std::mem::take(&mut s.waiting)
            .into_iter()
            .partition(|w| w.pending.is_empty());
        s.waiting = left;
        done
    });
    if let Some(server) = core::server() {
        for mut w in done {
            if let Some(t) = w.timer.take() {
                t.destroy();
            }
            answer(&server, w);
        }
    }
    true
}

/// Largest rooms first, each name once.
fn sorted(mut rooms: Vec<Listed>) -> Vec<Listed> {
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    rooms.dedup_by(|a, b| a.name == b.name);
    rooms.sort_by(|a, b| b.users.cmp(&a.users).then_with(|| a.name.cmp(&b.name)));
    rooms
}

/// Whether account `id`'s last room list names `room` (so its disco#info says "a room").
pub fn is_listed(id: i64, room: &str) -> bool {
    STATE.with_borrow(|s| {
        s.cache
            .get(&id)
            .is_some_and(|(_, list)| list.iter().any(|r| r.name == room))
    })
}

/// Forgets the cached list of a removed or disconnected account.
pub fn forget(id: i64) {
    STATE.with_borrow_mut(|s| {
        s.cache.remove(&id);
    });
}

/// Sends the disco#items result: the user's own rooms first, then the public ones.
fn answer(server: &Rc<Server>, w: Waiter) {
    let owner = w.from.to_bare();
    let mut q = super::service::own_rooms(server, &w.info, &owner);
    let mut seen: HashSet<String> = q
        .elements()
        .filter_map(|i| i.get_attr("jid").map(str::to_owned))
        .collect();
    let t = Transport::get(server);
    let mut total = seen.len();
    let mut shown = seen.len();
    for id in t.accounts_of(&owner, &w.info.domain) {
        // A finished list, else (the wait ran out) what a running fetch has so far.
        let Some(list) = STATE.with_borrow(|s| {
            s.cache.get(&id).map(|(_, l)| l.clone()).or_else(|| {
                s.fetching
                    .values()
                    .find(|(i, _)| *i == id)
                    .map(|(_, rooms)| Rc::new(sorted(rooms.clone())))
            })
        }) else {
            continue;
        };
        for room in list.iter() {
            let Some(jid) = t.contact_jid(id, &room.name).map(|j| j.to_string()) else {
                continue;
            };
            if !seen.insert(jid.clone()) {
                continue;
            }
            total += 1;
            if shown >= w.max {
                continue;
            }
            shown += 1;
            q.push(
                Element::new("item", forms::DISCO_ITEMS)
                    .attr("jid", jid)
                    .attr("name", label(room)),
            );
        }
    }
    if total > shown {
        q.push(Element::new("set", RSM).child(Element::new("count", RSM).text(total.to_string())));
    }
    super::service::reply(server, &w.from, &w.req, q);
}

/// `#chan (12 users): topic`, the topic cut to a readable length.
fn label(room: &Listed) -> String {
    let mut s = room.name.clone();
    if let Some(n) = room.users {
        s.push_str(&format!(" ({n} {})", if n == 1 { "user" } else { "users" }));
    }
    if let Some(topic) = &room.topic {
        let cut: String = topic.chars().take(100).collect();
        s.push_str(": ");
        s.push_str(cut.trim());
        if cut.len() < topic.len() {
            s.push('…');
        }
    }
    s
}
