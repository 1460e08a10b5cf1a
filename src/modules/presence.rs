//! Presence (RFC 6121 §3 and §4).
//!
//! Implemented:
//! * §3 subscriptions: the full state machine of Appendix A for subscribe, subscribed,
//!   unsubscribe and unsubscribed in any order, pending-in requests stored (with their stanza)
//!   and delivered again at every initial presence until answered, and §3.4 pre-approval
//!   (advertised with `<sub xmlns='urn:xmpp:features:pre-approval'/>`). There is no
//!   federation, so both ends are local: an outbound stanza updates the sender's roster (the
//!   "user's server" role) and is then processed at once as inbound for the contact (the
//!   "contact's server" role), with the sender's bare JID as `from` (§3.1.2). A subscribe to a
//!   local JID without an account is answered with unsubscribed (§8.5.1). With federation, a
//!   remote contact's side is its own server's: outbound stanzas go there over s2s (the
//!   `Pre(Presence, Remote)` hook updates the user's roster first), and what a remote server
//!   sends is processed as inbound here.
//! * §4 presence: initial presence broadcast to subscribers and to the user's own available
//!   resources (including the sender), updates likewise, unavailable presence (sent, or when
//!   the session ends) to subscribers, own resources and entities that got directed presence
//!   (§4.6), whether the JID it went to is bare or full, and whether or not the session had
//!   sent initial presence. Probes are answered inside the server: when a resource becomes available it is
//!   sent the last presence of every available resource of the contacts it is subscribed to
//!   and of its own other resources; a client's explicit probe gets the same answer if it is
//!   entitled to it (§4.3.2). Priority is kept on the session (`None` = unavailable), which is
//!   what message delivery to bare JIDs uses.
//! * Directed presence bookkeeping (§4.6.3) is bounded: one session is tracked for at most
//!   [`MAX_DIRECTED`] entities. Directed available presence to one more is refused with
//!   `<resource-constraint/>` (type `wait`) and not delivered, so that everyone who saw the
//!   session available is sure to see it go (a directed unavailable frees a place).
//! * Subscribers and contacts at a service domain (XEP-0100 gateways) get broadcasts and
//!   probes through the service, as a remote server would; remote subscribers and contacts
//!   get them over federation (probes from the user's bare JID, §4.3.1), and remote probes
//!   are answered when the prober is subscribed (§4.3.2).
//! * XEP-0191: no presence is broadcast or revealed between an account and a JID it blocked
//!   (either way); [`blocklist_changed`] sends the unavailable/current presence of §3.3/§3.4.
//! * XEP-0153 (vcard.rs): available presence leaves the server with the account's vCard photo
//!   hash added unless the client put in its own `vcard-temp:x:update` element. The session
//!   keeps the presence as the client sent it and the hash is added on the way out (broadcast
//!   and [`presences_of`]), so a stored presence never carries a stale hash;
//!   [`photo_changed`] broadcasts it again when the hash changes.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};

use crate::core::blocklist::is_blocked;
use crate::core::photo::add_photo_update;
use crate::core::stanza::{Condition, stanza_error};
use crate::core::{
    Connection, Flow, Module, Name, PhotoChanged, Point, ResourceAvailable, ResourceUnavailable,
    RosterItemRemoved, Routed, Server, SessionEnded, SubscriptionApproved, To, roster,
};
use crate::store::roster::RosterRow;
use crate::xml::{Element, ns};

/// Most entities one session's directed presence is tracked for (see the module docs).
pub const MAX_DIRECTED: usize = 1000;

/// Module state on the server (`server.ext::<PresenceState>()`).
#[derive(Default)]
pub struct PresenceState {
    /// Entities that got directed available presence from a resource and so must get its
    /// unavailable presence too (§4.6.3), by sender.
    directed: RefCell<HashMap<FullJid, BTreeSet<Jid>>>,
}

/// The subscription-related presence types (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionType {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubscriptionType {
    pub fn parse(s: &str) -> Option<SubscriptionType> {
        Some(match s {
            "subscribe" => SubscriptionType::Subscribe,
            "subscribed" => SubscriptionType::Subscribed,
            "unsubscribe" => SubscriptionType::Unsubscribe,
            "unsubscribed" => SubscriptionType::Unsubscribed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionType::Subscribe => "subscribe",
            SubscriptionType::Subscribed => "subscribed",
            SubscriptionType::Unsubscribe => "unsubscribe",
            SubscriptionType::Unsubscribed => "unsubscribed",
        }
    }
}

