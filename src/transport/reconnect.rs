//! Connection state and reconnects: libpurple's connection ui-ops, capped exponential
//! backoff with jitter, and telling the user why an account is down.
//!
//! * Fatal errors (`purple_connection_error_is_fatal`: wrong password, invalid username,
//!   certificate problems…) are not retried; the account waits for the user (re-login
//!   command or a new registration).
//! * Non-fatal errors are retried after `min(CAP, BASE·2^n)` scaled by a random factor in
//!   [0.5, 1]. libpurple calls some errors non-fatal that repeat forever (e.g. "You require
//!   encryption, but it is not available on this server."), so after [`MAX_ATTEMPTS`]
//!   failures in a row the account is given up as well.
//! * A connection counts as a success only once it has stayed up for [`STABLE`]: one that
//!   logs in and drops at once (a server that kicks the client after login) keeps counting
//!   towards the cap instead of looping forever at the shortest delay.
//! * The user hears about a failure once per distinct reason (a message from the service JID)
//!   and sees the state in the service JID's presence status, not one message per attempt.
//! * Reconnects are scheduled from a timer, never from inside the ui-op (libpurple is still
//!   tearing the connection down then).

use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::purple::Connection;
use super::purple::connection;
use super::{LinkState, Transport, accounts, core, service};
use crate::server::Server;

const BASE: Duration = Duration::from_secs(2);
const CAP: Duration = Duration::from_secs(300);
/// Failures in a row after which a non-fatal error is treated as fatal.
pub const MAX_ATTEMPTS: u32 = 8;
/// How long a connection must last before its failure no longer counts as one in a row.
pub const STABLE: Duration = Duration::from_secs(60);

/// A legacy account's reconnect state.
#[derive(Default)]
pub struct Backoff {
    /// Failures since the last connection that lasted [`STABLE`].
    pub attempts: u32,
    /// When the current connection was established.
    connected_at: Option<Instant>,
    timer: Option<glib::Source>,
}

