//! One thread's worth of XMPP client connections on a level-triggered epoll loop.
//!
//! Each connection runs the generic client login of RFC 6120 by itself — stream header with
//! version 1.0 (§4.7), SASL (§6: PLAIN, SCRAM-SHA-1, SCRAM-SHA-256), stream restart, resource
//! binding (§7), the RFC 3921 session IQ when the server advertises it as required (or always,
//! if configured) and initial presence (RFC 6121 §4.2) — and then hands the stanzas it receives
//! to the benchmark (`App`). Output is buffered per connection and written once per loop turn,
//! so a sender that queues many stanzas costs one syscall.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sasl::{self, Mech, Scram};
use crate::xml::{self, El, Frame, Framer};

const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
const READ_CHUNK: usize = 64 * 1024;

/// How every connection of a run logs in.
pub struct LoginCfg {
    pub addr: SocketAddr,
    pub domain: String,
    /// None: the strongest the server offers (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN).
    pub mech: Option<Mech>,
    /// Send the session IQ whenever it is advertised, even when marked optional.
    pub always_session: bool,
    /// Enable XEP-0198 stream management (with resumption) once the session is established.
    pub stream_management: bool,
    /// Send initial presence once the session is established.
    pub presence: bool,
    pub login_timeout: Duration,
    pub close_timeout: Duration,
}

pub struct Account {
    pub user: String,
    pub password: String,
    pub resource: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Features,
    Sasl,
    Features2,
    Bind,
    Session,
    Online,
    Closing,
}

struct Conn {
    sock: TcpStream,
    framer: Framer,
    wbuf: Vec<u8>,
    wpos: usize,
    out_armed: bool,
    dirty: bool,
    phase: Phase,
    acct: Account,
    scram: Option<Scram>,
    session_needed: bool,
    jid: String,
    started: Instant,
    deadline: Option<Instant>,
    tag: u64,
}

/// What a benchmark does with its connections. Callbacks may call any `Reactor` method.
pub trait App {
    /// The connection `id` finished logging in (bound, session, initial presence sent).
    fn online(&mut self, r: &mut Reactor, id: usize, latency: Duration);
    /// A stanza (or any other top-level element) arrived on an online connection.
    fn stanza(&mut self, r: &mut Reactor, id: usize, data: &[u8]);
    /// The connection with `tag` is gone: `None` after a clean close, else what went wrong.
    fn closed(&mut self, r: &mut Reactor, tag: u64, error: Option<String>);
    /// Once per loop turn (at least every 10 ms). Return false to leave [`Reactor::run`].
    fn tick(&mut self, r: &mut Reactor) -> bool;
}

pub struct Reactor {
    ep: OwnedFd,
    cfg: Arc<LoginCfg>,
    slots: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    closed: Vec<(u64, Option<String>)>,
    scratch: Vec<u8>,
    last_sweep: Instant,
    open: usize,
}

fn epoll_ctl(ep: i32, op: i32, fd: i32, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: plain syscall on descriptors we own; `ev` outlives the call.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0' xml:lang='en'>",
        xml::escape(domain)
    )
}

const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const OUT: u32 = libc::EPOLLOUT as u32;

