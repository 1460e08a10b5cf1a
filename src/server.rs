//! The server: configuration, store, listeners, the connection registry and the session table,
//! all owned by the thread that runs the glib main context.

use foldhash::HashMap;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glib::{ControlFlow, IOCondition, Source};
use jid::{BareJid, FullJid};

use crate::config::{Config, Listener};
use crate::core::events::{SessionEnded, Tick};
use crate::core::hooks::Hooks;
use crate::core::module::Module;
use crate::core::stanza::{Condition, StreamError};
use crate::net::limits::{Admit, IpTable};
use crate::net::{source, tls};
use crate::router::{Service, Sessions};
use crate::store::Store;
use crate::stream::Pause;
use crate::stream::{Connection, Stream};
use crate::xml::Element;

/// glib priority of the job that hands the loop turn's writes to the store's writer thread:
/// just more urgent than `DEFAULT`, where the sockets and the output flushes are. glib
/// dispatches only the most urgent ready priority per iteration and an idle source is always
/// ready, so it runs before the next socket read.
pub const COMMIT_PRIORITY: i32 = glib::ffi::G_PRIORITY_DEFAULT - 1;

/// A callback for the response to an IQ the server sent. It is called exactly once: with the
/// answer, or with an error made by the server (`remote-server-timeout` when no answer came in
/// time, `recipient-unavailable` when the session ended or was never there,
/// `resource-constraint` when the session had too many IQs pending and this was the oldest).
pub type IqCallback = Box<dyn FnOnce(&Rc<Server>, Element)>;

/// An IQ the server sent and waits for the answer to.
struct PendingIq {
    on_response: IqCallback,
    deadline: Instant,
    /// Order of sending, to give up the oldest first.
    seq: u64,
}

pub struct Server {
    pub config: Config,
    pub store: Store,
    /// What every client stream offers; built by the `install` functions at start-up.
    pub stream: Stream,
    /// The hook bus (`core::hooks`): what modules registered at install time.
    pub hooks: Hooks,
    pub tls: Arc<rustls::ServerConfig>,
    /// The certificates behind `tls` (and federation's), reloaded on SIGHUP.
    pub certs: Arc<tls::Certs>,
    pub sessions: RefCell<Sessions>,
    conns: RefCell<HashMap<u64, Rc<Connection>>>,
    services: RefCell<HashMap<String, Rc<dyn Service>>>,
    /// IQs sent to sessions, by session and IQ id; bounded per session and in time
    /// (`limits.max_pending_iqs`, `limits.server_iq_timeout_secs`).
    pending_iqs: RefCell<HashMap<FullJid, HashMap<String, PendingIq>>>,
    next_id: Cell<u64>,
    flush_queue: RefCell<Vec<u64>>,
    listeners: RefCell<Vec<(TcpListener, Source)>>,
    timers: RefCell<Vec<Source>>,
    /// Per-module state, one value per type (see [`Server::ext`]).
    ext: RefCell<HashMap<std::any::TypeId, Rc<dyn std::any::Any>>>,
    started: Instant,
    /// The store's batches fail (disk full, I/O error): input is paused until a retry
    /// succeeds; acknowledgements stay held meanwhile, so nothing is acknowledged that is not
    /// on disk.
    store_failing: Cell<bool>,
    /// Input is paused because the store's writer is behind (`Store::backlogged`).
    store_backlog: Cell<bool>,
    /// Connections with output held for a store commit (`Connection::release_hold`).
    held: RefCell<Vec<u64>>,
    /// Connections per client address, unauthenticated ones in age order, login failures.
    ips: RefCell<IpTable>,
    /// The submission job is attached.
    commit_scheduled: Cell<bool>,
}

