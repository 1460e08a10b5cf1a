//! Federation: server-to-server streams (RFC 6120, `jabber:server`), in the manner of
//! Prosody's `mod_s2s` and ejabberd's `ejabberd_s2s`.
//!
//! - **Out**: a stanza for a remote domain reaches [`route_out`] (the router's
//!   `Deliver(_, Remote)` hook). It goes to the one outgoing link for (our domain, its domain),
//!   made on first use: static route or DNS ([`resolve`]), TCP, STARTTLS (or XEP-0368 direct
//!   TLS), then XEP-0220 dialback. Until the link is ready stanzas wait in a bounded queue;
//!   when it fails each one bounces to its sender (`remote-server-not-found`, or
//!   `remote-server-timeout`), errors never bounce.
//! - **In**: a remote server connects to a `[s2s]` listener, gets STARTTLS (required by
//!   default) and authenticates its domain by dialback, which we verify over our own outgoing
//!   link to it (`<db:verify/>`). Its stanzas must come `from` a domain authenticated on that
//!   stream (else `invalid-from`) and go `to` a domain we serve (else `host-unknown`); they are
//!   then routed through the event bus like any other sender's ([`crate::router::route_from_remote`]):
//!   mailbox, archive, carbons, blocking.
//! - Idle links close after `idle_timeout_secs`; set-up is bounded by `connect_timeout_secs`.
//!
//! Choices that differ from Prosody/ejabberd are in README.md ("Federation").

pub mod dialback;
mod resolve;
mod tls;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glib::Source;
use jid::Jid;

use crate::core::events::{Routed, Tick};
use crate::core::hooks::{Flow, Hooks, Name, Point, To};
use crate::core::stanza::{Condition, StreamError, stanza_error};
use crate::net::source;
use crate::server::Server;
use crate::xml::{Element, ns};

use crate::net::link::{self, Input, Kind, Link};
pub use crate::net::link::{Auth, Dir};

/// Server-to-server links: `jabber:server` streams, read at `[s2s] read_rate`.
static KIND: Kind = Kind {
    name: "s2s",
    stream_ns: ns::SERVER,
    on_input,
    on_closed: link_closed,
    read_rate: |server| (server.config.s2s.read_rate, server.config.s2s.read_burst),
};

/// (our domain, remote domain).
type Route = (String, String);

/// Per-server federation state (`Server::ext`).
#[derive(Default)]
struct State {
    links: RefCell<HashMap<u64, Rc<Link>>>,
    /// The outgoing link of each (our domain, remote domain).
    out: RefCell<HashMap<Route, u64>>,
    listeners: RefCell<Vec<Source>>,
    next_id: Cell<u64>,
    secret: RefCell<Option<Rc<dialback::Secret>>>,
    trust: RefCell<Option<Rc<tls::Trust>>>,
    /// Incoming links' TLS: the server's certificates, and the peer's asked for (optional).
    server_tls: RefCell<Option<Arc<rustls::ServerConfig>>>,
    /// Why an outgoing link failed, by link id (the condition its queue bounces with).
    failures: RefCell<HashMap<u64, (Condition, String)>>,
    /// Remote domains whose last link failed to come up: until the instant, stanzas for them
    /// bounce at once instead of each starting another attempt (a dead or hostile domain
    /// costs one attempt per `RETRY_AFTER`, not one per stanza).
    retry_after: RefCell<HashMap<Route, (Instant, Condition, String)>>,
}

/// How long a domain whose link failed to come up is not tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Dialback verifications one incoming stream may have pending at once.
const MAX_PENDING_VERIFIES: usize = 4;

/// One line of `wockd status`.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub peer: String,
    pub dir: Dir,
    pub secure: bool,
    pub auth: Auth,
    pub stanzas_in: u64,
    pub stanzas_out: u64,
}

/// Installs the delivery hook for remote domains (when `[s2s] enabled`).
pub fn install(hooks: &Hooks) {
    hooks.hook(Point::Deliver(Name::Any, To::Remote), 0, route_out);
    hooks.on(0, |server, _: &mut Tick| housekeeping(server));
}

/// Loads the dialback secret and the trust anchors and binds the `[s2s]` listeners. Returns
/// the bound addresses.
pub fn start(server: &Rc<Server>) -> io::Result<Vec<SocketAddr>> {
    let config = &server.config.s2s;
    if !config.enabled {
        return Ok(Vec::new());
    }
    let st = server.ext::<State>();
    let secret = match dialback::Secret::load(&server.config.data_dir()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "s2s: cannot keep a dialback secret in the data directory ({e}); using one for this run"
            );
            dialback::Secret::ephemeral()
        }
    };
    *st.secret.borrow_mut() = Some(Rc::new(secret));
    let trust = tls::Trust::load(&server.config).map_err(io::Error::other)?;
    *st.trust.borrow_mut() = Some(Rc::new(trust));
    *st.server_tls.borrow_mut() =
        Some(tls::server_config(&server.certs).map_err(io::Error::other)?);
    let mut bound = Vec::new();
    for l in &config.listen {
        match listen(server, l.address, l.direct_tls) {
            Ok(addr) => {
                tracing::info!(address = %addr, direct_tls = l.direct_tls, "listening for servers");
                bound.push(addr);
            }
            Err(e) => tracing::warn!(address = %l.address, "s2s: cannot listen: {e}"),
        }
    }
    if bound.is_empty() && !config.listen.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no s2s listener could be bound",
        ));
    }
    Ok(bound)
}

