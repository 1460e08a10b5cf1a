//! The per-user mailbox: one append-only archive of messages, and read cursors over it.
//!
//! Every message the server keeps for an account is one row of `mailbox`, with a stable
//! XEP-0359 stanza id (also written into the stored stanza, `<stanza-id by='user@domain'/>`).
//! Rows are never changed after they are written; what has been delivered is recorded by
//! *cursors* in `mailbox_cursor`: "device D of the account has seen everything up to row id N".
//! Offline delivery (XEP-0160) is the view "rows stored for lack of an available resource
//! (`offline = 1`) beyond the account's [`OFFLINE_CURSOR`]"; a message archive (XEP-0313) and
//! stream resumption are further views of the same rows, so the three cannot disagree about
//! what exists (the lost-or-duplicated failure of servers that keep three stores).
//!
//! Row ids come from `AUTOINCREMENT`: they only grow and are never reused, which is what makes
//! "up to id N" a sound cursor.
//!
//! Time never goes backwards in id order either: a row's `ts` is at least that of the row
//! before it (the [`INSERT`] takes the larger of the two; [`MONOTONIC_TS`] made older rows so).
//! A time bound is then an id bound ([`first_id_from`]), found by a binary search over row ids,
//! and the archive needs no index on `(account, ts)`: one B-tree less to update per row, of the
//! four indexes every row went into (measured: about a quarter of the writer thread's work).
//!
//! These functions take a `rusqlite::Connection` so they work inside a transaction as well
//! (a `Transaction` derefs to its connection). The server does not call [`append`] on its hot
//! path directly: modules queue rows (`Store::queue_mailbox`) for the writer thread (`writer.rs`).

use rusqlite::{Connection, OptionalExtension, Row, params};

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = r#"
    CREATE TABLE mailbox (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        account   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        stanza_id TEXT NOT NULL UNIQUE,  -- XEP-0359, the id clients and the archive refer to
        ts        INTEGER NOT NULL,      -- when the server received it, Unix time in microseconds
        with_jid  TEXT NOT NULL,         -- bare JID of the other party
        direction INTEGER NOT NULL,      -- 0 incoming, 1 outgoing
        offline   INTEGER NOT NULL,      -- 1: stored because no resource was available; pending
                                         --    while id > the account's offline cursor
        xml       BLOB NOT NULL          -- the stanza as delivered, with xmlns='jabber:client'
    );
    CREATE INDEX mailbox_account ON mailbox (account, id);
    CREATE INDEX mailbox_with ON mailbox (account, with_jid, id);
    CREATE INDEX mailbox_ts ON mailbox (account, ts);
    -- Offline delivery and the quota look only at these rows.
    CREATE INDEX mailbox_offline ON mailbox (account, id) WHERE offline = 1;

    -- Read cursors: device '' is the account-wide offline view; later, one per device
    -- (stream resumption, archive sync).
    CREATE TABLE mailbox_cursor (
        account   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        device    TEXT NOT NULL,
        delivered INTEGER NOT NULL,      -- every row with id <= this has been delivered
        PRIMARY KEY (account, device)
    ) WITHOUT ROWID;
"#;

/// The cursor of offline delivery: rows up to it have been pushed to some resource at login.
pub const OFFLINE_CURSOR: &str = "";

/// Which way a message went, seen from the account that owns the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the account (`with` is the sender).
    In,
    /// Sent by the account (`with` is the recipient).
    Out,
}

impl Direction {
    fn to_sql(self) -> i64 {
        match self {
            Direction::In => 0,
            Direction::Out => 1,
        }
    }

    fn from_sql(v: i64) -> Direction {
        if v == 1 {
            Direction::Out
        } else {
            Direction::In
        }
    }
}

