//! The torrent engine's thread: one librqbit `Session` for all users on its own multi-thread
//! tokio runtime (librqbit needs one; its disk I/O uses `block_in_place`). The glib loop never
//! waits on it: commands arrive over an `async-channel`, each carrying a `oneshot` for its
//! answer, and events (engine ready, torrent finished, torrent failed) go back over another
//! `async-channel` that a future on the main context reads. No lock is shared.
//!
//! librqbit traps handled here (shared/reference/torrent.md §2):
//! - `add_torrent` for a magnet does not return until metadata arrives, possibly never: magnets
//!   are resolved first with `list_only` in their own task, under a timeout, cancellable;
//! - `wait_until_completed` never resolves for a paused torrent or one that fails once live, and
//!   `finished` is level-triggered: each torrent has a watcher that polls `stats()` too, and the
//!   main side dedupes with the job's `notified` flags;
//! - DHT and LSD default to on in `SessionOptions`: both are set explicitly from the config.
//!
//! Where it may connect ([`guard`]): magnets and .torrents reach librqbit without the trackers
//! that fail the address policy, and unless private addresses are allowed the session gets a
//! blocklist of every non-public range and this host's addresses, which librqbit checks before
//! each outgoing peer connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use librqbit::api::TorrentIdOrHash;
use librqbit::dht::DhtPersistenceConfig;
use librqbit::limits::LimitsConfig;
use librqbit::{
    AddTorrent, AddTorrentOptions, AddTorrentResponse, DhtSessionConfig, ListenerMode,
    ListenerOptions, ManagedTorrent, Session, SessionOptions, SessionPersistenceConfig,
    TorrentStatsState,
};
use tokio::sync::oneshot;

use super::fetch::{self, Fetcher};
use super::guard::{self, Ignored};
use super::jobs::{Failure, Progress, human_bytes};
use crate::core::stanza::Condition;

/// How the engine runs (from `[torrent]`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub download_dir: PathBuf,
    /// librqbit's own state: `session.json`, `<hash>.torrent`, `<hash>.bitv` (fast resume).
    pub session_dir: PathBuf,
    pub dht: bool,
    pub lsd: bool,
    pub upnp: bool,
    pub listen: Option<(IpAddr, [u16; 2])>,
    pub bind_device: Option<String>,
    pub download_bps: Option<NonZeroU32>,
    pub upload_bps: Option<NonZeroU32>,
    pub fetch: fetch::Limits,
}

pub type Reply<T> = oneshot::Sender<Result<T, Failure>>;

/// Commands from the main loop.
pub enum Cmd {
    /// Fetch a .torrent (cancellable by job).
    Fetch {
        job: i64,
        url: String,
        reply: Reply<Vec<u8>>,
    },
    /// Get a magnet's metadata without adding it (cancellable by job).
    Resolve {
        job: i64,
        magnet: String,
        peers: Vec<SocketAddr>,
        timeout: Duration,
        reply: Reply<Resolved>,
    },
    /// Stop a Fetch or Resolve of this job: its reply is dropped.
    Cancel {
        job: i64,
    },
    Add(AddRequest, Reply<Added>),
    Pause {
        torrent: usize,
        reply: Reply<()>,
    },
    Resume {
        torrent: usize,
        reply: Reply<()>,
    },
    Remove {
        torrent: usize,
        delete_files: bool,
        reply: Reply<()>,
    },
    /// Live numbers; `None` for torrents the engine does not have.
    Stats {
        torrents: Vec<usize>,
        reply: oneshot::Sender<Vec<Option<Progress>>>,
    },
}

pub struct AddRequest {
    pub bytes: Vec<u8>,
    /// The owner's folder; the torrent goes inside it.
    pub user_dir: PathBuf,
    /// Use exactly this output folder (re-adding a known job).
    pub folder: Option<PathBuf>,
    pub peers: Vec<SocketAddr>,
    pub paused: bool,
    /// Refuse torrents larger than this (the owner's remaining quota).
    pub max_bytes: Option<u64>,
}

#[derive(Debug)]
pub struct Added {
    pub torrent: usize,
    pub info_hash: String,
    pub name: Option<String>,
    pub total: u64,
    pub folder: PathBuf,
    /// Trackers left out by the address policy.
    pub ignored: Vec<Ignored>,
}

