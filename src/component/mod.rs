//! External components, server side (XEP-0114 "Jabber Component Protocol"): Biboumi, Slidge,
//! Spectrum 2 and wockd's own gateways in another process connect to `[component_listener]`
//! (default `127.0.0.1:5347`, only when `[[components]]` are configured) and authenticate with
//! `<handshake>`, the hex SHA-1 of the stream id and the shared secret, compared in constant
//! time.
//!
//! A configured component's domain is of the router's `Service` class (`Config::is_component`)
//! but, unlike an in-process service, the rest of the server treats its JIDs as another
//! server's: presence subscriptions, probes and rosters follow RFC 6121. Stanzas for its
//! domain, or any JID under it, go down its stream whoever sent them (local users, remote
//! servers, the server itself). What it sends comes in through `router::route_from_remote`,
//! the path of every stanza from outside: messages to users are delivered, archived,
//! carbon-copied and kept in the mailbox exactly as from any other sender.
//!
//! Choices, as in Prosody (README "Components"):
//! - a second stream for a domain already connected gets `conflict` (the first one stays);
//! - while a component is not connected, messages and IQ requests to it bounce at once with
//!   `service-unavailable` (no waiting queue: a gateway restarts in seconds, and a client
//!   told at once can retry, where a queued message would be lost with the queue);
//! - `from` must be the component's domain or a JID under it (`invalid-from`), `to` must be
//!   present (`improper-addressing`);
//! - the stream is plaintext like Prosody's and ejabberd's component ports: keep the listener
//!   on loopback or a private network.
//!
//! XEP-0356 privileges are in [`privilege`].

pub mod child;
pub mod privilege;
pub mod uplink;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glib::Source;
use jid::Jid;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::core::events::{Routed, Tick};
use crate::core::hooks::{Flow, Hooks, Name, Point, To};
use crate::core::stanza::{Condition, StreamError, stanza_error};
use crate::net::link::{Auth, Dir, Input, Kind, Link, attr, random_id};
use crate::server::Server;
use crate::xml::{Element, ns};

pub const NS_ACCEPT: &str = "jabber:component:accept";

/// Component streams: `jabber:component:accept`, read at `[component_listener] read_rate`.
static KIND: Kind = Kind {
    name: "component",
    stream_ns: NS_ACCEPT,
    on_input,
    on_closed: link_closed,
    read_rate: |server| {
        let c = &server.config.component_listener;
        (c.read_rate, c.read_burst)
    },
};

/// Streams that have not completed the handshake, at once (a component listener faces a
/// trusted network, but a stray client must not fill the server with half-open streams).
const MAX_PENDING: usize = 16;

#[derive(Default)]
struct State {
    listeners: RefCell<Vec<Source>>,
    links: RefCell<HashMap<u64, Rc<Link>>>,
    /// The authenticated stream of each connected component domain.
    connected: RefCell<HashMap<String, u64>>,
    /// The bound listener addresses.
    bound: RefCell<Vec<SocketAddr>>,
    /// Shared secrets by domain, read once at start.
    secrets: RefCell<HashMap<String, String>>,
    next_id: Cell<u64>,
}

/// One line of `wockd status`.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub domain: String,
    pub connected: bool,
    pub stanzas_in: u64,
    pub stanzas_out: u64,
}

/// Installs the delivery hook for component domains (when components are configured).
pub fn install(hooks: &Hooks) {
    // Before the server's own service hook (priority 0), which serves only local senders.
    hooks.hook(Point::Deliver(Name::Any, To::Service), 10, to_component);
    hooks.on(0, |server, _: &mut Tick| housekeeping(server));
    privilege::install(hooks);
}

