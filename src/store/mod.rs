//! Persistent storage: one SQLite database file per server.
//!
//! # What is stored
//!
//! * `accounts`: the local XMPP accounts — username and domain (both already
//!   nodeprep/nameprep-normalised by the caller) and the creation time.
//! * `account_keys`: for each account and SASL mechanism (`SCRAM-SHA-1`,
//!   `SCRAM-SHA-256`) the SCRAM verifier of RFC 5802 §3: salt, iteration
//!   count, StoredKey and ServerKey.
//!
//! Later features add their own tables by appending to `MIGRATIONS` in
//! `migrations.rs`; tables that belong to an account reference
//! `accounts(id) ON DELETE CASCADE`, so deleting an account deletes
//! everything it owns.
//!
//! # Security properties
//!
//! * **No password is ever stored**, in clear or reversibly encrypted: the
//!   schema has no password column. Only SCRAM verifiers are kept, from which
//!   a password can be recovered only by a dictionary attack slowed down by
//!   the salted, iterated PBKDF2. They are still secrets — ServerKey lets its
//!   holder impersonate this server to a client, and StoredKey together with
//!   one observed authentication exchange yields the ClientKey — so:
//! * **The database is private to its owner (mode 0600).** [`Store::open`]
//!   creates the file itself with mode 0600 before SQLite opens it (and the
//!   parent directory, if missing, with 0700). That needs no change of the
//!   process-wide umask: a umask can only remove permission bits, and we set
//!   the exact mode afterwards with `fchmod` anyway. An existing file with
//!   group or other permission bits is tightened, with a warning. SQLite
//!   creates the `-wal` and `-shm` side files with the permissions (and,
//!   running as root, the owner) of the database file itself; after opening
//!   we check them as well and tighten them should they be looser.
//! * **`secure_delete` is on**: deleted or replaced rows (old keys after a
//!   password change, deleted accounts) are overwritten with zeros in the
//!   database file instead of lingering in free pages. This is best effort:
//!   copies may survive in the WAL until it is checkpointed and overwritten,
//!   and in any backups.
//!
//! # Durability and concurrency
//!
//! The database runs in WAL mode with `synchronous=FULL`: `COMMIT` returns
//! once the WAL has been fsynced, so a committed transaction survives the
//! process being killed (`kill -9`) and also a power loss or kernel crash.
//! Mailbox rows and write jobs are committed by a writer thread with a connection of its own
//! ([`writer`]), in groups: while one batch commits, the next fills, so a burst of messages
//! costs one fsync per commit round and the main loop never waits for the disk. Nothing is
//! acknowledged to a client before its batch's commit returns (see `modules/offline.rs`). The
//! database is never corrupted either way. (`NORMAL` fsyncs only at checkpoints and would lose
//! the last transactions on a power loss: too weak for "acknowledged means on disk".)
//!
//! The page cache is larger than SQLite's default ([`CACHE_KIB`]), which only
//! saves reads and early spills of dirty pages; it changes nothing of the
//! above.
//!
//! The main loop uses its [`Store`] from the glib main thread only (the type is not `Sync`);
//! the writer thread has its own connection. CLI commands open the same file while the server
//! runs: WAL lets readers run alongside a writer,
//! and a writer waits up to 5 s (`busy_timeout`) for another. Write
//! transactions start with `BEGIN IMMEDIATE` ([`Store::transaction`]),
//! because a deferred transaction that later upgrades from reading to writing
//! gets `SQLITE_BUSY` at once, without waiting, if another process committed
//! in between.

