//! Offline messages (XEP-0160, RFC 6121 §8.5.2.2) as a view of the mailbox. A hook on
//! `Deliver(Message, Bare)` at −100 keeps what no resource took; `ResourceAvailable` pushes the
//! backlog.
//!
//! * **Storing.** A chat or normal message for an account with no available resource becomes a
//!   mailbox row with `offline = 1` (see `store/mailbox.rs`), carrying the server's XEP-0359
//!   stanza id. At most [`QUOTA`] undelivered rows per account: beyond that the sender gets
//!   `<resource-constraint/>` (type `wait`).
//! * **Delivering.** When a resource becomes available with a non-negative priority,
//!   [`deliver_offline`] pushes the pending rows, oldest first, each with a XEP-0203
//!   `<delay from='domain' stamp='…'/>` (the time the server received it), and moves the
//!   account's offline cursor past them in the same transaction: each is delivered once, to
//!   whichever resource comes first. Large backlogs go out in chunks of about [`CHUNK_BYTES`],
//!   the next chunk only once the previous one has left the TLS buffer.
//! * **Batching.** Rows are queued in memory (`Store::queue_mailbox`) and written by the
//!   store's writer thread, a batch per commit round in one transaction (WAL,
//!   `synchronous=FULL`: a commit survives `kill -9` and power loss; a burst of messages costs
//!   one commit, not one per message). See `store/writer.rs`.
//! * **Acknowledged means on disk.** A client that gets the answer to an IQ it sent after its
//!   messages (or an XEP-0198 `<a/>`) must be able to rely on those messages having been
//!   committed. The connection remembers the batch its stanzas wrote into and holds such
//!   answers, and what follows them, until that batch is committed
//!   (`Connection::release_hold`); deliveries to other clients do not wait.
//! * **Delivery order.** A delivery step reads once the rows queued before it are committed
//!   (`Store::after_commit`), sends, then queues the cursor move: a crash in between delivers
//!   the chunk again rather than losing it.
//!
//! Other readers of the mailbox (the message archive) wait for queued rows the same way.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use jid::{BareJid, FullJid};

use crate::core::mailbox::{own_stanza_id, stamp, stamp_from, stored_offline};
use crate::core::stanza::{Condition, ErrorType, error_reply};
use crate::core::{
    AccountDeleted, Connection, Flow, Module, Name, Origin, Point, ResourceAvailable, Routed,
    Server, To,
};
use crate::store::StoreError;
use crate::store::mailbox::{self, NewEntry, OFFLINE_CURSOR};
use crate::xml::{Element, ns};

/// Most undelivered offline messages kept per account.
pub const QUOTA: u64 = 10_000;
/// About how much stanza XML one delivery step sends (at least one message): a backlog goes
/// out as the client reads it instead of filling its output budget at once.
pub const CHUNK_BYTES: usize = 32 * 1024;
/// Most messages one delivery step sends.
const CHUNK_MESSAGES: usize = 256;
/// Wait before retrying a failed commit (disk full, database locked by another process).
const RETRY: Duration = Duration::from_secs(1);

pub fn install(s: &mut Module) {
    s.disco_feature(ns::MSGOFFLINE);
    // What no resource took: after the sessions (0) and carbons (−50).
    s.hook(Point::Deliver(Name::Message, To::Bare), -100, keep);
    s.on(0, |server, e: &mut ResourceAvailable| {
        // Pending offline messages; a no-op when none wait or after the first.
        if e.priority >= 0 {
            deliver_offline(server, &e.jid);
        }
    });
    s.on(0, |server, e: &mut AccountDeleted| {
        forget(server, &e.account)
    });
}

