//! Local accounts and their SCRAM verifiers.
//!
//! Usernames and domains are stored and compared exactly as given: the
//! caller has already normalised them (nodeprep / nameprep), so equal
//! accounts are equal byte strings.

use foldhash::HashMap;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};
use crate::auth::scram::{Hash, ScramKeys};

/// The SASL mechanism name a verifier is stored under.
fn mechanism(hash: Hash) -> &'static str {
    match hash {
        Hash::Sha1 => "SCRAM-SHA-1",
        Hash::Sha256 => "SCRAM-SHA-256",
    }
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Inserts one verifier per entry of `keys` for account `id`. The same hash
/// twice is an error (primary key violation).
fn insert_keys(conn: &Connection, id: i64, keys: &[(Hash, ScramKeys)]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO account_keys (account, mechanism, salt, iterations, stored_key, server_key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (hash, k) in keys {
        stmt.execute(params![
            id,
            mechanism(*hash),
            k.salt,
            k.iterations,
            k.stored_key,
            k.server_key
        ])?;
    }
    Ok(())
}

fn lookup_id(conn: &Connection, username: &str, domain: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM accounts WHERE username = ?1 AND domain = ?2")?
        .query_row(params![username, domain], |r| r.get(0))
        .optional()?)
}

/// A counter of changes to accounts, kept by triggers, so that the server notices what another
/// process (the command line, or anyone with the database file) does to accounts and their
/// verifiers without being woken by every other commit (the mailbox's, many per second).
/// Creating an account does not count: nothing cached depends on an account being absent.
pub(super) const CHANGES: &str = r#"
    CREATE TABLE account_changes (n INTEGER NOT NULL);
    INSERT INTO account_changes (n) VALUES (0);
    CREATE TRIGGER accounts_deleted AFTER DELETE ON accounts
        BEGIN UPDATE account_changes SET n = n + 1; END;
    CREATE TRIGGER accounts_updated AFTER UPDATE ON accounts
        BEGIN UPDATE account_changes SET n = n + 1; END;
    CREATE TRIGGER account_keys_deleted AFTER DELETE ON account_keys
        BEGIN UPDATE account_changes SET n = n + 1; END;
    CREATE TRIGGER account_keys_updated AFTER UPDATE ON account_keys
        BEGIN UPDATE account_changes SET n = n + 1; END;
"#;

fn changes(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT n FROM account_changes")?
        .query_row([], |r| r.get(0))?)
}

/// How long a check that no other process changed the database vouches for the cached account
/// ids (see [`IdCache`]). Short: under load that is still a thousand lookups or more per check.
const ID_CACHE_TRUST: Duration = Duration::from_millis(1);

/// Account ids already looked up, by domain and username: every routed message needs its
/// sender's and its recipient's, and an SQL query outside a transaction costs a read
/// transaction (file locks on the WAL index) each time.
///
/// Only existing accounts are cached. The server's own deletions clear the cache at once;
/// the command line (`wockd deluser`/`passwd`) writes from another process, which the cache
/// notices through the change counter (see [`CHANGES`]). That check is itself a read
/// transaction, so it is made at most every [`ID_CACHE_TRUST`]: an account another process
/// deletes is seen as gone at most that long afterwards. (Account ids can be reused —
/// `INTEGER PRIMARY KEY`, no `AUTOINCREMENT` — so a deletion and a new account within that
/// millisecond could hand out the new account's id for the old name. Uncached lookups have the
/// same race over a longer window: a message's mailbox row is written by the commit at the end
/// of the loop turn, after its recipient's id was looked up.)
///
/// Not `PRAGMA data_version`: that changes with every commit of any other connection, and the
/// store's writer thread is another connection, committing every few milliseconds under load.
/// The cache was then emptied after nearly every commit and refilled by SQL lookups on the
/// message path.
#[derive(Debug, Default)]
pub(super) struct IdCache {
    ids: RefCell<HashMap<String, HashMap<String, i64>>>,
    /// The change counter when `ids` was last known to be current, and when that was.
    checked: Cell<Option<(i64, Instant)>>,
}

