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

use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::time::Duration;

use rand::Rng;

use super::Connection;
use super::connection::Phase;
use crate::core::stanza::StreamError;
use crate::xml::{Element, ns};

pub const NS: &str = ns::SM;
/// Longest resumption window a client may ask for, in seconds.
const MAX_RESUME_SECS: u32 = 300;
/// Unacknowledged stanzas kept per session before the session gives up on resumption.
const MAX_QUEUE: usize = 5000;

/// Per-connection stream-management state.
pub(crate) struct SmState {
    /// Resumption id; `None` when the client did not ask for resumption.
    pub(crate) id: Option<String>,
    pub(crate) max_secs: u32,
    /// Stanzas received from the client.
    pub(crate) h_in: u32,
    /// Stanzas sent to the client (acknowledged or not).
    pub(crate) h_out: u32,
    /// The last `h` the client acknowledged; `queue` holds stanzas `acked+1 ..= h_out`.
    pub(crate) acked: u32,
    /// Each with its serialised size.
    pub(crate) queue: VecDeque<(Element, usize)>,
    /// Sum of the sizes in `queue`.
    pub(crate) queue_bytes: usize,
    pub(crate) r_outstanding: bool,
}

impl SmState {
    /// Drops the `n` oldest (now acknowledged) stanzas; `n` is at most the queue's length.
    fn drop_acked(&mut self, n: usize) {
        for (_, len) in self.queue.drain(..n) {
            self.queue_bytes -= len;
        }
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
        let bound = self.state.borrow().jid.is_some();
        let authenticated = self.state.borrow().authenticated.is_some();
        match el.name.as_str() {
            "enable" => {
                if !bound || self.state.borrow().sm.is_some() {
                    return self.send(&failed("unexpected-request", None));
                }
                let enabled = self.enable(&el);
                // `enabled` itself is not counted: counting starts after it.
                self.send(&enabled);
            }
            "r" => {
                let h = self.state.borrow().sm.as_ref().map(|s| s.h_in);
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
                if let Err(sent) = self.acknowledge(h) {
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
        self.state.borrow_mut().sm = Some(Box::new(SmState {
            id,
            max_secs,
            h_in: 0,
            h_out: 0,
            acked: 0,
            queue: VecDeque::new(),
            queue_bytes: 0,
            r_outstanding: false,
        }));
        enabled
    }

    /// Bind 2's inline `<enable/>` (always resumable).
    pub(crate) fn enable_sm_inline(self: &Rc<Self>) -> Element {
        self.enable(&Element::new("enable", NS).attr("resume", "true"))
    }

    /// Drops acknowledged stanzas. `Err(sent)` when `h` acknowledges more than was sent.
    fn acknowledge(&self, h: u32) -> Result<(), u32> {
        let mut st = self.state.borrow_mut();
        let Some(sm) = st.sm.as_mut() else {
            return Ok(());
        };
        let n = h.wrapping_sub(sm.acked) as usize;
        if n > sm.queue.len() {
            return Err(sm.h_out);
        }
        sm.drop_acked(n);
        sm.acked = h;
        sm.r_outstanding = false;
        Ok(())
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
        let account = self.state.borrow().authenticated.clone();
        let Some(old) = old.filter(|o| {
            let st = o.state.borrow();
            st.jid.as_ref().map(|j| j.to_bare()) == account && st.sm.is_some()
        }) else {
            return Err(failed("item-not-found", None));
        };
        let Some(h) = h else {
            return Err(failed("bad-request", None));
        };
        // Take the old session's state; the old connection (dead or not) goes away quietly.
        let (jid, mut sm, held) = {
            let mut st = old.state.borrow_mut();
            (st.jid.take(), st.sm.take(), st.csi.take_held())
        };
        let (Some(jid), Some(mut sm_state)) = (jid, sm.take()) else {
            return Err(failed("item-not-found", None));
        };
        let n = h.wrapping_sub(sm_state.acked) as usize;
        if n > sm_state.queue.len() {
            return Err(failed("unexpected-request", Some(sm_state.h_out)));
        }
        sm_state.drop_acked(n);
        sm_state.acked = h;
        sm_state.r_outstanding = false;
        old.close_quietly();
        server.forget_connection(old.id);

        // Unacknowledged stanzas, then what client state indication held back on the old
        // connection (the new stream starts active, XEP-0352 §5).
        sm_state.queue_bytes = 0;
        let replay: Vec<Element> = sm_state
            .queue
            .drain(..)
            .map(|(el, _)| el)
            .chain(held)
            .collect();
        // Replayed stanzas are counted again as they go out.
        sm_state.h_out = sm_state.acked;
        let resumed = Element::new("resumed", NS)
            .attr("previd", previd)
            .attr("h", sm_state.h_in.to_string());
        if let Some(id) = &sm_state.id {
            server
                .ext::<Registry>()
                .by_id
                .borrow_mut()
                .insert(id.clone(), Rc::downgrade(self));
        }
        {
            let mut st = self.state.borrow_mut();
            st.jid = Some(jid.clone());
            st.sm = Some(sm_state);
        }
        server.sessions.borrow_mut().rebind(&jid, self);
        tracing::info!(%jid, replayed = replay.len(), "session resumed");
        Ok((resumed, replay))
    }

    /// Called when the connection dies abruptly. Returns true if the session hibernates
    /// (resumption enabled) instead of ending.
    pub(crate) fn try_hibernate(self: &Rc<Self>) -> bool {
        let max = {
            let st = self.state.borrow();
            match (&st.sm, &st.jid) {
                (Some(sm), Some(_)) if sm.id.is_some() => sm.max_secs,
                _ => return false,
            }
        };
        let Some(server) = self.server() else {
            return false;
        };
        tracing::info!(
            conn = self.id,
            "connection lost; session kept for resumption for {max} s"
        );
        self.state.borrow_mut().phase = Phase::Hibernating;
        let weak = Rc::downgrade(self);
        server.after(Duration::from_secs(u64::from(max)), move || {
            if let Some(c) = weak.upgrade()
                && c.state.borrow().phase == Phase::Hibernating
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
        let mut st = self.state.borrow_mut();
        let Some(sm) = st.sm.as_mut() else {
            return true;
        };
        sm.h_out = sm.h_out.wrapping_add(1);
        sm.queue.push_back((el.clone(), len));
        sm.queue_bytes += len;
        sm.queue.len() <= MAX_QUEUE && sm.queue_bytes <= budget
    }

    /// Counts a stanza received from the client.
    pub(crate) fn sm_count_in(&self) {
        if let Some(sm) = self.state.borrow_mut().sm.as_mut() {
            sm.h_in = sm.h_in.wrapping_add(1);
        }
    }

    /// An `<r/>` to append to this flush, if anything is unacknowledged and none is out.
    pub(crate) fn sm_request(&self) -> bool {
        let mut st = self.state.borrow_mut();
        match st.sm.as_mut() {
            Some(sm) if !sm.queue.is_empty() && !sm.r_outstanding => {
                sm.r_outstanding = true;
                true
            }
            _ => false,
        }
    }

    /// Ends the session for good, handing unacknowledged messages back to the mailbox.
    pub(crate) fn end_session_with_requeue(self: &Rc<Self>) {
        let Some(server) = self.server() else { return };
        let (jid, unacked) = {
            let mut st = self.state.borrow_mut();
            let unacked: Vec<Element> = st
                .sm
                .as_mut()
                .map(|sm| {
                    sm.queue_bytes = 0;
                    sm.queue
                        .drain(..)
                        .map(|(el, _)| el)
                        .filter(|e| e.name == "message")
                        .collect()
                })
                .unwrap_or_default();
            if let Some(id) = st.sm.as_ref().and_then(|s| s.id.clone()) {
                server.ext::<Registry>().by_id.borrow_mut().remove(&id);
            }
            (st.jid.clone(), unacked)
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
