//! The torrent service: reachable at its own domain (`torrent.<domain>`, a
//! [`crate::router::Service`], the shape of an XEP-0114 component) and, for the seed's
//! protocol example, on the user's own stream through IQ rules ([`stream_torrent`]).
//!
//! It owns the job model and the engine handle, turns engine events into job states, and
//! sends the notifications — added, metadata received, finished, failed — as `chat` messages
//! from the service to the owner's bare JID through the normal delivery path, so they are
//! archived, reach every device and wait in the mailbox while the owner is offline. Each is
//! sent at most once (the job's `notified` bits are written before delivery) and the owner can
//! switch them off (`notify`: all | done | none).
//!
//! Restart: jobs come from the store; librqbit restores its torrents itself (JSON persistence
//! with fast resume), the engine's `Ready` event lists them and [`TorrentService`] matches them
//! to jobs by info hash. Jobs the engine lost are re-added from their stored .torrent; fetches
//! and magnets still waiting for metadata start again; torrents without a job are forgotten
//! (their files stay).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};
use tokio::sync::oneshot;

use super::command::MAX_PEERS;
use super::guard::{self, Ignored};
use super::jobs::{
    AddInput, Failure, Job, Jobs, NOTE_ADDED, NOTE_FAILED, NOTE_FINISHED, NOTE_IGNORED,
    NOTE_METADATA, Progress, State, human_bytes, parse_add,
};
use super::store::{self, Notify, Settings};
use super::worker::{AddRequest, Cmd, Event, Reply, Worker};
use super::{adhoc, chat, fetch, protocol, worker};
use crate::core::Module;
use crate::core::stanza::Condition;
use crate::core::stanza::{request_parts, stanza_error};
use crate::iq::{Incoming, IqType, ReplyTo};
use crate::net::source;
use crate::router::{Service, ServiceHost};
use crate::server::Server;
use crate::xml::{Element, ns};

const DISCO_INFO: &str = crate::xml::ns::DISCO_INFO;
const DISCO_ITEMS: &str = crate::xml::ns::DISCO_ITEMS;

/// How long an `add` of a magnet waits for the metadata before it is answered anyway, with the
/// job in state `resolving` (clients give up on IQs after 30–60 s). The job goes on; its owner
/// is told when the metadata arrives or the wait fails.
const ADD_ANSWER_WAIT: Duration = Duration::from_secs(20);

/// Per-server slot (see [`Server::ext`]) holding the service once [`install`] ran.
#[derive(Default)]
pub struct Torrents(RefCell<Option<Rc<TorrentService>>>);

impl Torrents {
    pub fn get(&self) -> Option<Rc<TorrentService>> {
        self.0.borrow().clone()
    }
}

/// The service of `server`, if `[torrent]` is enabled and [`install`] ran.
pub fn service(server: &Server) -> Option<Rc<TorrentService>> {
    server.ext::<Torrents>().get()
}

/// Starts the torrent service on a running server: registers its domain with the router,
/// loads the jobs, and starts the engine at once if there are any (so downloads resume).
/// Otherwise the engine thread starts with the first request.
pub fn install(server: &Rc<Server>) {
    let cfg = &server.config;
    if !cfg.torrent.enabled || service(server).is_some() {
        return;
    }
    // A deleted account's jobs stop in the engine and their rows and files go with it.
    server
        .hooks
        .on(0, |server, e: &mut crate::core::AccountDeleted| {
            forget_account(server, &e.account)
        });
    let t = &cfg.torrent;
    let kib = |k: u32| std::num::NonZeroU32::new(k.saturating_mul(1024));
    let settings = worker::Settings {
        download_dir: cfg.torrent_download_dir(),
        session_dir: cfg.data_dir().join("torrent-session"),
        dht: t.dht,
        lsd: t.lsd,
        upnp: t.upnp,
        listen: t.listen_address.map(|ip| (ip, t.listen_ports)),
        bind_device: t.bind_device.clone(),
        download_bps: kib(t.download_limit_kib),
        upload_bps: kib(t.upload_limit_kib),
        fetch: fetch::Limits {
            timeout: Duration::from_secs(t.fetch_timeout_secs),
            max_bytes: t.fetch_max_bytes,
            allow_private: t.fetch_private_addresses,
        },
    };
    let svc = Rc::new(TorrentService {
        server: Rc::downgrade(server),
        domain: cfg.torrent_domain(),
        cfg: t.clone(),
        download_dir: settings.download_dir.clone(),
        settings,
        jobs: RefCell::new(Jobs::default()),
        worker: RefCell::new(None),
        early: RefCell::new(HashMap::new()),
        loaded: RefCell::new(Vec::new()),
        stopped: Cell::new(false),
        timers: RefCell::new(Vec::new()),
        next_id: Cell::new(1),
    });
    let jobs = match store::load_all(&server.store) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("cannot load torrent jobs: {e}");
            Vec::new()
        }
    };
    let resume = !jobs.is_empty();
    for j in jobs {
        svc.loaded.borrow_mut().push(j.id);
        svc.jobs.borrow_mut().insert(j);
    }
    *server.ext::<Torrents>().0.borrow_mut() = Some(svc.clone());
    server.add_service(&svc.domain, svc.clone());
    if resume {
        svc.start_engine();
    }
    if t.progress_interval_secs > 0 {
        let weak = Rc::downgrade(&svc);
        let timer = source::every(
            Duration::from_secs(t.progress_interval_secs),
            move || match weak.upgrade() {
                Some(s) => {
                    s.progress_tick();
                    glib::ControlFlow::Continue
                }
                None => glib::ControlFlow::Break,
            },
        );
        svc.timers.borrow_mut().push(timer);
    }
    tracing::info!(domain = %svc.domain, "torrent service ready");
}