impl Reactor {
    pub fn new(cfg: Arc<LoginCfg>) -> io::Result<Reactor> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Reactor {
            // SAFETY: fd is a fresh descriptor nobody else owns.
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
            cfg,
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            closed: Vec::new(),
            scratch: Vec::new(),
            last_sweep: Instant::now(),
            open: 0,
        })
    }

    /// Connections not yet closed.
    pub fn open(&self) -> usize {
        self.open
    }

    pub fn tag(&self, id: usize) -> u64 {
        self.slots[id].as_ref().map_or(u64::MAX, |c| c.tag)
    }

    /// The full JID the server bound.
    pub fn jid(&self, id: usize) -> &str {
        self.slots[id].as_ref().map_or("", |c| c.jid.as_str())
    }

    /// Starts a connection that logs in as `acct`; returns its id (valid until it is closed).
    pub fn connect(&mut self, acct: Account, tag: u64) -> usize {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                self.slots.len() - 1
            }
        };
        self.open += 1;
        let started = Instant::now();
        let sock = match self.start_connect() {
            Ok(s) => s,
            Err(e) => {
                self.open -= 1;
                self.free.push(idx);
                self.closed
                    .push((tag, Some(format!("connect to {}: {e}", self.cfg.addr))));
                return idx;
            }
        };
        let token = (u64::from(self.gens[idx]) << 32) | idx as u64;
        if let Err(e) = epoll_ctl(
            self.ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            IN | OUT,
            token,
        ) {
            self.open -= 1;
            self.free.push(idx);
            self.closed.push((tag, Some(format!("epoll: {e}"))));
            return idx;
        }
        self.slots[idx] = Some(Conn {
            sock,
            framer: Framer::new(),
            wbuf: Vec::new(),
            wpos: 0,
            out_armed: true,
            dirty: false,
            phase: Phase::Connecting,
            acct,
            scram: None,
            session_needed: false,
            jid: String::new(),
            started,
            deadline: Some(started + self.cfg.login_timeout),
            tag,
        });
        idx
    }

    fn start_connect(&self) -> io::Result<TcpStream> {
        let s = Socket::new(
            Domain::for_address(self.cfg.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_nonblocking(true)?;
        s.set_tcp_nodelay(true)?;
        match s.connect(&self.cfg.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(s.into())
    }

    /// Queues bytes for `id` (written at the end of this loop turn).
    pub fn send(&mut self, id: usize, data: &[u8]) {
        let Some(c) = self.slots.get_mut(id).and_then(|c| c.as_mut()) else {
            return;
        };
        if c.wpos > 0 && c.wpos >= c.wbuf.len() / 2 {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
        c.wbuf.extend_from_slice(data);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Ends the stream politely: `</stream:stream>`, then waits for the server's.
    pub fn close(&mut self, id: usize) {
        let timeout = self.cfg.close_timeout;
        let Some(c) = self.slots.get_mut(id).and_then(|c| c.as_mut()) else {
            return;
        };
        if c.phase == Phase::Closing {
            return;
        }
        c.phase = Phase::Closing;
        c.deadline = Some(Instant::now() + timeout);
        self.send(id, b"</stream:stream>");
    }

    fn finish(&mut self, idx: usize, error: Option<String>) {
        if let Some(c) = self.slots[idx].take() {
            // Closing the socket removes it from the epoll set.
            drop(c.sock);
            self.gens[idx] = self.gens[idx].wrapping_add(1);
            self.free.push(idx);
            self.open -= 1;
            self.closed.push((c.tag, error));
        }
    }

    fn fail(&mut self, idx: usize, what: impl Into<String>) {
        let phase = self.slots[idx].as_ref().map(|c| c.phase);
        let what = what.into();
        let msg = match phase {
            Some(Phase::Online) | Some(Phase::Closing) | None => what,
            Some(p) => format!("{what} (while in {p:?})"),
        };
        self.finish(idx, Some(msg));
    }

    /// Runs until `app.tick` returns false.
    pub fn run<A: App>(&mut self, app: &mut A) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        loop {
            while !self.closed.is_empty() {
                for (tag, err) in std::mem::take(&mut self.closed) {
                    app.closed(self, tag, err);
                }
            }
            if !app.tick(self) {
                self.flush_all();
                return;
            }
            self.flush_all();
            let timeout = if self.closed.is_empty() { 10 } else { 0 };
            // SAFETY: the buffer holds `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("epoll_wait: {e}");
            }
            for ev in &events[..n as usize] {
                let (flags, token) = (ev.events, ev.u64);
                let idx = (token & 0xffff_ffff) as usize;
                if self.gens.get(idx) != Some(&((token >> 32) as u32)) || self.slots[idx].is_none()
                {
                    continue;
                }
                self.handle(idx, flags, app);
            }
            if self.last_sweep.elapsed() >= Duration::from_millis(100) {
                self.sweep();
            }
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        self.last_sweep = now;
        for idx in 0..self.slots.len() {
            let Some(c) = &self.slots[idx] else { continue };
            if c.deadline.is_some_and(|d| d <= now) {
                let msg = if c.phase == Phase::Closing {
                    "timed out waiting for the server to close the stream"
                } else {
                    "login timed out"
                };
                self.fail(idx, msg);
            }
        }
    }

    fn flush_all(&mut self) {
        for idx in std::mem::take(&mut self.dirty) {
            if let Some(c) = self.slots[idx].as_mut() {
                c.dirty = false;
                if c.phase != Phase::Connecting {
                    self.flush(idx);
                }
            }
        }
    }

    fn flush(&mut self, idx: usize) {
        let ep = self.ep.as_raw_fd();
        let gen_ = self.gens[idx];
        let Some(c) = self.slots[idx].as_mut() else {
            return;
        };
        let mut err = None;
        while c.wpos < c.wbuf.len() {
            match (&c.sock).write(&c.wbuf[c.wpos..]) {
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = err {
            self.fail(idx, format!("write: {e}"));
            return;
        }
        let done = c.wpos == c.wbuf.len();
        if done {
            c.wbuf.clear();
            c.wpos = 0;
        }
        if done == c.out_armed {
            c.out_armed = !done;
            let ev = if done { IN } else { IN | OUT };
            let token = (u64::from(gen_) << 32) | idx as u64;
            if let Err(e) = epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.sock.as_raw_fd(), ev, token) {
                self.fail(idx, format!("epoll: {e}"));
            }
        }
    }

    fn handle<A: App>(&mut self, idx: usize, flags: u32, app: &mut A) {
        let Some(c) = self.slots[idx].as_mut() else {
            return;
        };
        if c.phase == Phase::Connecting {
            match c.sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    return self.fail(idx, format!("connect to {}: {e}", self.cfg.addr));
                }
            }
            if flags & (OUT | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) == 0 {
                return;
            }
            c.phase = Phase::Features;
            let header = header(&self.cfg.domain);
            self.send(idx, header.as_bytes());
            self.flush(idx);
            return;
        }
        if flags & OUT != 0 {
            self.flush(idx);
        }
        if flags & (IN | libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0 {
            self.read(idx, app);
        }
    }

    fn read<A: App>(&mut self, idx: usize, app: &mut A) {
        let gen_ = self.gens[idx];
        let mut eof = false;
        {
            let Some(c) = self.slots[idx].as_mut() else {
                return;
            };
            let mut total = 0;
            loop {
                let room = c.framer.spare(READ_CHUNK);
                match (&c.sock).read(room) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        c.framer.filled(n);
                        total += n;
                        if n < READ_CHUNK || total >= 1 << 20 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.fail(idx, format!("read: {e}")),
                }
            }
        }
        loop {
            if self.gens[idx] != gen_ {
                return;
            }
            let Some(c) = self.slots[idx].as_mut() else {
                return;
            };
            let frame = match c.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return self.fail(idx, format!("bad XML from server: {}", e.0)),
            };
            match frame {
                Frame::Header(_) => {}
                Frame::End => {
                    if c.phase == Phase::Closing {
                        self.finish(idx, None);
                    } else {
                        self.fail(idx, "server closed the stream");
                    }
                    return;
                }
                Frame::Element(r) => {
                    let mut data = std::mem::take(&mut self.scratch);
                    data.clear();
                    data.extend_from_slice(c.framer.slice(r));
                    let phase = c.phase;
                    if data.starts_with(b"<stream:error") {
                        let why = El::parse(&data)
                            .ok()
                            .and_then(|e| e.children.first().map(|c| c.name.clone()))
                            .unwrap_or_default();
                        self.fail(
                            idx,
                            format!("stream error <{why}/>: {}", String::from_utf8_lossy(&data)),
                        );
                    } else if matches!(phase, Phase::Online | Phase::Closing) {
                        app.stanza(self, idx, &data);
                    } else if let Err(e) = self.negotiate(idx, &data, app) {
                        self.fail(idx, e);
                    }
                    self.scratch = data;
                }
            }
        }
        if eof && self.gens[idx] == gen_ && self.slots[idx].is_some() {
            if self.slots[idx]
                .as_ref()
                .is_some_and(|c| c.phase == Phase::Closing)
            {
                self.finish(idx, None);
            } else {
                self.fail(idx, "connection closed by server");
            }
        }
    }

    fn negotiate<A: App>(&mut self, idx: usize, data: &[u8], app: &mut A) -> Result<(), String> {
        let el = El::parse(data).map_err(|e| format!("bad XML from server: {}", e.0))?;
        let cfg = self.cfg.clone();
        let c = self.slots[idx].as_mut().ok_or("gone")?;
        let mut out = String::new();
        let mut online = false;
        match c.phase {
            Phase::Features => {
                if el.name != "features" {
                    return Err(format!("expected stream features, got <{}>", el.name));
                }
                let offered: Vec<&str> = el
                    .child("mechanisms")
                    .map(|m| m.children.iter().map(|c| c.text.trim()).collect())
                    .unwrap_or_default();
                if offered.is_empty() {
                    return Err(if el.child("starttls").is_some() {
                        "no SASL mechanisms offered without TLS (the server wants STARTTLS; this tool speaks plain TCP)".into()
                    } else {
                        "no SASL mechanisms offered".into()
                    });
                }
                let mech = match cfg.mech {
                    Some(m) if offered.contains(&m.name()) => m,
                    Some(m) => {
                        return Err(format!(
                            "server does not offer {}; it offers {}",
                            m.name(),
                            offered.join(" ")
                        ));
                    }
                    None => [Mech::ScramSha256, Mech::ScramSha1, Mech::Plain]
                        .into_iter()
                        .find(|m| offered.contains(&m.name()))
                        .ok_or_else(|| {
                            format!("no supported mechanism among {}", offered.join(" "))
                        })?,
                };
                let initial = match mech {
                    Mech::Plain => sasl::plain(&c.acct.user, &c.acct.password),
                    m => {
                        let s = Scram::new(m, &c.acct.user, &c.acct.password);
                        let first = s.first();
                        c.scram = Some(s);
                        first
                    }
                };
                out = format!(
                    "<auth xmlns='{NS_SASL}' mechanism='{}'>{initial}</auth>",
                    mech.name()
                );
                c.phase = Phase::Sasl;
            }
            Phase::Sasl => match el.name.as_str() {
                "challenge" => {
                    let s = c
                        .scram
                        .as_mut()
                        .ok_or("unexpected SASL challenge for PLAIN")?;
                    let resp = s.challenge(&el.text)?;
                    out = if resp.is_empty() {
                        format!("<response xmlns='{NS_SASL}'/>")
                    } else {
                        format!("<response xmlns='{NS_SASL}'>{resp}</response>")
                    };
                }
                "success" => {
                    if let Some(s) = c.scram.as_mut() {
                        s.success(&el.text)?;
                    }
                    c.scram = None;
                    c.phase = Phase::Features2;
                    out = header(&cfg.domain);
                }
                "failure" => {
                    let cond = el
                        .children
                        .iter()
                        .map(|c| c.name.as_str())
                        .find(|n| *n != "text")
                        .unwrap_or("");
                    let text = el.child("text").map(|t| t.text.as_str()).unwrap_or("");
                    return Err(format!(
                        "SASL failure <{cond}/> {text} (user {})",
                        c.acct.user
                    ));
                }
                other => return Err(format!("unexpected <{other}> during SASL")),
            },
            Phase::Features2 => {
                if el.name != "features" {
                    return Err(format!(
                        "expected stream features after SASL, got <{}>",
                        el.name
                    ));
                }
                if el.child("bind").is_none() {
                    return Err("server does not offer resource binding".into());
                }
                c.session_needed = el
                    .child("session")
                    .is_some_and(|s| cfg.always_session || s.child("optional").is_none());
                out = format!(
                    "<iq type='set' id='bind_1'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
                    xml::escape(&c.acct.resource)
                );
                c.phase = Phase::Bind;
            }
            Phase::Bind | Phase::Session => {
                let want = if c.phase == Phase::Bind {
                    "bind_1"
                } else {
                    "sess_1"
                };
                if el.name != "iq" || el.attr("id") != Some(want) {
                    return Ok(()); // something unrelated, e.g. a stray push
                }
                if el.attr("type") != Some("result") {
                    let cond = el
                        .child("error")
                        .and_then(|e| e.children.first())
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    return Err(format!("{want} failed: <{cond}/>"));
                }
                if c.phase == Phase::Bind {
                    c.jid = el
                        .child("bind")
                        .and_then(|b| b.child("jid"))
                        .map(|j| j.text.trim().to_owned())
                        .ok_or("bind result without jid")?;
                }
                if c.phase == Phase::Bind && c.session_needed {
                    out =
                        format!("<iq type='set' id='sess_1'><session xmlns='{NS_SESSION}'/></iq>");
                    c.phase = Phase::Session;
                } else {
                    c.phase = Phase::Online;
                    c.deadline = None;
                    online = true;
                    if cfg.stream_management {
                        out.push_str("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
                    }
                    if cfg.presence {
                        out.push_str("<presence/>");
                    }
                }
            }
            Phase::Connecting | Phase::Online | Phase::Closing => {}
        }
        let latency = c.started.elapsed();
        if !out.is_empty() {
            self.send(idx, out.as_bytes());
        }
        if online {
            app.online(self, idx, latency);
        }
        Ok(())
    }
}