pub fn install(m: &mut Module) {
    m.feature(Element::new("sub", ns::PRE_APPROVAL));
    m.hook(Point::Deliver(Name::Presence, To::Bare), 0, to_bare);
    m.hook(Point::Deliver(Name::Presence, To::Host), 0, to_bare);
    m.hook(Point::Deliver(Name::Presence, To::Full), 0, to_full);
    m.hook(Point::Pre(Name::Presence, To::Remote), 0, to_remote);
    m.hook(Point::Pre(Name::Presence, To::Service), 0, to_component);
    m.on(0, |server, e: &mut SessionEnded| {
        session_gone(server, &e.jid, e.was_available)
    });
    m.on(0, |server, e: &mut RosterItemRemoved| {
        roster_item_removed(server, &e.user, &e.contact, &e.before, e.by.as_ref());
    });
    m.on(0, |server, e: &mut PhotoChanged| {
        photo_changed(server, &e.user)
    });
}

/// `Deliver(Presence, Bare|Host)`: without `to`, the session's own presence; else presence to
/// a local bare JID.
fn to_bare(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if let Some(sender) = ev.from_remote() {
        return from_remote(server, sender, ev);
    }
    let (Some(conn), Some(from)) = (ev.connection(), ev.from_client()) else {
        return Flow::Continue;
    };
    let el = std::mem::replace(&mut ev.stanza, Element::stanza("presence"));
    match ev.to.as_ref() {
        None => own_presence(server, conn, from, el),
        Some(to) => directed_to_bare(server, from, &to.to_bare(), el),
    }
    Flow::Handled
}

/// `Deliver(Presence, Full)`.
fn to_full(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    if let Some(sender) = ev.from_remote() {
        return from_remote(server, sender, ev);
    }
    let Some(from) = ev.from_client() else {
        return Flow::Continue;
    };
    let el = std::mem::replace(&mut ev.stanza, Element::stanza("presence"));
    let Some(to) = ev.to_full() else {
        return Flow::Continue;
    };
    directed_to_full(server, from, to, el);
    Flow::Handled
}

/// `Pre(Presence, Remote)`: a client's presence for a remote JID. Subscription stanzas update
/// the user's roster (the user's server's part, §3) and go on to the contact's server through
/// [`inbound`]; directed presence is remembered (§4.6) and left to federation's delivery.
fn to_remote(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    // Without federation the router bounces it, and nothing changes here.
    if !ev.reachable {
        return Flow::Continue;
    }
    let (Some(from), Some(to)) = (ev.from_client(), ev.to.clone()) else {
        return Flow::Continue;
    };
    let kind = ev.kind().map(str::to_owned);
    match kind.as_deref() {
        None | Some("unavailable") => {
            if !note_directed(server, from, &to, kind.is_none()) {
                refuse_untracked(server, from, &ev.stanza);
                return Flow::Handled;
            }
            Flow::Continue
        }
        Some(t) => match SubscriptionType::parse(t) {
            Some(st) => {
                let el = std::mem::replace(&mut ev.stanza, Element::stanza("presence"));
                outbound(server, &from.to_bare(), &to.to_bare(), st, el);
                Flow::Handled
            }
            None => Flow::Continue,
        },
    }
}

/// `Pre(Presence, Service)`: an external component's JIDs are handled like another server's
/// (subscriptions in the roster, directed presence tracked); in-process services keep their
/// own state.
fn to_component(server: &Rc<Server>, ev: &mut Routed<'_>) -> Flow {
    match ev.to.as_ref() {
        Some(to) if server.config.is_component(to.domain().as_str()) => to_remote(server, ev),
        _ => Flow::Continue,
    }
}

/// Presence from a remote server for a local bare or full JID (or this server's domain).
fn from_remote(server: &Rc<Server>, sender: &Jid, ev: &mut Routed<'_>) -> Flow {
    let Some(to) = ev.to.clone() else {
        return Flow::Handled;
    };
    let mut el = std::mem::replace(&mut ev.stanza, Element::stanza("presence"));
    let local = to.node().is_some() && server.config.is_hosted(to.domain().as_str());
    if !local {
        return Flow::Handled;
    }
    let kind = el.get_attr("type").map(str::to_owned);
    match kind.as_deref() {
        None | Some("unavailable") | Some("error") => match to.try_as_full() {
            Ok(full) => {
                server.deliver_to_full(full, &el);
            }
            // §8.5.2: presence errors for a bare JID are not delivered.
            Err(_) if kind.as_deref() == Some("error") => {}
            Err(bare) => deliver_to_available(server, bare, &el),
        },
        Some("probe") => remote_probe(server, &sender.to_bare(), &to.to_bare()),
        Some(t) => {
            if let Some(st) = SubscriptionType::parse(t) {
                // Subscription stanzas are between bare JIDs (§3.1.3).
                let from = sender.to_bare();
                el.set_attr("from", from.to_string());
                el.set_attr("to", to.to_bare().to_string());
                inbound(server, &to.to_bare(), &from, st, el);
            }
        }
    }
    Flow::Handled
}

