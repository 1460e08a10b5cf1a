//! The IM transport: libpurple inside wockd, other networks as XMPP contacts and rooms.
//!
//! Implements, per configured service domain (e.g. `irc.localhost` → `prpl-irc`):
//! XEP-0030 identity `gateway/<type>`, XEP-0100 (`jabber:iq:gateway`) with XEP-0106
//! escaping, XEP-0077 registration with a data form generated from the prpl's user splits and
//! protocol options (several legacy accounts per user), the legacy buddy list as roster items
//! with presence both ways and avatars, messages both ways (markup, XEP-0085 chat states),
//! group chats as XEP-0045 rooms (a subset) with the network's room list, libpurple's prompts
//! as XEP-0004 forms with per-user certificate trust, capped exponential reconnects with
//! jitter and a stall watchdog, and XEP-0050 commands. See each file's header for details.
//!
//! Boundaries: stanzas come in through the router's `Service` trait ([`service::Gateway`]) and
//! go out through `router::ServiceHost` (to a session, to available sessions, to the account's
//! bare JID with mailbox and archive, sent carbons) — the two halves of an XEP-0114 component
//! link, so the transport could later run attached to another server. What it still takes
//! directly from the server is its own tables in the store and the roster writes in
//! `roster_bridge` (over a component link: XEP-0356 roster privilege).
//!
//! Threading: libpurple is not thread-safe. It runs on the server's main loop thread; every
//! function here that touches libpurple runs there (stanza handlers and libpurple's own
//! callbacks both do), and [`core::on_main_thread`] guards the entry points.
//!
//! Files: `purple/` (the safe wrappers over libpurple: all of the transport's FFI code, with
//! the ownership rules), `core` (init, the way back to the server), `certs` (TLS trust per
//! user), `escape` (XEP-0106), `accounts` (legacy
//! accounts: store ↔ libpurple), `service` (the service JID: disco, gateway, registration,
//! routing), `contacts`, `avatars` (buddy icons as vCard/XEP-0153), `messages`, `muc`
//! (rooms, XEP-0402 bookmarks), `roomlist` (public rooms in disco#items), `requests`,
//! `reconnect` (backoff, stall watchdog), `adhoc`, `roster_bridge` (the roster module's
//! interface), `events` (link up/down and account removal, between the feature files).

mod accounts;
mod adhoc;
mod avatars;
mod certs;
mod contacts;
mod core;
pub mod escape;
mod events;
mod forms;
mod messages;
mod muc;
mod policy;
mod purple;
mod reconnect;
mod requests;
mod roomlist;
mod roster_bridge;
mod service;
mod text;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use jid::{BareJid, FullJid};

use crate::server::Server;

/// One configured network.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    pub domain: String,
    pub prpl: String,
    pub name: String,
    /// The XEP-0030 gateway type (`irc`, `xmpp`, …).
    pub kind: String,
    pub defaults: BTreeMap<String, String>,
    /// Accounts of this service may connect to non-public addresses (see `policy`).
    pub allow_private: bool,
}

/// Whether a legacy account is up, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Offline,
    Connecting,
    Online,
    /// Disconnected after an error; a reconnect may be scheduled.
    Down(String),
    /// Given up (fatal error or retry cap) until the user re-logs in.
    Failed(String),
    Disabled,
}

/// A joined (or joining) group chat.
#[derive(Debug, Default)]
pub struct Room {
    /// The nick the user asked for.
    pub nick: String,
    /// The user's sessions that joined the room (they get its traffic).
    pub joined_by: Vec<FullJid>,
    pub joined: bool,
    pub subject: Option<String>,
    /// Occupant nicks announced to the user (to retract them when the account drops).
    pub occupants: std::collections::BTreeSet<String>,
    /// Ids of the user's groupchat messages not yet reflected by the prpl (XEP-0045 §7.4).
    pub pending_ids: std::collections::VecDeque<String>,
}

/// A legacy account at run time.
pub struct Legacy {
    pub id: i64,
    pub owner: BareJid,
    pub service: String,
    pub protocol: String,
    pub username: String,
    /// Alive from `accounts::attach` until `accounts::detach`.
    pub account: purple::Account,
    pub state: LinkState,
    /// 0 for the user's first account on the service; n for the (n+1)-th (`%n+1` in JIDs).
    pub index: usize,
    pub backoff: reconnect::Backoff,
    pub rooms: HashMap<String, Room>,
    /// Last error told to the user, so a reconnect loop does not repeat it.
    pub told: Option<String>,
}

/// The transport's per-server state (in `Server::ext`).
#[derive(Default)]
pub struct Transport {
    pub services: RefCell<Vec<ServiceInfo>>,
    pub legacy: RefCell<HashMap<i64, Legacy>>,
    pub requests: RefCell<requests::Pending>,
    /// Lifecycle events between the feature files.
    pub events: events::Events,
}

