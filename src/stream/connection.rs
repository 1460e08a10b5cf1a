//! One client connection: a non-blocking socket watched by a glib source, optional TLS
//! (rustls), incremental framing, and buffered output flushed once per loop turn.
//!
//! State owned here (`State`, private to this file): the socket and its glib sources, TLS,
//! the input buffer and framer, the output buffers (`out`, `tls_out`) and the output budget
//! (`overflowed`), the pause reasons and the read token bucket, the stream's phase and
//! namespace scope, and the timers (last read, keepalive, closing grace). The other layers
//! reach it only through methods (`stream_opened`, `restart_framing`, `start_tls`,
//! `set_hibernating`, `send*`, `flush`, `close*`, `pause`/`unpause`).
//!
//! Borrowing rule: no cell of the connection is borrowed while calling out (to the router,
//! handlers, other connections or another layer), so a stanza to oneself or a handler that
//! replies at once cannot re-enter a live borrow.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glib::{ControlFlow, IOCondition, Source};

use crate::core::stanza::StreamError;
use crate::net::limits::TokenBucket;
use crate::net::source;
use crate::server::Server;
use crate::xml::parse::{self, Scope};
use crate::xml::{Element, Framer, FramerError, ParseError, Token};

use super::StreamInfo;
use super::csi::CsiState;
use super::negotiate::Negotiation;
use super::sasl::SaslState;
use super::sasl2::Sasl2State;
use super::sm::SmState;

/// Read at most this much per wake-up before yielding to other sources (fairness).
const READ_BUDGET: usize = 256 * 1024;
/// How long a closing stream waits for the peer's `</stream:stream>` or EOF.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

thread_local! {
    /// One read buffer for all connections of the loop: idle connections hold none.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a stream header (first, or after a restart).
    AwaitHeader,
    /// Header received; negotiating (or, once bound, exchanging stanzas).
    Open,
    /// We sent `</stream:stream>`; waiting for the peer to finish.
    Closing,
    /// The socket died with XEP-0198 resumption enabled: the session waits for `<resume/>`.
    Hibernating,
    Closed,
}

/// Transport-level state: the socket, TLS, buffers, budgets and the stream's phase. Only this
/// file touches it; the layers above reach it through methods.
struct State {
    sock: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    inbuf: Vec<u8>,
    framer: Framer,
    /// Raw bytes for the socket (everything before TLS starts; with TLS only `<proceed/>`).
    out: Vec<u8>,
    /// Plaintext waiting to enter rustls, whose own buffer takes only so much at a time: what
    /// it does not take stays here until the socket is writable again.
    tls_out: Vec<u8>,
    /// The output budget was exceeded: output is discarded and the stream is being closed.
    overflowed: bool,
    /// Reasons input is not being read or processed (see [`Pause`]); 0 when it flows.
    paused: u8,
    /// TLS close_notify was queued (after the closing tag).
    close_notified: bool,
    /// The read rate limit (`[limits] read_rate*`).
    bucket: TokenBucket,
    write_source: Option<Source>,
    phase: Phase,
    /// Namespace declarations of the current stream header.
    scope: Scope,
    last_read: Instant,
    opened: Instant,
    closing_since: Option<Instant>,
    keepalive_sent: bool,
    /// Output from this offset of the active buffer (`tls_out` with TLS, else `out`) waits
    /// until store batch `seq` is committed: an acknowledgement of what this client sent
    /// (see [`Connection::dirty_seq`]) and everything after it, in order.
    hold: Option<Hold>,
}

/// See [`State::hold`].
#[derive(Clone, Copy, Debug)]
struct Hold {
    seq: u64,
    at: usize,
}

/// A client connection. Owned by the server's registry; sources hold weak references.
///
/// Each layer keeps its state in its own cell, touched only by the file that defines it:
/// transport here, negotiation and the session's identity in negotiate.rs, SASL in sasl.rs and
/// sasl2.rs, stream management in sm.rs, client state indication in csi.rs. Nothing holds one
/// cell's borrow while calling into another layer.
pub struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
    pub(crate) trusted: bool,
    server: Weak<Server>,
    state: RefCell<State>,
    read_source: RefCell<Option<Source>>,
    flush_queued: Cell<bool>,
    /// The store batch (`store::writer`) the last write caused by this client's input went
    /// into; 0 once committed. Acknowledgements to this client (XEP-0198 `<a/>`, IQ results,
    /// `<resumed/>`, the closing tag) wait for it: "acknowledged means on disk".
    dirty_seq: Cell<u64>,
    /// While this client's input is being handled: `Store::queued_writes` before it. An
    /// acknowledgement sent during the handling then waits for a write queued earlier in it.
    writes_before: Cell<Option<u64>>,
    pub(super) negotiation: RefCell<Negotiation>,
    pub(super) sasl: RefCell<SaslState>,
    pub(super) sasl2: RefCell<Sasl2State>,
    pub(super) sm: RefCell<SmState>,
    pub(super) csi: RefCell<CsiState>,
}