impl IdCache {
    /// The cached id of `username@domain`, after making sure the cache is current.
    fn get(
        &self,
        conn: &Connection,
        username: &str,
        domain: &str,
    ) -> Result<Option<i64>, StoreError> {
        let now = Instant::now();
        match self.checked.get() {
            Some((_, at)) if now.duration_since(at) < ID_CACHE_TRUST => {}
            previous => {
                let version = changes(conn)?;
                if previous.is_none_or(|(v, _)| v != version) {
                    self.ids.borrow_mut().clear();
                }
                self.checked.set(Some((version, now)));
            }
        }
        Ok(self
            .ids
            .borrow()
            .get(domain)
            .and_then(|users| users.get(username))
            .copied())
    }

    fn insert(&self, username: &str, domain: &str, id: i64) {
        self.ids
            .borrow_mut()
            .entry(domain.to_owned())
            .or_default()
            .insert(username.to_owned(), id);
    }

    fn clear(&self) {
        self.ids.borrow_mut().clear();
    }
}

/// [`Store::create_account`] inside a transaction (a write job of the store's writer).
pub fn create_account_tx(
    tx: &rusqlite::Transaction<'_>,
    username: &str,
    domain: &str,
    keys: &[(Hash, ScramKeys)],
) -> Result<(), StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO accounts (username, domain, created) VALUES (?1, ?2, ?3)
             ON CONFLICT (username, domain) DO NOTHING",
        )?
        .execute(params![username, domain, unix_now()])?;
    if inserted == 0 {
        return Err(StoreError::AccountExists);
    }
    insert_keys(tx, tx.last_insert_rowid(), keys)
}

/// [`Store::set_keys`] inside a transaction.
pub fn set_keys_tx(
    tx: &rusqlite::Transaction<'_>,
    username: &str,
    domain: &str,
    keys: &[(Hash, ScramKeys)],
) -> Result<(), StoreError> {
    let id = lookup_id(tx, username, domain)?.ok_or(StoreError::NoSuchAccount)?;
    tx.prepare_cached("DELETE FROM account_keys WHERE account = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM fast_tokens WHERE account = ?1")?
        .execute([id])?;
    insert_keys(tx, id, keys)
}

/// [`Store::delete_account`] inside a transaction (the caller forgets cached ids after it
/// commits: [`Store::forget_account_ids`]).
pub fn delete_account_tx(
    tx: &rusqlite::Transaction<'_>,
    username: &str,
    domain: &str,
) -> Result<(), StoreError> {
    let deleted = tx
        .prepare_cached("DELETE FROM accounts WHERE username = ?1 AND domain = ?2")?
        .execute(params![username, domain])?;
    if deleted == 0 {
        return Err(StoreError::NoSuchAccount);
    }
    Ok(())
}

impl Store {
    /// Creates the account `username@domain` with the given SCRAM verifiers
    /// (normally one per supported hash), in one transaction.
    ///
    /// Fails with [`StoreError::AccountExists`] if it already exists.
    pub fn create_account(
        &self,
        username: &str,
        domain: &str,
        keys: &[(Hash, ScramKeys)],
    ) -> Result<(), StoreError> {
        self.transaction(|tx| create_account_tx(tx, username, domain, keys))
    }

    /// Replaces all SCRAM verifiers of `username@domain` with `keys` (a
    /// password change), in one transaction, and revokes the account's XEP-0484
    /// FAST tokens in the same transaction: a token issued under the old
    /// password must not outlive it (in-band change and `wockd passwd` alike).
    ///
    /// Fails with [`StoreError::NoSuchAccount`] if the account does not exist.
    pub fn set_keys(
        &self,
        username: &str,
        domain: &str,
        keys: &[(Hash, ScramKeys)],
    ) -> Result<(), StoreError> {
        self.transaction(|tx| set_keys_tx(tx, username, domain, keys))
    }

