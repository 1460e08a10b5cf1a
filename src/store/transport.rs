//! The IM transport's tables: legacy accounts (one wockd account may have several per
//! service), their settings, and the group chats to re-join.
//!
//! Legacy passwords are stored here in clear: libpurple needs them to log in, and they are
//! the one copy (never in libpurple's `accounts.xml`). The database file is 0600 and
//! `secure_delete` is on (see `store/mod.rs`).

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = r#"
    CREATE TABLE transport_accounts (
        id       INTEGER PRIMARY KEY,
        account  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        service  TEXT NOT NULL,      -- the service domain, e.g. irc.localhost
        protocol TEXT NOT NULL,      -- the prpl id, e.g. prpl-irc
        username TEXT NOT NULL,      -- libpurple's username, user splits included
        password TEXT,
        enabled  INTEGER NOT NULL DEFAULT 1,
        created  INTEGER NOT NULL,
        UNIQUE (account, service, username)
    );
    CREATE TABLE transport_settings (
        legacy INTEGER NOT NULL REFERENCES transport_accounts (id) ON DELETE CASCADE,
        key    TEXT NOT NULL,        -- a protocol option's setting name
        value  TEXT NOT NULL,
        PRIMARY KEY (legacy, key)
    );
    CREATE TABLE transport_rooms (
        legacy INTEGER NOT NULL REFERENCES transport_accounts (id) ON DELETE CASCADE,
        room   TEXT NOT NULL,        -- the legacy room name, e.g. #wockd
        nick   TEXT,
        PRIMARY KEY (legacy, room)
    );
"#;

/// Migration: the slot that tells apart the contact JIDs of a user's accounts on one service
/// (0 → `name@irc.example`, 1 → `name%2@irc.example`, …). Stored so that a contact's JID
/// never changes, whatever the user adds or removes later. Existing accounts get the slots
/// they were given at run time before (in id order).
pub(super) const SLOTS: &str = r#"
    ALTER TABLE transport_accounts ADD COLUMN slot INTEGER;
    UPDATE transport_accounts SET slot = (
        SELECT count(*) FROM transport_accounts o
        WHERE o.account = transport_accounts.account AND o.service = transport_accounts.service
          AND o.id < transport_accounts.id);
    CREATE UNIQUE INDEX transport_accounts_slot ON transport_accounts (account, service, slot);
"#;

/// One legacy account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyAccount {
    pub id: i64,
    /// Owner: the local account's node and domain.
    pub owner: (String, String),
    pub service: String,
    pub protocol: String,
    pub username: String,
    pub password: Option<String>,
    pub enabled: bool,
    /// Contact-JID slot among the owner's accounts on this service (see [`SLOTS`]).
    pub slot: usize,
    pub settings: Vec<(String, String)>,
}

const SELECT: &str = "SELECT t.id, a.username, a.domain, t.service, t.protocol, t.username, t.password, t.enabled, t.slot \
     FROM transport_accounts t JOIN accounts a ON a.id = t.account";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LegacyAccount> {
    Ok(LegacyAccount {
        id: r.get(0)?,
        owner: (r.get(1)?, r.get(2)?),
        service: r.get(3)?,
        protocol: r.get(4)?,
        username: r.get(5)?,
        password: r.get(6)?,
        enabled: r.get::<_, i64>(7)? != 0,
        slot: r.get::<_, Option<i64>>(8)?.unwrap_or(0).max(0) as usize,
        settings: Vec::new(),
    })
}

