//! The torrent service against hostile input (issue 10): peers and trackers that point at this
//! host's own network reach nothing (point 7), a deleted account leaves no torrent behind
//! (point 6), and what `wockd run` creates is private to its user (point 11).
//!
//! Needs no outside program: the .torrent files are made here (a few bencoded bytes), the
//! "peers" and "trackers" are TCP listeners of the test on 127.0.0.1 that only count
//! connections. Every add that is refused or that leaves a tracker out is also made against a
//! server with `fetch_private_addresses = true`, where the same listener is reached: so a
//! listener seeing nothing means something.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Client, TestServer, is_result};
use wockd::config::Config;

const NS: &str = "http://wockd.org/ns/torrent";
const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

// ---- .torrent bytes ------------------------------------------------------------------------

fn bstr(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("{}:", b.len()).as_bytes());
    out.extend_from_slice(b);
}

/// A valid single-file .torrent (`len` bytes in 16 KiB pieces) announcing to `tracker`.
fn torrent(name: &str, len: u64, tracker: Option<&str>) -> Vec<u8> {
    let pieces = len.div_ceil(16384).max(1) as usize;
    let mut info = b"d".to_vec();
    bstr(&mut info, b"length");
    info.extend_from_slice(format!("i{len}e").as_bytes());
    bstr(&mut info, b"name");
    bstr(&mut info, name.as_bytes());
    bstr(&mut info, b"piece length");
    info.extend_from_slice(b"i16384e");
    bstr(&mut info, b"pieces");
    bstr(&mut info, &vec![7u8; 20 * pieces]);
    info.push(b'e');
    let mut t = b"d".to_vec();
    if let Some(tr) = tracker {
        bstr(&mut t, b"announce");
        bstr(&mut t, tr.as_bytes());
    }
    bstr(&mut t, b"info");
    t.extend_from_slice(&info);
    t.push(b'e');
    t
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---- listeners that count connections --------------------------------------------------------

struct Listener {
    l: TcpListener,
    port: u16,
}

impl Listener {
    fn new() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        Listener { l, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// Whether a connection arrives within `within` (a bounded wait, used for "none came"
    /// only once the torrent that would connect is known to run).
    fn connected_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.l.accept().is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a connection came already.
    fn connected(&self) -> bool {
        self.l.accept().is_ok()
    }
}

// ---- a client that sorts stanzas --------------------------------------------------------------

impl Client {
    /// Logs in (resource `test`) and becomes available; IQ answers may take up to 60 s.
    fn online(addr: SocketAddr, user: &str) -> Client {
        let mut c = Client::login_at(addr, user, "pw", "test");
        c.timeout = Duration::from_secs(60);
        c.send("<presence/>");
        c
    }

    fn notice(&mut self, text: &str, secs: u64) -> String {
        self.wait_for(&format!("a message with {text:?}"), secs, |s| {
            s.starts_with("<message") && s.contains(text)
        })
    }
}

fn is_error(s: &str, cond: &str) -> bool {
    s.contains("type=\"error\"") && s.contains(&format!("<{cond} "))
}

fn server(allow_private: bool) -> TestServer {
    let srv = TestServer::start_with(
        move |c: &mut Config| {
            c.torrent.fetch_private_addresses = allow_private;
            c.torrent.metadata_timeout_secs = 3;
            assert!(!c.torrent.dht && !c.torrent.lsd && !c.torrent.upnp);
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    srv
}

// ---- point 7: outbound connections --------------------------------------------------------------

/// A magnet's `x.pe` and an add's `peers=` on this host are refused with `policy-violation`
/// naming the peer, and nothing connects to it; with private addresses allowed, the same
/// adds reach the listener.
#[test]
fn peers_on_private_addresses_are_refused() {
    let srv = server(false);
    let mut alice = Client::online(srv.trusted, "alice");
    let peer = Listener::new();
    let r = alice.iq(
        "set",
        None,
        &format!(
            "<add xmlns='{NS}'>magnet:?xt=urn:btih:{HASH}&amp;x.pe={}</add>",
            peer.addr()
        ),
    );
    assert!(
        is_error(&r, "policy-violation") && r.contains(&peer.addr()),
        "{r}"
    );
    let t = torrent("p.bin", 50_000, None);
    for peers in [peer.addr(), format!("[::ffff:127.0.0.1]:{}", peer.port)] {
        let r = alice.iq(
            "set",
            None,
            &format!("<add xmlns='{NS}' peers='{peers}'>{}</add>", b64(&t)),
        );
        assert!(
            is_error(&r, "policy-violation") && r.contains("not a public address"),
            "{r}"
        );
    }
    let r = alice.iq("get", None, &format!("<list xmlns='{NS}'/>"));
    assert!(
        is_result(&r) && !r.contains("<job"),
        "refused adds leave no job: {r}"
    );
    // Refused before anything ran: no connection can be on its way.
    assert!(!peer.connected(), "a refused peer was contacted");
    drop(alice);
    srv.stop();

    // The same adds with private addresses allowed: the listener is contacted.
    let srv = server(true);
    let mut alice = Client::online(srv.trusted, "alice");
    alice.send_iq(
        "type='set'",
        &format!(
            "<add xmlns='{NS}'>magnet:?xt=urn:btih:{HASH}&amp;x.pe={}</add>",
            peer.addr()
        ),
    );
    assert!(
        peer.connected_within(Duration::from_secs(20)),
        "with fetch_private_addresses the magnet's peer is contacted"
    );
    let r = alice.iq(
        "set",
        None,
        &format!(
            "<add xmlns='{NS}' peers='{}'>{}</add>",
            peer.addr(),
            b64(&t)
        ),
    );
    assert!(is_result(&r), "{r}");
    assert!(
        peer.connected_within(Duration::from_secs(20)),
        "with fetch_private_addresses the add's peer is contacted"
    );
}

/// Trackers on this host are left out: a magnet whose only tracker is on 127.0.0.1 fails with
/// an error naming it (there is nobody else to ask), a .torrent announcing to 127.0.0.1 runs
/// without it and its owner is told; the tracker sees no connection. With private addresses
/// allowed, both announce to it.
#[test]
fn trackers_on_private_addresses_are_dropped() {
    let srv = server(false);
    let mut alice = Client::online(srv.trusted, "alice");
    let tracker = Listener::new();
    let enc: String = url_encode(&tracker.url());
    let magnet = format!("magnet:?xt=urn:btih:{HASH}&amp;dn=m.bin&amp;tr={enc}");
    let r = alice.iq("set", None, &format!("<add xmlns='{NS}'>{magnet}</add>"));
    assert!(
        is_error(&r, "remote-server-not-found")
            && r.contains(&format!(
                "ignored tracker {} (not a public address)",
                tracker.url()
            )),
        "{r}"
    );
    assert!(
        !tracker.connected(),
        "the magnet's tracker was contacted before the add failed"
    );

    // The .torrent: accepted and running, without its tracker.
    let t = torrent("t.bin", 50_000, Some(&tracker.url()));
    let r = alice.iq("set", None, &format!("<add xmlns='{NS}'>{}</add>", b64(&t)));
    assert!(is_result(&r) && r.contains("state=\"downloading\""), "{r}");
    let m = alice.notice("ignored tracker", 30);
    assert!(
        m.contains(&format!(
            "Job 1: ignored tracker {} (not a public address)",
            tracker.url()
        )),
        "{m}"
    );
    let r = alice.iq("get", None, &format!("<status xmlns='{NS}' id='1'/>"));
    assert!(
        r.contains("state=\"downloading\"") && r.contains("peers=\"0\""),
        "the job runs (the engine reports on it): {r}"
    );
    // librqbit announces as soon as a torrent starts; the allowed run below shows it does.
    assert!(
        !tracker.connected_within(Duration::from_secs(3)),
        "the .torrent's tracker on 127.0.0.1 was contacted"
    );
    drop(alice);
    srv.stop();

    let srv = server(true);
    let mut alice = Client::online(srv.trusted, "alice");
    let r = alice.iq("set", None, &format!("<add xmlns='{NS}'>{}</add>", b64(&t)));
    assert!(is_result(&r), "{r}");
    assert!(
        tracker.connected_within(Duration::from_secs(20)),
        "with fetch_private_addresses the .torrent's tracker is contacted"
    );
    alice.send_iq("type='set'", &format!("<add xmlns='{NS}'>{magnet}</add>"));
    assert!(
        tracker.connected_within(Duration::from_secs(20)),
        "with fetch_private_addresses the magnet's tracker is contacted"
    );
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---- point 6: account deletion --------------------------------------------------------------------

/// An account removed in-band takes its torrents along: the engine lets go of them (another
/// user can add the same torrent at once, which the engine refuses for a torrent it still
/// has), their files and folder are deleted, and a new account of the same name starts empty.
#[test]
fn a_deleted_account_leaves_no_torrents() {
    let srv = server(false);
    let mut alice = Client::online(srv.trusted, "alice");
    let t = torrent("mine.bin", 50_000, None);
    let r = alice.iq("set", None, &format!("<add xmlns='{NS}'>{}</add>", b64(&t)));
    assert!(is_result(&r) && r.contains("state=\"downloading\""), "{r}");
    let paused = torrent("paused.bin", 20_000, None);
    let r = alice.iq(
        "set",
        None,
        &format!("<add xmlns='{NS}' paused='true'>{}</add>", b64(&paused)),
    );
    assert!(is_result(&r), "{r}");
    let folder = srv.dir.join("downloads").join("alice@localhost");
    assert!(folder.exists());

    // Before: the torrent is taken.
    let mut bob = Client::online(srv.trusted, "bob");
    let r = bob.iq("set", None, &format!("<add xmlns='{NS}'>{}</add>", b64(&t)));
    assert!(is_error(&r, "conflict"), "{r}");

    let r = alice.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><remove/></query>",
    );
    assert!(is_result(&r), "{r}");
    drop(alice);
    // The folder goes once the engine has removed the torrents.
    let deadline = Instant::now() + Duration::from_secs(20);
    while folder.exists() {
        assert!(
            Instant::now() < deadline,
            "{} is still there",
            folder.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = bob.iq("set", None, &format!("<add xmlns='{NS}'>{}</add>", b64(&t)));
    assert!(is_result(&r), "the engine still had alice's torrent: {r}");

    srv.add_user("alice", "pw");
    let mut alice = Client::online(srv.trusted, "alice");
    let r = alice.iq("get", None, &format!("<list xmlns='{NS}'/>"));
    assert!(is_result(&r) && !r.contains("<job"), "{r}");
    let r = alice.iq("get", None, &format!("<status xmlns='{NS}' id='2'/>"));
    assert!(is_error(&r, "item-not-found"), "{r}");
    let r = alice.iq(
        "set",
        None,
        &format!("<add xmlns='{NS}' paused='true'>{}</add>", b64(&paused)),
    );
    assert!(
        is_result(&r) && r.contains("<job xmlns=\"http://wockd.org/ns/torrent\" id=\"1\""),
        "a new account starts at job 1: {r}"
    );
}

// ---- point 11: private files -----------------------------------------------------------------------

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wockd(config: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wockd"))
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Every directory under `root` and the files in them, with their modes.
fn walk(root: &Path, out: &mut Vec<(std::path::PathBuf, bool, u32)>) {
    let meta = std::fs::symlink_metadata(root).unwrap();
    let mode = meta.permissions().mode() & 0o7777;
    out.push((root.to_owned(), meta.is_dir(), mode));
    if meta.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

/// `wockd run` on a fresh data directory, with the IM transport and a torrent running: every
/// directory it made is 0700 and every file 0600 — the database, the TLS key and
/// certificate, libpurple's files, the engine's state and the downloaded data. An existing
/// data directory open to others is tightened.
#[test]
fn what_wockd_run_creates_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = tmp.path().join("wockd.toml");
    std::fs::write(
        &config,
        format!(
            "domains = ['localhost']\ndata_dir = '{}'\n\n[[listen]]\naddress = '127.0.0.1:{port}'\ntrusted_loopback = true\n\n\
             [log]\nlevel = 'warn'\n\n[transport]\nenabled = true\n\n[torrent]\ndht = false\n",
            data.display()
        ),
    )
    .unwrap();
    let out = wockd(
        &config,
        &["adduser", "alice@localhost", "--password-stdin"],
        "pw\n",
    );
    assert!(out.status.success(), "{out:?}");

    let child = Command::new(env!("CARGO_BIN_EXE_wockd"))
        .arg("-c")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "wockd run does not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alice = Client::online(addr, "alice");
    let t = torrent("private.bin", 50_000, None);
    let r = alice.iq("set", None, &format!("<add xmlns='{NS}'>{}</add>", b64(&t)));
    assert!(is_result(&r), "{r}");
    let r = alice.iq("get", None, &format!("<status xmlns='{NS}' id='1'/>"));
    assert!(r.contains("state=\"downloading\""), "{r}");
    drop(alice);
    // A clean stop, so the engine and libpurple write their state.
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(proc.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "wockd did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut all = Vec::new();
    walk(&data, &mut all);
    let names: Vec<String> = all
        .iter()
        .map(|(p, _, _)| p.strip_prefix(&data).unwrap().display().to_string())
        .collect();
    for want in [
        "wockd.sqlite",
        "tls/key.pem",
        "tls/cert.pem",
        "purple",
        "torrent-session",
        "downloads/alice@localhost/private.bin",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:#?}");
    }
    let loose: Vec<String> = all
        .iter()
        .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
        .map(|(p, dir, mode)| {
            format!(
                "{} {} {mode:o}",
                if *dir { "dir" } else { "file" },
                p.display()
            )
        })
        .collect();
    assert!(loose.is_empty(), "not private: {loose:#?}");
}
