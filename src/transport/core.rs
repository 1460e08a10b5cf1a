//! Headless libpurple: initialisation and the process-wide ui-ops that are not about one
//! feature (event loop, debug output, DNS, core info).
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
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use gio::prelude::*;
use glib::ffi as g;
use purple_sys as p;

use super::ffi::{cstring, string};
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
    /// Pending DNS queries (PurpleDnsQueryData pointer → cancellable).
    static DNS: RefCell<HashMap<usize, gio::Cancellable>> = RefCell::new(HashMap::new());
    /// Pending SRV/TXT queries (PurpleSrvTxtQueryData pointer → still wanted).
    static SRV: RefCell<std::collections::HashSet<usize>> = RefCell::new(Default::default());
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("libpurple is already running in this process for another server")]
    AlreadyInitialised,
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("purple_core_init failed (see the purple log target)")]
    CoreInit,
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
    pump_default_context();

    let dir_c = cstring(&dir.to_string_lossy());
    let ui = cstring(UI_ID);
    // SAFETY: all of this runs on the main thread before any other libpurple use. The ui-ops
    // structs are leaked: libpurple keeps the pointers for the life of the process.
    unsafe {
        p::purple_util_set_user_dir(dir_c.as_ptr());
        p::purple_debug_set_enabled(0); // no printing to stdout; the ui-op below gets it all
        p::purple_debug_set_verbose(0);
        p::purple_debug_set_unsafe(0); // prpl-jabber then masks credentials in its own output
        p::purple_debug_set_ui_ops(Box::leak(Box::new(p::PurpleDebugUiOps {
            print: Some(debug_print),
            is_enabled: Some(debug_is_enabled),
            ..Default::default()
        })));
        p::purple_core_set_ui_ops(Box::leak(Box::new(p::PurpleCoreUiOps {
            ui_init: Some(ui_init),
            get_ui_info: Some(ui_info),
            ..Default::default()
        })));
        p::purple_eventloop_set_ui_ops(Box::leak(Box::new(p::PurpleEventLoopUiOps {
            timeout_add: Some(timeout_add),
            timeout_remove: Some(source_remove),
            input_add: Some(input_add),
            input_remove: Some(source_remove),
            input_get_error: None,
            timeout_add_seconds: Some(timeout_add_seconds),
            ..Default::default()
        })));
        p::purple_dnsquery_set_ui_ops(Box::leak(Box::new(p::PurpleDnsQueryUiOps {
            resolve_host: Some(dns_resolve),
            destroy: Some(dns_destroy),
            ..Default::default()
        })));
        p::purple_srv_txt_query_set_ui_ops(Box::leak(Box::new(p::PurpleSrvTxtQueryUiOps {
            resolve: Some(srv_resolve),
            destroy: Some(srv_destroy),
            ..Default::default()
        })));
        if p::purple_core_init(ui.as_ptr()) == 0 {
            return Err(InitError::CoreInit);
        }
        // Desktop privacy: no other process on a session bus may drive the accounts.
        p::purple_dbus_uninit();
        for (k, v) in [
            ("/purple/logging/log_ims", false),
            ("/purple/logging/log_chats", false),
            ("/purple/logging/log_system", false),
            ("/purple/away/away_when_idle", false),
        ] {
            let k = cstring(k);
            p::purple_prefs_set_bool(k.as_ptr(), v as p::gboolean);
        }
        let k = cstring("/purple/away/idle_reporting");
        let v = cstring("none");
        p::purple_prefs_set_string(k.as_ptr(), v.as_ptr());
        p::purple_set_blist(p::purple_blist_new());
        p::purple_blist_load();
    }
    // Certificate trust per wockd user, not per process (certs.rs).
    super::certs::install(dir);
    let (maj, min, mic) = purple_sys::version();
    tracing::info!(user_dir = %dir.display(), "libpurple {maj}.{min}.{mic} initialised");
    Ok(())
}

/// Every feature's ui-ops and signal handlers, installed when libpurple asks for them.
unsafe extern "C" fn ui_init() {
    super::ffi::guard("ui_init", (), || {
        super::reconnect::install_ui_ops();
        super::messages::install_ui_ops();
        super::requests::install_ui_ops();
        super::contacts::install_ui_ops();
        super::roomlist::install_ui_ops();
        super::muc::install_signals();
    })
}