/// `Deliver(Message, Bare)`: a chat or normal message for an account with no available
/// resource is kept in the mailbox (see the module documentation), or refused with
/// `resource-constraint` when the account's mailbox is full.
fn keep(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let Some(account) = ev.delivery.account else {
        return Flow::Continue;
    };
    if ev.delivery.any_available || !stored_offline(&ev.stanza) {
        return Flow::Continue;
    }
    let Some(to) = ev.to_bare() else {
        return Flow::Continue;
    };
    let to = to.clone();
    // Handed back by stream management: already in the archive, so the same row becomes
    // pending again rather than a second copy being stored.
    if matches!(ev.origin, Origin::Local)
        && let Some(id) = own_stanza_id(&ev.stanza, &to)
    {
        put_back(server, to, account, id.to_owned(), ev.stanza.clone());
        return Flow::Handled;
    }
    keep_new(server, &to, account, ev);
    Flow::Handled
}

/// Stores `ev`'s message as a new offline row of `to`, or refuses it when the mailbox is full.
fn keep_new(server: &Rc<Server>, to: &BareJid, account: i64, ev: &mut Routed<'_>) {
    let sender = ev.sender();
    let entry = stamp_from(to, account, &mut ev.stanza, true, sender);
    if let Err(full) = store(server, to, entry)
        && let Some(reply) = error_reply(
            &ev.stanza,
            ErrorType::Wait,
            Condition::ResourceConstraint,
            Some(&full.to_string()),
        )
    {
        ev.reply(&reply);
    }
}

/// The sender's message was refused because the recipient's mailbox is full.
#[derive(Debug, thiserror::Error)]
#[error("the mailbox of {0} is full ({QUOTA} undelivered messages)")]
pub struct MailboxFull(pub BareJid);

/// Runtime state, one per server (`Server::ext`).
#[derive(Default)]
struct Writer {
    /// Sessions that asked for their offline messages this turn.
    deliveries: RefCell<Vec<FullJid>>,
    /// The commit job is attached.
    scheduled: Cell<bool>,
    /// Undelivered offline rows per account (committed and queued), once looked up.
    pending: RefCell<HashMap<BareJid, u64>>,
    /// Accounts with a delivery under way (possibly spread over several steps).
    delivering: RefCell<HashSet<BareJid>>,
    /// Offline cursors moved by a delivery step whose move is not committed yet, by account.
    cursors: RefCell<HashMap<i64, i64>>,
}

/// Drops the cached mailbox count of `owner` (the account was deleted).
fn forget(server: &Server, owner: &BareJid) {
    server.ext::<Writer>().pending.borrow_mut().remove(owner);
}

/// Queues `entry` (which must have `offline: true`) as an offline message for `owner`, unless
/// that would exceed the quota.
fn store(server: &Rc<Server>, owner: &BareJid, entry: NewEntry) -> Result<(), MailboxFull> {
    debug_assert!(entry.offline);
    let w = server.ext::<Writer>();
    let cached = w.pending.borrow().get(owner).copied();
    let mut count = match cached {
        Some(n) => n,
        None => count_pending(server, &w, entry.account),
    };
    if count >= QUOTA {
        // Rare, so worth a fresh count: the cache could be stale after an account was
        // deleted and made again by the command line while the server ran.
        count = count_pending(server, &w, entry.account);
    }
    if count >= QUOTA {
        w.pending.borrow_mut().insert(owner.clone(), count);
        return Err(MailboxFull(owner.clone()));
    }
    w.pending.borrow_mut().insert(owner.clone(), count + 1);
    server.store.queue_mailbox(entry);
    Ok(())
}

/// Puts `owner`'s archived row with stanza id `stanza_id` (delivered live to a session that
/// never acknowledged it) back into the offline view, so it is delivered at the next login and
/// stays in the archive once. Rare (a stream-management timeout), and done by the writer, which
/// sees every row queued before. When that is not possible (no such row, or the offline cursor
/// has passed it) the message is stored as a new row, as any other.
fn put_back(server: &Rc<Server>, owner: BareJid, account: i64, stanza_id: String, msg: Element) {
    let weak = Rc::downgrade(server);
    server.store.write(
        move |tx| {
            Ok(match mailbox::id_of(tx, account, &stanza_id)? {
                Some(id) => mailbox::requeue(tx, account, id)?,
                None => false,
            })
        },
        move |done| {
            let Some(server) = weak.upgrade() else { return };
            match done {
                Ok(true) => {
                    let w = server.ext::<Writer>();
                    if let Some(n) = w.pending.borrow_mut().get_mut(&owner) {
                        *n += 1;
                    }
                }
                Ok(false) | Err(_) => {
                    if let Err(e) = done {
                        tracing::error!(%owner, "mailbox: cannot requeue a message: {e}");
                    }
                    let mut msg = msg;
                    let entry = stamp(&owner, account, &mut msg, true);
                    if let Err(full) = store(&server, &owner, entry) {
                        tracing::warn!("{full}: an unacknowledged message is dropped");
                    }
                }
            }
        },
    );
}

