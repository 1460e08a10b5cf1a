//! Transport-local lifecycle events. Feature files tell each other that a legacy account's
//! link came up or went down, or that the account was removed, by publishing an event here;
//! the files that care subscribe to it (in their own `subscribe`), instead of calling each
//! other (`roomlist::forget(id)`-style).
//!
//! Handlers run in subscription order, synchronously, on the main thread. A handler may
//! publish or subscribe in turn (the list is copied before it runs).

use std::cell::RefCell;
use std::rc::Rc;

use crate::server::Server;

/// A legacy account signed on. Published on the loop turn after libpurple's `connected`
/// ui-op, so handlers may call into libpurple (join rooms, read the buddy list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkUp {
    pub id: i64,
}

/// A legacy account's connection went away (libpurple's `disconnected` ui-op); its rooms are
/// already marked not joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkDown {
    pub id: i64,
}

/// A legacy account was removed: logged out, deleted from libpurple and from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountRemoved {
    pub id: i64,
}

/// A subscriber: called with the context (the server) and the event.
pub type Handler<E, C> = fn(&C, &E);

/// The subscribers of one event type `E`, called with a context `C` (the server).
pub struct Topic<E, C = Rc<Server>> {
    subscribers: RefCell<Vec<Handler<E, C>>>,
}

impl<E, C> Default for Topic<E, C> {
    fn default() -> Self {
        Topic {
            subscribers: RefCell::new(Vec::new()),
        }
    }
}

impl<E, C> Topic<E, C> {
    pub fn subscribe(&self, handler: Handler<E, C>) {
        self.subscribers.borrow_mut().push(handler);
    }

    pub fn publish(&self, ctx: &C, event: &E) {
        let handlers = self.subscribers.borrow().clone();
        for h in handlers {
            h(ctx, event);
        }
    }
}

/// The transport's events (in `Transport`).
#[derive(Default)]
pub struct Events {
    pub link_up: Topic<LinkUp>,
    pub link_down: Topic<LinkDown>,
    pub account_removed: Topic<AccountRemoved>,
}

/// Every feature file's subscriptions (call once, before any account is loaded).
pub fn subscribe_all(events: &Events) {
    super::contacts::subscribe(events);
    super::muc::subscribe(events);
    super::roomlist::subscribe(events);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_run_in_subscription_order() {
        let topic: Topic<LinkUp, RefCell<Vec<String>>> = Topic::default();
        topic.subscribe(|log, e| log.borrow_mut().push(format!("a{}", e.id)));
        topic.subscribe(|log, e| log.borrow_mut().push(format!("b{}", e.id)));
        let log = RefCell::new(Vec::new());
        topic.publish(&log, &LinkUp { id: 7 });
        topic.publish(&log, &LinkUp { id: 8 });
        assert_eq!(log.into_inner(), ["a7", "b7", "a8", "b8"]);
        let empty: Topic<LinkDown, ()> = Topic::default();
        empty.publish(&(), &LinkDown { id: 1 });
    }

    /// The lifecycle handlers are reached through events only: no feature file calls another
    /// file's handler directly.
    #[test]
    fn lifecycle_goes_through_events() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport");
        for (file, handlers) in [
            ("contacts.rs", &["sync("][..]),
            ("muc.rs", &["rejoin_all(", "account_gone("][..]),
            ("roomlist.rs", &["forget("][..]),
        ] {
            let module = file.trim_end_matches(".rs");
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                // This file names them in its docs and in this test.
                if path.is_dir()
                    || path
                        .file_name()
                        .is_some_and(|n| n == file || n == "events.rs")
                {
                    continue;
                }
                let src = std::fs::read_to_string(&path).unwrap();
                for h in handlers {
                    assert!(
                        !src.contains(&format!("{module}::{h}")),
                        "{}: calls {module}::{h} directly; publish an event instead",
                        path.display()
                    );
                }
            }
        }
    }
}
