//! Tables of the torrent service (src/torrent/): per-user jobs and settings. The SQL that
//! reads and writes them lives in `src/torrent/store.rs`.

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = r#"
-- One row per download job. `number` is what its owner sees ("job 3"); numbers are never
-- reused for an account (see torrent_settings.next_number).
CREATE TABLE torrent_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    source      TEXT NOT NULL,     -- URL or magnet as given; 'upload' for a .torrent sent inline
    info_hash   TEXT,              -- 40 hex digits, once known
    name        TEXT,
    state       TEXT NOT NULL,     -- fetching | resolving | downloading | paused | finished | failed
    error       TEXT,
    folder      TEXT,              -- absolute output folder given to librqbit
    peers       TEXT NOT NULL DEFAULT '',  -- explicit peers (ip:port, comma separated)
    metainfo    BLOB,              -- the .torrent, to re-add should the engine lose it
    total_bytes INTEGER,
    created     INTEGER NOT NULL,  -- Unix time, seconds
    finished    INTEGER,
    notified    INTEGER NOT NULL DEFAULT 0,  -- bits: 1 added, 2 metadata, 4 finished, 8 failed
    UNIQUE (account, number)
);
CREATE TABLE torrent_settings (
    account     INTEGER PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    notify      TEXT NOT NULL DEFAULT 'all',   -- all | done | none
    progress    INTEGER NOT NULL DEFAULT 0,    -- periodic progress messages
    next_number INTEGER NOT NULL DEFAULT 1
);
"#;
