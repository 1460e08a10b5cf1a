//! XEP-0163 Personal Eventing via Pubsub: every account is a XEP-0060 pubsub service at its
//! bare JID (IQs to it, or with no `to` for the sender's own), with the subset of XEP-0060
//! that clients use for avatars (XEP-0084), bookmarks (XEP-0402), nicknames (XEP-0172) and
//! OMEMO keys (XEP-0384).
//!
//! Implemented:
//! * Publish (§7.1) with auto-create (§7.1.3.6) and publish-options as preconditions
//!   (§7.1.5: `conflict` + `precondition-not-met` when an existing node differs; a new node
//!   gets them as its configuration), ItemIDs given or generated, re-publication replaces.
//!   Retract (§7.2) with `notify`; items retrieval (§6.5) of all, the newest `max_items`, or
//!   by ItemID; node creation with or without configuration (§8.1), configure get/set
//!   (§8.2), default configuration (§8.3), delete (§8.4) and purge (§8.5). Only the owner
//!   publishes or manages (one publisher per node, XEP-0163 §2.2).
//! * Configuration (config.rs): `access_model` (open, presence — the default —, roster with
//!   `roster_groups_allowed`, whitelist = the owner only), `persist_items`, `max_items`
//!   (a number or `max`, capped at `quotas.pep_max_items`),
//!   `send_last_published_item`, `deliver_notifications`, `deliver_payloads`,
//!   `notify_retract`, `notify_delete`, `title`. Nodes and items persist in SQLite
//!   (store/pep.rs); the oldest items beyond `max_items` are dropped on publish.
//! * Access (§6.5.9): the owner always; others per access model, refused with
//!   `not-authorized` + `presence-subscription-required` / `not-in-roster-group`, or
//!   `not-allowed` + `closed-node`; missing nodes and items are `item-not-found`.
//! * Notifications (XEP-0163 §4, notify.rs): `headline` messages from the owner's bare JID to
//!   each available resource (non-negative priority) of the owner and of contacts with a
//!   presence subscription to it (the "auto-subscribe" feature), filtered by the `+notify`
//!   features of the resource's XEP-0115 caps (caps.rs, "filtered-notifications"), by the
//!   access model and by the owner's blocklist. A resource that becomes available (or whose
//!   caps newly want a node) gets the last item of each such node of its own account and of
//!   the contacts whose presence it receives, with a XEP-0203 delay (§4.3.2).
//!
//! Not implemented: explicit subscriptions (subscribe/unsubscribe/options answer
//! `feature-not-implemented`, so a contact without a presence subscription is notified of
//! nothing, even for open nodes), subscription and affiliation management, collection nodes,
//! item expiry, XEP-0033 `replyto`, and XEP-0390 caps. A *new* presence subscription sends
//! the last items at once ([`subscription_approved`]).

mod caps;
mod config;
mod notify;

use std::rc::Rc;

use jid::{BareJid, FullJid};

use crate::core::stanza::{Condition, ErrorType, StanzaError};
use crate::core::{
    AccountDiscoInfo, AccountDiscoItems, AccountDiscoNode, Incoming, Module, PepPublish,
    ResourceAvailable, ResourceUnavailable, Server, SessionEnded, SubscriptionApproved, roster,
};
use crate::store::StoreError;
use crate::store::pep::{NodeConfig, PepItem, PepNode, PepWrite, Target};
use crate::xml::{Element, ns};

use notify::Denied;

/// Longest NodeID and ItemID accepted, in bytes.
const MAX_ID_BYTES: usize = 1024;

/// XEP-0060 features of the PEP service at an account's bare JID (§10), for disco#info
/// there (XEP-0163 §8.1).
const FEATURES: &[&str] = &[
    ns::PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#config-node-max",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
];

