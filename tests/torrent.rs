//! The torrent service end to end, fully offline on loopback: torrents made with mktorrent,
//! real aria2c seeders on 127.0.0.1, a tiny HTTP server in the test (serves the .torrent URLs
//! and acts as the torrents' tracker), and XMPP clients on raw sockets. wockd runs with DHT,
//! LSD and UPnP off and no listening port (the embedded default), so it only makes outgoing
//! connections to 127.0.0.1.
//!
//! Needs `aria2c` and `mktorrent` (Debian: aria2, mktorrent): without them the tests skip
//! loudly, except under CI=true, where they fail.
//!
//! `cargo test --test torrent -- --ignored --nocapture measure` times 64 MiB through wockd
//! against aria2c alone and prints the memory the engine adds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Client, TestServer, is_result};
use rand::RngCore;
use wockd::config::Config;

const NS: &str = "http://wockd.org/ns/torrent";
const SERVICE: &str = "torrent.localhost";

// ---- tools and processes ------------------------------------------------------------------

/// Whether aria2c and mktorrent are installed; a CI run must have them.
fn tools_present() -> bool {
    let ok = ["aria2c", "mktorrent"].iter().all(|t| {
        Command::new(t)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "aria2c and mktorrent are required for the torrent tests (apt-get install aria2 mktorrent)"
            );
        }
        eprintln!(
            "\n**********************************************************************\n\
             *** SKIPPING torrent test: aria2c and/or mktorrent are not installed ***\n\
             *** (apt-get install aria2 mktorrent)                                ***\n\
             **********************************************************************\n"
        );
    }
    ok
}

/// Every process a test starts; killed and reaped when dropped, whatever the test did.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Random content under `<root>/data/<name>`: one file when `files` has a single entry named
/// "", else a folder; and its .torrent (256 KiB pieces, announcing to `tracker`).
fn make_torrent(root: &Path, name: &str, files: &[(&str, usize)], tracker: &str) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let target = data.join(name);
    for (f, size) in files {
        let path = if f.is_empty() {
            target.clone()
        } else {
            target.join(f)
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut buf = vec![0u8; *size];
        rand::thread_rng().fill_bytes(&mut buf);
        std::fs::write(&path, buf).unwrap();
    }
    let torrent = root.join(format!("{name}.torrent"));
    let st = Command::new("mktorrent")
        .args(["-l", "18", "-a", tracker, "-o"])
        .arg(&torrent)
        .arg(&target)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mktorrent failed");
    torrent
}

fn info_hash(torrent: &Path) -> String {
    let bytes = std::fs::read(torrent).unwrap();
    librqbit::torrent_from_bytes(&bytes)
        .unwrap()
        .info_hash
        .as_string()
}

/// An aria2c seeding `torrent` from `<root>/data` on 127.0.0.1 (optionally throttled, e.g.
/// "256K"); returns its port once it listens.
fn seed(
    procs: &mut Procs,
    tracker: &Tracker,
    root: &Path,
    torrent: &Path,
    limit: Option<&str>,
) -> u16 {
    let port = free_port();
    let mut cmd = Command::new("aria2c");
    cmd.args([
        "--no-conf",
        "--interface=127.0.0.1",
        "--disable-ipv6",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--seed-ratio=0.0",
        "--check-integrity",
        "--summary-interval=0",
        "--console-log-level=error",
    ])
    .arg(format!("--listen-port={port}"))
    .arg(format!("--dir={}", root.join("data").display()))
    .arg(torrent)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(l) = limit {
        cmd.arg(format!("--max-overall-upload-limit={l}"));
    }
    procs.0.push(cmd.spawn().expect("aria2c"));
    wait_port(port);
    // aria2c hashes its copy before it serves; the files here are small.
    std::thread::sleep(Duration::from_millis(700));
    tracker.seeders.lock().unwrap().push(port);
    port
}

// ---- HTTP: .torrent files and a tracker ---------------------------------------------------