/// Closes every link (`system-shutdown`) and stops listening.
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

/// The links, for `wockd status`.
pub fn links(server: &Server) -> Vec<LinkInfo> {
    let st = server.ext::<State>();
    let mut out: Vec<LinkInfo> = st
        .links
        .borrow()
        .values()
        .filter(|l| !l.is_closed())
        .map(|l| {
            let n = l.nego.borrow();
            let peer = match l.dir {
                Dir::Out => n.remote.clone(),
                Dir::In => {
                    let v: Vec<&str> = n.verified.iter().map(String::as_str).collect();
                    if v.is_empty() {
                        format!(
                            "({})",
                            l.peer.get().map(|a| a.to_string()).unwrap_or_default()
                        )
                    } else {
                        v.join(",")
                    }
                }
            };
            LinkInfo {
                peer,
                dir: l.dir,
                secure: l.is_secure(),
                auth: n.auth,
                stanzas_in: n.stanzas_in,
                stanzas_out: n.stanzas_out,
            }
        })
        .collect();
    out.sort_by(|a, b| a.peer.cmp(&b.peer));
    out
}

fn listen(server: &Rc<Server>, addr: SocketAddr, direct_tls: bool) -> io::Result<SocketAddr> {
    let (local, src) = crate::net::serve(server, addr, 128, "s2s", move |server, sock, peer| {
        accept(server, sock, peer, direct_tls)
    })?;
    server.ext::<State>().listeners.borrow_mut().push(src);
    Ok(local)
}

fn accept(server: &Rc<Server>, sock: std::net::TcpStream, peer: SocketAddr, direct_tls: bool) {
    let st = server.ext::<State>();
    // Unauthenticated streams from one address are capped like a domain's links.
    let cap = server.config.s2s.max_links_per_domain * 2;
    let pending_from_ip = st
        .links
        .borrow()
        .values()
        .filter(|l| {
            l.dir == Dir::In
                && l.peer.get().map(|a| a.ip()) == Some(peer.ip())
                && l.nego.borrow().verified.is_empty()
        })
        .count();
    if pending_from_ip >= cap || st.links.borrow().len() >= server.config.limits.max_connections {
        tracing::warn!(%peer, "s2s: too many connections; refusing");
        return;
    }
    let tls = if direct_tls {
        match link::server_tls(&server_tls(server)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("s2s: TLS: {e}");
                return;
            }
        }
    } else {
        None
    };
    let id = next_id(server);
    let link = Link::new(server, &KIND, id, Dir::In, "", "");
    st.links.borrow_mut().insert(id, link.clone());
    if let Err(e) = link.attach(sock, tls) {
        tracing::debug!(%peer, "s2s: cannot set up the connection: {e}");
        link.teardown();
    } else {
        tracing::debug!(link = id, %peer, "s2s: incoming connection");
    }
}

/// The TLS configuration of incoming links (the client streams' one before `start`).
fn server_tls(server: &Server) -> Arc<rustls::ServerConfig> {
    server
        .ext::<State>()
        .server_tls
        .borrow()
        .clone()
        .unwrap_or_else(|| server.tls.clone())
}

/// A TLS client session to `remote`, presenting the certificate of `local`.
fn client_tls(server: &Server, local: &str, remote: &str) -> Result<rustls::Connection, String> {
    let trust = server
        .ext::<State>()
        .trust
        .borrow()
        .clone()
        .ok_or("no TLS set-up")?;
    let config = trust.client_for(server.certs.for_domain(local));
    link::client_tls(&config, remote)
}