pub fn install(m: &mut Module) {
    m.iqs()
        .rule(ns::PUBSUB, "pubsub")
        .get(pubsub_get)
        .set(pubsub_set);
    m.iqs()
        .rule(ns::PUBSUB_OWNER, "pubsub")
        .get(owner_get)
        .set(owner_set);
    m.on(0, |server, e: &mut ResourceAvailable| {
        on_available_presence(server, &e.jid, &e.presence, e.initial, e.priority)
    });
    m.on(0, |server, e: &mut ResourceUnavailable| {
        caps::forget(server, &e.jid)
    });
    m.on(20, |server, e: &mut SessionEnded| {
        caps::forget(server, &e.jid)
    });
    m.on(0, |server, e: &mut SubscriptionApproved| {
        subscription_approved(server, &e.owner, &e.contact)
    });
    // XEP-0163 §8.1: an account's bare JID is a PEP service.
    m.on(0, |_, e: &mut AccountDiscoInfo| {
        e.identities.push(account_identity());
        e.features.extend_from_slice(FEATURES);
    });
    m.on(0, |server, e: &mut AccountDiscoItems| {
        e.items.extend(disco_items(server, &e.owner, &e.requester));
    });
    m.on(0, |server, e: &mut PepPublish| {
        if e.published.is_none() {
            let payload = std::mem::replace(&mut e.payload, Element::new("item", ns::PUBSUB));
            e.published = Some(publish_if_missing(
                server,
                &e.owner,
                &e.node,
                &e.item_id,
                payload,
                e.options.take(),
            ));
        }
    });
    m.on(0, |server, e: &mut AccountDiscoNode| {
        if e.answer.is_none() {
            e.answer = disco_node_info(server, &e.owner, &e.requester, &e.node).map(Ok);
        }
    });
}

// ---- for other modules ------------------------------------------------------------------------

/// The identity an account's bare JID advertises for PEP: `pubsub/pep` (XEP-0163 §8.1).
fn account_identity() -> Element {
    Element::new("identity", ns::DISCO_INFO)
        .attr("category", "pubsub")
        .attr("type", "pep")
}

/// disco#items of `owner`'s bare JID without a node (XEP-0060 §5.2): the nodes `requester`
/// may access.
fn disco_items(server: &Server, owner: &BareJid, requester: &BareJid) -> Vec<Element> {
    nodes_of(server, owner)
        .into_iter()
        .filter(|n| notify::access(server, owner, requester, n).is_ok())
        .map(|n| {
            Element::new("item", ns::DISCO_ITEMS)
                .attr("jid", owner.to_string())
                .attr("node", n.name)
        })
        .collect()
}

/// disco#info of one of `owner`'s nodes (XEP-0060 §5.3), if it exists and `requester` may
/// access it.
fn disco_node_info(
    server: &Server,
    owner: &BareJid,
    requester: &BareJid,
    node: &str,
) -> Option<Element> {
    let n = nodes_of(server, owner)
        .into_iter()
        .find(|n| n.name == node)?;
    notify::access(server, owner, requester, &n).ok()?;
    Some(
        Element::new("query", ns::DISCO_INFO)
            .attr("node", node)
            .child(
                Element::new("identity", ns::DISCO_INFO)
                    .attr("category", "pubsub")
                    .attr("type", "leaf"),
            )
            .child(Element::new("feature", ns::DISCO_INFO).attr("var", ns::PUBSUB)),
    )
}

fn nodes_of(server: &Server, owner: &BareJid) -> Vec<PepNode> {
    let nodes = server.store.account_id_of(owner).and_then(|a| match a {
        Some(a) => server.store.pep_nodes(a),
        None => Ok(Vec::new()),
    });
    nodes.unwrap_or_else(|e| {
        tracing::error!(%owner, "store error listing PEP nodes: {e}");
        Vec::new()
    })
}

/// `ResourceAvailable` (fired before the presence module records the presence): records the
/// resource's caps and may deliver last items. (`ResourceUnavailable` forgets them.)
fn on_available_presence(
    server: &Rc<Server>,
    from: &FullJid,
    el: &Element,
    initial: bool,
    priority: i8,
) {
    caps::available(server, from, el, initial, priority >= 0);
}

/// Presence-subscription hook (modules::presence, once `contact` may see `owner`'s presence):
/// `contact`'s available resources get the last items of `owner`'s nodes they want
/// (XEP-0060 §6.1.7 "on subscription", which PEP's auto-subscription stands for).
fn subscription_approved(server: &Rc<Server>, owner: &BareJid, contact: &BareJid) {
    for (jid, interest) in caps::interested_resources(server, contact) {
        notify::send_last_items_of(server, &jid, owner, &interest);
    }
}

