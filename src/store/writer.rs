//! Group commit off the main loop: the store's writer thread.
//!
//! Mailbox rows (`Store::queue_mailbox`) and write jobs (`Store::write`) queued on the main
//! loop form the *filling* batch. At the end of a loop turn the server hands it to the writer
//! thread (`Store::submit`), which writes it in one transaction on a connection of its own and
//! commits (WAL, `synchronous = FULL`: one fsync per batch). While that commit is in flight the
//! loop goes on and the next batch fills; when the writer reports back (`Done`, through an
//! channel the main context reads, with a wake-up token) the next batch goes at once. So the loop never waits
//! for the disk, a busy second costs one fsync per commit round rather than one per loop turn,
//! and an idle server commits a lone message at once.
//!
//! What depends on durability waits for its batch: a job's continuation runs on the main loop
//! after the commit, `Store::after_commit` runs code once everything queued so far is on disk,
//! and `Store::committed_seq` / `Store::filling_seq` let the server hold acknowledgements
//! (XEP-0198 `<a/>`, IQ results) of a client until the batches its stanzas filled are committed.
//!
//! Failure: a batch whose transaction fails as a whole (disk full, I/O error, the database
//! locked by another process for longer than the busy timeout) comes back with its rows and
//! jobs, which go in front of the filling batch; the server pauses input and retries. A job
//! that fails on its own (say, a constraint) runs in a savepoint, so only it is undone and its
//! continuation gets the error; a row that violates a constraint (its account was deleted
//! meanwhile) is dropped with a warning and does not hold back the others.
//!
//! A store without a file (`Store::open_in_memory`, unit tests) has no thread: batches are
//! written on the main connection when submitted, and completion is reported the same way.

use std::any::Any;
use std::cell::RefCell;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use super::StoreError;
use super::mailbox::{self, NewEntry};

/// A job's result, boxed to cross the thread (`Store::write` unboxes it).
pub(super) type Value = Box<dyn Any + Send>;

