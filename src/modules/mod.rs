//! Server modules, one feature per file. Each has `install(s: &mut Stream)` that registers its
//! stream features and IQ rules — the seed's `stream_auth(s)` / `stream_torrent(s)` shape.

pub mod iq_auth;
pub mod message;
pub mod ping;
pub mod presence;
pub mod session;

use crate::stream::Stream;

/// Installs every built-in module on the stream template.
pub fn install_all(s: &mut Stream) {
    iq_auth::install(s);
    session::install(s);
    ping::install(s);
}