pub mod accounts;
pub mod fast;
pub mod mailbox;
pub mod mam;
mod migrations;
pub mod pep;
pub mod roster;
pub mod torrents;
pub mod transport;
pub mod writer;
pub mod xeps;

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Any SQLite failure not covered by a more specific variant.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem operation on the database file or its directory failed.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done, e.g. "cannot create database directory".
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// `create_account` for a username and domain that already exist.
    #[error("account already exists")]
    AccountExists,
    /// The account named does not exist.
    #[error("no such account")]
    NoSuchAccount,
    /// A write job failed in a way SQLite did not report (it panicked).
    #[error("{0}")]
    Job(String),
    /// The database was written by a newer wockd (its schema version is
    /// beyond the migrations this binary knows), so it is left untouched.
    #[error(
        "database schema version {found} is not one this wockd knows (it knows up to {known}); \
         it was probably written by a newer wockd: run that, or restore a backup"
    )]
    TooNew { found: i64, known: i64 },
    /// Migration number `version` (1-based) failed; the database was left
    /// exactly as it was before the upgrade started.
    #[error("database migration {version} failed (nothing was changed): {error}")]
    Migration {
        version: usize,
        error: rusqlite::Error,
    },
    /// After the migrations up to `version`, `PRAGMA foreign_key_check`
    /// found violations; the upgrade was rolled back.
    #[error(
        "database migration to version {version} left {violations} foreign key violation(s); \
         nothing was changed"
    )]
    MigrationForeignKeys { version: usize, violations: usize },
}

impl StoreError {
    fn io(what: &'static str, path: &Path, error: io::Error) -> StoreError {
        StoreError::Io {
            what,
            path: path.to_owned(),
            error,
        }
    }
}

/// SQLite's page cache for the server's connection, in KiB (`PRAGMA cache_size = -N`). The
/// default (2 MiB) is smaller than one busy loop turn's worth of mailbox pages: a commit then
/// spills dirty pages early and reads index pages back with `pread` over and over. Pages are
/// only allocated as they are used, so a small database costs no more.
const CACHE_KIB: u32 = 16 * 1024;

/// The server's database: a connection for the main loop (reads, and the writes not yet moved
/// to the writer) and the writer thread's pipeline for the mailbox and write jobs (see
/// [`writer`]).
pub struct Store {
    conn: Connection,
    /// The database file; `None` in memory (no writer thread then).
    path: Option<PathBuf>,
    /// Account ids by username and domain (see [`Store::account_id`]).
    account_ids: accounts::IdCache,
    /// Queued writes: the filling batch and the batch in flight.
    pipeline: std::cell::RefCell<writer::Pipeline>,
    /// The writer thread, once started.
    sink: writer::Sink,
    /// The writer's reports, read on the main loop ([`Store::take_report`]) or waited for
    /// ([`Store::commit_pending`]).
    done: (
        std::sync::mpsc::Sender<writer::Done>,
        std::sync::mpsc::Receiver<writer::Done>,
    ),
    /// A token per report, to wake the main loop. Separate from the reports themselves: an
    /// `async_channel` with two receivers (the loop's task and a blocking wait at shutdown)
    /// wakes only one of them, which can be the loop's task that will never run again.
    wake: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// Called when the first write is queued into an empty batch (the server schedules the
    /// submission).
    on_queue: Scheduler,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

/// See [`Store::on_first_queued`].
#[derive(Default)]
struct Scheduler(std::cell::RefCell<Option<Box<dyn Fn()>>>);

/// Sets the pragmas every connection of the server uses (see the module documentation).
pub(crate) fn set_pragmas(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB}"))?;
    // Query planner stability: without it SQLite marks a statement whose plan estimate looked
    // at a bound value (an `=` filter on `?N`, for one) to be compiled again whenever its
    // bindings are cleared — and rusqlite clears them each time a cached statement goes back
    // to the cache. Every login's verifier lookup was compiled anew (~100,000 instructions).
    // There are no `sqlite_stat` tables for a value to inform a plan anyway.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

impl Store {
    fn with_conn(conn: Connection, path: Option<PathBuf>) -> Store {
        Store {
            conn,
            path,
            account_ids: Default::default(),
            pipeline: Default::default(),
            sink: Default::default(),
            done: std::sync::mpsc::channel(),
            wake: async_channel::unbounded(),
            on_queue: Default::default(),
        }
    }

    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    ///
    /// Creates the parent directory (mode 0700) if missing and the file with
    /// mode 0600; see the module documentation for the permission handling,
    /// the pragmas set and what they mean for durability.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Only directories created here get 0700; existing ones are left
            // alone (the file itself is 0600 whatever its directory is).
            private_dir(dir)
                .map_err(|e| StoreError::io("cannot create database directory", dir, e))?;
        }
        create_private_file(path)?;

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let store = Store::with_conn(
            Connection::open_with_flags(path, flags)?,
            Some(path.to_owned()),
        );
        store.init(true)?;