// ---- requests ---------------------------------------------------------------------------------

/// A failed request: the stanza error and, where XEP-0060 names one, the pubsub condition
/// (`<{name} xmlns='…pubsub#errors'/>`), which clients rely on (Conversations and Dino
/// reconfigure a node on `precondition-not-met`).
type Fail = StanzaError;

/// Builds [`Fail`]s.
struct Fails;

impl Fails {
    fn plain(cond: Condition, text: &'static str) -> Fail {
        StanzaError::new(cond, text)
    }

    fn app(cond: Condition, app: &'static str, text: &'static str) -> Fail {
        StanzaError::new(cond, text).with_app(Element::new(app, ns::PUBSUB_ERRORS))
    }

    fn unsupported(feature: &'static str) -> Fail {
        StanzaError::new(Condition::FeatureNotImplemented, "")
            .typed(ErrorType::Cancel)
            .with_app(Element::new("unsupported", ns::PUBSUB_ERRORS).attr("feature", feature))
    }

    fn denied(d: Denied) -> Fail {
        match d {
            Denied::PresenceSubscriptionRequired => Fails::app(
                Condition::NotAuthorized,
                "presence-subscription-required",
                "",
            ),
            Denied::NotInRosterGroup => {
                Fails::app(Condition::NotAuthorized, "not-in-roster-group", "")
            }
            Denied::ClosedNode => Fails::app(Condition::NotAllowed, "closed-node", ""),
        }
    }
}

/// What a successful request produces: the change to store, then the IQ result's payload and
/// notifications (once the change is committed).
#[derive(Default)]
struct Done {
    reply: Option<Element>,
    events: Vec<(PepNode, Element)>,
    /// Written by the store's writer thread; the rest waits for its commit.
    write: Option<PepWrite>,
}

impl Done {
    fn reply(el: Element) -> Done {
        Done {
            reply: Some(el),
            ..Done::default()
        }
    }

    fn write(mut self, w: PepWrite) -> Done {
        self.write = Some(w);
        self
    }

    fn event(mut self, node: PepNode, payload: Element) -> Done {
        self.events.push((node, payload));
        self
    }
}

/// The request's parties: the requesting resource and the account whose service it asks.
struct Ctx {
    server: Rc<Server>,
    from: FullJid,
    owner: BareJid,
    account: i64,
}

impl Ctx {
    fn of(iq: &Incoming) -> Result<Ctx, Fail> {
        let from = iq
            .from
            .clone()
            .ok_or(Fails::plain(Condition::NotAuthorized, ""))?;
        let owner = match &iq.to {
            None => from.to_bare(),
            Some(to) => {
                let bare = to.to_bare();
                if bare.node().is_none() {
                    return Err(Fails::plain(
                        Condition::ServiceUnavailable,
                        "the server is not a pubsub service; PEP nodes live at account JIDs",
                    ));
                }
                bare
            }
        };
        // RFC 6121 §8.5.1: an IQ for an account that does not exist.
        let account = iq
            .server()
            .store
            .account_id_of(&owner)?
            .ok_or(Fails::plain(Condition::ServiceUnavailable, ""))?;
        Ok(Ctx {
            server: iq.server().clone(),
            from,
            owner,
            account,
        })
    }

    fn requester(&self) -> BareJid {
        self.from.to_bare()
    }

    /// Publishing and managing are for the owner alone (XEP-0163 §2.2).
    fn require_owner(&self) -> Result<(), Fail> {
        if self.requester() == self.owner {
            Ok(())
        } else {
            Err(Fails::plain(
                Condition::Forbidden,
                "only the account owner may do this",
            ))
        }
    }

    fn quotas(&self) -> &crate::config::Quotas {
        &self.server.config.quotas
    }

    /// The most items a node keeps (what `max` means).
    fn max_items(&self) -> u32 {
        self.quotas().pep_max_items
    }

    fn node(&self, name: &str) -> Result<PepNode, Fail> {
        self.server
            .store
            .pep_node(self.account, name)?
            .ok_or(Fails::plain(Condition::ItemNotFound, "no such node"))
    }

