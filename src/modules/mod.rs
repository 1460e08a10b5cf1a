//! Server modules, one feature per file. Each has `install(m: &mut Module)` that registers its
//! stream features, IQ rules and hooks — the seed's `stream_auth(s)` / `stream_torrent(s)`
//! shape, plus the hook bus (`core::hooks`). A module imports `core`, `store` and `xml` only,
//! never a sibling: modules co-operate through events (`core::events`).

pub mod blocking;
pub mod carbons;
pub mod disco;
pub mod iq_auth;
pub mod last;
pub mod mam;
pub mod message;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod register;
pub mod roster;
pub mod session;
pub mod time;
pub mod vcard;
pub mod version;

use crate::core::Module;

/// Installs every built-in module on the stream template.
pub fn install_all(s: &mut Module) {
    iq_auth::install(s);
    session::install(s);
    ping::install(s);
    roster::install(s);
    presence::install(s);
    message::install(s);
    offline::install(s);
    disco::install(s);
    vcard::install(s);
    private::install(s);
    blocking::install(s);
    register::install(s);
    version::install(s);
    time::install(s);
    last::install(s);
    carbons::install(s);
    mam::install(s);
    pep::install(s);
    crate::torrent::stream_torrent(s);
}

/// Starts the services that live at their own domains (router services, the shape of an
/// XEP-0114 component), once the server is running. Each is a no-op unless configured.
pub fn install_services(server: &std::rc::Rc<crate::server::Server>) {
    crate::transport::install(server);
    crate::torrent::install(server);
}

/// Stops the services' timers and worker threads, after `Server::shutdown`.
pub fn stop_services(server: &crate::server::Server) {
    crate::torrent::shutdown(server);
}