/// Account deletion: everything the torrent service holds for `account` goes — its torrents
/// are stopped and removed from the engine with their files, pending fetches and magnets are
/// cancelled, its jobs and settings are deleted from memory and the store, and its download
/// folder is removed — so a new account with the same name inherits nothing. Safe to call
/// before or after the account's row is deleted, and when the service is not installed.
pub fn forget_account(server: &Rc<Server>, account: &BareJid) {
    if let Some(svc) = service(server) {
        svc.forget_account(account);
    }
}

/// Stops the engine (librqbit pauses every torrent and writes its state) and joins its
/// thread. Dropping the server does the same; this is for a shutdown that must not depend on
/// when the last reference goes.
pub fn shutdown(server: &Server) {
    if let Some(svc) = service(server) {
        for t in svc.timers.borrow_mut().drain(..) {
            t.destroy();
        }
        svc.stopped.set(true);
        let worker = svc.worker.borrow_mut().take();
        drop(worker);
    }
}

/// The seed's `stream_torrent(s)`: the torrent namespace on the user's own stream, so
/// `<iq type='set'><add xmlns='http://wockd.org/ns/torrent'>URL</add></iq>` with no `to` works.
/// With `[torrent] enabled = false` it installs nothing: no IQ rule, so no disco feature, and
/// such an IQ gets the stream's `service-unavailable`. (Enabled, it answers
/// `service-unavailable` too while the service is not installed.)
pub fn stream_torrent(m: &mut Module) {
    if !m.config.torrent.enabled {
        return;
    }
    let rules = m.iqs();
    rules.rule(ns::TORRENT, "add").set(protocol::handle);
    rules.rule(ns::TORRENT, "list").get(protocol::handle);
    rules.rule(ns::TORRENT, "status").get(protocol::handle);
    rules.rule(ns::TORRENT, "pause").set(protocol::handle);
    rules.rule(ns::TORRENT, "resume").set(protocol::handle);
    rules.rule(ns::TORRENT, "remove").set(protocol::handle);
    rules
        .rule(ns::TORRENT, "settings")
        .get(protocol::handle)
        .set(protocol::handle);
}

/// Options of an `add`.
#[derive(Clone, Debug, Default)]
pub struct AddOptions {
    pub paused: bool,
    /// Peers to ask besides trackers and DHT (like a magnet's `x.pe`; LAN and tests).
    pub peers: Vec<SocketAddr>,
}

/// How an `add` is answered: once, with the accepted job or why not.
pub type Done = Box<dyn FnOnce(Result<Accepted, Failure>)>;

/// An accepted job; `resolving` when a magnet was accepted before its metadata arrived.
pub struct Accepted {
    pub job: Job,
    pub resolving: bool,
}

type Slot = Rc<RefCell<Option<Done>>>;

pub struct TorrentService {
    server: Weak<Server>,
    pub domain: String,
    cfg: crate::config::Torrent,
    download_dir: PathBuf,
    settings: worker::Settings,
    jobs: RefCell<Jobs>,
    worker: RefCell<Option<Worker>>,
    /// Engine events for torrents whose `Added` reply has not been handled yet.
    early: RefCell<HashMap<usize, Event>>,
    /// Jobs from the store at start, for the engine's `Ready` (jobs added since have their own
    /// flows).
    loaded: RefCell<Vec<i64>>,
    /// [`shutdown`] ran: the engine is not started again.
    stopped: Cell<bool>,
    timers: RefCell<Vec<glib::Source>>,
    next_id: Cell<u64>,
}

impl Drop for TorrentService {
    fn drop(&mut self) {
        for t in self.timers.borrow_mut().drain(..) {
            t.destroy();
        }
        // Dropping the worker stops the engine and joins its thread.
    }
}

impl Service for TorrentService {
    fn handle(&self, server: &Rc<Server>, stanza: Element, from: &FullJid) {
        let Some(me) = service(server) else { return };
        // A JID under the domain (`x@torrent…`) is nobody.
        let to = stanza.get_attr("to").and_then(|t| Jid::new(t).ok());
        if to.as_ref().is_some_and(|t| t.node().is_some()) {
            return reply_error(server, from, &stanza, Condition::ServiceUnavailable, "");
        }
        match stanza.name.as_str() {
            "iq" => me.handle_iq(server, stanza, from, to),
            "message" => chat::handle(&me, stanza, from),
            _ => me.handle_presence(server, &stanza, from),
        }
    }
}

fn reply_error(server: &Rc<Server>, to: &FullJid, stanza: &Element, cond: Condition, text: &str) {
    if let Some(mut e) = stanza_error(stanza, cond, text) {
        e.set_attr("to", to.to_string());
        server.to_session(to, &e);
    }
}

impl TorrentService {
    pub fn config(&self) -> &crate::config::Torrent {
        &self.cfg
    }