    /// A node to create (its id is known once written: 0 until then), within the quota.
    fn create(&self, name: &str, config: NodeConfig) -> Result<(PepNode, Target), Fail> {
        if self.server.store.pep_node_count(self.account)? >= self.quotas().pep_max_nodes {
            return Err(Fails::app(
                Condition::ResourceConstraint,
                "max-nodes-exceeded",
                "too many nodes",
            )
            .typed(ErrorType::Cancel));
        }
        let target = Target::New {
            account: self.account,
            name: name.to_owned(),
            config: config.clone(),
            now: crate::core::time::now_secs(),
        };
        let node = PepNode {
            id: 0,
            name: name.to_owned(),
            config,
        };
        Ok((node, target))
    }
}

/// Publishes `payload` as item `item_id` of `owner`'s node `node` on the server's behalf (a
/// service keeping the user's data in step), exactly as the owner's own publish with
/// publish-options `options` would: node created with them if missing, notifications to the
/// owner's resources and contacts. Does nothing and returns false if the item exists already
/// (the user's own version wins).
fn publish_if_missing(
    server: &Rc<Server>,
    owner: &BareJid,
    node: &str,
    item_id: &str,
    payload: Element,
    options: Option<Element>,
) -> Result<bool, StoreError> {
    let Some(account) = server.store.account_id_of(owner)? else {
        return Ok(false);
    };
    let Ok(from) = FullJid::new(&format!("{owner}/wockd")) else {
        return Ok(false);
    };
    let ctx = Ctx {
        server: server.clone(),
        from,
        owner: owner.clone(),
        account,
    };
    let (node, item_id) = (node.to_owned(), item_id.to_owned());
    // In turn with the owner's own requests: what exists is known once theirs are stored.
    in_turn(server, account, move || {
        let checked = (|| {
            let existing = ctx.server.store.pep_node(account, &node)?;
            if let Some(n) = &existing
                && ctx.server.store.pep_item(n.id, &item_id)?.is_some()
            {
                return Ok(None);
            }
            let request = Element::new("publish", ns::PUBSUB)
                .attr("node", node.as_str())
                .child(
                    Element::new("item", ns::PUBSUB)
                        .attr("id", item_id.as_str())
                        .child(payload),
                );
            // An existing node keeps the configuration its clients gave it: no preconditions
            // then.
            let options = options.filter(|_| existing.is_none());
            Ok(Some(publish(&ctx, &request, options.as_ref())))
        })();
        match checked {
            Ok(Some(Ok(done))) => finish(ctx, done, None),
            Ok(Some(Err(fail))) => {
                tracing::warn!(owner = %ctx.owner, node, "server-side publish refused: {:?} {}", fail.cond, fail.text);
                next_turn(&ctx.server, account);
            }
            Ok(None) => next_turn(&ctx.server, account),
            Err(e) => {
                let e: StoreError = e;
                tracing::warn!(owner = %ctx.owner, node, "server-side publish failed: {e}");
                next_turn(&ctx.server, account);
            }
        }
    });
    // Queued: the outcome is logged.
    Ok(true)
}

fn pubsub_get(iq: Incoming) {
    handle(iq, |ctx, p| {
        if let Some(items) = p.get_child("items", ns::PUBSUB) {
            retrieve(ctx, items)
        } else if p.get_child("subscriptions", ns::PUBSUB).is_some() {
            // No explicit subscriptions exist (auto-subscription is by presence).
            Ok(Done::reply(
                Element::new("pubsub", ns::PUBSUB).child(Element::new("subscriptions", ns::PUBSUB)),
            ))
        } else if p.get_child("affiliations", ns::PUBSUB).is_some() {
            affiliations(ctx)
        } else if p.get_child("options", ns::PUBSUB).is_some() {
            Err(Fails::unsupported("subscription-options"))
        } else {
            Err(Fails::plain(
                Condition::BadRequest,
                "unknown pubsub request",
            ))
        }
    });
}

