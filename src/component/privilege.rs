//! XEP-0356 Privileged Entity, server side: what a component configured with
//! `[components.privileges]` may do for the server's users. The wire format and the choices
//! follow ejabberd's and Prosody's mod_privilege (what Slidge and Spectrum 2 are tested with):
//!
//! - after the handshake the component is told its permissions (`urn:xmpp:privilege:2`), one
//!   `<message/>` per hosted domain, `from` that domain (Slidge files permissions under it);
//! - **roster** `get`/`set`: a roster IQ to a user's bare JID is served by the roster rules as
//!   the user's own request, answered to the component; a set may state the item's
//!   subscription (as in Prosody). Roster pushes to the component are not sent (`push='false'`;
//!   neither ejabberd nor Prosody sends them);
//! - **message** `outgoing`: `<privilege><forwarded><message from='user@host'/>` (namespace
//!   `:2`, or `:1` as Spectrum 2 sends it) is routed as if the user had sent it from a client:
//!   blocking, sent carbons, the sender's archive, then delivery to its `to` (a gateway gets its
//!   own message back, as from ejabberd and Prosody; Slidge ignores it by id);
//! - **presence** `managed_entity`: users' own available/unavailable broadcasts are copied to
//!   the component (from the full JID); `roster` adds the presence of contacts that arrives over
//!   federation or from other components (local contacts' presence is not copied);
//! - **iq** by namespace (`privileged_iq`, `:2` only): the inner IQ is served as the user's own
//!   request when it is for the user's account or the user's server (PEP bookmarks, avatars,
//!   MDS: what Slidge does); the answer comes back wrapped in `<privilege><forwarded>`, with the
//!   inner `<error/>` also on the outer IQ so that the component sees the failure. An inner IQ
//!   for anybody else is `forbidden` (not routed onward).
//!
//! Missing permissions get `forbidden`, malformed requests `bad-request`.

use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

use crate::config::{Access, MessagePerm, PresencePerm, Privileges};
use crate::core::events::Routed;
use crate::core::hooks::{Flow, Hooks, Name, Point, To};
use crate::core::stanza::{Condition, stanza_error};
use crate::iq::{Incoming, IqType, ReplyTo};
use crate::net::link::Link;
use crate::server::Server;
use crate::xml::{Element, ns};

pub const NS_V2: &str = crate::iq::NS_PRIVILEGE;
pub const NS_V1: &str = "urn:xmpp:privilege:1";

/// The presence copies (installed with the component hooks).
pub fn install(hooks: &Hooks) {
    // Observers: they copy and let the stanza go on (after blocking, at 1000).
    hooks.hook(Point::Pre(Name::Presence, To::Bare), 500, own_presence);
    hooks.hook(
        Point::Deliver(Name::Presence, To::Bare),
        500,
        contact_presence,
    );
    hooks.hook(
        Point::Deliver(Name::Presence, To::Full),
        500,
        contact_presence,
    );
}

fn privileges<'a>(server: &'a Server, domain: &str) -> Option<&'a Privileges> {
    server
        .config
        .components
        .iter()
        .find(|c| c.domain == domain)
        .map(|c| &c.privileges)
}

fn granted(p: &Privileges) -> bool {
    p.roster != Access::None
        || p.message != MessagePerm::None
        || p.presence != PresencePerm::None
        || p.iq.values().any(|a| *a != Access::None)
}

