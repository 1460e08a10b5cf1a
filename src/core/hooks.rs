//! The hook bus: how modules co-operate without calling each other.
//!
//! Two kinds of hooks, both registered at install time with a priority (higher runs first,
//! as in Prosody's `module:hook(name, handler, priority)`):
//!
//! * **Stanza hooks**, keyed by a [`Point`]: the phase ([`Point::Pre`] for what a local user
//!   sends, before it goes anywhere; [`Point::Deliver`] for delivery to its recipient), the
//!   stanza [`Name`] and the recipient's class [`To`]. The router fires
//!   `Pre(name, to)` then `Deliver(name, to)`; a handler answers [`Flow::Handled`] to stop the
//!   chain (the stanza was delivered, refused or dropped on purpose) or [`Flow::Continue`].
//!   A stanza nobody handles gets the RFC's default answer from the router.
//! * **Lifecycle events**, keyed by their Rust type ([`super::events`]): `SessionEnded`,
//!   `AccountDeleted`, `AccountDiscoInfo`… fired with [`Hooks::fire`], handlers run in
//!   priority order and may fill in the event (disco features, for instance).
//!
//! Dispatch allocates nothing: a stanza hook list is a slice walked in place. Registration
//! copies the table (copy-on-write behind an `Rc`), so a handler that fires another event, or
//! a service that registers a hook while the server runs, never meets a borrowed table.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::events::Routed;
use crate::server::Server;

/// What a stanza handler tells the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next handler.
    Continue,
    /// The stanza is taken care of: stop here (no default answer either).
    Handled,
}

/// The stanza's element name. `Any` is for registering only: a hook for every kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Name {
    Message,
    Presence,
    Iq,
    Any,
}

/// The recipient's class, as the router classifies the `to` address. `Any` is for registering
/// only: a hook for every class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum To {
    /// This server's domain itself (and IQs without `to`, for the sender's account: see
    /// [`Routed::to`]).
    Host,
    /// A local account's bare JID (presence without `to` too: the sender's own).
    Bare,
    /// A local account's full JID.
    Full,
    /// A service domain of this server (transport, torrent) or a JID under it.
    Service,
    /// A domain this server does not serve.
    Remote,
    Any,
}

/// Where a stanza hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// A stanza a local user sent, before routing: blocking, sent carbons, the sender's archive.
    Pre(Name, To),
    /// Delivery to the recipient: the archive, the sessions, received carbons, offline storage.
    Deliver(Name, To),
}

const NAMES: usize = 3;
const CLASSES: usize = 5;
const SLOTS: usize = 2 * NAMES * CLASSES;

impl Name {
    fn index(self) -> Option<usize> {
        match self {
            Name::Message => Some(0),
            Name::Presence => Some(1),
            Name::Iq => Some(2),
            Name::Any => None,
        }
    }

    /// The name of a top-level client stanza (`None` for anything else).
    pub fn of(element_name: &str) -> Option<Name> {
        match element_name {
            "message" => Some(Name::Message),
            "presence" => Some(Name::Presence),
            "iq" => Some(Name::Iq),
            _ => None,
        }
    }
}

impl To {
    fn index(self) -> Option<usize> {
        match self {
            To::Host => Some(0),
            To::Bare => Some(1),
            To::Full => Some(2),
            To::Service => Some(3),
            To::Remote => Some(4),
            To::Any => None,
        }
    }
}

impl Point {
    /// The concrete slots a registration at this point covers (`Any` expands).
    fn slots(self) -> impl Iterator<Item = usize> {
        let (phase, name, to) = match self {
            Point::Pre(n, t) => (0, n, t),
            Point::Deliver(n, t) => (1, n, t),
        };
        let names = match name.index() {
            Some(i) => i..i + 1,
            None => 0..NAMES,
        };
        let tos = match to.index() {
            Some(i) => i..i + 1,
            None => 0..CLASSES,
        };
        names.flat_map(move |n| tos.clone().map(move |t| (phase * NAMES + n) * CLASSES + t))
    }

    /// The slot of a concrete point; `None` when it names `Any`.
    fn slot(self) -> Option<usize> {
        let (phase, name, to) = match self {
            Point::Pre(n, t) => (0, n, t),
            Point::Deliver(n, t) => (1, n, t),
        };
        Some((phase * NAMES + name.index()?) * CLASSES + to.index()?)
    }
}

/// A stanza hook.
pub type StanzaHandler = Rc<dyn Fn(&Rc<Server>, &mut Routed<'_>) -> Flow>;

type EventHandler = Rc<dyn Fn(&Rc<Server>, &mut dyn Any)>;

#[derive(Clone)]
struct Entry<H> {
    priority: i32,
    /// Registration order, so equal priorities keep it.
    seq: u32,
    handler: H,
}

#[derive(Clone, Default)]
struct Table {
    stanzas: Vec<Vec<Entry<StanzaHandler>>>,
    events: HashMap<TypeId, Vec<Entry<EventHandler>>>,
    seq: u32,
}

/// The server's hooks. One per server; see the module documentation.
pub struct Hooks {
    table: RefCell<Rc<Table>>,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            table: RefCell::new(Rc::new(Table {
                stanzas: vec![Vec::new(); SLOTS],
                ..Table::default()
            })),
        }
    }
}

