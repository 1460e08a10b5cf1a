//! XEP-0160 offline messages through the mailbox: stored when the recipient has no available
//! resource, pushed at the next available presence with a XEP-0203 delay and the XEP-0359
//! stanza id, in order and exactly once; kept across a restart and a `kill -9`; refused with
//! `resource-constraint` beyond the quota. Also `wockd status`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{DOMAIN, Raw, TestServer};

fn chat(id: &str, body: &str) -> String {
    format!("<message type='chat' to='alice@localhost' id='{id}'><body>{body}</body></message>")
}

/// Reads up to `needle` and on to the end of the message it is in.
fn until_message(c: &mut Raw, needle: &str) -> String {
    c.until(needle) + &c.until("</message>")
}

/// Closes the stream and waits until the server has let go of the session.
fn logout(mut c: Raw) {
    c.send("</stream:stream>");
    c.until_closed();
}

/// The messages in `text`, each from `<message` to `</message>`.
fn messages(text: &str) -> Vec<&str> {
    text.match_indices("<message")
        .map(|(i, _)| {
            let end = text[i..]
                .find("</message>")
                .map_or(text.len(), |e| i + e + "</message>".len());
            &text[i..end]
        })
        .collect()
}

fn add_user(data_dir: &Path, name: &str) {
    use wockd::auth::scram::{Hash, new_keys};
    let store = wockd::store::Store::open(&data_dir.join("wockd.sqlite")).unwrap();
    let keys = vec![
        (Hash::Sha1, new_keys(Hash::Sha1, "pw", 4096).unwrap()),
        (Hash::Sha256, new_keys(Hash::Sha256, "pw", 4096).unwrap()),
    ];
    store.create_account(name, DOMAIN, &keys).unwrap();
}

#[test]
fn stored_then_delivered_once_in_order_with_delay_and_stanza_id() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "x");
    // A resource that is bound but never sent presence is not "available": it gets nothing
    // for the bare JID, so these messages are stored.
    let mut lurker = Raw::login_plain(srv.trusted, "alice", "pw", "lurker");
    for i in 1..=5 {
        bob.send(&chat(&format!("o{i}"), &format!("offline-{i}.")));
    }
    // Chat states alone are not kept (XEP-0085 §5.6); a message to the full JID of a resource
    // that is gone is.
    bob.send("<message type='chat' to='alice@localhost'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    bob.send(
        "<message type='chat' to='alice@localhost/old' id='o6'><body>offline-6.</body></message>",
    );
    let seen = bob.ping("stored");
    assert!(
        !seen.contains("<message"),
        "the sender got an error: {seen}"
    );
    let seen = lurker.ping("lurker");
    assert!(
        !seen.contains("<message"),
        "a resource without presence got messages: {seen}"
    );

    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    alice.send("<presence><priority>1</priority></presence>");
    let got = until_message(&mut alice, "offline-6.</body>");
    let msgs = messages(&got);
    assert_eq!(msgs.len(), 6, "{got}");
    for (i, m) in msgs.iter().enumerate() {
        assert!(
            m.contains(&format!(">offline-{}.</body>", i + 1)),
            "out of order: {got}"
        );
        assert!(m.contains("from=\"bob@localhost/x\""), "{m}");
        assert!(
            m.contains("<delay xmlns=\"urn:xmpp:delay\" from=\"localhost\" stamp=\"20"),
            "{m}"
        );
        assert!(m.contains("Z\"/>"), "stamp not in UTC: {m}");
        assert!(m.contains("<stanza-id xmlns=\"urn:xmpp:sid:0\""), "{m}");
        assert!(m.contains("by=\"alice@localhost\""), "{m}");
    }
    assert!(!got.contains("composing"), "a chat state was stored: {got}");
    // Another resource that becomes available now gets nothing: each message goes out once.
    lurker.send("<presence/>");
    let seen = lurker.ping("after");
    assert!(!seen.contains("offline-"), "delivered twice: {seen}");
    logout(alice);
    logout(lurker);

    // The next login gets only what arrived since.
    bob.send(&chat("m1", "marker."));
    bob.ping("stored2");
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "b");
    alice.send("<presence/>");
    let got = until_message(&mut alice, "marker.</body>");
    assert!(!got.contains("offline-"), "delivered twice: {got}");
    assert_eq!(messages(&got).len(), 1, "{got}");
    assert!(got.contains("urn:xmpp:delay"), "{got}");

    // While alice is available, messages go straight to her, without a delay.
    bob.send(&chat("m2", "live."));
    let got = until_message(&mut alice, "live.</body>");
    assert!(!got.contains("urn:xmpp:delay"), "{got}");
    assert!(
        got.contains("urn:xmpp:sid:0"),
        "live messages are archived too: {got}"
    );
}