/// After the handshake: tells the component what it is granted (nothing when nothing is).
pub fn advertise(server: &Rc<Server>, link: &Rc<Link>, domain: &str) {
    let Some(p) = privileges(server, domain).filter(|p| granted(p)) else {
        return;
    };
    let mut privilege = Element::new("privilege", NS_V2);
    let mut roster = Element::new("perm", NS_V2)
        .attr("access", "roster")
        .attr("type", p.roster.as_str());
    if p.roster.allows_get() {
        roster.set_attr("push", "false");
    }
    privilege.push(roster);
    privilege.push(Element::new("perm", NS_V2).attr("access", "message").attr(
        "type",
        match p.message {
            MessagePerm::None => "none",
            MessagePerm::Outgoing => "outgoing",
        },
    ));
    privilege.push(Element::new("perm", NS_V2).attr("access", "presence").attr(
        "type",
        match p.presence {
            PresencePerm::None => "none",
            PresencePerm::ManagedEntity => "managed_entity",
            PresencePerm::Roster => "roster",
        },
    ));
    if !p.iq.is_empty() {
        let mut iq = Element::new("perm", NS_V2).attr("access", "iq");
        for (namespace, access) in &p.iq {
            iq.push(
                Element::new("namespace", NS_V2)
                    .attr("ns", namespace.as_str())
                    .attr("type", access.as_str()),
            );
        }
        privilege.push(iq);
    }
    for host in &server.config.domains {
        link.send(
            &Element::stanza("message")
                .attr("from", host.as_str())
                .attr("to", domain)
                .attr("id", crate::net::link::random_id())
                .child(privilege.clone()),
        );
    }
}

/// A stanza from the component: serves it when it is a privileged request (and returns
/// `None`), or hands it back to be routed.
pub fn intercept(
    server: &Rc<Server>,
    link: &Rc<Link>,
    domain: &str,
    el: Element,
    _from: &Jid,
    to: &Jid,
) -> Option<Element> {
    match el.name.as_str() {
        "message" if is_server(server, to) && privilege_child(&el).is_some() => {
            outgoing_message(server, link, domain, &el);
            None
        }
        "iq" if matches!(el.get_attr("type"), Some("get" | "set")) => {
            let user = local_user(server, to);
            if let Some(q) = el.get_child("query", ns::ROSTER)
                && user.is_some()
            {
                let q = q.clone();
                roster(server, link, domain, &el, user?, q);
                return None;
            }
            if el.get_child("privileged_iq", NS_V2).is_some() {
                privileged_iq(server, link, domain, &el, user);
                return None;
            }
            Some(el)
        }
        _ => Some(el),
    }
}

/// `to` is one of the server's own domains (no user part).
fn is_server(server: &Server, to: &Jid) -> bool {
    to.node().is_none() && to.resource().is_none() && server.config.is_hosted(to.domain().as_str())
}

/// `to` as a local user's bare JID.
fn local_user(server: &Server, to: &Jid) -> Option<BareJid> {
    (to.node().is_some()
        && to.resource().is_none()
        && server.config.is_hosted(to.domain().as_str()))
    .then(|| to.to_bare())
}

fn privilege_child(el: &Element) -> Option<&Element> {
    el.get_child("privilege", NS_V2)
        .or_else(|| el.get_child("privilege", NS_V1))
}

fn answer_error(link: &Link, el: &Element, cond: Condition, text: &str) {
    if let Some(err) = stanza_error(el, cond, text) {
        link.send(&err);
    }
}

/// The user, as the origin of what a component does for them: their bare JID with the
/// component's domain as resource (no client of theirs has it, so every client gets carbons).
fn acting_as(user: &BareJid, domain: &str) -> Option<FullJid> {
    FullJid::from_parts(
        user.node(),
        user.domain(),
        &jid::ResourcePart::new(domain).ok()?,
    )
    .into()
}

// ---- message "outgoing" ---------------------------------------------------------------------