impl Backoff {
    /// Delay before attempt number `attempts` (1-based), jittered.
    pub fn delay(attempts: u32) -> Duration {
        let exp = BASE.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
        let d = exp.min(CAP);
        d.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    pub fn cancel(&mut self) {
        if let Some(t) = self.timer.take() {
            t.destroy();
        }
    }
}

/// Starts the stall watchdog (see `[transport] stall_timeout`): a connection that has heard
/// nothing from its server for that long is failed as a network error, so the usual reconnect
/// (and telling the user) follows. Prpls that never record when data arrived
/// (`last_received` stays 0) are left alone.
pub fn start_watchdog(server: &Rc<Server>) {
    let stall = server.config.transport.stall_timeout;
    if stall == 0 {
        return;
    }
    let every = Duration::from_secs((stall / 3).clamp(1, 30));
    let weak = Rc::downgrade(server);
    crate::net::source::every(every, move || {
        let Some(server) = weak.upgrade() else {
            return glib::ControlFlow::Break;
        };
        super::purple::ffi::guard("stall watchdog", (), || check_stalls(&server, stall));
        glib::ControlFlow::Continue
    });
}

fn check_stalls(server: &Rc<Server>, stall: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let online: Vec<i64> = Transport::get(server)
        .legacy
        .borrow()
        .values()
        .filter(|l| l.state == LinkState::Online)
        .map(|l| l.id)
        .collect();
    for id in online {
        let Some(gc) = accounts::connection(server, id) else {
            continue;
        };
        let last = gc.last_received();
        if last > 0 && now - last > stall as i64 {
            tracing::warn!(account = %accounts::label(server, id), "no data from the legacy server for {stall} s; reconnecting");
            // libpurple tears the connection down from its own idle callback, then our
            // report_disconnect_reason runs.
            gc.fail_network(&format!(
                "No data from the server for {stall} s; the connection is taken for dead."
            ));
        }
    }
}

pub fn install_ui_ops() {
    connection::set_ui_ops(connection::UiOps {
        connected,
        disconnected,
        report_disconnect_reason,
    });
}

fn id_of_gc(server: &Server, gc: Connection) -> Option<i64> {
    Transport::get(server).id_of(gc.account()?)
}

fn connected(gc: Connection) {
    let Some(server) = core::server() else { return };
    let Some(id) = id_of_gc(&server, gc) else {
        return;
    };
    let owner_service = {
        let t = Transport::get(&server);
        let mut legacy = t.legacy.borrow_mut();
        let Some(l) = legacy.get_mut(&id) else { return };
        l.state = LinkState::Online;
        l.backoff.cancel();
        l.backoff.connected_at = Some(Instant::now());
        (l.owner.clone(), l.service.clone())
    };
    tracing::info!(account = %accounts::label(&server, id), "legacy account connected");
    service::announce(&server, &owner_service.0, &owner_service.1);
    // Joining from inside the ui-op would re-enter the prpl's login path.
    let weak = Rc::downgrade(&server);
    crate::net::source::idle_once(move || {
        super::purple::ffi::guard("after connect", (), || {
            if let Some(s) = weak.upgrade() {
                // Contacts into the roster, rooms re-joined.
                Transport::get(&s)
                    .events
                    .link_up
                    .publish(&s, &super::events::LinkUp { id });
            }
        })
    });
}

fn disconnected(gc: Connection) {
    let Some(server) = core::server() else { return };
    let Some(id) = id_of_gc(&server, gc) else {
        return;
    };
    let t = Transport::get(&server);
    let owner_service = {
        let mut legacy = t.legacy.borrow_mut();
        let Some(l) = legacy.get_mut(&id) else { return };
        if matches!(l.state, LinkState::Online | LinkState::Connecting) {
            l.state = LinkState::Offline;
        }
        for r in l.rooms.values_mut() {
            r.joined = false;
        }
        (l.owner.clone(), l.service.clone())
    };
    // Room occupants vanish for the user until the rooms are re-joined.
    t.events
        .link_down
        .publish(&server, &super::events::LinkDown { id });
    service::announce(&server, &owner_service.0, &owner_service.1);
}

fn report_disconnect_reason(gc: Connection, fatal: bool, text: &str) {
    let Some(server) = core::server() else { return };
    let Some(id) = id_of_gc(&server, gc) else {
        return;
    };
    let text = super::text::line(text);
    failed(&server, id, &text, fatal);
}

/// Records a failure, tells the user once, and schedules a retry unless it is final.
pub fn failed(server: &Rc<Server>, id: i64, text: &str, fatal: bool) {
    let label = accounts::label(server, id);
    let t = Transport::get(server);
    let (owner, service_domain, attempts, tell) = {
        let mut legacy = t.legacy.borrow_mut();
        let Some(l) = legacy.get_mut(&id) else { return };
        if matches!(l.state, LinkState::Disabled) {
            return;
        }
        if l.backoff
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE)
        {
            // The connection was good for a while: a fresh run of failures starts.
            l.backoff.attempts = 0;
            l.told = None;
        }
        l.backoff.attempts += 1;
        let give_up = fatal || l.backoff.attempts >= MAX_ATTEMPTS;
        l.state = if give_up {
            LinkState::Failed(text.to_owned())
        } else {
            LinkState::Down(text.to_owned())
        };
        let tell = give_up || l.told.as_deref() != Some(text);
        l.told = Some(text.to_owned());
        (
            l.owner.clone(),
            l.service.clone(),
            (!give_up).then_some(l.backoff.attempts),
            tell,
        )
    };
    tracing::warn!(account = %label, fatal, "legacy account disconnected: {text}");
    // One jittered draw: the delay the user is told is the one scheduled.
    let delay = attempts.map(Backoff::delay);
    if tell {
        let msg = match delay {
            Some(d) => format!(
                "{label}: disconnected: {text}. Reconnecting in {}s.",
                (d.as_secs_f64().round() as u64).max(1)
            ),
            None if fatal => format!(
                "{label}: cannot connect: {text}. Not retrying; fix the settings (register again) \
                 and use the re-login command."
            ),
            None => format!(
                "{label}: giving up after {MAX_ATTEMPTS} failed attempts: {text}. Use the re-login command."
            ),
        };
        service::tell(server, &owner, &service_domain, &msg);
    }
    service::announce(server, &owner, &service_domain);
    if let Some(d) = delay {
        schedule(server, id, d);
    }
}

fn schedule(server: &Rc<Server>, id: i64, delay: Duration) {
    let weak = Rc::downgrade(server);
    let timer = server.after(delay, move || {
        super::purple::ffi::guard("reconnect", (), || {
            let Some(s) = weak.upgrade() else { return };
            let t = Transport::get(&s);
            let (acc, due) = {
                let mut legacy = t.legacy.borrow_mut();
                let Some(l) = legacy.get_mut(&id) else { return };
                l.backoff.timer = None;
                (l.account, matches!(l.state, LinkState::Down(_)))
            };
            if !due {
                return;
            }
            // A live account (still in the table).
            if !acc.is_disconnected() {
                // libpurple has not finished tearing down yet.
                schedule(&s, id, Duration::from_secs(1));
                return;
            }
            accounts::login(&s, id);
        })
    });
    let t = Transport::get(server);
    if let Some(l) = t.legacy.borrow_mut().get_mut(&id) {
        l.backoff.cancel();
        l.backoff.timer = Some(timer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for n in 1..30 {
            let d = Backoff::delay(n);
            let full = BASE.saturating_mul(1u32 << (n - 1).min(16)).min(CAP);
            assert!(d <= full && d >= full / 2, "attempt {n}: {d:?}");
        }
        assert!(Backoff::delay(40) <= CAP);
    }
}
