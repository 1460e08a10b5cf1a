//! Headless libpurple: initialisation, and the way back from libpurple's callbacks to the
//! server. The process-wide ui-ops that are not about one feature (event loop, debug output,
//! DNS, core info) are in `purple/` (`init`, `eventloop`, `debug`, `dns`).
//!
//! libpurple is a process-wide singleton and **not thread-safe**. It is initialised once per
//! process, on the thread that runs wockd's main loop; [`on_main_thread`] guards every entry
//! point. libpurple's own sources (its ui-ops, and the few places where libpurple and prpl-irc
//! call `g_timeout_add` directly) live on the GLib *global default* `MainContext`, which is the
//! context `wockd run` runs. When the server runs on another context (the test harness gives
//! each server a thread-default context of its own), a 5 ms timer on the server's context
//! iterates the default one, so everything still happens on the server's thread.
//!
//! Checklist (`../shared/reference/libpurple.md` §3.1): user dir under the data dir, debug
//! output into `tracing` (target `purple`, with credential lines redacted), event loop on GLib,
//! DNS through GIO's asynchronous resolver and no SRV lookups (so no forked helper processes),
//! D-Bus off, logging and idle reporting off.
//!
//! One user dir serves every wockd user: libpurple keeps one global user dir, buddy list and
//! account list per process, so per-user dirs would need one process per user. Nothing
//! secret is in it — passwords are injected from wockd's store before each connect and
//! `remember_password` stays off, so `accounts.xml` never holds one.

use std::cell::RefCell;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;

use super::purple;
use crate::server::Server;

/// The UI id libpurple stores per-UI settings (such as "enabled") under.
pub const UI_ID: &str = "wockd";

/// Set once the process has initialised libpurple (it cannot be done twice).
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// What ui-op callbacks (plain `extern "C"` functions without a context pointer) need to get
/// back to the server. This is thread-local rather than in `Server::ext` because libpurple
/// itself is process-global and calls us without any user data; it holds only a `Weak`.
struct Core {
    server: Weak<Server>,
    thread: ThreadId,
}

thread_local! {
    static CORE: RefCell<Option<Core>> = const { RefCell::new(None) };
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("libpurple is already running in this process for another server")]
    AlreadyInitialised,
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("{0}")]
    CoreInit(#[from] purple::init::CoreInitFailed),
}

/// The server libpurple works for, if called on its thread and the server is alive.
pub fn server() -> Option<Rc<Server>> {
    CORE.with(|c| {
        let c = c.borrow();
        let core = c.as_ref()?;
        if core.thread != std::thread::current().id() {
            tracing::error!("libpurple callback on a foreign thread; ignored");
            return None;
        }
        core.server.upgrade()
    })
}

/// True on the thread that initialised libpurple. Every call into libpurple checks this.
pub fn on_main_thread() -> bool {
    CORE.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|c| c.thread == std::thread::current().id())
    })
}

/// Initialises libpurple for `server`, with its user dir at `dir`.
pub fn init(server: &Rc<Server>, dir: &Path) -> Result<(), InitError> {
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialised);
    }
    crate::store::private_dir(dir).map_err(|e| InitError::Dir(dir.display().to_string(), e))?;
    // libpurple asks for this dir to cache peer certificates; a missing one makes the TLS
    // trust prompt come back on every connect (skype4pidgin#290).
    let peers = dir.join("certificates").join("x509").join("tls_peers");
    crate::store::private_dir(&peers)
        .map_err(|e| InitError::Dir(peers.display().to_string(), e))?;
    CORE.with(|c| {
        *c.borrow_mut() = Some(Core {
            server: Rc::downgrade(server),
            thread: std::thread::current().id(),
        })
    });
    purple::eventloop::pump_default_context();
    purple::init::init(dir, UI_ID, ui_init, super::policy::filter_resolved)?;
    // Certificate trust per wockd user, not per process (certs.rs).
    super::certs::install(dir);
    let (maj, min, mic) = purple::init::version().unwrap_or_default();
    tracing::info!(user_dir = %dir.display(), "libpurple {maj}.{min}.{mic} initialised");
    Ok(())
}

/// Every feature's ui-ops and signal handlers, installed when libpurple asks for them.
fn ui_init() {
    super::reconnect::install_ui_ops();
    super::messages::install_ui_ops();
    super::requests::install_ui_ops();
    super::contacts::install_ui_ops();
    super::roomlist::install_ui_ops();
}
