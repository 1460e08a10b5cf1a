//! The one stanza-level test client: a [`Raw`] connection whose input is cut into top-level
//! stanzas by [`split_stanzas`] and queued; waits take the first queued (or arriving) stanza
//! that matches and leave the others for later.
//!
//! "Nothing arrived" is checked after a ping round trip ([`Client::barrier`]): the server
//! handles a stanza completely (including what it sends to other clients) before the next one
//! and writes each connection's output in order, so once the pong is read, everything the
//! server sent this client before it is queued.

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{DOMAIN, Raw, TestServer};

/// Takes the complete top-level elements off the front of `buf` and returns them in order.
/// Whitespace between them (keepalives) and stray end tags (`</stream:stream>`) are dropped;
/// an incomplete element stays in `buf`. The server escapes `<` and `>` in text and attribute
/// values, so tags can be found by their brackets.
pub fn split_stanzas(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut i, mut start, mut consumed) = (0i32, 0, 0, 0);
    while let Some(lt) = buf[i..].find('<').map(|p| p + i) {
        let Some(gt) = buf[lt..].find('>').map(|p| p + lt) else {
            break;
        };
        let tag = &buf[lt..=gt];
        if depth == 0 {
            start = lt;
        }
        if tag.starts_with("</") {
            depth -= 1;
        } else if !tag.ends_with("/>") && !tag.starts_with("<?") {
            depth += 1;
        }
        i = gt + 1;
        if depth <= 0 {
            if depth == 0 {
                out.push(buf[start..i].to_owned());
            }
            depth = 0;
            consumed = i;
        }
    }
    buf.drain(..consumed);
    out
}

/// Answers some stanzas by itself while the client reads (a client's side of a protocol the
/// test does not look at, e.g. XEP-0115 caps queries). `()` answers nothing.
pub trait Responder {
    /// The reply to send for `stanza` (which is then not queued), or None to queue it.
    fn respond(&mut self, stanza: &str) -> Option<String>;
}

impl Responder for () {
    fn respond(&mut self, _: &str) -> Option<String> {
        None
    }
}

/// A raw client that splits what it reads into top-level stanzas and keeps the ones not yet
/// asked for.
pub struct Client<R: Responder = ()> {
    pub raw: Raw,
    /// Stanzas read and not yet taken, oldest first.
    pub queue: Vec<String>,
    /// The full JID (or a label for an unauthenticated stream), for messages.
    pub jid: String,
    /// How long [`Client::wait`], [`Client::expect`] and the IQ calls wait.
    pub timeout: Duration,
    /// Answers stanzas as they arrive.
    pub auto: R,
    /// Counter for the ids of the IQs this client sends.
    n: u32,
}

impl Client {
    /// Logs in with SASL PLAIN (password `pw`) on the trusted listener and binds `resource`.
    pub fn login(srv: &TestServer, user: &str, resource: &str) -> Client {
        Client::login_at(srv.trusted, user, "pw", resource)
    }

    /// Logs in with SASL PLAIN on a trusted listener at `addr` and binds `resource`.
    pub fn login_at(addr: SocketAddr, user: &str, password: &str, resource: &str) -> Client {
        Client::over(
            Raw::login_plain(addr, user, password, resource),
            &format!("{user}@{DOMAIN}/{resource}"),
        )
    }

    /// Opens a stream on the trusted listener without logging in; returns the client (named
    /// `label` in messages) and the stream features.
    pub fn unauthenticated(srv: &TestServer, label: &str) -> (Client, String) {
        let (raw, features) = Raw::open(srv.trusted);
        (Client::over(raw, label), features)
    }

    /// A client over a connection whose stream is already open.
    pub fn over(raw: Raw, jid: &str) -> Client {
        Client {
            raw,
            queue: Vec::new(),
            jid: jid.to_owned(),
            timeout: Duration::from_secs(10),
            auto: (),
            n: 0,
        }
    }
}

impl<R: Responder> Client<R> {
    /// The same client, with `auto` answering stanzas from now on.
    pub fn answering<S: Responder>(self, auto: S) -> Client<S> {
        Client {
            raw: self.raw,
            queue: self.queue,
            jid: self.jid,
            timeout: self.timeout,
            auto,
            n: self.n,
        }
    }

    pub fn send(&mut self, s: &str) {
        self.raw.send(s);
    }

    /// Queues the complete stanzas in the read buffer (or answers them); returns how many.
    fn take_buffered(&mut self) -> usize {
        let stanzas = split_stanzas(&mut self.raw.buf);
        let n = stanzas.len();
        for stanza in stanzas {
            match self.auto.respond(&stanza) {
                Some(reply) => self.raw.send(&reply),
                None => self.queue.push(stanza),
            }
        }
        n
    }

    /// One read from the socket (it returns after at most its 100 ms read timeout).
    fn read_once(&mut self) {
        let mut chunk = [0u8; 65536];
        match self.raw.sock.read(&mut chunk) {
            Ok(0) => panic!(
                "{}: connection closed; queued {:#?}, unparsed {:?}",
                self.jid, self.queue, self.raw.buf
            ),
            Ok(n) => self.raw.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{}: read error: {e}", self.jid),
        }
    }

