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
//! * **Batching.** Rows are queued in memory and written by one job per loop turn in a single
//!   transaction (WAL, `synchronous=FULL`: a commit survives `kill -9` and power loss; a burst of
//!   messages costs one commit, not one per message): the queue is the store's
//!   (`Store::queue_mailbox`), the job the server's (`Server::schedule_commit`), an idle source of
//!   priority `server::COMMIT_PRIORITY`, just above `DEFAULT` where the sockets and the output flushes are:
//!   glib dispatches only the most urgent ready priority per iteration and an idle source is
//!   always ready, so it runs before the next socket read.
//! * **Acknowledged means on disk.** A client that gets the answer to an IQ it sent after its
//!   messages must be able to rely on those messages having been committed. Priorities alone
//!   cannot promise that: a flush attached in an earlier iteration is dispatched in the same
//!   iteration as the socket read that follows it, after that read, and would write this
//!   turn's replies before this turn's commit. So whatever writes output first commits
//!   (`Store::commit_pending`, a no-op when nothing is queued): `Server::flush_all` and
//!   `Connection::close`.
//!
//! Other readers of the mailbox (the message archive) commit first so they see queued rows.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use jid::{BareJid, FullJid};

use crate::core::mailbox::{own_stanza_id, stamp, stored_offline};
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
        && put_back(server, &to, account, id)
    {
        return Flow::Handled;
    }
    let entry = stamp(&to, account, &mut ev.stanza, true);
    if let Err(full) = store(server, &to, entry)
        && let Some(reply) = error_reply(
            &ev.stanza,
            ErrorType::Wait,
            Condition::ResourceConstraint,
            Some(&full.to_string()),
        )
    {
        ev.reply(&reply);
    }
    Flow::Handled
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
/// stays in the archive once. Returns false when that is not possible (no such row, or the
/// offline cursor has passed it); the caller then stores the message as a new row.
fn put_back(server: &Rc<Server>, owner: &BareJid, account: i64, stanza_id: &str) -> bool {
    // Rare (a stream-management timeout): the queued rows are committed first so the row is
    // found, then the row is changed at once.
    if let Err(e) = server.store.commit_pending() {
        tracing::error!("mailbox: commit before requeue failed: {e}");
        return false;
    }
    let conn = server.store.conn();
    let done = mailbox::id_of(conn, account, stanza_id)
        .and_then(|id| match id {
            Some(id) => mailbox::requeue(conn, account, id),
            None => Ok(false),
        })
        .unwrap_or_else(|e| {
            tracing::error!(%owner, "mailbox: cannot requeue a message: {e}");
            false
        });
    if done {
        let w = server.ext::<Writer>();
        if let Some(n) = w.pending.borrow_mut().get_mut(owner) {
            *n += 1;
        }
    }
    done
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

/// What one delivery step sends to one session.
struct Push {
    target: FullJid,
    conn: Rc<Connection>,
    owner: BareJid,
    stanzas: Vec<Element>,
    remaining: u64,
}

/// The commit job: writes the queued rows and takes one delivery step for each session that
/// asked, all in one transaction; sends only once that has committed.
fn run(server: &Rc<Server>) {
    let w = server.ext::<Writer>();
    w.scheduled.set(false);
    let deliveries = std::mem::take(&mut *w.deliveries.borrow_mut());
    if deliveries.is_empty() {
        return;
    }
    let mut pushes = Vec::new();
    let mut idle = Vec::new();
    // This turn's queued rows are written in the same transaction, so the steps see them.
    let result = server
        .store
        .commit_pending_with(|tx| -> Result<(), StoreError> {
            for full in &deliveries {
                match next_step(server, tx, full)? {
                    Some(p) => pushes.push(p),
                    None => idle.push(full.to_bare()),
                }
            }
            Ok(())
        });
    if let Err(e) = result {
        tracing::error!("mailbox: commit failed, retrying in {RETRY:?}: {e}");
        w.deliveries.borrow_mut().extend(deliveries);
        let weak = Rc::downgrade(server);
        server.after(RETRY, move || {
            if let Some(s) = weak.upgrade() {
                schedule(&s);
            }
        });
        return;
    }
    for bare in idle {
        w.delivering.borrow_mut().remove(&bare);
    }
    for p in pushes {
        for el in &p.stanzas {
            p.conn.send(el);
        }
        w.pending.borrow_mut().insert(p.owner.clone(), p.remaining);
        if p.remaining > 0 {
            continue_later(server, p.target, Duration::from_millis(1));
        } else {
            w.delivering.borrow_mut().remove(&p.owner);
        }
    }
}

/// The next chunk of `full`'s account's pending messages, with the cursor moved past it.
/// `None` when nothing is pending or no resource can take it.
fn next_step(
    server: &Server,
    tx: &rusqlite::Connection,
    full: &FullJid,
) -> Result<Option<Push>, StoreError> {
    let owner = full.to_bare();
    let Some((target, conn)) = target(server, full) else {
        return Ok(None);
    };
    let node = owner.node().map(|n| n.to_string()).unwrap_or_default();
    let Some(account) = server.store.account_id(&node, owner.domain().as_str())? else {
        return Ok(None);
    };
    let rows = mailbox::pending(tx, account, CHUNK_MESSAGES)?;
    let Some(first) = rows.first() else {
        server.ext::<Writer>().pending.borrow_mut().insert(owner, 0);
        return Ok(None);
    };
    let mut bytes = first.xml.len();
    let take = 1 + rows[1..]
        .iter()
        .take_while(|r| {
            bytes += r.xml.len();
            bytes <= CHUNK_BYTES
        })
        .count();
    let rows = &rows[..take];
    let domain = owner.domain().to_string();
    let mut stanzas = Vec::with_capacity(rows.len());
    for row in rows {
        match crate::xml::parse::element(&row.xml, &crate::xml::parse::Scope::new()) {
            Ok(mut el) => {
                el.push(
                    Element::new("delay", ns::DELAY)
                        .attr("from", domain.as_str())
                        .attr("stamp", crate::core::time::datetime(row.ts)),
                );
                stanzas.push(el);
            }
            Err(e) => tracing::error!(
                id = row.id,
                "mailbox: stored message unreadable, skipped: {e}"
            ),
        }
    }
    mailbox::advance_cursor(tx, account, OFFLINE_CURSOR, rows[rows.len() - 1].id)?;
    let remaining = mailbox::count_pending(tx, account)?;
    Ok(Some(Push {
        target,
        conn,
        owner,
        stanzas,
        remaining,
    }))
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