/// What the HTTP server answers at a path: (path, body, content type).
type Route = (String, Vec<u8>, &'static str);

/// A tiny HTTP/1.0 server thread: `routes` by path, `/announce` answers as a BitTorrent
/// tracker listing the seeders, anything else is 404. Stops when dropped.
struct Tracker {
    port: u16,
    routes: Arc<Mutex<Vec<Route>>>,
    seeders: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
}

impl Tracker {
    fn start() -> Tracker {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Tracker {
            port,
            routes: Arc::default(),
            seeders: Arc::default(),
            stop: Arc::default(),
        };
        let (routes, seeders, stop) = (t.routes.clone(), t.seeders.clone(), t.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => serve(s, &routes, &seeders),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        t
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn route(&self, path: &str, body: Vec<u8>, content_type: &'static str) {
        self.routes
            .lock()
            .unwrap()
            .push((path.to_owned(), body, content_type));
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut s: TcpStream,
    routes: &Mutex<Vec<(String, Vec<u8>, &'static str)>>,
    seeders: &Mutex<Vec<u16>>,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut chunk = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&chunk[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req);
    let path = req.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body, ctype) = if path.starts_with("/announce") {
        let mut peers = Vec::new();
        for p in seeders.lock().unwrap().iter() {
            peers.extend_from_slice(&[127, 0, 0, 1]);
            peers.extend_from_slice(&p.to_be_bytes());
        }
        let mut body = format!("d8:intervali1800e5:peers{}:", peers.len()).into_bytes();
        body.extend_from_slice(&peers);
        body.push(b'e');
        ("200 OK", body, "text/plain")
    } else {
        match routes.lock().unwrap().iter().find(|(p, _, _)| *p == path) {
            Some((_, b, t)) => ("200 OK", b.clone(), *t),
            None => ("404 Not Found", b"not here".to_vec(), "text/plain"),
        }
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body);
}

// ---- an XMPP client that sorts stanzas ----------------------------------------------------

impl Client {
    /// Logs in (resource `test`) and becomes available (so messages are delivered to it).
    fn online(addr: SocketAddr, user: &str) -> Client {
        let mut c = Client::login_at(addr, user, "pw", "test");
        c.send("<presence/>");
        c
    }

    /// Sends an IQ (`attrs` such as `type='get' to='…'`) and returns its answer (within 60 s).
    fn request(&mut self, attrs: &str, payload: &str) -> String {
        let id = self.send_iq(attrs, payload);
        self.answer(&id, 60)
    }

    fn set(&mut self, payload: &str) -> String {
        self.request("type='set'", payload)
    }

    fn get(&mut self, payload: &str) -> String {
        self.request("type='get'", payload)
    }

    /// A message from the service whose body contains `text`.
    fn notice(&mut self, text: &str, secs: u64) -> String {
        self.wait_for(&format!("a message with {text:?}"), secs, |s| {
            s.starts_with("<message")
                && s.contains(&format!("from=\"{SERVICE}\""))
                && s.contains(text)
        })
    }

    fn say(&mut self, body: &str) {
        self.send(&format!(
            "<message to='{SERVICE}' type='chat'><body>{body}</body></message>"
        ));
    }

    /// Everything that arrives within `secs` (the worker's notices come on their own time).
    fn drain(&mut self, secs: u64) -> Vec<String> {
        let mut all = std::mem::take(&mut self.queue);
        all.extend(self.collect_for(Duration::from_secs(secs), |_| true));
        all
    }
}

/// The value of attribute `name` of the first `<el` in `s`.
fn attr(s: &str, el: &str, name: &str) -> String {
    let from = s
        .find(&format!("<{el}"))
        .unwrap_or_else(|| panic!("no <{el} in {s}"));
    let rest = &s[from..];
    let end = rest.find('>').unwrap();
    let tag = &rest[..end];
    let key = format!(" {name}=\"");
    let a = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    tag[a..].split('"').next().unwrap().to_owned()
}

fn is_error(s: &str, cond: &str) -> bool {
    s.contains("type=\"error\"") && s.contains(&format!("<{cond} "))
}

fn tweak(c: &mut Config) {
    c.torrent.fetch_private_addresses = true; // the .torrent URLs are on 127.0.0.1
    c.torrent.metadata_timeout_secs = 3;
    // The embedded default: nothing that reaches beyond loopback, no listening port.
    assert!(
        !c.torrent.dht && !c.torrent.lsd && !c.torrent.upnp && c.torrent.listen_address.is_none()
    );
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn wait_for_file(got: &Path, want: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !same_file(got, want) {
        assert!(
            Instant::now() < deadline,
            "{} never became {}",
            got.display(),
            want.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the tests -----------------------------------------------------------------------------

#[test]
fn add_by_url_magnet_and_base64_control_and_isolation() {
    if !tools_present() {
        return;
    }
    let mut procs = Procs::default();
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    let tracker = Tracker::start();
    let announce = tracker.url("/announce");
    let a = make_torrent(root, "blob_a.bin", &[("", 3 << 20)], &announce);
    let b = make_torrent(root, "blob_b.bin", &[("", 2 << 20)], &announce);
    let c = make_torrent(
        root,
        "album",
        &[("one.bin", 1 << 20), ("sub/two.bin", 700_000)],
        &announce,
    );
    tracker.route(
        "/a.torrent",
        std::fs::read(&a).unwrap(),
        "application/x-bittorrent",
    );
    tracker.route(
        "/page.html",
        b"<html><body>not a torrent</body></html>".to_vec(),
        "text/html",
    );
    seed(&mut procs, &tracker, root, &a, None);
    let port_b = seed(&mut procs, &tracker, root, &b, None);
    seed(&mut procs, &tracker, root, &c, None);

    let data = tempfile::tempdir().unwrap();
    let srv = TestServer::start_in(data.path(), tweak, |_| {});
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut alice = Client::online(srv.trusted, "alice");
    let mut bob = Client::online(srv.trusted, "bob");
    let downloads = srv.dir.join("downloads");
    let alice_dir = downloads.join("alice@localhost");

    // (a) The seed's protocol example, byte for byte: no `to`, answered on the stream.
    alice.raw.send(&format!(
        "<iq id=\"3\" type=\"set\"><add xmlns=\"http://wockd.org/ns/torrent\">\n    {}\n  </add></iq>",
        tracker.url("/a.torrent")
    ));
    let r = alice.wait_for("the seed's add answer", 60, |s| {
        s.starts_with("<iq") && s.contains("id=\"3\"")
    });
    assert!(r.starts_with("<iq type=\"result\" id=\"3\""), "{r}");
    assert_eq!(attr(&r, "job", "id"), "1");
    assert_eq!(attr(&r, "job", "name"), "blob_a.bin");

    // (b) A magnet with the seeder as its explicit peer (no tracker, no DHT).
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>magnet:?xt=urn:btih:{}&amp;dn=blob_b.bin&amp;x.pe=127.0.0.1:{port_b}</add>",
        info_hash(&b)
    ));
    assert!(is_result(&r), "{r}");
    assert_eq!(attr(&r, "job", "id"), "2");
    assert_eq!(attr(&r, "job", "size"), (2u64 << 20).to_string());

    // (c) A base64 .torrent (multi-file), at the service's own address this time.
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&c).unwrap());
    let r = alice.request(
        &format!("type='set' to='{SERVICE}'"),
        &format!("<add xmlns='{NS}'>{b64}</add>"),
    );
    assert!(
        is_result(&r) && r.contains(&format!("from=\"{SERVICE}\"")),
        "{r}"
    );
    assert_eq!(attr(&r, "job", "id"), "3");

    // All three finish; the notifications arrive and the bytes are the source's.
    for n in 1..=3 {
        alice.notice(&format!("Job {n} finished"), 60);
    }
    assert!(same_file(
        &alice_dir.join("blob_a.bin"),
        &root.join("data/blob_a.bin")
    ));
    assert!(same_file(
        &alice_dir.join("blob_b.bin"),
        &root.join("data/blob_b.bin")
    ));
    assert!(same_file(
        &alice_dir.join("album/one.bin"),
        &root.join("data/album/one.bin")
    ));
    assert!(same_file(
        &alice_dir.join("album/sub/two.bin"),
        &root.join("data/album/sub/two.bin")
    ));
    // "added" went out once per job, as messages from the service.
    for n in 1..=3 {
        alice.notice(&format!("Added job {n}:"), 5);
    }

    let r = alice.get(&format!("<list xmlns='{NS}'/>"));
    assert_eq!(r.matches("state=\"finished\"").count(), 3, "{r}");
    let r = alice.get(&format!("<status xmlns='{NS}' id='2'/>"));
    assert!(
        r.contains("progress=\"100.0\"") && r.contains("state=\"finished\""),
        "{r}"
    );

    // Bob sees and touches none of it.
    let r = bob.get(&format!("<list xmlns='{NS}'/>"));
    assert!(is_result(&r) && !r.contains("<job"), "{r}");
    for (kind, op) in [
        ("get", "status"),
        ("set", "pause"),
        ("set", "resume"),
        ("set", "remove"),
    ] {
        let r = bob.request(
            &format!("type='{kind}'"),
            &format!("<{op} xmlns='{NS}' id='1'/>"),
        );
        assert!(is_error(&r, "item-not-found"), "bob {op}: {r}");
    }
    let r = bob.set(&format!(
        "<add xmlns='{NS}'>{}</add>",
        tracker.url("/a.torrent")
    ));
    assert!(is_error(&r, "conflict"), "{r}");
    assert!(
        !r.contains("job 1"),
        "another user's job number must not leak: {r}"
    );
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>{}</add>",
        tracker.url("/a.torrent")
    ));
    assert!(is_error(&r, "conflict") && r.contains("job 1"), "{r}");

    // Remove: job 1 keeps its file, job 3 takes its folder along.
    let r = alice.set(&format!("<remove xmlns='{NS}' id='1'/>"));
    assert!(is_result(&r), "{r}");
    assert!(alice_dir.join("blob_a.bin").exists());
    let r = alice.set(&format!("<remove xmlns='{NS}' id='3' files='true'/>"));
    assert!(is_result(&r), "{r}");
    assert!(
        !alice_dir.join("album").exists(),
        "files of job 3 should be gone"
    );
    let r = alice.get(&format!("<status xmlns='{NS}' id='3'/>"));
    assert!(is_error(&r, "item-not-found"), "{r}");

    // Pause and resume: bob adds the torrent alice removed, paused, with an explicit peer.
    let port_a = tracker.seeders.lock().unwrap()[0];
    let r = bob.set(&format!(
        "<add xmlns='{NS}' paused='true' peers='127.0.0.1:{port_a}'>{}</add>",
        tracker.url("/a.torrent")
    ));
    assert!(is_result(&r) && attr(&r, "job", "state") == "paused", "{r}");
    assert_eq!(attr(&r, "job", "id"), "1", "job numbers are per user");
    std::thread::sleep(Duration::from_secs(2));
    let r = bob.get(&format!("<status xmlns='{NS}' id='1'/>"));
    assert!(
        r.contains("state=\"paused\"") && r.contains("have=\"0\""),
        "paused means no download: {r}"
    );
    let r = bob.set(&format!("<resume xmlns='{NS}' id='1'/>"));
    assert!(
        is_result(&r) && attr(&r, "job", "state") == "downloading",
        "{r}"
    );
    bob.notice("Job 1 finished", 60);
    assert!(same_file(
        &downloads.join("bob@localhost/blob_a.bin"),
        &root.join("data/blob_a.bin")
    ));
    let r = bob.set(&format!("<pause xmlns='{NS}' id='1'/>"));
    assert!(
        is_result(&r) && r.contains("seeding=\"false\""),
        "pausing a finished torrent stops seeding: {r}"
    );
    let r = bob.set(&format!("<resume xmlns='{NS}' id='1'/>"));
    assert!(is_result(&r), "{r}");

    // Clear errors.
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>{}</add>",
        tracker.url("/missing.torrent")
    ));
    assert!(is_error(&r, "item-not-found") && r.contains("404"), "{r}");
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>{}</add>",
        tracker.url("/page.html")
    ));
    assert!(
        is_error(&r, "not-acceptable") && r.contains("not a .torrent"),
        "{r}"
    );
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>http://127.0.0.1:{}/x.torrent</add>",
        free_port()
    ));
    assert!(is_error(&r, "remote-server-not-found"), "{r}");
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>ftp://127.0.0.1/x.torrent</add>"
    ));
    assert!(is_error(&r, "bad-request") && r.contains("scheme"), "{r}");
    let r = alice.set(&format!("<add xmlns='{NS}'>aGVsbG8gd29ybGQ=</add>"));
    assert!(is_error(&r, "not-acceptable"), "{r}");
    let dead = format!("{:040x}", rand::random::<u128>());
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>magnet:?xt=urn:btih:{dead}&amp;x.pe=127.0.0.1:{}</add>",
        free_port()
    ));
    assert!(
        is_error(&r, "remote-server-not-found") && r.contains("no peer could send"),
        "{r}"
    );
    // A peer that accepts and then says nothing: the metadata wait times out (3 s here).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let t0 = Instant::now();
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>magnet:?xt=urn:btih:{dead}&amp;x.pe=127.0.0.1:{silent_port}</add>"
    ));
    assert!(
        is_error(&r, "remote-server-timeout") && r.contains("metadata within 3 s"),
        "{r}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the metadata timeout is 3 s"
    );
    // While it waits, a magnet is listed as resolving, and removing it cancels the add.
    alice.raw.send(&format!(
        "<iq id='pending' type='set'><add xmlns='{NS}'>magnet:?xt=urn:btih:{dead}&amp;x.pe=127.0.0.1:{silent_port}</add></iq>"
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = alice.get(&format!("<list xmlns='{NS}'/>"));
        if r.contains("state=\"resolving\"") {
            break r;
        }
        assert!(Instant::now() < deadline, "never listed as resolving: {r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let pending = r.split("<job ").find(|j| j.contains("resolving")).unwrap();
    let n = attr(&format!("<job {pending}"), "job", "id");
    let r = alice.set(&format!("<remove xmlns='{NS}' id='{n}'/>"));
    assert!(is_result(&r), "{r}");
    let r = alice.wait_for("the cancelled add", 10, |s| s.contains("id=\"pending\""));
    assert!(
        is_error(&r, "item-not-found") && r.contains("removed"),
        "{r}"
    );
    drop(silent);
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>magnet:?xt=urn:btih:{dead}</add>"
    ));
    assert!(
        is_error(&r, "remote-server-not-found") && r.contains("DHT is off"),
        "{r}"
    );
    let r = alice.get(&format!("<list xmlns='{NS}'/>"));
    assert_eq!(
        r.matches("<job").count(),
        1,
        "failed adds leave no job: {r}"
    );

    // Chat: words and links.
    alice.say("help");
    alice.notice("magnet link", 10);
    alice.say("list");
    let m = alice.notice("blob_b.bin", 10);
    assert!(
        m.contains("type=\"chat\"") && m.contains("2. blob_b.bin"),
        "{m}"
    );
    alice.say("pause 99");
    alice.notice("you have no job 99", 10);

    // Ad-hoc commands at the service.
    let r = alice.request(
        &format!("type='get' to='{SERVICE}'"),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        r.contains("http://jabber.org/protocol/commands") && r.contains(NS),
        "{r}"
    );
    let r = alice.request(
        &format!("type='get' to='{SERVICE}'"),
        "<query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/>",
    );
    assert!(
        r.contains("node=\"add\"") && r.contains("node=\"settings\""),
        "{r}"
    );
    let cmd = |node: &str, rest: &str| {
        format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'{rest}"
        )
    };
    let r = alice.request(&format!("type='set' to='{SERVICE}'"), &cmd("list", "/>"));
    assert!(
        r.contains("status=\"completed\"") && r.contains("blob_b.bin"),
        "{r}"
    );
    let r = alice.request(&format!("type='set' to='{SERVICE}'"), &cmd("add", "/>"));
    assert!(
        r.contains("status=\"executing\"") && r.contains("var=\"url\""),
        "{r}"
    );
    let session = attr(&r, "command", "sessionid");
    let r = alice.request(
        &format!("type='set' to='{SERVICE}'"),
        &cmd(
            "add",
            &format!(
                " sessionid='{session}'><x xmlns='jabber:x:data' type='submit'><field var='url'><value>{}</value></field></x></command>",
                tracker.url("/missing.torrent")
            ),
        ),
    );
    assert!(
        r.contains("status=\"completed\"") && r.contains("type=\"error\"") && r.contains("404"),
        "{r}"
    );
    let r = alice.request(
        &format!("type='set' to='{SERVICE}'"),
        &cmd("settings", "><x xmlns='jabber:x:data' type='submit'><field var='notify'><value>done</value></field></x></command>"),
    );
    assert!(r.contains("Settings saved"), "{r}");
    let r = alice.get(&format!("<settings xmlns='{NS}'/>"));
    assert!(r.contains("notify=\"done\""), "{r}");

    // Restart: the finished torrent comes back from librqbit's state, nobody hears of it again.
    drop(alice);
    drop(bob);
    srv.stop(); // joins the server thread and with it the engine's
    let srv = TestServer::start_in(data.path(), tweak, |_| {});
    let mut alice = Client::online(srv.trusted, "alice");
    let r = alice.get(&format!("<status xmlns='{NS}' id='2'/>"));
    assert!(r.contains("state=\"finished\""), "{r}");
    // Within a few seconds the engine has it back, complete (fast resume, no network needed).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = alice.get(&format!("<status xmlns='{NS}' id='2'/>"));
        if r.contains(&format!("have=\"{}\"", 2u64 << 20)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job 2 did not come back complete: {r}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let late = alice.drain(3);
    assert!(
        !late
            .iter()
            .any(|s| s.starts_with("<message") && s.contains(SERVICE)),
        "no notification may repeat after a restart: {late:#?}"
    );
    drop(procs);
}