    /// One read: what arrived is queued (or answered). Returns how many stanzas were complete.
    pub fn pump(&mut self) -> usize {
        self.read_once();
        self.take_buffered()
    }

    /// Reads until at least one more complete stanza is queued (or answered); panics at
    /// `deadline`.
    pub fn read_more(&mut self, deadline: Instant) {
        while self.take_buffered() == 0 {
            assert!(
                Instant::now() < deadline,
                "{}: timed out; queued {:#?}, unparsed {:?}",
                self.jid,
                self.queue,
                self.raw.buf
            );
            self.read_once();
        }
    }

    /// Removes and returns the first queued stanza matching `pred`, without reading.
    pub fn try_take(&mut self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let i = self.queue.iter().position(|s| pred(s))?;
        Some(self.queue.remove(i))
    }

    /// Removes and returns the first stanza (queued or still to come) matching `pred`; panics
    /// after [`Client::timeout`].
    pub fn wait(&mut self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(s) = self.try_take(&pred) {
                return s;
            }
            self.read_more(deadline);
        }
    }

    /// Like [`Client::wait`] with its own timeout, and `what` in the failure message.
    pub fn wait_for(&mut self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.try_take(&pred) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}; queued {:#?}, unparsed {:?}",
                self.jid,
                self.queue,
                self.raw.buf
            );
            self.pump();
        }
    }

    /// Waits for a stanza containing every one of `parts`.
    pub fn expect(&mut self, parts: &[&str]) -> String {
        self.wait(|s| parts.iter().all(|p| s.contains(p)))
    }

    /// Everything matching `pred` that arrives within `d` (a bounded "nothing more" check,
    /// for what no round trip can order, e.g. events from another network).
    pub fn collect_for(&mut self, d: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        loop {
            while let Some(s) = self.try_take(&pred) {
                out.push(s);
            }
            if Instant::now() >= deadline {
                return out;
            }
            self.pump();
        }
    }

    /// A fresh IQ id with `prefix`.
    pub fn next_id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }

    /// Sends `<iq id='…' {attrs}>{payload}</iq>` and returns the id.
    pub fn send_iq(&mut self, attrs: &str, payload: &str) -> String {
        let id = self.next_id("q");
        self.send(&format!("<iq id='{id}' {attrs}>{payload}</iq>"));
        id
    }

    /// The answer to the IQ `id` (an `<iq>` with that id), within `secs`.
    pub fn answer(&mut self, id: &str, secs: u64) -> String {
        let needle = format!("id=\"{id}\"");
        self.wait_for(&format!("the answer to {id}"), secs, |s| {
            s.starts_with("<iq") && s.contains(&needle)
        })
    }

    /// Sends an IQ of type `kind` (to the account itself, or `to`) with `body` as its payload;
    /// returns the answer.
    pub fn iq(&mut self, kind: &str, to: Option<&str>, body: &str) -> String {
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        let id = self.send_iq(&format!("type='{kind}'{to}"), body);
        self.answer(&id, self.timeout.as_secs())
    }

    /// Sends a whole `<iq …>` stanza without an id, giving it one; returns the answer.
    pub fn iq_stanza(&mut self, iq: &str) -> String {
        let id = self.next_id("q");
        self.iq_id(&id, &iq.replacen("<iq ", &format!("<iq id='{id}' "), 1))
    }

    /// Sends a whole `<iq id='{id}' …>` stanza; returns the answer.
    pub fn iq_id(&mut self, id: &str, iq: &str) -> String {
        self.send(iq);
        self.answer(id, self.timeout.as_secs())
    }

    /// A ping round trip: afterwards everything the server sent before its answer is queued.
    pub fn barrier(&mut self) {
        let id = self.next_id("barrier-");
        let pong = self.iq_id(
            &id,
            &format!("<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"),
        );
        assert!(pong.contains("type=\"result\""), "{}: {pong}", self.jid);
    }

    /// Forgets everything the server sent before a ping round trip (what follows belongs to
    /// the next step).
    pub fn clear(&mut self) {
        self.barrier();
        self.queue.clear();
    }

    /// Asserts that no stanza matching `pred` has arrived, after a barrier.
    pub fn assert_none(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        self.barrier();
        assert!(
            !self.queue.iter().any(|s| pred(s)),
            "{}: unexpected {what}: {:#?}",
            self.jid,
            self.queue
        );
    }

    /// Everything still to come until the server closes the connection, queued stanzas first.
    pub fn rest_until_closed(&mut self) -> String {
        let mut all = self.queue.concat();
        self.queue.clear();
        all.push_str(&self.raw.until_closed());
        all
    }

    pub fn presence_to(&mut self, to: &str, kind: &str) {
        self.send(&format!("<presence to='{to}' type='{kind}'/>"));
    }
}
