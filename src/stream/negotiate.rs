//! Stream negotiation (RFC 6120 §4–§7): header checks, features, STARTTLS, SASL hand-off,
//! resource binding, and the gate that keeps stanzas out until the stream is authenticated.
//!
//! State owned here ([`Negotiation`], the connection's `negotiation` cell): whether our header
//! went out, the client's version, how many headers arrived, the domain served, and the
//! session's identity — the authenticated account and the bound full JID. The other layers
//! read and change the identity only through the methods below (`jid`, `is_bound`,
//! `is_authenticated`, `set_authenticated`, `bind_resource`, `take_jid`, `set_jid`).

use std::rc::Rc;

use jid::{BareJid, FullJid};
use rand::Rng;

use super::Connection;
use crate::core::stanza::{Condition, StreamError, error_reply, request_parts};
use crate::iq::{Incoming, ReplyTo};
use crate::xml::parse::StreamHeader;
use crate::xml::{Element, ns};

/// Logs inbound XML with credentials redacted (SASL payloads, iq-auth passwords).
pub(crate) fn log_in(conn: u64, bytes: &[u8]) {
    tracing::info!(conn, "<< {}", redact(bytes));
}

pub(crate) fn log_out(conn: u64, bytes: &[u8]) {
    tracing::info!(conn, ">> {}", redact(bytes));
}

fn redact(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if carries_secret(&s) {
        let head = s.split('>').next().unwrap_or("");
        return format!("{head}>[redacted]");
    }
    s.into_owned()
}

/// Whether a logged element may hold a password, a SASL payload or a token: SASL and SASL2
/// exchanges (FAST tokens travel in them), iq-auth and in-band registration passwords, and
/// data forms with a password or private field (legacy-network registration, prompts).
/// Deliberately broad: a redacted harmless stanza costs less than a logged password.
fn carries_secret(s: &str) -> bool {
    const SECRET_NS: [&str; 3] = [ns::SASL, super::sasl2::NS, super::sasl2::FAST];
    SECRET_NS.iter().any(|n| s.contains(n))
        || s.contains("<password")
        || s.contains("text-private")
        || s.contains("var=\"password\"")
        || s.contains("var='password'")
}

/// What negotiation established on one connection.
pub(crate) struct Negotiation {
    /// Our header for the current stream went out.
    header_sent: bool,
    /// The client announced version 1.0 (else it is a pre-RFC 3920 client: no SASL features).
    version1: bool,
    /// Stream headers received so far (restarts after STARTTLS and SASL count).
    headers: u8,
    /// The hosted domain this stream serves.
    domain: String,
    /// Set by SASL (or legacy auth); the stream then restarts and binds a resource.
    authenticated: Option<BareJid>,
    /// Set by resource binding or legacy auth, or taken over by resumption.
    jid: Option<FullJid>,
}