#[test]
fn finished_notice_waits_for_an_offline_owner_across_a_restart() {
    if !tools_present() {
        return;
    }
    let mut procs = Procs::default();
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    let tracker = Tracker::start();
    // Throttled seeder: about 10 s for 3 MiB, so the owner is gone and the server restarts
    // in the middle of the download.
    let slow = make_torrent(
        root,
        "slow.bin",
        &[("", 3 << 20)],
        &tracker.url("/announce"),
    );
    tracker.route(
        "/slow.torrent",
        std::fs::read(&slow).unwrap(),
        "application/x-bittorrent",
    );
    seed(&mut procs, &tracker, root, &slow, Some("300K"));

    let data = tempfile::tempdir().unwrap();
    let tweak = |c: &mut Config| {
        tweak(c);
        c.torrent.progress_interval_secs = 2;
    };
    let srv = TestServer::start_in(data.path(), tweak, |_| {});
    srv.add_user("carol", "pw");
    let mut carol = Client::online(srv.trusted, "carol");
    carol.say("progress on");
    carol.notice("Progress messages on", 10);
    let r = carol.set(&format!(
        "<add xmlns='{NS}'>{}</add>",
        tracker.url("/slow.torrent")
    ));
    assert!(
        is_result(&r) && attr(&r, "job", "state") == "downloading",
        "{r}"
    );
    carol.notice("Added job 1", 10);
    // Progress while downloading: a headline (shown, not stored), every 2 s in this test.
    let h = carol.notice("1. slow.bin — downloading", 10);
    assert!(
        h.contains("type=\"headline\"") && h.contains("of 3.0 MiB"),
        "{h}"
    );
    carol.raw.send("</stream:stream>");
    drop(carol);

    std::thread::sleep(Duration::from_secs(2));
    srv.stop();
    let got = data.path().join("downloads/carol@localhost/slow.bin");
    let want = root.join("data/slow.bin");
    assert!(
        !same_file(&got, &want),
        "the download should not be complete yet"
    );
    // Back up: librqbit resumes from its own state (trackers persisted, fast resume).
    let srv = TestServer::start_in(data.path(), tweak, |_| {});
    wait_for_file(&got, &want, 120);
    // The finished notice is stored while carol is away.
    srv.wait_mailbox("carol", 1, 30);

    // Carol comes back: the notice waited in her mailbox, once.
    let mut carol = Client::online(srv.trusted, "carol");
    let m = carol.notice("Job 1 finished", 15);
    assert!(
        m.contains("type=\"chat\"") && m.contains("to=\"carol@localhost\""),
        "{m}"
    );
    let more = carol.drain(2);
    assert!(
        !more
            .iter()
            .any(|s| s.contains("Job 1 finished") || s.contains("Added job 1")),
        "notifications are sent once: {more:#?}"
    );
    let r = carol.get(&format!("<status xmlns='{NS}' id='1'/>"));
    assert!(r.contains("state=\"finished\""), "{r}");
    drop(procs);
}