/// A row to append.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub account: i64,
    /// XEP-0359 stanza id; unique across the whole table.
    pub stanza_id: String,
    /// Unix time in microseconds.
    pub ts: i64,
    /// Bare JID of the other party.
    pub with: String,
    pub direction: Direction,
    /// Stored because no resource was available: offline delivery pushes it at next login.
    pub offline: bool,
    /// The stanza, serialised with its namespace declared (see `Element::write_to(_, "")`).
    pub xml: Vec<u8>,
}

/// A stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Archive id: increasing in the order rows were appended, never reused.
    pub id: i64,
    pub stanza_id: String,
    pub ts: i64,
    pub with: String,
    pub direction: Direction,
    pub offline: bool,
    pub xml: Vec<u8>,
}

const COLUMNS: &str = "id, stanza_id, ts, with_jid, direction, offline, xml";

fn entry(r: &Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: r.get(0)?,
        stanza_id: r.get(1)?,
        ts: r.get(2)?,
        with: r.get(3)?,
        direction: Direction::from_sql(r.get(4)?),
        offline: r.get(5)?,
        xml: r.get(6)?,
    })
}

/// Appends a row; returns its archive id.
pub fn append(conn: &Connection, e: &NewEntry) -> rusqlite::Result<i64> {
    insert(&mut conn.prepare_cached(INSERT)?, e, e.ts)?;
    Ok(conn.last_insert_rowid())
}

/// The statement that adds one mailbox row on its own ([`append`]). The time stamp is clamped
/// to the last row's, so that `ts` never decreases in id order whatever the clock did (see the
/// module documentation); batches clamp in [`Appender`] instead.
const INSERT: &str =
    "INSERT INTO mailbox (account, stanza_id, ts, with_jid, direction, offline, xml)
     VALUES (?1, ?2,
             max(?3, coalesce((SELECT ts FROM mailbox ORDER BY id DESC LIMIT 1), ?3)),
             ?4, ?5, ?6, ?7)";

/// Migration: `ts` made non-decreasing in id order for the rows written before [`INSERT`]
/// clamped it (a row stamped before a clock went back takes the time of the row before it),
/// and the index on `(account, ts)` it replaces dropped.
pub(super) const MONOTONIC_TS: &str = r#"
    UPDATE mailbox SET ts = r.m
    FROM (SELECT id, max(ts) OVER (ORDER BY id) AS m FROM mailbox) AS r
    WHERE r.id = mailbox.id AND r.m > mailbox.ts;
    DROP INDEX mailbox_ts;
"#;

/// The id of the first row (of any account) stamped at or after `t` (Unix microseconds); one
/// past the last row when there is none. Exact because `ts` never decreases in id order: a
/// binary search over row ids, each step one lookup in the table's own B-tree (at most 64).
pub fn first_id_from(conn: &Connection, t: i64) -> rusqlite::Result<i64> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(id) FROM mailbox")?
        .query_row([], |r| r.get(0))?;
    let Some(last) = last else {
        return Ok(1);
    };
    let mut next =
        conn.prepare_cached("SELECT id, ts FROM mailbox WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    let mut answer = last.saturating_add(1);
    let (mut lo, mut hi) = (0i64, answer);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let row = next
            .query_row([mid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .optional()?;
        match row {
            // The answer is this row or one before `mid`.
            Some((id, ts)) if ts >= t => {
                answer = answer.min(id);
                hi = mid;
            }
            // Everything up to this row is earlier than `t`.
            Some((id, _)) => lo = id.saturating_add(1),
            None => hi = mid,
        }
    }
    Ok(answer)
}

/// [`INSERT`] with the time stamp given: for [`Appender`], which clamps it itself.
const INSERT_AT: &str =
    "INSERT INTO mailbox (account, stanza_id, ts, with_jid, direction, offline, xml)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// The time of the newest row.
fn last_ts(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT ts FROM mailbox ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()
}

/// Appends rows inside a write transaction with one prepared statement, keeping `ts`
/// non-decreasing in id order: the newest row's time is read once, and each row gets the later
/// of its own time and the previous row's. (The same clamp as [`INSERT`]'s subquery, which
/// cost ~1,700 instructions per row on the writer thread, 7% of its work.) Exact because no
/// other connection can write while the transaction holds the write lock; whoever else writes
/// rows within it (a write job using [`append`]) is followed by [`Appender::resync`].
pub struct Appender<'c> {
    stmt: rusqlite::CachedStatement<'c>,
    last: Option<i64>,
}