/// Reads the secrets and binds the listener.
pub fn start(server: &Rc<Server>) -> io::Result<Vec<SocketAddr>> {
    let components = &server.config.components;
    if components.is_empty() {
        return Ok(Vec::new());
    }
    let st = server.ext::<State>();
    for c in components {
        if server.service(&c.domain).is_some() {
            return Err(io::Error::other(format!(
                "component domain `{}` is already a service of this server",
                c.domain
            )));
        }
        let secret = c.load_secret().map_err(io::Error::other)?;
        st.secrets.borrow_mut().insert(c.domain.clone(), secret);
    }
    let mut bound = Vec::new();
    for addr in &server.config.component_listener.listen {
        match listen(server, *addr) {
            Ok(a) => {
                tracing::info!(address = %a, "listening for components");
                if !a.ip().is_loopback() {
                    // The stream is plaintext: the handshake is a hash, but the stanzas are not.
                    tracing::warn!(address = %a, "the component listener is not on loopback: component streams are not encrypted");
                }
                bound.push(a);
            }
            Err(e) => tracing::warn!(address = %addr, "components: cannot listen: {e}"),
        }
    }
    if bound.is_empty() && !server.config.component_listener.listen.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no component listener could be bound",
        ));
    }
    *st.bound.borrow_mut() = bound.clone();
    Ok(bound)
}

/// The addresses the component listener is bound to.
pub fn bound(server: &Server) -> Vec<SocketAddr> {
    server.ext::<State>().bound.borrow().clone()
}

/// Closes every component stream (`system-shutdown`) and stops listening.
pub fn stop(server: &Rc<Server>) {
    let st = server.ext::<State>();
    for src in st.listeners.borrow_mut().drain(..) {
        src.destroy();
    }
    let links: Vec<Rc<Link>> = st.links.borrow().values().cloned().collect();
    for l in links {
        l.close(Some((StreamError::SystemShutdown, "")));
    }
}

/// The configured components, for `wockd status`.
pub fn components(server: &Server) -> Vec<ComponentInfo> {
    let st = server.ext::<State>();
    server
        .config
        .components
        .iter()
        .map(|c| {
            let link = connected_link(&st, &c.domain);
            let (stanzas_in, stanzas_out) = link
                .as_ref()
                .map(|l| {
                    let n = l.nego.borrow();
                    (n.stanzas_in, n.stanzas_out)
                })
                .unwrap_or_default();
            ComponentInfo {
                domain: c.domain.clone(),
                connected: link.is_some(),
                stanzas_in,
                stanzas_out,
            }
        })
        .collect()
}

fn connected_link(st: &State, domain: &str) -> Option<Rc<Link>> {
    let id = *st.connected.borrow().get(domain)?;
    st.links.borrow().get(&id).cloned()
}

// ---- listening ------------------------------------------------------------------------------

fn listen(server: &Rc<Server>, addr: SocketAddr) -> io::Result<SocketAddr> {
    let (local, src) = crate::net::serve(server, addr, 64, "component", accept)?;
    server.ext::<State>().listeners.borrow_mut().push(src);
    Ok(local)
}

fn accept(server: &Rc<Server>, sock: std::net::TcpStream, peer: SocketAddr) {
    let st = server.ext::<State>();
    let pending = st
        .links
        .borrow()
        .values()
        .filter(|l| l.nego.borrow().auth == Auth::None)
        .count();
    if pending >= MAX_PENDING {
        tracing::warn!(%peer, "components: too many streams without a handshake; refusing");
        return;
    }
    let id = st.next_id.get() + 1;
    st.next_id.set(id);
    let link = Link::new(
        server,
        &KIND,
        id,
        Dir::In,
        server.config.default_domain(),
        "",
    );
    st.links.borrow_mut().insert(id, link.clone());
    if let Err(e) = link.attach(sock, None) {
        tracing::debug!(%peer, "components: cannot set up the connection: {e}");
        link.teardown();
    } else {
        tracing::debug!(link = id, %peer, "components: incoming connection");
    }
}

fn link_closed(server: &Rc<Server>, id: u64) {
    let st = server.ext::<State>();
    let Some(link) = st.links.borrow_mut().remove(&id) else {
        return;
    };
    let domain = link.nego.borrow().remote.clone();
    let mut connected = st.connected.borrow_mut();
    if connected.get(&domain) == Some(&id) {
        connected.remove(&domain);
        drop(connected);
        tracing::info!(component = %domain, "component disconnected");
    }
}

// ---- the stream -----------------------------------------------------------------------------