fn insert<H>(list: &mut Vec<Entry<H>>, entry: Entry<H>) {
    // Higher priority first; among equals, first registered first.
    let at = list
        .iter()
        .position(|e| {
            (e.priority, std::cmp::Reverse(e.seq)) < (entry.priority, std::cmp::Reverse(entry.seq))
        })
        .unwrap_or(list.len());
    list.insert(at, entry);
}

impl Hooks {
    fn edit(&self, f: impl FnOnce(&mut Table)) {
        let mut current = self.table.borrow_mut();
        let mut table = Table::clone(&current);
        f(&mut table);
        table.seq += 1;
        *current = Rc::new(table);
    }

    /// Registers a stanza hook at `point` with `priority`.
    pub fn hook(
        &self,
        point: Point,
        priority: i32,
        handler: impl Fn(&Rc<Server>, &mut Routed<'_>) -> Flow + 'static,
    ) {
        let handler: StanzaHandler = Rc::new(handler);
        self.edit(|t| {
            let seq = t.seq;
            for slot in point.slots() {
                insert(
                    &mut t.stanzas[slot],
                    Entry {
                        priority,
                        seq,
                        handler: handler.clone(),
                    },
                );
            }
        });
    }

    /// Registers a handler of lifecycle event `E`.
    pub fn on<E: 'static>(&self, priority: i32, handler: impl Fn(&Rc<Server>, &mut E) + 'static) {
        let handler: EventHandler = Rc::new(move |server, event| {
            if let Some(e) = event.downcast_mut::<E>() {
                handler(server, e);
            }
        });
        self.edit(|t| {
            let seq = t.seq;
            insert(
                t.events.entry(TypeId::of::<E>()).or_default(),
                Entry {
                    priority,
                    seq,
                    handler,
                },
            );
        });
    }

    /// Whether anything is hooked at the concrete `point`.
    pub fn handles(&self, point: Point) -> bool {
        point.slot().is_some_and(|s| {
            self.table
                .borrow()
                .stanzas
                .get(s)
                .is_some_and(|l| !l.is_empty())
        })
    }

    /// Runs the hooks of the concrete `point` on `event` until one handles it.
    pub fn run(&self, server: &Rc<Server>, point: Point, event: &mut Routed<'_>) -> Flow {
        let Some(slot) = point.slot() else {
            return Flow::Continue;
        };
        // An Rc clone, not a copy of the table: handlers may register hooks or fire events.
        let table = self.table.borrow().clone();
        let Some(list) = table.stanzas.get(slot) else {
            return Flow::Continue;
        };
        for entry in list {
            if (entry.handler)(server, event) == Flow::Handled {
                return Flow::Handled;
            }
        }
        Flow::Continue
    }

    /// Fires lifecycle event `event`: every handler of its type runs, in priority order.
    pub fn fire<E: 'static>(&self, server: &Rc<Server>, event: &mut E) {
        let table = self.table.borrow().clone();
        if let Some(list) = table.events.get(&TypeId::of::<E>()) {
            for entry in list {
                (entry.handler)(server, event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_expands_and_concrete_points_have_one_slot() {
        assert_eq!(
            Point::Pre(Name::Any, To::Any).slots().count(),
            NAMES * CLASSES
        );
        assert_eq!(
            Point::Deliver(Name::Message, To::Any).slots().count(),
            CLASSES
        );
        let all: std::collections::BTreeSet<usize> = [
            Point::Pre(Name::Any, To::Any),
            Point::Deliver(Name::Any, To::Any),
        ]
        .into_iter()
        .flat_map(Point::slots)
        .collect();
        assert_eq!(all.len(), SLOTS);
        assert_eq!(all.last(), Some(&(SLOTS - 1)));
        assert_eq!(Point::Pre(Name::Any, To::Bare).slot(), None);
        let a = Point::Deliver(Name::Iq, To::Remote).slot();
        assert_eq!(a, Point::Deliver(Name::Iq, To::Remote).slots().next());
    }

    #[test]
    fn priority_order_then_registration_order() {
        let mut list = Vec::new();
        for (priority, seq) in [(0, 0), (10, 1), (-5, 2), (10, 3), (0, 4)] {
            insert(
                &mut list,
                Entry {
                    priority,
                    seq,
                    handler: (),
                },
            );
        }
        let order: Vec<u32> = list.iter().map(|e| e.seq).collect();
        assert_eq!(order, [1, 3, 0, 4, 2]);
    }
}