unsafe extern "C" fn ui_info() -> *mut p::GHashTable {
    super::ffi::guard("ui_info", std::ptr::null_mut(), || {
        thread_local! {
            static INFO: usize = {
                // SAFETY: a string table of static strings, created once and never freed.
                unsafe {
                    let t = g::g_hash_table_new(Some(g::g_str_hash), Some(g::g_str_equal));
                    for (k, v) in [
                        (c"name", c"wockd"),
                        (c"version", c"0.1"),
                        (c"website", c"https://wockd.org/"),
                        (c"client_type", c"pc"),
                    ] {
                        g::g_hash_table_insert(t, k.as_ptr() as g::gpointer, v.as_ptr() as g::gpointer);
                    }
                    t as usize
                }
            };
        }
        INFO.with(|t| *t as *mut p::GHashTable)
    })
}

/// In the test harness the server runs a context of its own: drive the global default
/// context (where libpurple's sources live) from it. A no-op under `wockd run`.
fn pump_default_context() {
    // SAFETY: plain GLib context calls on this thread; the default context is acquired here
    // for good (nobody else in the process iterates it while libpurple lives on this thread).
    unsafe {
        let default = g::g_main_context_default();
        let current = g::g_main_context_ref_thread_default();
        g::g_main_context_unref(current);
        if current == default {
            return;
        }
        if g::g_main_context_acquire(default) == 0 {
            tracing::error!("cannot acquire the default main context; libpurple will stall");
            return;
        }
    }
    crate::net::source::every(Duration::from_millis(5), || {
        // SAFETY: the default context is owned by this thread (acquired above).
        unsafe {
            let default = g::g_main_context_default();
            for _ in 0..64 {
                if g::g_main_context_iteration(default, 0) == 0 {
                    break;
                }
            }
        }
        glib::ControlFlow::Continue
    });
}

// ---- event loop ui-ops (nullclient's GLib implementation) ---------------------------------

/// libpurple's callback and data for one of its timers. GLib gets this box as the source's
/// user data rather than libpurple's pointer, so that [`flush_send_queue`] — which finds
/// prpl-irc's own send-queue timer by its user data — can never match one of these.
struct TimerClosure {
    func: p::GSourceFunc,
    data: p::gpointer,
}

unsafe extern "C" fn timer_fire(closure: g::gpointer) -> g::gboolean {
    super::ffi::guard("timer_fire", 0, || {
        // SAFETY: `closure` is the box made in `add_timer`, alive until `timer_free`.
        let c = unsafe { &*(closure as *const TimerClosure) };
        match c.func {
            // SAFETY: libpurple's callback with libpurple's data, on the loop's thread.
            Some(f) => unsafe { f(c.data) },
            None => 0,
        }
    })
}

unsafe extern "C" fn timer_free(closure: g::gpointer) {
    super::ffi::guard("timer_free", (), || {
        // SAFETY: GLib calls this once, when the source is destroyed; the box is ours.
        drop(unsafe { Box::from_raw(closure as *mut TimerClosure) });
    })
}

fn add_timer(
    interval: p::guint,
    seconds: bool,
    func: p::GSourceFunc,
    data: p::gpointer,
) -> p::guint {
    let closure = Box::into_raw(Box::new(TimerClosure { func, data })) as g::gpointer;
    // SAFETY: GLib owns `closure` from here and frees it through `timer_free`.
    unsafe {
        if seconds {
            g::g_timeout_add_seconds_full(
                g::G_PRIORITY_DEFAULT,
                interval,
                Some(timer_fire),
                closure,
                Some(timer_free),
            )
        } else {
            g::g_timeout_add_full(
                g::G_PRIORITY_DEFAULT,
                interval,
                Some(timer_fire),
                closure,
                Some(timer_free),
            )
        }
    }
}

unsafe extern "C" fn timeout_add(
    interval: p::guint,
    f: p::GSourceFunc,
    data: p::gpointer,
) -> p::guint {
    super::ffi::guard("timeout_add", 0, || {
        tracing::trace!(interval_ms = interval, "libpurple timer");
        add_timer(interval, false, f, data)
    })
}