impl Negotiation {
    pub(super) fn new(domain: &str) -> Negotiation {
        Negotiation {
            header_sent: false,
            version1: false,
            headers: 0,
            domain: domain.to_owned(),
            authenticated: None,
            jid: None,
        }
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (maj, min) = v.split_once('.')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

impl Connection {
    /// Sends our stream header unless it went out already (a stream error needs one first,
    /// RFC 6120 §4.9.1.1).
    pub(super) fn send_header_once(&self) {
        if !self.negotiation.borrow().header_sent {
            self.send_header(None);
        }
    }

    fn send_header(&self, client_from: Option<&str>) {
        let (domain, version1) = {
            let n = self.negotiation.borrow();
            (n.domain.clone(), n.version1)
        };
        let id: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let mut h = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='{id}' from='{}'",
            quick_xml::escape::escape(domain.as_str())
        );
        if let Some(to) = client_from {
            h.push_str(&format!(" to='{}'", quick_xml::escape::escape(to)));
        }
        if version1 {
            h.push_str(" version='1.0'");
        }
        h.push_str(" xml:lang='en'>");
        self.negotiation.borrow_mut().header_sent = true;
        self.send_raw(h.as_bytes());
    }

    pub(crate) fn on_header(self: &Rc<Self>, h: StreamHeader) {
        let Some(server) = self.server() else { return };
        // Version first: a 0.9 client gets a reply without version and no SASL features.
        let version = h.version.as_deref().map(parse_version);
        let version1 = match version {
            None => false,
            Some(Some((1, _))) => true,
            Some(Some((0, _))) => false,
            Some(Some(_)) => {
                self.negotiation.borrow_mut().version1 = true;
                self.close(Some((
                    StreamError::UnsupportedVersion,
                    Some("this server speaks XMPP 1.0".into()),
                )));
                return;
            }
            Some(None) => {
                self.close(Some((
                    StreamError::BadFormat,
                    Some("unparseable version".into()),
                )));
                return;
            }
        };
        self.stream_opened(&h.scope);
        let restart = {
            let mut n = self.negotiation.borrow_mut();
            n.version1 = version1;
            n.headers = n.headers.saturating_add(1);
            n.headers > 1
        };
        let requested =
            h.to.clone()
                .unwrap_or_else(|| server.config.default_domain().to_owned());
        let domain = jid::BareJid::new(&requested).ok().map(|j| j.to_string());
        let hosted = domain
            .as_deref()
            .filter(|d| server.config.is_hosted(d))
            .map(str::to_owned);
        if let Some(d) = &hosted
            && !restart
        {
            self.negotiation.borrow_mut().domain = d.clone();
        }
        // The header goes out before any error (RFC 6120 §4.9.1.1); on restart a fresh one.
        self.negotiation.borrow_mut().header_sent = false;
        self.send_header(h.from.as_deref());

        if h.name != "stream" || h.ns != ns::STREAMS {
            self.close(Some((
                StreamError::InvalidNamespace,
                Some("the root element must be stream:stream".into()),
            )));
            return;
        }
        if h.content_ns() != Some(ns::CLIENT) {
            self.close(Some((
                StreamError::InvalidNamespace,
                Some("this port serves jabber:client".into()),
            )));
            return;
        }
        let current_domain = self.domain();
        match hosted {
            Some(d) if d == current_domain => {}
            _ => {
                self.close(Some((
                    StreamError::HostUnknown,
                    Some(format!("{requested} is not served here")),
                )));
                return;
            }
        }
        self.send_features(version1);
    }

    fn send_features(&self, version1: bool) {
        let Some(server) = self.server() else { return };
        let info = self.info();
        let (authenticated, bound) = self.identity();
        let mut features = Element::new("features", ns::STREAMS);
        if !authenticated && !bound {
            if version1 {
                if !info.secure {
                    let mut starttls = Element::new("starttls", ns::TLS);
                    if !info.plaintext_ok {
                        starttls.push(Element::new("required", ns::TLS));
                    }
                    features.push(starttls);
                }
                if info.plaintext_ok {
                    let mechanisms = super::sasl::mechanisms(&info);
                    let mut mechs = Element::new("mechanisms", ns::SASL);
                    for m in &mechanisms {
                        mechs.push(Element::new("mechanism", ns::SASL).text(*m));
                    }
                    features.push(mechs);
                    features.push(super::sasl2::feature(&mechanisms));
                }
            }
            for f in server.stream.before_auth_stage().features_for(&info) {
                features.push(f.clone());
            }
        } else if !bound {
            features.push(Element::new("bind", ns::BIND));
            features.push(
                Element::new("session", ns::SESSION).child(Element::new("optional", ns::SESSION)),
            );
            features.push(Element::new("sm", super::sm::NS));
            features.push(Element::new("csi", super::csi::NS));
            for f in server.stream.session_stage().features_for(&info) {
                features.push(f.clone());
            }
        }
        self.send(&features);
    }

    pub(crate) fn on_element(self: &Rc<Self>, el: Element) {
        let (authenticated, bound) = self.identity();
        match (el.ns.as_str(), el.name.as_str()) {
            (ns::CLIENT, "iq" | "message" | "presence") => {
                if bound {
                    self.sm_count_in();
                    if let Some(server) = self.server() {
                        crate::router::route_from_client(&server, self, el);
                    }
                } else if el.name == "iq" && authenticated {
                    self.on_unbound_iq(el);
                } else if el.name == "iq" && !authenticated && self.before_auth_rule(&el) {
                    // handled
                } else {
                    self.close(Some((
                        StreamError::NotAuthorized,
                        Some("authenticate first".into()),
                    )));
                }
            }
            (ns::TLS, "starttls") => self.on_starttls(),
            (super::sm::NS, _) if authenticated || bound => self.on_sm(el),
            (super::csi::NS, _) if bound => self.on_csi(&el),
            (ns::SASL, _) if !authenticated && !bound => self.on_sasl(el),
            (super::sasl2::NS, _) if !authenticated && !bound => self.on_sasl2(el),
            (ns::SASL, _) => self.close(Some((
                StreamError::PolicyViolation,
                Some("already authenticated".into()),
            ))),
            ("jabber:server" | "jabber:component:accept", _) => {
                self.close(Some((StreamError::InvalidNamespace, None)));
            }
            _ => self.close(Some((
                StreamError::UnsupportedStanzaType,
                Some(format!("<{} xmlns='{}'/>", el.name, el.ns)),
            ))),
        }
    }

    fn on_starttls(self: &Rc<Self>) {
        let Some(server) = self.server() else { return };
        let secure = self.is_secure();
        let authenticated = {
            let (authenticated, bound) = self.identity();
            authenticated || bound
        };
        if secure || authenticated {
            self.send(&Element::new("failure", ns::TLS));
            self.close(None);
            return;
        }
        self.send_raw_cleartext(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        let mut tls = match rustls::ServerConnection::new(server.tls.clone()) {
            Ok(t) => Box::new(t),
            Err(e) => {
                tracing::error!("TLS setup failed: {e}");
                self.close(Some((StreamError::InternalServerError, None)));
                return;
            }
        };
        // Anything the client pipelined after <starttls/> is already TLS handshake data.
        let rest = self.take_unconsumed();
        if !rest.is_empty() {
            let mut slice = &rest[..];
            while !slice.is_empty() {
                if tls.read_tls(&mut slice).is_err() {
                    break;
                }
            }
            if tls.process_new_packets().is_err() {
                self.teardown();
                return;
            }
        }
        self.start_tls(tls);
        self.negotiation.borrow_mut().header_sent = false;
    }

    /// A stream restart (after SASL success): a new header is expected next.
    pub(crate) fn restart_stream(&self) {
        self.restart_framing();
        self.negotiation.borrow_mut().header_sent = false;
    }

    /// IQ before authentication: only rules of the before-auth stage (legacy iq-auth) apply.
    fn before_auth_rule(self: &Rc<Self>, el: &Element) -> bool {
        let Some(server) = self.server() else {
            return false;
        };
        let Some((kind, payload)) = request_parts(el) else {
            return false;
        };
        let Some(handler) =
            server
                .stream
                .before_auth_stage()
                .rules()
                .find(&payload.ns, &payload.name, kind)
        else {
            return false;
        };
        let Some(id) = el.get_attr("id") else {
            return false;
        };
        let iq = Incoming::new(
            server.clone(),
            ReplyTo::Stream(Rc::downgrade(self)),
            id.to_owned(),
            kind,
            None,
            None,
            el.get_attr("xml:lang").map(str::to_owned),
            payload.clone(),
        );
        handler(iq);
        true
    }

    /// IQs after SASL but before a resource is bound: bind and session only.
    fn on_unbound_iq(self: &Rc<Self>, el: Element) {
        if let Some(bind) = el.get_child("bind", ns::BIND)
            && el.get_attr("type") == Some("set")
        {
            let resource = bind
                .child_text("resource", ns::BIND)
                .filter(|r| !r.is_empty());
            let id = el.get_attr("id").unwrap_or("").to_owned();
            match self.bind_resource(resource.as_deref()) {
                Ok(full) => {
                    let reply = Element::stanza("iq")
                        .attr("type", "result")
                        .attr("id", id)
                        .child(
                            Element::new("bind", ns::BIND)
                                .child(Element::new("jid", ns::BIND).text(full.to_string())),
                        );
                    self.send(&reply);
                }
                Err((cond, text)) => {
                    if let Some(reply) = error_reply(&el, cond.default_type(), cond, Some(text)) {
                        self.send(&reply);
                    }
                }
            }
        } else if el.get_child("session", ns::SESSION).is_some() {
            // RFC 3921 session establishment is a no-op kept for old clients.
            let id = el.get_attr("id").unwrap_or("");
            self.send(&Element::stanza("iq").attr("type", "result").attr("id", id));
        } else {
            self.close(Some((
                StreamError::NotAuthorized,
                Some("bind a resource first".into()),
            )));
        }
    }

    /// Binds `resource` (or a generated one) for the authenticated account. A session already
    /// using that resource is replaced (RFC 6120 §7.7.2.2): it gets a `conflict` stream error.
    pub fn bind_resource(
        self: &Rc<Self>,
        resource: Option<&str>,
    ) -> Result<FullJid, (Condition, &'static str)> {
        let Some(server) = self.server() else {
            return Err((Condition::InternalServerError, "server is shutting down"));
        };
        let Some(bare) = self.authenticated() else {
            return Err((Condition::NotAuthorized, "not authenticated"));
        };
        let resource = match resource {
            Some(r) => r.to_owned(),
            None => {
                let n: u64 = rand::thread_rng().r#gen();
                format!("wockd-{n:016x}")
            }
        };
        let full = FullJid::new(&format!("{bare}/{resource}"))
            .map_err(|_| (Condition::BadRequest, "invalid resource"))?;
        server.bind_session(self, full.clone());
        self.set_jid(full.clone());
        Ok(full)
    }

    /// Marks the stream authenticated as `bare` (SASL success or legacy auth).
    pub fn set_authenticated(&self, bare: BareJid) {
        self.negotiation.borrow_mut().authenticated = Some(bare);
        if let Some(server) = self.server() {
            server.note_authenticated(self.id, self.peer.ip());
        }
    }

    /// The domain this stream serves.
    pub fn domain(&self) -> String {
        self.negotiation.borrow().domain.clone()
    }

    /// The bound full JID, once the session exists.
    pub fn jid(&self) -> Option<FullJid> {
        self.negotiation.borrow().jid.clone()
    }

    /// A resource is bound: the stream carries stanzas.
    pub(crate) fn is_bound(&self) -> bool {
        self.negotiation.borrow().jid.is_some()
    }

    /// The stream is authenticated (bound or not).
    pub(crate) fn is_authenticated(&self) -> bool {
        self.negotiation.borrow().authenticated.is_some()
    }

    /// `(authenticated, bound)` in one look.
    fn identity(&self) -> (bool, bool) {
        let n = self.negotiation.borrow();
        (n.authenticated.is_some(), n.jid.is_some())
    }

    /// The authenticated account.
    pub(super) fn authenticated(&self) -> Option<BareJid> {
        self.negotiation.borrow().authenticated.clone()
    }

    /// Detaches the bound JID: the session ends, moves to another connection (resumption), or
    /// is replaced by a newer one with the same resource.
    pub(crate) fn take_jid(&self) -> Option<FullJid> {
        self.negotiation.borrow_mut().jid.take()
    }

    /// Binds this connection to `jid` (resource binding, or a session taken over by resumption).
    pub(super) fn set_jid(&self, jid: FullJid) {
        self.negotiation.borrow_mut().jid = Some(jid);
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_never_reach_the_xml_log() {
        for secret in [
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>AGFsaWNlAHNlY3JldA==</initial-response></authenticate>",
            "<success xmlns='urn:xmpp:sasl:2'><token xmlns='urn:xmpp:fast:0' token='AGFsaWNlAHNlY3JldA=='/></success>",
            "<iq type='set' id='a'><query xmlns='jabber:iq:auth'><username>alice</username><password>AGFsaWNlAHNlY3JldA==</password></query></iq>",
            "<iq type='set' id='r'><query xmlns='jabber:iq:register'><password>AGFsaWNlAHNlY3JldA==</password></query></iq>",
            "<iq type='set' id='f'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='password'><value>AGFsaWNlAHNlY3JldA==</value></field></x></query></iq>",
        ] {
            let logged = redact(secret.as_bytes());
            assert!(!logged.contains("AGFsaWNlAHNlY3JldA=="), "{logged}");
            assert!(logged.ends_with("[redacted]"), "{logged}");
        }
        let chat = "<message to='bob@localhost'><body>hello</body></message>";
        assert_eq!(redact(chat.as_bytes()), chat);
    }
}