impl Transport {
    pub fn get(server: &Server) -> Rc<Transport> {
        server.ext::<Transport>()
    }

    pub fn service(&self, domain: &str) -> Option<ServiceInfo> {
        self.services
            .borrow()
            .iter()
            .find(|s| s.domain == domain)
            .cloned()
    }

    /// The legacy account id for a libpurple account pointer.
    pub fn id_of(&self, acc: purple::Account) -> Option<i64> {
        self.legacy
            .borrow()
            .values()
            .find(|l| l.account == acc)
            .map(|l| l.id)
    }

    /// The user's legacy accounts on a service, by id (index order).
    pub fn accounts_of(&self, owner: &BareJid, service: &str) -> Vec<i64> {
        let mut v: Vec<(usize, i64)> = self
            .legacy
            .borrow()
            .values()
            .filter(|l| &l.owner == owner && l.service == service)
            .map(|l| (l.index, l.id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The account an address `node@service` of `owner` belongs to, and the legacy name.
    pub fn resolve(&self, owner: &BareJid, service: &str, node: &str) -> Option<(i64, String)> {
        let (name, index) = escape::parse_contact_node(node);
        let legacy = self.legacy.borrow();
        let account = |index| {
            legacy
                .values()
                .find(|l| &l.owner == owner && l.service == service && l.index == index)
        };
        match account(index) {
            Some(l) => Some((l.id, name)),
            // No such account: `%n` was part of the legacy name itself (`x%2` on account 1).
            None if index > 0 => account(0).map(|l| (l.id, escape::unescape(node))),
            None => None,
        }
    }

    /// The contact JID of legacy name `name` on account `id`.
    pub fn contact_jid(&self, id: i64, name: &str) -> Option<BareJid> {
        let legacy = self.legacy.borrow();
        let l = legacy.get(&id)?;
        BareJid::new(&format!(
            "{}@{}",
            escape::contact_node(name, l.index),
            l.service
        ))
        .ok()
    }
}

/// Set by the server in the environment of a transport process it starts again after the
/// previous one died (`[transport] process = "separate"`, `component::child`).
pub const RESTARTED_ENV: &str = "WOCKD_TRANSPORT_RESTARTED";

/// After a crash of the transport process: each user with legacy accounts is told once, from
/// the gateway of their first account, while the accounts log in again.
fn tell_restarted(server: &Rc<Server>) {
    use crate::router::ServiceHost;
    let owners: BTreeMap<BareJid, String> = Transport::get(server)
        .legacy
        .borrow()
        .values()
        .map(|l| (l.owner.clone(), l.service.clone()))
        .collect();
    for (owner, service) in owners {
        server.to_account(
            &owner,
            crate::xml::Element::stanza("message")
                .attr("type", "headline")
                .attr("from", service)
                .attr("to", owner.to_string())
                .child(crate::xml::Element::stanza("body").text(
                    "The gateway stopped unexpectedly and has been restarted; your accounts on \
                     other networks are reconnecting.",
                )),
        );
    }
}

/// Starts the transport for `server` if the configuration enables it: initialises libpurple
/// (once per process), registers one service per network and logs in the stored accounts.
/// Call after `server.start()` on the thread that runs the server's main loop.
pub fn install(server: &Rc<Server>) {
    let cfg = &server.config.transport;
    if !cfg.enabled {
        return;
    }
    let dir = server.config.data_dir().join("purple");
    if let Err(e) = core::init(server, &dir) {
        tracing::error!("IM transport not started: {e}");
        return;
    }
    let list = cfg.effective_services(server.config.default_domain());
    let t = Transport::get(server);
    events::subscribe_all(&t.events);
    for crate::config::TransportService {
        domain,
        prpl,
        name,
        defaults,
        allow_private_addresses,
    } in list
    {
        let Some(mut info) = service::describe(&domain, &prpl, name, defaults) else {
            tracing::error!(%domain, %prpl, "no such libpurple protocol plugin; service not offered");
            continue;
        };
        info.allow_private = allow_private_addresses.unwrap_or(cfg.allow_private_addresses);
        tracing::info!(%domain, %prpl, "IM transport service");
        t.services.borrow_mut().push(info);
        server.add_service(
            &domain,
            Rc::new(service::Gateway {
                domain: domain.clone(),
            }),
        );
    }
    accounts::load_all(server);
    if std::env::var_os(RESTARTED_ENV).is_some() {
        tell_restarted(server);
    }
    reconnect::start_watchdog(server);
    // A deleted local account takes its legacy accounts along: logged out, removed from
    // libpurple and the store.
    server
        .hooks
        .on(0, |server, e: &mut crate::core::AccountDeleted| {
            let ids: Vec<i64> = Transport::get(server)
                .legacy
                .borrow()
                .values()
                .filter(|l| l.owner == e.account)
                .map(|l| l.id)
                .collect();
            for id in ids {
                accounts::remove(server, id);
            }
        });
}
