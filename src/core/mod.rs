//! The core every module builds on: the hook bus and its event vocabulary, the session table,
//! stanza errors and helpers, time, and the account and mailbox helpers modules share.
//!
//! A module (`src/modules/*.rs`, the services) imports `core`, `store` and `xml` only — never a
//! sibling module. What the server itself provides (the [`Server`], its streams, the IQ rule
//! API) is re-exported here for them.

pub mod account;
pub mod blocklist;
pub mod events;
pub mod hooks;
pub mod mailbox;
pub mod module;
pub mod photo;
pub mod roster;
pub mod sessions;
pub mod stanza;
pub mod time;
pub mod uplink;

/// Registers the core's own event handlers (caches that drop a deleted account).
pub fn install(hooks: &Hooks) {
    roster::install(hooks);
    blocklist::install(hooks);
    photo::install(hooks);
}

pub use crate::iq::{Incoming, IqType};
pub use crate::server::Server;
pub use crate::stream::{Connection, Stage, Stream};
pub use events::*;
pub use hooks::{Flow, Hooks, Name, Point, To};
pub use module::Module;