/// A remote contact's probe of local `user` (§4.3.2): answered with the presence of each of
/// the user's available resources (unavailable if none) when the contact is subscribed to it
/// and neither blocked the other; otherwise nothing is revealed.
fn remote_probe(server: &Rc<Server>, contact: &BareJid, user: &BareJid) {
    if !roster::subscription(server, user, contact).has_from()
        || is_blocked_either_way(server, user, contact)
    {
        return;
    }
    let presences = presences_of(server, user, contact, None);
    if presences.is_empty() {
        server.route_local(
            Element::stanza("presence")
                .attr("from", user.to_string())
                .attr("to", contact.to_string())
                .attr("type", "unavailable"),
        );
    }
    for mut p in presences {
        p.set_attr("to", contact.to_string());
        server.route_local(p);
    }
}

/// A domain that is neither hosted here nor a service: reached over federation.
fn is_remote(server: &Server, domain: &str) -> bool {
    !server.config.is_hosted(domain) && server.service(domain).is_none()
}

// ---- entry points from the router -------------------------------------------------------------

/// Presence without `to`: the session's own availability (§4.2, §4.4, §4.5).
fn own_presence(server: &Rc<Server>, conn: &Rc<Connection>, from: &FullJid, el: Element) {
    match el.get_attr("type") {
        None => {
            let el = announce_available(server, from, el);
            available(server, conn, from, el)
        }
        Some("unavailable") => {
            server
                .hooks
                .fire(server, &mut ResourceUnavailable { jid: from.clone() });
            let was_available = {
                let mut sessions = server.sessions.borrow_mut();
                let Some(s) = sessions.get_mut(from) else {
                    return;
                };
                s.presence = None;
                s.priority.take().is_some()
            };
            going_offline(server, from, &el, was_available);
        }
        // Subscription stanzas, probes and errors need an addressee; without one they mean
        // nothing and are dropped.
        Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" | "probe" | "error") => {}
        Some(_) => bounce(conn, &el, Condition::BadRequest, "unknown presence type"),
    }
}

/// Fires [`ResourceAvailable`] for a valid available presence of a bound session, before this
/// module records it (hooks see whether it is the session's first: caps-based PEP interest and
/// last items, offline delivery). Gives the stanza back.
fn announce_available(server: &Rc<Server>, from: &FullJid, el: Element) -> Element {
    let priority = match el.child_text("priority", ns::CLIENT) {
        None => 0,
        Some(p) => match p.parse::<i8>() {
            Ok(p) => p,
            // Refused by `available`.
            Err(_) => return el,
        },
    };
    let initial = match server.sessions.borrow().get(from) {
        Some(s) => s.priority.is_none(),
        None => return el,
    };
    let mut event = ResourceAvailable {
        jid: from.clone(),
        presence: el,
        initial,
        priority,
    };
    server.hooks.fire(server, &mut event);
    event.presence
}

/// Presence to a local bare JID: subscription stanzas go through the state machine, probes
/// are answered, anything else is directed presence to the account's available resources.
fn directed_to_bare(server: &Rc<Server>, from: &FullJid, to: &BareJid, el: Element) {
    let kind = el.get_attr("type").map(str::to_owned);
    match kind.as_deref() {
        None | Some("unavailable") => {
            if *to != from.to_bare()
                && !note_directed(server, from, &Jid::from(to.clone()), kind.is_none())
            {
                return refuse_untracked(server, from, &el);
            }
            deliver_to_available(server, to, &el);
        }
        Some("probe") => probe(server, from, to),
        // §8.5.2: presence errors for a bare JID are not delivered.
        Some("error") => {}
        Some(t) => match SubscriptionType::parse(t) {
            Some(st) => outbound(server, &from.to_bare(), to, st, el),
            None => {
                if let Some(reply) =
                    stanza_error(&el, Condition::BadRequest, "unknown presence type")
                {
                    server.deliver_to_full(from, &reply);
                }
            }
        },
    }
}

/// Presence to a full JID at a hosted domain. Available and unavailable presence is directed
/// presence (§4.6): delivered if that session exists, and remembered so that the session's
/// end sends `unavailable` there too (§4.6.3). Other types are delivered as they are.
fn directed_to_full(server: &Rc<Server>, from: &FullJid, to: &FullJid, el: Element) {
    let kind = el.get_attr("type");
    if matches!(kind, None | Some("unavailable")) && to != from {
        let available = kind.is_none();
        let exists = server.sessions.borrow().get(to).is_some();
        // §8.5.3.2.3: presence for a resource that has no session is dropped (and so is not
        // remembered); an unavailable one still forgets it.
        if available && !exists {
            return;
        }
        if !note_directed(server, from, &Jid::from(to.clone()), available) {
            return refuse_untracked(server, from, &el);
        }
    }
    server.deliver_to_full(to, &el);
}

