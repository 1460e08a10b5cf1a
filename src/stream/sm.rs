//! XEP-0198 Stream Management (urn:xmpp:sm:3): acks both ways, and resumption of a session
//! whose TCP connection died.
//!
//! - Every stanza sent to the client is kept until the client acknowledges it; the server asks
//!   with `<r/>` once per output flush while anything is unacknowledged.
//! - `<a h/>` from the server is queued like any output, so it is written only after the
//!   mailbox commit of the same loop turn: a message we acknowledge is already durable.
//! - When a connection with resumption enabled dies without `</stream:stream>`, its connection
//!   object *hibernates*: the socket is gone, the session stays bound, and stanzas routed to it
//!   are queued. `<resume/>` on a new stream (after SASL) takes the queue over and replays what
//!   the client had not acknowledged; nothing is sent twice. If nobody resumes within the
//!   timeout, the session ends and its unacknowledged messages go back to the mailbox, so the
//!   next login or another device gets them exactly once.
//!
//! State owned here (`SmState`, the connection's `sm` cell): the resumption id and window,
//! the counters both ways, and the queue of unacknowledged stanzas with its size in bytes.
//! The output path goes through `Connection::sm_enabled`, `Connection::sm_track` and
//! `Connection::sm_request`, the input path through `Connection::sm_count_in`; the logic
//! itself is on `SmState`. The resumable sessions by id are server-wide (`Registry`).

use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rand::Rng;

use super::Connection;
use crate::core::stanza::StreamError;
use crate::xml::{Element, ns};

pub const NS: &str = ns::SM;
/// Longest resumption window a client may ask for, in seconds.
const MAX_RESUME_SECS: u32 = 300;
/// Unacknowledged stanzas kept per session before the session gives up on resumption.
const MAX_QUEUE: usize = 5000;

/// Per-connection stream management: nothing until the client enables it (boxed so idle
/// connections stay small).
#[derive(Default)]
pub(crate) struct SmState(Option<Box<Enabled>>);

/// The counters and the unacknowledged queue of an enabled session.
struct Enabled {
    /// Resumption id; `None` when the client did not ask for resumption.
    id: Option<String>,
    max_secs: u32,
    /// Stanzas received from the client.
    h_in: u32,
    /// Stanzas sent to the client (acknowledged or not).
    h_out: u32,
    /// The last `h` the client acknowledged; `queue` holds stanzas `acked+1 ..= h_out`.
    acked: u32,
    /// Each with its serialised size.
    queue: VecDeque<(Element, usize)>,
    /// Sum of the sizes in `queue`.
    queue_bytes: usize,
    r_outstanding: bool,
}

impl Enabled {
    /// Drops the `n` oldest (now acknowledged) stanzas; `n` is at most the queue's length.
    fn drop_acked(&mut self, n: usize) {
        for (_, len) in self.queue.drain(..n) {
            self.queue_bytes -= len;
        }
    }

    /// The client acknowledged `h` stanzas in all. `Err(sent)` when that is more than were sent.
    fn acknowledge(&mut self, h: u32) -> Result<(), u32> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.queue.len() {
            return Err(self.h_out);
        }
        self.drop_acked(n);
        self.acked = h;
        self.r_outstanding = false;
        Ok(())
    }
}

impl SmState {
    fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    fn enable(&mut self, id: Option<String>, max_secs: u32) {
        self.0 = Some(Box::new(Enabled {
            id,
            max_secs,
            h_in: 0,
            h_out: 0,
            acked: 0,
            queue: VecDeque::new(),
            queue_bytes: 0,
            r_outstanding: false,
        }));
    }

    /// Stanzas received from the client, when enabled.
    fn h_in(&self) -> Option<u32> {
        self.0.as_ref().map(|sm| sm.h_in)
    }

    /// The resumption id, when the client asked for resumption.
    fn id(&self) -> Option<&str> {
        self.0.as_ref().and_then(|sm| sm.id.as_deref())
    }

    /// How long a lost connection waits for `<resume/>`, when the client asked for resumption.
    fn resumable_for(&self) -> Option<u32> {
        self.0
            .as_ref()
            .and_then(|sm| sm.id.is_some().then_some(sm.max_secs))
    }

    /// Drops acknowledged stanzas (nothing when not enabled). `Err(sent)` when `h`
    /// acknowledges more than was sent.
    fn acknowledge(&mut self, h: u32) -> Result<(), u32> {
        match self.0.as_mut() {
            Some(sm) => sm.acknowledge(h),
            None => Ok(()),
        }
    }

