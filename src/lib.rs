//! wockd: a personal XMPP gateway server on one glib main loop.
//!
//! # Layout
//!
//! One folder per layer; a stanza goes down the list and back up only through events:
//!
//! * `xml` — framing, parsing, serialising, namespace names (`xml::ns`).
//! * `net` — glib sources for sockets and timers, TLS, per-address limits, address policy.
//! * `stream` — a client stream: negotiation, SASL/SASL2/FAST, stream management, CSI.
//! * `router` — classifies a stanza's recipient and fires the hook bus; answers what nobody
//!   handled. Names no module.
//! * `core` — what modules build on: the hook bus (`core::hooks`) and its events
//!   (`core::events`), the session table, stanza errors (`IqResult`), accounts, rosters,
//!   blocklists and photo hashes as the server keeps them, mailbox rows, time.
//! * `iq` — the IQ rule API of the seed (`m.iqs().rule(ns, name).get(handler)`).
//! * `modules` — one XEP per file; each imports `core`, `store` and `xml` only.
//! * `store` — SQLite: versioned migrations, the mailbox and its write-behind queue.
//! * `auth` — SCRAM, PLAIN, the key-derivation worker pool.
//! * `s2s` — federation: server-to-server links (dialback, STARTTLS), a delivery hook for
//!   remote domains, and remote stanzas handed to the router.
//! * `transport` (libpurple) and `torrent` (librqbit) — services at their own domains.
//! * `server` — listeners, the connection registry, IQs the server sends; `cli` and `status`
//!   at the edge.
//!
//! # Events
//!
//! The router fires `Pre(name, to)` for what a local user sends, then `Deliver(name, to)`,
//! where `name` is message, presence or iq and `to` the recipient's class: `Host`, `Bare`,
//! `Full`, `Service` or `Remote`. Hooks run by priority (higher first) until one returns
//! `Flow::Handled`. A chat message to a bare JID: blocking (`Pre`, 1000), sent carbons and
//! the sender's archive (`Pre`, −50), then the message module chooses sessions (`Deliver`,
//! 100), the archive stamps it (50), the message module sends it (0), received carbons (−50),
//! offline storage keeps it if nobody was there (−100). Lifecycle events are typed:
//! `ResourceBound`, `ResourceAvailable`, `SessionEnded`, `AccountDeleted`, `AccountDiscoInfo`…
//! (`core::events` has the table of who fires and who hooks each).

pub mod auth;
pub mod cli;
pub mod component;
pub mod config;
pub mod core;
pub mod iq;
pub mod modules;
pub mod net;
pub mod router;
pub mod s2s;
pub mod server;
pub mod status;
pub mod store;
pub mod stream;
pub mod torrent;
pub mod transport;
pub mod xml;

/// The version string shown by `wockd --version` and in XEP-0092 answers.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WOCKD_GIT_REV"), ")");