        // SQLite gives these the database file's mode; check anyway, e.g. for
        // side files left over from a run that had looser permissions.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            tighten_existing(Path::new(&side))?;
        }
        Ok(store)
    }

    /// A private in-memory database with the full schema, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let store = Store::with_conn(Connection::open_in_memory()?, None);
        store.init(false)?;
        Ok(store)
    }

    /// Sets the connection's pragmas and runs pending migrations.
    fn init(&self, file_backed: bool) -> Result<(), StoreError> {
        let conn = &self.conn;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode = set_wal_mode(conn)?;
        if file_backed && !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; continuing without it");
        }
        // See the module documentation on durability.
        set_pragmas(conn)?;
        // Migrations run with foreign keys off (SQLite's recommended way to
        // change a schema; a table rebuild would otherwise fire ON DELETE
        // CASCADE) and check consistency themselves before committing.
        migrations::migrate(conn)?;
        // Per connection, and only effective outside a transaction.
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
        Ok(())
    }

    /// The underlying connection, for modules that keep their own tables.
    ///
    /// Use [`Store::transaction`] for anything that writes more than one
    /// statement, and `prepare_cached` for statements on hot paths.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Runs `f` inside a write transaction (`BEGIN IMMEDIATE`): commits if
    /// `f` returns `Ok`, rolls back if it returns `Err`.
    ///
    /// Transactions do not nest: calling this from inside `f` fails at run
    /// time with an SQLite error ("cannot start a transaction within a
    /// transaction"). Use `tx.savepoint()` for that.
    pub fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E>,
        E: From<rusqlite::Error>,
    {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let value = f(&tx)?; // on Err, dropping `tx` rolls back
        tx.commit()?;
        Ok(value)
    }

    // ---- the write pipeline (see `writer`) -------------------------------------------------

    /// Starts the writer thread (file-backed stores; a no-op in memory or when running).
    pub fn start_writer(&self) -> Result<(), StoreError> {
        if let Some(path) = &self.path
            && !self.sink.running()
        {
            self.sink.start(writer::Thread::spawn(
                path,
                self.done.0.clone(),
                self.wake.0.clone(),
            )?);
        }
        Ok(())
    }

    /// Commits what is queued, waits for the thread to finish and stops it (shutdown).
    pub fn stop_writer(&self) -> Result<(), StoreError> {
        let result = self.commit_pending();
        self.sink.stop();
        result
    }

    /// Queues a mailbox row for the next batch. Rows are written in batches, one transaction
    /// per commit round: a burst of messages costs one fsync, not one per message.
    pub fn queue_mailbox(&self, entry: mailbox::NewEntry) {
        let first = self
            .pipeline
            .borrow_mut()
            .push(writer::Op::Row(entry), None);
        if first {
            self.scheduled();
        }
    }

    /// Queues a write job for the next batch: `job` runs on the writer's connection inside the
    /// batch's transaction (in a savepoint of its own; it may run again if the whole batch has
    /// to be retried), and `then` runs on the main loop with its result once the batch is
    /// committed (or with the job's own error).
    pub fn write<T: Send + 'static>(
        &self,
        mut job: impl FnMut(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
        then: impl FnOnce(Result<T, StoreError>) + 'static,
    ) {
        let job: writer::Job = Box::new(move |tx| job(tx).map(|v| Box::new(v) as writer::Value));
        let then: writer::Then = Box::new(move |r: Result<writer::Value, StoreError>| {
            match r.map(|v| v.downcast::<T>()) {
                Ok(Ok(v)) => then(Ok(*v)),
                Err(e) => then(Err(e)),
                // Cannot happen: the value is the job's own.
                Ok(Err(_)) => tracing::error!("store: a write job returned a foreign value"),
            }
        });
        let first = self
            .pipeline
            .borrow_mut()
            .push(writer::Op::Job(job), Some(then));
        if first {
            self.scheduled();
        }
    }

    /// Runs `f` once everything queued so far is committed: at once when nothing waits (the
    /// caller must then hold no borrow `f` needs).
    pub fn after_commit(&self, f: impl FnOnce() + 'static) {
        let now = self.pipeline.borrow_mut().after_commit(Box::new(f));
        if let Some(f) = now {
            f();
        }
    }

    fn scheduled(&self) {
        if let Some(schedule) = &*self.on_queue.0.borrow() {
            schedule();
        }
    }

    /// Sets what runs when a write is queued into an empty batch, or fills the batch up to its
    /// bound ([`Store::backlogged`]): the server attaches its submission job there, at the end
    /// of the loop turn, which also pauses input when the writer is behind.
    pub fn on_first_queued(&self, schedule: Box<dyn Fn()>) {
        *self.on_queue.0.borrow_mut() = Some(schedule);
    }

    /// Hands the filling batch to the writer, unless a batch is in flight (it goes when that
    /// one is committed) or nothing is queued. Returns whether a batch went.
    pub fn submit(&self) -> bool {
        let Some(batch) = self.pipeline.borrow_mut().take_batch() else {
            return false;
        };
        tracing::debug!(
            seq = batch.seq,
            ops = batch.ops.len(),
            "store: batch submitted"
        );
        if let Err(batch) = self.sink.send(batch) {
            // No thread: written here, reported the same way.
            let done = writer::run(&self.conn, batch);
            let _ = self.done.0.send(done);
            let _ = self.wake.0.try_send(());
        }
        true
    }

    /// Yields a token when a report is ready: the main loop then takes every report with
    /// [`Store::take_report`] and passes it to [`Store::complete`].
    pub fn report_ready(&self) -> async_channel::Receiver<()> {
        self.wake.1.clone()
    }

    /// The next report of the writer, if one is there.
    pub fn take_report(&self) -> Option<writer::Done> {
        self.done.1.try_recv().ok()
    }

    /// Takes a report: runs the batch's continuations and `after_commit` callbacks (committed)
    /// or queues the batch again (failed).
    pub fn complete(&self, done: writer::Done) -> writer::Completed {
        tracing::debug!(seq = done.seq, "store: batch reported");
        let (completed, run) = self.pipeline.borrow_mut().complete(done);
        for f in run {
            f();
        }
        completed
    }

    /// Writes everything queued and waits for it (shutdown, the command line, tests). On
    /// failure what failed stays queued.
    pub fn commit_pending(&self) -> Result<(), StoreError> {
        loop {
            let (idle, flying) = {
                let p = self.pipeline.borrow();
                (p.is_idle(), p.in_flight())
            };
            if idle {
                return Ok(());
            }
            if !flying {
                self.submit();
            }
            // The store holds a sender, so this cannot fail; the thread reports every batch.
            let Ok(done) = self.done.1.recv() else {
                return Err(StoreError::Job("the store writer is gone".into()));
            };
            if let writer::Completed::Failed(e) = self.complete(done) {
                return Err(e);
            }
        }
    }

    /// Whether the writes waiting behind the batch in flight reached their bound
    /// ([`writer::MAX_QUEUED`]): the server then stops taking input until the commit.
    pub fn backlogged(&self) -> bool {
        self.pipeline.borrow().backlogged()
    }

    /// Queued (not yet committed) offline rows of `account`.
    pub fn queued_offline(&self, account: i64) -> u64 {
        self.pipeline.borrow().offline_rows(account)
    }

    /// How many writes were ever queued: compare before and after handling a stanza to learn
    /// whether it wrote anything.
    pub fn queued_writes(&self) -> u64 {
        self.pipeline.borrow().queued()
    }

    /// The number of the batch now filling (see [`writer`]).
    pub fn filling_seq(&self) -> u64 {
        self.pipeline.borrow().filling_seq()
    }

    /// Every batch up to this number is committed.
    pub fn committed_seq(&self) -> u64 {
        self.pipeline.borrow().committed_seq()
    }
}