unsafe extern "C" fn timeout_add_seconds(
    interval: p::guint,
    f: p::GSourceFunc,
    data: p::gpointer,
) -> p::guint {
    super::ffi::guard("timeout_add_seconds", 0, || {
        tracing::trace!(interval_s = interval, "libpurple timer");
        // GLib rounds second timers up to the next whole second: a 0 s timer would wait up to a
        // second. Use a plain timer for those.
        add_timer(interval, interval != 0, f, data)
    })
}

unsafe extern "C" {
    /// GLib's source functions for `g_timeout_add*` timers (public in gmain.h, not bound by
    /// glib-sys).
    static g_timeout_funcs: g::GSourceFuncs;
}

/// Makes prpl-irc send what it has queued now instead of at its next one-second tick.
///
/// prpl-irc (2.14) queues every outgoing line and drains the queue from a 1 s
/// `g_timeout_add_seconds` of its own — a direct GLib call, not a ui-op — so every line the
/// user sends would wait for that tick (measured: median 1.0 s XMPP → IRC). After handing it a
/// line we make that timer due at once. Its callback still applies the account's rate limit
/// (`ratelimit-interval`/`ratelimit-burst`), so flood protection is unchanged; only the idle
/// wait goes. The timer is the default context's timeout source whose user data is the
/// connection's protocol data (our own timers carry a [`TimerClosure`] instead). If a future
/// prpl-irc has no such timer, nothing is found and nothing happens.
pub fn flush_send_queue(acc: *mut p::PurpleAccount) {
    // SAFETY: main thread; `acc` is a live account (the caller holds it via `Legacy`); the
    // source found belongs to the default context and is only re-timed, not freed.
    unsafe {
        if acc.is_null() || string(p::purple_account_get_protocol_id(acc)) != "prpl-irc" {
            return;
        }
        let gc = p::purple_account_get_connection(acc);
        if gc.is_null() {
            return;
        }
        let irc = p::purple_connection_get_protocol_data(gc);
        if irc.is_null() {
            return;
        }
        // Searching by user data walks every source of the context (every client socket in
        // `wockd run`), so the timer's id is remembered per connection; an id whose source is
        // gone (a new connection) is looked for again.
        let key = irc as usize;
        let cached = SEND_QUEUE_TIMERS.with_borrow(|m| m.get(&key).copied());
        let mut source = cached.map_or(std::ptr::null_mut(), |id| {
            g::g_main_context_find_source_by_id(std::ptr::null_mut(), id)
        });
        if source.is_null() {
            let funcs = std::ptr::addr_of!(g_timeout_funcs) as *mut g::GSourceFuncs;
            source = g::g_main_context_find_source_by_funcs_user_data(
                std::ptr::null_mut(),
                funcs,
                irc as g::gpointer,
            );
            SEND_QUEUE_TIMERS.with_borrow_mut(|m| {
                m.retain(|_, id| {
                    !g::g_main_context_find_source_by_id(std::ptr::null_mut(), *id).is_null()
                });
                if !source.is_null() {
                    m.insert(key, g::g_source_get_id(source));
                }
            });
        }
        if !source.is_null() {
            g::g_source_set_ready_time(source, 0);
        }
    }
}

thread_local! {
    /// prpl-irc's send-queue timer id per connection (its protocol data pointer).
    static SEND_QUEUE_TIMERS: RefCell<HashMap<usize, u32>> = RefCell::new(HashMap::new());
}

unsafe extern "C" fn source_remove(handle: p::guint) -> p::gboolean {
    super::ffi::guard("source_remove", 0, || {
        // SAFETY: handles come from the g_*_add functions above (default context).
        unsafe { g::g_source_remove(handle) }
    })
}

const READ_COND: g::GIOCondition = g::G_IO_IN | g::G_IO_HUP | g::G_IO_ERR;
const WRITE_COND: g::GIOCondition = g::G_IO_OUT | g::G_IO_HUP | g::G_IO_ERR | g::G_IO_NVAL;

struct InputClosure {
    func: p::PurpleInputFunction,
    data: p::gpointer,
    fd: c_int,
}

