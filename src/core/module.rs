//! What a module's `install` receives: the stream template (features and IQ rules, the seed's
//! `initialize_stream`), the hook bus, and the configuration, so a disabled feature installs
//! nothing and so disco never advertises what is not wired.

use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use super::events::Routed;
use super::hooks::{Flow, Hooks, Point};
use crate::config::Config;
use crate::server::Server;
use crate::stream::Stream;

/// The install context (see the module documentation). Derefs to the [`Stream`] template, so
/// `m.iqs().rule(ns, name).get(handler)` and `m.feature(el)` read as in the seed.
pub struct Module<'a> {
    stream: &'a mut Stream,
    hooks: &'a Hooks,
    pub config: &'a Config,
}

impl<'a> Module<'a> {
    pub fn new(stream: &'a mut Stream, hooks: &'a Hooks, config: &'a Config) -> Module<'a> {
        Module {
            stream,
            hooks,
            config,
        }
    }

    /// Registers a stanza hook (see `core::hooks`).
    pub fn hook(
        &self,
        point: Point,
        priority: i32,
        handler: impl Fn(&Rc<Server>, &mut Routed<'_>) -> Flow + 'static,
    ) {
        self.hooks.hook(point, priority, handler);
    }

    /// Registers a handler of lifecycle event `E` (see `core::events`).
    pub fn on<E: 'static>(&self, priority: i32, handler: impl Fn(&Rc<Server>, &mut E) + 'static) {
        self.hooks.on(priority, handler);
    }
}

impl Deref for Module<'_> {
    type Target = Stream;
    fn deref(&self) -> &Stream {
        self.stream
    }
}

impl DerefMut for Module<'_> {
    fn deref_mut(&mut self) -> &mut Stream {
        self.stream
    }
}