/// A session ended (stream closed cleanly or by a stream error, connection lost, resumption
/// window over): its unavailable presence goes to everyone who saw it available (§4.5.2) and
/// to every entity it sent directed presence to, available or not (§4.6.3). The session is
/// already unbound.
fn session_gone(server: &Rc<Server>, jid: &FullJid, was_available: bool) {
    let directed = server
        .ext::<PresenceState>()
        .directed
        .borrow()
        .contains_key(jid);
    if !was_available && !directed {
        return;
    }
    let el = Element::stanza("presence")
        .attr("from", jid.to_string())
        .attr("type", "unavailable");
    going_offline(server, jid, &el, was_available);
}

/// Directed available presence beyond [`MAX_DIRECTED`]: not sent, and the sender is told.
fn refuse_untracked(server: &Server, from: &FullJid, el: &Element) {
    tracing::debug!(%from, "directed presence refused: {MAX_DIRECTED} entities tracked already");
    if let Some(reply) = stanza_error(
        el,
        Condition::ResourceConstraint,
        "too many entities got directed presence from this session",
    ) {
        server.deliver_to_full(from, &reply);
    }
}

// ---- availability -----------------------------------------------------------------------------

fn available(server: &Rc<Server>, conn: &Rc<Connection>, from: &FullJid, el: Element) {
    let priority = match el.child_text("priority", ns::CLIENT) {
        None => 0,
        Some(p) => match p.parse::<i8>() {
            Ok(p) => p,
            Err(_) => {
                return bounce(
                    conn,
                    &el,
                    Condition::BadRequest,
                    "priority must be an integer from -128 to 127",
                );
            }
        },
    };
    let was_available = {
        let mut sessions = server.sessions.borrow_mut();
        let Some(s) = sessions.get_mut(from) else {
            return;
        };
        s.presence = Some(el.clone());
        s.priority.replace(priority).is_some()
    };
    let mut el = el;
    add_photo_update(server, &from.to_bare(), &mut el);
    broadcast(server, from, &el);
    if !was_available {
        initial(server, conn, from);
    }
}

/// Sends `el` (presence from `from`) to the available resources of every local subscriber
/// (`from`/`both`) and to all of the user's own available resources, the sender included
/// (§4.2.2, §4.4.2). Each copy is addressed to the recipient's bare JID.
pub fn broadcast(server: &Rc<Server>, from: &FullJid, el: &Element) {
    let user = from.to_bare();
    let mut targets = available_sessions(server, &user);
    let via_services = subscriber_targets(server, from, &mut targets);
    send_each(&targets, el);
    to_services(server, from, &via_services, el);
}

/// Adds the available resources of `from`'s local subscribers to `targets`; returns the
/// subscribers at service domains (a gateway's JID, its contacts), which get presence
/// through their service.
fn subscriber_targets(
    server: &Server,
    from: &FullJid,
    targets: &mut Vec<(FullJid, Rc<Connection>)>,
) -> Vec<Jid> {
    let mut via_services = Vec::new();
    for contact in roster::subscribers(server, &from.to_bare()) {
        if blocked(server, from, &contact) {
            continue;
        }
        let domain = contact.domain().as_str();
        if server.config.is_hosted(domain) {
            targets.extend(available_sessions(server, &contact));
        } else {
            // A service's or a remote server's: each passes it on.
            via_services.push(Jid::from(contact));
        }
    }
    via_services
}

/// Hands a copy of `el`, addressed to each of `to`, to the service of its domain, or to the
/// remote server over federation.
fn to_services(server: &Rc<Server>, from: &FullJid, to: &[Jid], el: &Element) {
    for to in to {
        let mut el = el.clone();
        el.set_attr("to", to.to_string());
        if let Some(service) = server.service(to.domain().as_str()) {
            service.handle(server, el, from);
        } else if is_remote(server, to.domain().as_str()) {
            el.set_attr("from", from.to_string());
            server.route_local(el);
        }
    }
}

