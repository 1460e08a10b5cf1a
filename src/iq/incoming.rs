//! An IQ request handed to a rule: the responder that must be answered exactly once.

use std::rc::{Rc, Weak};

use jid::{FullJid, Jid};

use super::IqType;
use crate::core::stanza::{Condition, ErrorType, IqResult, StanzaError, error_element};
use crate::server::Server;
use crate::stream::Connection;
use crate::xml::Element;

/// Where the answer goes.
#[derive(Clone)]
pub enum ReplyTo {
    /// Straight down the stream the request came on (also before authentication).
    Stream(Weak<Connection>),
    /// Through the router to the requester's address (services, other users' requests).
    Route,
    /// Back over federation to a remote requester (a server's bare domain, or a full JID).
    Remote(jid::Jid),
    /// To an external component acting for the user under XEP-0356 (`component` is its
    /// domain): a roster request is answered to it directly; a `privileged_iq` (`wrap`: the
    /// outer IQ's id) gets the answer inside `<privilege><forwarded>` of an IQ with that id.
    Privileged {
        component: jid::Jid,
        wrap: Option<String>,
    },
}

/// XEP-0356 v2.
pub const NS_PRIVILEGE: &str = "urn:xmpp:privilege:2";

/// An IQ get/set awaiting its answer. Answer with [`Incoming::result`] or [`Incoming::error`];
/// dropping it unanswered sends `internal-server-error`, so a requester never waits forever.
pub struct Incoming {
    pub id: String,
    pub kind: IqType,
    /// The sender's full JID; `None` before authentication.
    pub from: Option<FullJid>,
    /// The `to` the sender wrote; `None` means "the server, on behalf of my account".
    pub to: Option<Jid>,
    pub lang: Option<String>,
    /// The single child of the request.
    pub payload: Element,
    server: Rc<Server>,
    reply_to: ReplyTo,
    answered: bool,
}

impl Incoming {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        server: Rc<Server>,
        reply_to: ReplyTo,
        id: String,
        kind: IqType,
        from: Option<FullJid>,
        to: Option<Jid>,
        lang: Option<String>,
        payload: Element,
    ) -> Incoming {
        Incoming {
            id,
            kind,
            from,
            to,
            lang,
            payload,
            server,
            reply_to,
            answered: false,
        }
    }

    pub fn server(&self) -> &Rc<Server> {
        &self.server
    }

    /// The stream the request came on, if it is still open.
    pub fn connection(&self) -> Option<Rc<Connection>> {
        match &self.reply_to {
            ReplyTo::Stream(w) => w.upgrade(),
            ReplyTo::Route | ReplyTo::Remote(_) | ReplyTo::Privileged { .. } => None,
        }
    }

    /// The request is a privileged component's, made for the user `from` (XEP-0356): what
    /// the user could do from a client, and what only a trusted gateway may (setting a
    /// roster item's subscription).
    pub fn privileged(&self) -> bool {
        matches!(self.reply_to, ReplyTo::Privileged { .. })
    }

    /// The account the request acts for: the sender's bare JID, when it is a local one (a
    /// remote requester acts for no account here).
    pub fn account(&self) -> Option<jid::BareJid> {
        // In a component process (`wockd component`) the host's users are the services'
        // users: the host authenticated them.
        let component = !self.server.config.component_link.is_empty();
        self.from
            .as_ref()
            .filter(|f| {
                self.server.config.is_hosted(f.domain().as_str())
                    || (component && f.node().is_some())
            })
            .map(|f| f.to_bare())
    }

    /// Answers `type='result'`, with an optional payload.
    pub fn result(mut self, payload: Option<Element>) {
        let mut iq = self.reply_head("result");
        if let Some(p) = payload {
            iq.push(p);
        }
        self.send(iq);
    }

    /// Answers `type='error'` with a defined condition and an optional human-readable text.
    pub fn error(mut self, kind: ErrorType, cond: Condition, text: &str) {
        let iq = self
            .reply_head("error")
            .child(error_element(kind, cond, Some(text)));
        self.send(iq);
    }

    /// Answers with a [`StanzaError`] (which may carry an application-specific condition).
    pub fn fail_with(mut self, error: StanzaError) {
        let iq = self.reply_head("error").child(error.element());
        self.send(iq);
    }

    /// Answers with what a handler returned: the result, or the error.
    pub fn answer(self, result: IqResult) {
        match result {
            Ok(payload) => self.result(payload),
            Err(e) => self.fail_with(e),
        }
    }

    /// Like [`Incoming::error`] with the condition's usual type.
    pub fn fail(self, cond: Condition, text: &str) {
        self.error(cond.default_type(), cond, text);
    }

    /// A request without `to` was addressed to the account on this stream: the answer carries
    /// neither `from` nor `to` (RFC 6120 §8.1.2.1), exactly as the seed's protocol example
    /// shows. Otherwise the addresses are swapped.
    fn reply_head(&self, kind: &str) -> Element {
        let mut iq = Element::stanza("iq")
            .attr("type", kind)
            .attr("id", self.id.as_str());
        if let Some(to) = &self.to {
            iq.set_attr("from", to.to_string());
            if let Some(from) = &self.from {
                iq.set_attr("to", from.to_string());
            }
        }
        iq
    }

    fn send(&mut self, iq: Element) {
        self.answered = true;
        match &self.reply_to {
            ReplyTo::Stream(w) => {
                if let Some(conn) = w.upgrade() {
                    conn.send(&iq);
                }
            }
            ReplyTo::Route => {
                if let Some(from) = &self.from {
                    // Through ServiceHost: a local session, or (a service attached to another
                    // server) over the component link.
                    use crate::router::ServiceHost;
                    self.server.to_session(from, &iq);
                }
            }
            ReplyTo::Remote(to) => {
                let mut iq = iq;
                iq.set_attr("to", to.to_string());
                self.server.route_local(iq);
            }
            ReplyTo::Privileged { component, wrap } => {
                let mut iq = iq;
                match wrap {
                    None => {
                        iq.set_attr("to", component.to_string());
                        self.server.route_local(iq);
                    }
                    Some(outer_id) => {
                        let user = self.from.as_ref().map(|f| f.to_bare().to_string());
                        let kind = iq.get_attr("type").unwrap_or("error").to_owned();
                        let mut outer = Element::stanza("iq")
                            .attr("type", kind)
                            .attr("id", outer_id.as_str())
                            .attr("to", component.to_string());
                        if let Some(user) = user {
                            iq.set_attr("to", user.as_str());
                            outer.set_attr("from", user);
                        }
                        // The component sees a failure on the outer IQ too.
                        if let Some(err) = iq.get_child("error", crate::xml::ns::CLIENT) {
                            outer.push(err.clone());
                        }
                        let outer =
                            outer.child(Element::new("privilege", NS_PRIVILEGE).child(
                                Element::new("forwarded", crate::xml::ns::FORWARD).child(iq),
                            ));
                        self.server.route_local(outer);
                    }
                }
            }
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.answered {
            tracing::warn!(id = %self.id, ns = %self.payload.ns, "IQ handler dropped its request unanswered");
            let iq = self.reply_head("error").child(error_element(
                ErrorType::Cancel,
                Condition::InternalServerError,
                Some("the request was dropped unanswered"),
            ));
            self.send(iq);
        }
    }
}