impl<'c> Appender<'c> {
    pub fn new(conn: &'c Connection) -> rusqlite::Result<Appender<'c>> {
        Ok(Appender {
            stmt: conn.prepare_cached(INSERT_AT)?,
            last: last_ts(conn)?,
        })
    }

    /// Reads the newest row's time again (after rows were written another way).
    pub fn resync(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.last = last_ts(conn)?;
        Ok(())
    }

    /// Appends `e`. A row that violates a constraint (its account was deleted meanwhile, a
    /// stanza id collision) is not written — SQLite undoes just that statement — and is handed
    /// to `dropped` with the error. Any other error is returned (the caller's transaction then
    /// rolls back).
    pub fn push(
        &mut self,
        e: &NewEntry,
        dropped: impl FnOnce(&NewEntry, rusqlite::Error),
    ) -> rusqlite::Result<()> {
        let ts = self.last.map_or(e.ts, |last| last.max(e.ts));
        match insert(&mut self.stmt, e, ts) {
            Ok(()) => {
                self.last = Some(ts);
                Ok(())
            }
            Err(err @ rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                dropped(e, err);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

fn insert(stmt: &mut rusqlite::CachedStatement<'_>, e: &NewEntry, ts: i64) -> rusqlite::Result<()> {
    stmt.execute(params![
        e.account,
        e.stanza_id,
        ts,
        e.with,
        e.direction.to_sql(),
        e.offline,
        e.xml
    ])?;
    Ok(())
}

/// Appends `entries` in order (their row ids increase in that order) with an [`Appender`]:
/// the write path of a loop turn's batch. Call it inside a write transaction.
///
/// A row that violates a constraint is handed to `dropped` with the error and not written;
/// the others are written. Any other error is returned at once.
///
/// One row per statement on purpose: a multi-row `INSERT` would have SQLite keep a statement
/// journal (a copy of every page the statement touches, to undo it as a whole on a bad row),
/// which costs more than the per-statement overhead it saves.
pub fn append_all(
    conn: &Connection,
    entries: &[NewEntry],
    mut dropped: impl FnMut(&NewEntry, rusqlite::Error),
) -> rusqlite::Result<()> {
    let mut rows = Appender::new(conn)?;
    for e in entries {
        rows.push(e, &mut dropped)?;
    }
    Ok(())
}

/// Puts an archived row that was delivered live back into the offline view (stream
/// management gave up on a session that never acknowledged it), so that the message is
/// delivered at the next login without a second archive row. Only possible while the row is
/// beyond the offline cursor; returns whether the row is now pending.
pub fn requeue(conn: &Connection, account: i64, id: i64) -> rusqlite::Result<bool> {
    let after = cursor(conn, account, OFFLINE_CURSOR)?;
    let changed = conn
        .prepare_cached(
            "UPDATE mailbox SET offline = 1 WHERE account = ?1 AND id = ?2 AND id > ?3 AND offline = 0",
        )?
        .execute(params![account, id, after])?;
    Ok(changed == 1)
}

/// Where `device` of `account` has read up to (0 when it has never read).
pub fn cursor(conn: &Connection, account: i64, device: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT delivered FROM mailbox_cursor WHERE account = ?1 AND device = ?2")?
        .query_row(params![account, device], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Moves the cursor of `device` forward to `up_to` (never backwards).
pub fn advance_cursor(
    conn: &Connection,
    account: i64,
    device: &str,
    up_to: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO mailbox_cursor (account, device, delivered) VALUES (?1, ?2, ?3)
         ON CONFLICT (account, device) DO UPDATE SET delivered = max(delivered, excluded.delivered)",
    )?
    .execute(params![account, device, up_to])?;
    Ok(())
}

/// Offline rows of `account` beyond the offline cursor, oldest first, at most `limit`.
pub fn pending(conn: &Connection, account: i64, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    pending_after(conn, account, cursor(conn, account, OFFLINE_CURSOR)?, limit)
}

/// Offline rows of `account` with ids above `after`, oldest first, at most `limit`: the
/// offline view read from a cursor the caller knows better than the database (a delivery whose
/// cursor moves are still being committed).
pub fn pending_after(
    conn: &Connection,
    account: i64,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM mailbox
         WHERE account = ?1 AND offline = 1 AND id > ?2 ORDER BY id LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![account, after, limit as i64], entry)?;
    rows.collect()
}

/// How many offline rows of `account` wait for delivery (what the quota counts).
pub fn count_pending(conn: &Connection, account: i64) -> rusqlite::Result<u64> {
    count_pending_after(conn, account, cursor(conn, account, OFFLINE_CURSOR)?)
}

/// How many offline rows of `account` have ids above `after` (see [`pending_after`]).
pub fn count_pending_after(conn: &Connection, account: i64, after: i64) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT count(*) FROM mailbox WHERE account = ?1 AND offline = 1 AND id > ?2",
    )?
    .query_row(params![account, after], |r| r.get::<_, i64>(0))
    .map(|n| n as u64)
}

/// A range query over one account's archive (the shape XEP-0313 with XEP-0059 paging needs).
/// Every bound is optional and exclusive for ids, inclusive for times.
#[derive(Clone, Debug, Default)]
pub struct Query<'a> {
    /// Only rows exchanged with this bare JID.
    pub with: Option<&'a str>,
    /// Only rows with id greater than this (RSM `after`, resolved with [`id_of`]).
    pub after_id: Option<i64>,
    /// Only rows with id less than this (RSM `before`).
    pub before_id: Option<i64>,
    /// Only rows with `ts >= start` (microseconds).
    pub start: Option<i64>,
    /// Only rows with `ts <= end` (microseconds).
    pub end: Option<i64>,
    /// Most rows returned.
    pub limit: usize,
    /// Newest first (the last page, RSM `<before/>`); the result is still returned oldest first.
    pub newest_first: bool,
}

/// Rows of `account` matching `q`, oldest first.
pub fn query(conn: &Connection, account: i64, q: &Query<'_>) -> rusqlite::Result<Vec<Entry>> {
    let order = if q.newest_first { "DESC" } else { "ASC" };
    // One statement text per shape of filter, so prepare_cached keeps a handful at most.
    let mut sql = format!("SELECT {COLUMNS} FROM mailbox WHERE account = ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![account.into()];
    let mut bind = |sql: &mut String, cond: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&format!(" AND {cond} ?{}", args.len()));
    };
    if let Some(w) = q.with {
        bind(&mut sql, "with_jid =", w.to_owned().into());
    }
    if let Some(a) = q.after_id {
        bind(&mut sql, "id >", a.into());
    }
    if let Some(b) = q.before_id {
        bind(&mut sql, "id <", b.into());
    }
    // Time bounds as id bounds, which the index on (account, id) serves; the conditions on
    // `ts` themselves only filter.
    if let Some(s) = q.start {
        bind(&mut sql, "id >=", first_id_from(conn, s)?.into());
        bind(&mut sql, "ts >=", s.into());
    }
    if let Some(e) = q.end {
        bind(
            &mut sql,
            "id <",
            first_id_from(conn, e.saturating_add(1))?.into(),
        );
        bind(&mut sql, "ts <=", e.into());
    }
    sql.push_str(&format!(" ORDER BY id {order} LIMIT {}", q.limit));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), entry)?;
    let mut out: Vec<Entry> = rows.collect::<Result<_, _>>()?;
    if q.newest_first {
        out.reverse();
    }
    Ok(out)
}

