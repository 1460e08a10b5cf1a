//! The other side of XEP-0114: this process's services (the transport, the torrent service)
//! attached as components to another XMPP server — another wockd, Prosody, ejabberd — one
//! stream per `[[component_link]]` (`wockd component`).
//!
//! Inside such a process the host's users are foreign (not `domains` of this process): what a
//! service sends them is routed as to a remote domain, which this module's delivery hook takes
//! over the stream of the sending service. Stanzas from the host go straight to the service of
//! their `to` domain. The host's users get an account row here without credentials (nobody
//! logs in to a component process), which the services' own tables refer to.
//!
//! The stream reconnects with backoff (1 s doubling to 30 s); while it is down, stanzas for the
//! host wait in a bounded queue (`MAX_QUEUE`, then the oldest are dropped with a warning:
//! they are a service's messages to users, which nobody could be told about).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use jid::{BareJid, FullJid, Jid};
use sha1::{Digest, Sha1};

use super::NS_ACCEPT;
use crate::core::events::Routed;
use crate::core::hooks::{Flow, Hooks, Name, Point, To};
use crate::core::stanza::{Condition, StreamError, stanza_error};
use crate::core::uplink::{Grants, NS_PRIVILEGE, NS_PRIVILEGE_1, Uplinks};
use crate::net::link::{Dir, Input, Kind, Link, attr};
use crate::net::source;
use crate::server::Server;
use crate::xml::{Element, ns};

static KIND: Kind = Kind {
    name: "component-link",
    stream_ns: NS_ACCEPT,
    on_input,
    on_closed: link_closed,
    // The host is trusted: its own rate is what it sends.
    read_rate: |_| (usize::MAX / 2, usize::MAX / 2),
};

const MAX_QUEUE: usize = 10_000;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Up {
    secret: String,
    address: std::net::SocketAddr,
    link: Option<Rc<Link>>,
    ready: bool,
    queue: VecDeque<Element>,
    backoff: Duration,
}

#[derive(Default)]
struct State {
    ups: RefCell<HashMap<String, Up>>,
    next_id: Cell<u64>,
}

/// Installs the delivery hook for what services send to the host's users.
pub fn install(hooks: &Hooks) {
    hooks.hook(Point::Deliver(Name::Any, To::Remote), 10, to_host);
}

/// Connects every `[[component_link]]`.
pub fn start(server: &Rc<Server>) -> Result<(), String> {
    let st = server.ext::<State>();
    for l in &server.config.component_link {
        let secret = l.load_secret().map_err(|e| e.to_string())?;
        let Some(address) = l.address else {
            return Err(format!("component link `{}` has no address", l.domain));
        };
        st.ups.borrow_mut().insert(
            l.domain.clone(),
            Up {
                secret,
                address,
                link: None,
                ready: false,
                queue: VecDeque::new(),
                backoff: Duration::from_secs(1),
            },
        );
        connect(server, &l.domain);
    }
    Ok(())
}

/// Closes the links (shutdown).
pub fn stop(server: &Rc<Server>) {
    let links: Vec<Rc<Link>> = server
        .ext::<State>()
        .ups
        .borrow_mut()
        .drain()
        .filter_map(|(_, u)| u.link)
        .collect();
    for l in links {
        l.close(None);
    }
}

fn connect(server: &Rc<Server>, domain: &str) {
    let st = server.ext::<State>();
    let Some(address) = st.ups.borrow().get(domain).map(|u| u.address) else {
        return;
    };
    let weak = Rc::downgrade(server);
    let domain = domain.to_owned();
    source::spawn_local(async move {
        let result = crate::net::connect_tcp(address, Duration::from_secs(10)).await;
        let Some(server) = weak.upgrade() else { return };
        let st = server.ext::<State>();
        if !st.ups.borrow().contains_key(&domain) {
            return;
        }
        let sock = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(component = %domain, %address, "cannot reach the host server: {e}");
                return retry(&server, &domain);
            }
        };
        let id = st.next_id.get() + 1;
        st.next_id.set(id);
        let link = Link::new(&server, &KIND, id, Dir::Out, &domain, &address.to_string());
        if let Err(e) = link.attach(sock, None) {
            tracing::warn!(component = %domain, "component link: {e}");
            return retry(&server, &domain);
        }
        if let Some(up) = st.ups.borrow_mut().get_mut(&domain) {
            up.link = Some(link.clone());
        }
        link.send_raw(
            format!(
                "<?xml version='1.0'?><stream:stream xmlns='{NS_ACCEPT}' \
                 xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
                attr(&domain)
            )
            .as_bytes(),
        );
    });
}