unsafe extern "C" fn input_add(
    fd: c_int,
    cond: p::PurpleInputCondition,
    func: p::PurpleInputFunction,
    data: p::gpointer,
) -> p::guint {
    super::ffi::guard("input_add", 0, || {
        let mut gcond = 0;
        if cond & p::PURPLE_INPUT_READ != 0 {
            gcond |= READ_COND;
        }
        if cond & p::PURPLE_INPUT_WRITE != 0 {
            gcond |= WRITE_COND;
        }
        let closure = Box::into_raw(Box::new(InputClosure { func, data, fd }));
        // SAFETY: the channel only wraps the fd (it does not own or close it); the watch holds
        // its own reference. The closure is freed by `input_destroy` when the source goes.
        unsafe {
            let ch = g::g_io_channel_unix_new(fd);
            let id = g::g_io_add_watch_full(
                ch,
                g::G_PRIORITY_DEFAULT,
                gcond,
                Some(input_invoke),
                closure as g::gpointer,
                Some(input_destroy),
            );
            g::g_io_channel_unref(ch);
            id
        }
    })
}

unsafe extern "C" fn input_invoke(
    _ch: *mut g::GIOChannel,
    cond: g::GIOCondition,
    data: g::gpointer,
) -> g::gboolean {
    super::ffi::guard("input_invoke", g::GTRUE, || {
        // SAFETY: `data` is the InputClosure of this watch, alive until input_destroy.
        let c = unsafe { &*(data as *const InputClosure) };
        let mut pc = 0;
        if cond & READ_COND != 0 {
            pc |= p::PURPLE_INPUT_READ;
        }
        if cond & WRITE_COND != 0 {
            pc |= p::PURPLE_INPUT_WRITE;
        }
        if let Some(f) = c.func {
            // SAFETY: the prpl's callback with the data it registered.
            unsafe { f(c.data, c.fd, pc) };
        }
        g::GTRUE
    })
}

unsafe extern "C" fn input_destroy(data: g::gpointer) {
    super::ffi::guard("input_destroy", (), || {
        // SAFETY: created by Box::into_raw in input_add; GLib calls this exactly once.
        drop(unsafe { Box::from_raw(data as *mut InputClosure) });
    })
}

// ---- debug output ----------------------------------------------------------------------

/// Lines that may carry a credential (IRC `PASS`, NickServ, SASL) are cut after the verb.
fn redact(line: &str) -> String {
    const SECRETS: [&str; 5] = ["PASS ", "IDENTIFY", "AUTHENTICATE ", "password", "<auth "];
    for s in SECRETS {
        if let Some(i) = line.find(s) {
            return format!("{}{s}[redacted]", &line[..i]);
        }
    }
    line.to_owned()
}

unsafe extern "C" fn debug_print(
    level: p::PurpleDebugLevel,
    category: *const c_char,
    arg: *const c_char,
) {
    super::ffi::guard("debug_print", (), || {
        let cat = string(category);
        let text = redact(string(arg).trim_end());
        match level {
            p::PURPLE_DEBUG_FATAL | p::PURPLE_DEBUG_ERROR => {
                tracing::error!(target: "purple", "{cat}: {text}")
            }
            p::PURPLE_DEBUG_WARNING => tracing::warn!(target: "purple", "{cat}: {text}"),
            p::PURPLE_DEBUG_INFO => tracing::debug!(target: "purple", "{cat}: {text}"),
            _ => tracing::trace!(target: "purple", "{cat}: {text}"),
        }
    })
}

unsafe extern "C" fn debug_is_enabled(
    level: p::PurpleDebugLevel,
    _category: *const c_char,
) -> p::gboolean {
    super::ffi::guard("debug_is_enabled", 0, || {
        let on = match level {
            p::PURPLE_DEBUG_FATAL | p::PURPLE_DEBUG_ERROR => {
                tracing::enabled!(target: "purple", tracing::Level::ERROR)
            }
            p::PURPLE_DEBUG_WARNING => tracing::enabled!(target: "purple", tracing::Level::WARN),
            p::PURPLE_DEBUG_INFO => tracing::enabled!(target: "purple", tracing::Level::DEBUG),
            _ => tracing::enabled!(target: "purple", tracing::Level::TRACE),
        };
        on as p::gboolean
    })
}