#[derive(Debug)]
pub struct Resolved {
    pub bytes: Vec<u8>,
    pub info_hash: String,
    pub name: Option<String>,
    pub total: u64,
    /// Peers seen while resolving, to start the download with.
    pub peers: Vec<SocketAddr>,
    /// Trackers left out by the address policy.
    pub ignored: Vec<Ignored>,
}

/// What librqbit brought back from its own persistence at start.
#[derive(Debug)]
pub struct Restored {
    pub torrent: usize,
    pub info_hash: String,
    pub paused: bool,
}

pub enum Event {
    Ready(Vec<Restored>),
    StartFailed(String),
    Finished { torrent: usize },
    Failed { torrent: usize, error: String },
}

/// The main loop's handle on the engine thread. Dropping it stops the engine (librqbit pauses
/// every torrent, flushing its state) and joins the thread.
pub struct Worker {
    cmds: async_channel::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(settings: Settings) -> std::io::Result<(Worker, async_channel::Receiver<Event>)> {
        let (cmd_tx, cmd_rx) = async_channel::unbounded();
        let (ev_tx, ev_rx) = async_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("wockd-torrent".into())
            .spawn(move || run(settings, cmd_rx, ev_tx))?;
        Ok((
            Worker {
                cmds: cmd_tx,
                thread: Some(thread),
            },
            ev_rx,
        ))
    }