    /// Keeps a sent stanza until it is acknowledged. False when the queue is over its bounds
    /// (`MAX_QUEUE` stanzas, `budget` bytes).
    fn track(&mut self, el: &Element, len: usize, budget: usize) -> bool {
        let Some(sm) = self.0.as_mut() else {
            return true;
        };
        sm.h_out = sm.h_out.wrapping_add(1);
        sm.queue.push_back((el.clone(), len));
        sm.queue_bytes += len;
        sm.queue.len() <= MAX_QUEUE && sm.queue_bytes <= budget
    }

    fn count_in(&mut self) {
        if let Some(sm) = self.0.as_mut() {
            sm.h_in = sm.h_in.wrapping_add(1);
        }
    }

    /// Whether to ask for an ack: something is unacknowledged and no `<r/>` is out.
    fn request(&mut self) -> bool {
        match self.0.as_mut() {
            Some(sm) if !sm.queue.is_empty() && !sm.r_outstanding => {
                sm.r_outstanding = true;
                true
            }
            _ => false,
        }
    }

    /// Empties the queue; returns the messages in it (what must go back to the mailbox).
    fn drain_unacked_messages(&mut self) -> Vec<Element> {
        let Some(sm) = self.0.as_mut() else {
            return Vec::new();
        };
        sm.queue_bytes = 0;
        sm.queue
            .drain(..)
            .map(|(el, _)| el)
            .filter(|e| e.name == "message")
            .collect()
    }

    /// Resumption on a new stream after the client saw `h` stanzas: drops what it saw and
    /// returns what it did not, to be sent (and counted) again. `Err(sent)` when `h` is more
    /// than was sent.
    fn resume(&mut self, h: u32) -> Result<Vec<Element>, u32> {
        let Some(sm) = self.0.as_mut() else {
            return Ok(Vec::new());
        };
        sm.acknowledge(h)?;
        sm.queue_bytes = 0;
        let replay = sm.queue.drain(..).map(|(el, _)| el).collect();
        // Replayed stanzas are counted again as they go out.
        sm.h_out = sm.acked;
        Ok(replay)
    }
}

/// Resumable sessions by id (module state on the server).
#[derive(Default)]
pub struct Registry {
    by_id: std::cell::RefCell<HashMap<String, Weak<Connection>>>,
}

pub(crate) fn is_stanza(el: &Element) -> bool {
    el.ns == ns::CLIENT && matches!(el.name.as_str(), "message" | "presence" | "iq")
}

fn failed(condition: &str, h: Option<u32>) -> Element {
    let mut f = Element::new("failed", NS).child(Element::new(condition, ns::STANZA_ERRORS));
    if let Some(h) = h {
        f.set_attr("h", h.to_string());
    }
    f
}