fn on_input(link: &Rc<Link>, input: Input) {
    let Some(server) = link.server() else { return };
    match input {
        Input::Header(h) => header(&server, link, h),
        Input::Element(el) => element(&server, link, el),
        Input::Close => link.close(None),
        Input::Error(cond, text) => {
            tracing::debug!(link = link.id, "component: {text}");
            link.close(Some((cond, "")));
        }
    }
}

fn header(server: &Rc<Server>, link: &Rc<Link>, h: crate::xml::StreamHeader) {
    let domain = h.to.clone().unwrap_or_default();
    let id = random_id();
    link.send_raw(
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
             xmlns:stream='http://etherx.jabber.org/streams' id='{id}' from='{}'>",
            attr(&domain)
        )
        .as_bytes(),
    );
    if h.ns != ns::STREAMS || h.name != "stream" || h.content_ns() != Some(NS_ACCEPT) {
        return link.close(Some((StreamError::InvalidNamespace, "")));
    }
    if link.nego.borrow().auth != Auth::None {
        return link.close(Some((StreamError::PolicyViolation, "the stream is open")));
    }
    if !server.config.components.iter().any(|c| c.domain == domain) {
        return link.close(Some((
            StreamError::HostUnknown,
            "no component is configured for that domain",
        )));
    }
    let mut n = link.nego.borrow_mut();
    n.remote = domain;
    n.stream_id = id;
}

fn element(server: &Rc<Server>, link: &Rc<Link>, el: Element) {
    let authenticated = link.nego.borrow().auth == Auth::Secret;
    match (el.ns.as_str(), el.name.as_str()) {
        (ns::CLIENT, "handshake") if !authenticated => handshake(server, link, &el),
        (ns::CLIENT, "message" | "presence" | "iq") if authenticated => stanza(server, link, el),
        (ns::CLIENT, "message" | "presence" | "iq" | "handshake") => link.close(Some((
            StreamError::NotAuthorized,
            if authenticated {
                "already authenticated"
            } else {
                "send <handshake/> first"
            },
        ))),
        _ => link.close(Some((StreamError::UnsupportedStanzaType, ""))),
    }
}

/// `<handshake>`: lowercase hex SHA-1 of stream id + secret (XEP-0114 §3).
fn handshake(server: &Rc<Server>, link: &Rc<Link>, el: &Element) {
    let (domain, stream_id) = {
        let n = link.nego.borrow();
        (n.remote.clone(), n.stream_id.clone())
    };
    let st = server.ext::<State>();
    let Some(secret) = st.secrets.borrow().get(&domain).cloned() else {
        return link.close(Some((StreamError::HostUnknown, "")));
    };
    let expected = hex(&Sha1::digest(format!("{stream_id}{secret}").as_bytes()));
    let got = el.text_content().trim().to_ascii_lowercase();
    if !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
        tracing::warn!(component = %domain, peer = ?link.peer.get(), "component handshake failed");
        return link.close(Some((StreamError::NotAuthorized, "wrong secret")));
    }
    if connected_link(&st, &domain).is_some_and(|l| !l.is_closed()) {
        tracing::warn!(component = %domain, "component already connected; refusing another stream");
        return link.close(Some((
            StreamError::Conflict,
            "a component is already connected for this domain",
        )));
    }
    link.nego.borrow_mut().auth = Auth::Secret;
    link.nego.borrow_mut().verified.insert(domain.clone());
    st.connected.borrow_mut().insert(domain.clone(), link.id);
    link.send_raw(b"<handshake/>");
    tracing::info!(component = %domain, "component connected");
    privilege::advertise(server, link, &domain);
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A stanza from an authenticated component: addresses checked, privileged requests served,
/// everything else routed like a stanza from another server.
fn stanza(server: &Rc<Server>, link: &Rc<Link>, el: Element) {
    let domain = link.nego.borrow().remote.clone();
    let from = match el.get_attr("from").map(Jid::new) {
        None => {
            return link.close(Some((
                StreamError::ImproperAddressing,
                "a stanza needs 'from'",
            )));
        }
        Some(Err(_)) => return link.close(Some((StreamError::InvalidFrom, "malformed 'from'"))),
        Some(Ok(j)) => j,
    };
    if from.domain().as_str() != domain {
        return link.close(Some((
            StreamError::InvalidFrom,
            "'from' is not in the component's domain",
        )));
    }
    let to = match el.get_attr("to").map(Jid::new) {
        None => {
            return link.close(Some((
                StreamError::ImproperAddressing,
                "a stanza needs 'to'",
            )));
        }
        Some(Err(_)) => {
            if let Some(err) = stanza_error(&el, Condition::JidMalformed, "malformed 'to'") {
                link.send(&err);
            }
            return;
        }
        Some(Ok(j)) => j,
    };
    {
        let mut n = link.nego.borrow_mut();
        n.stanzas_in += 1;
        n.last_stanza = Instant::now();
    }
    let Some(el) = privilege::intercept(server, link, &domain, el, &from, &to) else {
        return;
    };
    crate::router::route_from_remote(server, el, from, to);
}