/// Committed plus queued undelivered rows of `account`.
fn count_pending(server: &Server, w: &Writer, account: i64) -> u64 {
    let _ = w;
    let queued = server.store.queued_offline(account);
    let stored = mailbox::count_pending(server.store.conn(), account).unwrap_or_else(|e| {
        tracing::error!("mailbox: cannot count pending messages: {e}");
        0
    });
    stored + queued
}

/// Pushes the offline messages of `full`'s account to `full`, which has just become available
/// with a non-negative priority. Call it for every such presence: it does nothing when nothing
/// is pending, and the work runs at the end of the loop turn (after the rows queued meanwhile
/// are committed), so it is safe to call with the session table borrowed.
fn deliver_offline(server: &Rc<Server>, full: &FullJid) {
    let w = server.ext::<Writer>();
    let bare = full.to_bare();
    if w.pending.borrow().get(&bare) == Some(&0) {
        return;
    }
    // One delivery per account at a time; a running one carries on with whichever resource
    // is available.
    if !w.delivering.borrow_mut().insert(bare) {
        return;
    }
    w.deliveries.borrow_mut().push(full.clone());
    schedule(server);
}

/// Attaches the commit job unless it is attached already.
fn schedule(server: &Rc<Server>) {
    let w = server.ext::<Writer>();
    if w.scheduled.replace(true) {
        return;
    }
    let weak = Rc::downgrade(server);
    server.soon(move || {
        if let Some(server) = weak.upgrade() {
            run(&server);
        }
    });
}

/// The delivery job: once every row queued before it is committed, takes one delivery step
/// for each session that asked.
fn run(server: &Rc<Server>) {
    let w = server.ext::<Writer>();
    w.scheduled.set(false);
    let deliveries = std::mem::take(&mut *w.deliveries.borrow_mut());
    if deliveries.is_empty() {
        return;
    }
    let weak = Rc::downgrade(server);
    server.store.after_commit(move || {
        if let Some(server) = weak.upgrade() {
            steps(&server, deliveries);
        }
    });
}

fn steps(server: &Rc<Server>, deliveries: Vec<FullJid>) {
    let w = server.ext::<Writer>();
    for full in deliveries {
        match next_step(server, &full) {
            Ok(Some(remaining)) if remaining > 0 => {
                continue_later(server, full, Duration::from_millis(1));
            }
            Ok(_) => {
                w.delivering.borrow_mut().remove(&full.to_bare());
            }
            Err(e) => {
                tracing::error!("mailbox: offline delivery failed, retrying in {RETRY:?}: {e}");
                w.deliveries.borrow_mut().push(full);
                let weak = Rc::downgrade(server);
                server.after(RETRY, move || {
                    if let Some(s) = weak.upgrade() {
                        schedule(&s);
                    }
                });
            }
        }
    }
}