/// A write job: runs on the writer's connection inside the batch's transaction. `FnMut`
/// because a batch that fails as a whole is retried, jobs included.
pub(super) type Job = Box<dyn FnMut(&Transaction<'_>) -> Result<Value, StoreError> + Send>;

/// What runs on the main loop once a job's batch is committed.
pub(super) type Then = Box<dyn FnOnce(Result<Value, StoreError>)>;

/// One queued write, in the order it was queued.
pub(super) enum Op {
    Row(NewEntry),
    Job(Job),
}

/// A batch for the writer: what one loop turn (or one commit round) queued.
pub(super) struct Batch {
    pub seq: u64,
    pub ops: Vec<Op>,
}

/// The writer's report on a batch.
pub struct Done {
    pub(super) seq: u64,
    pub(super) outcome: Outcome,
}

pub(super) enum Outcome {
    /// Committed; one result per job, in order.
    Committed(Vec<Result<Value, StoreError>>),
    /// Nothing was written; the batch comes back to be retried.
    Failed { ops: Vec<Op>, error: StoreError },
}

/// Writes `batch` in one transaction on `conn`.
pub(super) fn run(conn: &Connection, batch: Batch) -> Done {
    let Batch { seq, mut ops } = batch;
    let outcome = match write(conn, &mut ops) {
        Ok(results) => Outcome::Committed(results),
        Err(error) => Outcome::Failed { ops, error },
    };
    Done { seq, outcome }
}

fn write(conn: &Connection, ops: &mut [Op]) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let mut results = Vec::new();
    {
        let mut rows = mailbox::Appender::new(&tx)?;
        for op in ops.iter_mut() {
            match op {
                Op::Row(e) => rows.push(e, |e, err| {
                    tracing::warn!(account = e.account, "mailbox: row dropped: {err}");
                })?,
                Op::Job(job) => {
                    tx.execute_batch("SAVEPOINT job")?;
                    // A bug in a job fails that job, not the batch or the thread.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&tx)))
                        .unwrap_or_else(|_| Err(StoreError::Job("a write job panicked".into())));
                    match ran {
                        Ok(v) => {
                            tx.execute_batch("RELEASE job")?;
                            results.push(Ok(v));
                        }
                        Err(e) if whole_batch(&e) => return Err(e),
                        Err(e) => {
                            tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                            results.push(Err(e));
                        }
                    }
                    // The job may have written mailbox rows of its own.
                    rows.resync(&tx)?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

/// Errors that say the database cannot be written now rather than that one job is wrong: the
/// batch fails as a whole and is retried.
fn whole_batch(e: &StoreError) -> bool {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::OutOfMemory
                | ErrorCode::CannotOpen
        ),
        StoreError::Io { .. } => true,
        _ => false,
    }
}

/// The writer thread and the way batches reach it. Dropping it lets the thread finish the
/// batch it has and joins it.
pub(super) struct Thread {
    batches: Option<mpsc::Sender<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Thread {
    /// Opens a connection of its own to `path` (whose schema is current: the main connection
    /// migrated it) and starts the thread; reports go to `done`.
    pub(super) fn spawn(
        path: &Path,
        done: mpsc::Sender<Done>,
        wake: async_channel::Sender<()>,
    ) -> Result<Thread, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        super::set_pragmas(&conn)?;
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
        let (tx, rx) = mpsc::channel::<Batch>();
        let handle = std::thread::Builder::new()
            .name("wockd-store".into())
            .spawn(move || {
                // Behind the main loop for the CPU: a commit can wait a little (the next batch
                // fills meanwhile), a stanza on its way to a client should not. On Linux the
                // nice value is per thread.
                // SAFETY: plain system calls on this thread.
                unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, WRITER_NICE);
                }
                for batch in rx {
                    if done.send(run(&conn, batch)).is_err() {
                        break;
                    }
                    let _ = wake.try_send(());
                }
            })
            .map_err(|e| StoreError::io("cannot start the store writer thread for", path, e))?;
        Ok(Thread {
            batches: Some(tx),
            handle: Some(handle),
        })
    }

    /// Hands `batch` over; gives it back if the thread is gone.
    fn send(&self, batch: Batch) -> Result<(), Batch> {
        match &self.batches {
            Some(tx) => tx.send(batch).map_err(|e| e.0),
            None => Err(batch),
        }
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        self.batches = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Nice value of the writer thread (see `Thread::spawn`).
const WRITER_NICE: libc::c_int = 10;

/// The batch being written.
struct InFlight {
    seq: u64,
    thens: Vec<Then>,
    waiters: Vec<Box<dyn FnOnce()>>,
    /// Accounts of its offline rows, one entry per row (the offline quota counts them).
    offline: Vec<i64>,
}

/// Most writes the filling batch takes while another commits before the server stops taking
/// input (`Store::backlogged`): a bound on memory, and on the size of one transaction.
pub const MAX_QUEUED: usize = 20_000;
/// Most bytes of stanza XML in the filling batch, likewise.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// The main loop's side: the filling batch, the one in flight, sequence numbers.
pub(super) struct Pipeline {
    filling: Vec<Op>,
    /// Continuations of the filling batch's jobs, in order.
    thens: Vec<Then>,
    /// `after_commit` callbacks waiting for the filling batch.
    waiters: Vec<Box<dyn FnOnce()>>,
    in_flight: Option<InFlight>,
    /// Sequence number of the filling batch; batches are numbered from 1.
    seq: u64,
    /// Every batch up to this one is committed.
    committed: u64,
    /// Writes queued since the start, for "did this stanza write anything".
    queued: u64,
    /// Bytes of row XML in the filling batch.
    filling_bytes: usize,
}

impl Default for Pipeline {
    fn default() -> Pipeline {
        Pipeline {
            filling: Vec::new(),
            thens: Vec::new(),
            waiters: Vec::new(),
            in_flight: None,
            seq: 1,
            committed: 0,
            queued: 0,
            filling_bytes: 0,
        }
    }
}

/// What [`Pipeline::complete`] found.
pub enum Completed {
    /// Batch `seq` (and every earlier one) is on disk.
    Committed(u64),
    /// The batch failed as a whole and is queued again.
    Failed(StoreError),
}

impl Pipeline {
    /// Queues `op`; returns true when the filling batch was empty (the server then schedules
    /// its submission at the end of the loop turn) or has just become backlogged (the server
    /// then stops taking input).
    pub(super) fn push(&mut self, op: Op, then: Option<Then>) -> bool {
        let first = self.filling.is_empty();
        let was_backlogged = self.backlogged();
        if let Op::Row(e) = &op {
            self.filling_bytes += e.xml.len();
        }
        self.filling.push(op);
        if let Some(t) = then {
            self.thens.push(t);
        }
        self.queued += 1;
        first || (!was_backlogged && self.backlogged())
    }

    pub(super) fn queued(&self) -> u64 {
        self.queued
    }

    pub(super) fn filling_seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn committed_seq(&self) -> u64 {
        self.committed
    }

    /// The filling batch is full while another commits (see [`MAX_QUEUED`]).
    pub(super) fn backlogged(&self) -> bool {
        self.in_flight.is_some()
            && (self.filling.len() >= MAX_QUEUED || self.filling_bytes >= MAX_QUEUED_BYTES)
    }

    pub(super) fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    pub(super) fn is_idle(&self) -> bool {
        self.filling.is_empty() && self.in_flight.is_none()
    }

    /// Runs `f` once everything queued so far is committed; gives it back when nothing waits.
    pub(super) fn after_commit(&mut self, f: Box<dyn FnOnce()>) -> Option<Box<dyn FnOnce()>> {
        if !self.filling.is_empty() {
            self.waiters.push(f);
            None
        } else if let Some(flight) = &mut self.in_flight {
            flight.waiters.push(f);
            None
        } else {
            Some(f)
        }
    }

    /// Queued offline rows of `account`, in the filling batch and in flight.
    pub(super) fn offline_rows(&self, account: i64) -> u64 {
        let filling = self
            .filling
            .iter()
            .filter(|op| matches!(op, Op::Row(e) if e.account == account && e.offline))
            .count();
        let flying = self
            .in_flight
            .as_ref()
            .map_or(0, |f| f.offline.iter().filter(|a| **a == account).count());
        (filling + flying) as u64
    }

    /// Takes the filling batch for the writer, unless one is in flight or nothing is queued.
    pub(super) fn take_batch(&mut self) -> Option<Batch> {
        if self.in_flight.is_some() || self.filling.is_empty() {
            return None;
        }
        let ops = std::mem::take(&mut self.filling);
        self.filling_bytes = 0;
        let offline = ops
            .iter()
            .filter_map(|op| match op {
                Op::Row(e) if e.offline => Some(e.account),
                _ => None,
            })
            .collect();
        let seq = self.seq;
        self.seq += 1;
        self.in_flight = Some(InFlight {
            seq,
            thens: std::mem::take(&mut self.thens),
            waiters: std::mem::take(&mut self.waiters),
            offline,
        });
        Some(Batch { seq, ops })
    }

    /// Takes the writer's report on the batch in flight. Returns what happened and the
    /// callbacks to run (continuations with their results, then `after_commit` waiters), which
    /// the caller runs once it no longer borrows the pipeline.
    pub(super) fn complete(&mut self, done: Done) -> (Completed, Vec<Box<dyn FnOnce()>>) {
        let Some(flight) = self.in_flight.take_if(|f| f.seq == done.seq) else {
            tracing::error!(
                seq = done.seq,
                "store: report on a batch that is not in flight"
            );
            return (Completed::Committed(self.committed), Vec::new());
        };
        match done.outcome {
            Outcome::Committed(results) => {
                self.committed = self.committed.max(flight.seq);
                let mut run: Vec<Box<dyn FnOnce()>> = Vec::with_capacity(results.len());
                for (then, result) in flight.thens.into_iter().zip(results) {
                    run.push(Box::new(move || then(result)));
                }
                run.extend(flight.waiters);
                (Completed::Committed(flight.seq), run)
            }
            Outcome::Failed { mut ops, error } => {
                // Back in front of what was queued meanwhile, in order; the filling batch's
                // number stays, and its commit covers both.
                ops.append(&mut self.filling);
                self.filling = ops;
                self.filling_bytes = self
                    .filling
                    .iter()
                    .map(|op| match op {
                        Op::Row(e) => e.xml.len(),
                        Op::Job(_) => 0,
                    })
                    .sum();
                let mut thens = flight.thens;
                thens.append(&mut self.thens);
                self.thens = thens;
                let mut waiters = flight.waiters;
                waiters.append(&mut self.waiters);
                self.waiters = waiters;
                (Completed::Failed(error), Vec::new())
            }
        }
    }
}

/// Where batches go: the writer thread, or (no file) the main connection.
#[derive(Default)]
pub(super) struct Sink(RefCell<Option<Thread>>);

impl Sink {
    pub(super) fn start(&self, thread: Thread) {
        *self.0.borrow_mut() = Some(thread);
    }

    pub(super) fn running(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Sends `batch` to the thread; without one (or if it died), returns it to be written
    /// inline.
    pub(super) fn send(&self, batch: Batch) -> Result<(), Batch> {
        match &*self.0.borrow() {
            Some(t) => t.send(batch),
            None => Err(batch),
        }
    }

    /// Stops the thread after the batch it has (at shutdown, after the last commit).
    pub(super) fn stop(&self) {
        drop(self.0.borrow_mut().take());
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.running() {
            "Sink(thread)"
        } else {
            "Sink(inline)"
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::store::Store;
    use crate::store::mailbox::{self, Direction, NewEntry};

    use super::Completed;

    fn row(account: i64, n: u32, offline: bool) -> NewEntry {
        NewEntry {
            account,
            stanza_id: format!("w-{account}-{n}"),
            ts: i64::from(n),
            with: "bob@localhost".into(),
            direction: Direction::In,
            offline,
            xml: b"<message/>".to_vec(),
        }
    }

    fn account(store: &Store, name: &str) -> i64 {
        store.create_account(name, "localhost", &[]).unwrap();
        store.account_id(name, "localhost").unwrap().unwrap()
    }

    fn rows(conn: &rusqlite::Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM mailbox", [], |r| r.get(0))
            .unwrap()
    }

    /// Takes the next report and completes it; returns what happened.
    fn next(store: &Store) -> Completed {
        store.report_ready().recv_blocking().unwrap();
        let done = store.take_report().unwrap();
        store.complete(done)
    }

    #[test]
    fn inline_batches_commit_jobs_in_order_and_report() {
        let store = Store::open_in_memory().unwrap();
        let alice = account(&store, "alice");
        let seen = Rc::new(RefCell::new(Vec::new()));
        store.queue_mailbox(row(alice, 1, true));
        let s = seen.clone();
        // The job sees the row queued before it, in the same transaction.
        store.write(
            move |tx| Ok(mailbox::count_pending(tx, alice)?),
            move |r| s.borrow_mut().push(format!("job {}", r.unwrap())),
        );
        let s = seen.clone();
        store.after_commit(move || s.borrow_mut().push("after".into()));
        assert_eq!(store.queued_offline(alice), 1);
        assert_eq!((store.filling_seq(), store.committed_seq()), (1, 0));
        assert!(store.submit());
        assert!(
            !store.submit(),
            "a second batch went while one was in flight"
        );
        assert_eq!(store.queued_offline(alice), 1, "in flight still counts");
        assert!(matches!(next(&store), Completed::Committed(1)));
        assert_eq!(*seen.borrow(), ["job 1", "after"]);
        assert_eq!((store.filling_seq(), store.committed_seq()), (2, 1));
        assert_eq!(store.queued_offline(alice), 0);
        assert_eq!(rows(store.conn()), 1);
        // Nothing waits: after_commit runs at once.
        let s = seen.clone();
        store.after_commit(move || s.borrow_mut().push("now".into()));
        assert_eq!(seen.borrow().last().map(String::as_str), Some("now"));
    }

    #[test]
    fn a_failing_job_fails_alone() {
        let store = Store::open_in_memory().unwrap();
        let alice = account(&store, "alice");
        let got = Rc::new(RefCell::new(None));
        store.queue_mailbox(row(alice, 1, false));
        let g = got.clone();
        store.write(
            move |tx| {
                // Written, then undone with the job: the savepoint keeps the batch.
                mailbox::append(tx, &row(alice, 2, false))?;
                mailbox::append(tx, &row(alice, 1, false))?; // duplicate stanza id
                Ok(())
            },
            move |r| *g.borrow_mut() = Some(r.is_err()),
        );
        store.queue_mailbox(row(alice, 3, false));
        store.queue_mailbox(row(alice + 99, 4, false)); // no such account: dropped
        store.commit_pending().unwrap();
        assert_eq!(*got.borrow(), Some(true));
        let ids: Vec<String> = store
            .conn()
            .prepare("SELECT stanza_id FROM mailbox ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [format!("w-{alice}-1"), format!("w-{alice}-3")]);
    }

    #[test]
    fn the_thread_commits_while_the_next_batch_fills() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("wockd.db");
        let store = Store::open(&path).unwrap();
        let alice = account(&store, "alice");
        store.start_writer().unwrap();
        for n in 0..100 {
            store.queue_mailbox(row(alice, n, n % 2 == 0));
        }
        assert!(store.submit());
        // While batch 1 is in flight, batch 2 fills; it goes when 1 is reported.
        for n in 100..150 {
            store.queue_mailbox(row(alice, n, false));
        }
        assert_eq!(store.filling_seq(), 2);
        assert_eq!(store.queued_offline(alice), 50);
        assert!(!store.submit());
        assert!(matches!(next(&store), Completed::Committed(1)));
        // Committed by the other connection and visible to the main one.
        assert_eq!(rows(store.conn()), 100);
        assert!(store.submit());
        assert!(matches!(next(&store), Completed::Committed(2)));
        assert_eq!(rows(store.conn()), 150);
        // And on disk for anyone who opens the file.
        store.queue_mailbox(row(alice, 150, true));
        store.stop_writer().unwrap();
        let other = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(rows(&other), 151);
        assert_eq!(mailbox::count_pending(&other, alice).unwrap(), 51);
    }
}