// ---- to the component -----------------------------------------------------------------------

/// `Deliver(Any, Service)`: anything for a component's domain, from anyone.
fn to_component(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let Some(domain) = ev.to.as_ref().map(|t| t.domain().as_str()) else {
        return Flow::Continue;
    };
    if !server.config.is_component(domain) {
        return Flow::Continue;
    }
    let domain = domain.to_owned();
    if !forward(server, &domain, &ev.stanza) {
        if ev.connection().is_some() || ev.from_remote().is_some() {
            bounce_unreachable(ev);
        } else {
            unreachable_component(server, &ev.stanza);
        }
    }
    Flow::Handled
}

/// Sends `stanza` down the stream of `domain`'s component. False when it is not connected.
fn forward(server: &Rc<Server>, domain: &str, stanza: &Element) -> bool {
    let st = server.ext::<State>();
    let Some(link) = connected_link(&st, domain) else {
        return false;
    };
    if link.is_closed() {
        return false;
    }
    link.send(stanza);
    let mut n = link.nego.borrow_mut();
    n.stanzas_out += 1;
    n.last_stanza = Instant::now();
    true
}

/// The answer for a stanza to a component that is not connected: messages and IQ requests
/// bounce with `service-unavailable`; presence and answers are dropped.
fn bounce_unreachable(ev: &Routed<'_>) {
    if wants_bounce(&ev.stanza) {
        ev.bounce(
            Condition::ServiceUnavailable,
            "the gateway is not connected",
        );
    }
}

fn unreachable_component(server: &Rc<Server>, stanza: &Element) {
    if wants_bounce(stanza)
        && let Some(err) = stanza_error(
            stanza,
            Condition::ServiceUnavailable,
            "the gateway is not connected",
        )
    {
        server.route_local(err);
    }
}

fn wants_bounce(stanza: &Element) -> bool {
    match stanza.name.as_str() {
        "message" => stanza.get_attr("type") != Some("error"),
        "iq" => matches!(stanza.get_attr("type"), Some("get" | "set")),
        _ => false,
    }
}

// ---- housekeeping ---------------------------------------------------------------------------

/// Streams that did not complete the handshake in time are closed.
fn housekeeping(server: &Rc<Server>) {
    let limit = Duration::from_secs(server.config.component_listener.handshake_timeout_secs);
    let st = server.ext::<State>();
    let late: Vec<Rc<Link>> = st
        .links
        .borrow()
        .values()
        .filter(|l| {
            let n = l.nego.borrow();
            n.auth == Auth::None && n.opened.elapsed() > limit
        })
        .cloned()
        .collect();
    for l in late {
        l.close(Some((StreamError::ConnectionTimeout, "no handshake")));
    }
}

/// The stream of `domain`'s component, when connected (privileges answer on it).
pub(crate) fn link_of(server: &Server, domain: &str) -> Option<Rc<Link>> {
    connected_link(&server.ext::<State>(), domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_digest_is_lowercase_hex_sha1() {
        // XEP-0114 §3 example: stream id 3BF96D32, secret "sh1tAllOverTheCarpet"? The XEP's
        // example value is not reproducible, so check against a known SHA-1 vector.
        assert_eq!(
            hex(&Sha1::digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