impl Connection {
    /// Handles an element of the SM namespace.
    pub(crate) fn on_sm(self: &Rc<Self>, el: Element) {
        let bound = self.is_bound();
        let authenticated = self.is_authenticated();
        match el.name.as_str() {
            "enable" => {
                if !bound || self.sm_enabled() {
                    return self.send(&failed("unexpected-request", None));
                }
                let enabled = self.enable(&el);
                // `enabled` itself is not counted: counting starts after it.
                self.send(&enabled);
            }
            "r" => {
                let h = self.sm.borrow().h_in();
                match h {
                    Some(h) => self.send(&Element::new("a", NS).attr("h", h.to_string())),
                    None => self.close(Some((
                        StreamError::UnsupportedStanzaType,
                        Some("stream management is not enabled".into()),
                    ))),
                }
            }
            "a" => {
                let Some(h) = el.get_attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return self.close(Some((
                        StreamError::BadFormat,
                        Some("<a/> needs a numeric h".into()),
                    )));
                };
                let acked = self.sm.borrow_mut().acknowledge(h);
                if let Err(sent) = acked {
                    let mut err = StreamError::UndefinedCondition
                        .element(Some("acknowledged more stanzas than were sent"));
                    err.push(
                        Element::new("handled-count-too-high", NS)
                            .attr("h", h.to_string())
                            .attr("send-count", sent.to_string()),
                    );
                    self.send(&err);
                    self.close(None);
                }
            }
            "resume" if authenticated && !bound => self.resume(&el),
            "resume" => self.send(&failed("unexpected-request", None)),
            _ => self.close(Some((StreamError::UnsupportedStanzaType, None))),
        }
    }

    /// Stream management is enabled: sent stanzas are tracked, received ones counted.
    pub(super) fn sm_enabled(&self) -> bool {
        self.sm.borrow().is_enabled()
    }

    /// Enables stream management as `<enable/>` asks; returns the `<enabled/>` answer.
    pub(crate) fn enable(self: &Rc<Self>, el: &Element) -> Element {
        let resume = matches!(el.get_attr("resume"), Some("true" | "1"));
        let max_secs = el
            .get_attr("max")
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(MAX_RESUME_SECS)
            .clamp(1, MAX_RESUME_SECS);
        let mut enabled = Element::new("enabled", NS);
        let id = resume.then(|| {
            let n: u128 = rand::thread_rng().r#gen();
            format!("{n:032x}")
        });
        if let Some(id) = &id {
            enabled.set_attr("id", id.as_str());
            enabled.set_attr("resume", "true");
            enabled.set_attr("max", max_secs.to_string());
            if let Some(server) = self.server() {
                server
                    .ext::<Registry>()
                    .by_id
                    .borrow_mut()
                    .insert(id.clone(), Rc::downgrade(self));
            }
        }
        self.sm.borrow_mut().enable(id, max_secs);
        enabled
    }

    /// Bind 2's inline `<enable/>` (always resumable).
    pub(crate) fn enable_sm_inline(self: &Rc<Self>) -> Element {
        self.enable(&Element::new("enable", NS).attr("resume", "true"))
    }

    /// `<resume previd h/>`: takes over a hibernating (or still attached) session of the same
    /// account and replays what the client has not seen.
    fn resume(self: &Rc<Self>, el: &Element) {
        match self.resume_inline(el) {
            Ok((resumed, replay)) => {
                self.send(&resumed);
                for el in &replay {
                    self.send(el);
                }
            }
            Err(failed) => self.send(&failed),
        }
    }

    /// Takes over the session `<resume/>` names. `Ok((resumed, stanzas to replay))`, or the
    /// `<failed/>` answer. Shared by XEP-0198 and its SASL2 inline form.
    pub(crate) fn resume_inline(
        self: &Rc<Self>,
        el: &Element,
    ) -> Result<(Element, Vec<Element>), Element> {
        let Some(server) = self.server() else {
            return Err(failed("internal-server-error", None));
        };
        let previd = el.get_attr("previd").unwrap_or("");
        let h = el.get_attr("h").and_then(|h| h.parse::<u32>().ok());
        let old = server
            .ext::<Registry>()
            .by_id
            .borrow()
            .get(previd)
            .and_then(Weak::upgrade);
        let account = self.authenticated();
        let Some(old) = old.filter(|o| o.jid().map(|j| j.to_bare()) == account && o.sm_enabled())
        else {
            return Err(failed("item-not-found", None));
        };
        let Some(h) = h else {
            return Err(failed("bad-request", None));
        };
        // Take the old session's state; the old connection (dead or not) goes away quietly.
        let jid = old.take_jid();
        let mut sm = std::mem::take(&mut *old.sm.borrow_mut());
        let held = old.csi_take_held();
        let Some(jid) = jid.filter(|_| sm.is_enabled()) else {
            return Err(failed("item-not-found", None));
        };
        let mut replay = match sm.resume(h) {
            Ok(replay) => replay,
            Err(sent) => return Err(failed("unexpected-request", Some(sent))),
        };
        self.inherit_dirty(&old);
        old.close_quietly();
        server.forget_connection(old.id);

        // Unacknowledged stanzas, then what client state indication held back on the old
        // connection (the new stream starts active, XEP-0352 §5).
        replay.extend(held);
        let resumed = Element::new("resumed", NS)
            .attr("previd", previd)
            .attr("h", sm.h_in().unwrap_or(0).to_string());
        if let Some(id) = sm.id() {
            server
                .ext::<Registry>()
                .by_id
                .borrow_mut()
                .insert(id.to_owned(), Rc::downgrade(self));
        }
        self.set_jid(jid.clone());
        *self.sm.borrow_mut() = sm;
        server.sessions.borrow_mut().rebind(&jid, self);
        tracing::info!(%jid, replayed = replay.len(), "session resumed");
        Ok((resumed, replay))
    }

    /// Called when the connection dies abruptly. Returns true if the session hibernates
    /// (resumption enabled) instead of ending.
    pub(crate) fn try_hibernate(self: &Rc<Self>) -> bool {
        let resumable_for = self.sm.borrow().resumable_for();
        let max = match resumable_for {
            Some(max) if self.is_bound() => max,
            _ => return false,
        };
        let Some(server) = self.server() else {
            return false;
        };
        tracing::info!(
            conn = self.id,
            "connection lost; session kept for resumption for {max} s"
        );
        self.set_hibernating();
        let weak = Rc::downgrade(self);
        server.after(Duration::from_secs(u64::from(max)), move || {
            if let Some(c) = weak.upgrade()
                && c.is_hibernating()
            {
                tracing::info!(conn = c.id, "resumption window over");
                c.end_session_with_requeue();
                c.teardown();
            }
        });
        true
    }

    /// Queues a sent stanza for acknowledgement. Returns false when the queue overflowed.
    /// `len` is the stanza's serialised size: the queue is bounded in bytes as well as in count
    /// (`[limits] max_unacked_bytes`), also while the session hibernates.
    pub(crate) fn sm_track(&self, el: &Element, len: usize) -> bool {
        let budget = self
            .server()
            .map_or(usize::MAX, |s| s.config.limits.max_unacked_bytes);
        self.sm.borrow_mut().track(el, len, budget)
    }

    /// Counts a stanza received from the client.
    pub(crate) fn sm_count_in(&self) {
        self.sm.borrow_mut().count_in();
    }

    /// An `<r/>` to append to this flush, if anything is unacknowledged and none is out.
    pub(crate) fn sm_request(&self) -> bool {
        self.sm.borrow_mut().request()
    }

    /// Ends the session for good, handing unacknowledged messages back to the mailbox.
    pub(crate) fn end_session_with_requeue(self: &Rc<Self>) {
        let Some(server) = self.server() else { return };
        let (jid, unacked) = {
            let mut sm = self.sm.borrow_mut();
            let unacked = sm.drain_unacked_messages();
            if let Some(id) = sm.id() {
                server.ext::<Registry>().by_id.borrow_mut().remove(id);
            }
            (self.jid(), unacked)
        };
        server.session_ended(self);
        if let Some(jid) = jid
            && !unacked.is_empty()
        {
            tracing::info!(%jid, n = unacked.len(), "unacknowledged messages go back to the mailbox");
            let bare = jid.to_bare();
            for el in unacked {
                crate::router::deliver_to_account(&server, &bare, el);
            }
        }
    }
}