fn outgoing_message(server: &Rc<Server>, link: &Link, domain: &str, el: &Element) {
    let allowed = privileges(server, domain).is_some_and(|p| p.message == MessagePerm::Outgoing);
    if !allowed {
        return answer_error(link, el, Condition::Forbidden, "insufficient privilege");
    }
    let Some(privilege) = privilege_child(el) else {
        return;
    };
    let mut forwarded = privilege
        .elements()
        .filter(|e| e.is("forwarded", ns::FORWARD));
    let (Some(forwarded), None) = (forwarded.next(), forwarded.next()) else {
        return answer_error(
            link,
            el,
            Condition::BadRequest,
            "exactly one <forwarded/> is needed",
        );
    };
    let Some(inner) = forwarded.get_child("message", ns::CLIENT) else {
        return answer_error(
            link,
            el,
            Condition::BadRequest,
            "no jabber:client <message/> in <forwarded/>",
        );
    };
    let user = inner
        .get_attr("from")
        .and_then(|f| Jid::new(f).ok())
        .and_then(|f| local_user(server, &f));
    let Some(user) = user.filter(|u| server.account_exists(u)) else {
        return answer_error(
            link,
            el,
            Condition::Forbidden,
            "'from' of the forwarded message must be the bare JID of a user here",
        );
    };
    if inner
        .get_attr("to")
        .and_then(|t| Jid::new(t).ok())
        .is_none()
    {
        return answer_error(
            link,
            el,
            Condition::BadRequest,
            "the forwarded message needs a valid 'to'",
        );
    }
    let Some(origin) = acting_as(&user, domain) else {
        return;
    };
    crate::router::route_on_behalf(server, &origin, inner.clone());
}

// ---- roster ---------------------------------------------------------------------------------

fn roster(
    server: &Rc<Server>,
    link: &Link,
    domain: &str,
    el: &Element,
    user: BareJid,
    query: Element,
) {
    let Some(kind) = el.get_attr("type").and_then(IqType::parse) else {
        return;
    };
    let access = privileges(server, domain).map_or(Access::None, |p| p.roster);
    let ok = match kind {
        IqType::Get => access.allows_get(),
        IqType::Set => access.allows_set(),
    };
    if !ok {
        return answer_error(
            link,
            el,
            Condition::Forbidden,
            "no roster privilege for this request",
        );
    }
    if !server.account_exists(&user) {
        return answer_error(link, el, Condition::ItemNotFound, "no such user");
    }
    serve_as_user(
        server,
        link,
        domain,
        el,
        &user,
        Jid::from(user.clone()),
        kind,
        query,
        None,
        el.get_attr("id").unwrap_or_default(),
    );
}

/// Runs the server's IQ rule for `payload` as `user`'s own request; the answer goes to the
/// component (wrapped when `wrap` names the outer IQ's id).
/// `to`: the user's own account, or the user's server.
#[allow(clippy::too_many_arguments)]
fn serve_as_user(
    server: &Rc<Server>,
    link: &Link,
    domain: &str,
    el: &Element,
    user: &BareJid,
    to: Jid,
    kind: IqType,
    payload: Element,
    wrap: Option<String>,
    id: &str,
) {
    let Some(origin) = acting_as(user, domain) else {
        return;
    };
    let Some(handler) =
        server
            .stream
            .session_stage()
            .rules()
            .find(&payload.ns, &payload.name, kind)
    else {
        return answer_error(link, el, Condition::ServiceUnavailable, "");
    };
    let Ok(component) = Jid::new(domain) else {
        return;
    };
    handler(Incoming::new(
        server.clone(),
        ReplyTo::Privileged { component, wrap },
        id.to_owned(),
        kind,
        Some(origin),
        Some(to),
        el.get_attr("xml:lang").map(str::to_owned),
        payload,
    ));
}

// ---- privileged_iq --------------------------------------------------------------------------