/// Switches `conn` to WAL mode and returns the journal mode now in force.
///
/// The mode is persistent in the file, so this is a no-op after the first
/// open. But the first switch needs an exclusive lock, and when several
/// processes open a new database at once SQLite can answer `SQLITE_BUSY` at
/// once, without calling the busy handler (two connections each holding a
/// shared lock and wanting the exclusive one), so retry for up to
/// [`BUSY_TIMEOUT`] ourselves.
fn set_wal_mode(conn: &Connection) -> Result<String, StoreError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return Ok(result?),
        }
    }
}

/// Creates `path` and any missing parents with mode 0700, the one way wockd makes a
/// directory (data directory, `tls/`, `purple/`, `torrent-session/`, `downloads/` and every
/// folder below it). An existing directory is left as it is, with a warning if other users
/// can get into it; [`tighten_dir`] is for directories that are wholly wockd's.
pub fn private_dir(path: &Path) -> io::Result<()> {
    let mode = create_dir_0700(path)?;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "directory is accessible to other users"
        );
    }
    Ok(())
}

/// [`private_dir`], and then removes group and other permissions from `path` should it have
/// any (with a warning): for the data directory, which holds keys, passwords and mail.
pub fn tighten_dir(path: &Path) -> io::Result<()> {
    let mode = create_dir_0700(path)?;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "data directory was accessible to other users; restricting it to its owner"
        );
        std::fs::set_permissions(path, Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// Creates `path` (and parents) with mode 0700 where missing; returns its mode now.
fn create_dir_0700(path: &Path) -> io::Result<u32> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
}