fn retry(server: &Rc<Server>, domain: &str) {
    let st = server.ext::<State>();
    let delay = {
        let mut ups = st.ups.borrow_mut();
        let Some(up) = ups.get_mut(domain) else {
            return;
        };
        up.link = None;
        up.ready = false;
        let d = up.backoff;
        up.backoff = (d * 2).min(MAX_BACKOFF);
        d
    };
    let weak = Rc::downgrade(server);
    let domain = domain.to_owned();
    server.after(delay, move || {
        if let Some(server) = weak.upgrade() {
            connect(&server, &domain);
        }
    });
}

fn link_closed(server: &Rc<Server>, id: u64) {
    let st = server.ext::<State>();
    let domain = st
        .ups
        .borrow()
        .iter()
        .find(|(_, u)| u.link.as_ref().is_some_and(|l| l.id == id))
        .map(|(d, _)| d.clone());
    if let Some(domain) = domain {
        tracing::warn!(component = %domain, "the link to the host server closed; reconnecting");
        retry(server, &domain);
    }
}

fn domain_of(link: &Link) -> String {
    link.nego.borrow().local.clone()
}

fn on_input(link: &Rc<Link>, input: Input) {
    let Some(server) = link.server() else { return };
    let domain = domain_of(link);
    match input {
        Input::Header(h) => {
            if h.content_ns() != Some(NS_ACCEPT) {
                return link.close(Some((StreamError::InvalidNamespace, "")));
            }
            let id = h.id.clone().unwrap_or_default();
            let secret = server
                .ext::<State>()
                .ups
                .borrow()
                .get(&domain)
                .map(|u| u.secret.clone())
                .unwrap_or_default();
            let digest: String = Sha1::digest(format!("{id}{secret}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            link.nego.borrow_mut().stream_id = id;
            link.send_raw(format!("<handshake>{digest}</handshake>").as_bytes());
        }
        Input::Element(el) => element(&server, link, &domain, el),
        Input::Close => link.close(None),
        Input::Error(cond, text) => {
            tracing::warn!(component = %domain, "component link: {text}");
            link.close(Some((cond, "")));
        }
    }
}

fn element(server: &Rc<Server>, link: &Rc<Link>, domain: &str, el: Element) {
    if el.is("error", ns::STREAMS) {
        let cond = el
            .elements()
            .find(|e| e.ns == ns::STREAM_ERRORS)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        // A wrong secret or domain will not fix itself: said loudly, still retried.
        tracing::error!(component = %domain, condition = %cond, "the host server refused the component");
        return link.close(None);
    }
    if el.is("handshake", ns::CLIENT) {
        let queued: Vec<Element> = {
            let st = server.ext::<State>();
            let mut ups = st.ups.borrow_mut();
            let Some(up) = ups.get_mut(domain) else {
                return;
            };
            up.ready = true;
            up.backoff = Duration::from_secs(1);
            up.queue.drain(..).collect()
        };
        link.nego.borrow_mut().ready = true;
        tracing::info!(component = %domain, "attached to the host server");
        for q in &queued {
            link.send(q);
        }
        return;
    }
    if !link.nego.borrow().ready {
        return link.close(Some((StreamError::NotAuthorized, "")));
    }
    link.nego.borrow_mut().stanzas_in += 1;
    from_host(server, link, domain, el);
}

/// A stanza from the host server for one of our services.
fn from_host(server: &Rc<Server>, link: &Rc<Link>, domain: &str, el: Element) {
    // The host's privilege advertisement.
    if el.name == "message"
        && let Some(p) = el
            .get_child("privilege", NS_PRIVILEGE)
            .or_else(|| el.get_child("privilege", NS_PRIVILEGE_1))
        && el.get_attr("from").is_some_and(|f| !f.contains('@'))
    {
        let grants = Grants::parse(p);
        tracing::info!(component = %domain, ?grants, "privileges granted by the host");
        server.ext::<Uplinks>().set(domain, grants);
        return;
    }
    // Answers to what we sent (roster sets, privileged IQs). A refused roster set falls back
    // to the XEP-0100 way: a subscription request from the contact.
    if el.name == "iq" && matches!(el.get_attr("type"), Some("result" | "error")) {
        let refused = el.get_attr("type") == Some("error");
        if refused {
            tracing::debug!(component = %domain, "the host answered an error: {el}");
        }
        let id = el.get_attr("id").unwrap_or_default();
        if let Some((user, contact)) = Uplinks::roster_set_answered(server, id, refused) {
            tracing::info!(component = %domain, "the host refused a roster set; asking the user to subscribe instead");
            server.route_local(
                Element::stanza("presence")
                    .attr("type", "subscribe")
                    .attr("from", contact.as_str())
                    .attr("to", user.as_str()),
            );
        }
        return;
    }
    let (Some(Ok(from)), Some(Ok(to))) = (
        el.get_attr("from").map(Jid::new),
        el.get_attr("to").map(Jid::new),
    ) else {
        return;
    };
    let Some(service) = server.service(to.domain().as_str()) else {
        if let Some(err) = stanza_error(&el, Condition::ServiceUnavailable, "") {
            link.send(&err);
        }
        return;
    };
    let Some(from) = requester(&from, domain) else {
        return;
    };
    ensure_account(server, &from.to_bare());
    service.handle(server, el, &from);
}

/// Services take a full JID: a bare sender (subscription presence, a server) is given the
/// component's domain as resource.
fn requester(from: &Jid, domain: &str) -> Option<FullJid> {
    match from.try_as_full() {
        Ok(full) => Some(full.clone()),
        Err(bare) => Some(FullJid::from_parts(
            bare.node(),
            bare.domain(),
            &jid::ResourcePart::new(domain).ok()?,
        )),
    }
}

/// The host's user gets an account row here (no credentials) for the services' tables.
fn ensure_account(server: &Server, user: &BareJid) {
    let Some(node) = user.node() else { return };
    if server.account_exists(user) {
        return;
    }
    if let Err(e) = server
        .store
        .create_account(node.as_str(), user.domain().as_str(), &[])
    {
        tracing::debug!(%user, "account row: {e}");
    }
}

/// `Deliver(Any, Remote)`: what a service sends to the host's users, over its link.
fn to_host(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let from_domain = ev
        .stanza
        .get_attr("from")
        .and_then(|f| Jid::new(f).ok())
        .map(|f| f.domain().to_string());
    let st = server.ext::<State>();
    let link = {
        let mut ups = st.ups.borrow_mut();
        let key = match from_domain {
            Some(d) if ups.contains_key(&d) => d,
            // In a process that also serves clients, other remote stanzas are federation's.
            _ if !server.config.listen.is_empty() => return Flow::Continue,
            // A stanza the component process made (an error): the first link.
            _ => match ups.keys().next() {
                Some(k) => k.clone(),
                None => return Flow::Continue,
            },
        };
        let Some(up) = ups.get_mut(&key) else {
            return Flow::Continue;
        };
        if !up.ready {
            if up.queue.len() >= MAX_QUEUE {
                up.queue.pop_front();
                tracing::warn!(component = %key, "host unreachable: queue full, dropping the oldest stanza");
            }
            up.queue.push_back(ev.stanza.clone());
            return Flow::Handled;
        }
        up.link.clone()
    };
    if let Some(link) = link {
        link.send(&ev.stanza);
        link.nego.borrow_mut().stanzas_out += 1;
    }
    Flow::Handled
}