impl Registry {
    pub fn len(&self) -> usize {
        self.by_id.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> Element {
        Element::stanza("message").attr("id", n.to_string())
    }

    #[test]
    fn acks_drop_what_the_client_saw() {
        let mut sm = SmState::default();
        // Not enabled: nothing is kept, nothing is asked for, any ack is ignored.
        assert!(sm.track(&msg(0), 10, usize::MAX));
        assert!(!sm.request());
        assert_eq!(sm.acknowledge(9), Ok(()));
        assert_eq!(sm.h_in(), None);

        sm.enable(None, 60);
        for n in 1..=3 {
            assert!(sm.track(&msg(n), 10, usize::MAX));
        }
        assert!(sm.request());
        assert!(!sm.request(), "one <r/> out at a time");
        assert_eq!(sm.acknowledge(2), Ok(()));
        assert!(sm.request(), "an ack lets the next <r/> go");
        assert_eq!(sm.acknowledge(5), Err(3), "more than was sent");
        let unacked = sm.drain_unacked_messages();
        assert_eq!(unacked, vec![msg(3)]);
        assert_eq!(sm.resumable_for(), None, "no resumption asked for");
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let mut sm = SmState::default();
        sm.enable(None, 60);
        assert!(sm.track(&msg(1), 60, 100));
        assert!(!sm.track(&msg(2), 60, 100));
        assert_eq!(sm.acknowledge(2), Ok(()));
        assert!(
            sm.track(&msg(3), 90, 100),
            "acknowledged bytes no longer count"
        );
    }

    #[test]
    fn resumption_replays_the_unseen_and_counts_them_again() {
        let mut sm = SmState::default();
        sm.enable(Some("abc".into()), 120);
        sm.count_in();
        sm.count_in();
        for n in 1..=4 {
            sm.track(&msg(n), 10, usize::MAX);
        }
        assert_eq!(sm.resume(7), Err(4));
        let replay = sm.resume(1).unwrap();
        assert_eq!(replay, vec![msg(2), msg(3), msg(4)]);
        assert_eq!(sm.h_in(), Some(2));
        assert_eq!(sm.id(), Some("abc"));
        assert_eq!(sm.resumable_for(), Some(120));
        // Sent again on the new stream, they are counted again: h stays continuous.
        for el in &replay {
            sm.track(el, 10, usize::MAX);
        }
        assert_eq!(sm.acknowledge(4), Ok(()));
        assert!(sm.drain_unacked_messages().is_empty());
    }
}