fn privileged_iq(
    server: &Rc<Server>,
    link: &Link,
    domain: &str,
    el: &Element,
    user: Option<BareJid>,
) {
    let forbid = |text: &str| answer_error(link, el, Condition::Forbidden, text);
    let Some(user) = user.filter(|u| server.account_exists(u)) else {
        return forbid("'to' must be the bare JID of a user here");
    };
    let Some(kind) = el.get_attr("type").and_then(IqType::parse) else {
        return;
    };
    let Some(wrapper) = el.get_child("privileged_iq", NS_V2) else {
        return;
    };
    let Some(inner) = wrapper.get_child("iq", ns::CLIENT) else {
        return forbid("<privileged_iq/> needs a jabber:client <iq/>");
    };
    if inner.get_attr("type").and_then(IqType::parse) != Some(kind) {
        return forbid("the inner IQ's type differs");
    }
    let Some(inner_id) = inner.get_attr("id") else {
        return forbid("the inner IQ needs an id");
    };
    if inner
        .get_attr("from")
        .is_some_and(|f| Jid::new(f).ok().map(|j| j.to_bare()) != Some(user.clone()))
        || inner
            .get_attr("from")
            .is_some_and(|f| Jid::new(f).is_ok_and(|j| j.resource().is_some()))
    {
        return forbid("the inner IQ's 'from' must be the user's bare JID");
    }
    let mut payloads = inner.elements();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return forbid("the inner IQ needs exactly one child");
    };
    let access = privileges(server, domain)
        .and_then(|p| p.iq.get(&payload.ns))
        .copied()
        .unwrap_or(Access::None);
    let ok = match kind {
        IqType::Get => access.allows_get(),
        IqType::Set => access.allows_set(),
    };
    if !ok {
        return forbid("no privilege for this namespace and type");
    }
    // The user's own account (or none: the same), or the user's server.
    let target = inner.get_attr("to").map(Jid::new);
    let own = match &target {
        None => true,
        Some(Ok(t)) => t.to_bare() == user && t.resource().is_none(),
        Some(Err(_)) => false,
    };
    let host = matches!(&target, Some(Ok(t)) if t.node().is_none() && t.resource().is_none() && t.domain() == user.domain());
    if !own && !host {
        return forbid("only requests to the user's own account or server are served");
    }
    let outer_id = el.get_attr("id").unwrap_or_default().to_owned();
    // The user's server answers from its domain; the account from the user's bare JID.
    let to = if host {
        Jid::from(user.domain().to_owned())
    } else {
        Jid::from(user.clone())
    };
    serve_as_user(
        server,
        link,
        domain,
        el,
        &user,
        to,
        kind,
        payload.clone(),
        Some(outer_id),
        inner_id,
    );
}

// ---- presence -------------------------------------------------------------------------------

/// `Pre(Presence, Bare)`: a user's own broadcast (no `to`, available or unavailable) is copied
/// to components with the presence privilege.
fn own_presence(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let (Some(from), None) = (ev.from_client(), ev.to.as_ref()) else {
        return Flow::Continue;
    };
    if !matches!(ev.kind(), None | Some("unavailable")) {
        return Flow::Continue;
    }
    copy_presence(
        server,
        &ev.stanza,
        from.as_str(),
        None,
        PresencePerm::ManagedEntity,
    );
    Flow::Continue
}

/// `Deliver(Presence, Bare|Full)`: a contact's presence from another server or component,
/// for a local user, is copied to components with the `roster` presence privilege (not to
/// the component it came from).
fn contact_presence(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    let (Some(from), Some(to)) = (ev.from_remote(), ev.to.as_ref()) else {
        return Flow::Continue;
    };
    if !matches!(ev.kind(), None | Some("unavailable"))
        || local_user(server, &Jid::from(to.to_bare())).is_none()
    {
        return Flow::Continue;
    }
    copy_presence(
        server,
        &ev.stanza,
        &from.to_string(),
        Some(from.domain().as_str()),
        PresencePerm::Roster,
    );
    Flow::Continue
}

fn copy_presence(
    server: &Rc<Server>,
    stanza: &Element,
    from: &str,
    except: Option<&str>,
    least: PresencePerm,
) {
    for c in &server.config.components {
        let enough = match least {
            PresencePerm::ManagedEntity => c.privileges.presence != PresencePerm::None,
            _ => c.privileges.presence == PresencePerm::Roster,
        };
        if !enough || except == Some(c.domain.as_str()) {
            continue;
        }
        let Some(link) = super::link_of(server, &c.domain) else {
            continue;
        };
        let mut copy = stanza.clone();
        copy.set_attr("from", from);
        copy.set_attr("to", c.domain.as_str());
        link.send(&copy);
    }
}