impl Server {
    /// Builds the server. `install` adds features, IQ rules and hooks (the seed's
    /// `initialize_stream`, plus the hook bus); the router's own delivery hooks come first.
    pub fn new(
        config: Config,
        store: Store,
        install: impl FnOnce(&mut Module),
    ) -> Result<Rc<Server>, tls::TlsError> {
        let certs = Arc::new(tls::Certs::load(&config)?);
        let tls = tls::server_config(&certs)?;
        let mut stream = Stream::default();
        let hooks = Hooks::default();
        crate::core::install(&hooks);
        crate::router::deliver::install(&hooks);
        if config.s2s.enabled {
            crate::s2s::install(&hooks);
        }
        if !config.components.is_empty() {
            crate::component::install(&hooks);
        }
        if !config.component_link.is_empty() {
            crate::component::uplink::install(&hooks);
        }
        install(&mut Module::new(&mut stream, &hooks, &config));
        let server = Rc::new(Server {
            config,
            store,
            stream,
            hooks,
            tls,
            certs,
            sessions: RefCell::new(Sessions::default()),
            conns: RefCell::new(HashMap::default()),
            services: RefCell::new(HashMap::default()),
            pending_iqs: RefCell::new(HashMap::default()),
            next_id: Cell::new(1),
            flush_queue: RefCell::new(Vec::new()),
            listeners: RefCell::new(Vec::new()),
            timers: RefCell::new(Vec::new()),
            ext: RefCell::new(HashMap::default()),
            started: Instant::now(),
            store_failing: Cell::new(false),
            held: RefCell::new(Vec::new()),
            store_backlog: Cell::new(false),
            ips: RefCell::new(IpTable::default()),
            commit_scheduled: Cell::new(false),
        });
        let weak = Rc::downgrade(&server);
        server.store.on_first_queued(Box::new(move || {
            if let Some(server) = weak.upgrade() {
                server.schedule_commit();
            }
        }));
        if let Err(e) = server.store.start_writer() {
            // Still correct, only slower: batches are then written on the loop.
            tracing::error!("{e}; the store writes on the main loop");
        }
        let weak = Rc::downgrade(&server);
        let ready = server.store.report_ready();
        source::spawn_local(async move {
            while ready.recv().await.is_ok() {
                let Some(server) = weak.upgrade() else { break };
                while let Some(done) = server.store.take_report() {
                    server.store_report(done);
                }
            }
        });
        Ok(server)
    }

