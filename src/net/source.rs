//! glib sources on the thread's default `MainContext`.
//!
//! glib's `*_source_new` constructors demand `Send` closures so a source could be attached
//! anywhere; ours hold `Rc` state of the main thread. `ThreadGuard` makes that sound: the
//! closure can only ever run (or drop) on the thread that made it, and we attach to that
//! thread's default context. Using the thread-default context (rather than the global one)
//! lets tests run several servers, each on its own thread and context.

use std::os::fd::RawFd;
use std::time::Duration;

use glib::thread_guard::ThreadGuard;
use glib::{ControlFlow, IOCondition, MainContext, Priority, Source};

/// Calls `f` whenever `fd` meets `condition`, until it returns `Break` or the source is
/// destroyed.
pub fn watch_fd<F>(fd: RawFd, condition: IOCondition, f: F) -> Source
where
    F: FnMut(RawFd, IOCondition) -> ControlFlow + 'static,
{
    let mut guarded = ThreadGuard::new(f);
    let source = glib_unix::fd_source_new(fd, condition, None, Priority::DEFAULT, move |fd, c| {
        (guarded.get_mut())(fd, c)
    });
    source.attach(Some(&MainContext::ref_thread_default()));
    source
}

/// Calls `f` every `interval` until it returns `Break`.
pub fn every<F>(interval: Duration, f: F) -> Source
where
    F: FnMut() -> ControlFlow + 'static,
{
    let mut guarded = ThreadGuard::new(f);
    let source = glib::timeout_source_new(interval, None, Priority::DEFAULT, move || {
        (guarded.get_mut())()
    });
    source.attach(Some(&MainContext::ref_thread_default()));
    source
}

/// Calls `f` once on the next loop iteration: used to coalesce work (output flushes) to one
/// run per loop turn.
///
/// At `DEFAULT` priority, like the socket sources: glib dispatches only the most urgent ready
/// priority, so an idle-priority flush would starve while sockets stay readable under load.
pub fn idle_once<F>(f: F) -> Source
where
    F: FnOnce() + 'static,
{
    idle_once_at(Priority::DEFAULT, f)
}

/// Like [`idle_once`] at another priority (the mailbox commits just before output flushes).
pub fn idle_once_at<F>(priority: Priority, f: F) -> Source
where
    F: FnOnce() + 'static,
{
    let mut guarded = ThreadGuard::new(Some(f));
    let source = glib::idle_source_new(None, priority, move || {
        if let Some(f) = guarded.get_mut().take() {
            f();
        }
        ControlFlow::Break
    });
    source.attach(Some(&MainContext::ref_thread_default()));
    source
}

/// Spawns a future on the thread's default context (the deferred-answer path of IQ handlers).
pub fn spawn_local<F>(f: F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    MainContext::ref_thread_default().spawn_local(f);
}