/// Sends the next chunk of `full`'s account's pending messages and queues the cursor move
/// past it. Returns how many wait after it; `None` when nothing is pending or no resource can
/// take it.
///
/// Sent first, committed after: a crash in between delivers the chunk again at the next login
/// (at least once) rather than losing it. Until the move is committed the delivery reads from
/// its own cursor ([`Writer::cursors`]), so no step sends a row twice.
fn next_step(server: &Rc<Server>, full: &FullJid) -> Result<Option<u64>, StoreError> {
    let owner = full.to_bare();
    let Some((_, conn)) = target(server, full) else {
        return Ok(None);
    };
    let node = owner.node().map(|n| n.to_string()).unwrap_or_default();
    let Some(account) = server.store.account_id(&node, owner.domain().as_str())? else {
        return Ok(None);
    };
    let w = server.ext::<Writer>();
    let db = server.store.conn();
    let ours = w.cursors.borrow().get(&account).copied().unwrap_or(0);
    let after = mailbox::cursor(db, account, OFFLINE_CURSOR)?.max(ours);
    let rows = mailbox::pending_after(db, account, after, CHUNK_MESSAGES)?;
    let Some(first) = rows.first() else {
        let queued = server.store.queued_offline(account);
        w.pending.borrow_mut().insert(owner, queued);
        return Ok(None);
    };
    let mut bytes = first.xml.len();
    let take = 1 + rows
        .iter()
        .skip(1)
        .take_while(|r| {
            bytes += r.xml.len();
            bytes <= CHUNK_BYTES
        })
        .count();
    let domain = owner.domain().to_string();
    let mut last = first.id;
    for row in rows.iter().take(take) {
        last = row.id;
        match crate::xml::parse::element(&row.xml, &crate::xml::parse::Scope::new()) {
            Ok(mut el) => {
                el.push(
                    Element::new("delay", ns::DELAY)
                        .attr("from", domain.as_str())
                        .attr("stamp", crate::core::time::datetime(row.ts)),
                );
                conn.send(&el);
            }
            Err(e) => tracing::error!(
                id = row.id,
                "mailbox: stored message unreadable, skipped: {e}"
            ),
        }
    }
    w.cursors.borrow_mut().insert(account, last);
    let weak = Rc::downgrade(server);
    server.store.write(
        move |tx| Ok(mailbox::advance_cursor(tx, account, OFFLINE_CURSOR, last)?),
        move |done| {
            if let Err(e) = done {
                tracing::error!(account, "mailbox: cannot move the offline cursor: {e}");
            }
            if let Some(server) = weak.upgrade() {
                let w = server.ext::<Writer>();
                let mut cursors = w.cursors.borrow_mut();
                if cursors.get(&account) == Some(&last) {
                    cursors.remove(&account);
                }
            }
        },
    );
    let remaining =
        mailbox::count_pending_after(db, account, last)? + server.store.queued_offline(account);
    w.pending.borrow_mut().insert(owner, remaining);
    Ok(Some(remaining))
}

/// Where `full`'s offline messages go: `full` itself if it is still available with a
/// non-negative priority, else the most available other resource of the account.
fn target(server: &Server, full: &FullJid) -> Option<(FullJid, Rc<Connection>)> {
    let sessions = server.sessions.borrow();
    let usable = |s: &&crate::core::sessions::Session| s.priority.is_some_and(|p| p >= 0);
    let session = sessions.get(full).filter(usable).or_else(|| {
        sessions
            .of(&full.to_bare())
            .iter()
            .filter(usable)
            .max_by_key(|s| s.priority)
    })?;
    Some((session.jid.clone(), session.connection()?))
}

/// Takes the next delivery step for `full` after `delay`, once its TLS output has drained.
fn continue_later(server: &Rc<Server>, full: FullJid, delay: Duration) {
    let weak = Rc::downgrade(server);
    server.after(delay, move || {
        let Some(server) = weak.upgrade() else { return };
        let backlog = server
            .sessions
            .borrow()
            .get(&full)
            .and_then(|s| s.connection())
            .is_some_and(|c| tls_backlog(&c));
        if backlog {
            continue_later(&server, full, Duration::from_millis(20));
        } else {
            server.ext::<Writer>().deliveries.borrow_mut().push(full);
            schedule(&server);
        }
    });
}

/// TLS records still wait for the socket: rustls refuses output beyond its 64 KiB buffer, so
/// the next chunk waits. (Plain streams exist only on trusted loopback and buffer freely.)
fn tls_backlog(conn: &Connection) -> bool {
    conn.tls_wants_write()
}
