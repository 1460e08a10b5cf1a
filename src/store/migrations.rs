//! Versioned schema migrations.
//!
//! `PRAGMA user_version` holds how many entries of [`MIGRATIONS`] a database
//! has had applied (0 for a new file). On open, the missing ones are applied
//! in order, all in one `BEGIN IMMEDIATE` transaction, and `user_version` is
//! set in that same transaction: an upgrade either happens entirely or not at
//! all, and two processes opening the file at once cannot both apply it.
//!
//! **To change the schema, append one string to [`MIGRATIONS`].** Never edit,
//! reorder or remove an entry that has been released: databases in the field
//! only record how many entries they have run.
//!
//! A migration is a batch of SQL statements. Migrations run with foreign keys
//! off, so a table can be rebuilt (create new, copy, drop old, rename — the
//! only way to make most changes in SQLite) without `ON DELETE CASCADE`
//! wiping dependent rows; `PRAGMA foreign_key_check` must come out clean
//! before the upgrade commits. Statements that cannot run inside a
//! transaction (`VACUUM`, `PRAGMA journal_mode`, `PRAGMA foreign_keys`) do
//! not belong here.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::StoreError;

/// The schema, one entry per version: entry `i` takes a database from
/// version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: accounts and their SCRAM verifiers. Never a password column.
    r#"
    CREATE TABLE accounts (
        id       INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        domain   TEXT NOT NULL,
        created  INTEGER NOT NULL,   -- Unix time, seconds
        UNIQUE (username, domain)
    );
    CREATE TABLE account_keys (
        account    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        mechanism  TEXT NOT NULL,    -- 'SCRAM-SHA-1' | 'SCRAM-SHA-256'
        salt       BLOB NOT NULL,
        iterations INTEGER NOT NULL,
        stored_key BLOB NOT NULL,
        server_key BLOB NOT NULL,
        PRIMARY KEY (account, mechanism)
    );
    "#,
    // 2: rosters (src/store/roster.rs).
    super::roster::SCHEMA,
    // 3: the mailbox (src/store/mailbox.rs).
    super::mailbox::SCHEMA,
    // 4: vCards, private XML, blocklists, last activity (src/store/xeps.rs).
    super::xeps::SCHEMA,
    // 5: the IM transport: legacy accounts, settings, rooms (src/store/transport.rs).
    super::transport::SCHEMA,
    // 6: the torrent service: jobs and per-user settings (src/store/torrents.rs).
    super::torrents::SCHEMA,
    // 7: XEP-0484 FAST tokens (src/store/fast.rs).
    super::fast::SCHEMA,
    // XEP-0313 archive preferences (src/store/mam.rs).
    super::mam::SCHEMA,
    // XEP-0163 PEP nodes and items (src/store/pep.rs).
    super::pep::SCHEMA,
    // The IM transport: a stored contact-JID slot per legacy account (src/store/transport.rs).
    super::transport::SLOTS,
    // XEP-0484 FAST tokens kept as a hash of the proof, not the proof (src/store/fast.rs).
    super::fast::HASHED,
    // A counter of changes to accounts, kept by triggers (src/store/accounts.rs).
    super::accounts::CHANGES,
    // The mailbox's time stamps non-decreasing in id order; no index on (account, ts)
    // (src/store/mailbox.rs).
    super::mailbox::MONOTONIC_TS,
];

/// Brings the schema of `conn` up to date with [`MIGRATIONS`].
///
/// May leave `PRAGMA foreign_keys` off; the caller turns it on afterwards.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    apply(conn, MIGRATIONS)
}