    fn handle_iq(
        self: &Rc<Self>,
        server: &Rc<Server>,
        el: Element,
        from: &FullJid,
        to: Option<Jid>,
    ) {
        if !matches!(el.get_attr("type"), Some("get" | "set")) {
            return; // responses: this service sends no requests
        }
        let Some(id) = el.get_attr("id").map(str::to_owned) else {
            return reply_error(
                server,
                from,
                &el,
                Condition::BadRequest,
                "an IQ needs an id",
            );
        };
        let Some((kind, payload)) = request_parts(&el) else {
            return reply_error(
                server,
                from,
                &el,
                Condition::BadRequest,
                "a get or set IQ has exactly one child",
            );
        };
        let to = to.or_else(|| Jid::new(&self.domain).ok());
        let lang = el.get_attr("xml:lang").map(str::to_owned);
        let iq = Incoming::new(
            server.clone(),
            ReplyTo::Route,
            id,
            kind,
            Some(from.clone()),
            to,
            lang,
            payload.clone(),
        );
        match (iq.payload.ns.as_str(), iq.payload.name.as_str(), kind) {
            (ns::TORRENT, _, _) => protocol::handle(iq),
            (adhoc::NS_COMMANDS, "command", IqType::Set) => adhoc::handle(self, iq),
            (DISCO_INFO, "query", IqType::Get) => {
                let node = iq.payload.get_attr("node").map(str::to_owned);
                match adhoc::disco_info(node.as_deref()) {
                    Some(q) => iq.result(Some(q)),
                    None => iq.fail(Condition::ItemNotFound, ""),
                }
            }
            (DISCO_ITEMS, "query", IqType::Get) => {
                let node = iq.payload.get_attr("node").map(str::to_owned);
                let q = adhoc::disco_items(&self.domain, node.as_deref());
                iq.result(Some(q))
            }
            (ns::PING, "ping", IqType::Get) => iq.result(None),
            _ => iq.fail(Condition::ServiceUnavailable, ""),
        }
    }

    /// Directed presence and probes get the service's presence, so a roster item for it shows
    /// online. (Subscriptions need the roster module's inbound path; not handled here.)
    fn handle_presence(&self, server: &Rc<Server>, el: &Element, from: &FullJid) {
        if matches!(el.get_attr("type"), None | Some("probe")) {
            let p = Element::stanza("presence")
                .attr("from", self.domain.as_str())
                .attr("to", from.to_string());
            server.to_session(from, &p);
        }
    }

    // ---- engine ---------------------------------------------------------------------------

    fn start_engine(self: &Rc<Self>) {
        if self.worker.borrow().is_some() || self.stopped.get() {
            return;
        }
        match Worker::start(self.settings.clone()) {
            Ok((w, events)) => {
                *self.worker.borrow_mut() = Some(w);
                let weak = Rc::downgrade(self);
                source::spawn_local(async move {
                    while let Ok(ev) = events.recv().await {
                        let Some(svc) = weak.upgrade() else { return };
                        svc.on_event(ev);
                    }
                });
            }
            Err(e) => tracing::error!("cannot start the torrent engine thread: {e}"),
        }
    }

    /// Sends a command to the engine, starting it on first use.
    fn send(self: &Rc<Self>, cmd: Cmd) {
        self.start_engine();
        if let Some(w) = self.worker.borrow().as_ref() {
            w.send(cmd);
        }
        // No worker: `cmd` is dropped with its reply sender, which the caller sees as an error.
    }

    /// A command and its answer.
    async fn call<T>(self: &Rc<Self>, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        match rx.await {
            Ok(r) => r,
            // The engine dropped the request: cancelled, or the engine is gone.
            Err(_) => Err(Failure::new(
                Condition::ServiceUnavailable,
                "the torrent engine dropped the request",
            )),
        }
    }

    fn send_ignoring(self: &Rc<Self>, make: impl FnOnce(Reply<()>) -> Cmd) {
        let (tx, _rx) = oneshot::channel();
        self.send(make(tx));
    }

    fn on_event(self: &Rc<Self>, ev: Event) {
        match ev {
            Event::Ready(restored) => self.reconcile(restored),
            Event::StartFailed(e) => {
                tracing::error!("torrent engine failed to start: {e}");
            }
            Event::Finished { torrent } => match self.job_of_torrent(torrent) {
                Some(id) => self.job_finished(id),
                None => drop(
                    self.early
                        .borrow_mut()
                        .insert(torrent, Event::Finished { torrent }),
                ),
            },
            Event::Failed { torrent, error } => match self.job_of_torrent(torrent) {
                Some(id) => self.job_failed(id, &error),
                None => drop(
                    self.early
                        .borrow_mut()
                        .insert(torrent, Event::Failed { torrent, error }),
                ),
            },
        }
    }

    fn job_of_torrent(&self, torrent: usize) -> Option<i64> {
        self.jobs.borrow().by_torrent(torrent).map(|j| j.id)
    }

    /// Matches what librqbit restored to the jobs (see the module comment).
    fn reconcile(self: &Rc<Self>, restored: Vec<worker::Restored>) {
        let mut seen = HashSet::new();
        for r in restored {
            let job = self
                .jobs
                .borrow()
                .by_hash(&r.info_hash)
                .map(|j| (j.id, j.state));
            match job {
                Some((id, state)) => {
                    seen.insert(id);
                    if let Some(j) = self.jobs.borrow_mut().get_mut(id) {
                        j.torrent = Some(r.torrent);
                    }
                    let torrent = r.torrent;
                    match state {
                        State::Paused if !r.paused => {
                            self.send_ignoring(|reply| Cmd::Pause { torrent, reply })
                        }
                        State::Downloading if r.paused => {
                            self.send_ignoring(|reply| Cmd::Resume { torrent, reply })
                        }
                        _ => {}
                    }
                    self.replay_early(torrent);
                }
                None => {
                    tracing::info!(hash = %r.info_hash, "forgetting a torrent that has no job (files kept)");
                    let torrent = r.torrent;
                    self.send_ignoring(|reply| Cmd::Remove {
                        torrent,
                        delete_files: false,
                        reply,
                    });
                }
            }
        }
        let loaded = std::mem::take(&mut *self.loaded.borrow_mut());
        let rest: Vec<Job> = loaded
            .iter()
            .filter_map(|id| self.jobs.borrow().get(*id).cloned())
            .filter(|j| !seen.contains(&j.id) && j.state != State::Failed)
            .collect();
        for job in rest {
            match job.state {
                State::Fetching => {
                    self.clone()
                        .restart(job.id, AddInput::Url(job.source.clone()), false)
                }
                State::Resolving => match parse_add(&job.source, self.cfg.fetch_max_bytes) {
                    Ok(input @ AddInput::Magnet { .. }) => {
                        self.clone().restart(job.id, input, false)
                    }
                    _ => self.job_failed(
                        job.id,
                        "the magnet link could not be read again after a restart",
                    ),
                },
                _ => match store::metainfo(&self.store_server().store, job.id) {
                    Ok(Some(bytes)) => self.clone().readd(job, bytes),
                    _ => self.job_failed(
                        job.id,
                        "the engine lost this torrent and its .torrent was not kept",
                    ),
                },
            }
        }
    }