#[test]
fn kept_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = TestServer::start_in(tmp.path(), |_| {}, |_| {});
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "x");
    for i in 1..=3 {
        bob.send(&chat(&format!("r{i}"), &format!("before-restart-{i}.")));
    }
    bob.ping("stored");
    logout(bob);
    srv.stop();

    let srv = TestServer::start_in(tmp.path(), |_| {}, |_| {});
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    alice.send("<presence/>");
    let got = until_message(&mut alice, "before-restart-3.</body>");
    let msgs = messages(&got);
    assert_eq!(msgs.len(), 3, "{got}");
    for (i, m) in msgs.iter().enumerate() {
        assert!(m.contains(&format!("before-restart-{}.", i + 1)), "{got}");
        assert!(m.contains("urn:xmpp:delay"), "{m}");
    }
}

#[test]
fn quota_refuses_with_resource_constraint() {
    const QUOTA: usize = wockd::modules::offline::QUOTA as usize;
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "x");
    let mut burst = String::new();
    for i in 0..QUOTA + 2 {
        burst.push_str(&chat(&format!("q{i}"), &format!("q{i}.")));
    }
    bob.send(&burst);
    let seen = bob.ping("full");
    let errors = messages(&seen);
    assert_eq!(errors.len(), 2, "{seen}");
    for (m, id) in errors.iter().zip([QUOTA, QUOTA + 1]) {
        assert!(m.contains(&format!("id=\"q{id}\"")), "{m}");
        assert!(
            m.contains("<error type=\"wait\"><resource-constraint"),
            "{m}"
        );
        assert!(m.contains("mailbox of alice@localhost is full"), "{m}");
    }

    // All the stored ones arrive, in order, however many delivery steps that takes.
    let mut alice = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    alice.send("<presence/>");
    let got = until_message(&mut alice, &format!(">q{}.</body>", QUOTA - 1));
    let msgs = messages(&got);
    assert_eq!(msgs.len(), QUOTA);
    for (i, m) in msgs.iter().enumerate().step_by(997) {
        assert!(m.contains(&format!(">q{i}.</body>")), "{m}");
    }
    logout(alice);

    // Delivered messages no longer count.
    bob.send(&chat("again", "again."));
    let seen = bob.ping("room");
    assert!(!seen.contains("<message"), "{seen}");
}

// ---- the real binary ------------------------------------------------------------------------

/// A `wockd run` process, killed when dropped.
struct Wockd {
    child: Child,
}

