//! vCards (XEP-0054), private XML (XEP-0049), blocklists (XEP-0191), last activity (XEP-0012).
//!
//! Every table is keyed by the account's row id and cascades with it. XML payloads are kept as
//! serialised text (each root declares its own namespace, so it parses back on its own).

use std::time::{SystemTime, UNIX_EPOCH};

use jid::BareJid;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = "
CREATE TABLE vcards (
    account INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    xml TEXT NOT NULL,
    -- XEP-0153: hex SHA-1 of the decoded PHOTO/BINVAL; NULL when the vCard has no photo.
    photo_hash TEXT
);
CREATE TABLE private_xml (
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (account, ns, name)
) WITHOUT ROWID;
CREATE TABLE blocklist (
    account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    jid TEXT NOT NULL,
    PRIMARY KEY (account, jid)
) WITHOUT ROWID;
CREATE TABLE last_logout (
    account INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    -- Unix seconds when the account's last session ended.
    at INTEGER NOT NULL,
    status TEXT
);
";

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Why private XML was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PrivateXmlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What the account would have held with the new items.
    #[error("private XML quota exceeded ({count} items, {bytes} bytes)")]
    Quota { count: u64, bytes: u64 },
}

impl From<rusqlite::Error> for PrivateXmlError {
    fn from(e: rusqlite::Error) -> Self {
        PrivateXmlError::Store(e.into())
    }
}

/// A stored vCard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVcard {
    pub xml: String,
    pub photo_hash: Option<String>,
}

impl Store {
    /// The row id of a local account given as a bare JID; `None` if it does not exist.
    pub fn account_id_of(&self, jid: &BareJid) -> Result<Option<i64>, StoreError> {
        let Some(node) = jid.node() else {
            return Ok(None);
        };
        self.account_id(node.as_str(), jid.domain().as_str())
    }

    // ---- XEP-0054 vCards -------------------------------------------------------------------

    pub fn vcard(&self, account: i64) -> Result<Option<StoredVcard>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT xml, photo_hash FROM vcards WHERE account = ?1")?
            .query_row([account], |r| {
                Ok(StoredVcard {
                    xml: r.get(0)?,
                    photo_hash: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Only the photo hash: `None` without a vCard, `Some(None)` for a vCard without photo.
    pub fn vcard_photo_hash(&self, account: i64) -> Result<Option<Option<String>>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT photo_hash FROM vcards WHERE account = ?1")?
            .query_row([account], |r| r.get(0))
            .optional()?)
    }

    pub fn set_vcard(
        &self,
        account: i64,
        xml: &str,
        photo_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        set_vcard(self.conn(), account, xml, photo_hash)
    }

    // ---- XEP-0049 private XML --------------------------------------------------------------

    pub fn private_xml(
        &self,
        account: i64,
        ns: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT xml FROM private_xml WHERE account = ?1 AND ns = ?2 AND name = ?3",
            )?
            .query_row(params![account, ns, name], |r| r.get(0))
            .optional()?)
    }