    /// Binds every configured listener and starts housekeeping. Returns the bound addresses
    /// (port 0 in the config gives an ephemeral port, which tests use).
    pub fn start(self: &Rc<Self>) -> io::Result<Vec<(std::net::SocketAddr, bool)>> {
        let mut bound = Vec::new();
        for l in self.config.listen.clone() {
            match self.listen(&l) {
                Ok(addr) => {
                    tracing::info!(address = %addr, direct_tls = l.direct_tls, trusted = l.trusted_loopback, "listening");
                    bound.push((addr, l.direct_tls));
                }
                // A machine without IPv6 still serves IPv4 (and the reverse).
                Err(e) => tracing::warn!(address = %l.address, "cannot listen: {e}"),
            }
        }
        // A component process (`wockd component`) may serve no clients at all.
        let component_only =
            self.config.listen.is_empty() && !self.config.component_link.is_empty();
        if bound.is_empty() && !component_only {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no listener could be bound",
            ));
        }
        crate::s2s::start(self)?;
        crate::component::start(self)?;
        crate::component::uplink::start(self).map_err(io::Error::other)?;
        let weak = Rc::downgrade(self);
        let timer = source::every(Duration::from_secs(1), move || match weak.upgrade() {
            Some(s) => {
                s.housekeeping();
                ControlFlow::Continue
            }
            None => ControlFlow::Break,
        });
        self.timers.borrow_mut().push(timer);
        Ok(bound)
    }

    fn listen(self: &Rc<Self>, l: &Listener) -> io::Result<std::net::SocketAddr> {
        let listener = crate::net::listen_tcp(l.address, 1024)?;
        let addr = listener.local_addr()?;
        let src = self.watch_listener(listener.as_raw_fd(), l.trusted_loopback, l.direct_tls);
        self.listeners.borrow_mut().push((listener, src));
        Ok(addr)
    }

    fn watch_listener(self: &Rc<Self>, fd: i32, trusted: bool, direct_tls: bool) -> Source {
        let weak = Rc::downgrade(self);
        source::watch_fd(fd, IOCondition::IN, move |fd, _| {
            let Some(server) = weak.upgrade() else {
                return ControlFlow::Break;
            };
            if server.accept_all(fd, trusted, direct_tls) {
                return ControlFlow::Continue;
            }
            // Out of file descriptors: a level-triggered listener would spin on EMFILE, so it
            // stops watching for a moment (connections wait in the kernel's backlog).
            let weak = Rc::downgrade(&server);
            server.after(Duration::from_millis(250), move || {
                if let Some(server) = weak.upgrade() {
                    let src = server.watch_listener(fd, trusted, direct_tls);
                    let mut listeners = server.listeners.borrow_mut();
                    match listeners.iter_mut().find(|(l, _)| l.as_raw_fd() == fd) {
                        Some(entry) => entry.1 = src,
                        None => src.destroy(),
                    }
                }
            });
            ControlFlow::Break
        })
    }

    /// Accepts every waiting connection. Returns false when the listener must pause (no file
    /// descriptors left).
    fn accept_all(self: &Rc<Self>, fd: i32, trusted: bool, direct_tls: bool) -> bool {
        loop {
            let accepted = {
                let listeners = self.listeners.borrow();
                let Some((l, _)) = listeners.iter().find(|(l, _)| l.as_raw_fd() == fd) else {
                    return true;
                };
                l.accept()
            };
            match accepted {
                Ok((sock, peer)) => {
                    if self.conns.borrow().len() >= self.config.limits.max_connections {
                        tracing::warn!(%peer, "connection limit reached; refusing");
                        drop(sock);
                        continue;
                    }
                    let id = self.next_id.get();
                    self.next_id.set(id + 1);
                    let limits = &self.config.limits;
                    let admitted = self.ips.borrow_mut().admit(
                        id,
                        peer.ip(),
                        limits.max_connections_per_ip,
                        limits.max_unauthenticated_per_ip,
                        limits.max_unauthenticated,
                    );
                    let Admit::Yes { evict } = admitted else {
                        tracing::debug!(%peer, "too many connections from this address; refusing");
                        continue;
                    };
                    let tls = direct_tls.then(|| self.tls.clone());
                    match Connection::start(self, id, sock, peer, trusted, tls) {
                        Ok(conn) => {
                            tracing::debug!(conn = id, %peer, "connected");
                            if self.store_failing.get() {
                                conn.pause(Pause::Store);
                            }
                            if self.store_backlog.get() {
                                conn.pause(Pause::Backlog);
                            }
                            self.conns.borrow_mut().insert(id, conn);
                        }
                        Err(e) => {
                            tracing::warn!(%peer, "cannot set up connection: {e}");
                            self.ips.borrow_mut().forget(id, peer.ip());
                        }
                    }
                    for old in evict {
                        if let Some(c) = self.connection(old) {
                            tracing::debug!(
                                conn = old,
                                "evicted: oldest unauthenticated connection"
                            );
                            c.close(Some((
                                StreamError::PolicyViolation,
                                Some("too many unauthenticated connections".into()),
                            )));
                            // At once, not after the closing grace: its slot is needed now.
                            c.teardown();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    tracing::warn!("accept failed: {e}; not accepting for 250 ms");
                    return false;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one connection only.
                    tracing::debug!("accept failed: {e}");
                    continue;
                }
            }
        }
    }

    pub fn connection(&self, id: u64) -> Option<Rc<Connection>> {
        self.conns.borrow().get(&id).cloned()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.borrow().len()
    }

    pub(crate) fn forget_connection(&self, id: u64) {
        // Dropped after the borrow ends: the connection's destructor may touch the server.
        let conn = self.conns.borrow_mut().remove(&id);
        if let Some(c) = &conn {
            self.ips.borrow_mut().forget(id, c.peer.ip());
        }
        drop(conn);
    }

    /// Connection `id` from `ip` authenticated: it no longer counts as unauthenticated.
    pub(crate) fn note_authenticated(&self, id: u64, ip: std::net::IpAddr) {
        self.ips.borrow_mut().authenticated(id, ip);
    }

    /// Records a failed login from `ip` (SASL, iq-auth).
    pub fn note_auth_failure(&self, ip: std::net::IpAddr) {
        self.ips.borrow_mut().auth_failed(ip, Instant::now());
    }

    /// Whether `ip` may try to log in now (`[limits] max_auth_failures_per_ip` per minute).
    pub fn auth_allowed(&self, ip: std::net::IpAddr) -> bool {
        let max = self.config.limits.max_auth_failures_per_ip;
        self.ips.borrow_mut().auth_allowed(ip, max, Instant::now())
    }

    /// Coalesces output: every connection written to during this loop turn is flushed once,
    /// when the loop is next idle.
    pub(crate) fn queue_flush(self: &Rc<Self>, id: u64) {
        let first = {
            let mut q = self.flush_queue.borrow_mut();
            q.push(id);
            q.len() == 1
        };
        if first {
            let weak = Rc::downgrade(self);
            source::idle_once(move || {
                if let Some(s) = weak.upgrade() {
                    s.flush_all();
                }
            });
        }
    }

    /// Closes a connection on the next loop turn (from places that must not re-enter it).
    /// A hibernating session (XEP-0198) has no stream to close: it ends at once, its
    /// unacknowledged messages going back to the mailbox.
    pub(crate) fn queue_close(self: &Rc<Self>, id: u64, cond: StreamError, text: &'static str) {
        let weak = Rc::downgrade(self);
        source::idle_once(move || {
            if let Some(c) = weak.upgrade().and_then(|s| s.connection(id)) {
                if c.is_hibernating() {
                    tracing::info!(conn = id, "{text}; hibernating session ended");
                    c.end_session_with_requeue();
                    c.teardown();
                } else {
                    c.close(Some((cond, Some(text.into()))));
                }
            }
        });
    }

    fn flush_all(self: &Rc<Self>) {
        // Acknowledgements that depend on a commit are held by their connection until it is
        // done (see `Connection::release_hold`); everything else goes now.
        let ids = std::mem::take(&mut *self.flush_queue.borrow_mut());
        for id in ids {
            if let Some(c) = self.connection(id) {
                c.flush();
            }
        }
    }

    /// Connection `id` holds output until a store batch is committed.
    pub(crate) fn note_held(&self, id: u64) {
        self.held.borrow_mut().push(id);
    }

    /// The writer's report on a batch (see `store::writer`). Committed: continuations have
    /// run, held acknowledgements go out, and the batch that filled meanwhile goes to the
    /// writer at once (group commit). Failed: the batch is queued again, every connection
    /// stops taking input, and the commit is retried each second until it succeeds: a full
    /// disk is a logged, recoverable state in which nothing is acknowledged and nothing
    /// acknowledged is lost.
    fn store_report(self: &Rc<Self>, done: crate::store::writer::Done) {
        use crate::store::writer::Completed;
        match self.store.complete(done) {
            Completed::Committed(seq) => {
                if self.store_failing.replace(false) {
                    tracing::warn!("store: commit succeeded again; resuming");
                    self.pause_all(Pause::Store, false);
                }
                let held = std::mem::take(&mut *self.held.borrow_mut());
                let still: Vec<u64> = held
                    .into_iter()
                    .filter(|id| self.connection(*id).is_some_and(|c| c.release_hold(seq)))
                    .collect();
                self.held.borrow_mut().extend(still);
                self.store.submit();
                if self.store_backlog.get() && !self.store.backlogged() {
                    self.store_backlog.set(false);
                    self.pause_all(Pause::Backlog, false);
                }
            }
            Completed::Failed(e) => {
                if !self.store_failing.replace(true) {
                    tracing::error!(
                        "store: commit failed ({e}); input paused until it succeeds, retrying"
                    );
                    self.pause_all(Pause::Store, true);
                } else {
                    tracing::debug!("store: commit still failing: {e}");
                }
                let weak = Rc::downgrade(self);
                self.after(Duration::from_secs(1), move || {
                    if let Some(server) = weak.upgrade() {
                        server.store.submit();
                    }
                });
            }
        }
    }

    /// Pauses (or resumes) input on every connection for `why`.
    fn pause_all(self: &Rc<Self>, why: Pause, pause: bool) {
        let conns: Vec<Rc<Connection>> = self.conns.borrow().values().cloned().collect();
        for c in conns {
            if pause {
                c.pause(why);
            } else {
                c.unpause(why);
            }
        }
    }

    /// True while store commits fail (see [`store_report`](Self::store_report)).
    pub fn store_failing(&self) -> bool {
        self.store_failing.get()
    }

    /// Attaches the job that hands this loop turn's writes to the writer (the store calls
    /// this when a write is queued: `Store::on_first_queued`).
    fn schedule_commit(self: &Rc<Self>) {
        if self.commit_scheduled.replace(true) {
            return;
        }
        let weak = Rc::downgrade(self);
        source::idle_once_at(glib::Priority::from(COMMIT_PRIORITY), move || {
            if let Some(server) = weak.upgrade() {
                server.commit_scheduled.set(false);
                if !server.store_failing.get() {
                    server.store.submit();
                }
                if server.store.backlogged() && !server.store_backlog.replace(true) {
                    tracing::debug!("store: writer behind; input paused until its commit");
                    server.pause_all(Pause::Backlog, true);
                }
            }
        });
    }

    /// Runs `f` at the end of this loop turn, with the mailbox commit (priority
    /// [`COMMIT_PRIORITY`]: before the next socket read).
    pub fn soon(&self, f: impl FnOnce() + 'static) {
        source::idle_once_at(glib::Priority::from(COMMIT_PRIORITY), f);
    }

    /// Runs `f` when the loop has nothing more urgent to do (priority `LOW`: after sockets and
    /// timers), for work split into steps such as the archive cleanup.
    pub fn background(&self, f: impl FnOnce() + 'static) {
        source::idle_once_at(glib::Priority::LOW, f);
    }

    fn housekeeping(self: &Rc<Self>) {
        // Modules' periodic work (accounts changed from the command line, archive expiry).
        self.hooks.fire(self, &mut Tick);
        let now = Instant::now();
        let conns: Vec<Rc<Connection>> = self.conns.borrow().values().cloned().collect();
        for c in conns {
            c.housekeeping(now);
        }
        self.expire_iqs(now);
    }

    /// The module state of type `T`, made with `T::default()` on first use. Modules keep their
    /// own state here instead of in this struct, so a new module touches no shared file.
    pub fn ext<T: Default + 'static>(&self) -> Rc<T> {
        let id = std::any::TypeId::of::<T>();
        if let Some(v) = self.ext.borrow().get(&id)
            && let Ok(t) = v.clone().downcast::<T>()
        {
            return t;
        }
        let t = Rc::new(T::default());
        self.ext.borrow_mut().insert(id, t.clone());
        t
    }

    /// Runs `f` after `delay` on the main loop (timeouts of modules).
    pub fn after(&self, delay: Duration, f: impl FnOnce() + 'static) -> Source {
        let mut f = Some(f);
        source::every(delay, move || {
            if let Some(f) = f.take() {
                f();
            }
            ControlFlow::Break
        })
    }

    /// Routes a stanza the server makes by its `to` (see [`crate::router::route_local`]):
    /// how modules send to remote JIDs (federation's delivery hook takes it from there).
    pub fn route_local(self: &Rc<Self>, el: Element) {
        crate::router::route_local(self, el);
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    // ---- accounts -------------------------------------------------------------------------

    pub fn account_exists(&self, account: &BareJid) -> bool {
        let node = account.node().map(|n| n.to_string()).unwrap_or_default();
        self.store
            .account_exists(&node, account.domain().as_str())
            .unwrap_or(false)
    }

    // ---- sessions and delivery ------------------------------------------------------------

    /// Registers `conn` as the session for `jid`, replacing (with a `conflict` stream error)
    /// a session that used the same full JID.
    pub fn bind_session(self: &Rc<Self>, conn: &Rc<Connection>, jid: FullJid) {
        let old = self.sessions.borrow_mut().bind(jid.clone(), conn);
        if let Some(old) = old
            && old.id != conn.id
        {
            tracing::info!(%jid, "resource conflict: replacing the older session");
            // Detach the old session first so its close does not unbind the new one.
            old.take_jid();
            old.close(Some((
                StreamError::Conflict,
                Some("replaced by a new connection".into()),
            )));
        }
        tracing::info!(%jid, conn = conn.id, "session bound");
        self.hooks
            .fire(self, &mut crate::core::ResourceBound { jid });
    }

    /// A stream closed or died: its session (if any) ends.
    pub(crate) fn session_ended(self: &Rc<Self>, conn: &Connection) {
        let Some(jid) = conn.take_jid() else {
            return;
        };
        let was_available = self
            .sessions
            .borrow()
            .get(&jid)
            .is_some_and(|s| s.priority.is_some());
        if self.sessions.borrow_mut().unbind(&jid, conn.id) {
            tracing::info!(%jid, "session ended");
            self.abandon_iqs(&jid);
            self.hooks
                .fire(self, &mut SessionEnded { jid, was_available });
        }
    }

    /// Delivers to one session. Returns false if `jid` has no session.
    pub fn deliver_to_full(&self, jid: &FullJid, el: &Element) -> bool {
        let conn = self.sessions.borrow().get(jid).and_then(|s| s.connection());
        match conn {
            Some(c) => {
                c.send(el);
                true
            }
            None => false,
        }
    }

    // ---- IQs the server sends ---------------------------------------------------------------

    /// Sends an IQ request to a session and calls `on_response` with the reply, or with an
    /// error if none comes (see [`IqCallback`]). The callback never runs inside this call.
    pub fn send_iq(self: &Rc<Self>, to: &FullJid, mut iq: Element, on_response: IqCallback) {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        let id = format!("wockd-{n}");
        iq.set_attr("id", id.as_str());
        iq.set_attr("to", to.to_string());
        if !self.deliver_to_full(to, &iq) {
            let error = iq_error(to, &id, Condition::RecipientUnavailable, "no such session");
            self.call_later(vec![(on_response, error)]);
            return;
        }
        let limits = &self.config.limits;
        let given_up = {
            let mut pending = self.pending_iqs.borrow_mut();
            let of_session = pending.entry(to.clone()).or_default();
            // Too many unanswered: the oldest is given up (the newest is the one that matters
            // for caps, the only user so far: a resource's current caps).
            let oldest = (of_session.len() >= limits.max_pending_iqs)
                .then(|| {
                    of_session
                        .iter()
                        .min_by_key(|(_, p)| p.seq)
                        .map(|(id, _)| id.clone())
                })
                .flatten()
                .and_then(|old| of_session.remove(&old).map(|p| (old, p)));
            of_session.insert(
                id,
                PendingIq {
                    on_response,
                    deadline: Instant::now() + Duration::from_secs(limits.server_iq_timeout_secs),
                    seq: n,
                },
            );
            oldest
        };
        if let Some((old, p)) = given_up {
            tracing::debug!(%to, "too many IQs pending; giving up the oldest");
            let error = iq_error(
                to,
                &old,
                Condition::ResourceConstraint,
                "too many queries pending",
            );
            self.call_later(vec![(p.on_response, error)]);
        }
    }

    pub(crate) fn iq_response(self: &Rc<Self>, from: &FullJid, id: &str, el: Element) {
        let cb = {
            let mut pending = self.pending_iqs.borrow_mut();
            let cb = pending.get_mut(from).and_then(|m| m.remove(id));
            if pending.get(from).is_some_and(HashMap::is_empty) {
                pending.remove(from);
            }
            cb
        };
        if let Some(p) = cb {
            (p.on_response)(self, el);
        }
        // Otherwise: a response nobody waits for (any more). Responses are never answered.
    }

    /// How many IQs the server waits an answer for, over all sessions.
    pub fn pending_iq_count(&self) -> usize {
        self.pending_iqs.borrow().values().map(HashMap::len).sum()
    }

    /// Gives up the IQs whose deadline has passed (housekeeping, every second).
    fn expire_iqs(self: &Rc<Self>, now: Instant) {
        let mut expired = Vec::new();
        self.pending_iqs.borrow_mut().retain(|jid, of_session| {
            let ids: Vec<String> = of_session
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                if let Some(p) = of_session.remove(&id) {
                    let error = iq_error(jid, &id, Condition::RemoteServerTimeout, "no answer");
                    expired.push((p.on_response, error));
                }
            }
            !of_session.is_empty()
        });
        if !expired.is_empty() {
            tracing::debug!(n = expired.len(), "IQs to clients expired unanswered");
            self.call_later(expired);
        }
    }

    /// The session `jid` ended: what it was asked will never be answered.
    fn abandon_iqs(self: &Rc<Self>, jid: &FullJid) {
        let Some(of_session) = self.pending_iqs.borrow_mut().remove(jid) else {
            return;
        };
        let gone = of_session
            .into_iter()
            .map(|(id, p)| {
                let error = iq_error(jid, &id, Condition::RecipientUnavailable, "session ended");
                (p.on_response, error)
            })
            .collect();
        self.call_later(gone);
    }

    /// Runs IQ callbacks on the next loop turn, outside whatever borrows the caller holds.
    fn call_later(self: &Rc<Self>, calls: Vec<(IqCallback, Element)>) {
        let weak = Rc::downgrade(self);
        source::idle_once(move || {
            if let Some(server) = weak.upgrade() {
                for (cb, error) in calls {
                    cb(&server, error);
                }
            }
        });
    }

    // ---- services ---------------------------------------------------------------------------

    pub fn add_service(&self, domain: &str, service: Rc<dyn Service>) {
        self.services
            .borrow_mut()
            .insert(domain.to_owned(), service);
    }

    pub fn service(&self, domain: &str) -> Option<Rc<dyn Service>> {
        self.services.borrow().get(domain).cloned()
    }

    /// The domains of the registered services and the external components, sorted (XEP-0030
    /// items of the server).
    pub fn service_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self.services.borrow().keys().cloned().collect();
        domains.extend(self.config.components.iter().map(|c| c.domain.clone()));
        domains.sort();
        domains
    }

    // ---- shutdown ---------------------------------------------------------------------------

    /// Stops listening and closes every stream with `system-shutdown`, flushing what it can.
    pub fn shutdown(self: &Rc<Self>) {
        for (_, src) in self.listeners.borrow_mut().drain(..) {
            src.destroy();
        }
        crate::s2s::stop(self);
        crate::component::stop(self);
        crate::component::uplink::stop(self);
        for t in self.timers.borrow_mut().drain(..) {
            t.destroy();
        }
        let conns: Vec<Rc<Connection>> = self.conns.borrow().values().cloned().collect();
        for c in &conns {
            c.close(Some((StreamError::SystemShutdown, None)));
            c.flush();
        }
        for c in conns {
            c.teardown();
        }
        let _ = Condition::ServiceUnavailable;
    }
}

/// The error answer the server makes up for an IQ to `from` that got none.
fn iq_error(from: &FullJid, id: &str, cond: Condition, text: &str) -> Element {
    Element::stanza("iq")
        .attr("type", "error")
        .attr("id", id)
        .attr("from", from.to_string())
        .child(crate::core::stanza::error_element(
            cond.default_type(),
            cond,
            Some(text),
        ))
}