fn pubsub_set(iq: Incoming) {
    handle(iq, |ctx, p| {
        if let Some(publish) = p.get_child("publish", ns::PUBSUB) {
            let options = p
                .get_child("publish-options", ns::PUBSUB)
                .and_then(|o| o.get_child("x", ns::DATA_FORMS));
            self::publish(ctx, publish, options)
        } else if let Some(retract) = p.get_child("retract", ns::PUBSUB) {
            self::retract(ctx, retract)
        } else if let Some(create) = p.get_child("create", ns::PUBSUB) {
            let form = p
                .get_child("configure", ns::PUBSUB)
                .and_then(|c| c.get_child("x", ns::DATA_FORMS));
            self::create(ctx, create, form)
        } else if p.get_child("subscribe", ns::PUBSUB).is_some()
            || p.get_child("unsubscribe", ns::PUBSUB).is_some()
        {
            Err(Fails::unsupported("subscribe"))
        } else if p.get_child("options", ns::PUBSUB).is_some() {
            Err(Fails::unsupported("subscription-options"))
        } else {
            Err(Fails::plain(
                Condition::BadRequest,
                "unknown pubsub request",
            ))
        }
    });
}

fn owner_get(iq: Incoming) {
    handle(iq, |ctx, p| {
        if let Some(c) = p.get_child("configure", ns::PUBSUB_OWNER) {
            configure_get(ctx, c)
        } else if p.get_child("default", ns::PUBSUB_OWNER).is_some() {
            ctx.require_owner()?;
            let form = config::form(&NodeConfig::default(), &roster_groups(ctx));
            Ok(Done::reply(Element::new("pubsub", ns::PUBSUB_OWNER).child(
                Element::new("default", ns::PUBSUB_OWNER).child(form),
            )))
        } else {
            owner_unsupported(p)
        }
    });
}

fn owner_set(iq: Incoming) {
    handle(iq, |ctx, p| {
        if let Some(c) = p.get_child("configure", ns::PUBSUB_OWNER) {
            configure_set(ctx, c)
        } else if let Some(d) = p.get_child("delete", ns::PUBSUB_OWNER) {
            delete(ctx, d)
        } else if let Some(d) = p.get_child("purge", ns::PUBSUB_OWNER) {
            purge(ctx, d)
        } else {
            owner_unsupported(p)
        }
    });
}

fn owner_unsupported(p: &Element) -> Result<Done, Fail> {
    if p.get_child("subscriptions", ns::PUBSUB_OWNER).is_some() {
        Err(Fails::unsupported("manage-subscriptions"))
    } else if p.get_child("affiliations", ns::PUBSUB_OWNER).is_some() {
        Err(Fails::unsupported("modify-affiliations"))
    } else {
        Err(Fails::plain(
            Condition::BadRequest,
            "unknown pubsub#owner request",
        ))
    }
}

/// Runs a request handler in turn with the other requests to the same account (after the
/// changes they made are committed, so that it reads them), then answers: the result first,
/// then its notifications, both once its own change is committed.
fn handle(iq: Incoming, f: impl FnOnce(&Ctx, &Element) -> Result<Done, Fail> + 'static) {
    let ctx = match Ctx::of(&iq) {
        Ok(ctx) => ctx,
        Err(fail) => return iq.fail_with(fail),
    };
    let (server, account) = (ctx.server.clone(), ctx.account);
    in_turn(&server, account, move || match f(&ctx, &iq.payload) {
        Ok(done) => finish(ctx, done, Some(iq)),
        Err(fail) => {
            iq.fail_with(fail);
            next_turn(&ctx.server, ctx.account);
        }
    });
}

/// Stores what `done` changes (if anything), then answers `iq` and notifies, and lets the
/// account's next request run.
fn finish(ctx: Ctx, mut done: Done, iq: Option<Incoming>) {
    let Some(w) = done.write.take() else {
        answer(&ctx, done, iq);
        return next_turn(&ctx.server, ctx.account);
    };
    let retraction = matches!(w, PepWrite::Retract { .. });
    let server = ctx.server.clone();
    server.store.write(
        move |tx| crate::store::pep::apply(tx, &w),
        move |written| {
            match written {
                Ok(w) if retraction && !w.found => {
                    if let Some(iq) = iq {
                        iq.fail_with(Fails::plain(Condition::ItemNotFound, "no such item"));
                    }
                }
                Ok(w) => {
                    // A node created by the write has its id now.
                    for (node, _) in &mut done.events {
                        node.id = w.node;
                    }
                    answer(&ctx, done, iq);
                }
                Err(e) => {
                    tracing::error!(owner = %ctx.owner, "store error writing PEP: {e}");
                    if let Some(iq) = iq {
                        iq.fail(Condition::InternalServerError, "");
                    }
                }
            }
            next_turn(&ctx.server, ctx.account);
        },
    );
}