    /// See [`set_private_xml`], in a transaction of its own.
    pub fn set_private_xml(
        &self,
        account: i64,
        items: &[(String, String, String)],
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(), PrivateXmlError> {
        self.transaction(|tx| set_private_xml(tx, account, items, max_items, max_bytes))
    }

    // ---- XEP-0191 blocklists ---------------------------------------------------------------

    /// The blocked JIDs of an account, sorted.
    pub fn blocklist(&self, account: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT jid FROM blocklist WHERE account = ?1 ORDER BY jid")?;
        let rows = stmt.query_map([account], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn block(&self, account: i64, jids: &[String]) -> Result<(), StoreError> {
        self.transaction(|tx| block(tx, account, jids))
    }

    pub fn unblock(&self, account: i64, jids: &[String]) -> Result<(), StoreError> {
        self.transaction(|tx| unblock(tx, account, jids))
    }

    pub fn unblock_all(&self, account: i64) -> Result<(), StoreError> {
        unblock_all(self.conn(), account)
    }

    // ---- XEP-0012 last activity ------------------------------------------------------------

    pub fn set_last_logout(
        &self,
        account: i64,
        at: i64,
        status: Option<&str>,
    ) -> Result<(), StoreError> {
        Ok(set_last_logout(self.conn(), account, at, status)?)
    }

    /// When the account's last session ended (Unix seconds) and its last status text.
    pub fn last_logout(&self, account: i64) -> Result<Option<(i64, Option<String>)>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT at, status FROM last_logout WHERE account = ?1")?
            .query_row([account], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }
}

// ---- writes on any connection (the writer thread's, inside its batch) ---------------------------

/// Stores the account's vCard, replacing the previous one.
pub fn set_vcard(
    conn: &rusqlite::Connection,
    account: i64,
    xml: &str,
    photo_hash: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO vcards (account, xml, photo_hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET xml = excluded.xml, photo_hash = excluded.photo_hash",
    )?
    .execute(params![account, xml, photo_hash])?;
    Ok(())
}

/// Stores each `(ns, name, xml)`, replacing what was stored under that (ns, name); stores
/// nothing when the account would then hold more than `max_items` items or more than
/// `max_bytes` bytes of XML in all. Runs in a savepoint of its own, so a refusal undoes its
/// writes whatever transaction it is in.
pub fn set_private_xml(
    conn: &rusqlite::Connection,
    account: i64,
    items: &[(String, String, String)],
    max_items: usize,
    max_bytes: usize,
) -> Result<(), PrivateXmlError> {
    conn.execute_batch("SAVEPOINT private_xml")?;
    let result = write_private_xml(conn, account, items, max_items, max_bytes);
    match &result {
        Ok(()) => conn.execute_batch("RELEASE private_xml")?,
        Err(_) => conn.execute_batch("ROLLBACK TO private_xml; RELEASE private_xml")?,
    }
    result
}

fn write_private_xml(
    conn: &rusqlite::Connection,
    account: i64,
    items: &[(String, String, String)],
    max_items: usize,
    max_bytes: usize,
) -> Result<(), PrivateXmlError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO private_xml (account, ns, name, xml) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (account, ns, name) DO UPDATE SET xml = excluded.xml",
    )?;
    for (ns, name, xml) in items {
        stmt.execute(params![account, ns, name, xml])?;
    }
    // Checked after the writes, inside the savepoint: an error rolls them back.
    let (count, bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(CAST(xml AS BLOB))), 0)
             FROM private_xml WHERE account = ?1",
        )?
        .query_row([account], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let (count, bytes) = (count.unsigned_abs(), bytes.unsigned_abs());
    if count > max_items as u64 || bytes > max_bytes as u64 {
        return Err(PrivateXmlError::Quota { count, bytes });
    }
    Ok(())
}

/// Adds `jids` to the account's blocklist (those already there stay).
pub fn block(conn: &rusqlite::Connection, account: i64, jids: &[String]) -> Result<(), StoreError> {
    let mut stmt =
        conn.prepare_cached("INSERT OR IGNORE INTO blocklist (account, jid) VALUES (?1, ?2)")?;
    for j in jids {
        stmt.execute(params![account, j])?;
    }
    Ok(())
}

/// Removes `jids` from the account's blocklist.
pub fn unblock(
    conn: &rusqlite::Connection,
    account: i64,
    jids: &[String],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM blocklist WHERE account = ?1 AND jid = ?2")?;
    for j in jids {
        stmt.execute(params![account, j])?;
    }
    Ok(())
}

/// Empties the account's blocklist.
pub fn unblock_all(conn: &rusqlite::Connection, account: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM blocklist WHERE account = ?1")?
        .execute([account])?;
    Ok(())
}

