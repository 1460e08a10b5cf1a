//! XEP-0313 archive preferences per account. (The archive itself is the mailbox.)

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = r#"
    CREATE TABLE mam_prefs (
        account INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
        default_mode TEXT NOT NULL,   -- always | never | roster
        always  TEXT NOT NULL,        -- bare JIDs, one per line
        never   TEXT NOT NULL
    );
"#;

/// (default, always, never); `always` with empty lists when nothing was set.
pub fn prefs(
    store: &Store,
    account: i64,
) -> Result<(String, Vec<String>, Vec<String>), StoreError> {
    let row: Option<(String, String, String)> = store
        .conn()
        .prepare_cached("SELECT default_mode, always, never FROM mam_prefs WHERE account = ?1")?
        .query_row(params![account], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let split = |s: &str| {
        s.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Ok(match row {
        Some((d, a, n)) => (d, split(&a), split(&n)),
        None => ("always".to_owned(), Vec::new(), Vec::new()),
    })
}

pub fn set_prefs(
    store: &Store,
    account: i64,
    default: &str,
    always: &[String],
    never: &[String],
) -> Result<(), StoreError> {
    write_prefs(store.conn(), account, default, always, never)
}

/// [`set_prefs`] on any connection (the writer thread's, inside its batch).
pub fn write_prefs(
    conn: &rusqlite::Connection,
    account: i64,
    default: &str,
    always: &[String],
    never: &[String],
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR REPLACE INTO mam_prefs VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            account,
            default,
            always.join("\n"),
            never.join("\n")
        ])?;
    Ok(())
}
