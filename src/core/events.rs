//! The event vocabulary: what the router hands to stanza hooks ([`Routed`]) and the lifecycle
//! events modules fire and hook by type (see [`super::hooks`]).
//!
//! | event | fired by | hooked by |
//! |---|---|---|
//! | [`Routed`] at `Pre(name, to)` / `Deliver(name, to)` | the router | blocking, carbons, mam, message, offline, presence, iq rules, services |
//! | [`ResourceBound`] | the server, once a resource is bound | — |
//! | [`Bind2Request`] | SASL2, with the inline requests of XEP-0386 | carbons |
//! | [`ResourceAvailable`] | presence, for available presence of a session | offline (backlog), pep (caps) |
//! | [`ResourceUnavailable`] | presence, for unavailable presence of a session | pep (caps) |
//! | [`SessionEnded`] | the server, when a bound session ends | pep, last, presence |
//! | [`LoggedIn`] | SASL, SASL2, iq:auth | register (outside changes) |
//! | [`AccountCreated`] | register (in-band) | — |
//! | [`AccountDeleted`] | register (in-band or noticed from the CLI) | register, blocking, vCard, roster, offline, mam, transport, torrent |
//! | [`PasswordChanged`] | register | — |
//! | [`SubscriptionApproved`] | presence | pep (last items) |
//! | [`RosterItemRemoved`] | roster | presence (cancels subscriptions) |
//! | [`PhotoChanged`] | vCard | presence (broadcast with the new hash) |
//! | [`AccountDiscoInfo`] / [`AccountDiscoItems`] / [`AccountDiscoNode`] | disco | pep, mam, … |
//! | [`ServiceDiscoInfo`] | disco, for the server's own domain | — |
//! | [`PepPublish`] | the transport (bookmarks) | pep |
//! | [`Tick`] | the server, every second | register, mam |

use std::rc::Rc;

use jid::{BareJid, FullJid, Jid};
use smallvec::SmallVec;

use super::hooks::{Name, To};
use super::stanza::{Condition, stanza_error};
use crate::store::mailbox::NewEntry;
use crate::stream::Connection;
use crate::xml::Element;

/// Who sent a routed stanza.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// A bound client session: its stream and its full JID (already stamped as `from`).
    Client {
        conn: &'a Rc<Connection>,
        jid: &'a FullJid,
    },
    /// A message a local user sent from a foreign network's own client, reported by a service
    /// (the transport): the user's Pre hooks run (sent carbons, archive), nothing is delivered.
    OnBehalf { jid: &'a FullJid },
    /// Another server (s2s): `jid` is the stanza's `from`, in a domain authenticated on the
    /// stream it came on; `reply` sends an answer back over federation.
    Remote {
        jid: &'a Jid,
        reply: &'a dyn Fn(Element),
    },
    /// The server itself or one of its in-process services (a message handed back by stream
    /// management, a service's message to a user): no stream to answer errors on.
    Local,
}

/// A stanza on its way, as stanza hooks see it. Hooks may change the stanza (the archive stamps
/// its stanza id) and fill in [`Delivery`] for the hooks after them.
pub struct Routed<'a> {
    pub stanza: Element,
    pub origin: Origin<'a>,
    /// The parsed `to`. `None` only for IQs and presence without `to` (for the sender's own
    /// account); a message without `to` is given the sender's bare JID by the router.
    pub to: Option<Jid>,
    pub name: Name,
    /// The recipient's class.
    pub class: To,
    /// False when nothing delivers to [`Routed::class`] (a remote domain while there is no
    /// federation): the stanza will be bounced, so hooks that record what was sent skip it.
    pub reachable: bool,
    pub delivery: Delivery,
}

/// What the delivery hooks of a message tell each other.
#[derive(Default)]
pub struct Delivery {
    /// The recipient's account id, once looked up.
    pub account: Option<i64>,
    /// The streams chosen to receive it (then: that received it).
    pub sessions: SmallVec<[Rc<Connection>; 2]>,
    /// Some resource of the recipient was available to take it (even if the message type
    /// means it is dropped rather than sent).
    pub any_available: bool,
    /// The server handed it back (stream management's unacknowledged messages): archived and
    /// carbon-copied already.
    pub redelivered: bool,
    /// Its archive row, stamped by the archive before the sessions get it; queued once sent.
    pub entry: Option<NewEntry>,
}

impl<'a> Routed<'a> {
    /// A stanza from the server or a service for `to`, classified by the caller.
    pub fn local(stanza: Element, to: Jid, name: Name, class: To) -> Routed<'a> {
        Routed {
            stanza,
            origin: Origin::Local,
            to: Some(to),
            name,
            class,
            reachable: true,
            delivery: Delivery::default(),
        }
    }

    /// The local user who sent it (from a client of ours, or from elsewhere on their behalf).
    pub fn sender(&self) -> Option<&'a FullJid> {
        match self.origin {
            Origin::Client { jid, .. } | Origin::OnBehalf { jid } => Some(jid),
            Origin::Local | Origin::Remote { .. } => None,
        }
    }

    /// The remote sender, when another server sent it.
    pub fn from_remote(&self) -> Option<&'a Jid> {
        match self.origin {
            Origin::Remote { jid, .. } => Some(jid),
            _ => None,
        }
    }

    /// The sending stream, when a client of ours sent it.
    pub fn connection(&self) -> Option<&'a Rc<Connection>> {
        match self.origin {
            Origin::Client { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// The sending session's full JID, when a client of ours sent it.
    pub fn from_client(&self) -> Option<&'a FullJid> {
        match self.origin {
            Origin::Client { jid, .. } => Some(jid),
            _ => None,
        }
    }

    /// The `to` as a bare JID, when it is one.
    pub fn to_bare(&self) -> Option<&BareJid> {
        self.to.as_ref().and_then(|j| j.try_as_full().err())
    }

    /// The `to` as a full JID, when it is one.
    pub fn to_full(&self) -> Option<&FullJid> {
        self.to.as_ref().and_then(|j| j.try_as_full().ok())
    }

    /// The stanza's `type` attribute.
    pub fn kind(&self) -> Option<&str> {
        self.stanza.get_attr("type")
    }

    /// Answers the sender with an error (when a client sent it and the stanza may be
    /// answered: never an error, RFC 6120 §8.3.1).
    pub fn bounce(&self, cond: Condition, text: &str) {
        if let Some(reply) = stanza_error(&self.stanza, cond, text) {
            self.reply(&reply);
        }
    }

    /// Answers the sender with an error it has made itself.
    pub fn reply(&self, reply: &Element) {
        match self.origin {
            Origin::Client { conn, .. } => conn.send(reply),
            Origin::Remote { reply: send, .. } => send(reply.clone()),
            Origin::OnBehalf { .. } | Origin::Local => {}
        }
    }
}