/// What a resource learns when it becomes available: its own other resources' presence, the
/// presence of local contacts it is subscribed to (the answer to the probes of §4.3, given
/// here directly), and unanswered subscription requests (§3.1.3). Contacts at a service
/// domain (a gateway and its legacy contacts) are sent a real probe through their service.
fn initial(server: &Rc<Server>, conn: &Rc<Connection>, from: &FullJid) {
    let user = from.to_bare();
    let to = from.to_string();
    let mut presences = presences_of(server, &user, &user, Some(from));
    let mut probes = Vec::new();
    for contact in roster::subscribed_to(server, &user) {
        let domain = contact.domain().as_str();
        if server.config.is_hosted(domain) {
            // The contact's own roster decides (§4.3.2); both are normally in step.
            if roster::subscription(server, &contact, &user).has_from() {
                presences.extend(presences_of(server, &contact, &user, None));
            }
        } else if server.service(domain).is_some()
            && !is_blocked_either_way(server, &user, &contact)
        {
            // A gateway's contacts answer a probe themselves (§4.3.1).
            probes.push(Jid::from(contact));
        } else if !is_blocked_either_way(server, &user, &contact) {
            // A remote contact's server answers (§4.3.1: from the user's bare JID).
            server.route_local(
                Element::stanza("presence")
                    .attr("from", user.to_string())
                    .attr("to", contact.to_string())
                    .attr("type", "probe"),
            );
        }
    }
    for mut p in presences {
        p.set_attr("to", to.as_str());
        conn.send(&p);
    }
    for req in roster::pending_requests(server, &user) {
        conn.send(&req);
    }
    let probe = Element::stanza("presence")
        .attr("from", from.to_string())
        .attr("type", "probe");
    to_services(server, from, &probes, &probe);
}

/// Unavailable presence from `from`: to subscribers and own resources if it was available,
/// and to every entity it sent directed presence to (§4.5.2, §4.6.3).
fn going_offline(server: &Rc<Server>, from: &FullJid, el: &Element, was_available: bool) {
    let directed = server
        .ext::<PresenceState>()
        .directed
        .borrow_mut()
        .remove(from);
    let user = from.to_bare();
    let mut targets = Vec::new();
    let mut elsewhere = Vec::new();
    if was_available {
        targets.extend(
            available_sessions(server, &user)
                .into_iter()
                .filter(|(j, _)| j != from),
        );
        elsewhere = subscriber_targets(server, from, &mut targets);
    }
    for to in directed.into_iter().flatten() {
        match to.try_as_full() {
            Ok(full) if server.config.is_hosted(full.domain().as_str()) => {
                if let Some(c) = server
                    .sessions
                    .borrow()
                    .get(full)
                    .and_then(|s| s.connection())
                {
                    targets.push((full.clone(), c));
                }
            }
            Err(bare) if server.config.is_hosted(bare.domain().as_str()) => {
                targets.extend(available_sessions(server, bare));
            }
            _ => elsewhere.push(to),
        }
    }
    elsewhere.sort();
    elsewhere.dedup();
    send_each(&targets, el);
    to_services(server, from, &elsewhere, el);
}

/// Records (or, for unavailable presence, forgets) that `from` sent directed presence to
/// `to`, so `to` gets `from`'s unavailable presence when it goes offline (§4.6). The router
/// calls this for local bare and full JIDs; other callers may add services. Returns false,
/// recording nothing, when `from` has [`MAX_DIRECTED`] entities recorded already and `to` is
/// not one of them: the caller must not send the presence.
pub fn note_directed(server: &Server, from: &FullJid, to: &Jid, available: bool) -> bool {
    let state = server.ext::<PresenceState>();
    let mut directed = state.directed.borrow_mut();
    if available {
        let set = directed.entry(from.clone()).or_default();
        if set.len() >= MAX_DIRECTED && !set.contains(to) {
            return false;
        }
        set.insert(to.clone());
    } else if let Some(set) = directed.get_mut(from) {
        set.remove(to);
        if set.is_empty() {
            directed.remove(from);
        }
    }
    true
}

/// How many entities `from`'s directed presence is tracked for (tests, diagnostics).
pub fn directed_count(server: &Server, from: &FullJid) -> usize {
    server
        .ext::<PresenceState>()
        .directed
        .borrow()
        .get(from)
        .map_or(0, BTreeSet::len)
}

/// A client's probe (§4.3.2): answered with the contact's available presence if the sender is
/// subscribed to it (or probes its own account), with unavailable if it has none; otherwise
/// nothing is revealed.
fn probe(server: &Rc<Server>, from: &FullJid, to: &BareJid) {
    let user = from.to_bare();
    if *to != user && !roster::subscription(server, to, &user).has_from() {
        return;
    }
    if is_blocked_either_way(server, &user, to) {
        return;
    }
    let presences = presences_of(server, to, &user, Some(from));
    if presences.is_empty() {
        let el = Element::stanza("presence")
            .attr("from", to.to_string())
            .attr("to", from.to_string())
            .attr("type", "unavailable");
        server.deliver_to_full(from, &el);
    }
    for mut p in presences {
        p.set_attr("to", from.to_string());
        server.deliver_to_full(from, &p);
    }
}

