//! One XML stream between wockd and another server-side peer on the glib loop — a server
//! (s2s, `src/s2s/`) or an external component (XEP-0114, `src/component/`): the socket, TLS
//! (rustls, either side), framing with the same limits as client streams, buffered output
//! flushed once per loop turn, and the stream's negotiation state. What the stream *means*
//! (dialback, handshake, routing) is in its owner, named by a [`Kind`]; this file only moves
//! bytes and elements.
//!
//! Borrowing rule, as for client connections: no cell is borrowed while calling out.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use glib::{ControlFlow, IOCondition, Source};

use crate::core::stanza::StreamError;
use crate::net::limits::TokenBucket;
use crate::net::source;
use crate::server::Server;
use crate::xml::parse::{self, Scope, StreamHeader};
use crate::xml::{Element, Framer, Token, ns};

/// Read at most this much per wake-up before yielding to other sources.
const READ_BUDGET: usize = 256 * 1024;
/// Output a peer may leave unread before the link is dropped.
const MAX_OUTPUT: usize = 8 * 1024 * 1024;

/// The owner of a kind of link: what its stanzas' stream namespace is, who reads its input,
/// who is told when it closes, and its read rate limit.
pub struct Kind {
    /// For logs: "s2s", "component".
    pub name: &'static str,
    /// The stream's content namespace (`jabber:server`, `jabber:component:accept`): read as
    /// `jabber:client` inside the server, written back without a namespace so that it is
    /// the stream's default again.
    pub stream_ns: &'static str,
    pub on_input: fn(&Rc<Link>, Input),
    pub on_closed: fn(&Rc<Server>, u64),
    /// (bytes per second, burst)
    pub read_rate: fn(&Server) -> (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// A remote server connected to us: it sends stanzas, we receive.
    In,
    /// We connected to a remote server to send it stanzas.
    Out,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Dialback,
    /// The peer's certificate was valid for its domain (SASL EXTERNAL, or dialback shortcut).
    Certificate,
    /// A component's shared secret (XEP-0114 handshake).
    Secret,
}

impl Auth {
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Dialback => "dialback",
            Auth::Certificate => "certificate",
            Auth::Secret => "secret",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Outgoing: resolving and connecting; no socket yet.
    Connecting,
    AwaitHeader,
    Open,
    Closed,
}

/// What the framer produced, parsed.
pub enum Input {
    Header(StreamHeader),
    Element(Element),
    Close,
    Error(StreamError, String),
}

/// Negotiation and bookkeeping of one link, read and written by `mod.rs`.
pub struct Nego {
    /// Our domain on this stream.
    pub local: String,
    /// The peer's domain (outgoing: the one we connect to; incoming: from its header, if any).
    pub remote: String,
    /// Incoming: the id we gave the current stream; outgoing: the one the peer gave.
    pub stream_id: String,
    /// The peer announced version 1.0 (features follow its header).
    pub version1: bool,
    /// Incoming: remote domains authenticated on this stream.
    pub verified: BTreeSet<String>,
    /// Outgoing: authenticated, stanzas flow.
    pub ready: bool,
    /// Outgoing: our `<db:result/>` went out on this stream.
    pub result_sent: bool,
    pub auth: Auth,
    /// The peer's certificate is valid for `remote` (outgoing) under our trust anchors.
    pub cert_ok: bool,
    /// Outgoing: stanzas waiting for the link to be ready.
    pub queue: VecDeque<Element>,
    /// Outgoing: dialback verification requests to send once the stream is negotiated:
    /// (incoming link id, the domain it claims, its stream id, its key).
    pub verifies: Vec<(u64, String, String, String)>,
    /// Outgoing: verification requests sent, by the stream id they are about.
    pub verifying: Vec<(u64, String, String)>,
    pub stanzas_in: u64,
    pub stanzas_out: u64,
    pub opened: Instant,
    pub last_stanza: Instant,
}

struct Io {
    sock: Option<TcpStream>,
    tls: Option<Box<rustls::Connection>>,
    inbuf: Vec<u8>,
    framer: Framer,
    out: Vec<u8>,
    tls_out: Vec<u8>,
    scope: Scope,
    phase: Phase,
    bucket: TokenBucket,
    last_read: Instant,
    write_source: Option<Source>,
    read_source: Option<Source>,
}

pub struct Link {
    pub id: u64,
    pub dir: Dir,
    pub kind: &'static Kind,
    pub peer: Cell<Option<SocketAddr>>,
    server: Weak<Server>,
    me: Weak<Link>,
    io: RefCell<Io>,
    pub nego: RefCell<Nego>,
    flush_queued: Cell<bool>,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

impl Link {
    pub fn new(
        server: &Rc<Server>,
        kind: &'static Kind,
        id: u64,
        dir: Dir,
        local: &str,
        remote: &str,
    ) -> Rc<Link> {
        let limits = &server.config.limits;
        let now = Instant::now();
        Rc::new_cyclic(|me| Link {
            id,
            dir,
            kind,
            me: me.clone(),
            peer: Cell::new(None),
            server: Rc::downgrade(server),
            io: RefCell::new(Io {
                sock: None,
                tls: None,
                inbuf: Vec::new(),
                framer: Framer::new(limits.max_stanza_bytes, limits.max_depth),
                out: Vec::new(),
                tls_out: Vec::new(),
                scope: Scope::new(),
                phase: if dir == Dir::Out {
                    Phase::Connecting
                } else {
                    Phase::AwaitHeader
                },
                bucket: TokenBucket::new((kind.read_rate)(server).1, now),
                last_read: now,
                write_source: None,
                read_source: None,
            }),
            nego: RefCell::new(Nego {
                local: local.to_owned(),
                remote: remote.to_owned(),
                stream_id: String::new(),
                version1: false,
                verified: BTreeSet::new(),
                ready: false,
                result_sent: false,
                auth: Auth::None,
                cert_ok: false,
                queue: VecDeque::new(),
                verifies: Vec::new(),
                verifying: Vec::new(),
                stanzas_in: 0,
                stanzas_out: 0,
                opened: now,
                last_stanza: now,
            }),
            flush_queued: Cell::new(false),
        })
    }