/// The account a recipient address belongs to: borrowed for a bare JID (the usual case: no
/// allocation on the path of every message), made for a full one.
pub fn bare_of(to: &Jid) -> std::borrow::Cow<'_, BareJid> {
    match to.try_as_full() {
        Err(bare) => std::borrow::Cow::Borrowed(bare),
        // `to_bare()` would format a new string; this copies and truncates.
        Ok(full) => std::borrow::Cow::Owned(full.clone().into_bare()),
    }
}

/// A resource was bound (RFC 6120 §7) on a stream.
pub struct ResourceBound {
    pub jid: FullJid,
}

/// XEP-0386 Bind 2: the `<bind/>` request of a SASL2 authentication, for the inline features
/// modules serve (carbons). Fired once the resource is bound.
pub struct Bind2Request {
    pub jid: FullJid,
    pub request: Element,
}

/// A session sent available presence (§4.2, and every later update). Fired before the
/// presence module records it, so hooks see whether it is the first one (`initial`).
pub struct ResourceAvailable {
    pub jid: FullJid,
    pub presence: Element,
    /// No available presence before this one.
    pub initial: bool,
    /// The priority it announces (0 without `<priority/>`).
    pub priority: i8,
}

/// A session sent unavailable presence (it stays bound).
pub struct ResourceUnavailable {
    pub jid: FullJid,
}

/// A bound session ended (stream closed or lost, resumption window over); it is already
/// unbound.
pub struct SessionEnded {
    pub jid: FullJid,
    /// It had sent available presence and not unavailable since.
    pub was_available: bool,
}

/// A stream authenticated as `account` (SASL, SASL2, iq:auth).
pub struct LoggedIn {
    pub account: BareJid,
}

/// An account was created (in-band registration).
pub struct AccountCreated {
    pub account: BareJid,
}

/// An account was deleted: its rows are gone. Hooks drop what they hold for it (caches, legacy
/// sessions, torrent jobs) so that a new account of the same name inherits nothing.
pub struct AccountDeleted {
    pub account: BareJid,
    /// Its id, when it was known before the rows went.
    pub id: Option<i64>,
}

/// An account's password was changed in-band (its FAST tokens are revoked already).
pub struct PasswordChanged {
    pub account: BareJid,
}

/// `contact` may now see `owner`'s presence (a subscription was approved).
pub struct SubscriptionApproved {
    pub owner: BareJid,
    pub contact: BareJid,
}

/// `user` removed `contact` from its roster (RFC 6121 §2.5); `before` is the item as it was.
pub struct RosterItemRemoved {
    pub user: BareJid,
    pub contact: BareJid,
    pub before: crate::store::roster::RosterRow,
    /// The resource that removed it, when a client did.
    pub by: Option<FullJid>,
}

/// `user`'s vCard photo hash changed (XEP-0153).
pub struct PhotoChanged {
    pub user: BareJid,
}

/// A disco#info query to an account's bare JID (XEP-0030) that the requester may make:
/// hooks add the account's identities and features (PEP, MAM…).
pub struct AccountDiscoInfo {
    pub owner: BareJid,
    pub requester: BareJid,
    pub identities: Vec<Element>,
    pub features: Vec<&'static str>,
}

/// A disco#items query to an account's bare JID.
pub struct AccountDiscoItems {
    pub owner: BareJid,
    pub requester: BareJid,
    pub items: Vec<Element>,
}

/// A disco#info query to a node of an account (PEP nodes): the first hook that knows the
/// node sets `answer`.
pub struct AccountDiscoNode {
    pub owner: BareJid,
    pub requester: BareJid,
    pub node: String,
    pub answer: Option<Result<Element, Condition>>,
}

/// A disco#info query to the server's own domain: hooks add features beyond the IQ rules'
/// namespaces and the stream features.
pub struct ServiceDiscoInfo {
    pub features: Vec<&'static str>,
}

/// A service keeping a user's data in step (the transport's XEP-0402 bookmarks) asks for item
/// `item_id` of `owner`'s PEP node `node` to be published on the owner's behalf unless it
/// exists, with XEP-0060 publish-options `options` for a node that has to be created. The PEP
/// module sets `published` (`Ok(true)`: queued, in turn with the owner's own PEP requests; it
/// logs the outcome. `Ok(false)`: no such account).
pub struct PepPublish {
    pub owner: BareJid,
    pub node: String,
    pub item_id: String,
    pub payload: Element,
    pub options: Option<Element>,
    pub published: Option<Result<bool, crate::store::StoreError>>,
}

/// Once a second, from the server's housekeeping.
pub struct Tick;