fn answer(ctx: &Ctx, done: Done, iq: Option<Incoming>) {
    if let Some(iq) = iq {
        iq.result(done.reply);
    }
    for (node, payload) in done.events {
        notify::broadcast(&ctx.server, &ctx.owner, &node, &payload);
    }
}

/// Requests to one account's service that wait for the one running (see [`in_turn`]).
#[derive(Default)]
struct Turns(std::cell::RefCell<std::collections::HashMap<i64, std::collections::VecDeque<Turn>>>);

type Turn = Box<dyn FnOnce()>;

/// Runs `task` now if no other request to `account`'s service runs (waits for its write),
/// else after those before it. `task` must end with [`next_turn`], at once or once its write
/// is committed.
fn in_turn(server: &Server, account: i64, task: impl FnOnce() + 'static) {
    {
        let state = server.ext::<Turns>();
        let mut turns = state.0.borrow_mut();
        if let Some(waiting) = turns.get_mut(&account) {
            waiting.push_back(Box::new(task));
            return;
        }
        turns.insert(account, Default::default());
    }
    task();
}

/// The request to `account`'s service that ran is done: the next one runs.
fn next_turn(server: &Server, account: i64) {
    let next = {
        let state = server.ext::<Turns>();
        let mut turns = state.0.borrow_mut();
        let next = turns.get_mut(&account).and_then(|w| w.pop_front());
        if next.is_none() {
            turns.remove(&account);
        }
        next
    };
    if let Some(task) = next {
        task();
    }
}

// ---- the use cases ----------------------------------------------------------------------------

/// The NodeID of a request element (`nodeid-required` without one).
fn node_name(el: &Element) -> Result<&str, Fail> {
    match el.get_attr("node") {
        None | Some("") => Err(Fails::app(
            Condition::BadRequest,
            "nodeid-required",
            "a node is required",
        )),
        Some(n) if n.len() > MAX_ID_BYTES => Err(Fails::plain(
            Condition::NotAcceptable,
            "the NodeID is too long",
        )),
        Some(n) => Ok(n),
    }
}

/// XEP-0060 §7.1: publish, creating the node if needed, with publish-options.
fn publish(ctx: &Ctx, publish: &Element, options: Option<&Element>) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = node_name(publish)?;
    let items: Vec<&Element> = publish
        .elements()
        .filter(|e| e.is("item", ns::PUBSUB))
        .collect();
    let item = match items.as_slice() {
        [item] => *item,
        [] => {
            return Err(Fails::app(
                Condition::BadRequest,
                "item-required",
                "publish one item",
            ));
        }
        _ => {
            return Err(Fails::app(
                Condition::BadRequest,
                "invalid-payload",
                "publish one item at a time",
            ));
        }
    };
    let payloads: Vec<&Element> = item.elements().collect();
    let payload = match payloads.as_slice() {
        [p] => (*p).clone(),
        [] => {
            return Err(Fails::app(
                Condition::BadRequest,
                "payload-required",
                "the item needs a payload",
            ));
        }
        _ => {
            return Err(Fails::app(
                Condition::BadRequest,
                "invalid-payload",
                "an item has one payload element",
            ));
        }
    };
    let item_id = match item.get_attr("id") {
        Some(id) if id.len() > MAX_ID_BYTES => {
            return Err(Fails::plain(
                Condition::NotAcceptable,
                "the ItemID is too long",
            ));
        }
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => new_id(),
    };
    let mut serialised = Vec::new();
    // Written as a root of its own, so it declares its namespace and parses back alone.
    payload.write_to(&mut serialised, "");
    if serialised.len() > ctx.quotas().pep_max_item_bytes {
        // XEP-0060 §7.1.3.5.
        return Err(Fails::app(
            Condition::NotAcceptable,
            "payload-too-big",
            "the item is larger than this service stores",
        ));
    }
    let bad_options = |_| Fails::plain(Condition::BadRequest, "invalid publish-options");
    let (node, target) = match ctx.server.store.pep_node(ctx.account, name)? {
        Some(node) => {
            if let Some(x) = options
                && !config::preconditions_met(&node.config, x, ctx.max_items())
                    .map_err(bad_options)?
            {
                return Err(Fails::app(
                    Condition::Conflict,
                    "precondition-not-met",
                    "the node exists with another configuration",
                )
                .typed(ErrorType::Cancel));
            }
            let id = node.id;
            (node, Target::Existing(id))
        }
        None => {
            let config = match options {
                Some(x) => config::apply(&NodeConfig::default(), x, ctx.max_items())
                    .map_err(bad_options)?,
                None => NodeConfig::default(),
            };
            ctx.create(name, config)?
        }
    };
    let stored = PepItem {
        item_id,
        publisher: ctx.from.to_string(),
        payload: String::from_utf8_lossy(&serialised).into_owned(),
        published: crate::core::time::now_micros(),
    };
    let write = PepWrite::Publish {
        node: target,
        config: node.config.clone(),
        item: stored.clone(),
        limit: ctx.max_items(),
    };
    let reply = Element::new("pubsub", ns::PUBSUB).child(
        Element::new("publish", ns::PUBSUB)
            .attr("node", name)
            .child(Element::new("item", ns::PUBSUB).attr("id", stored.item_id.as_str())),
    );
    let event = notify::items_event(&node, &stored, Some(payload));
    Ok(Done::reply(reply).event(node, event).write(write))
}