    fn store_server(&self) -> Rc<Server> {
        self.server
            .upgrade()
            .expect("the service lives inside its server")
    }

    fn restart(self: Rc<Self>, id: i64, input: AddInput, paused: bool) {
        let slot: Slot = Rc::new(RefCell::new(None));
        source::spawn_local(self.run_add(id, input, paused, slot));
    }

    /// Gives the engine a job it lost (its .torrent is in the store).
    fn readd(self: Rc<Self>, job: Job, bytes: Vec<u8>) {
        source::spawn_local(async move {
            let req = AddRequest {
                bytes,
                user_dir: self.user_dir(&job.owner),
                folder: job.folder.clone(),
                peers: job.peers.clone(),
                paused: job.state == State::Paused,
                max_bytes: None,
            };
            let r = self.call(|reply| Cmd::Add(req, reply)).await;
            let alive = self.jobs.borrow().get(job.id).is_some();
            match (r, alive) {
                (Ok(a), true) => {
                    if let Some(j) = self.jobs.borrow_mut().get_mut(job.id) {
                        j.torrent = Some(a.torrent);
                    }
                    self.replay_early(a.torrent);
                }
                (Ok(a), false) => {
                    let torrent = a.torrent;
                    self.send_ignoring(|reply| Cmd::Remove {
                        torrent,
                        delete_files: false,
                        reply,
                    });
                }
                (Err(f), true) => self.job_failed(job.id, &f.text),
                (Err(_), false) => {}
            }
        });
    }

    fn replay_early(self: &Rc<Self>, torrent: usize) {
        let ev = self.early.borrow_mut().remove(&torrent);
        if let Some(ev) = ev {
            self.on_event(ev);
        }
    }

    // ---- jobs -----------------------------------------------------------------------------

