//! `<data_dir>/online.txt`: who is online, for `wockd status`, which has no other way to ask the
//! running server.
//!
//! ```text
//! pid 12345
//! alice@localhost/laptop 5
//! alice@localhost/phone -
//! ```
//!
//! One line with the server's process id, then one line per bound resource with its presence
//! priority (`-`: bound but not available), sorted, then one line per federation link:
//! `s2s <in|out> <peer> <tls|plain> <auth> <stanzas in> <stanzas out>`, then one line per
//! configured component: `component <domain> <connected|down> <stanzas in> <stanzas out>`
//! (after `transport-process <pid>` when the transport runs in its own process).
//! The file has mode 0600 and is replaced
//! atomically (written to a temporary file, then renamed), at most once a second and only when
//! something changed. It is removed when the server shuts down cleanly; after a crash it stays,
//! and [`is_running`] tells that its pid is no running wockd.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glib::{ControlFlow, Source};

use crate::net::source;
use crate::server::Server;

/// The file name inside the data directory.
pub const FILE: &str = "online.txt";

/// How often the session table is looked at.
const INTERVAL: Duration = Duration::from_secs(1);

/// Per-server state (`Server::ext`). Dropped with the server, which removes the file.
#[derive(Default)]
struct Writer {
    path: RefCell<Option<PathBuf>>,
    /// What the file holds now.
    written: RefCell<String>,
    timer: RefCell<Option<Source>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(t) = self.timer.get_mut().take() {
            t.destroy();
        }
        if let Some(path) = self.path.get_mut().take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes the file now and keeps it current while the server runs.
pub fn start(server: &Rc<Server>) {
    let w = server.ext::<Writer>();
    if w.timer.borrow().is_some() {
        return;
    }
    *w.path.borrow_mut() = Some(server.config.data_dir().join(FILE));
    update(server);
    let weak = Rc::downgrade(server);
    let timer = source::every(INTERVAL, move || match weak.upgrade() {
        Some(server) => {
            update(&server);
            ControlFlow::Continue
        }
        None => ControlFlow::Break,
    });
    *w.timer.borrow_mut() = Some(timer);
}

/// Stops updating and removes the file (clean shutdown). Dropping the server does the same.
pub fn stop(server: &Server) {
    let w = server.ext::<Writer>();
    if let Some(t) = w.timer.borrow_mut().take() {
        t.destroy();
    }
    if let Some(path) = w.path.borrow_mut().take() {
        let _ = std::fs::remove_file(path);
    }
}

fn update(server: &Server) {
    let w = server.ext::<Writer>();
    let text = render(server);
    if *w.written.borrow() == text {
        return;
    }
    let Some(path) = w.path.borrow().clone() else {
        return;
    };
    match write_atomically(&path, &text) {
        Ok(()) => *w.written.borrow_mut() = text,
        Err(e) => tracing::warn!(path = %path.display(), "cannot write the status file: {e}"),
    }
}

fn render(server: &Server) -> String {
    let mut lines: Vec<String> = server
        .sessions
        .borrow()
        .all()
        .map(|s| match s.priority {
            Some(p) => format!("{} {p}\n", s.jid),
            None => format!("{} -\n", s.jid),
        })
        .collect();
    lines.sort();
    let mut text = format!("pid {}\n", std::process::id());
    text.extend(lines);
    for l in crate::s2s::links(server) {
        text.push_str(&format!(
            "s2s {} {} {} {} {} {}\n",
            match l.dir {
                crate::s2s::Dir::In => "in",
                crate::s2s::Dir::Out => "out",
            },
            l.peer,
            if l.secure { "tls" } else { "plain" },
            l.auth.as_str(),
            l.stanzas_in,
            l.stanzas_out
        ));
    }
    if let Some(pid) = crate::component::child::pid(server) {
        text.push_str(&format!("transport-process {pid}\n"));
    }
    for c in crate::component::components(server) {
        text.push_str(&format!(
            "component {} {} {} {}\n",
            c.domain,
            if c.connected { "connected" } else { "down" },
            c.stanzas_in,
            c.stanzas_out
        ));
    }
    text
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// What the file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub pid: u32,
    /// Full JID and priority (`None`: not available), sorted.
    pub sessions: Vec<(String, Option<i8>)>,
    /// Federation links, as written after `s2s `.
    pub links: Vec<String>,
    /// Configured components, as written after `component `.
    pub components: Vec<String>,
    /// The transport's own process, when it runs separately.
    pub transport_pid: Option<u32>,
}

/// Reads the file in `data_dir`; `None` if there is none.
pub fn read(data_dir: &Path) -> io::Result<Option<Snapshot>> {
    match std::fs::read_to_string(data_dir.join(FILE)) {
        Ok(text) => parse(&text).map(Some).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{FILE} is garbled"))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parse(text: &str) -> Option<Snapshot> {
    let mut lines = text.lines();
    let pid = lines.next()?.strip_prefix("pid ")?.parse().ok()?;
    let mut sessions = Vec::new();
    let mut links = Vec::new();
    let mut components = Vec::new();
    let mut transport_pid = None;
    for l in lines {
        if let Some(link) = l.strip_prefix("s2s ") {
            links.push(link.to_owned());
            continue;
        }
        if let Some(c) = l.strip_prefix("component ") {
            components.push(c.to_owned());
            continue;
        }
        if let Some(p) = l.strip_prefix("transport-process ") {
            transport_pid = p.trim().parse().ok();
            continue;
        }
        let (jid, prio) = l.rsplit_once(' ')?;
        sessions.push((jid.to_owned(), prio.parse().ok()));
    }
    Some(Snapshot {
        pid,
        sessions,
        links,
        components,
        transport_pid,
    })
}

/// Whether `pid` is a live process running the same program as this one (a pid left in a
/// stale file may have been reused by anything else).
pub fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state …"; comm may itself contain spaces or parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].trim_start().chars().next();
    if matches!(state, Some('Z' | 'X' | 'x') | None) {
        return false;
    }
    let ours = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    stat[open + 1..close] == *ours.trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes() {
        let s = parse(
            "pid 42\nalice@localhost/a b 5\nbob@localhost/x -\ns2s out example.net tls dialback 0 3\n\
             transport-process 77\ncomponent irc.localhost connected 4 5\n",
        )
        .unwrap();
        assert_eq!(s.links, ["out example.net tls dialback 0 3"]);
        assert_eq!(s.components, ["irc.localhost connected 4 5"]);
        assert_eq!(s.transport_pid, Some(77));
        assert_eq!(s.pid, 42);
        assert_eq!(
            s.sessions,
            [
                ("alice@localhost/a b".to_owned(), Some(5)),
                ("bob@localhost/x".to_owned(), None)
            ]
        );
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn this_process_runs_and_a_dead_one_does_not() {
        assert!(is_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!is_running(pid));
    }
}