/// Records when the account's last session ended (Unix seconds) and its last status text; on
/// any connection (the writer thread's, inside its batch).
pub fn set_last_logout(
    conn: &rusqlite::Connection,
    account: i64,
    at: i64,
    status: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO last_logout (account, at, status) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET at = excluded.at, status = excluded.status",
    )?
    .execute(params![account, at, status])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(users: &[&str]) -> (Store, Vec<i64>) {
        let store = Store::open_in_memory().unwrap();
        let ids = users
            .iter()
            .map(|u| {
                store.create_account(u, "example.org", &[]).unwrap();
                store.account_id(u, "example.org").unwrap().unwrap()
            })
            .collect();
        (store, ids)
    }

    #[test]
    fn vcard_round_trip_and_replace() {
        let (store, ids) = store_with(&["alice"]);
        let a = ids[0];
        assert_eq!(store.vcard(a).unwrap(), None);
        assert_eq!(store.vcard_photo_hash(a).unwrap(), None);
        store
            .set_vcard(a, "<vCard xmlns=\"vcard-temp\"/>", None)
            .unwrap();
        assert_eq!(store.vcard_photo_hash(a).unwrap(), Some(None));
        store
            .set_vcard(
                a,
                "<vCard xmlns=\"vcard-temp\"><FN>A</FN></vCard>",
                Some("ab"),
            )
            .unwrap();
        let v = store.vcard(a).unwrap().unwrap();
        assert!(v.xml.contains("<FN>A</FN>"));
        assert_eq!(v.photo_hash.as_deref(), Some("ab"));
        let jid = BareJid::new("alice@example.org").unwrap();
        assert_eq!(store.account_id_of(&jid).unwrap(), Some(a));
        assert_eq!(
            store
                .account_id_of(&BareJid::new("example.org").unwrap())
                .unwrap(),
            None
        );
    }

    #[test]
    fn private_xml_is_keyed_by_ns_and_name() {
        let (store, ids) = store_with(&["alice"]);
        let a = ids[0];
        let item =
            |ns: &str, name: &str, xml: &str| (ns.to_owned(), name.to_owned(), xml.to_owned());
        store
            .set_private_xml(
                a,
                &[
                    item("x:prefs", "p", "<p xmlns=\"x:prefs\">1</p>"),
                    item("x:prefs", "q", "<q/>"),
                ],
                usize::MAX,
                usize::MAX,
            )
            .unwrap();
        store
            .set_private_xml(
                a,
                &[item("x:prefs", "p", "<p xmlns=\"x:prefs\">2</p>")],
                usize::MAX,
                usize::MAX,
            )
            .unwrap();
        assert_eq!(
            store.private_xml(a, "x:prefs", "p").unwrap().as_deref(),
            Some("<p xmlns=\"x:prefs\">2</p>")
        );
        assert_eq!(
            store.private_xml(a, "x:prefs", "q").unwrap().as_deref(),
            Some("<q/>")
        );
        assert_eq!(store.private_xml(a, "x:other", "p").unwrap(), None);
    }

    #[test]
    fn private_xml_quota_counts_items_and_bytes_after_replacement() {
        let (store, ids) = store_with(&["alice", "bob"]);
        let (a, b) = (ids[0], ids[1]);
        let item = |name: &str, len: usize| {
            (
                "x:q".to_owned(),
                name.to_owned(),
                format!("<{name} xmlns=\"x:q\">{}</{name}>", "é".repeat(len)),
            )
        };
        // 2 items of 10 two-byte characters plus 19 bytes of markup each: 39 bytes.
        store
            .set_private_xml(a, &[item("p", 10), item("q", 10)], 2, 78)
            .unwrap();
        // A third item is one too many; nothing of the request is stored.
        let over = store.set_private_xml(a, &[item("p", 1), item("r", 1)], 2, 1000);
        assert!(
            matches!(over, Err(PrivateXmlError::Quota { count: 3, .. })),
            "{over:?}"
        );
        assert!(
            store
                .private_xml(a, "x:q", "p")
                .unwrap()
                .unwrap()
                .contains("éééé")
        );
        // Replacing counts the new size only; one byte over is refused.
        store.set_private_xml(a, &[item("p", 10)], 2, 78).unwrap();
        let over = store.set_private_xml(a, &[item("p", 11)], 2, 79);
        assert!(
            matches!(over, Err(PrivateXmlError::Quota { bytes: 80, .. })),
            "{over:?}"
        );
        // Other accounts have their own quota.
        store.set_private_xml(b, &[item("p", 10)], 1, 39).unwrap();
    }

    #[test]
    fn blocklist_and_cascade() {
        let (store, ids) = store_with(&["alice", "bob"]);
        let (a, b) = (ids[0], ids[1]);
        store
            .block(a, &["z@x".into(), "b@x".into(), "b@x".into()])
            .unwrap();
        store.block(b, &["q@x".into()]).unwrap();
        assert_eq!(store.blocklist(a).unwrap(), ["b@x", "z@x"]);
        store.unblock(a, &["z@x".into(), "never@x".into()]).unwrap();
        assert_eq!(store.blocklist(a).unwrap(), ["b@x"]);
        store.unblock_all(a).unwrap();
        assert!(store.blocklist(a).unwrap().is_empty());
        assert_eq!(store.blocklist(b).unwrap(), ["q@x"]);
        store.set_last_logout(b, 42, Some("bye")).unwrap();
        store
            .set_vcard(b, "<vCard xmlns=\"vcard-temp\"/>", None)
            .unwrap();
        store.delete_account("bob", "example.org").unwrap();
        let count = |t: &str| -> i64 {
            store
                .conn()
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            count("blocklist") + count("last_logout") + count("vcards"),
            0
        );
    }

    #[test]
    fn last_logout_replaces() {
        let (store, ids) = store_with(&["alice"]);
        let a = ids[0];
        assert_eq!(store.last_logout(a).unwrap(), None);
        store.set_last_logout(a, 10, Some("away")).unwrap();
        store.set_last_logout(a, 20, None).unwrap();
        assert_eq!(store.last_logout(a).unwrap(), Some((20, None)));
    }
}
