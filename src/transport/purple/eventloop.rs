//! libpurple's event loop on GLib (nullclient's implementation), the pump that drives the
//! global default context from another one, and prpl-irc's send-queue flush.
//!
//! Ownership: every timer and watch carries a boxed closure of ours as GLib user data; GLib
//! owns the box from `g_*_add_full` until it calls the destroy notify, which frees it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::time::Duration;

use glib::ffi as g;
use purple_sys as p;

use super::account::Account;
use super::ffi::{guard, string};

/// The ui-ops struct for `purple_eventloop_set_ui_ops` (leaked: libpurple keeps it).
pub(super) fn ui_ops() -> &'static mut p::PurpleEventLoopUiOps {
    Box::leak(Box::new(p::PurpleEventLoopUiOps {
        timeout_add: Some(timeout_add),
        timeout_remove: Some(source_remove),
        input_add: Some(input_add),
        input_remove: Some(source_remove),
        input_get_error: None,
        timeout_add_seconds: Some(timeout_add_seconds),
        ..Default::default()
    }))
}

/// In the test harness the server runs a context of its own: drive the global default
/// context (where libpurple's sources live) from it. A no-op under `wockd run`.
pub fn pump_default_context() {
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

/// libpurple's callback and data for one of its timers. GLib gets this box as the source's
/// user data rather than libpurple's pointer, so that [`flush_send_queue`] — which finds
/// prpl-irc's own send-queue timer by its user data — can never match one of these.
struct TimerClosure {
    func: p::GSourceFunc,
    data: p::gpointer,
}

unsafe extern "C" fn timer_fire(closure: g::gpointer) -> g::gboolean {
    guard("timer_fire", 0, || {
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
    guard("timer_free", (), || {
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
    guard("timeout_add", 0, || {
        tracing::trace!(interval_ms = interval, "libpurple timer");
        add_timer(interval, false, f, data)
    })
}

unsafe extern "C" fn timeout_add_seconds(
    interval: p::guint,
    f: p::GSourceFunc,
    data: p::gpointer,
) -> p::guint {
    guard("timeout_add_seconds", 0, || {
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
pub fn flush_send_queue(acc: Account) {
    // SAFETY: main thread; `acc` is a live account (the caller holds it via `Legacy`); the
    // connection and its protocol data are libpurple's, only compared by address; the source
    // found belongs to the default context and is only re-timed, not freed.
    unsafe {
        let acc = acc.as_ptr();
        if string(p::purple_account_get_protocol_id(acc)) != "prpl-irc" {
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
    guard("source_remove", 0, || {
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
    guard("input_add", 0, || {
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
    guard("input_invoke", g::GTRUE, || {
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
    guard("input_destroy", (), || {
        // SAFETY: created by Box::into_raw in input_add; GLib calls this exactly once.
        drop(unsafe { Box::from_raw(data as *mut InputClosure) });
    })
}