// ---- subscriptions ----------------------------------------------------------------------------

/// An outbound subscription stanza from `user` to `contact` (§3.1.2, §3.2.2, §3.3.2, §3.4):
/// updates `user`'s roster, then hands the stanza to the contact's side.
pub fn outbound(
    server: &Rc<Server>,
    user: &BareJid,
    contact: &BareJid,
    kind: SubscriptionType,
    mut el: Element,
) {
    // A user is implicitly subscribed both ways to itself.
    if user == contact {
        return;
    }
    el.set_attr("from", user.to_string());
    el.set_attr("to", contact.to_string());
    use SubscriptionType::*;
    match kind {
        Subscribe => {
            roster::update(server, user, contact, |r| {
                if !r.subscription.has_to() {
                    r.ask = true;
                    r.in_roster = true;
                }
            });
            inbound(server, contact, user, kind, el);
        }
        Subscribed => {
            let row = roster::row(server, user, contact).unwrap_or_default();
            if row.pending_in.is_some() {
                let approved = roster::update(server, user, contact, |r| {
                    r.subscription = r.subscription.with_from(true);
                    r.pending_in = None;
                    r.approved = false;
                    r.in_roster = true;
                });
                if approved.is_some() {
                    inbound(server, contact, user, kind, el);
                    send_presence_of(server, user, contact);
                }
            } else if !row.subscription.has_from() {
                // Pre-approval (§3.4.2): remembered, not routed.
                roster::update(server, user, contact, |r| {
                    r.approved = true;
                    r.in_roster = true;
                });
            }
        }
        Unsubscribe => {
            roster::update(server, user, contact, |r| {
                r.subscription = r.subscription.with_to(false);
                r.ask = false;
            });
            inbound(server, contact, user, kind, el);
        }
        Unsubscribed => {
            let change = roster::update(server, user, contact, |r| {
                r.subscription = r.subscription.with_from(false);
                r.pending_in = None;
                r.approved = false;
            });
            inbound(server, contact, user, kind, el);
            if change.is_some_and(|c| c.before.subscription.has_from()) {
                send_unavailable_of(server, user, contact);
            }
        }
    }
}

/// The contact's side of a subscription stanza from `sender` to local `recipient` (§3.1.3,
/// §3.1.6, §3.2.3, §3.3.3, §3.4.2). Stanzas for other domains are dropped: no federation.
fn inbound(
    server: &Rc<Server>,
    recipient: &BareJid,
    sender: &BareJid,
    kind: SubscriptionType,
    el: Element,
) {
    if !server.config.is_hosted(recipient.domain().as_str()) {
        // The contact's server is another one: it gets the stanza (from the user's bare JID,
        // set by the caller) over federation.
        if is_remote(server, recipient.domain().as_str()) {
            server.route_local(el);
        }
        return;
    }
    use SubscriptionType::*;
    if !roster::exists(server, recipient) {
        if kind == Subscribe {
            // §8.5.1: no such user; deny on its behalf so the request does not stay pending.
            let deny = subscription_stanza(Unsubscribed, recipient, sender);
            inbound(server, sender, recipient, Unsubscribed, deny);
        }
        return;
    }
    match kind {
        Subscribe => {
            let row = roster::row(server, recipient, sender).unwrap_or_default();
            if row.subscription.has_from() {
                // Already subscribed: answer on the recipient's behalf (§3.1.3).
                auto_approve(server, recipient, sender);
            } else if row.approved {
                let changed = roster::update(server, recipient, sender, |r| {
                    r.subscription = r.subscription.with_from(true);
                    r.approved = false;
                });
                if changed.is_some() {
                    auto_approve(server, recipient, sender);
                }
            } else {
                let stored = el.to_string();
                roster::update(server, recipient, sender, |r| r.pending_in = Some(stored));
                deliver_to_available(server, recipient, &el);
            }
        }
        Subscribed => {
            let change = roster::update(server, recipient, sender, |r| {
                if r.ask {
                    r.ask = false;
                    r.subscription = r.subscription.with_to(true);
                }
            });
            if change.is_some_and(|c| c.changed()) {
                deliver_to_available(server, recipient, &el);
            }
        }
        Unsubscribe => {
            let change = roster::update(server, recipient, sender, |r| {
                r.subscription = r.subscription.with_from(false);
                r.pending_in = None;
            });
            if let Some(c) = change
                && c.changed()
            {
                deliver_to_available(server, recipient, &el);
                if c.before.subscription.has_from() {
                    send_unavailable_of(server, recipient, sender);
                }
            }
        }
        Unsubscribed => {
            let change = roster::update(server, recipient, sender, |r| {
                r.subscription = r.subscription.with_to(false);
                r.ask = false;
            });
            if change.is_some_and(|c| c.changed()) {
                deliver_to_available(server, recipient, &el);
            }
        }
    }
}

