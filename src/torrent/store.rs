//! SQL for the torrent service's tables (schema in `src/store/torrents.rs`). Every write is one
//! small statement or transaction on the main thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jid::BareJid;
use rusqlite::{OptionalExtension, params};

use super::jobs::{Job, State};
use crate::store::{Store, StoreError};

/// A user's preferences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub notify: Notify,
    /// Periodic progress messages while downloading.
    pub progress: bool,
}

/// Which events become messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// Added, metadata received, finished, failed.
    All,
    /// Finished and failed only.
    Done,
    None,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::All => "all",
            Notify::Done => "done",
            Notify::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Notify> {
        match s {
            "all" | "on" => Some(Notify::All),
            "done" => Some(Notify::Done),
            "none" | "off" => Some(Notify::None),
            _ => None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            notify: Notify::All,
            progress: false,
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn peers_to_text(peers: &[SocketAddr]) -> String {
    peers
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Every job of the server, with its owner's JID.
pub fn load_all(store: &Store) -> Result<Vec<Job>, StoreError> {
    let mut stmt = store.conn().prepare(
        "SELECT j.id, j.account, a.username, a.domain, j.number, j.source, j.info_hash, j.name,
                j.state, j.error, j.folder, j.peers, j.total_bytes, j.created, j.notified
         FROM torrent_jobs j JOIN accounts a ON a.id = j.account ORDER BY j.id",
    )?;
    let rows = stmt.query_map([], |r| {
        let user: String = r.get(2)?;
        let domain: String = r.get(3)?;
        let peers: String = r.get(11)?;
        Ok((
            BareJid::new(&format!("{user}@{domain}")).ok(),
            Job {
                id: r.get(0)?,
                account: r.get(1)?,
                owner: BareJid::new("invalid.invalid").expect("constant JID"),
                number: r.get(4)?,
                source: r.get(5)?,
                info_hash: r.get(6)?,
                name: r.get(7)?,
                state: State::parse(&r.get::<_, String>(8)?),
                error: r.get(9)?,
                folder: r.get::<_, Option<String>>(10)?.map(PathBuf::from),
                peers: peers.split(',').filter_map(|p| p.parse().ok()).collect(),
                total: r.get::<_, Option<i64>>(12)?.map(|t| t as u64),
                created: r.get(13)?,
                notified: r.get::<_, i64>(14)? as u8,
                torrent: None,
            },
        ))
    })?;
    let mut jobs = Vec::new();
    for row in rows {
        let (owner, mut job) = row?;
        if let Some(owner) = owner {
            job.owner = owner;
            jobs.push(job);
        }
    }
    Ok(jobs)
}

/// Creates a job row; returns (row id, number, creation time).
pub fn insert(
    store: &Store,
    account: i64,
    source: &str,
    state: State,
    peers: &[SocketAddr],
) -> Result<(i64, i64, i64), StoreError> {
    store.transaction(|tx| {
        tx.execute(
            "INSERT OR IGNORE INTO torrent_settings (account) VALUES (?1)",
            [account],
        )?;
        let number: i64 = tx.query_row(
            "SELECT next_number FROM torrent_settings WHERE account = ?1",
            [account],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE torrent_settings SET next_number = ?2 WHERE account = ?1",
            params![account, number + 1],
        )?;
        let created = now();
        tx.execute(
            "INSERT INTO torrent_jobs (account, number, source, state, peers, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                account,
                number,
                source,
                state.as_str(),
                peers_to_text(peers),
                created
            ],
        )?;
        Ok((tx.last_insert_rowid(), number, created))
    })
}

/// Writes the mutable fields of `job`.
pub fn update(store: &Store, job: &Job) -> Result<(), StoreError> {
    store.conn().prepare_cached(
        "UPDATE torrent_jobs SET info_hash = ?2, name = ?3, state = ?4, error = ?5, folder = ?6,
                total_bytes = ?7, notified = ?8, peers = ?9,
                finished = CASE WHEN ?4 = 'finished' THEN coalesce(finished, ?10) ELSE finished END
         WHERE id = ?1",
    )?
    .execute(params![
        job.id,
        job.info_hash,
        job.name,
        job.state.as_str(),
        job.error,
        job.folder.as_ref().map(|f| f.to_string_lossy().into_owned()),
        job.total.map(|t| t as i64),
        job.notified as i64,
        peers_to_text(&job.peers),
        now(),
    ])?;
    Ok(())
}

pub fn set_metainfo(store: &Store, id: i64, bytes: &[u8]) -> Result<(), StoreError> {
    store.conn().execute(
        "UPDATE torrent_jobs SET metainfo = ?2 WHERE id = ?1",
        params![id, bytes],
    )?;
    Ok(())
}

pub fn metainfo(store: &Store, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(store
        .conn()
        .query_row(
            "SELECT metainfo FROM torrent_jobs WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

pub fn delete(store: &Store, id: i64) -> Result<(), StoreError> {
    store
        .conn()
        .execute("DELETE FROM torrent_jobs WHERE id = ?1", [id])?;
    Ok(())
}

/// Deletes a job that was never accepted, and hands its number back if it was the last one
/// given out (so a failed add does not make the owner's next job "2").
pub fn delete_unaccepted(
    store: &Store,
    id: i64,
    account: i64,
    number: i64,
) -> Result<(), StoreError> {
    store.transaction(|tx| {
        tx.execute("DELETE FROM torrent_jobs WHERE id = ?1", [id])?;
        tx.execute(
            "UPDATE torrent_settings SET next_number = ?2 WHERE account = ?1 AND next_number = ?2 + 1",
            params![account, number],
        )?;
        Ok(())
    })
}

pub fn settings(store: &Store, account: i64) -> Result<Settings, StoreError> {
    let row = store
        .conn()
        .prepare_cached("SELECT notify, progress FROM torrent_settings WHERE account = ?1")?
        .query_row([account], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .optional()?;
    Ok(match row {
        Some((notify, progress)) => Settings {
            notify: Notify::parse(&notify).unwrap_or(Notify::All),
            progress: progress != 0,
        },
        None => Settings::default(),
    })
}

pub fn set_settings(store: &Store, account: i64, s: Settings) -> Result<(), StoreError> {
    store.conn().execute(
        "INSERT INTO torrent_settings (account, notify, progress) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET notify = ?2, progress = ?3",
        params![account, s.notify.as_str(), s.progress as i64],
    )?;
    Ok(())
}

/// Accounts that asked for periodic progress messages.
pub fn progress_subscribers(store: &Store) -> Result<Vec<i64>, StoreError> {
    let mut stmt = store
        .conn()
        .prepare_cached("SELECT account FROM torrent_settings WHERE progress != 0")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect::<Result<_, _>>().map_err(Into::into)
}

/// Every job and the settings of `account` (account deletion; the rows also go by
/// `ON DELETE CASCADE` when the account row is deleted).
pub fn delete_account(store: &Store, account: i64) -> Result<(), StoreError> {
    let conn = store.conn();
    conn.prepare_cached("DELETE FROM torrent_jobs WHERE account = ?1")?
        .execute([account])?;
    conn.prepare_cached("DELETE FROM torrent_settings WHERE account = ?1")?
        .execute([account])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_and_settings_round_trip() {
        let store = Store::open_in_memory().unwrap();
        store.create_account("alice", "localhost", &[]).unwrap();
        let acc = store.account_id("alice", "localhost").unwrap().unwrap();
        let peers: Vec<SocketAddr> =
            vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        let (id, n1, _) = insert(&store, acc, "magnet:?xt=x", State::Resolving, &peers).unwrap();
        let (id2, n2, _) = insert(&store, acc, "http://x", State::Fetching, &[]).unwrap();
        assert_eq!((n1, n2), (1, 2));
        delete(&store, id2).unwrap();
        let (id3, n3, _) = insert(&store, acc, "upload", State::Downloading, &[]).unwrap();
        assert_eq!(n3, 3, "numbers are never reused");
        delete_unaccepted(&store, id3, acc, n3).unwrap();
        let (_, n3, _) = insert(&store, acc, "upload", State::Downloading, &[]).unwrap();
        assert_eq!(n3, 3, "…except that of an add that failed at once");
        let mut jobs = load_all(&store).unwrap();
        assert_eq!(jobs.len(), 2);
        let j = jobs.iter_mut().find(|j| j.id == id).unwrap();
        assert_eq!(j.owner.to_string(), "alice@localhost");
        assert_eq!(j.peers, peers);
        j.state = State::Finished;
        j.notified = 5;
        j.total = Some(42);
        update(&store, j).unwrap();
        set_metainfo(&store, id, b"d1:xi1ee").unwrap();
        assert_eq!(metainfo(&store, id).unwrap().unwrap(), b"d1:xi1ee");
        let j = load_all(&store)
            .unwrap()
            .into_iter()
            .find(|j| j.id == id)
            .unwrap();
        assert_eq!(
            (j.state, j.notified, j.total),
            (State::Finished, 5, Some(42))
        );
        assert_eq!(settings(&store, acc).unwrap(), Settings::default());
        let s = Settings {
            notify: Notify::Done,
            progress: true,
        };
        set_settings(&store, acc, s).unwrap();
        assert_eq!(settings(&store, acc).unwrap(), s);
        assert_eq!(progress_subscribers(&store).unwrap(), vec![acc]);
        // Deleting the account takes its jobs along.
        store.delete_account("alice", "localhost").unwrap();
        assert!(load_all(&store).unwrap().is_empty());
    }
}