    /// Attaches the connected socket and starts reading; with `tls`, TLS starts at once.
    pub fn attach(
        self: &Rc<Self>,
        sock: TcpStream,
        tls: Option<rustls::Connection>,
    ) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        self.peer.set(sock.peer_addr().ok());
        {
            let mut io = self.io.borrow_mut();
            io.sock = Some(sock);
            io.tls = tls.map(Box::new);
            io.phase = Phase::AwaitHeader;
        }
        self.watch_input();
        Ok(())
    }

    fn watch_input(&self) {
        let Some(fd) = self.io.borrow().sock.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        let weak = self.me.clone();
        let src = source::watch_fd(
            fd,
            IOCondition::IN | IOCondition::HUP | IOCondition::ERR,
            move |_, _| match weak.upgrade() {
                Some(l) => {
                    l.on_readable();
                    ControlFlow::Continue
                }
                None => ControlFlow::Break,
            },
        );
        if let Some(old) = self.io.borrow_mut().read_source.replace(src) {
            old.destroy();
        }
    }

    pub fn server(&self) -> Option<Rc<Server>> {
        self.server.upgrade()
    }

    pub fn phase(&self) -> Phase {
        self.io.borrow().phase
    }

    pub fn is_secure(&self) -> bool {
        self.io.borrow().tls.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.io.borrow().phase == Phase::Closed
    }

    /// The peer's certificate chain, once TLS is up.
    pub fn peer_certificates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        self.io
            .borrow()
            .tls
            .as_ref()
            .and_then(|t| t.peer_certificates())
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
    }

    // ---- input ----------------------------------------------------------------------------