/// The archive id of the row of `account` with XEP-0359 id `stanza_id`.
pub fn id_of(conn: &Connection, account: i64, stanza_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM mailbox WHERE account = ?1 AND stanza_id = ?2")?
        .query_row(params![account, stanza_id], |r| r.get(0))
        .optional()
}

// ---- retention (the archive cleanup of modules::mam) -----------------------------------------

/// Every account's row id, in order.
pub fn account_ids(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM accounts ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Deletes at most `limit` rows of `account` received before `before` (Unix microseconds),
/// oldest first, except the rows still waiting for offline delivery. Returns how many.
pub fn delete_older(
    conn: &Connection,
    account: i64,
    before: i64,
    limit: usize,
) -> rusqlite::Result<usize> {
    let after = cursor(conn, account, OFFLINE_CURSOR)?;
    let bound = first_id_from(conn, before)?;
    conn.prepare_cached(
        "DELETE FROM mailbox WHERE id IN (
             SELECT id FROM mailbox
             WHERE account = ?1 AND id < ?5 AND ts < ?2 AND NOT (offline = 1 AND id > ?3)
             ORDER BY id LIMIT ?4)",
    )?
    .execute(params![account, before, after, limit as i64, bound])
}

/// Deletes at most `limit` rows of `account` beyond its newest `keep`, oldest first, except the
/// rows still waiting for offline delivery. Returns how many.
pub fn delete_beyond(
    conn: &Connection,
    account: i64,
    keep: u64,
    limit: usize,
) -> rusqlite::Result<usize> {
    // The newest row that is not among the newest `keep`: it and everything older goes.
    let Some(last) = conn
        .prepare_cached(
            "SELECT id FROM mailbox WHERE account = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
        )?
        .query_row(
            params![account, i64::try_from(keep).unwrap_or(i64::MAX)],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
    else {
        return Ok(0);
    };
    let after = cursor(conn, account, OFFLINE_CURSOR)?;
    conn.prepare_cached(
        "DELETE FROM mailbox WHERE id IN (
             SELECT id FROM mailbox
             WHERE account = ?1 AND id <= ?2 AND NOT (offline = 1 AND id > ?3)
             ORDER BY id LIMIT ?4)",
    )?
    .execute(params![account, last, after, limit as i64])
}