impl Connection {
    pub(crate) fn start(
        server: &Rc<Server>,
        id: u64,
        sock: TcpStream,
        peer: SocketAddr,
        trusted: bool,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Rc<Connection>> {
        sock.set_nonblocking(true)?;
        // Prosody's 40 ms stalls come from Nagle; stanzas are small and latency matters.
        sock.set_nodelay(true)?;
        let tls = match tls {
            Some(cfg) => Some(Box::new(
                rustls::ServerConnection::new(cfg).map_err(io::Error::other)?,
            )),
            None => None,
        };
        let limits = &server.config.limits;
        let now = Instant::now();
        let conn = Rc::new(Connection {
            id,
            peer,
            trusted,
            server: Rc::downgrade(server),
            state: RefCell::new(State {
                sock,
                tls,
                inbuf: Vec::new(),
                framer: Framer::new(limits.max_stanza_bytes, limits.max_depth),
                out: Vec::new(),
                tls_out: Vec::new(),
                overflowed: false,
                paused: 0,
                close_notified: false,
                bucket: TokenBucket::new(limits.read_burst_pre_auth, now),
                write_source: None,
                phase: Phase::AwaitHeader,
                scope: Scope::new(),
                last_read: now,
                opened: now,
                closing_since: None,
                keepalive_sent: false,
                hold: None,
            }),
            read_source: RefCell::new(None),
            flush_queued: Cell::new(false),
            dirty_seq: Cell::new(0),
            writes_before: Cell::new(None),
            negotiation: RefCell::new(Negotiation::new(server.config.default_domain())),
            sasl: RefCell::default(),
            sasl2: RefCell::default(),
            sm: RefCell::default(),
            csi: RefCell::default(),
        });
        conn.watch_input();
        Ok(conn)
    }

    fn watch_input(self: &Rc<Self>) {
        let fd = self.state.borrow().sock.as_raw_fd();
        let weak = Rc::downgrade(self);
        let src = source::watch_fd(
            fd,
            IOCondition::IN | IOCondition::HUP | IOCondition::ERR,
            move |_, _| match weak.upgrade() {
                Some(c) => {
                    c.on_readable();
                    ControlFlow::Continue
                }
                None => ControlFlow::Break,
            },
        );
        if let Some(old) = self.read_source.borrow_mut().replace(src) {
            old.destroy();
        }
    }

    /// Stops reading and processing input for `why` (rate limit, a store outage, an
    /// authentication being computed off the loop) until [`unpause`](Self::unpause).
    pub(crate) fn pause(&self, why: Pause) {
        self.state.borrow_mut().paused |= why as u8;
        if let Some(s) = self.read_source.borrow_mut().take() {
            s.destroy();
        }
    }

    /// Lifts one reason for a pause; input flows again (buffered input first) when none is left.
    pub(crate) fn unpause(self: &Rc<Self>, why: Pause) {
        let flowing = {
            let mut st = self.state.borrow_mut();
            if st.paused & why as u8 == 0 {
                return;
            }
            st.paused &= !(why as u8);
            st.paused == 0 && matches!(st.phase, Phase::AwaitHeader | Phase::Open)
        };
        if flowing {
            self.watch_input();
            self.process_input();
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.state.borrow().paused != 0
    }

    pub fn server(&self) -> Option<Rc<Server>> {
        self.server.upgrade()
    }

    pub fn info(&self) -> StreamInfo {
        let secure = self.is_secure();
        StreamInfo {
            secure,
            plaintext_ok: secure || self.trusted,
            registration: self
                .server
                .upgrade()
                .is_some_and(|s| s.config.auth.registration),
        }
    }

    pub(crate) fn is_hibernating(&self) -> bool {
        self.state.borrow().phase == Phase::Hibernating
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state.borrow().phase, Phase::AwaitHeader | Phase::Open)
    }

    // ---- input ----------------------------------------------------------------------------

    fn on_readable(self: &Rc<Self>) {
        if self.is_paused() {
            return;
        }
        let eof = match self.read_available() {
            Ok((eof, n)) => {
                self.charge(n);
                eof
            }
            Err(e) => {
                tracing::debug!(conn = self.id, "read error: {e}");
                self.lost();
                return;
            }
        };
        let closing = self.state.borrow().phase == Phase::Closing;
        if closing {
            // Discard whatever arrives after we closed; only the peer's EOF matters now.
            self.state.borrow_mut().inbuf.clear();
        } else {
            self.process_input();
        }
        if eof {
            self.lost();
        }
    }

    /// The TCP connection died (no `</stream:stream>`): the session hibernates if it can be
    /// resumed (XEP-0198), else it ends.
    pub(crate) fn lost(self: &Rc<Self>) {
        if self.state.borrow().phase == Phase::Open && self.try_hibernate() {
            self.close_quietly();
            return;
        }
        self.teardown();
    }

    /// Releases the socket and its sources but keeps the session (hibernation, or a
    /// connection whose session was taken over by `<resume/>`).
    pub(crate) fn close_quietly(&self) {
        let mut st = self.state.borrow_mut();
        if let Some(s) = st.write_source.take() {
            s.destroy();
        }
        let _ = st.sock.shutdown(Shutdown::Both);
        st.inbuf = Vec::new();
        st.out = Vec::new();
        st.tls_out = Vec::new();
        st.tls = None;
        st.hold = None;
        drop(st);
        if let Some(s) = self.read_source.borrow_mut().take() {
            s.destroy();
        }
    }

    /// Charges `n` bytes read to the rate limit; past it, input pauses until the debt is repaid
    /// (the socket's backlog then throttles the peer, as Prosody's and ejabberd's shapers do).
    fn charge(self: &Rc<Self>, n: usize) {
        let Some(server) = self.server() else { return };
        let l = &server.config.limits;
        let (rate, burst) = if self.is_authenticated() {
            (l.read_rate, l.read_burst)
        } else {
            (l.read_rate_pre_auth, l.read_burst_pre_auth)
        };
        let wait = {
            let mut st = self.state.borrow_mut();
            let now = st.last_read;
            st.bucket.take(n, rate, burst, now)
        };
        if let Some(wait) = wait {
            self.pause(Pause::Rate);
            let weak = Rc::downgrade(self);
            server.after(wait, move || {
                if let Some(c) = weak.upgrade() {
                    c.unpause(Pause::Rate);
                }
            });
        }
    }

    /// Reads what the socket has (through TLS if active) into `inbuf`. Returns whether the peer
    /// closed (EOF) and how many bytes were read from the socket.
    /// `inbuf` never holds more than a partial stanza plus one read budget: reading stops at
    /// that cap and goes on once the framer has consumed what is complete.
    fn read_available(&self) -> io::Result<(bool, usize)> {
        let cap = self
            .server
            .upgrade()
            .map_or(0, |s| s.config.limits.max_stanza_bytes)
            + READ_BUDGET;
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        st.last_read = Instant::now();
        st.keepalive_sent = false;
        let mut total = 0;
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            while total < READ_BUDGET && st.inbuf.len() < cap {
                if let Some(tls) = st.tls.as_mut() {
                    match tls.read_tls(&mut st.sock) {
                        Ok(0) => return Ok((true, total)),
                        Ok(n) => total += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok((false, total));
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                    let state = tls.process_new_packets().map_err(|e| {
                        // Let the alert out before the socket goes.
                        let _ = tls.write_tls(&mut st.sock);
                        io::Error::new(io::ErrorKind::InvalidData, e)
                    })?;
                    if state.plaintext_bytes_to_read() > 0 {
                        loop {
                            match tls.reader().read(&mut scratch) {
                                Ok(0) => return Ok((true, total)),
                                Ok(n) => st.inbuf.extend_from_slice(&scratch[..n]),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    if state.peer_has_closed() {
                        return Ok((true, total));
                    }
                    if tls.wants_write() || !st.tls_out.is_empty() {
                        self.queue_flush();
                    }
                } else {
                    match st.sock.read(&mut scratch) {
                        Ok(0) => return Ok((true, total)),
                        Ok(n) => {
                            total += n;
                            st.inbuf.extend_from_slice(&scratch[..n]);
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
        })
    }

    /// Frames and handles every complete token in `inbuf`.
    pub(crate) fn process_input(self: &Rc<Self>) {
        loop {
            let next = {
                let mut st = self.state.borrow_mut();
                let st = &mut *st;
                if !matches!(st.phase, Phase::AwaitHeader | Phase::Open) || st.paused != 0 {
                    break;
                }
                match st.framer.next(&st.inbuf) {
                    Ok(None) => None,
                    Ok(Some(Token::StreamOpen(r))) => Some(
                        parse::stream_header(&st.inbuf[r])
                            .map(Input::Header)
                            .map_err(parse_error),
                    ),
                    Ok(Some(Token::Element(r))) => {
                        if let Some(server) = self.server.upgrade()
                            && server.config.log.xml
                        {
                            crate::stream::negotiate::log_in(self.id, &st.inbuf[r.clone()]);
                        }
                        Some(
                            parse::element(&st.inbuf[r], &st.scope)
                                .map(Input::Element)
                                .map_err(parse_error),
                        )
                    }
                    Ok(Some(Token::StreamClose)) => Some(Ok(Input::Close)),
                    Err(e) => Some(Err(framer_error(e))),
                }
            };
            match next {
                None => break,
                Some(Ok(Input::Header(h))) => self.on_header(h),
                Some(Ok(Input::Element(el))) => {
                    let server = self.server.upgrade();
                    let writes = server.as_ref().map(|s| s.store.queued_writes());
                    self.writes_before.set(writes);
                    // A bug in one handler ends this stream, not the process (the release
                    // profile unwinds; every libpurple callback catches on its own).
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.on_element(el)
                    }));
                    self.writes_before.set(None);
                    // It wrote something: acknowledgements wait for that batch's commit.
                    if let Some(s) = &server
                        && Some(s.store.queued_writes()) != writes
                    {
                        self.dirty_seq.set(s.store.filling_seq());
                    }
                    if handled.is_err() {
                        tracing::error!(conn = self.id, "a stanza handler panicked; closing");
                        self.close(Some((StreamError::InternalServerError, None)));
                        break;
                    }
                }
                Some(Ok(Input::Close)) => {
                    self.close(None);
                    break;
                }
                Some(Err(error)) => {
                    self.close(Some(error));
                    break;
                }
            }
        }
        // Drop consumed bytes; give memory back when the buffer drains.
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let n = st.framer.consumed().min(st.inbuf.len());
        if n > 0 {
            st.inbuf.drain(..n);
            st.framer.shift(n);
        }
        if st.inbuf.is_empty() && st.inbuf.capacity() > 1024 {
            st.inbuf = Vec::new();
        }
    }

    /// While a password check runs off the main loop (src/auth/kdf.rs), nothing the client
    /// sent after its credentials is read or processed before their verdict.
    pub(crate) fn pause_input(&self) {
        self.pause(Pause::Auth);
    }

    /// Handles input again, starting with what arrived meanwhile.
    pub(crate) fn resume_input(self: &Rc<Self>) {
        self.unpause(Pause::Auth);
    }

    /// Bytes received but not yet framed (handed to TLS at STARTTLS).
    pub(crate) fn take_unconsumed(&self) -> Vec<u8> {
        let mut st = self.state.borrow_mut();
        let n = st.framer.consumed().min(st.inbuf.len());
        let rest = st.inbuf.split_off(n);
        st.inbuf.clear();
        st.framer.restart(0);
        rest
    }

    /// A stream header arrived: its namespace declarations apply to what follows.
    pub(super) fn stream_opened(&self, scope: &Scope) {
        let mut st = self.state.borrow_mut();
        st.scope = scope.clone();
        st.phase = Phase::Open;
    }

    /// Framing starts over after what was consumed (a stream restart after SASL success).
    pub(super) fn restart_framing(&self) {
        let mut st = self.state.borrow_mut();
        let at = st.framer.consumed();
        st.framer.restart(at);
        st.phase = Phase::AwaitHeader;
    }

    /// STARTTLS: everything from now on goes through `tls`; a new header is expected.
    pub(super) fn start_tls(&self, tls: Box<rustls::ServerConnection>) {
        let mut st = self.state.borrow_mut();
        st.tls = Some(tls);
        st.phase = Phase::AwaitHeader;
    }

    /// TLS is active on this stream.
    pub(super) fn is_secure(&self) -> bool {
        self.state.borrow().tls.is_some()
    }

    /// TLS records still wait for the socket (rustls's own buffer is not empty).
    pub(crate) fn tls_wants_write(&self) -> bool {
        self.state
            .borrow()
            .tls
            .as_ref()
            .is_some_and(|t| t.wants_write())
    }

    /// The socket died and the session waits for `<resume/>` (XEP-0198).
    pub(super) fn set_hibernating(&self) {
        self.state.borrow_mut().phase = Phase::Hibernating;
    }

    // ---- output ---------------------------------------------------------------------------

    /// Queues a top-level element for the client. Written at the end of this loop turn.
    /// Serialises straight into the output buffer (no per-stanza allocation on plain streams).
    pub fn send(&self, el: &Element) {
        self.send_with(el, |out| el.write_to(out, crate::xml::ns::CLIENT));
    }

    /// Like [`send`](Self::send) for a stanza the caller has serialised already, as a top-level
    /// element of a client stream (exactly what `el.to_bytes()` makes, in two pieces to be
    /// joined): saves serialising it again (the message path serialises each message for the
    /// mailbox anyway). `el` is still what stream management and client state indication keep.
    pub fn send_serialised(&self, el: &Element, pieces: [&[u8]; 2]) {
        debug_assert_eq!(pieces.concat(), el.to_bytes());
        self.send_with(el, |out| {
            out.extend_from_slice(pieces[0]);
            out.extend_from_slice(pieces[1]);
        });
    }

    /// [`send`](Self::send) with `write` putting `el`'s serialisation into a buffer.
    fn send_with(&self, el: &Element, write: impl FnOnce(&mut Vec<u8>)) {
        if self.csi_inactive() && self.csi_hold(el) {
            return;
        }
        let log_xml = self.server.upgrade().is_some_and(|s| s.config.log.xml);
        let track = self.sm_enabled() && super::sm::is_stanza(el);
        if is_acknowledgement(el) {
            self.note_writes_so_far();
        }
        let wait = if self.dirty_seq.get() != 0 && is_acknowledgement(el) {
            self.must_wait()
        } else {
            None
        };
        let len = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let live = matches!(st.phase, Phase::AwaitHeader | Phase::Open | Phase::Closing)
                && !st.overflowed;
            if live {
                if let Some(seq) = wait {
                    self.hold_from_here(st, seq);
                }
                // Straight into the output queue: no per-stanza buffer.
                let buf = if st.tls.is_some() {
                    &mut st.tls_out
                } else {
                    &mut st.out
                };
                let before = buf.len();
                write(buf);
                if log_xml {
                    crate::stream::negotiate::log_out(self.id, &buf[before..]);
                }
                buf.len() - before
            } else if track && st.phase != Phase::Closed {
                // Hibernating (or overflowed): not written, but kept for resumption or the
                // mailbox, and counted against the unacknowledged budget by its size.
                let mut buf = Vec::new();
                write(&mut buf);
                buf.len()
            } else {
                return;
            }
        };
        if track && !self.sm_track(el, len) {
            self.close_later(
                StreamError::ResourceConstraint,
                "too many unacknowledged stanzas",
            );
        }
        self.output_queued();
    }

    /// Queues raw bytes (stream header, closing tag, keepalive whitespace).
    pub(crate) fn send_raw(&self, bytes: &[u8]) {
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            if matches!(st.phase, Phase::Closed | Phase::Hibernating) || st.overflowed {
                return;
            }
            if let Some(server) = self.server.upgrade()
                && server.config.log.xml
            {
                crate::stream::negotiate::log_out(self.id, bytes);
            }
            // rustls buffers plaintext until the handshake completes; flush feeds it.
            if st.tls.is_some() {
                st.tls_out.extend_from_slice(bytes);
            } else {
                st.out.extend_from_slice(bytes);
            }
        }
        self.output_queued();
    }

    /// After output was queued: enforces the output budget, then schedules the flush. A client
    /// that lets more than `max_output_bytes` pile up unread gets no more output and its stream
    /// is closed on the next loop turn (`policy-violation`); its session ends the normal way,
    /// so what it never acknowledged (XEP-0198) goes back to the mailbox.
    fn output_queued(&self) {
        let over = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let budget = self
                .server
                .upgrade()
                .map_or(usize::MAX, |s| s.config.limits.max_output_bytes);
            if !st.overflowed && st.out.len() + st.tls_out.len() > budget {
                st.overflowed = true;
                st.out = Vec::new();
                st.tls_out = Vec::new();
                st.hold = None;
                true
            } else {
                false
            }
        };
        if over {
            self.close_later(StreamError::PolicyViolation, "too much output left unread");
            return;
        }
        self.queue_flush();
    }

    /// Ends the session on the next loop turn (from the output path, which must not re-enter
    /// the router): a stream error for a live stream, at once for a hibernating one.
    fn close_later(&self, cond: StreamError, why: &'static str) {
        tracing::warn!(conn = self.id, "{why}; ending the session");
        if let Some(server) = self.server() {
            server.queue_close(self.id, cond, why);
        }
    }

    /// Writes bytes that must reach the socket in clear before TLS starts (`<proceed/>`).
    pub(crate) fn send_raw_cleartext(&self, bytes: &[u8]) {
        self.state.borrow_mut().out.extend_from_slice(bytes);
        self.flush();
    }

    fn queue_flush(&self) {
        if self.flush_queued.replace(true) {
            return;
        }
        if let Some(server) = self.server.upgrade() {
            server.queue_flush(self.id);
        }
    }

    /// Writes pending output. Returns false if the connection failed.
    pub(crate) fn flush(&self) -> bool {
        self.flush_queued.set(false);
        if self.state.borrow().phase == Phase::Open && self.sm_request() {
            self.send_raw(b"<r xmlns='urn:xmpp:sm:3'/>");
            self.flush_queued.set(false);
        }
        let (blocked, failed) = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            if st.phase == Phase::Closed {
                return false;
            }
            let mut blocked = false;
            let mut failed = false;
            // Written from an offset and drained once: no memmove per partial write.
            let mut done = 0;
            let plain_limit = match (st.hold, st.tls.is_none()) {
                (Some(h), true) => h.at.min(st.out.len()),
                _ => st.out.len(),
            };
            while done < plain_limit {
                match st.sock.write(&st.out[done..plain_limit]) {
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            st.out.drain(..done);
            if st.out.is_empty() && st.out.capacity() > 4096 {
                st.out = Vec::new();
            }
            let tls_limit = match (st.hold, st.tls.is_some()) {
                (Some(h), true) => h.at.min(st.tls_out.len()),
                _ => st.tls_out.len(),
            };
            if let Some(h) = st.hold.as_mut() {
                h.at -= if st.tls.is_none() { done } else { 0 };
            }
            if !blocked
                && !failed
                && let Some(tls) = st.tls.as_mut()
            {
                // Feed rustls as much plaintext as its buffer takes, write its records out,
                // and repeat until everything is out or the socket is full. What rustls did
                // not take stays in `tls_out` for the next writable event.
                let mut fed = 0;
                loop {
                    if fed < tls_limit {
                        match tls.writer().write(&st.tls_out[fed..tls_limit]) {
                            Ok(n) => fed += n,
                            Err(_) => {
                                failed = true;
                                break;
                            }
                        }
                    }
                    if fed == st.tls_out.len() && st.phase == Phase::Closing && !st.close_notified {
                        tls.send_close_notify();
                        st.close_notified = true;
                    }
                    if !tls.wants_write() {
                        break;
                    }
                    match tls.write_tls(&mut st.sock) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                st.tls_out.drain(..fed);
                if st.tls_out.is_empty() && st.tls_out.capacity() > 4096 {
                    st.tls_out = Vec::new();
                }
                if let Some(h) = st.hold.as_mut() {
                    h.at -= fed;
                }
            }
            if st.phase == Phase::Closing && !blocked && !failed && st.hold.is_none() {
                let _ = st.sock.shutdown(Shutdown::Write);
            }
            (blocked, failed)
        };
        if failed {
            if let Some(c) = self.server().and_then(|s| s.connection(self.id)) {
                c.lost();
            } else {
                self.teardown();
            }
            return false;
        }
        self.set_write_watch(blocked);
        true
    }

    /// A write for this client was just queued outside the handling of its input (say, when
    /// a password check finished on another thread): acknowledgements wait for it.
    pub(crate) fn note_write(&self) {
        if let Some(server) = self.server.upgrade() {
            self.dirty_seq.set(server.store.filling_seq());
        }
    }

    /// During the handling of this client's input: if it queued a write so far, marks the
    /// batch it went into as the one acknowledgements wait for (an IQ result sent right after
    /// queueing its write waits for that write).
    fn note_writes_so_far(&self) {
        let Some(before) = self.writes_before.get() else {
            return;
        };
        if let Some(server) = self.server.upgrade()
            && server.store.queued_writes() != before
        {
            self.dirty_seq.set(server.store.filling_seq());
        }
    }

    /// The batch an acknowledgement to this client must wait for, if it is not committed yet.
    fn must_wait(&self) -> Option<u64> {
        let seq = self.dirty_seq.get();
        if seq == 0 {
            return None;
        }
        let server = self.server.upgrade()?;
        if server.store.committed_seq() >= seq {
            self.dirty_seq.set(0);
            return None;
        }
        Some(seq)
    }

    /// Holds output from the end of the active buffer until batch `seq` is committed.
    fn hold_from_here(&self, st: &mut State, seq: u64) {
        match st.hold.as_mut() {
            Some(h) => h.seq = h.seq.max(seq),
            None => {
                let at = if st.tls.is_some() {
                    st.tls_out.len()
                } else {
                    st.out.len()
                };
                st.hold = Some(Hold { seq, at });
                if let Some(server) = self.server.upgrade() {
                    server.note_held(self.id);
                }
            }
        }
    }

    /// Batch `committed` is on disk: releases the held output if it waited for no more.
    /// Returns whether output is still held.
    pub(crate) fn release_hold(&self, committed: u64) -> bool {
        {
            let mut st = self.state.borrow_mut();
            match st.hold {
                Some(h) if h.seq <= committed => st.hold = None,
                Some(_) => return true,
                None => return false,
            }
        }
        self.queue_flush();
        false
    }

    /// A resumed session's acknowledgements wait for what its old connection wrote.
    pub(crate) fn inherit_dirty(&self, old: &Connection) {
        self.dirty_seq
            .set(self.dirty_seq.get().max(old.dirty_seq.get()));
    }

    fn set_write_watch(&self, want: bool) {
        let mut st = self.state.borrow_mut();
        match (want, st.write_source.is_some()) {
            (true, false) => {
                let fd = st.sock.as_raw_fd();
                let server = self.server.clone();
                let id = self.id;
                st.write_source = Some(source::watch_fd(fd, IOCondition::OUT, move |_, _| {
                    if let Some(c) = server.upgrade().and_then(|s| s.connection(id)) {
                        c.state.borrow_mut().write_source = None;
                        // Through the flush queue, with the loop turn's other output (held
                        // acknowledgements stay held: see `release_hold`).
                        c.queue_flush();
                    }
                    ControlFlow::Break
                }));
            }
            (false, true) => {
                if let Some(s) = st.write_source.take() {
                    s.destroy();
                }
            }
            _ => {}
        }
    }

    // ---- closing --------------------------------------------------------------------------

    /// Closes the stream: with a stream error when `error` is given, else gracefully.
    /// Sends the header first if none was sent (RFC 6120 §4.9.1.1).
    pub fn close(self: &Rc<Self>, error: Option<(StreamError, Option<String>)>) {
        {
            let st = self.state.borrow();
            if !matches!(st.phase, Phase::AwaitHeader | Phase::Open) {
                return;
            }
        }
        self.send_header_once();
        // An overflowed stream gets its error and closing tag (if it ever reads again).
        self.state.borrow_mut().overflowed = false;
        if let Some((cond, text)) = &error {
            tracing::debug!(
                conn = self.id,
                "stream error {}: {}",
                cond.as_str(),
                text.as_deref().unwrap_or("")
            );
            self.send(&cond.element(text.as_deref()));
        }
        if let Some(seq) = self.must_wait() {
            self.hold_from_here(&mut self.state.borrow_mut(), seq);
        }
        self.send_raw(b"</stream:stream>");
        {
            let mut st = self.state.borrow_mut();
            st.phase = Phase::Closing;
            st.closing_since = Some(Instant::now());
            // TLS close_notify follows the closing tag: flush sends it once rustls has taken
            // every queued byte.
        }
        // The session ends now: unavailable presence goes out, nothing more is routed here;
        // what the client never acknowledged goes back to the mailbox.
        self.end_session_with_requeue();
        self.flush();
    }

    /// Releases everything: sources, registry entry, router session.
    pub(crate) fn teardown(&self) {
        {
            let mut st = self.state.borrow_mut();
            if st.phase == Phase::Closed {
                return;
            }
            st.phase = Phase::Closed;
            if let Some(s) = st.write_source.take() {
                s.destroy();
            }
            let _ = st.sock.shutdown(Shutdown::Both);
            st.inbuf = Vec::new();
            st.out = Vec::new();
            st.tls_out = Vec::new();
            st.tls = None;
            st.hold = None;
        }
        if let Some(s) = self.read_source.borrow_mut().take() {
            s.destroy();
        }
        if let Some(server) = self.server.upgrade() {
            if let Some(me) = server.connection(self.id) {
                me.end_session_with_requeue();
            } else {
                server.session_ended(self);
            }
            server.forget_connection(self.id);
        }
    }

    /// Called by the server's housekeeping timer.
    pub(crate) fn housekeeping(self: &Rc<Self>, now: Instant) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let limits = &server.config.limits;
        let bound = self.is_bound();
        let (phase, opened, last_read, closing_since, keepalive_sent) = {
            let st = self.state.borrow();
            (
                st.phase,
                st.opened,
                st.last_read,
                st.closing_since,
                st.keepalive_sent,
            )
        };
        match phase {
            Phase::Closing => {
                if closing_since.is_some_and(|t| now - t > CLOSE_GRACE) {
                    self.teardown();
                }
            }
            Phase::AwaitHeader | Phase::Open => {
                let silent = now - last_read;
                if !bound && now - opened > Duration::from_secs(limits.auth_timeout_secs) {
                    self.close(Some((
                        StreamError::ConnectionTimeout,
                        Some("authentication took too long".into()),
                    )));
                } else if silent > Duration::from_secs(limits.idle_timeout_secs) {
                    self.close(Some((StreamError::ConnectionTimeout, None)));
                } else if bound && silent > Duration::from_secs(limits.keepalive_secs) {
                    // XEP-0199 §4.1: ping a silent client; any input (the pong or anything else)
                    // clears `keepalive_sent`. No answer within min(keepalive, 60 s): dead peer.
                    // Sent directly rather than with `send_iq`: the answer needs no callback,
                    // any input at all proves the client alive.
                    let grace = Duration::from_secs(limits.keepalive_secs.clamp(1, 60));
                    if !keepalive_sent {
                        self.state.borrow_mut().keepalive_sent = true;
                        if let Some(jid) = self.jid() {
                            let ping = Element::stanza("iq")
                                .attr("type", "get")
                                .attr(
                                    "id",
                                    format!("ping-{}-{}", self.id, (now - opened).as_secs()),
                                )
                                .attr("from", jid.domain().as_str())
                                .attr("to", jid.to_string())
                                .child(Element::new("ping", crate::xml::ns::PING));
                            self.send(&ping);
                        }
                    } else if silent > Duration::from_secs(limits.keepalive_secs) + grace {
                        self.close(Some((
                            StreamError::ConnectionTimeout,
                            Some("no answer to ping".into()),
                        )));
                    }
                }
            }
            Phase::Closed | Phase::Hibernating => {}
        }
    }
}

/// Why input is paused (bits of `State::paused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Pause {
    /// The read rate limit is exhausted until its bucket refills.
    Rate = 1,
    /// The mailbox cannot be committed (disk full, I/O error): nothing more is taken in until
    /// it can, so nothing is acknowledged that is not on disk.
    Store = 2,
    /// A password check runs off the loop; the next stanza waits for its answer.
    Auth = 4,
    /// The store's writer is behind by more than a batch's worth: input waits for its commit,
    /// so queued writes stay bounded.
    Backlog = 8,
}

enum Input {
    Header(parse::StreamHeader),
    Element(Element),
    Close,
}

/// Output that tells the client the server has what it sent: an IQ answer, an XEP-0198
/// `<a/>` or `<resumed/>`, a SASL2 success (which may carry `<resumed/>`).
fn is_acknowledgement(el: &Element) -> bool {
    match el.name.as_str() {
        "iq" => matches!(el.get_attr("type"), Some("result" | "error")),
        "a" | "resumed" => el.ns == super::sm::NS,
        "success" => el.ns == crate::xml::ns::SASL2,
        _ => false,
    }
}

/// Maps a framing failure to the stream error RFC 6120 §4.9.3 names for it.
fn framer_error(e: FramerError) -> (StreamError, Option<String>) {
    (StreamError::for_framing(&e), Some(e.to_string()))
}

/// Maps a parsing failure to the stream error RFC 6120 §4.9.3 names for it.
fn parse_error(e: ParseError) -> (StreamError, Option<String>) {
    match e {
        ParseError::Restricted(what) => (
            StreamError::RestrictedXml,
            Some(format!("{what} not allowed")),
        ),
        ParseError::UnboundPrefix(p) => (
            StreamError::InvalidNamespace,
            Some(format!("undeclared prefix {p}")),
        ),
        ParseError::Limit(what) => (StreamError::PolicyViolation, Some(what.to_owned())),
        ParseError::NotWellFormed(msg) => (StreamError::NotWellFormed, Some(msg)),
    }
}
