//! PBKDF2 off the main loop.
//!
//! A plaintext password (SASL PLAIN, XEP-0078, XEP-0077 account creation and password change)
//! costs a full PBKDF2 run: a few milliseconds at 4096 iterations, much more at higher counts.
//! Run on the thread of the glib main loop, a storm of such logins would stall routing for
//! everybody. [`KdfPool`] runs these jobs on a few worker threads (std threads, a bounded job
//! queue); the answer comes back to the main context through an `async-channel` awaited by a
//! future spawned there (the pattern of the torrent worker). SCRAM stays inline: verifying a
//! SCRAM proof is a few HMACs on the stored keys.
//!
//! The connection that asked stops processing input until its answer is in (see
//! [`Connection::check_password_then`]), so nothing it sent after the credentials is handled
//! before the result; other connections are served meanwhile.
//!
//! Unknown users cost the same as known ones: their password is run through PBKDF2 against a
//! dummy verifier (a per-process random salt and key, the configured iteration count).

use std::cell::OnceCell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::OnceLock;

use jid::BareJid;
use rand::RngCore;

use super::scram::{self, Hash, SALT_LEN, ScramKeys};
use crate::server::Server;
use crate::stream::Connection;

/// Jobs that may wait for a worker; beyond that, new jobs are refused ([`Busy`]).
pub const QUEUE_LEN: usize = 256;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The job queue is full: the caller answers with a temporary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks in progress")]
pub struct Busy;

/// A small pool of worker threads for key derivations. The threads end when the pool is
/// dropped (their queue closes) and the job they are running, if any, is done.
pub struct KdfPool {
    jobs: async_channel::Sender<Job>,
    threads: usize,
}

impl KdfPool {
    /// Starts `threads` workers (at least one) sharing a queue of `queue` jobs (at least one).
    pub fn new(threads: usize, queue: usize) -> KdfPool {
        let threads = threads.max(1);
        let (tx, rx) = async_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wockd-kdf-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv_blocking() {
                        // A panicking job drops its answer channel: the waiting side sees the
                        // channel closed and fails the request; the worker carries on.
                        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!("a key derivation job panicked");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start a key derivation thread: {e}");
            }
        }
        KdfPool { jobs: tx, threads }
    }

    /// The number of threads for `configured` (0: one less than the CPUs, at least one).
    pub fn default_threads(configured: usize) -> usize {
        if configured > 0 {
            return configured;
        }
        std::thread::available_parallelism()
            .map(|n| n.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `work`; its result arrives on the returned channel. Fails at once when the queue
    /// is full.
    pub fn submit<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<async_channel::Receiver<R>, Busy> {
        let (tx, rx) = async_channel::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send_blocking(work());
        });
        self.jobs.try_send(job).map_err(|_| Busy)?;
        Ok(rx)
    }
}

/// The server's pool, made on first use with `auth.kdf_threads`.
#[derive(Default)]
struct Pool(OnceCell<KdfPool>);

fn pool(server: &Server) -> Rc<Pool> {
    let p = server.ext::<Pool>();
    p.0.get_or_init(|| {
        KdfPool::new(
            KdfPool::default_threads(server.config.auth.kdf_threads),
            QUEUE_LEN,
        )
    });
    p
}

/// Runs `work` on the server's pool; `done` runs on the main context with its result, or
/// with `Err(Busy)` if the pool could not take or finish the job.
pub fn run<R: Send + 'static>(
    server: &Server,
    work: impl FnOnce() -> R + Send + 'static,
    done: impl FnOnce(Result<R, Busy>) + 'static,
) {
    let rx = match pool(server).0.get().map(|p| p.submit(work)) {
        Some(Ok(rx)) => rx,
        _ => return done(Err(Busy)),
    };
    crate::net::source::spawn_local(async move {
        done(rx.recv().await.map_err(|_| Busy));
    });
}

/// The dummy verifier unknown users are checked against: same iteration count as real
/// accounts, a per-process random salt and stored key (so it never matches).
fn dummy_keys(iterations: u32) -> ScramKeys {
    static SECRET: OnceLock<([u8; SALT_LEN], [u8; 32])> = OnceLock::new();
    let (salt, key) = SECRET.get_or_init(|| {
        let mut salt = [0u8; SALT_LEN];
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        rand::thread_rng().fill_bytes(&mut key);
        (salt, key)
    });
    ScramKeys {
        salt: salt.to_vec(),
        iterations: iterations.max(1),
        stored_key: key.to_vec(),
        server_key: key.to_vec(),
    }
}

/// The work of a password check, to run on a worker: PBKDF2 against `keys` (the account's
/// SCRAM-SHA-256 verifier) or, for an unknown user, against the dummy verifier, so both cost
/// the same. True only for a known user with the right password.
pub fn verify_job(
    keys: Option<ScramKeys>,
    unknown_user_iterations: u32,
    password: String,
) -> impl FnOnce() -> bool + Send + 'static {
    move || {
        let known = keys.is_some();
        let keys = keys.unwrap_or_else(|| dummy_keys(unknown_user_iterations));
        let ok = scram::verify_password(Hash::Sha256, &keys, &password);
        known && ok
    }
}