/// Mailbox sizes of one account, for `wockd status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    pub username: String,
    pub domain: String,
    /// Rows in the archive.
    pub archived: u64,
    /// Offline rows not delivered yet.
    pub pending: u64,
}

/// Sizes of every account's mailbox, sorted like `list_accounts`.
pub fn stats(conn: &Connection) -> rusqlite::Result<Vec<Stats>> {
    let mut stmt = conn.prepare(
        "SELECT a.username, a.domain,
                (SELECT count(*) FROM mailbox m WHERE m.account = a.id),
                (SELECT count(*) FROM mailbox m
                 WHERE m.account = a.id AND m.offline = 1
                   AND m.id > coalesce((SELECT c.delivered FROM mailbox_cursor c
                                        WHERE c.account = a.id AND c.device = ''), 0))
         FROM accounts a ORDER BY a.username, a.domain",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Stats {
            username: r.get(0)?,
            domain: r.get(1)?,
            archived: r.get::<_, i64>(2)? as u64,
            pending: r.get::<_, i64>(3)? as u64,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn account(store: &Store, name: &str) -> i64 {
        store.create_account(name, "localhost", &[]).unwrap();
        store.account_id(name, "localhost").unwrap().unwrap()
    }

    fn new(account: i64, n: u32, offline: bool) -> NewEntry {
        NewEntry {
            account,
            stanza_id: format!("sid-{account}-{n}"),
            ts: 1_000_000 * i64::from(n),
            with: if n.is_multiple_of(2) {
                "bob@localhost"
            } else {
                "carol@localhost"
            }
            .into(),
            direction: Direction::In,
            offline,
            xml: format!("<message><body>{n}</body></message>").into_bytes(),
        }
    }

    #[test]
    fn offline_view_follows_the_cursor() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        let bob = account(&store, "bob");
        let a1 = append(conn, &new(alice, 1, true)).unwrap();
        append(conn, &new(alice, 2, false)).unwrap(); // delivered live: not pending
        let a3 = append(conn, &new(alice, 3, true)).unwrap();
        append(conn, &new(bob, 4, true)).unwrap();

        let p = pending(conn, alice, 100).unwrap();
        assert_eq!(p.iter().map(|e| e.id).collect::<Vec<_>>(), [a1, a3]);
        assert_eq!(count_pending(conn, alice).unwrap(), 2);
        assert_eq!(pending(conn, alice, 1).unwrap().len(), 1);

        advance_cursor(conn, alice, OFFLINE_CURSOR, a1).unwrap();
        assert_eq!(count_pending(conn, alice).unwrap(), 1);
        advance_cursor(conn, alice, OFFLINE_CURSOR, a3).unwrap();
        advance_cursor(conn, alice, OFFLINE_CURSOR, a1).unwrap(); // never backwards
        assert_eq!(cursor(conn, alice, OFFLINE_CURSOR).unwrap(), a3);
        assert!(pending(conn, alice, 100).unwrap().is_empty());
        assert_eq!(count_pending(conn, bob).unwrap(), 1);

        let s = stats(conn).unwrap();
        assert_eq!(
            (s[0].username.as_str(), s[0].archived, s[0].pending),
            ("alice", 3, 0)
        );
        assert_eq!(
            (s[1].username.as_str(), s[1].archived, s[1].pending),
            ("bob", 1, 1)
        );
    }

    #[test]
    fn query_filters_and_pages() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        let ids: Vec<i64> = (1..=6)
            .map(|n| append(conn, &new(alice, n, false)).unwrap())
            .collect();
        let q = |q: Query<'_>| {
            query(conn, alice, &q)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        };

        assert_eq!(
            q(Query {
                limit: 10,
                ..Default::default()
            }),
            ids
        );
        assert_eq!(
            q(Query {
                with: Some("bob@localhost"),
                limit: 10,
                ..Default::default()
            }),
            [ids[1], ids[3], ids[5]]
        );
        assert_eq!(
            q(Query {
                after_id: Some(ids[1]),
                limit: 2,
                ..Default::default()
            }),
            [ids[2], ids[3]]
        );
        assert_eq!(
            q(Query {
                before_id: Some(ids[5]),
                limit: 2,
                newest_first: true,
                ..Default::default()
            }),
            [ids[3], ids[4]]
        );
        assert_eq!(
            q(Query {
                start: Some(2_000_000),
                end: Some(3_000_000),
                limit: 10,
                ..Default::default()
            }),
            [ids[1], ids[2]]
        );
        assert_eq!(
            id_of(conn, alice, &format!("sid-{alice}-3")).unwrap(),
            Some(ids[2])
        );
        assert_eq!(id_of(conn, alice, "nope").unwrap(), None);
    }

    /// A row stamped earlier than the row before it (the clock went back) takes that row's
    /// time; time bounds find exactly the rows a scan of `ts` finds, with gaps in the ids
    /// (deleted rows) and rows of several accounts interleaved.
    #[test]
    fn time_is_monotonic_in_id_order_and_bounds_are_exact() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        let bob = account(&store, "bob");
        assert_eq!(first_id_from(conn, 0).unwrap(), 1);
        // Times in seconds, with a clock that goes back twice and repeats.
        let times = [5, 6, 6, 3, 9, 9, 12, 11, 20, 21, 22, 30];
        let mut ids = Vec::new();
        for (n, t) in times.iter().enumerate() {
            let owner = if n % 3 == 0 { bob } else { alice };
            let mut e = new(owner, n as u32, false);
            e.ts = t * 1_000_000;
            ids.push(append(conn, &e).unwrap());
        }
        conn.execute("DELETE FROM mailbox WHERE id IN (?1, ?2)", [ids[2], ids[9]])
            .unwrap();
        let rows: Vec<(i64, i64, i64)> = conn
            .prepare("SELECT id, account, ts FROM mailbox ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let stamped: Vec<i64> = rows.iter().map(|r| r.2 / 1_000_000).collect();
        assert_eq!(stamped, [5, 6, 6, 9, 9, 12, 12, 20, 22, 30]);
        for t in 0..=32 {
            let t = t * 1_000_000;
            let want = rows.iter().find(|r| r.2 >= t).map_or(ids[11] + 1, |r| r.0);
            assert_eq!(first_id_from(conn, t).unwrap(), want, "t = {t}");
            for end in [t, t + 7_000_000] {
                for owner in [alice, bob] {
                    let got: Vec<i64> = query(
                        conn,
                        owner,
                        &Query {
                            start: Some(t),
                            end: Some(end),
                            limit: 100,
                            ..Default::default()
                        },
                    )
                    .unwrap()
                    .iter()
                    .map(|e| e.id)
                    .collect();
                    let scan: Vec<i64> = rows
                        .iter()
                        .filter(|r| r.1 == owner && r.2 >= t && r.2 <= end)
                        .map(|r| r.0)
                        .collect();
                    assert_eq!(got, scan, "{t}..={end}");
                }
            }
        }
    }

    /// Every row's `ts`, in id order.
    fn stored_times(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT ts FROM mailbox ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A batch clamps like a single append: against the newest row and within the batch.
    #[test]
    fn batches_keep_time_monotonic() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        let mut first = new(alice, 0, false);
        first.ts = 50;
        append(conn, &first).unwrap();
        let rows: Vec<NewEntry> = [40, 60, 55, 70]
            .iter()
            .enumerate()
            .map(|(n, t)| NewEntry {
                ts: *t,
                ..new(alice, n as u32 + 1, false)
            })
            .collect();
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
                .unwrap();
        append_all(&tx, &rows, |_, e| panic!("{e}")).unwrap();
        tx.commit().unwrap();
        let ts = stored_times(conn);
        assert_eq!(ts, [50, 50, 60, 60, 70]);
    }

    /// The migration makes old rows' times non-decreasing and drops the time index.
    #[test]
    fn migration_repairs_times_that_went_back() {
        let conn = Connection::open_in_memory().unwrap();
        let all = crate::store::migrations::MIGRATIONS;
        let at = all.iter().position(|m| *m == MONOTONIC_TS).unwrap();
        for m in &all[..at] {
            conn.execute_batch(m).unwrap();
        }
        conn.execute(
            "INSERT INTO accounts (username, domain, created) VALUES ('a', 'l', 0)",
            [],
        )
        .unwrap();
        for (n, t) in [5, 3, 7, 4, 4, 8].iter().enumerate() {
            conn.execute(
                "INSERT INTO mailbox (account, stanza_id, ts, with_jid, direction, offline, xml)
                 VALUES (1, ?1, ?2, 'b@l', 0, 0, x'00')",
                rusqlite::params![format!("s{n}"), t],
            )
            .unwrap();
        }
        conn.execute_batch(MONOTONIC_TS).unwrap();
        let ts = stored_times(&conn);
        assert_eq!(ts, [5, 5, 7, 7, 7, 8]);
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'mailbox_ts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
    }

    #[test]
    fn append_all_keeps_order_and_drops_only_bad_rows() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        // One row with a duplicate stanza id and one for an account that does not exist.
        let mut rows: Vec<NewEntry> = (1..=42)
            .map(|n| new(alice, n, n.is_multiple_of(3)))
            .collect();
        rows[5].stanza_id = rows[4].stanza_id.clone();
        rows[33].account = alice + 1000;
        let mut dropped = Vec::new();
        append_all(conn, &rows, |e, _| dropped.push(e.ts)).unwrap();
        assert_eq!(dropped, [rows[5].ts, rows[33].ts]);
        let stored: Vec<(String, i64)> = conn
            .prepare("SELECT stanza_id, ts FROM mailbox ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let want: Vec<(String, i64)> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 5 && *i != 33)
            .map(|(_, e)| (e.stanza_id.clone(), e.ts))
            .collect();
        assert_eq!(stored, want);
        let back = query(
            conn,
            alice,
            &Query {
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
        let first = rows[0].clone();
        assert_eq!(
            (
                &back[0].with,
                back[0].direction,
                back[0].offline,
                &back[0].xml
            ),
            (&first.with, first.direction, first.offline, &first.xml)
        );
        assert_eq!(count_pending(conn, alice).unwrap(), 13);
    }

    #[test]
    fn retention_spares_pending_rows_and_works_in_batches() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        let bob = account(&store, "bob");
        // ts = n seconds; odd rows pending offline delivery until the cursor passes them.
        let ids: Vec<i64> = (1..=10)
            .map(|n| append(conn, &new(alice, n, n % 2 == 1)).unwrap())
            .collect();
        append(conn, &new(bob, 11, false)).unwrap();
        advance_cursor(conn, alice, OFFLINE_CURSOR, ids[2]).unwrap(); // rows 1 and 3 delivered
        let left = |account| {
            query(
                conn,
                account,
                &Query {
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap()
            .iter()
            .map(|e| e.ts / 1_000_000)
            .collect::<Vec<_>>()
        };
        // Older than 8 s: rows 1..=7 except the pending 5 and 7, two at a time.
        assert_eq!(delete_older(conn, alice, 8_000_000, 2).unwrap(), 2);
        assert_eq!(left(alice), [3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(delete_older(conn, alice, 8_000_000, 2).unwrap(), 2);
        assert_eq!(delete_older(conn, alice, 8_000_000, 2).unwrap(), 1);
        assert_eq!(delete_older(conn, alice, 8_000_000, 2).unwrap(), 0);
        assert_eq!(left(alice), [5, 7, 8, 9, 10]);
        // Keep the newest 2: 5 and 7 are pending, 8 goes.
        assert_eq!(delete_beyond(conn, alice, 2, 100).unwrap(), 1);
        assert_eq!(left(alice), [5, 7, 9, 10]);
        advance_cursor(conn, alice, OFFLINE_CURSOR, ids[9]).unwrap();
        assert_eq!(delete_beyond(conn, alice, 2, 1).unwrap(), 1);
        assert_eq!(delete_beyond(conn, alice, 2, 1).unwrap(), 1);
        assert_eq!(delete_beyond(conn, alice, 2, 1).unwrap(), 0);
        assert_eq!(left(alice), [9, 10]);
        // Other accounts are untouched.
        assert_eq!(left(bob), [11]);
        assert_eq!(account_ids(conn).unwrap(), [alice, bob]);
    }

    #[test]
    fn rows_go_with_their_account_and_ids_are_unique() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let alice = account(&store, "alice");
        append(conn, &new(alice, 1, true)).unwrap();
        assert!(
            append(conn, &new(alice, 1, true)).is_err(),
            "duplicate stanza id accepted"
        );
        advance_cursor(conn, alice, OFFLINE_CURSOR, 1).unwrap();
        store.delete_account("alice", "localhost").unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))
            .unwrap();
        let c: i64 = conn
            .query_row("SELECT count(*) FROM mailbox_cursor", [], |r| r.get(0))
            .unwrap();
        assert_eq!((n, c), (0, 0));
        // A row for an account that no longer exists is refused, not orphaned.
        assert!(append(conn, &new(alice, 2, true)).is_err());
    }
}