/// XEP-0060 §7.2: delete an item, notifying when asked (or configured) to.
fn retract(ctx: &Ctx, retract: &Element) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = node_name(retract)?;
    let Some(item_id) = retract
        .get_child("item", ns::PUBSUB)
        .and_then(|i| i.get_attr("id"))
        .filter(|id| !id.is_empty())
    else {
        return Err(Fails::app(
            Condition::BadRequest,
            "item-required",
            "retract one item by its id",
        ));
    };
    let node = ctx.node(name)?;
    let notify = match retract.get_attr("notify") {
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(_) => return Err(Fails::plain(Condition::BadRequest, "notify is a boolean")),
        None => node.config.notify_retract,
    };
    // "No such item" is what the write finds (see `finish`).
    let mut done = Done::default().write(PepWrite::Retract {
        node: node.id,
        item_id: item_id.to_owned(),
    });
    if notify {
        let event = Element::new("items", ns::PUBSUB_EVENT)
            .attr("node", name)
            .child(Element::new("retract", ns::PUBSUB_EVENT).attr("id", item_id));
        done = done.event(node, event);
    }
    Ok(done)
}

/// XEP-0060 §6.5: items of a node, all, the newest `max_items`, or by ItemID.
fn retrieve(ctx: &Ctx, items: &Element) -> Result<Done, Fail> {
    let name = node_name(items)?;
    let node = ctx.node(name)?;
    notify::access(&ctx.server, &ctx.owner, &ctx.requester(), &node).map_err(Fails::denied)?;
    let max = match items.get_attr("max_items") {
        None => None,
        Some(m) => Some(
            m.parse::<u32>()
                .map_err(|_| Fails::plain(Condition::BadRequest, "max_items must be a number"))?,
        ),
    };
    let ids: Vec<&str> = items
        .elements()
        .filter(|e| e.is("item", ns::PUBSUB))
        .filter_map(|e| e.get_attr("id"))
        .collect();
    let found = if ids.is_empty() {
        ctx.server.store.pep_items(node.id, max)?
    } else {
        let mut found = Vec::new();
        for id in ids {
            // §6.5.9.11: items that do not exist are left out.
            if let Some(item) = ctx.server.store.pep_item(node.id, id)? {
                found.push(item);
            }
        }
        found
    };
    let mut list = Element::new("items", ns::PUBSUB).attr("node", name);
    for item in found {
        let mut el = Element::new("item", ns::PUBSUB).attr("id", item.item_id.as_str());
        if let Some(p) = notify::payload_of(&item) {
            el.push(p);
        }
        list.push(el);
    }
    Ok(Done::reply(Element::new("pubsub", ns::PUBSUB).child(list)))
}