// ---- DNS through GIO (no fork) -----------------------------------------------------------

unsafe extern "C" fn dns_resolve(
    q: *mut p::PurpleDnsQueryData,
    resolved: p::PurpleDnsQueryResolvedCallback,
    failed: p::PurpleDnsQueryFailedCallback,
) -> p::gboolean {
    super::ffi::guard("dns_resolve", g::GTRUE, || {
        // Never answer FALSE: libpurple would then fork a resolver of its own, which neither
        // stays off the main loop's thread nor applies the address rule.
        let started = super::ffi::guard("dns_resolve lookup", Err(()), || {
            start_lookup(q, resolved, failed)
        });
        if started.is_err() {
            fail_query(q, failed, "internal error while resolving");
        }
        g::GTRUE
    })
}

fn fail_query(q: *mut p::PurpleDnsQueryData, failed: p::PurpleDnsQueryFailedCallback, msg: &str) {
    DNS.with(|d| d.borrow_mut().remove(&(q as usize)));
    let c = cstring(msg);
    if let Some(cb) = failed {
        // SAFETY: the query is pending (not destroyed); libpurple copies the message and then
        // destroys the query (our dns_destroy finds nothing left to cancel).
        unsafe { cb(q, c.as_ptr()) };
    }
}

/// Starts the lookup of a libpurple DNS query on GIO's resolver; the answer keeps only the
/// addresses the account may connect to (`policy::filter_resolved`).
fn start_lookup(
    q: *mut p::PurpleDnsQueryData,
    resolved: p::PurpleDnsQueryResolvedCallback,
    failed: p::PurpleDnsQueryFailedCallback,
) -> Result<(), ()> {
    // SAFETY: q is a live query; libpurple owns the host string. (The port is a C
    // `unsigned short`: no conversion can fail.)
    let (host, port): (String, u16) = unsafe {
        (
            string(p::purple_dnsquery_get_host(q)),
            p::purple_dnsquery_get_port(q),
        )
    };
    let cancel = gio::Cancellable::new();
    DNS.with(|d| d.borrow_mut().insert(q as usize, cancel.clone()));
    let key = q as usize;
    let name = host.clone();
    gio::Resolver::default().lookup_by_name_async(&name, Some(&cancel), move |res| {
        super::ffi::guard("dns answer", (), move || {
            // Destroyed (cancelled) meanwhile: libpurple no longer wants an answer.
            if DNS.with(|d| d.borrow().get(&key).is_none()) {
                return;
            }
            let q = key as *mut p::PurpleDnsQueryData;
            let addrs: Vec<std::net::IpAddr> = match res {
                Ok(addrs) => addrs
                    .iter()
                    .filter_map(|a| a.to_string().parse().ok())
                    .collect(),
                Err(e) => return fail_query(q, failed, &format!("cannot resolve {host}: {e}")),
            };
            if addrs.is_empty() {
                return fail_query(q, failed, &format!("cannot resolve {host}: no addresses"));
            }
            match super::policy::filter_resolved(&host, addrs) {
                Ok(ok) => {
                    DNS.with(|d| d.borrow_mut().remove(&key));
                    let list = hosts_list(&ok, port);
                    if let Some(cb) = resolved {
                        // SAFETY: libpurple takes ownership of the list (proxy.c frees it).
                        unsafe { cb(q, list) };
                    }
                }
                Err(why) => {
                    tracing::warn!(%host, "{why}");
                    fail_query(q, failed, &why)
                }
            }
        })
    });
    Ok(())
}

unsafe extern "C" fn dns_destroy(q: *mut p::PurpleDnsQueryData) {
    super::ffi::guard("dns_destroy", (), || {
        if let Some(c) = DNS.with(|d| d.borrow_mut().remove(&(q as usize))) {
            c.cancel();
        }
    })
}

