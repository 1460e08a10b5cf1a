//! Rosters and subscription states (RFC 6121 §2, §3, Appendix A; XEP-0237 versions).
//!
//! One row per (account, contact bare JID) in `roster_items` holds everything the server knows
//! about that pair: the visible roster item (name, groups, subscription, pending-out `ask`,
//! pre-approval) and the pending-in subscription request, kept with the stanza itself so it
//! can be delivered again at each login until the user answers it (RFC 6121 §3.1.3). A request
//! from a contact the user has not added is stored in a row with `in_roster = 0`: RFC 6121
//! forbids creating a roster item for it, so such rows never show up in the roster.
//!
//! `roster_versions` holds a per-account counter, bumped by every change a client can see; its
//! decimal value is the XEP-0237 version string.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = r#"
    CREATE TABLE roster_items (
        account      INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        contact      TEXT NOT NULL,      -- bare JID, normalised
        name         TEXT,
        subscription TEXT NOT NULL DEFAULT 'none'
                     CHECK (subscription IN ('none', 'to', 'from', 'both')),
        ask          INTEGER NOT NULL DEFAULT 0,  -- pending-out
        pending_in   TEXT,                        -- the subscribe stanza awaiting an answer
        approved     INTEGER NOT NULL DEFAULT 0,  -- pre-approved (RFC 6121 §3.4)
        in_roster    INTEGER NOT NULL DEFAULT 1,  -- 0: only a pending-in request, no item
        PRIMARY KEY (account, contact)
    );
    CREATE TABLE roster_groups (
        account INTEGER NOT NULL,
        contact TEXT NOT NULL,
        name    TEXT NOT NULL,
        PRIMARY KEY (account, contact, name),
        FOREIGN KEY (account, contact) REFERENCES roster_items (account, contact) ON DELETE CASCADE
    );
    CREATE TABLE roster_versions (
        account INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
        version INTEGER NOT NULL
    );
"#;

/// The subscription state of a roster item (RFC 6121 §2.1.2.5), without the pending flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Subscription {
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// The user is subscribed to the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact is subscribed to the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with_to(self, on: bool) -> Subscription {
        Self::from_flags(on, self.has_from())
    }

    pub fn with_from(self, on: bool) -> Subscription {
        Self::from_flags(self.has_to(), on)
    }

    fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

/// Everything stored about one contact of one account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RosterRow {
    /// The contact's bare JID as a string (normalised by the caller).
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Pending-out: the user asked for a subscription the contact has not answered.
    pub ask: bool,
    /// Pending-in: the contact's subscribe stanza, serialised, awaiting the user's answer.
    pub pending_in: Option<String>,
    /// The user pre-approved a subscription request from the contact.
    pub approved: bool,
    /// Groups in the order the client gave them.
    pub groups: Vec<String>,
    /// False for a row that only records a pending-in request (no roster item).
    pub in_roster: bool,
}

impl RosterRow {
    /// A row that carries no state at all and need not be stored.
    pub fn is_empty(&self) -> bool {
        !self.in_roster && self.pending_in.is_none()
    }
}

impl Store {
    /// The roster version and every stored row of `account`.
    pub fn load_roster(&self, account: i64) -> Result<(i64, Vec<RosterRow>), StoreError> {
        let conn = self.conn();
        let version = current_version(conn, account)?;
        let mut rows = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT contact, name, subscription, ask, pending_in, approved, in_roster
             FROM roster_items WHERE account = ?1 ORDER BY contact",
        )?;
        let mut q = stmt.query(params![account])?;
        while let Some(r) = q.next()? {
            let sub: String = r.get(2)?;
            rows.push(RosterRow {
                contact: r.get(0)?,
                name: r.get(1)?,
                subscription: Subscription::parse(&sub).unwrap_or_default(),
                ask: r.get(3)?,
                pending_in: r.get(4)?,
                approved: r.get(5)?,
                groups: Vec::new(),
                in_roster: r.get(6)?,
            });
        }
        let mut stmt = conn.prepare_cached(
            "SELECT contact, name FROM roster_groups WHERE account = ?1 ORDER BY contact, rowid",
        )?;
        let mut q = stmt.query(params![account])?;
        while let Some(r) = q.next()? {
            let contact: String = r.get(0)?;
            let group: String = r.get(1)?;
            if let Ok(i) = rows.binary_search_by(|row| row.contact.as_str().cmp(&contact)) {
                rows[i].groups.push(group);
            }
        }
        Ok((version, rows))
    }

    /// Stores `row` (replacing what was stored for its contact; an empty row is deleted) and,
    /// when `bump` is set, increments the roster version. Returns the version now in force.
    pub fn save_roster_row(
        &self,
        account: i64,
        row: &RosterRow,
        bump: bool,
    ) -> Result<i64, StoreError> {
        self.transaction(|tx| {
            write_row(tx, account, row)?;
            finish(tx, account, bump)
        })
    }

    /// Deletes everything stored about `contact` and bumps the version when `bump` is set.
    pub fn delete_roster_row(
        &self,
        account: i64,
        contact: &str,
        bump: bool,
    ) -> Result<i64, StoreError> {
        self.transaction(|tx| {
            delete_row(tx, account, contact)?;
            finish(tx, account, bump)
        })
    }
}