/// The answer `s` (a stanza as the server writes it, in the stream's default namespace) parsed.
fn parsed(s: &str) -> minidom::Element {
    let s = s.replacen("<iq ", "<iq xmlns='jabber:client' ", 1);
    s.parse().unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The defined condition of an error answer, if `iq` is one.
fn error_condition(iq: &minidom::Element) -> Option<String> {
    const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    if iq.attr("type") != Some("error") {
        return None;
    }
    let error = iq.get_child("error", "jabber:client")?;
    error
        .children()
        .find(|c| c.ns() == STANZAS && c.name() != "text")
        .map(|c| c.name().to_owned())
}

/// `[torrent] enabled = false`: the server's disco#info does not list the torrent namespace,
/// and a torrent IQ on the user's stream gets `service-unavailable` (the stream's answer to
/// what no rule takes). Needs no outside tools.
#[test]
fn a_disabled_service_is_neither_advertised_nor_answered() {
    let srv = TestServer::start_with(|c| c.torrent.enabled = false, |_| {});
    srv.add_user("alice", "pw");
    let mut alice = Client::online(srv.trusted, "alice");

    let info = parsed(&alice.request(
        "type='get' to='localhost'",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    ));
    assert_eq!(info.attr("type"), Some("result"), "{info:?}");
    let query = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap_or_else(|| panic!("no disco#info query in {info:?}"));
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    assert!(
        features.contains(&"http://jabber.org/protocol/disco#info"),
        "{features:?}"
    );
    assert!(!features.contains(&NS), "{features:?}");

    // Every request of the namespace, as the seed's example sends them (no `to`).
    for (kind, payload) in [
        (
            "set",
            format!("<add xmlns='{NS}'>http://127.0.0.1:1/a.torrent</add>"),
        ),
        ("get", format!("<list xmlns='{NS}'/>")),
        ("get", format!("<status xmlns='{NS}' id='1'/>")),
        ("set", format!("<pause xmlns='{NS}' id='1'/>")),
        ("set", format!("<remove xmlns='{NS}' id='1'/>")),
        ("get", format!("<settings xmlns='{NS}'/>")),
    ] {
        let r = parsed(&alice.request(&format!("type='{kind}'"), &payload));
        assert_eq!(
            error_condition(&r).as_deref(),
            Some("service-unavailable"),
            "{payload}: {r:?}"
        );
    }
    // The stream is still in order.
    let r = parsed(&alice.get("<ping xmlns='urn:xmpp:ping'/>"));
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

/// Per-user quotas: the number of jobs and the bytes of a user's torrents, each refused with
/// `resource-constraint` and a message saying which limit; other users are not affected.
#[test]
fn quotas_refuse_with_a_clear_error() {
    if !tools_present() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    let announce = "http://127.0.0.1:9/announce"; // nothing listens: no peers, no matter
    let small = make_torrent(root, "small.bin", &[("", 1 << 20)], announce);
    let big = make_torrent(root, "big.bin", &[("", 3 << 20)], announce);
    let other = make_torrent(root, "other.bin", &[("", 1 << 20)], announce);
    let bobs = make_torrent(root, "bobs.bin", &[("", 1 << 20)], announce);
    let b64 =
        |p: &Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());

    let data = tempfile::tempdir().unwrap();
    let srv = TestServer::start_in(
        data.path(),
        |c| {
            tweak(c);
            c.torrent.max_jobs_per_user = 2;
            c.torrent.max_bytes_per_user = 2 << 20;
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut alice = Client::online(srv.trusted, "alice");
    let mut bob = Client::online(srv.trusted, "bob");

    // 1 MiB of 2: fine. 3 MiB more: over the byte quota.
    let r = alice.set(&format!(
        "<add xmlns='{NS}' paused='true'>{}</add>",
        b64(&small)
    ));
    assert!(is_result(&r), "{r}");
    let r = alice.set(&format!(
        "<add xmlns='{NS}' paused='true'>{}</add>",
        b64(&big)
    ));
    assert!(
        is_error(&r, "resource-constraint") && r.contains("quota"),
        "{r}"
    );
    // Another 1 MiB: the byte quota is full now, and so is the job count.
    let r = alice.set(&format!(
        "<add xmlns='{NS}' paused='true'>{}</add>",
        b64(&other)
    ));
    assert!(is_result(&r), "{r}");
    let r = alice.set(&format!(
        "<add xmlns='{NS}' paused='true'>{}</add>",
        b64(&big)
    ));
    assert!(
        is_error(&r, "resource-constraint") && r.contains("limit is 2"),
        "{r}"
    );
    let r = alice.get(&format!("<list xmlns='{NS}'/>"));
    assert_eq!(r.matches("<job ").count(), 2, "{r}");

    // Bob has his own quota.
    let r = bob.set(&format!(
        "<add xmlns='{NS}' paused='true'>{}</add>",
        b64(&big)
    ));
    assert!(
        is_error(&r, "resource-constraint") && r.contains("quota"),
        "{r}"
    );
    let r = bob.set(&format!(
        "<add xmlns='{NS}' paused='true'>{}</add>",
        b64(&bobs)
    ));
    assert!(is_result(&r), "{r}");
}

/// Resident memory of this process (the test server and its engine run inside it), in KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The measurements: 64 MiB from a local aria2c seeder through wockd against aria2c
/// downloading the same torrent alone, and the memory the torrent engine adds. Run by hand:
/// `cargo test --release --test torrent -- --ignored --nocapture measure`.
#[test]
#[ignore]
fn measure_64mib_through_wockd_against_aria2c_alone() {
    if !tools_present() {
        return;
    }
    let mut procs = Procs::default();
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    let tracker = Tracker::start();
    let big = make_torrent(
        root,
        "big.bin",
        &[("", 64 << 20)],
        &tracker.url("/announce"),
    );
    tracker.route(
        "/big.torrent",
        std::fs::read(&big).unwrap(),
        "application/x-bittorrent",
    );
    seed(&mut procs, &tracker, root, &big, None);
    std::thread::sleep(Duration::from_secs(2));

    let mut aria = Vec::new();
    for i in 0..3 {
        let out = root.join(format!("aria-out-{i}"));
        let t0 = Instant::now();
        let st = Command::new("aria2c")
            .args([
                "--no-conf",
                "--interface=127.0.0.1",
                "--disable-ipv6",
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--seed-time=0",
                "--summary-interval=0",
                "--console-log-level=error",
            ])
            .arg(format!("--listen-port={}", free_port()))
            .arg(format!("--dir={}", out.display()))
            .arg(&big)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        aria.push(t0.elapsed());
        assert!(same_file(&out.join("big.bin"), &root.join("data/big.bin")));
    }

    let data = tempfile::tempdir().unwrap();
    let srv = TestServer::start_in(data.path(), tweak, |_| {});
    srv.add_user("alice", "pw");
    let mut alice = Client::online(srv.trusted, "alice");
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let r = alice.set(&format!(
        "<add xmlns='{NS}'>{}</add>",
        tracker.url("/big.torrent")
    ));
    assert!(is_result(&r), "{r}");
    alice.notice("Job 1 finished", 300);
    let wockd = t0.elapsed();
    let rss1 = rss_kib();
    assert!(same_file(
        &data.path().join("downloads/alice@localhost/big.bin"),
        &root.join("data/big.bin")
    ));
    std::thread::sleep(Duration::from_secs(3));
    let rss2 = rss_kib();
    let best = aria.iter().min().unwrap();
    println!(
        "64 MiB from a local aria2c seeder:\n  aria2c alone (3 runs): {:?}\n  through wockd (add IQ to finished notice): {wockd:?}\n  \
         ratio wockd/aria2c(best): {:.2}\n  process RSS: {} MiB before the engine started, {} MiB at completion, {} MiB 3 s later \
         (the engine adds ~{} MiB)",
        aria,
        wockd.as_secs_f64() / best.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
        rss2 / 1024,
        rss2.saturating_sub(rss0) / 1024
    );
    drop(procs);
}