/// `approver` (already subscribed-to or pre-approved) approves `requester`: the subscribed
/// goes to the requester's side, followed by the approver's current presence.
fn auto_approve(server: &Rc<Server>, approver: &BareJid, requester: &BareJid) {
    let el = subscription_stanza(SubscriptionType::Subscribed, approver, requester);
    inbound(
        server,
        requester,
        approver,
        SubscriptionType::Subscribed,
        el,
    );
    send_presence_of(server, approver, requester);
}

/// §2.5.2: after `user` removed `contact` from the roster, the subscriptions it had are
/// cancelled (unsubscribed for `from` or a pending request, unsubscribe for `to` or `ask`).
fn roster_item_removed(
    server: &Rc<Server>,
    user: &BareJid,
    contact: &BareJid,
    before: &RosterRow,
    by: Option<&FullJid>,
) {
    use SubscriptionType::*;
    // A contact at a service domain (a gateway's legacy contact) hears it through the service,
    // which removes the legacy buddy (XEP-0100 §4.5, as a remote server would be told).
    let domain = contact.domain().as_str();
    if server.service(domain).is_some() {
        if let Some(by) = by {
            let el = Element::stanza("presence").attr("type", Unsubscribe.as_str());
            to_services(server, by, &[Jid::from(contact.clone())], &el);
        }
        return;
    }
    if before.subscription.has_from() || before.pending_in.is_some() {
        inbound(
            server,
            contact,
            user,
            Unsubscribed,
            subscription_stanza(Unsubscribed, user, contact),
        );
        if before.subscription.has_from() {
            send_unavailable_of(server, user, contact);
        }
    }
    if before.subscription.has_to() || before.ask {
        inbound(
            server,
            contact,
            user,
            Unsubscribe,
            subscription_stanza(Unsubscribe, user, contact),
        );
    }
}

fn subscription_stanza(kind: SubscriptionType, from: &BareJid, to: &BareJid) -> Element {
    Element::stanza("presence")
        .attr("from", from.to_string())
        .attr("to", to.to_string())
        .attr("type", kind.as_str())
}

/// The current presence of each of `from`'s available resources, to `to`'s available
/// resources (after a subscription is approved, §3.1.5).
fn send_presence_of(server: &Rc<Server>, from: &BareJid, to: &BareJid) {
    if !server.config.is_hosted(to.domain().as_str()) {
        if is_remote(server, to.domain().as_str()) {
            for mut p in presences_of(server, from, to, None) {
                p.set_attr("to", to.to_string());
                server.route_local(p);
            }
        }
        return;
    }
    let presences = presences_of(server, from, to, None);
    let targets = available_sessions(server, to);
    for p in presences {
        send_each(&targets, &p);
    }
    // PEP: the contact's interested resources get `from`'s last items too.
    server.hooks.fire(
        server,
        &mut SubscriptionApproved {
            owner: from.clone(),
            contact: to.clone(),
        },
    );
}

/// Unavailable presence from each of `from`'s available resources to `to` (a subscription
/// to `from` ended, §3.2.2, §3.3.3).
fn send_unavailable_of(server: &Rc<Server>, from: &BareJid, to: &BareJid) {
    let remote = !server.config.is_hosted(to.domain().as_str());
    if remote && !is_remote(server, to.domain().as_str()) {
        return;
    }
    let resources: Vec<FullJid> = server
        .sessions
        .borrow()
        .of(from)
        .iter()
        .filter(|s| s.priority.is_some())
        .map(|s| s.jid.clone())
        .collect();
    let targets = available_sessions(server, to);
    for r in resources.into_iter().filter(|r| !blocked(server, r, to)) {
        let el = Element::stanza("presence")
            .attr("from", r.to_string())
            .attr("type", "unavailable");
        if remote {
            server.route_local(el.attr("to", to.to_string()));
        } else {
            send_each(&targets, &el);
        }
    }
}