/// New SCRAM verifiers for every supported hash (account creation, password change).
pub fn derive_all(
    password: &str,
    iterations: u32,
) -> Result<Vec<(Hash, ScramKeys)>, scram::ScramError> {
    Ok(vec![
        (
            Hash::Sha1,
            scram::new_keys(Hash::Sha1, password, iterations)?,
        ),
        (
            Hash::Sha256,
            scram::new_keys(Hash::Sha256, password, iterations)?,
        ),
    ])
}

impl Connection {
    /// Stops handling this connection's input until [`resume_input`](Self::resume_input), runs
    /// `work` on the key derivation pool, then calls `done` with its result (or `Err(Busy)`)
    /// and resumes input. `done` is not called if the connection closed meanwhile.
    pub(crate) fn kdf_then<R: Send + 'static>(
        self: &Rc<Self>,
        server: &Server,
        work: impl FnOnce() -> R + Send + 'static,
        done: impl FnOnce(&Rc<Connection>, Result<R, Busy>) + 'static,
    ) {
        self.pause_input();
        let weak = Rc::downgrade(self);
        run(server, work, move |result| {
            let Some(conn) = weak.upgrade() else { return };
            if !conn.is_open() {
                return;
            }
            done(&conn, result);
            conn.resume_input();
        });
    }

    /// Checks `password` for `account` off the main loop (see [`verify_job`]); `done` gets
    /// `Ok(true)` for the right password of an existing account.
    pub(crate) fn check_password_then(
        self: &Rc<Self>,
        server: &Server,
        account: &BareJid,
        password: &str,
        done: impl FnOnce(&Rc<Connection>, Result<bool, Busy>) + 'static,
    ) {
        let node = account.node().map(|n| n.to_string()).unwrap_or_default();
        let keys = match server
            .store
            .account_keys(&node, account.domain().as_str(), Hash::Sha256)
        {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!("store error checking password: {e}");
                None
            }
        };
        let job = verify_job(
            keys,
            server.config.auth.scram_iterations,
            password.to_owned(),
        );
        self.kdf_then(server, job, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_answers_through_the_channel() {
        let pool = KdfPool::new(2, 8);
        assert_eq!(pool.threads(), 2);
        let receivers: Vec<_> = (0..8u32)
            .map(|i| pool.submit(move || i * 2).unwrap())
            .collect();
        let results: Vec<u32> = receivers
            .into_iter()
            .map(|rx| rx.recv_blocking().unwrap())
            .collect();
        assert_eq!(results, (0..8).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn full_queue_is_refused_not_grown() {
        let pool = KdfPool::new(1, 1);
        // Hold the only worker until released, then fill the single queue slot.
        let (release_tx, release_rx) = async_channel::bounded::<()>(1);
        let (started_tx, started_rx) = async_channel::bounded::<()>(1);
        let first = pool
            .submit(move || {
                started_tx.send_blocking(()).unwrap();
                release_rx.recv_blocking().unwrap();
                1
            })
            .unwrap();
        started_rx.recv_blocking().unwrap();
        let second = pool.submit(|| 2).unwrap();
        assert_eq!(pool.submit(|| 3).err(), Some(Busy));
        release_tx.send_blocking(()).unwrap();
        assert_eq!(first.recv_blocking().unwrap(), 1);
        assert_eq!(second.recv_blocking().unwrap(), 2);
    }

    #[test]
    fn a_panicking_job_closes_its_channel_and_the_worker_lives_on() {
        let pool = KdfPool::new(1, 4);
        let rx = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
        assert!(rx.recv_blocking().is_err());
        assert_eq!(pool.submit(|| 7).unwrap().recv_blocking().unwrap(), 7);
    }

    #[test]
    fn answers_reach_the_main_context() {
        let ctx = glib::MainContext::new();
        ctx.with_thread_default(|| {
            let pool = KdfPool::new(1, 4);
            let rx = pool.submit(|| 41 + 1).unwrap();
            let got = ctx.block_on(async move { rx.recv().await.unwrap() });
            assert_eq!(got, 42);
        })
        .unwrap();
    }

    #[test]
    fn verify_job_known_unknown_and_wrong() {
        let keys = scram::new_keys(Hash::Sha256, "secret", 64).unwrap();
        assert!(verify_job(Some(keys.clone()), 64, "secret".into())());
        assert!(!verify_job(Some(keys), 64, "wrong".into())());
        // An unknown user never succeeds, whatever the password.
        assert!(!verify_job(None, 64, "secret".into())());
        assert!(!verify_job(None, 0, String::new())());
        // The dummy verifier is stable within the process.
        assert_eq!(dummy_keys(10), dummy_keys(10));
        assert_eq!(dummy_keys(10).iterations, 10);
    }

    #[test]
    fn threads_default() {
        assert_eq!(KdfPool::default_threads(3), 3);
        assert!(KdfPool::default_threads(0) >= 1);
    }
}