/// Whether `chain` is a valid certificate of `domain` under our trust anchors.
fn cert_valid(
    server: &Server,
    chain: &[rustls_pki_types::CertificateDer<'_>],
    domain: &str,
) -> bool {
    server
        .ext::<State>()
        .trust
        .borrow()
        .as_ref()
        .is_some_and(|t| t.valid_for(chain, domain))
}

fn next_id(server: &Server) -> u64 {
    let st = server.ext::<State>();
    let id = st.next_id.get() + 1;
    st.next_id.set(id);
    id
}

pub(crate) fn link_by_id(server: &Server, id: u64) -> Option<Rc<Link>> {
    server.ext::<State>().links.borrow().get(&id).cloned()
}

fn secret(server: &Server) -> Rc<dialback::Secret> {
    let st = server.ext::<State>();
    let mut s = st.secret.borrow_mut();
    s.get_or_insert_with(|| Rc::new(dialback::Secret::ephemeral()))
        .clone()
}

/// A domain this server answers for on federation: hosted, one of its services, or an
/// external component's.
fn is_ours(server: &Server, domain: &str) -> bool {
    server.config.is_hosted(domain)
        || server.service(domain).is_some()
        || server.config.is_component(domain)
}

use link::{attr, random_id};

// ---- outgoing -------------------------------------------------------------------------------

/// `Deliver(Any, Remote)`: a stanza from one of our domains to another server.
fn route_out(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let Some(to) = ev.to.as_ref() else {
        return Flow::Continue;
    };
    let remote = to.domain().as_str().to_owned();
    let local = match ev.stanza.get_attr("from").map(Jid::new) {
        Some(Ok(from)) if is_ours(server, from.domain().as_str()) => {
            from.domain().as_str().to_owned()
        }
        _ => {
            ev.bounce(Condition::BadRequest, "no valid local 'from'");
            return Flow::Handled;
        }
    };
    if !server.config.s2s.permits(&remote) {
        ev.bounce(
            Condition::NotAllowed,
            "this server does not federate with that domain",
        );
        return Flow::Handled;
    }
    let el = std::mem::replace(&mut ev.stanza, Element::stanza(""));
    send(server, &local, &remote, el);
    Flow::Handled
}

/// Sends `el` over the outgoing link from `local` to `remote`, queued until it is ready.
fn send(server: &Rc<Server>, local: &str, remote: &str, el: Element) {
    let st = server.ext::<State>();
    let key = (local.to_owned(), remote.to_owned());
    let recent = st.retry_after.borrow().get(&key).cloned();
    if let Some((until, cond, why)) = recent {
        if Instant::now() < until {
            return bounce(server, &el, cond, &why);
        }
        st.retry_after.borrow_mut().remove(&key);
    }
    let link = out_link(server, local, remote);
    let mut n = link.nego.borrow_mut();
    if n.ready {
        n.stanzas_out += 1;
        n.last_stanza = Instant::now();
        drop(n);
        link.send(&el);
    } else if n.queue.len() >= server.config.s2s.max_queue {
        drop(n);
        bounce(
            server,
            &el,
            Condition::ResourceConstraint,
            "too many stanzas wait for that server",
        );
    } else {
        n.queue.push_back(el);
    }
}

/// The outgoing link from `local` to `remote`, set up if there is none.
fn out_link(server: &Rc<Server>, local: &str, remote: &str) -> Rc<Link> {
    let st = server.ext::<State>();
    let key = (local.to_owned(), remote.to_owned());
    if let Some(id) = st.out.borrow().get(&key)
        && let Some(l) = st.links.borrow().get(id)
        && !l.is_closed()
    {
        return l.clone();
    }
    let id = next_id(server);
    let link = Link::new(server, &KIND, id, Dir::Out, local, remote);
    st.links.borrow_mut().insert(id, link.clone());
    st.out.borrow_mut().insert(key, id);
    tracing::debug!(link = id, %local, %remote, "s2s: connecting");
    let weak = Rc::downgrade(server);
    let l = link.clone();
    source::spawn_local(async move {
        connect(weak, l).await;
    });
    link
}

async fn connect(server: std::rc::Weak<Server>, link: Rc<Link>) {
    let Some(config) = server.upgrade().map(|s| s.config.s2s.clone()) else {
        return;
    };
    let remote = link.nego.borrow().remote.clone();
    // RFC 6761 §6.4: names under .invalid are never looked up.
    if remote == "invalid" || remote.ends_with(".invalid") {
        if let Some(server) = server.upgrade() {
            fail(
                &server,
                &link,
                Condition::RemoteServerNotFound,
                "no such domain",
            );
        }
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(config.connect_timeout_secs);
    let mut tried = 0;
    for target in resolve::targets(&config, &remote).await {
        for addr in resolve::addresses(&config, &target).await {
            if link.is_closed() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tried += 1;
            match crate::net::connect_tcp(addr, left.min(Duration::from_secs(10))).await {
                Ok(sock) => {
                    let Some(server) = server.upgrade() else {
                        return;
                    };
                    if link.is_closed() {
                        return;
                    }
                    return established(&server, &link, sock, target.direct_tls);
                }
                Err(e) => tracing::debug!(%remote, %addr, "s2s: connect: {e}"),
            }
        }
    }
    if let Some(server) = server.upgrade() {
        let why = if tried == 0 {
            format!("no address found for {remote}")
        } else {
            format!("could not connect to {remote}")
        };
        fail(&server, &link, Condition::RemoteServerNotFound, &why);
    }
}

fn established(server: &Rc<Server>, link: &Rc<Link>, sock: std::net::TcpStream, direct: bool) {
    let (local, remote) = {
        let n = link.nego.borrow();
        (n.local.clone(), n.remote.clone())
    };
    let tls = if direct {
        match client_tls(server, &local, &remote) {
            Ok(t) => Some(t),
            Err(e) => return fail(server, link, Condition::RemoteServerNotFound, &e),
        }
    } else {
        None
    };
    if let Err(e) = link.attach(sock, tls) {
        return fail(
            server,
            link,
            Condition::RemoteServerNotFound,
            &e.to_string(),
        );
    }
    tracing::debug!(link = link.id, %remote, peer = ?link.peer.get(), "s2s: connected");
    send_header_out(link);
}

fn send_header_out(link: &Link) {
    let (local, remote) = {
        let n = link.nego.borrow();
        (n.local.clone(), n.remote.clone())
    };
    link.send_raw(
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
             from='{}' to='{}' version='1.0'>",
            attr(&local),
            attr(&remote)
        )
        .as_bytes(),
    );
}

/// The outgoing link failed: its queue bounces with `cond` (see [`link_closed`]).
fn fail(server: &Rc<Server>, link: &Rc<Link>, cond: Condition, why: &str) {
    let remote = link.nego.borrow().remote.clone();
    tracing::info!(link = link.id, %remote, "s2s: link failed: {why}");
    server
        .ext::<State>()
        .failures
        .borrow_mut()
        .insert(link.id, (cond, why.to_owned()));
    let stream_error = match cond {
        Condition::RemoteServerTimeout => StreamError::ConnectionTimeout,
        Condition::NotAuthorized => StreamError::NotAuthorized,
        _ => StreamError::UndefinedCondition,
    };
    link.close(Some((stream_error, "")));
}

/// A link is gone: what waited on it bounces, incoming verifications it carried fail.
pub(crate) fn link_closed(server: &Rc<Server>, id: u64) {
    let st = server.ext::<State>();
    let Some(link) = st.links.borrow_mut().remove(&id) else {
        return;
    };
    let (failure, queue, verifies) = {
        let failure = st.failures.borrow_mut().remove(&id);
        let mut n = link.nego.borrow_mut();
        let queue: Vec<Element> = n.queue.drain(..).collect();
        let mut verifies: Vec<(u64, String)> = n
            .verifies
            .drain(..)
            .map(|(in_id, claimed, _, _)| (in_id, claimed))
            .collect();
        verifies.extend(
            n.verifying
                .drain(..)
                .map(|(in_id, claimed, _)| (in_id, claimed)),
        );
        (failure, queue, verifies)
    };
    let (cond, why) = failure.unwrap_or((
        Condition::RemoteServerNotFound,
        "the connection to that server was lost".to_owned(),
    ));
    if link.dir == Dir::Out {
        let (key, ready) = {
            let n = link.nego.borrow();
            ((n.local.clone(), n.remote.clone()), n.ready)
        };
        let mut out = st.out.borrow_mut();
        if out.get(&key) == Some(&id) {
            out.remove(&key);
        }
        if !ready {
            st.retry_after
                .borrow_mut()
                .insert(key, (Instant::now() + RETRY_AFTER, cond, why.clone()));
        }
    }
    for el in queue {
        bounce(server, &el, cond, &why);
    }
    for (in_id, claimed) in verifies {
        verified(server, in_id, &claimed, None);
    }
}

/// Answers the local sender of `el` with an error (never for an error).
fn bounce(server: &Rc<Server>, el: &Element, cond: Condition, why: &str) {
    if let Some(err) = stanza_error(el, cond, why) {
        server.route_local(err);
    }
}

/// Called by the link for everything it reads.
pub(crate) fn on_input(link: &Rc<Link>, input: Input) {
    let Some(server) = link.server() else {
        return;
    };
    match link.dir {
        Dir::Out => out_input(&server, link, input),
        Dir::In => in_input(&server, link, input),
    }
}

fn out_input(server: &Rc<Server>, link: &Rc<Link>, input: Input) {
    match input {
        Input::Header(h) => {
            if h.ns != ns::STREAMS || h.name != "stream" || h.content_ns() != Some(ns::SERVER) {
                return fail(
                    server,
                    link,
                    Condition::RemoteServerNotFound,
                    "not an XMPP server stream",
                );
            }
            let version1 = h.version.as_deref().is_some_and(|v| v.starts_with("1."));
            {
                let mut n = link.nego.borrow_mut();
                n.stream_id = h.id.unwrap_or_default();
                n.version1 = version1;
            }
            if !version1 {
                // A pre-RFC 3920 server: no features, no TLS.
                if server.config.s2s.require_tls {
                    return fail(
                        server,
                        link,
                        Condition::RemoteServerNotFound,
                        "the server cannot do TLS",
                    );
                }
                authenticate_out(server, link);
            }
        }
        Input::Element(el) => out_element(server, link, el),
        Input::Close => {
            let ready = link.nego.borrow().ready;
            if !ready {
                fail(
                    server,
                    link,
                    Condition::RemoteServerNotFound,
                    "the server closed the stream",
                );
            } else {
                link.close(None);
            }
        }
        Input::Error(cond, text) => {
            tracing::debug!(link = link.id, "s2s: {text}");
            server
                .ext::<State>()
                .failures
                .borrow_mut()
                .insert(link.id, (Condition::RemoteServerNotFound, text));
            link.close(Some((cond, "")));
        }
    }
}

fn out_element(server: &Rc<Server>, link: &Rc<Link>, el: Element) {
    match (el.ns.as_str(), el.name.as_str()) {
        (ns::STREAMS, "features") => {
            if link.nego.borrow().auth == Auth::Certificate {
                // The stream restarted after SASL EXTERNAL: authenticated.
                return ready(link, Auth::Certificate);
            }
            if !link.is_secure() {
                if el.get_child("starttls", ns::TLS).is_some() {
                    link.send_raw(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
                    return;
                }
                if server.config.s2s.require_tls {
                    return fail(
                        server,
                        link,
                        Condition::RemoteServerNotFound,
                        "the server does not offer TLS",
                    );
                }
            } else {
                let remote = link.nego.borrow().remote.clone();
                let ok = cert_valid(server, &link.peer_certificates(), &remote);
                link.nego.borrow_mut().cert_ok = ok;
                let external = el.get_child("mechanisms", ns::SASL).is_some_and(|m| {
                    m.elements()
                        .any(|c| c.name == "mechanism" && c.text_content().trim() == "EXTERNAL")
                });
                // RFC 6120 §13.7.1.2.1 / XEP-0178: our certificate, offered by the peer.
                if external && (ok || server.config.s2s.dialback_for(&remote)) {
                    use base64::Engine;
                    let local = link.nego.borrow().local.clone();
                    let authzid = base64::engine::general_purpose::STANDARD.encode(&local);
                    link.send_raw(
                        format!(
                            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
                        )
                        .as_bytes(),
                    );
                    return;
                }
            }
            authenticate_out(server, link);
        }
        (ns::SASL, "success") => {
            link.nego.borrow_mut().auth = Auth::Certificate;
            link.restart_stream();
            send_header_out(link);
        }
        // EXTERNAL refused: dialback, where allowed.
        (ns::SASL, "failure") => authenticate_out(server, link),
        (ns::TLS, "proceed") => {
            let (local, remote) = {
                let n = link.nego.borrow();
                (n.local.clone(), n.remote.clone())
            };
            match client_tls(server, &local, &remote) {
                Ok(t) => {
                    link.start_tls(t);
                    send_header_out(link);
                }
                Err(e) => fail(server, link, Condition::RemoteServerNotFound, &e),
            }
        }
        (ns::TLS, "failure") => fail(server, link, Condition::RemoteServerNotFound, "TLS failed"),
        (dialback::NS, "result") => match el.get_attr("type") {
            Some("valid") => ready(link, Auth::Dialback),
            _ => fail(
                server,
                link,
                Condition::RemoteServerNotFound,
                "the server refused our dialback key",
            ),
        },
        (dialback::NS, "verify") => {
            // The answer to a verification we asked for about an incoming stream.
            let id = el.get_attr("id").unwrap_or("");
            let found = {
                let mut n = link.nego.borrow_mut();
                let pos = n.verifying.iter().position(|(_, _, sid)| sid == id);
                pos.map(|p| n.verifying.remove(p))
            };
            if let Some((in_id, claimed, _)) = found {
                let valid = el.get_attr("type") == Some("valid");
                verified(server, in_id, &claimed, Some(valid));
            }
        }
        (ns::STREAMS, "error") => {
            let cond = el
                .elements()
                .next()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            fail(
                server,
                link,
                Condition::RemoteServerNotFound,
                &format!("stream error from the server: {cond}"),
            );
        }
        _ => {
            // Stanzas on our outgoing stream (bidirectional streams were not negotiated).
            tracing::debug!(link = link.id, name = %el.name, "s2s: ignoring an element on an outgoing stream");
        }
    }
}

/// The outgoing link is authenticated: what waited goes out, and the verification requests.
fn ready(link: &Rc<Link>, auth: Auth) {
    let queue: Vec<Element> = {
        let mut n = link.nego.borrow_mut();
        n.ready = true;
        n.auth = auth;
        n.stanzas_out += n.queue.len() as u64;
        n.last_stanza = Instant::now();
        n.queue.drain(..).collect()
    };
    tracing::info!(link = link.id, remote = %link.nego.borrow().remote, secure = link.is_secure(), auth = auth.as_str(), "s2s: outgoing link ready");
    for el in &queue {
        link.send(el);
    }
    send_verifies(link);
}

/// After TLS (or without, where allowed): dialback for our domain, and the verification
/// requests waiting for this link.
fn authenticate_out(server: &Rc<Server>, link: &Rc<Link>) {
    let (local, remote, sid, cert_ok, sent) = {
        let n = link.nego.borrow();
        (
            n.local.clone(),
            n.remote.clone(),
            n.stream_id.clone(),
            n.cert_ok,
            n.result_sent,
        )
    };
    if sent {
        return;
    }
    if sid.is_empty() {
        return fail(
            server,
            link,
            Condition::RemoteServerNotFound,
            "the server gave no stream id",
        );
    }
    if !cert_ok && !server.config.s2s.dialback_for(&remote) {
        return fail(
            server,
            link,
            Condition::RemoteServerNotFound,
            "its certificate cannot be verified and dialback is not allowed for it",
        );
    }
    let key = secret(server).key(&remote, &local, &sid);
    link.send_raw(
        format!(
            "<db:result from='{}' to='{}'>{key}</db:result>",
            attr(&local),
            attr(&remote)
        )
        .as_bytes(),
    );
    link.nego.borrow_mut().result_sent = true;
    send_verifies(link);
}

fn send_verifies(link: &Link) {
    let (local, remote, todo) = {
        let mut n = link.nego.borrow_mut();
        if !n.result_sent && !n.ready {
            return;
        }
        let todo: Vec<_> = n.verifies.drain(..).collect();
        for (in_id, claimed, sid, _) in &todo {
            n.verifying.push((*in_id, claimed.clone(), sid.clone()));
        }
        (n.local.clone(), n.remote.clone(), todo)
    };
    for (_, _, sid, key) in todo {
        link.send_raw(
            format!(
                "<db:verify from='{}' to='{}' id='{}'>{}</db:verify>",
                attr(&local),
                attr(&remote),
                attr(&sid),
                attr(&key)
            )
            .as_bytes(),
        );
    }
}

// ---- incoming -------------------------------------------------------------------------------

fn in_input(server: &Rc<Server>, link: &Rc<Link>, input: Input) {
    match input {
        Input::Header(h) => in_header(server, link, h),
        Input::Element(el) => in_element(server, link, el),
        Input::Close => link.close(None),
        Input::Error(cond, text) => {
            tracing::debug!(link = link.id, "s2s: {text}");
            link.close(Some((cond, "")));
        }
    }
}

fn in_header(server: &Rc<Server>, link: &Rc<Link>, h: crate::xml::StreamHeader) {
    let local =
        h.to.clone()
            .unwrap_or_else(|| server.config.default_domain().to_owned());
    let id = random_id();
    let remote = h.from.clone().unwrap_or_default();
    let version1 = h.version.as_deref().is_some_and(|v| v.starts_with("1."));
    {
        let mut n = link.nego.borrow_mut();
        n.local = local.clone();
        if !remote.is_empty() && n.remote.is_empty() {
            n.remote = remote.clone();
        }
        n.stream_id = id.clone();
        n.version1 = version1;
    }
    let to_attr = if remote.is_empty() {
        String::new()
    } else {
        format!(" to='{}'", attr(&remote))
    };
    link.send_raw(
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
             id='{id}' from='{}'{to_attr} version='1.0'>",
            attr(&local)
        )
        .as_bytes(),
    );
    if h.ns != ns::STREAMS || h.name != "stream" || h.content_ns() != Some(ns::SERVER) {
        return link.close(Some((StreamError::InvalidNamespace, "")));
    }
    if !is_ours(server, &local) {
        return link.close(Some((
            StreamError::HostUnknown,
            "this server does not serve that domain",
        )));
    }
    if !version1 {
        return;
    }
    let require = server.config.s2s.require_tls;
    let features = if link.is_secure() {
        if !remote.is_empty() && link.nego.borrow().verified.contains(&remote) {
            // After SASL: nothing left to negotiate.
            "<stream:features/>".to_owned()
        } else {
            // XEP-0178: EXTERNAL when the certificate is valid for the domain it names.
            let chain = link.peer_certificates();
            let ok = !remote.is_empty() && cert_valid(server, &chain, &remote);
            tracing::debug!(link = link.id, %remote, certificates = chain.len(), valid = ok, "s2s: peer certificate");
            link.nego.borrow_mut().cert_ok = ok;
            let external = if ok {
                "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"
            } else {
                ""
            };
            format!(
                "<stream:features>{external}<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"
            )
        }
    } else if require {
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>".to_owned()
    } else {
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>".to_owned()
    };
    link.send_raw(features.as_bytes());
}

fn in_element(server: &Rc<Server>, link: &Rc<Link>, el: Element) {
    match (el.ns.as_str(), el.name.as_str()) {
        (ns::TLS, "starttls") => {
            if link.is_secure() {
                return link.close(Some((StreamError::PolicyViolation, "TLS is already on")));
            }
            match link::server_tls(&server_tls(server)) {
                Ok(tls) => {
                    link.send_cleartext_now(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
                    link.start_tls(tls);
                }
                Err(e) => {
                    tracing::warn!("s2s: TLS: {e}");
                    link.send_cleartext_now(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
                    link.close(None);
                }
            }
        }
        (dialback::NS, "result") => in_result(server, link, &el),
        (ns::SASL, "auth") => in_external(server, link, &el),
        (dialback::NS, "verify") => answer_verify(server, link, &el),
        (ns::CLIENT, "message" | "presence" | "iq") => in_stanza(server, link, el),
        (ns::STREAMS, "error") => link.close(None),
        _ => link.close(Some((StreamError::UnsupportedStanzaType, ""))),
    }
}

/// A bare domain in an attribute, normalised; `None` if it is not one.
fn domain_attr(el: &Element, name: &str) -> Option<String> {
    let j = Jid::new(el.get_attr(name)?).ok()?;
    (j.node().is_none() && j.resource().is_none()).then(|| j.domain().as_str().to_owned())
}

/// `<db:result from='remote' to='us'>key</db:result>`: the peer claims `remote`; we ask
/// `remote`'s authoritative server over our own link to it (XEP-0220 §2.1.3).
fn in_result(server: &Rc<Server>, link: &Rc<Link>, el: &Element) {
    if el.get_attr("type").is_some() {
        return;
    }
    let (Some(remote), Some(local)) = (domain_attr(el, "from"), domain_attr(el, "to")) else {
        return link.close(Some((
            StreamError::ImproperAddressing,
            "dialback needs from and to domains",
        )));
    };
    let reply_error = |cond: &str, text: &str| {
        link.send_raw(
            format!(
                "<db:result from='{}' to='{}' type='error'><error type='cancel'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{}</text></error></db:result>",
                attr(&local),
                attr(&remote),
                attr(text)
            )
            .as_bytes(),
        );
    };
    let s2s = &server.config.s2s;
    if !is_ours(server, &local) {
        return reply_error("item-not-found", "this server does not serve that domain");
    }
    if is_ours(server, &remote) {
        return reply_error("not-allowed", "that domain is served here");
    }
    if s2s.require_tls && !link.is_secure() {
        return link.close(Some((StreamError::PolicyViolation, "TLS is required")));
    }
    if !s2s.permits(&remote) {
        return reply_error(
            "not-allowed",
            "this server does not federate with that domain",
        );
    }
    let cert_ok = link.is_secure() && cert_valid(server, &link.peer_certificates(), &remote);
    if !cert_ok && !s2s.dialback_for(&remote) {
        return reply_error(
            "not-authorized",
            "that domain must authenticate with a valid certificate",
        );
    }
    if links_of(server, &local, &remote) >= s2s.max_links_per_domain {
        return reply_error(
            "resource-constraint",
            "too many connections from that domain",
        );
    }
    let key = el.text_content().trim().to_owned();
    if key.is_empty() || key.len() > 256 {
        return reply_error("bad-request", "no dialback key");
    }
    // The certificate proves the domain already: no need to ask its server (Prosody and
    // ejabberd take the same shortcut).
    if cert_ok {
        link.nego.borrow_mut().auth = Auth::Certificate;
        return verified(server, link.id, &remote, Some(true));
    }
    let pending = st_pending_verifies(server, link.id);
    if pending >= MAX_PENDING_VERIFIES {
        return reply_error("resource-constraint", "too many dialback requests at once");
    }
    let sid = link.nego.borrow().stream_id.clone();
    let out = out_link(server, &local, &remote);
    out.nego
        .borrow_mut()
        .verifies
        .push((link.id, remote.clone(), sid, key));
    send_verifies(&out);
}

/// Verifications pending for incoming link `in_id`, over all outgoing links.
fn st_pending_verifies(server: &Server, in_id: u64) -> usize {
    server
        .ext::<State>()
        .links
        .borrow()
        .values()
        .filter(|l| l.dir == Dir::Out)
        .map(|l| {
            let n = l.nego.borrow();
            n.verifies.iter().filter(|v| v.0 == in_id).count()
                + n.verifying.iter().filter(|v| v.0 == in_id).count()
        })
        .sum()
}

/// Incoming links to our `local` domain authenticated for `remote` (the cap is per pair of
/// domains: a peer hosting many domains talks to each of ours over links of their own).
fn links_of(server: &Server, local: &str, remote: &str) -> usize {
    server
        .ext::<State>()
        .links
        .borrow()
        .values()
        .filter(|l| {
            let n = l.nego.borrow();
            l.dir == Dir::In && n.local == local && n.verified.contains(remote)
        })
        .count()
}

/// SASL EXTERNAL on an incoming stream (XEP-0178): the peer's certificate is valid for the
/// domain its header named, and the authorisation identity (if any) is that domain.
fn in_external(server: &Rc<Server>, link: &Rc<Link>, el: &Element) {
    let failure = |cond: &str| {
        link.send_raw(
            format!("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{cond}/></failure>")
                .as_bytes(),
        );
    };
    if el.get_attr("mechanism") != Some("EXTERNAL") {
        return failure("invalid-mechanism");
    }
    let (remote, cert_ok) = {
        let n = link.nego.borrow();
        (n.remote.clone(), n.cert_ok)
    };
    let authzid = {
        use base64::Engine;
        let text = el.text_content();
        let text = text.trim();
        if text.is_empty() || text == "=" {
            Some(remote.clone())
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        }
    };
    let s2s = &server.config.s2s;
    if !cert_ok || remote.is_empty() || authzid.as_deref() != Some(remote.as_str()) {
        return failure("not-authorized");
    }
    if is_ours(server, &remote) || !s2s.permits(&remote) {
        return failure("not-authorized");
    }
    let local = link.nego.borrow().local.clone();
    if links_of(server, &local, &remote) >= s2s.max_links_per_domain {
        return failure("temporary-auth-failure");
    }
    {
        let mut n = link.nego.borrow_mut();
        n.verified.insert(remote.clone());
        n.auth = Auth::Certificate;
        n.last_stanza = Instant::now();
    }
    tracing::info!(link = link.id, %remote, "s2s: incoming link authenticated (SASL EXTERNAL)");
    link.send_raw(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    link.restart_stream();
}

/// The answer to a verification about incoming link `in_id`: `None` when it could not be
/// asked (the authoritative server was unreachable).
fn verified(server: &Rc<Server>, in_id: u64, domain: &str, valid: Option<bool>) {
    let Some(link) = link_by_id(server, in_id) else {
        return;
    };
    if link.dir != Dir::In || link.is_closed() {
        return;
    }
    let local = link.nego.borrow().local.clone();
    match valid {
        Some(true) => {
            {
                let mut n = link.nego.borrow_mut();
                n.verified.insert(domain.to_owned());
                if n.auth == Auth::None {
                    n.auth = Auth::Dialback;
                }
                n.last_stanza = Instant::now();
            }
            tracing::info!(link = in_id, remote = %domain, secure = link.is_secure(), "s2s: incoming link authenticated (dialback)");
            link.send_raw(
                format!(
                    "<db:result from='{}' to='{}' type='valid'/>",
                    attr(&local),
                    attr(domain)
                )
                .as_bytes(),
            );
        }
        Some(false) => {
            tracing::warn!(link = in_id, remote = %domain, "s2s: dialback key refused by the authoritative server");
            link.send_raw(
                format!(
                    "<db:result from='{}' to='{}' type='invalid'/>",
                    attr(&local),
                    attr(domain)
                )
                .as_bytes(),
            );
            link.close(Some((StreamError::NotAuthorized, "dialback failed")));
        }
        None => link.send_raw(
            format!(
                "<db:result from='{}' to='{}' type='error'><error type='cancel'><remote-connection-failed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
                attr(&local),
                attr(domain)
            )
            .as_bytes(),
        ),
    }
}

/// `<db:verify from='receiving' to='us' id='…'>key</db:verify>`: is this key ours?
fn answer_verify(server: &Rc<Server>, link: &Rc<Link>, el: &Element) {
    if el.get_attr("type").is_some() {
        return;
    }
    let (Some(receiving), Some(us)) = (domain_attr(el, "from"), domain_attr(el, "to")) else {
        return link.close(Some((
            StreamError::ImproperAddressing,
            "dialback needs from and to domains",
        )));
    };
    let id = el.get_attr("id").unwrap_or("");
    let valid =
        is_ours(server, &us) && secret(server).verify(&el.text_content(), &receiving, &us, id);
    link.send_raw(
        format!(
            "<db:verify from='{}' to='{}' id='{}' type='{}'/>",
            attr(&us),
            attr(&receiving),
            attr(id),
            if valid { "valid" } else { "invalid" }
        )
        .as_bytes(),
    );
}

/// A stanza from the peer: addresses checked against what the stream authenticated, then
/// routed like any other.
fn in_stanza(server: &Rc<Server>, link: &Rc<Link>, el: Element) {
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
    {
        let n = link.nego.borrow();
        if n.verified.is_empty() {
            drop(n);
            return link.close(Some((StreamError::NotAuthorized, "authenticate first")));
        }
        if !n.verified.contains(from.domain().as_str()) {
            drop(n);
            return link.close(Some((
                StreamError::InvalidFrom,
                "'from' is not a domain authenticated on this stream",
            )));
        }
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
                send_error_back(server, err);
            }
            return;
        }
        Some(Ok(j)) => j,
    };
    if !is_ours(server, to.domain().as_str()) {
        return link.close(Some((
            StreamError::HostUnknown,
            "this server does not serve that domain",
        )));
    }
    {
        let mut n = link.nego.borrow_mut();
        n.stanzas_in += 1;
        n.last_stanza = Instant::now();
    }
    crate::router::route_from_remote(server, el, from, to);
}

/// An answer to a remote sender, sent back over federation.
fn send_error_back(server: &Rc<Server>, err: Element) {
    server.route_local(err);
}

// ---- housekeeping ---------------------------------------------------------------------------

fn housekeeping(server: &Rc<Server>) {
    let s2s = &server.config.s2s;
    let setup = Duration::from_secs(s2s.connect_timeout_secs);
    let idle = Duration::from_secs(s2s.idle_timeout_secs);
    let links: Vec<Rc<Link>> = server
        .ext::<State>()
        .links
        .borrow()
        .values()
        .cloned()
        .collect();
    for l in links {
        let (opened, last, ready, verified, waiting) = {
            let n = l.nego.borrow();
            (
                n.opened,
                n.last_stanza,
                n.ready,
                !n.verified.is_empty(),
                !n.verifying.is_empty() || !n.verifies.is_empty(),
            )
        };
        match l.dir {
            Dir::Out if !ready && opened.elapsed() > setup => {
                fail(
                    server,
                    &l,
                    Condition::RemoteServerTimeout,
                    "setting up the link timed out",
                );
            }
            Dir::In if !verified && opened.elapsed() > setup => {
                l.close(Some((StreamError::ConnectionTimeout, "")));
            }
            _ if (ready || verified) && !waiting && last.elapsed() > idle => {
                tracing::debug!(link = l.id, "s2s: closing an idle link");
                l.close(None);
            }
            _ => {}
        }
    }
}