/// XEP-0191 §3.3 and §3.4, for the blocking module to call after `user` changed its
/// blocklist: subscribers covered by `items` (the JIDs just blocked, or just unblocked — for
/// "unblock all", everything that was blocked) get unavailable presence from each of `user`'s
/// available resources when `now_blocked`, and otherwise, if nothing blocks them any more,
/// `user`'s current presence.
pub fn blocklist_changed(server: &Rc<Server>, user: &BareJid, items: &[Jid], now_blocked: bool) {
    let covers = |item: &Jid, contact: &BareJid| match item.node() {
        None => item.domain() == contact.domain(),
        Some(_) => item.to_bare() == *contact,
    };
    let affected: Vec<BareJid> = roster::subscribers(server, user)
        .into_iter()
        .filter(|c| items.iter().any(|i| covers(i, c)))
        .collect();
    for contact in affected {
        if now_blocked {
            // Sent although blocked now: the contact must see the user go away.
            let targets = available_sessions(server, &contact);
            for (r, _) in available_sessions(server, user) {
                let el = Element::stanza("presence")
                    .attr("from", r.to_string())
                    .attr("type", "unavailable");
                send_each(&targets, &el);
            }
        } else if !is_blocked_either_way(server, user, &contact) {
            send_presence_of(server, user, &contact);
        }
    }
}

/// XEP-0153, for the vCard module to call after `user`'s photo hash changed: the current
/// presence of each of `user`'s available resources goes out again, with the new hash, to
/// everyone a presence broadcast reaches. Resources whose presence carries the client's own
/// `vcard-temp:x:update` element are skipped: the server does not change theirs.
fn photo_changed(server: &Rc<Server>, user: &BareJid) {
    let current: Vec<(FullJid, Element)> = server
        .sessions
        .borrow()
        .of(user)
        .iter()
        .filter(|s| s.priority.is_some())
        .filter_map(|s| Some((s.jid.clone(), s.presence.clone()?)))
        .filter(|(_, p)| p.get_child("x", ns::VCARD_UPDATE).is_none())
        .collect();
    for (jid, mut el) in current {
        add_photo_update(server, user, &mut el);
        broadcast(server, &jid, &el);
    }
}

// ---- delivery helpers -------------------------------------------------------------------------

/// The last presence of each available resource of `of` (except `except`) that `viewer` may
/// see: XEP-0191 blocks presence both ways.
fn presences_of(
    server: &Server,
    of: &BareJid,
    viewer: &BareJid,
    except: Option<&FullJid>,
) -> Vec<Element> {
    let found: Vec<(FullJid, Element)> = server
        .sessions
        .borrow()
        .of(of)
        .iter()
        .filter(|s| Some(&s.jid) != except && s.priority.is_some())
        .filter_map(|s| Some((s.jid.clone(), s.presence.clone()?)))
        .collect();
    found
        .into_iter()
        .filter(|(jid, _)| of == viewer || !blocked(server, jid, viewer))
        .map(|(_, mut p)| {
            add_photo_update(server, of, &mut p);
            p
        })
        .collect()
}

/// XEP-0191 §3.3: no presence from `from` reaches `to` when either blocked the other.
fn blocked(server: &Server, from: &FullJid, to: &BareJid) -> bool {
    is_blocked(server, &from.to_bare(), &Jid::from(to.clone()))
        || is_blocked(server, to, &Jid::from(from.clone()))
}

fn is_blocked_either_way(server: &Server, a: &BareJid, b: &BareJid) -> bool {
    is_blocked(server, a, &Jid::from(b.clone())) || is_blocked(server, b, &Jid::from(a.clone()))
}

/// The available resources of `bare` (sent initial presence and not unavailable since).
fn available_sessions(server: &Server, bare: &BareJid) -> Vec<(FullJid, Rc<Connection>)> {
    server.sessions.borrow().available(bare)
}

/// True when `bare` has at least one available resource.
pub fn is_available(server: &Server, bare: &BareJid) -> bool {
    server
        .sessions
        .borrow()
        .of(bare)
        .iter()
        .any(|s| s.priority.is_some())
}

/// Delivers `el` unchanged to every available resource of `bare`.
pub fn deliver_to_available(server: &Server, bare: &BareJid, el: &Element) {
    for (_, c) in available_sessions(server, bare) {
        c.send(el);
    }
}

/// Sends a copy of `el` to each target once, addressed to the target's bare JID.
fn send_each(targets: &[(FullJid, Rc<Connection>)], el: &Element) {
    let mut seen = BTreeSet::new();
    for (jid, conn) in targets {
        if seen.insert(jid) {
            let mut el = el.clone();
            el.set_attr("to", jid.to_bare().to_string());
            conn.send(&el);
        }
    }
}

fn bounce(conn: &Connection, el: &Element, cond: Condition, text: &str) {
    if let Some(reply) = stanza_error(el, cond, text) {
        conn.send(&reply);
    }
}