/// XEP-0060 §8.1: create a node, optionally configured (§8.1.3).
fn create(ctx: &Ctx, create: &Element, form: Option<&Element>) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = match create.get_attr("node") {
        None | Some("") => {
            return Err(Fails::app(
                Condition::NotAcceptable,
                "nodeid-required",
                "instant nodes are not supported",
            ));
        }
        Some(_) => node_name(create)?,
    };
    if ctx.server.store.pep_node(ctx.account, name)?.is_some() {
        return Err(Fails::plain(Condition::Conflict, "the node exists"));
    }
    let config = match form {
        Some(x) => config::apply(&NodeConfig::default(), x, ctx.max_items())
            .map_err(|_| Fails::plain(Condition::NotAcceptable, "invalid node configuration"))?,
        None => NodeConfig::default(),
    };
    let (_, target) = ctx.create(name, config)?;
    Ok(Done::default().write(PepWrite::Create(target)))
}

/// XEP-0060 §8.2.1: the configuration form.
fn configure_get(ctx: &Ctx, configure: &Element) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = node_name(configure)?;
    let node = ctx.node(name)?;
    let form = config::form(&node.config, &roster_groups(ctx));
    Ok(Done::reply(
        Element::new("pubsub", ns::PUBSUB_OWNER).child(
            Element::new("configure", ns::PUBSUB_OWNER)
                .attr("node", name)
                .child(form),
        ),
    ))
}

/// XEP-0060 §8.2.3–§8.2.5: a submitted (or cancelled) configuration.
fn configure_set(ctx: &Ctx, configure: &Element) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = node_name(configure)?;
    let node = ctx.node(name)?;
    let Some(x) = configure.get_child("x", ns::DATA_FORMS) else {
        return Err(Fails::plain(
            Condition::BadRequest,
            "a configuration form is required",
        ));
    };
    if x.get_attr("type") == Some("cancel") {
        return Ok(Done::default());
    }
    let config = config::apply(&node.config, x, ctx.max_items())
        .map_err(|_| Fails::plain(Condition::NotAcceptable, "invalid node configuration"))?;
    Ok(Done::default().write(PepWrite::Configure {
        node: node.id,
        config,
        limit: ctx.max_items(),
    }))
}

/// XEP-0060 §8.4: delete a node with its items.
fn delete(ctx: &Ctx, delete: &Element) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = node_name(delete)?;
    let node = ctx.node(name)?;
    let mut done = Done::default().write(PepWrite::DeleteNode(node.id));
    if node.config.notify_delete {
        let event = Element::new("delete", ns::PUBSUB_EVENT).attr("node", name);
        done = done.event(node, event);
    }
    Ok(done)
}

/// XEP-0060 §8.5: delete every item of a node.
fn purge(ctx: &Ctx, purge: &Element) -> Result<Done, Fail> {
    ctx.require_owner()?;
    let name = node_name(purge)?;
    let node = ctx.node(name)?;
    let mut done = Done::default().write(PepWrite::Purge(node.id));
    if node.config.notify_retract {
        let event = Element::new("purge", ns::PUBSUB_EVENT).attr("node", name);
        done = done.event(node, event);
    }
    Ok(done)
}

/// XEP-0060 §5.7: the requester's affiliations: owner of every node of its own service,
/// none elsewhere.
fn affiliations(ctx: &Ctx) -> Result<Done, Fail> {
    let mut list = Element::new("affiliations", ns::PUBSUB);
    if ctx.requester() == ctx.owner {
        for node in ctx.server.store.pep_nodes(ctx.account)? {
            list.push(
                Element::new("affiliation", ns::PUBSUB)
                    .attr("node", node.name)
                    .attr("affiliation", "owner"),
            );
        }
    }
    Ok(Done::reply(Element::new("pubsub", ns::PUBSUB).child(list)))
}

// ---- helpers ----------------------------------------------------------------------------------

/// The owner's roster groups, offered for `roster_groups_allowed`.
fn roster_groups(ctx: &Ctx) -> Vec<String> {
    let mut groups: Vec<String> = roster::items(&ctx.server, &ctx.owner)
        .into_iter()
        .flat_map(|r| r.groups)
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// A random ItemID or message id: 64 bits in hex.
fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
