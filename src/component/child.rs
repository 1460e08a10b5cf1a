//! `[transport] process = "separate"`: the IM transport in its own process. The server hosts
//! the transport's service domains as components (random secret per start, XEP-0356 roster,
//! outgoing messages, own presence and pubsub granted) and runs `wockd component` as a child
//! attached to its loopback component listener, like Spectrum 2 runs one process per network.
//! A protocol plugin that crashes or leaks takes the child down, never c2s and the mailbox.
//!
//! The child keeps its own data directory (`<data_dir>/transport`: its SQLite with the legacy
//! accounts, libpurple's files) and logs in the stored legacy accounts when it starts. When it
//! dies, the server starts it again after 1 s, doubling up to 60 s while it keeps dying within
//! a minute; the new child tells each user with legacy accounts once (a headline message from
//! the gateway; like any headline, not kept for a user who is offline). The child gets
//! SIGTERM when the server goes (`PR_SET_PDEATHSIG` also when the server is killed).

use std::cell::RefCell;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{
    Access, Component, ComponentLink, Config, MessagePerm, PresencePerm, TransportProcess,
};
use crate::server::Server;

/// What the parent needs to start the child, made before the server (its components are in
/// the server's configuration).
#[derive(Clone)]
pub struct Plan {
    secret: String,
    domains: Vec<String>,
    child: Config,
}

#[derive(Default)]
struct State {
    plan: RefCell<Option<Plan>>,
    pid: RefCell<Option<i32>>,
    started: RefCell<Option<Instant>>,
    backoff: RefCell<Duration>,
    stopping: RefCell<bool>,
    /// A previous child died: the next one tells the users (`transport::RESTARTED_ENV`).
    restarted: RefCell<bool>,
}

/// With `process = "separate"`: turns the transport off in `config` and hosts its domains as
/// components instead; returns the plan for [`start`].
pub fn prepare(config: &mut Config) -> Option<Plan> {
    if !config.transport.enabled || config.transport.process != TransportProcess::Separate {
        return None;
    }
    let services = config.transport.effective_services(config.default_domain());
    let secret = crate::net::link::random_id() + &crate::net::link::random_id();
    let mut child = Config {
        domains: config.domains.clone(),
        data_dir: Some(config.data_dir().join("transport")),
        log: config.log.clone(),
        transport: config.transport.clone(),
        ..Config::default()
    };
    child.transport.process = TransportProcess::Embedded;
    child.transport.services = services.clone();
    child.torrent.enabled = false;
    for s in &services {
        let mut c = Component {
            domain: s.domain.clone(),
            secret: Some(secret.clone()),
            ..Default::default()
        };
        c.privileges.roster = Access::Both;
        c.privileges.message = MessagePerm::Outgoing;
        c.privileges.presence = PresencePerm::ManagedEntity;
        c.privileges
            .iq
            .insert(crate::xml::ns::PUBSUB.to_owned(), Access::Both);
        config.components.retain(|x| x.domain != s.domain);
        config.components.push(c);
    }
    if !config
        .component_listener
        .listen
        .iter()
        .any(|a| a.ip().is_loopback())
    {
        config
            .component_listener
            .listen
            .push(([127, 0, 0, 1], 0).into());
    }
    config.transport.enabled = false;
    Some(Plan {
        secret,
        domains: services.into_iter().map(|s| s.domain).collect(),
        child,
    })
}

/// Starts the child once the component listener is bound.
pub fn start(server: &Rc<Server>, plan: Plan) {
    let st = server.ext::<State>();
    *st.plan.borrow_mut() = Some(plan);
    *st.backoff.borrow_mut() = Duration::from_secs(1);
    spawn(server);
}

/// Stops the child (server shutdown): SIGTERM, up to 5 s, then SIGKILL.
pub fn stop(server: &Server) {
    let st = server.ext::<State>();
    *st.stopping.borrow_mut() = true;
    let Some(pid) = st.pid.borrow_mut().take() else {
        return;
    };
    // SAFETY: kill(2)/waitpid(2) on the child this server started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        // SAFETY: as above.
        if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// The child's pid, for `wockd status` and tests.
pub fn pid(server: &Server) -> Option<i32> {
    *server.ext::<State>().pid.borrow()
}

fn write_config(server: &Server, plan: &Plan) -> std::io::Result<PathBuf> {
    let mut child = plan.child.clone();
    let Some(address) = super::bound(server)
        .into_iter()
        .find(|a| a.ip().is_loopback())
    else {
        return Err(std::io::Error::other("no loopback component listener"));
    };
    child.component_link = plan
        .domains
        .iter()
        .map(|d| ComponentLink {
            domain: d.clone(),
            address: Some(address),
            secret: Some(plan.secret.clone()),
            secret_file: None,
        })
        .collect();
    let dir = child.data_dir();
    crate::store::tighten_dir(&dir)?;
    let path = dir.join("component.toml");
    let text = toml::to_string(&child).map_err(std::io::Error::other)?;
    // The secret is in it: 0600 (the umask of the server), replaced atomically.
    let tmp = dir.join("component.toml.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn spawn(server: &Rc<Server>) {
    let st = server.ext::<State>();
    let Some(plan) = st.plan.borrow().clone() else {
        return;
    };
    let config = match write_config(server, &plan) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("transport process not started: {e}");
            return;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("transport process not started: cannot find wockd's binary: {e}");
            return;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-c").arg(&config).arg("component");
    if *st.restarted.borrow() {
        cmd.env(crate::transport::RESTARTED_ENV, "1");
    }
    // SAFETY: prctl in the forked child before exec; async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("transport process not started: {e}");
            return schedule(server);
        }
    };
    let pid = child.id() as i32;
    // glib reaps it and tells us; the std handle is not needed (it does not kill on drop).
    drop(child);
    tracing::info!(pid, "transport process started");
    *st.pid.borrow_mut() = Some(pid);
    *st.started.borrow_mut() = Some(Instant::now());
    let weak = Rc::downgrade(server);
    glib::child_watch_add_local(glib::Pid(pid), move |_, status| {
        if let Some(server) = weak.upgrade() {
            exited(&server, pid, status);
        }
    });
}

fn exited(server: &Rc<Server>, pid: i32, status: i32) {
    let st = server.ext::<State>();
    if *st.pid.borrow() == Some(pid) {
        *st.pid.borrow_mut() = None;
    }
    if *st.stopping.borrow() {
        return;
    }
    tracing::error!(pid, status, "the transport process died; restarting it");
    let ran = st.started.borrow().map(|t| t.elapsed()).unwrap_or_default();
    if ran >= Duration::from_secs(60) {
        *st.backoff.borrow_mut() = Duration::from_secs(1);
    }
    *st.restarted.borrow_mut() = true;
    schedule(server);
}

fn schedule(server: &Rc<Server>) {
    let st = server.ext::<State>();
    let delay = {
        let mut b = st.backoff.borrow_mut();
        let d = *b;
        *b = (d * 2).min(Duration::from_secs(60));
        d
    };
    let weak = Rc::downgrade(server);
    server.after(delay, move || {
        if let Some(server) = weak.upgrade()
            && !*server.ext::<State>().stopping.borrow()
        {
            spawn(&server);
        }
    });
}