    fn on_readable(self: &Rc<Self>) {
        let (eof, n) = match self.read_available() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(link = self.id, "{} read error: {e}", self.kind.name);
                (self.kind.on_input)(
                    self,
                    Input::Error(StreamError::UndefinedCondition, e.to_string()),
                );
                self.teardown();
                return;
            }
        };
        self.charge(n);
        self.process_input();
        if eof && !self.is_closed() {
            (self.kind.on_input)(self, Input::Close);
            self.teardown();
        }
    }

    /// The read rate limit of the link's kind (`[s2s] read_rate`…).
    fn charge(self: &Rc<Self>, n: usize) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let (rate, burst) = (self.kind.read_rate)(&server);
        let wait = {
            let mut io = self.io.borrow_mut();
            let now = io.last_read;
            io.bucket.take(n, rate, burst, now)
        };
        if let Some(wait) = wait {
            if let Some(s) = self.io.borrow_mut().read_source.take() {
                s.destroy();
            }
            let weak = Rc::downgrade(self);
            server.after(wait, move || {
                if let Some(l) = weak.upgrade() {
                    l.resume_reading();
                }
            });
        }
    }

    fn resume_reading(self: &Rc<Self>) {
        {
            let io = self.io.borrow();
            if io.phase == Phase::Closed || io.read_source.is_some() {
                return;
            }
        }
        self.watch_input();
        self.process_input();
    }

    fn read_available(&self) -> io::Result<(bool, usize)> {
        let cap = self
            .server
            .upgrade()
            .map_or(0, |s| s.config.limits.max_stanza_bytes)
            + READ_BUDGET;
        let mut io = self.io.borrow_mut();
        let io = &mut *io;
        io.last_read = Instant::now();
        let Some(sock) = io.sock.as_mut() else {
            return Ok((true, 0));
        };
        let mut total = 0;
        let mut wants_flush = false;
        let r = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            while total < READ_BUDGET && io.inbuf.len() < cap {
                if let Some(tls) = io.tls.as_mut() {
                    match tls.read_tls(sock) {
                        Ok(0) => return Ok((true, total)),
                        Ok(n) => total += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok((false, total));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                    let state = tls.process_new_packets().map_err(|e| {
                        let _ = tls.write_tls(sock);
                        io::Error::new(io::ErrorKind::InvalidData, e)
                    })?;
                    if state.plaintext_bytes_to_read() > 0 {
                        loop {
                            match tls.reader().read(&mut scratch) {
                                Ok(0) => return Ok((true, total)),
                                Ok(n) => io.inbuf.extend_from_slice(&scratch[..n]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    if state.peer_has_closed() {
                        return Ok((true, total));
                    }
                    if tls.wants_write() || !io.tls_out.is_empty() {
                        wants_flush = true;
                    }
                } else {
                    match sock.read(&mut scratch) {
                        Ok(0) => return Ok((true, total)),
                        Ok(n) => {
                            total += n;
                            io.inbuf.extend_from_slice(&scratch[..n]);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok((false, total));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok((false, total))
        });
        if wants_flush {
            self.queue_flush();
        }
        r
    }

    fn process_input(self: &Rc<Self>) {
        let log_xml = self.server.upgrade().is_some_and(|s| s.config.log.xml);
        loop {
            let next = {
                let mut io = self.io.borrow_mut();
                let io = &mut *io;
                if !matches!(io.phase, Phase::AwaitHeader | Phase::Open) || io.read_source.is_none()
                {
                    break;
                }
                match io.framer.next(&io.inbuf) {
                    Ok(None) => None,
                    Ok(Some(Token::StreamOpen(r))) => {
                        Some(match parse::stream_header(&io.inbuf[r]) {
                            Ok(h) => {
                                // Stanzas of a server or component stream are read as
                                // `jabber:client` ones: the namespace they have inside
                                // the server.
                                io.scope = h.scope.with_default_replaced(ns::CLIENT);
                                io.phase = Phase::Open;
                                Input::Header(h)
                            }
                            Err(e) => Input::Error(StreamError::NotWellFormed, e.to_string()),
                        })
                    }
                    Ok(Some(Token::Element(r))) => {
                        if log_xml {
                            tracing::info!(
                                link = self.id,
                                "{} << {}",
                                self.kind.name,
                                String::from_utf8_lossy(&io.inbuf[r.clone()])
                            );
                        }
                        Some(match parse::element(&io.inbuf[r], &io.scope) {
                            Ok(mut el) => {
                                as_client_ns(&mut el, self.kind.stream_ns);
                                Input::Element(el)
                            }
                            Err(e) => Input::Error(StreamError::NotWellFormed, e.to_string()),
                        })
                    }
                    Ok(Some(Token::StreamClose)) => Some(Input::Close),
                    Err(e) => Some(Input::Error(StreamError::for_framing(&e), e.to_string())),
                }
            };
            let Some(input) = next else { break };
            let stop = matches!(input, Input::Close | Input::Error(..));
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (self.kind.on_input)(self, input)
            }));
            if handled.is_err() {
                tracing::error!(
                    link = self.id,
                    "a {} handler panicked; closing the link",
                    self.kind.name
                );
                self.close(Some((StreamError::InternalServerError, "")));
                break;
            }
            if stop {
                break;
            }
        }
        let mut io = self.io.borrow_mut();
        let io = &mut *io;
        let n = io.framer.consumed().min(io.inbuf.len());
        if n > 0 {
            io.inbuf.drain(..n);
            io.framer.shift(n);
        }
        if io.inbuf.is_empty() && io.inbuf.capacity() > 1024 {
            io.inbuf = Vec::new();
        }
    }

    /// A new stream starts on the same TLS after what was consumed (after SASL success).
    pub fn restart_stream(&self) {
        let mut io = self.io.borrow_mut();
        let at = io.framer.consumed();
        io.framer.restart(at);
        io.phase = Phase::AwaitHeader;
    }

    /// STARTTLS on our side of the stream: `<proceed/>` is sent (incoming) or was received
    /// (outgoing); everything after goes through `tls`, and a new stream starts.
    pub fn start_tls(&self, tls: rustls::Connection) {
        // Bytes after `<starttls/>`/`<proceed/>` belong to the TLS handshake.
        let rest = {
            let mut io = self.io.borrow_mut();
            let n = io.framer.consumed().min(io.inbuf.len());
            let rest = io.inbuf.split_off(n);
            io.inbuf.clear();
            io.framer.restart(0);
            rest
        };
        let mut io = self.io.borrow_mut();
        let mut tls = Box::new(tls);
        if !rest.is_empty() {
            let mut r: &[u8] = &rest;
            let _ = tls.read_tls(&mut r);
            let _ = tls.process_new_packets();
        }
        io.tls = Some(tls);
        io.phase = Phase::AwaitHeader;
        drop(io);
        self.queue_flush();
    }

    // ---- output ---------------------------------------------------------------------------

    /// Queues a stanza, serialised as a top-level element of the stream: written with
    /// `jabber:client` as the parent namespace, so client-namespace stanzas inherit the
    /// stream's default (`jabber:server`, `jabber:component:accept`).
    pub fn send(&self, el: &Element) {
        self.send_with(|buf| el.write_to(buf, ns::CLIENT));
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.send_with(|buf| buf.extend_from_slice(bytes));
    }

    fn send_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let log_xml = self.server.upgrade().is_some_and(|s| s.config.log.xml);
        let over = {
            let mut io = self.io.borrow_mut();
            let io = &mut *io;
            if matches!(io.phase, Phase::Closed | Phase::Connecting) {
                return;
            }
            let buf = if io.tls.is_some() {
                &mut io.tls_out
            } else {
                &mut io.out
            };
            let before = buf.len();
            write(buf);
            if log_xml {
                tracing::info!(
                    link = self.id,
                    "{} >> {}",
                    self.kind.name,
                    String::from_utf8_lossy(&buf[before..])
                );
            }
            io.out.len() + io.tls_out.len() > MAX_OUTPUT
        };
        if over {
            tracing::warn!(
                link = self.id,
                "{} peer leaves too much output unread; closing",
                self.kind.name
            );
            self.teardown();
            return;
        }
        self.queue_flush();
    }

    /// Writes cleartext that must reach the socket before TLS starts (`<proceed/>`).
    pub fn send_cleartext_now(&self, bytes: &[u8]) {
        self.io.borrow_mut().out.extend_from_slice(bytes);
        self.flush();
    }

    fn queue_flush(&self) {
        if self.flush_queued.replace(true) {
            return;
        }
        let weak = self.me.clone();
        source::idle_once(move || {
            if let Some(l) = weak.upgrade() {
                l.flush();
            }
        });
    }

    /// Writes what is pending; watches for writability when the socket is full.
    pub fn flush(&self) {
        self.flush_queued.set(false);
        let result = {
            let mut io = self.io.borrow_mut();
            let io = &mut *io;
            let Some(sock) = io.sock.as_mut() else {
                return;
            };
            write_out(sock, &mut io.out, &mut io.tls, &mut io.tls_out)
        };
        match result {
            Ok(true) => {
                if let Some(s) = self.io.borrow_mut().write_source.take() {
                    s.destroy();
                }
            }
            Ok(false) => self.watch_writable(),
            Err(e) => {
                tracing::debug!(link = self.id, "{} write error: {e}", self.kind.name);
                self.teardown();
            }
        }
    }

    fn watch_writable(&self) {
        let mut io = self.io.borrow_mut();
        if io.write_source.is_some() {
            return;
        }
        let Some(fd) = io.sock.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        let weak = self.me.clone();
        io.write_source = Some(source::watch_fd(fd, IOCondition::OUT, move |_, _| {
            if let Some(l) = weak.upgrade() {
                l.io.borrow_mut().write_source = None;
                l.flush();
            }
            ControlFlow::Break
        }));
    }

    /// Closes the stream: an optional stream error, the closing tag, TLS close_notify, then
    /// the socket. The owner is told through [`Kind::on_closed`].
    pub fn close(&self, error: Option<(StreamError, &str)>) {
        if self.is_closed() {
            return;
        }
        if self.phase() != Phase::Connecting {
            if let Some((cond, text)) = error {
                let t = (!text.is_empty()).then_some(text);
                self.send(&cond.element(t));
            }
            self.send_raw(b"</stream:stream>");
            if let Some(tls) = self.io.borrow_mut().tls.as_mut() {
                tls.send_close_notify();
            }
            self.flush();
        }
        self.teardown();
    }

    /// Drops the socket and sources at once.
    pub fn teardown(&self) {
        let was = {
            let mut io = self.io.borrow_mut();
            let was = io.phase;
            io.phase = Phase::Closed;
            if let Some(s) = io.read_source.take() {
                s.destroy();
            }
            if let Some(s) = io.write_source.take() {
                s.destroy();
            }
            if let Some(sock) = io.sock.take() {
                let _ = sock.shutdown(Shutdown::Both);
            }
            io.tls = None;
            io.inbuf = Vec::new();
            io.out = Vec::new();
            io.tls_out = Vec::new();
            was
        };
        if was != Phase::Closed
            && let Some(server) = self.server.upgrade()
        {
            (self.kind.on_closed)(&server, self.id);
        }
    }
}

/// Writes `out` (cleartext) then the TLS records of `tls_out`. Ok(true): all written.
fn write_out(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    tls: &mut Option<Box<rustls::Connection>>,
    tls_out: &mut Vec<u8>,
) -> io::Result<bool> {
    if !out.is_empty() {
        let mut written = 0;
        while written < out.len() {
            match sock.write(&out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        out.drain(..written);
        if !out.is_empty() {
            return Ok(false);
        }
    }
    let Some(tls) = tls.as_mut() else {
        return Ok(true);
    };
    loop {
        if !tls_out.is_empty() && !tls.is_handshaking() {
            let n = tls.writer().write(tls_out)?;
            tls_out.drain(..n);
        }
        if !tls.wants_write() {
            if tls_out.is_empty() || tls.is_handshaking() {
                return Ok(true);
            }
            continue;
        }
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A server or component stream's stanzas may also name the stream's namespace explicitly on
/// an element; inside the server everything is `jabber:client` (see [`Link::send`] for the
/// way out).
fn as_client_ns(el: &mut Element, stream_ns: &str) {
    if el.ns == stream_ns {
        el.ns = ns::CLIENT.to_owned();
    }
    for c in el.children.iter_mut() {
        if let crate::xml::element::Node::Element(c) = c {
            as_client_ns(c, stream_ns);
        }
    }
}

/// A new TLS session as the client of `domain` (outgoing links).
pub fn client_tls(
    config: &Arc<rustls::ClientConfig>,
    domain: &str,
) -> Result<rustls::Connection, String> {
    let name = rustls_pki_types::ServerName::try_from(domain.to_owned())
        .map_err(|e| format!("not a server name: {e}"))?;
    rustls::ClientConnection::new(config.clone(), name)
        .map(rustls::Connection::Client)
        .map_err(|e| e.to_string())
}

/// A new TLS session as the server (incoming links).
pub fn server_tls(config: &Arc<rustls::ServerConfig>) -> Result<rustls::Connection, String> {
    rustls::ServerConnection::new(config.clone())
        .map(rustls::Connection::Server)
        .map_err(|e| e.to_string())
}

/// A fresh stream id.
pub fn random_id() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

/// `v` escaped for an attribute of a hand-written stream header.
pub fn attr(v: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(v)
}
