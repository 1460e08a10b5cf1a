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
    pub settings: Vec<(String, String)>,
}

const SELECT: &str = "SELECT t.id, a.username, a.domain, t.service, t.protocol, t.username, t.password, t.enabled \
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
                "INSERT INTO transport_accounts (account, service, protocol, username, password, enabled, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6) \
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
}