/// Writes `data` to `path` (replacing it), mode 0600 whatever the umask.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Creates `path` with mode 0600, or opens it if it exists; then makes sure
/// group and others have no access.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        // The umask may have removed bits from 0600; set it exactly.
        Ok(file) => set_mode(&file, path, |_| 0o600),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten_existing(path),
        Err(e) => Err(StoreError::io("cannot create database", path, e)),
    }
}

/// Removes group and other permissions from `path` if it exists and has any,
/// with a warning.
///
/// By path (stat + chmod), never by opening the file: closing any descriptor of a file drops
/// every POSIX lock this process holds on it — SQLite's own locks on the database and its
/// `-shm` — which let another process reinitialise the shared memory under our mapping
/// (SIGBUS, seen with concurrent `wockd adduser`).
fn tighten_existing(path: &Path) -> Result<(), StoreError> {
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("cannot stat", path, e)),
    };
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "database file was accessible to other users; restricting it to its owner"
        );
        std::fs::set_permissions(path, Permissions::from_mode(mode & 0o700))
            .map_err(|e| StoreError::io("cannot set permissions of", path, e))?;
    }
    Ok(())
}

/// `fchmod`s `file` to `want(current mode)` if that differs from its mode.
fn set_mode(file: &File, path: &Path, want: impl FnOnce(u32) -> u32) -> Result<(), StoreError> {
    let mode = file
        .metadata()
        .map_err(|e| StoreError::io("cannot stat", path, e))?
        .permissions()
        .mode()
        & 0o7777;
    let new = want(mode);
    if new != mode {
        file.set_permissions(Permissions::from_mode(new))
            .map_err(|e| StoreError::io("cannot set permissions of", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn user_version(store: &Store) -> i64 {
        store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn open_creates_private_dir_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state").join("wockd");
        let db = dir.join("wockd.db");
        let store = Store::open(&db).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&tmp.path().join("state")), 0o700);
        assert_eq!(mode_of(&db), 0o600);

        // A write makes sure the WAL and shared-memory files exist.
        store
            .conn()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        for side in ["wockd.db-wal", "wockd.db-shm"] {
            let side = dir.join(side);
            assert!(side.exists(), "{} missing", side.display());
            assert_eq!(mode_of(&side), 0o600, "{}", side.display());
        }
    }

    #[test]
    fn private_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a").join("b").join("c");
        private_dir(&deep).unwrap();
        for d in [tmp.path().join("a"), tmp.path().join("a/b"), deep.clone()] {
            assert_eq!(mode_of(&d), 0o700, "{}", d.display());
        }
        // An existing open directory: left alone by private_dir, tightened by tighten_dir.
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, Permissions::from_mode(0o755)).unwrap();
        private_dir(&open).unwrap();
        assert_eq!(mode_of(&open), 0o755);
        tighten_dir(&open).unwrap();
        assert_eq!(mode_of(&open), 0o700);
        let f = open.join("f");
        fs::write(&f, b"old").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"new").unwrap();
        assert_eq!(mode_of(&f), 0o600);
        assert_eq!(fs::read(&f).unwrap(), b"new");
    }

    #[test]
    fn open_tightens_existing_loose_files() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        fs::write(&db, b"").unwrap(); // an empty file is an empty database
        fs::set_permissions(&db, Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&db).unwrap());
        assert_eq!(mode_of(&db), 0o600);
    }

    #[test]
    fn pragmas_are_set() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("wockd.db")).unwrap();
        let conn = store.conn();
        let journal: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let get = |name| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(get("synchronous"), 2); // FULL
        assert_eq!(get("foreign_keys"), 1);
        assert_eq!(get("secure_delete"), 1);
        assert_eq!(get("busy_timeout"), 5000);
        assert_eq!(get("cache_size"), -i64::from(CACHE_KIB));
    }

    /// A cached statement with a filter on a bound value is compiled once, not again each time
    /// it comes back from rusqlite's cache (see `set_pragmas`).
    #[test]
    fn cached_statements_are_not_compiled_again() {
        let store = Store::open_in_memory().unwrap();
        store.create_account("alice", "example.org", &[]).unwrap();
        let sql = "SELECT k.salt FROM accounts a JOIN account_keys k ON k.account = a.id
                   WHERE a.username = ?1 AND a.domain = ?2 AND k.mechanism = ?3";
        for user in ["alice", "bob", "alice"] {
            let mut stmt = store.conn().prepare_cached(sql).unwrap();
            let _ = stmt.query_row(
                rusqlite::params![user, "example.org", "SCRAM-SHA-256"],
                |_| Ok(()),
            );
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
    }

    #[test]
    fn migrations_run_once_and_reopen_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        let known = migrations::MIGRATIONS.len() as i64;

        let store = Store::open(&db).unwrap();
        assert_eq!(user_version(&store), known);
        store
            .conn()
            .execute(
                "INSERT INTO accounts (username, domain, created) VALUES ('a', 'b', 0)",
                [],
            )
            .unwrap();
        drop(store);

        let store = Store::open(&db).unwrap();
        assert_eq!(user_version(&store), known);
        let n: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "reopening must not recreate or clear tables");
    }

    #[test]
    fn too_new_database_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        let known = migrations::MIGRATIONS.len() as i64;
        let store = Store::open(&db).unwrap();
        store
            .conn()
            .pragma_update(None, "user_version", known + 1)
            .unwrap();
        drop(store);

        match Store::open(&db) {
            Err(StoreError::TooNew { found, known: k }) => {
                assert_eq!((found, k), (known + 1, known));
            }
            other => panic!("expected TooNew, got {other:?}"),
        }
        let conn = Connection::open(&db).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, known + 1);
    }

    #[test]
    fn concurrent_first_opens_and_two_connections() {
        // The server and a CLI command may open (and migrate) the same new
        // file at once; every opener must succeed and see the same schema.
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("wockd.db");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || Store::open(&db).map(drop))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }

        let a = Store::open(&db).unwrap();
        let b = Store::open(&db).unwrap();
        assert_eq!(user_version(&a), migrations::MIGRATIONS.len() as i64);
        a.conn()
            .execute(
                "INSERT INTO accounts (username, domain, created) VALUES ('a', 'b', 0)",
                [],
            )
            .unwrap();
        let n: i64 = b
            .conn()
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn transaction_commits_on_ok_and_rolls_back_on_err() {
        let store = Store::open_in_memory().unwrap();
        store.conn().execute_batch("CREATE TABLE t (x)").unwrap();
        let count = || -> i64 {
            store
                .conn()
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };

        let r: Result<i32, StoreError> = store.transaction(|tx| {
            tx.execute("INSERT INTO t VALUES (1)", [])?;
            Ok(7)
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(count(), 1);

        let r: Result<(), StoreError> = store.transaction(|tx| {
            tx.execute("INSERT INTO t VALUES (2)", [])?;
            Err(StoreError::NoSuchAccount)
        });
        assert!(matches!(r, Err(StoreError::NoSuchAccount)));
        assert_eq!(count(), 1);
        assert!(store.conn().is_autocommit());
    }

    #[test]
    fn io_error_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = Store::open(&file.join("wockd.db")).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