    /// Queues a command (never blocks). Should the engine be gone, the command and with it its
    /// reply sender are dropped, which the waiting side sees as an error.
    pub fn send(&self, cmd: Cmd) {
        let _ = self.cmds.try_send(cmd);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cmds.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn engine_gone(why: &str) -> Failure {
    Failure::new(
        Condition::ServiceUnavailable,
        format!("the torrent engine is not running: {why}"),
    )
}

impl Cmd {
    fn fail(self, f: Failure) {
        match self {
            Cmd::Fetch { reply, .. } => drop(reply.send(Err(f))),
            Cmd::Resolve { reply, .. } => drop(reply.send(Err(f))),
            Cmd::Add(_, reply) => drop(reply.send(Err(f))),
            Cmd::Pause { reply, .. } | Cmd::Resume { reply, .. } | Cmd::Remove { reply, .. } => {
                drop(reply.send(Err(f)))
            }
            Cmd::Stats { reply, torrents } => drop(reply.send(vec![None; torrents.len()])),
            Cmd::Cancel { .. } => {}
        }
    }
}

fn run(settings: Settings, cmds: async_channel::Receiver<Cmd>, ev: async_channel::Sender<Event>) {
    // reqwest (ours and librqbit's) builds its TLS from the process default: ring, the
    // provider the rest of wockd uses. Err means one is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wockd-torrent-rt")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ev.send_blocking(Event::StartFailed(format!(
                "cannot start a tokio runtime: {e}"
            )));
            while let Ok(cmd) = cmds.recv_blocking() {
                cmd.fail(engine_gone("no runtime"));
            }
            return;
        }
    };
    rt.block_on(async move {
        let started = match (
            start_session(&settings).await,
            Fetcher::new(settings.fetch.clone()),
        ) {
            (Ok(s), Ok(f)) => Ok((s, Arc::new(f))),
            (Err(e), _) => Err(format!("{e:#}")),
            (_, Err(f)) => Err(f.text),
        };
        let (session, fetcher) = match started {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("torrent engine did not start: {e}");
                let _ = ev.send(Event::StartFailed(e.clone())).await;
                while let Ok(cmd) = cmds.recv().await {
                    cmd.fail(engine_gone(&e));
                }
                return;
            }
        };
        let restored: Vec<Arc<ManagedTorrent>> =
            session.with_torrents(|it| it.map(|(_, h)| h.clone()).collect());
        let mut list = Vec::new();
        for h in restored {
            list.push(Restored {
                torrent: h.id(),
                info_hash: h.info_hash().as_string(),
                paused: h.is_paused(),
            });
            tokio::spawn(watch(h, Arc::downgrade(&session), ev.clone()));
        }
        let _ = ev.send(Event::Ready(list)).await;

        // Fetches and magnet resolutions by job, so they can be cancelled.
        let mut tasks: HashMap<i64, tokio::task::AbortHandle> = HashMap::new();
        while let Ok(cmd) = cmds.recv().await {
            tasks.retain(|_, t| !t.is_finished());
            match cmd {
                Cmd::Fetch { job, url, reply } => {
                    let fetcher = fetcher.clone();
                    let t = tokio::spawn(async move {
                        let _ = reply.send(fetcher.get(&url).await);
                    });
                    tasks.insert(job, t.abort_handle());
                }
                Cmd::Resolve {
                    job,
                    magnet,
                    peers,
                    timeout,
                    reply,
                } => {
                    let session = session.clone();
                    let allow = settings.fetch.allow_private;
                    let t = tokio::spawn(async move {
                        let r = resolve(&session, magnet, peers, timeout, allow).await;
                        let _ = reply.send(r);
                    });
                    tasks.insert(job, t.abort_handle());
                }
                Cmd::Cancel { job } => {
                    if let Some(t) = tasks.remove(&job) {
                        t.abort();
                    }
                }
                Cmd::Add(req, reply) => {
                    let (session, ev) = (session.clone(), ev.clone());
                    let allow = settings.fetch.allow_private;
                    tokio::spawn(async move {
                        let _ = reply.send(add(&session, req, ev, allow).await);
                    });
                }
                Cmd::Pause { torrent, reply } => {
                    let session = session.clone();
                    tokio::spawn(async move {
                        let r = match session.get(TorrentIdOrHash::Id(torrent)) {
                            None => Err(missing(torrent)),
                            Some(h) if h.is_paused() => Ok(()),
                            Some(h) => session
                                .pause(&h)
                                .await
                                .map_err(|e| engine_error("cannot pause", e)),
                        };
                        let _ = reply.send(r);
                    });
                }
                Cmd::Resume { torrent, reply } => {
                    let (session, ev) = (session.clone(), ev.clone());
                    tokio::spawn(async move {
                        let r = match session.get(TorrentIdOrHash::Id(torrent)) {
                            None => Err(missing(torrent)),
                            Some(h) if !h.is_paused() => Ok(()),
                            Some(h) => match session.unpause(&h).await {
                                Ok(()) => {
                                    // The watcher of a finished torrent has ended; a resumed
                                    // one may have more to do.
                                    tokio::spawn(watch(h, Arc::downgrade(&session), ev));
                                    Ok(())
                                }
                                Err(e) => Err(engine_error("cannot resume", e)),
                            },
                        };
                        let _ = reply.send(r);
                    });
                }
                Cmd::Remove {
                    torrent,
                    delete_files,
                    reply,
                } => {
                    let session = session.clone();
                    tokio::spawn(async move {
                        let r = session
                            .delete(TorrentIdOrHash::Id(torrent), delete_files)
                            .await
                            .map_err(|e| engine_error("cannot remove", e));
                        let _ = reply.send(r);
                    });
                }
                Cmd::Stats { torrents, reply } => {
                    let v = torrents
                        .iter()
                        .map(|id| session.get(TorrentIdOrHash::Id(*id)).map(|h| progress(&h)))
                        .collect();
                    let _ = reply.send(v);
                }
            }
        }
        // The main side is gone: flush and stop.
        for (_, t) in tasks {
            t.abort();
        }
        session.stop().await;
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn missing(torrent: usize) -> Failure {
    Failure::new(
        Condition::ItemNotFound,
        format!("the engine has no torrent {torrent}"),
    )
}

fn engine_error(what: &str, e: anyhow::Error) -> Failure {
    Failure::new(Condition::InternalServerError, format!("{what}: {e:#}"))
}

/// The blocklist file librqbit loads at start (see [`guard::blocklist`]).
const BLOCKLIST: &str = "blocklist.txt";

async fn start_session(s: &Settings) -> anyhow::Result<Arc<Session>> {
    crate::store::private_dir(&s.download_dir)?;
    crate::store::private_dir(&s.session_dir)?;
    let blocklist_url = if s.fetch.allow_private {
        None
    } else {
        let path = s.session_dir.join(BLOCKLIST);
        let text = guard::blocklist(&crate::net::addr::own_addresses());
        crate::store::write_private(&path, text.as_bytes())?;
        let url = reqwest::Url::from_file_path(&path)
            .map_err(|()| anyhow::anyhow!("{} is not an absolute path", path.display()))?;
        Some(url.to_string())
    };
    let listen = match s.listen {
        None => None,
        Some((ip, [first, last])) => {
            let port = free_port(ip, first, last).ok_or_else(|| {
                anyhow::anyhow!("no free port for peers in {first}..={last} on {ip}")
            })?;
            Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: SocketAddr::new(ip, port),
                enable_upnp_port_forwarding: s.upnp,
                announce_port: (port != 0).then_some(port),
                ipv4_only: ip.is_ipv4(),
                ..Default::default()
            })
        }
    };
    let opts = SessionOptions {
        dht: s.dht.then(|| DhtSessionConfig {
            persistence: Some(DhtPersistenceConfig {
                config_filename: Some(s.session_dir.join("dht.json")),
                ..Default::default()
            }),
            ..Default::default()
        }),
        disable_local_service_discovery: !s.lsd,
        listen,
        bind_device_name: s.bind_device.clone(),
        persistence: Some(SessionPersistenceConfig::Json {
            folder: Some(s.session_dir.clone()),
        }),
        fastresume: true,
        ratelimits: LimitsConfig {
            download_bps: s.download_bps,
            upload_bps: s.upload_bps,
        },
        client_name_and_version: Some(format!("wockd {}", env!("CARGO_PKG_VERSION"))),
        blocklist_url,
        ..Default::default()
    };
    Session::new_with_opts(s.download_dir.clone(), opts).await
}

