//! XEP-0352 Client State Indication: while a client says it is inactive (a phone in a pocket),
//! unimportant stanzas — presence updates, chat states — are held back and coalesced (one
//! presence per sender: only the latest matters); anything important (a message with content,
//! an IQ) goes out at once, after what was held, so order is kept.

use super::Connection;
use crate::xml::{Element, ns};

pub const NS: &str = "urn:xmpp:csi:0";
/// Held stanzas before the queue is flushed anyway (memory bound, like Prosody's 256).
const MAX_HELD: usize = 256;

const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// Messages that only carry a chat state (or nothing at all) can wait; everything else a
/// person would want to see now — a body, an encrypted payload, a receipt, a call — cannot.
fn important(el: &Element) -> bool {
    match el.name.as_str() {
        "presence" => {
            // Subscription requests and errors are about the user, not about contacts' status.
            matches!(
                el.get_attr("type"),
                Some("subscribe" | "unsubscribe" | "subscribed" | "unsubscribed" | "error")
            )
        }
        "message" => el.elements().any(|c| c.ns != CHATSTATES),
        _ => true,
    }
}

#[derive(Default)]
pub(crate) struct CsiState {
    pub(crate) inactive: bool,
    held: Vec<Element>,
}

impl Connection {
    pub(crate) fn on_csi(&self, el: &Element) {
        match el.name.as_str() {
            "inactive" => self.state.borrow_mut().csi.inactive = true,
            "active" => {
                self.state.borrow_mut().csi.inactive = false;
                self.release_held();
            }
            _ => {}
        }
    }

    /// Called by `send` for stanzas while the client is inactive. Returns true if `el` was
    /// held back.
    pub(crate) fn csi_hold(&self, el: &Element) -> bool {
        if el.ns != ns::CLIENT || important(el) {
            self.release_held();
            return false;
        }
        let overflow = {
            let mut st = self.state.borrow_mut();
            let held = &mut st.csi.held;
            if el.name == "presence" {
                let from = el.get_attr("from");
                held.retain(|h| !(h.name == "presence" && h.get_attr("from") == from));
            }
            held.push(el.clone());
            held.len() >= MAX_HELD
        };
        if overflow {
            self.release_held();
        }
        true
    }

    fn release_held(&self) {
        let held = std::mem::take(&mut self.state.borrow_mut().csi.held);
        if held.is_empty() {
            return;
        }
        // Sent with the hold bypassed (the state is flipped for the duration).
        let was = std::mem::replace(&mut self.state.borrow_mut().csi.inactive, false);
        for el in &held {
            self.send(el);
        }
        self.state.borrow_mut().csi.inactive = was;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importance() {
        let p = Element::stanza("presence");
        assert!(!important(&p));
        assert!(important(
            &Element::stanza("presence").attr("type", "subscribe")
        ));
        let typing = Element::stanza("message").child(Element::new("composing", CHATSTATES));
        assert!(!important(&typing));
        let body = Element::stanza("message").child(Element::new("body", ns::CLIENT).text("hi"));
        assert!(important(&body));
        assert!(important(&Element::stanza("iq")));
    }
}