/// Stores `row` as [`Store::save_roster_row`] does, on any connection (the writer thread's,
/// inside its batch), and sets the roster version to `version` when given (the roster cache
/// numbers versions as it changes, before the write is committed).
pub fn save_row(
    conn: &Connection,
    account: i64,
    row: &RosterRow,
    version: Option<i64>,
) -> Result<(), StoreError> {
    write_row(conn, account, row)?;
    if let Some(v) = version {
        conn.prepare_cached(
            "INSERT INTO roster_versions (account, version) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET version = excluded.version",
        )?
        .execute(params![account, v])?;
    }
    Ok(())
}

/// Stores `row`, replacing what was stored for its contact; an empty row is deleted.
fn write_row(conn: &Connection, account: i64, row: &RosterRow) -> Result<(), StoreError> {
    if row.is_empty() {
        return delete_row(conn, account, &row.contact);
    }
    conn.prepare_cached(
        "INSERT INTO roster_items
            (account, contact, name, subscription, ask, pending_in, approved, in_roster)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (account, contact) DO UPDATE SET
            name = excluded.name, subscription = excluded.subscription,
            ask = excluded.ask, pending_in = excluded.pending_in,
            approved = excluded.approved, in_roster = excluded.in_roster",
    )?
    .execute(params![
        account,
        row.contact,
        row.name,
        row.subscription.as_str(),
        row.ask,
        row.pending_in,
        row.approved,
        row.in_roster
    ])?;
    conn.prepare_cached("DELETE FROM roster_groups WHERE account = ?1 AND contact = ?2")?
        .execute(params![account, row.contact])?;
    let mut ins = conn.prepare_cached(
        "INSERT OR IGNORE INTO roster_groups (account, contact, name) VALUES (?1, ?2, ?3)",
    )?;
    for g in &row.groups {
        ins.execute(params![account, row.contact, g])?;
    }
    Ok(())
}

fn delete_row(conn: &Connection, account: i64, contact: &str) -> Result<(), StoreError> {
    // Groups go with the row (ON DELETE CASCADE).
    conn.prepare_cached("DELETE FROM roster_items WHERE account = ?1 AND contact = ?2")?
        .execute(params![account, contact])?;
    Ok(())
}

fn finish(conn: &Connection, account: i64, bump: bool) -> Result<i64, StoreError> {
    if !bump {
        return current_version(conn, account);
    }
    Ok(conn
        .prepare_cached(
            "INSERT INTO roster_versions (account, version) VALUES (?1, 1)
             ON CONFLICT (account) DO UPDATE SET version = version + 1
             RETURNING version",
        )?
        .query_row(params![account], |r| r.get(0))?)
}

fn current_version(conn: &Connection, account: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT version FROM roster_versions WHERE account = ?1")?
        .query_row(params![account], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_account() -> (Store, i64) {
        let store = Store::open_in_memory().unwrap();
        store.create_account("alice", "example.org", &[]).unwrap();
        let id = store.account_id("alice", "example.org").unwrap().unwrap();
        (store, id)
    }

    #[test]
    fn rows_round_trip_and_versions_count() {
        let (store, id) = store_with_account();
        assert_eq!(store.load_roster(id).unwrap(), (0, vec![]));
        let row = RosterRow {
            contact: "bob@example.org".into(),
            name: Some("Bob".into()),
            subscription: Subscription::To,
            ask: false,
            pending_in: Some("<presence type='subscribe'/>".into()),
            approved: false,
            groups: vec!["Friends".into(), "Work".into()],
            in_roster: true,
        };
        assert_eq!(store.save_roster_row(id, &row, true).unwrap(), 1);
        let hidden = RosterRow {
            contact: "carol@example.org".into(),
            pending_in: Some("<presence/>".into()),
            ..RosterRow::default()
        };
        assert_eq!(store.save_roster_row(id, &hidden, false).unwrap(), 1);
        let (v, rows) = store.load_roster(id).unwrap();
        assert_eq!(v, 1);
        assert_eq!(rows, vec![row.clone(), hidden.clone()]);

        // Saving an empty row deletes it, and groups are replaced, not merged.
        let mut row2 = row.clone();
        row2.groups = vec!["Work".into()];
        store.save_roster_row(id, &row2, true).unwrap();
        store
            .save_roster_row(
                id,
                &RosterRow {
                    contact: hidden.contact.clone(),
                    ..RosterRow::default()
                },
                false,
            )
            .unwrap();
        assert_eq!(store.load_roster(id).unwrap(), (2, vec![row2]));

        assert_eq!(
            store
                .delete_roster_row(id, "bob@example.org", true)
                .unwrap(),
            3
        );
        assert_eq!(store.load_roster(id).unwrap(), (3, vec![]));
    }

    #[test]
    fn account_deletion_removes_the_roster() {
        let (store, id) = store_with_account();
        let row = RosterRow {
            contact: "bob@example.org".into(),
            groups: vec!["G".into()],
            in_roster: true,
            ..RosterRow::default()
        };
        store.save_roster_row(id, &row, true).unwrap();
        store.delete_account("alice", "example.org").unwrap();
        let n: i64 = store
            .conn()
            .query_row(
                "SELECT (SELECT count(*) FROM roster_items) + (SELECT count(*) FROM roster_groups)
                      + (SELECT count(*) FROM roster_versions)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn subscription_flags() {
        assert_eq!(Subscription::None.with_to(true), Subscription::To);
        assert_eq!(Subscription::To.with_from(true), Subscription::Both);
        assert_eq!(Subscription::Both.with_to(false), Subscription::From);
        assert_eq!(Subscription::From.with_from(false), Subscription::None);
        assert!(Subscription::Both.has_to() && Subscription::Both.has_from());
    }
}