/// The first port of the range that can be bound now (`0`: let the system pick).
fn free_port(ip: IpAddr, first: u16, last: u16) -> Option<u16> {
    if first == 0 {
        return Some(0);
    }
    (first..=last).find(|p| TcpListener::bind((ip, *p)).is_ok())
}

fn progress(h: &ManagedTorrent) -> Progress {
    let s = h.stats();
    let live = s.live.as_ref();
    Progress {
        have: s.progress_bytes,
        total: s.total_bytes,
        down_bps: live.map(|l| l.download_speed.as_bytes()).unwrap_or(0),
        up_bps: live.map(|l| l.upload_speed.as_bytes()).unwrap_or(0),
        eta_secs: h
            .live()
            .and_then(|l| l.down_speed_estimator().time_remaining())
            .map(|d| d.as_secs())
            .filter(|_| !s.finished),
        peers: live.map(|l| l.snapshot.peer_stats.live).unwrap_or(0),
        paused: matches!(
            s.state,
            TorrentStatsState::Paused | TorrentStatsState::Initializing { paused: true }
        ),
        error: s.error,
    }
}

/// Reports the torrent's completion or failure once, then ends (a resume starts a new one).
async fn watch(h: Arc<ManagedTorrent>, session: Weak<Session>, ev: async_channel::Sender<Event>) {
    let torrent = h.id();
    loop {
        let s = h.stats();
        if let TorrentStatsState::Error = s.state {
            let error = s.error.unwrap_or_else(|| "unknown error".into());
            let _ = ev.send(Event::Failed { torrent, error }).await;
            return;
        }
        if s.finished {
            let _ = ev.send(Event::Finished { torrent }).await;
            return;
        }
        // Wake early on completion, but look again at least every second: the wait alone
        // misses pauses and errors after going live.
        tokio::select! {
            _ = h.wait_until_completed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let still_ours = session
            .upgrade()
            .and_then(|s| s.get(TorrentIdOrHash::Id(torrent)))
            .is_some_and(|x| Arc::ptr_eq(&x, &h));
        if !still_ours {
            return;
        }
    }
}

async fn resolve(
    session: &Arc<Session>,
    magnet: String,
    peers: Vec<SocketAddr>,
    timeout: Duration,
    allow_private: bool,
) -> Result<Resolved, Failure> {
    // librqbit does not consult its blocklist while it looks for metadata: check here.
    for p in &peers {
        guard::check_peer(*p, allow_private)?;
    }
    let (magnet, ignored) = guard::filter_magnet(&magnet, allow_private).await;
    let why_not = |text: String| match guard::describe(&ignored) {
        d if d.is_empty() => text,
        d => format!("{text} ({d})"),
    };
    let opts = AddTorrentOptions {
        list_only: true,
        initial_peers: Some(peers.clone()),
        ..Default::default()
    };
    let add = session.add_torrent(AddTorrent::from_url(magnet), Some(opts));
    let resp = match tokio::time::timeout(timeout, add).await {
        Err(_) => {
            return Err(Failure::new(
                Condition::RemoteServerTimeout,
                why_not(format!(
                    "no peer sent the torrent's metadata within {} s",
                    timeout.as_secs()
                )),
            ));
        }
        Ok(Err(e)) => {
            let text = format!("{e:#}");
            let text = if text.contains("no known way to resolve peers") {
                "this magnet names no tracker and no peer, and DHT is off: nobody can be asked for its metadata".to_owned()
            } else if text.contains("input address stream exhausted") {
                "no peer could send the magnet's metadata (all known peers failed)".to_owned()
            } else {
                format!("cannot get the magnet's metadata: {text}")
            };
            return Err(Failure::new(Condition::RemoteServerNotFound, why_not(text)));
        }
        Ok(Ok(r)) => r,
    };
    match resp {
        AddTorrentResponse::ListOnly(l) => {
            let mut all = peers;
            for p in l.seen_peers {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
            Ok(Resolved {
                bytes: l.torrent_bytes.to_vec(),
                info_hash: l.info_hash.as_string(),
                name: l.info.name().map(|n| n.into_owned()),
                total: l.info.lengths().total_length(),
                peers: all,
                ignored,
            })
        }
        AddTorrentResponse::AlreadyManaged(..) | AddTorrentResponse::Added(..) => {
            Err(Failure::new(
                Condition::Conflict,
                "this torrent is already being downloaded on this server",
            ))
        }
    }
}

async fn add(
    session: &Arc<Session>,
    mut req: AddRequest,
    ev: async_channel::Sender<Event>,
    allow_private: bool,
) -> Result<Added, Failure> {
    let (bytes, ignored) =
        guard::filter_torrent(std::mem::take(&mut req.bytes), allow_private).await?;
    req.bytes = bytes;
    // The blocklist stops them anyway; users' own peers were checked when they were given.
    req.peers
        .retain(|p| allow_private || crate::net::addr::is_remote(p.ip()));
    let not_torrent = |e: &dyn std::fmt::Display| {
        Failure::new(
            Condition::NotAcceptable,
            format!("not a valid .torrent: {e}"),
        )
    };
    let meta = librqbit::torrent_from_bytes(&req.bytes).map_err(|e| not_torrent(&e))?;
    let info_hash = meta.info_hash.as_string();
    if session.get(TorrentIdOrHash::Hash(meta.info_hash)).is_some() {
        return Err(Failure::new(
            Condition::Conflict,
            "this torrent is already being downloaded on this server",
        ));
    }
    let info = meta
        .info
        .data
        .clone()
        .validate()
        .map_err(|e| not_torrent(&e))?;
    let total = info.lengths().total_length();
    if let Some(max) = req.max_bytes
        && total > max
    {
        return Err(Failure::new(
            Condition::ResourceConstraint,
            format!(
                "the torrent has {} but only {} of your quota is left",
                human_bytes(total),
                human_bytes(max)
            ),
        ));
    }
    let name = info.name().map(|n| n.into_owned());
    let multi = info.info().files.is_some();
    let folder = match req.folder {
        Some(f) => f,
        None => choose_folder(&req.user_dir, name.as_deref(), multi, &info_hash),
    };
    if !folder.starts_with(&req.user_dir) {
        return Err(Failure::new(
            Condition::NotAcceptable,
            "the torrent's folder would leave your download folder",
        ));
    }
    drop(meta);
    let dir = folder.clone();
    tokio::task::spawn_blocking(move || crate::store::private_dir(&dir))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| {
            Failure::new(
                Condition::InternalServerError,
                format!("cannot create {}: {e}", folder.display()),
            )
        })?;
    let opts = AddTorrentOptions {
        paused: req.paused,
        // Needed to resume over files already there (a re-add after a restart).
        overwrite: true,
        output_folder: Some(folder.to_string_lossy().into_owned()),
        initial_peers: Some(req.peers),
        ..Default::default()
    };
    match session
        .add_torrent(AddTorrent::from_bytes(req.bytes), Some(opts))
        .await
    {
        Ok(AddTorrentResponse::Added(id, h)) => {
            tokio::spawn(watch(h, Arc::downgrade(session), ev));
            Ok(Added {
                torrent: id,
                info_hash,
                name,
                total,
                folder,
                ignored,
            })
        }
        Ok(_) => Err(Failure::new(
            Condition::Conflict,
            "this torrent is already being downloaded on this server",
        )),
        Err(e) => Err(Failure::new(
            Condition::NotAcceptable,
            format!("cannot add the torrent: {e:#}"),
        )),
    }
}

/// Where a new torrent goes inside the owner's folder: a single file directly in it, a
/// multi-file torrent in a folder named after it. Never over something already there, never
/// outside: a name that is not one plain path component is replaced by the info hash.
fn choose_folder(user_dir: &Path, name: Option<&str>, multi: bool, info_hash: &str) -> PathBuf {
    let safe = name.filter(|n| {
        let mut c = Path::new(n).components();
        matches!((c.next(), c.next()), (Some(Component::Normal(_)), None))
            && !n.starts_with('.')
            && !n.contains(['/', '\\', '\0'])
            && n.len() <= 200
    });
    let short = info_hash.get(..8).unwrap_or(info_hash);
    if multi {
        let base = safe.unwrap_or(info_hash);
        let first = user_dir.join(base);
        if !first.exists() {
            return first;
        }
        user_dir.join(format!("{base} ({short})"))
    } else {
        match safe {
            Some(n) if !user_dir.join(n).exists() => user_dir.to_owned(),
            _ => user_dir.join(short),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether something connects to `l` (non-blocking) before `deadline`.
    fn connected_within(l: &TcpListener, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if l.accept().is_ok() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The session's blocklist stops peers that reach librqbit without passing wockd's own
    /// checks (from trackers, DHT, peer exchange): given straight to librqbit here, a peer on
    /// 127.0.0.1 is not contacted; with private addresses allowed (no blocklist) it is.
    #[test]
    fn engine_blocklist_stops_private_peers() {
        // As the engine thread does (reqwest takes the process default).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for allow in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let peer = TcpListener::bind("127.0.0.1:0").unwrap();
            peer.set_nonblocking(true).unwrap();
            let settings = Settings {
                download_dir: tmp.path().join("downloads"),
                session_dir: tmp.path().join("session"),
                dht: false,
                lsd: false,
                upnp: false,
                listen: None,
                bind_device: None,
                download_bps: None,
                upload_bps: None,
                fetch: fetch::Limits {
                    timeout: Duration::from_secs(5),
                    max_bytes: 1 << 20,
                    allow_private: allow,
                },
            };
            let session = rt.block_on(start_session(&settings)).unwrap();
            assert_eq!(
                settings.session_dir.join(BLOCKLIST).exists(),
                !allow,
                "the blocklist file is written only when private addresses are refused"
            );
            let bytes = super::super::guard::tests::tiny_torrent("x.bin", 40000, &[]);
            let opts = AddTorrentOptions {
                overwrite: true,
                output_folder: Some(tmp.path().join("out").to_string_lossy().into_owned()),
                initial_peers: Some(vec![peer.local_addr().unwrap()]),
                ..Default::default()
            };
            let h = match rt
                .block_on(session.add_torrent(AddTorrent::from_bytes(bytes), Some(opts)))
                .unwrap()
            {
                AddTorrentResponse::Added(_, h) => h,
                _ => panic!("not added"),
            };
            // The torrent is live (so it would be connecting to its peers) before the wait.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !matches!(h.stats().state, TorrentStatsState::Live) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{:?}",
                    h.stats().state
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let wait = if allow { 20 } else { 3 };
            assert_eq!(
                connected_within(&peer, Duration::from_secs(wait)),
                allow,
                "allow_private = {allow}"
            );
            rt.block_on(session.stop());
        }
    }

    #[test]
    fn folders_stay_inside_and_do_not_clobber() {
        let tmp = tempfile::tempdir().unwrap();
        let u = tmp.path();
        let h = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(choose_folder(u, Some("a.iso"), false, h), u);
        assert_eq!(choose_folder(u, Some("dir"), true, h), u.join("dir"));
        for bad in ["..", "a/../../b", "/etc", ".hidden", "a/b"] {
            let f = choose_folder(u, Some(bad), true, h);
            assert_eq!(f, u.join(h), "{bad}");
            assert!(f.starts_with(u));
        }
        std::fs::write(u.join("a.iso"), b"x").unwrap();
        assert_eq!(
            choose_folder(u, Some("a.iso"), false, h),
            u.join("01234567")
        );
        std::fs::create_dir(u.join("dir")).unwrap();
        assert_eq!(
            choose_folder(u, Some("dir"), true, h),
            u.join("dir (01234567)")
        );
    }
}