impl Store {
    fn with_settings(
        &self,
        mut list: Vec<LegacyAccount>,
    ) -> Result<Vec<LegacyAccount>, StoreError> {
        let mut st = self.conn().prepare_cached(
            "SELECT key, value FROM transport_settings WHERE legacy = ?1 ORDER BY key",
        )?;
        for a in &mut list {
            a.settings = st
                .query_map([a.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
        }
        Ok(list)
    }

    /// Every legacy account (for start-up).
    pub fn legacy_accounts(&self) -> Result<Vec<LegacyAccount>, StoreError> {
        let list = self
            .conn()
            .prepare_cached(&format!("{SELECT} ORDER BY t.id"))?
            .query_map([], row)?
            .collect::<Result<Vec<_>, _>>()?;
        self.with_settings(list)
    }

    pub fn legacy_account(&self, id: i64) -> Result<Option<LegacyAccount>, StoreError> {
        let one = self
            .conn()
            .prepare_cached(&format!("{SELECT} WHERE t.id = ?1"))?
            .query_row([id], row)
            .optional()?;
        Ok(self.with_settings(one.into_iter().collect())?.pop())
    }

    /// Creates or updates (same owner, service and username) a legacy account; returns its id.
    pub fn save_legacy_account(
        &self,
        owner: (&str, &str),
        service: &str,
        protocol: &str,
        username: &str,
        password: Option<&str>,
        settings: &[(String, String)],
    ) -> Result<i64, StoreError> {
        let Some(account) = self.account_id(owner.0, owner.1)? else {
            return Err(StoreError::NoSuchAccount);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.transaction(|tx| {
            tx.execute(
                // A new account takes the lowest slot free among the owner's on the service.
                "INSERT INTO transport_accounts (account, service, protocol, username, password, enabled, created, slot) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, \
                   (SELECT min(s) FROM (SELECT 0 AS s UNION ALL SELECT slot + 1 FROM transport_accounts \
                                        WHERE account = ?1 AND service = ?2 AND slot IS NOT NULL) \
                    WHERE s NOT IN (SELECT slot FROM transport_accounts \
                                    WHERE account = ?1 AND service = ?2 AND slot IS NOT NULL))) \
                 ON CONFLICT (account, service, username) DO UPDATE SET password = excluded.password, enabled = 1",
                params![account, service, protocol, username, password, now],
            )?;
            let id: i64 = tx.query_row(
                "SELECT id FROM transport_accounts WHERE account = ?1 AND service = ?2 AND username = ?3",
                params![account, service, username],
                |r| r.get(0),
            )?;
            tx.execute("DELETE FROM transport_settings WHERE legacy = ?1", [id])?;
            for (k, v) in settings {
                tx.execute(
                    "INSERT INTO transport_settings (legacy, key, value) VALUES (?1, ?2, ?3)",
                    params![id, k, v],
                )?;
            }
            Ok(id)
        })
    }

    pub fn set_legacy_enabled(&self, id: i64, enabled: bool) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE transport_accounts SET enabled = ?2 WHERE id = ?1")?
            .execute(params![id, enabled as i64])?;
        Ok(())
    }

    pub fn delete_legacy_account(&self, id: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM transport_accounts WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// Rooms to re-join for a legacy account: (room, nick).
    pub fn legacy_rooms(&self, id: i64) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT room, nick FROM transport_rooms WHERE legacy = ?1 ORDER BY room",
            )?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    }

    pub fn save_legacy_room(
        &self,
        id: i64,
        room: &str,
        nick: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO transport_rooms (legacy, room, nick) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id, room, nick])?;
        Ok(())
    }

    pub fn delete_legacy_room(&self, id: i64, room: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM transport_rooms WHERE legacy = ?1 AND room = ?2")?
            .execute(params![id, room])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_accounts_round_trip_and_cascade() {
        let s = Store::open_in_memory().unwrap();
        s.create_account("alice", "localhost", &[]).unwrap();
        let id = s
            .save_legacy_account(
                ("alice", "localhost"),
                "irc.localhost",
                "prpl-irc",
                "al@127.0.0.1",
                Some("pw"),
                &[("port".into(), "6667".into())],
            )
            .unwrap();
        let again = s
            .save_legacy_account(
                ("alice", "localhost"),
                "irc.localhost",
                "prpl-irc",
                "al@127.0.0.1",
                Some("pw2"),
                &[],
            )
            .unwrap();
        assert_eq!(id, again);
        let a = s.legacy_account(id).unwrap().unwrap();
        assert_eq!(a.password.as_deref(), Some("pw2"));
        assert!(a.settings.is_empty());
        s.save_legacy_room(id, "#x", Some("al")).unwrap();
        assert_eq!(s.legacy_rooms(id).unwrap().len(), 1);
        s.delete_account("alice", "localhost").unwrap();
        assert!(s.legacy_accounts().unwrap().is_empty());
    }

    #[test]
    fn contact_slots_are_stable_across_removals() {
        let s = Store::open_in_memory().unwrap();
        s.create_account("alice", "localhost", &[]).unwrap();
        s.create_account("bob", "localhost", &[]).unwrap();
        let add = |owner: &str, service: &str, user: &str| {
            s.save_legacy_account((owner, "localhost"), service, "prpl-irc", user, None, &[])
                .unwrap()
        };
        let slot = |id| s.legacy_account(id).unwrap().unwrap().slot;
        let a = add("alice", "irc.localhost", "a@one");
        let b = add("alice", "irc.localhost", "a@two");
        let c = add("alice", "irc.localhost", "a@three");
        assert_eq!((slot(a), slot(b), slot(c)), (0, 1, 2));
        // Other owners and other services count from 0 on their own.
        assert_eq!(slot(add("bob", "irc.localhost", "b@one")), 0);
        assert_eq!(slot(add("alice", "xmpp.localhost", "a@x")), 0);
        // Removing the first keeps the others where they are; a new one fills the gap.
        s.delete_legacy_account(a).unwrap();
        assert_eq!((slot(b), slot(c)), (1, 2));
        let d = add("alice", "irc.localhost", "a@four");
        assert_eq!(slot(d), 0);
        // Saving an existing account again (new password) keeps its slot.
        assert_eq!(add("alice", "irc.localhost", "a@three"), c);
        assert_eq!(slot(c), 2);
        assert_eq!(slot(add("alice", "irc.localhost", "a@five")), 3);
    }

    #[test]
    fn slot_migration_keeps_the_run_time_order() {
        use rusqlite::Connection;
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE transport_accounts (id INTEGER PRIMARY KEY, account INTEGER, \
             service TEXT, username TEXT); \
             INSERT INTO transport_accounts VALUES (1, 1, 'irc', 'x'), (2, 2, 'irc', 'y'), \
             (3, 1, 'irc', 'z'), (4, 1, 'xmpp', 'w'), (5, 1, 'irc', 'v');",
        )
        .unwrap();
        conn.execute_batch(SLOTS).unwrap();
        let slots: Vec<(i64, i64)> = conn
            .prepare("SELECT id, slot FROM transport_accounts ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(slots, [(1, 0), (2, 0), (3, 1), (4, 0), (5, 2)]);
    }
}