    /// Deletes `username@domain` and, through `ON DELETE CASCADE`, its keys
    /// and everything else stored for it.
    ///
    /// Fails with [`StoreError::NoSuchAccount`] if the account does not exist.
    pub fn delete_account(&self, username: &str, domain: &str) -> Result<(), StoreError> {
        // Whatever happens next, no id of a deleted account stays cached.
        self.account_ids.clear();
        let deleted = self
            .conn
            .prepare_cached("DELETE FROM accounts WHERE username = ?1 AND domain = ?2")?
            .execute(params![username, domain])?;
        if deleted == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        Ok(())
    }

    /// Forgets the cached account ids (after an account was deleted by a write job).
    pub fn forget_account_ids(&self) {
        self.account_ids.clear();
    }

    /// The accounts' change counter (see [`CHANGES`]): different from an earlier reading when
    /// an account was deleted or renamed or its verifiers changed since, by this server or by
    /// another process (the command line: `wockd passwd`, `wockd deluser`).
    pub fn account_changes(&self) -> Result<i64, StoreError> {
        changes(&self.conn)
    }

    /// Whether `username@domain` exists.
    pub fn account_exists(&self, username: &str, domain: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE username = ?1 AND domain = ?2)",
            )?
            .query_row(params![username, domain], |r| r.get(0))?)
    }

    /// The SCRAM verifier of `username@domain` for `hash`, or `None` if the
    /// account does not exist or has no verifier for that hash.
    ///
    /// On the login path: the statement is cached.
    pub fn account_keys(
        &self,
        username: &str,
        domain: &str,
        hash: Hash,
    ) -> Result<Option<ScramKeys>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT k.salt, k.iterations, k.stored_key, k.server_key
                 FROM accounts a JOIN account_keys k ON k.account = a.id
                 WHERE a.username = ?1 AND a.domain = ?2 AND k.mechanism = ?3",
            )?
            .query_row(params![username, domain, mechanism(hash)], |r| {
                Ok(ScramKeys {
                    salt: r.get(0)?,
                    iterations: r.get(1)?,
                    stored_key: r.get(2)?,
                    server_key: r.get(3)?,
                })
            })
            .optional()?)
    }

    /// Every account as `(username, domain)`, sorted by username, then
    /// domain (byte order, the same as Rust's `str` ordering).
    pub fn list_accounts(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT username, domain FROM accounts ORDER BY username, domain")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The row id of `username@domain`, for tables that reference
    /// `accounts(id)`; `None` if it does not exist.
    ///
    /// On the message path (twice per routed message): cached, see [`IdCache`].
    pub fn account_id(&self, username: &str, domain: &str) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.account_ids.get(&self.conn, username, domain)? {
            return Ok(Some(id));
        }
        let id = lookup_id(&self.conn, username, domain)?;
        if let Some(id) = id {
            self.account_ids.insert(username, domain, id);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8, iterations: u32) -> ScramKeys {
        ScramKeys {
            salt: vec![seed; 16],
            iterations,
            stored_key: vec![seed.wrapping_add(1); 32],
            server_key: vec![seed.wrapping_add(2); 32],
        }
    }

    fn both(seed: u8) -> Vec<(Hash, ScramKeys)> {
        vec![
            (Hash::Sha1, keys(seed, 4096)),
            (Hash::Sha256, keys(seed + 100, 8192)),
        ]
    }

    fn key_rows(store: &Store) -> i64 {
        store
            .conn()
            .query_row("SELECT count(*) FROM account_keys", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn create_and_read_back() {
        let store = Store::open_in_memory().unwrap();
        assert!(!store.account_exists("alice", "example.org").unwrap());
        assert_eq!(store.account_id("alice", "example.org").unwrap(), None);

        store
            .create_account("alice", "example.org", &both(1))
            .unwrap();
        assert!(store.account_exists("alice", "example.org").unwrap());
        assert!(store.account_id("alice", "example.org").unwrap().is_some());
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha1)
                .unwrap(),
            Some(keys(1, 4096))
        );
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha256)
                .unwrap(),
            Some(keys(101, 8192))
        );
        // Same name, other domain; other name, same domain.
        assert!(!store.account_exists("alice", "example.net").unwrap());
        assert_eq!(
            store
                .account_keys("bob", "example.org", Hash::Sha1)
                .unwrap(),
            None
        );
    }

    #[test]
    fn created_time_is_now() {
        let store = Store::open_in_memory().unwrap();
        store.create_account("a", "d", &[]).unwrap();
        let created: i64 = store
            .conn()
            .query_row("SELECT created FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert!((unix_now() - created).abs() < 60);
    }

    #[test]
    fn duplicate_is_refused_and_changes_nothing() {
        let store = Store::open_in_memory().unwrap();
        store
            .create_account("alice", "example.org", &both(1))
            .unwrap();
        let err = store
            .create_account("alice", "example.org", &both(2))
            .unwrap_err();
        assert!(matches!(err, StoreError::AccountExists), "{err:?}");
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha1)
                .unwrap(),
            Some(keys(1, 4096))
        );
        assert_eq!(key_rows(&store), 2);
        // The same username on another domain is a different account.
        store
            .create_account("alice", "example.net", &both(3))
            .unwrap();
    }

    #[test]
    fn failed_create_rolls_back_the_account() {
        let store = Store::open_in_memory().unwrap();
        let dup = [(Hash::Sha1, keys(1, 1)), (Hash::Sha1, keys(2, 2))];
        let err = store
            .create_account("alice", "example.org", &dup)
            .unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
        assert!(!store.account_exists("alice", "example.org").unwrap());
        assert_eq!(key_rows(&store), 0);
    }

    #[test]
    fn set_keys_replaces_all_keys() {
        let store = Store::open_in_memory().unwrap();
        store
            .create_account("alice", "example.org", &both(1))
            .unwrap();
        store
            .set_keys("alice", "example.org", &[(Hash::Sha256, keys(7, 10000))])
            .unwrap();
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha1)
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha256)
                .unwrap(),
            Some(keys(7, 10000))
        );
        assert_eq!(key_rows(&store), 1);

        let err = store.set_keys("bob", "example.org", &both(1)).unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount), "{err:?}");
        assert_eq!(key_rows(&store), 1);
    }

    #[test]
    fn delete_cascades_to_keys() {
        let store = Store::open_in_memory().unwrap();
        store
            .create_account("alice", "example.org", &both(1))
            .unwrap();
        store
            .create_account("bob", "example.org", &both(2))
            .unwrap();
        store.delete_account("alice", "example.org").unwrap();
        assert!(!store.account_exists("alice", "example.org").unwrap());
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha1)
                .unwrap(),
            None
        );
        assert_eq!(key_rows(&store), 2, "only bob's keys remain");

        let err = store.delete_account("alice", "example.org").unwrap_err();
        assert!(matches!(err, StoreError::NoSuchAccount), "{err:?}");

        // Re-creating the name starts from a clean slate.
        store
            .create_account("alice", "example.org", &[(Hash::Sha1, keys(9, 1))])
            .unwrap();
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha256)
                .unwrap(),
            None
        );
    }

    #[test]
    fn cached_ids_follow_deletions_here_and_in_other_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        let server = Store::open(&db).unwrap();
        server.create_account("alice", "example.org", &[]).unwrap();
        server.create_account("bob", "example.org", &[]).unwrap();
        let bob = server.account_id("bob", "example.org").unwrap().unwrap();
        assert_eq!(server.account_id("bob", "example.org").unwrap(), Some(bob));
        assert_eq!(server.account_id("bob", "example.net").unwrap(), None);

        // Deleted by this store: gone at once.
        server.delete_account("bob", "example.org").unwrap();
        assert_eq!(server.account_id("bob", "example.org").unwrap(), None);

        // Deleted and made again by another process (the command line), which may reuse the
        // id: the new one is seen once the cache's trust has run out.
        let alice = server.account_id("alice", "example.org").unwrap().unwrap();
        let cli = Store::open(&db).unwrap();
        cli.delete_account("alice", "example.org").unwrap();
        cli.create_account("carol", "example.org", &[]).unwrap();
        cli.create_account("alice", "example.org", &[]).unwrap();
        let again = cli.account_id("alice", "example.org").unwrap().unwrap();
        assert_ne!(again, alice);
        std::thread::sleep(ID_CACHE_TRUST * 2);
        assert_eq!(
            server.account_id("alice", "example.org").unwrap(),
            Some(again)
        );
        cli.delete_account("alice", "example.org").unwrap();
        std::thread::sleep(ID_CACHE_TRUST * 2);
        assert_eq!(server.account_id("alice", "example.org").unwrap(), None);
    }

    /// The change counter moves with deletions and verifier changes, from any connection, and
    /// not with the mailbox's commits (the writer thread's, many per second under load).
    #[test]
    fn change_counter_ignores_the_mailbox() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        let server = Store::open(&db).unwrap();
        server
            .create_account("alice", "example.org", &both(1))
            .unwrap();
        server
            .create_account("bob", "example.org", &both(2))
            .unwrap();
        let alice = server.account_id("alice", "example.org").unwrap().unwrap();
        let start = server.account_changes().unwrap();

        let other = Store::open(&db).unwrap();
        for n in 0..3 {
            super::super::mailbox::append(
                other.conn(),
                &super::super::mailbox::NewEntry {
                    account: alice,
                    stanza_id: format!("sid-{n}"),
                    ts: n,
                    with: "bob@example.org".into(),
                    direction: super::super::mailbox::Direction::In,
                    offline: false,
                    xml: b"<message/>".to_vec(),
                },
            )
            .unwrap();
        }
        assert_eq!(server.account_changes().unwrap(), start);

        other.set_keys("bob", "example.org", &both(3)).unwrap();
        let after_passwd = server.account_changes().unwrap();
        assert_ne!(after_passwd, start);
        other.delete_account("bob", "example.org").unwrap();
        assert_ne!(server.account_changes().unwrap(), after_passwd);
    }

    #[test]
    fn list_is_sorted() {
        let store = Store::open_in_memory().unwrap();
        assert!(store.list_accounts().unwrap().is_empty());
        for (u, d) in [
            ("bob", "b.org"),
            ("alice", "b.org"),
            ("bob", "a.org"),
            ("Zed", "a.org"),
        ] {
            store.create_account(u, d, &both(1)).unwrap();
        }
        let list = store.list_accounts().unwrap();
        let want: Vec<(String, String)> = [
            ("Zed", "a.org"),
            ("alice", "b.org"),
            ("bob", "a.org"),
            ("bob", "b.org"),
        ]
        .iter()
        .map(|(u, d)| (u.to_string(), d.to_string()))
        .collect();
        assert_eq!(list, want);
        assert!(list.is_sorted());
    }

    #[test]
    fn keys_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        Store::open(&db)
            .unwrap()
            .create_account("alice", "example.org", &both(5))
            .unwrap();
        let store = Store::open(&db).unwrap();
        assert_eq!(
            store
                .account_keys("alice", "example.org", Hash::Sha256)
                .unwrap(),
            Some(keys(105, 8192))
        );
        assert_eq!(
            store.list_accounts().unwrap(),
            [("alice".to_string(), "example.org".to_string())]
        );
    }
}