impl Wockd {
    fn start(config: &Path, addr: SocketAddr) -> Wockd {
        let child = Command::new(env!("CARGO_BIN_EXE_wockd"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let w = Wockd { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "wockd did not start listening on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

impl Drop for Wockd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wockd"))
        .arg("--config")
        .arg(config)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `wockd status` until its output satisfies `ok` (the server writes its file at most
/// once a second).
fn status_until(config: &Path, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(config);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "status never got there: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mailbox_line<'a>(status: &'a str, account: &str) -> Vec<&'a str> {
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(account))
        .unwrap_or_else(|| panic!("no line for {account}: {status}"))
        .split_whitespace()
        .collect()
}

/// What the server acknowledged survives `kill -9`: the batch of a loop turn is committed
/// before that turn's replies are written, so once the answer to a ping sent after some
/// messages has arrived, those messages are on disk.
#[test]
fn acknowledged_messages_survive_kill_9_and_status_shows_it() {
    const N: usize = 20;
    const ROUNDS: usize = 1000;
    const PER_ROUND: usize = 5;
    /// Answered pings after which the server is killed.
    const KILL_AFTER: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config: PathBuf = dir.join("wockd.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "domains = ['localhost']\ndata_dir = '{}'\n[[listen]]\naddress = '{addr}'\ntrusted_loopback = true\n[log]\nlevel = 'warn'\n",
        dir.display()
    )
    .unwrap();
    drop(f);
    add_user(dir, "alice");
    add_user(dir, "bob");

    let server = Wockd::start(&config, addr);
    let mut bob = Raw::login_plain(addr, "bob", "pw", "x");
    for i in 0..N {
        bob.send(&chat(&format!("a{i}"), &format!("acked-{i}.")));
    }
    bob.ping("p1");

    let s = status_until(&config, |s| s.contains("bob@localhost/x"));
    assert!(s.contains("server running"), "{s}");
    assert!(s.contains("bob@localhost/x  not available"), "{s}");
    assert_eq!(
        mailbox_line(&s, "alice@localhost")[1..],
        [N.to_string(), N.to_string()],
        "{s}"
    );

    // Now a stream of rounds (messages, then a ping), killed while the server is busy with it:
    // every round whose ping was answered must be on disk, and what is on disk is a prefix of
    // what was sent (nothing reordered, nothing twice).
    let mut writer = bob.sock.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for r in 0..ROUNDS {
            let mut round = String::new();
            for i in 0..PER_ROUND {
                round.push_str(&chat(&format!("s{r}-{i}"), &format!("stream-{r}-{i}.")));
            }
            round.push_str(&format!(
                "<iq type='get' id='s{r}'><ping xmlns='urn:xmpp:ping'/></iq>"
            ));
            if writer.write_all(round.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut answered = 0;
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered < KILL_AFTER && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match bob.sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => read.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        answered = String::from_utf8_lossy(&read)
            .matches("type=\"result\"")
            .count();
    }
    server.kill9();
    sender.join().unwrap();
    read.extend_from_slice(bob.until_closed().as_bytes());
    let read = String::from_utf8_lossy(&read);
    assert!(
        !read.contains("<message"),
        "the sender got an error: {read}"
    );
    let acked = read.matches("type=\"result\"").count();
    assert!(
        acked >= KILL_AFTER.min(ROUNDS),
        "the server answered only {acked} pings"
    );
    assert!(status(&config).contains("server not running"));

    // What the database holds after the kill (opening it recovers the WAL).
    let stored: Vec<String> = {
        let store = wockd::store::Store::open(&dir.join("wockd.sqlite")).unwrap();
        let alice = store.account_id("alice", DOMAIN).unwrap().unwrap();
        let q = wockd::store::mailbox::Query {
            limit: 1_000_000,
            ..Default::default()
        };
        wockd::store::mailbox::query(store.conn(), alice, &q)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.xml).unwrap())
            .collect()
    };
    let sent: Vec<String> = (0..N)
        .map(|i| format!(">acked-{i}.</body>"))
        .chain(
            (0..ROUNDS)
                .flat_map(|r| (0..PER_ROUND).map(move |i| format!(">stream-{r}-{i}.</body>"))),
        )
        .collect();
    assert!(
        stored.len() >= N + acked * PER_ROUND,
        "acknowledged messages lost: {} stored, {acked} rounds acknowledged",
        stored.len()
    );
    for (row, body) in stored.iter().zip(&sent) {
        assert!(row.contains(body.as_str()), "expected {body} in {row}");
    }

    // After a restart, all of it is delivered, in order.
    let server = Wockd::start(&config, addr);
    let mut alice = Raw::login_plain(addr, "alice", "pw", "a");
    alice.send("<presence/>");
    let got = until_message(&mut alice, &sent[stored.len() - 1]);
    let msgs = messages(&got);
    assert_eq!(msgs.len(), stored.len());
    for (m, body) in msgs.iter().zip(&sent) {
        assert!(m.contains(body.as_str()), "expected {body} in {m}");
    }

    let s = status_until(&config, |s| s.contains("alice@localhost/a"));
    assert!(s.contains("alice@localhost/a  priority 0"), "{s}");
    assert_eq!(
        mailbox_line(&s, "alice@localhost")[1..],
        [stored.len().to_string(), "0".into()],
        "{s}"
    );

    // A clean shutdown removes the file.
    server.terminate();
    assert!(!dir.join("online.txt").exists());
    assert!(status(&config).starts_with("server not running\n"));
}