fn apply(conn: &Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let known = migrations.len() as i64;
    // Fast path without taking the write lock: the usual case, and lets a
    // CLI command open the database while the server is busy writing.
    let found = user_version(conn)?;
    check_version(found, known)?;
    if found == known {
        return Ok(());
    }

    // Only effective outside a transaction.
    conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    // Read again under the write lock: another process may have migrated
    // the file meanwhile.
    let found = user_version(&tx)?;
    check_version(found, known)?;
    if found == known {
        return Ok(()); // dropping `tx` ends the (empty) transaction
    }
    for (index, sql) in migrations.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(|error| StoreError::Migration {
                version: index + 1,
                error,
            })?;
    }
    let violations = foreign_key_violations(&tx)?;
    if violations > 0 {
        return Err(StoreError::MigrationForeignKeys {
            version: migrations.len(),
            violations,
        });
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    tracing::info!(from = found, to = known, "database schema upgraded");
    Ok(())
}

fn check_version(found: i64, known: i64) -> Result<(), StoreError> {
    if (0..=known).contains(&found) {
        Ok(())
    } else {
        Err(StoreError::TooNew { found, known })
    }
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

fn foreign_key_violations(conn: &Connection) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while rows.next()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn version(conn: &Connection) -> i64 {
        user_version(conn).unwrap()
    }

    #[test]
    fn fresh_database_gets_every_migration() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
        let t = tables(&conn);
        for want in [
            "account_keys",
            "accounts",
            "mailbox",
            "roster_items",
            "torrent_jobs",
            "transport_accounts",
        ] {
            assert!(t.iter().any(|n| n == want), "{want} missing from {t:?}");
        }
        // And again: nothing to do, no error.
        migrate(&conn).unwrap();
        assert_eq!(version(&conn), MIGRATIONS.len() as i64);
    }

    #[test]
    fn no_table_holds_a_wockd_password() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        for table in tables(&conn) {
            let mut stmt = conn
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .unwrap();
            let columns: Vec<String> = stmt
                .query_map([&table], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(!columns.is_empty());
            for c in columns {
                // The one exception: a legacy network's password, which libpurple must send
                // in the clear to that network; wockd's own accounts keep SCRAM keys only.
                if (table.as_str(), c.as_str()) == ("transport_accounts", "password") {
                    continue;
                }
                assert!(!c.to_lowercase().contains("pass"), "{table}.{c}");
            }
        }
    }

    #[test]
    fn appended_migration_runs_only_the_new_step() {
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn, &["CREATE TABLE a (x)"]).unwrap();
        conn.execute("INSERT INTO a VALUES (1)", []).unwrap();
        // Were the first migration run again, CREATE TABLE would fail.
        apply(&conn, &["CREATE TABLE a (x)", "CREATE TABLE b (y)"]).unwrap();
        assert_eq!(version(&conn), 2);
        assert_eq!(tables(&conn), ["a", "b"]);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn failed_migration_changes_nothing() {
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn, &["CREATE TABLE a (x)"]).unwrap();
        let err = apply(
            &conn,
            &["CREATE TABLE a (x)", "CREATE TABLE b (y)", "NOT SQL AT ALL"],
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { version: 3, .. }),
            "{err:?}"
        );
        assert_eq!(version(&conn), 1);
        assert_eq!(tables(&conn), ["a"]);
        assert!(conn.is_autocommit(), "transaction left open");
    }

    #[test]
    fn foreign_key_violation_rolls_back() {
        let conn = Connection::open_in_memory().unwrap();
        let steps = [
            "CREATE TABLE p (id INTEGER PRIMARY KEY); \
             CREATE TABLE c (p INTEGER REFERENCES p (id));",
            "INSERT INTO c VALUES (42);",
        ];
        let err = apply(&conn, &steps).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::MigrationForeignKeys {
                    version: 2,
                    violations: 1
                }
            ),
            "{err:?}"
        );
        assert_eq!(version(&conn), 0);
        assert!(tables(&conn).is_empty());
    }

    #[test]
    fn newer_database_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        let known = MIGRATIONS.len() as i64;
        conn.pragma_update(None, "user_version", known + 3).unwrap();
        match migrate(&conn) {
            Err(StoreError::TooNew { found, known: k }) => {
                assert_eq!((found, k), (known + 3, known))
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        assert_eq!(version(&conn), known + 3);
        assert!(tables(&conn).is_empty());
    }
}