    fn account(&self, owner: &BareJid) -> Result<i64, Failure> {
        let server = self.store_server();
        let node = owner.node().map(|n| n.to_string()).unwrap_or_default();
        match server.store.account_id(&node, owner.domain().as_str()) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(Failure::new(
                Condition::Forbidden,
                "only accounts of this server can use its torrent service",
            )),
            Err(e) => Err(store_failure(e)),
        }
    }

    fn user_dir(&self, owner: &BareJid) -> PathBuf {
        self.download_dir.join(owner.to_string())
    }

    /// Adds what `text` names for `owner`; `done` is called once: when the engine took the
    /// torrent, when a magnet has waited [`ADD_ANSWER_WAIT`] for its metadata (the job goes
    /// on), or with the reason it failed (the job is then gone). `announce`: also send the
    /// "added" notification (the chat door answers with a message itself).
    pub(super) fn add(
        self: &Rc<Self>,
        owner: BareJid,
        text: &str,
        opts: AddOptions,
        announce: bool,
        done: Done,
    ) {
        let input = match parse_add(text, self.cfg.fetch_max_bytes) {
            Ok(i) => i,
            Err(f) => return done(Err(f)),
        };
        // Peers the user names are checked here, so the add fails with the reason at once.
        let allow = self.cfg.fetch_private_addresses;
        let named: &[SocketAddr] = match &input {
            AddInput::Magnet { peers, .. } => peers,
            _ => &[],
        };
        if named.len() + opts.peers.len() > MAX_PEERS {
            return done(Err(Failure::bad_request(format!(
                "at most {MAX_PEERS} peers can be given"
            ))));
        }
        for p in named.iter().chain(&opts.peers) {
            if let Err(f) = guard::check_peer(*p, allow) {
                return done(Err(f));
            }
        }
        let account = match self.account(&owner) {
            Ok(a) => a,
            Err(f) => return done(Err(f)),
        };
        let (count, bytes) = self.jobs.borrow().usage(account);
        let max_jobs = self.cfg.max_jobs_per_user;
        if max_jobs > 0 && count >= max_jobs {
            return done(Err(Failure::new(
                Condition::ResourceConstraint,
                format!("you have {count} jobs and the limit is {max_jobs}: remove some first"),
            )));
        }
        let max_bytes = self.cfg.max_bytes_per_user;
        if max_bytes > 0 && bytes >= max_bytes {
            return done(Err(quota_full(bytes, max_bytes)));
        }
        if let AddInput::Magnet { info_hash, .. } = &input
            && let Err(f) = self.check_duplicate(&owner, info_hash, None)
        {
            return done(Err(f));
        }
        let (state, source, mut peers) = match &input {
            AddInput::Url(u) => (State::Fetching, u.clone(), Vec::new()),
            AddInput::Magnet { uri, peers, .. } => (State::Resolving, uri.clone(), peers.clone()),
            AddInput::Torrent(_) => (State::Downloading, "upload".to_owned(), Vec::new()),
        };
        for p in opts.peers {
            if !peers.contains(&p) {
                peers.push(p);
            }
        }
        let server = self.store_server();
        let (id, number, created) =
            match store::insert(&server.store, account, &source, state, &peers) {
                Ok(v) => v,
                Err(e) => return done(Err(store_failure(e))),
            };
        if let AddInput::Torrent(bytes) = &input
            && let Err(e) = store::set_metainfo(&server.store, id, bytes)
        {
            tracing::warn!("cannot keep the .torrent of job {id}: {e}");
        }
        let (name, info_hash) = match &input {
            AddInput::Magnet {
                name, info_hash, ..
            } => (name.clone(), Some(info_hash.clone())),
            _ => (None, None),
        };
        self.jobs.borrow_mut().insert(Job {
            id,
            account,
            owner,
            number,
            source,
            info_hash,
            name,
            state,
            error: None,
            folder: None,
            peers,
            total: None,
            created,
            notified: if announce { 0 } else { NOTE_ADDED },
            torrent: None,
        });
        let slot: Slot = Rc::new(RefCell::new(Some(done)));
        if matches!(input, AddInput::Magnet { .. }) {
            let (weak, slot) = (Rc::downgrade(self), slot.clone());
            let timer = server.after(ADD_ANSWER_WAIT, move || {
                if let Some(svc) = weak.upgrade()
                    && let Some(done) = slot.borrow_mut().take()
                {
                    svc.accept(id, done, true);
                }
            });
            // Forgotten once fired; destroyed with the service otherwise.
            let mut timers = self.timers.borrow_mut();
            timers.retain(|t| !t.is_destroyed());
            timers.push(timer);
        }
        source::spawn_local(self.clone().run_add(id, input, opts.paused, slot));
    }

    /// One job per torrent on the server (librqbit keeps one per info hash); only its owner
    /// learns which job it is.
    fn check_duplicate(
        &self,
        owner: &BareJid,
        info_hash: &str,
        except: Option<i64>,
    ) -> Result<(), Failure> {
        let jobs = self.jobs.borrow();
        let other = jobs.all().find(|j| {
            Some(j.id) != except
                && j.state != State::Failed
                && j.info_hash.as_deref() == Some(info_hash)
        });
        match other {
            Some(j) if &j.owner == owner => Err(Failure::new(
                Condition::Conflict,
                format!("you already have this torrent as job {}", j.number),
            )),
            Some(_) => Err(Failure::new(
                Condition::Conflict,
                "this torrent is already being downloaded on this server",
            )),
            None => Ok(()),
        }
    }

    /// The job is accepted: its requester hears so, and (once) the owner's devices.
    fn accept(self: &Rc<Self>, id: i64, done: Done, resolving: bool) {
        let Some(job) = self.jobs.borrow().get(id).cloned() else {
            return done(Err(Failure::new(
                Condition::ItemNotFound,
                "the job was removed",
            )));
        };
        let text = if resolving {
            format!(
                "Added job {}: {} — waiting for the metadata from peers.",
                job.number,
                job.label()
            )
        } else {
            format!(
                "Added job {}: {}{} — {}.",
                job.number,
                job.label(),
                size_note(job.total),
                job.state.as_str()
            )
        };
        self.announce(id, NOTE_ADDED, "added", &text);
        done(Ok(Accepted { job, resolving }));
    }

    async fn run_add(self: Rc<Self>, id: i64, input: AddInput, paused: bool, slot: Slot) {
        // The job's peers: the magnet's `x.pe` and those given with the add.
        let peers = self
            .jobs
            .borrow()
            .get(id)
            .map(|j| j.peers.clone())
            .unwrap_or_default();
        let mut ignored: Vec<Ignored> = Vec::new();
        let (bytes, peers) = match input {
            AddInput::Url(url) => {
                let r = self
                    .call(|reply| Cmd::Fetch {
                        job: id,
                        url,
                        reply,
                    })
                    .await;
                match r {
                    _ if !self.alive(id) => return removed_meanwhile(&slot),
                    Ok(b) => (b, peers),
                    Err(f) => return self.add_failed(id, f, &slot),
                }
            }
            AddInput::Magnet { uri, .. } => {
                let timeout = Duration::from_secs(self.cfg.metadata_timeout_secs);
                let r = self
                    .call(|reply| Cmd::Resolve {
                        job: id,
                        magnet: uri,
                        peers,
                        timeout,
                        reply,
                    })
                    .await;
                let res = match r {
                    _ if !self.alive(id) => return removed_meanwhile(&slot),
                    Ok(res) => res,
                    Err(f) => return self.add_failed(id, f, &slot),
                };
                self.update(id, |j| {
                    j.name = res.name.clone().or(j.name.take());
                    j.info_hash = Some(res.info_hash.clone());
                    j.total = Some(res.total);
                });
                // The early answer went out: tell the owner the wait is over.
                if slot.borrow().is_none() && self.notified(id) & NOTE_ADDED != 0 {
                    let j = self.jobs.borrow().get(id).cloned();
                    if let Some(j) = j {
                        let text = format!(
                            "Job {}: metadata received — {}{}; downloading.",
                            j.number,
                            j.label(),
                            size_note(j.total)
                        );
                        self.announce(id, NOTE_METADATA, "metadata", &text);
                    }
                }
                ignored.extend(res.ignored);
                (res.bytes, res.peers)
            }
            AddInput::Torrent(b) => (b, peers),
        };
        let Some(job) = self.jobs.borrow().get(id).cloned() else {
            return removed_meanwhile(&slot);
        };
        // A URL or upload names its torrent only now.
        if let Ok(meta) = librqbit::torrent_from_bytes(&bytes)
            && let Err(f) = self.check_duplicate(&job.owner, &meta.info_hash.as_string(), Some(id))
        {
            return self.add_failed(id, f, &slot);
        }
        let max_bytes = match self.cfg.max_bytes_per_user {
            0 => None,
            max => {
                let used = self.jobs.borrow().usage(job.account).1 - job.total.unwrap_or(0);
                Some(max.saturating_sub(used))
            }
        };
        let req = AddRequest {
            bytes: bytes.clone(),
            user_dir: self.user_dir(&job.owner),
            folder: None,
            peers,
            paused,
            max_bytes,
        };
        let r = self.call(|reply| Cmd::Add(req, reply)).await;
        if !self.alive(id) {
            if let Ok(a) = r {
                // Removed while the engine was adding it: nothing of value was downloaded yet.
                let torrent = a.torrent;
                self.send_ignoring(|reply| Cmd::Remove {
                    torrent,
                    delete_files: true,
                    reply,
                });
            }
            return removed_meanwhile(&slot);
        }
        let a = match r {
            Ok(mut a) => {
                ignored.append(&mut a.ignored);
                a
            }
            Err(f) => return self.add_failed(id, f, &slot),
        };
        self.update(id, |j| {
            j.torrent = Some(a.torrent);
            j.info_hash = Some(a.info_hash.clone());
            j.name = a.name.clone().or(j.name.take());
            j.total = Some(a.total);
            j.folder = Some(a.folder.clone());
            j.state = if paused {
                State::Paused
            } else {
                State::Downloading
            };
        });
        if let Err(e) = store::set_metainfo(&self.store_server().store, id, &bytes) {
            tracing::warn!("cannot keep the .torrent of job {id}: {e}");
        }
        let done = slot.borrow_mut().take();
        match done {
            Some(done) => self.accept(id, done, false),
            // Accepted earlier (or restarted): the owner hears of it once.
            None => {
                let job = self.jobs.borrow().get(id).cloned();
                if let Some(j) = job {
                    let text = format!(
                        "Added job {}: {}{} — {}.",
                        j.number,
                        j.label(),
                        size_note(j.total),
                        j.state.as_str()
                    );
                    self.announce(id, NOTE_ADDED, "added", &text);
                }
            }
        }
        if !ignored.is_empty() {
            let number = self.jobs.borrow().get(id).map(|j| j.number);
            if let Some(n) = number {
                let text = format!(
                    "Job {n}: {}; this server only connects to public addresses.",
                    guard::describe(&ignored)
                );
                self.announce(id, NOTE_IGNORED, "ignored", &text);
            }
        }
        self.replay_early(a.torrent);
    }

    fn alive(&self, id: i64) -> bool {
        self.jobs.borrow().get(id).is_some()
    }

    fn notified(&self, id: i64) -> u8 {
        self.jobs.borrow().get(id).map(|j| j.notified).unwrap_or(0)
    }

    /// Changes a job and writes it.
    fn update(&self, id: i64, f: impl FnOnce(&mut Job)) {
        let mut jobs = self.jobs.borrow_mut();
        let Some(j) = jobs.get_mut(id) else { return };
        f(j);
        if let Err(e) = store::update(&self.store_server().store, j) {
            tracing::error!("cannot store torrent job {id}: {e}");
        }
    }

    /// Before the answer the requester gets the error and the job disappears; after it, the
    /// job stays as failed and its owner is told.
    fn add_failed(self: &Rc<Self>, id: i64, f: Failure, slot: &Slot) {
        let done = slot.borrow_mut().take();
        match done {
            Some(done) => {
                let job = self.jobs.borrow_mut().remove(id);
                if let Some(j) = job
                    && let Err(e) = store::delete_unaccepted(
                        &self.store_server().store,
                        id,
                        j.account,
                        j.number,
                    )
                {
                    tracing::error!("cannot delete torrent job {id}: {e}");
                }
                done(Err(f));
            }
            None => self.job_failed(id, &f.text),
        }
    }

    /// See [`forget_account`].
    pub fn forget_account(self: &Rc<Self>, owner: &BareJid) {
        let jobs: Vec<Job> = self
            .jobs
            .borrow()
            .all()
            .filter(|j| &j.owner == owner)
            .cloned()
            .collect();
        let mut accounts: HashSet<i64> = jobs.iter().map(|j| j.account).collect();
        if let Ok(a) = self.account(owner) {
            accounts.insert(a);
        }
        let server = self.store_server();
        for a in accounts {
            if let Err(e) = store::delete_account(&server.store, a) {
                tracing::error!(account = %owner, "cannot delete torrent jobs: {e}");
            }
        }
        let mut removals = Vec::new();
        for j in &jobs {
            self.jobs.borrow_mut().remove(j.id);
            if j.state.pending() {
                self.send(Cmd::Cancel { job: j.id });
            }
            if let Some(torrent) = j.torrent {
                let (tx, rx) = oneshot::channel();
                self.send(Cmd::Remove {
                    torrent,
                    delete_files: true,
                    reply: tx,
                });
                removals.push(rx);
            }
        }
        // The owner's folder goes once the engine has let go of its files.
        let dir = self.user_dir(owner);
        let inside = dir.parent() == Some(self.download_dir.as_path())
            && dir
                .file_name()
                .is_some_and(|n| n == owner.to_string().as_str());
        let who = owner.clone();
        tracing::info!(account = %who, jobs = jobs.len(), "torrent jobs of a deleted account removed");
        source::spawn_local(async move {
            for rx in removals {
                let _ = rx.await;
            }
            if inside {
                let (tx, rx) = oneshot::channel();
                std::thread::spawn(move || {
                    let r = match std::fs::remove_dir_all(&dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    };
                    let _ = tx.send(r);
                });
                if let Ok(Err(e)) = rx.await {
                    tracing::warn!(account = %who, "cannot remove the download folder: {e}");
                }
            }
        });
    }

    fn forget(&self, id: i64) {
        self.jobs.borrow_mut().remove(id);
        if let Err(e) = store::delete(&self.store_server().store, id) {
            tracing::error!("cannot delete torrent job {id}: {e}");
        }
    }

    fn job_failed(self: &Rc<Self>, id: i64, error: &str) {
        self.update(id, |j| {
            j.state = State::Failed;
            j.error = Some(error.to_owned());
        });
        let job = self.jobs.borrow().get(id).cloned();
        if let Some(j) = job {
            let text = format!("Job {} failed: {} — {error}", j.number, j.label());
            self.announce(id, NOTE_FAILED, "failed", &text);
        }
    }

    fn job_finished(self: &Rc<Self>, id: i64) {
        self.update(id, |j| {
            j.state = State::Finished;
            j.error = None;
        });
        let job = self.jobs.borrow().get(id).cloned();
        if let Some(j) = job {
            let text = format!(
                "Job {} finished: {}{}.",
                j.number,
                j.label(),
                size_note(j.total)
            );
            self.announce(id, NOTE_FINISHED, "finished", &text);
        }
    }

    /// Sends the notification `bit` of job `id` unless it went out before; the bit is stored
    /// first, so a crash can lose a notification but never repeat one.
    fn announce(&self, id: i64, bit: u8, event: &str, text: &str) {
        let job = {
            let mut jobs = self.jobs.borrow_mut();
            let Some(j) = jobs.get_mut(id) else { return };
            if j.notified & bit != 0 {
                return;
            }
            j.notified |= bit;
            if let Err(e) = store::update(&self.store_server().store, j) {
                tracing::error!("cannot store torrent job {id}: {e}");
            }
            j.clone()
        };
        let wanted = match self.settings_of(job.account).notify {
            Notify::All => true,
            Notify::Done => bit & (NOTE_FINISHED | NOTE_FAILED) != 0,
            Notify::None => false,
        };
        if wanted {
            let payload = job.to_element(None).attr("event", event);
            self.message(
                &job.owner,
                "chat",
                text,
                Some(payload),
                Some(&format!("{id}-{event}")),
            );
        }
    }

    fn settings_of(&self, account: i64) -> Settings {
        store::settings(&self.store_server().store, account).unwrap_or_default()
    }

    /// A message from the service to `to`'s bare JID, through normal delivery (and so the
    /// mailbox when `to` is offline; `headline` messages are not stored).
    pub(super) fn message(
        &self,
        to: &BareJid,
        kind: &str,
        body: &str,
        payload: Option<Element>,
        id: Option<&str>,
    ) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let id = match id {
            Some(id) => format!("torrent-{id}"),
            None => {
                let n = self.next_id.get();
                self.next_id.set(n + 1);
                format!("torrent-m{n}-{}", store::now())
            }
        };
        let mut el = Element::stanza("message")
            .attr("type", kind)
            .attr("from", self.domain.as_str())
            .attr("to", to.to_string())
            .attr("id", id)
            .child(Element::new("body", ns::CLIENT).text(body));
        if let Some(p) = payload {
            el.push(p);
        }
        // Through ServiceHost: delivered here, or over the component link when the service
        // is attached to another server.
        server.to_account(to, el);
    }

    // ---- operations: the front doors reach them through `command::apply` ------------------

    /// The owner's jobs with live numbers.
    pub(super) async fn list(self: &Rc<Self>, owner: &BareJid) -> Vec<(Job, Option<Progress>)> {
        let jobs: Vec<Job> = self.jobs.borrow().of(owner).into_iter().cloned().collect();
        let stats = self.stats(&jobs).await;
        jobs.into_iter().zip(stats).collect()
    }

    async fn stats(self: &Rc<Self>, jobs: &[Job]) -> Vec<Option<Progress>> {
        let ids: Vec<usize> = jobs.iter().filter_map(|j| j.torrent).collect();
        let live = if ids.is_empty() || self.worker.borrow().is_none() {
            Vec::new()
        } else {
            let (tx, rx) = oneshot::channel();
            self.send(Cmd::Stats {
                torrents: ids.clone(),
                reply: tx,
            });
            rx.await.unwrap_or_default()
        };
        let by_id: HashMap<usize, Progress> = ids
            .into_iter()
            .zip(live)
            .filter_map(|(i, p)| p.map(|p| (i, p)))
            .collect();
        jobs.iter()
            .map(|j| j.torrent.and_then(|t| by_id.get(&t).cloned()))
            .collect()
    }

    fn find(&self, owner: &BareJid, number: i64) -> Result<Job, Failure> {
        self.jobs
            .borrow()
            .find(owner, number)
            .cloned()
            .ok_or_else(|| Failure::no_job(number))
    }

    pub(super) async fn status(
        self: &Rc<Self>,
        owner: &BareJid,
        number: i64,
    ) -> Result<(Job, Option<Progress>), Failure> {
        let job = self.find(owner, number)?;
        let p = self.stats(std::slice::from_ref(&job)).await.pop().flatten();
        Ok((job, p))
    }

    pub(super) async fn pause(
        self: &Rc<Self>,
        owner: &BareJid,
        number: i64,
    ) -> Result<(Job, Option<Progress>), Failure> {
        self.pause_resume(owner, number, true).await
    }

    pub(super) async fn resume(
        self: &Rc<Self>,
        owner: &BareJid,
        number: i64,
    ) -> Result<(Job, Option<Progress>), Failure> {
        self.pause_resume(owner, number, false).await
    }

    async fn pause_resume(
        self: &Rc<Self>,
        owner: &BareJid,
        number: i64,
        pause: bool,
    ) -> Result<(Job, Option<Progress>), Failure> {
        let job = self.find(owner, number)?;
        match job.state {
            State::Fetching | State::Resolving => {
                return Err(Failure::new(
                    Condition::NotAllowed,
                    format!(
                        "job {number} is still waiting for its .torrent or metadata; remove it to cancel"
                    ),
                ));
            }
            State::Failed => {
                return Err(Failure::new(
                    Condition::NotAllowed,
                    format!(
                        "job {number} failed ({}); remove it and add it again",
                        job.error.as_deref().unwrap_or("?")
                    ),
                ));
            }
            _ => {}
        }
        let Some(torrent) = job.torrent else {
            return Err(not_ready(number));
        };
        let r = if pause {
            self.call(|reply| Cmd::Pause { torrent, reply }).await
        } else {
            self.call(|reply| Cmd::Resume { torrent, reply }).await
        };
        r?;
        self.update(job.id, |j| match (j.state, pause) {
            (State::Downloading, true) => j.state = State::Paused,
            (State::Paused, false) => j.state = State::Downloading,
            _ => {}
        });
        self.status(owner, number).await
    }

    /// Removes a job (and its files, if asked). A fetch or a magnet still waiting is cancelled.
    pub(super) async fn remove(
        self: &Rc<Self>,
        owner: &BareJid,
        number: i64,
        delete_files: bool,
    ) -> Result<Job, Failure> {
        let job = self.find(owner, number)?;
        if job.state.pending() {
            let id = job.id;
            self.forget(id);
            self.send(Cmd::Cancel { job: id });
            return Ok(job);
        }
        match job.torrent {
            Some(torrent) => {
                self.call(|reply| Cmd::Remove {
                    torrent,
                    delete_files,
                    reply,
                })
                .await?;
            }
            // Failed before the engine had it: nothing to remove there.
            None if job.state == State::Failed => {}
            None => return Err(not_ready(number)),
        }
        self.forget(job.id);
        Ok(job)
    }

    pub(super) fn settings(&self, owner: &BareJid) -> Result<Settings, Failure> {
        let account = self.account(owner)?;
        store::settings(&self.store_server().store, account).map_err(store_failure)
    }

    pub(super) fn set_settings(&self, owner: &BareJid, s: Settings) -> Result<(), Failure> {
        let account = self.account(owner)?;
        if s.progress && self.cfg.progress_interval_secs == 0 {
            return Err(Failure::new(
                Condition::NotAllowed,
                "progress messages are switched off on this server",
            ));
        }
        store::set_settings(&self.store_server().store, account, s).map_err(store_failure)
    }

    /// The owner's jobs (no live numbers), for forms and chat.
    pub(super) fn jobs_of(&self, owner: &BareJid) -> Vec<Job> {
        self.jobs.borrow().of(owner).into_iter().cloned().collect()
    }

    /// Periodic progress messages (headline: shown, not stored) to owners who asked for them.
    fn progress_tick(self: &Rc<Self>) {
        let subscribers = match store::progress_subscribers(&self.store_server().store) {
            Ok(s) => s,
            Err(_) => return,
        };
        for account in subscribers {
            let jobs: Vec<Job> = self
                .jobs
                .borrow()
                .all()
                .filter(|j| j.account == account && j.state == State::Downloading)
                .cloned()
                .collect();
            let Some(owner) = jobs.first().map(|j| j.owner.clone()) else {
                continue;
            };
            let svc = self.clone();
            source::spawn_local(async move {
                let stats = svc.stats(&jobs).await;
                let lines: Vec<String> = jobs
                    .iter()
                    .zip(&stats)
                    .map(|(j, p)| j.summary(p.as_ref()))
                    .collect();
                svc.message(&owner, "headline", &lines.join("\n"), None, None);
            });
        }
    }
}

fn removed_meanwhile(slot: &Slot) {
    let done = slot.borrow_mut().take();
    if let Some(done) = done {
        done(Err(Failure::new(
            Condition::ItemNotFound,
            "the job was removed before it started",
        )));
    }
}

fn not_ready(number: i64) -> Failure {
    Failure::new(
        Condition::ResourceConstraint,
        format!("job {number} is not loaded in the engine yet; try again in a moment"),
    )
}

fn quota_full(used: u64, max: u64) -> Failure {
    Failure::new(
        Condition::ResourceConstraint,
        format!(
            "your torrents use {} of your {} quota: remove some first",
            human_bytes(used),
            human_bytes(max)
        ),
    )
}

fn size_note(total: Option<u64>) -> String {
    total
        .map(|t| format!(" ({})", human_bytes(t)))
        .unwrap_or_default()
}

fn store_failure(e: crate::store::StoreError) -> Failure {
    tracing::error!("torrent store: {e}");
    Failure::new(Condition::InternalServerError, "storage error")
}