/// SRV/TXT lookups: libpurple would fork a resolver child. We answer "no records" (on the
/// next loop turn: libpurple must first store the query handle), so prpl-jabber connects to
/// the domain itself on the default port; `connect_server` in the account settings covers
/// servers that need SRV. (TODO: real SRV through `g_resolver_lookup_service_async`.)
unsafe extern "C" fn srv_resolve(
    q: *mut p::PurpleSrvTxtQueryData,
    _resolved: p::PurpleSrvTxtQueryResolvedCallback,
    failed: p::PurpleSrvTxtQueryFailedCallback,
) -> p::gboolean {
    super::ffi::guard("srv_resolve", g::GTRUE, || {
        let key = q as usize;
        SRV.with(|s| s.borrow_mut().insert(key));
        crate::net::source::idle_once(move || {
            super::ffi::guard("srv answer", (), || {
                if !SRV.with(|s| s.borrow_mut().remove(&key)) {
                    return;
                }
                let msg = cstring("SRV lookups are not used; connecting to the domain directly");
                if let Some(cb) = failed {
                    // SAFETY: the query is still pending (not destroyed); libpurple copies the text.
                    unsafe { cb(key as *mut p::PurpleSrvTxtQueryData, msg.as_ptr()) };
                }
            })
        });
        g::GTRUE
    })
}

unsafe extern "C" fn srv_destroy(q: *mut p::PurpleSrvTxtQueryData) {
    super::ffi::guard("srv_destroy", (), || {
        SRV.with(|s| s.borrow_mut().remove(&(q as usize)));
    })
}

/// dnsquery.h's result format: a GSList of alternating (address length, `struct sockaddr *`)
/// entries, all g_malloc'd.
fn hosts_list(addrs: &[std::net::IpAddr], port: u16) -> *mut p::GSList {
    let mut list: *mut g::GSList = std::ptr::null_mut();
    for ip in addrs {
        let (mem, len) = match *ip {
            std::net::IpAddr::V4(v4) => {
                // SAFETY: zeroed sockaddr_in, then filled field by field.
                let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = port.to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                (
                    copy_to_gmalloc(&sin),
                    std::mem::size_of::<libc::sockaddr_in>(),
                )
            }
            std::net::IpAddr::V6(v6) => {
                // SAFETY: as above.
                let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = port.to_be();
                sin6.sin6_addr.s6_addr = v6.octets();
                (
                    copy_to_gmalloc(&sin6),
                    std::mem::size_of::<libc::sockaddr_in6>(),
                )
            }
        };
        // SAFETY: appending to a list we own; GINT_TO_POINTER(len) as libpurple expects.
        unsafe {
            list = g::g_slist_append(list, len as g::gpointer);
            list = g::g_slist_append(list, mem);
        }
    }
    list as *mut p::GSList
}

fn copy_to_gmalloc<T>(v: &T) -> g::gpointer {
    let n = std::mem::size_of::<T>();
    // SAFETY: g_malloc(n) then a byte copy of a plain-old-data struct.
    unsafe {
        let mem = g::g_malloc(n);
        std::ptr::copy_nonoverlapping(v as *const T as *const u8, mem as *mut u8, n);
        mem
    }
}

/// Connects `handler` to a libpurple signal of `instance`; `handler` must have the C
/// signature the signal documents.
///
/// # Safety
/// `handler` must be an `extern "C"` function whose signature matches the signal's.
pub unsafe fn connect_signal(instance: *mut c_void, signal: &str, handler: *const ()) {
    thread_local! {
        // libpurple needs a non-NULL handle identifying the connector.
        static HANDLE: u8 = const { 0 };
    }
    let name = cstring(signal);
    HANDLE.with(|h| {
        // SAFETY: the caller guarantees the signature; the handle outlives the connection
        // (it lives as long as the thread, and so does libpurple).
        unsafe {
            p::purple_signal_connect(
                instance,
                name.as_ptr(),
                h as *const u8 as *mut c_void,
                std::mem::transmute::<*const (), p::PurpleCallback>(handler),
                std::ptr::null_mut(),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("Sent: PASS hunter2"), "Sent: PASS [redacted]");
        assert_eq!(
            redact("PRIVMSG NickServ :IDENTIFY me pw"),
            "PRIVMSG NickServ :IDENTIFY[redacted]"
        );
        assert_eq!(redact("JOIN #x"), "JOIN #x");
    }
}
