//! wockd: a personal XMPP gateway server on one glib main loop.
//!
//! Layers, one folder each: `xml` (framing and parsing), `net` (sockets, sources, TLS),
//! `stream` (a client stream's negotiation), `iq` (the rule API of the seed), `router`
//! (stanza routing and sessions), `modules` (one XEP per file), `store` (SQLite), `auth`
//! (SCRAM and PLAIN), `transport` (libpurple) and `torrent` (librqbit).

pub mod auth;
pub mod cli;
pub mod config;
pub mod core;
pub mod iq;
pub mod modules;
pub mod net;
pub mod router;
pub mod server;
pub mod store;
pub mod stream;
pub mod torrent;
pub mod transport;
pub mod xml;

/// The version string shown by `wockd --version` and in XEP-0092 answers.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WOCKD_GIT_REV"), ")");
