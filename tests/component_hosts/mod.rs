//! Shared by the interop tests of `wockd component` under other servers (Prosody, ejabberd):
//! the component process's configuration and launcher, a client of the host, and the
//! transport flow every host goes through (registration at the gateway, a channel on a
//! loopback ngircd as a room, groupchat both ways, a private IRC message both ways).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Client, Raw, plain_auth};
use crate::transport_support::{Guard, Irc, register_form};

pub const SVC: &str = "irc.localhost";
pub const SECRET: &str = "interop-secret";
pub const ROOM: &str = "#wockd@irc.localhost";

/// The component process's configuration: the IRC service `domain` attached to the host's
/// XEP-0114 listener at `host_port`.
pub fn component_config(dir: &Path, domain: &str, host_port: u16) -> PathBuf {
    let path = dir.join("component.toml");
    std::fs::write(
        &path,
        format!(
            r#"domains = ["localhost"]
data_dir = "{data}"

[log]
level = "debug"

[transport]
enabled = true
allow_private_addresses = true

[[transport.services]]
domain = "{domain}"
prpl = "prpl-irc"
defaults = {{ "ratelimit-interval" = "0", "ratelimit-burst" = "100" }}

[torrent]
enabled = false

[[component_link]]
domain = "{domain}"
address = "127.0.0.1:{host_port}"
secret = "{SECRET}"
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// `wockd component -c config` in its own process group, its output in `component.log`
/// next to the configuration; killed with its group on drop.
pub fn spawn_component(config: &Path) -> Guard {
    let dir = config.parent().unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("component.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wockd"))
        .process_group(0)
        .arg("-c")
        .arg(config)
        .arg("component")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start wockd component");
    Guard {
        child,
        extra_pidfile: None,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The tail of the component's log, for failure messages.
pub fn component_log_tail(config: &Path, lines: usize) -> String {
    let text =
        std::fs::read_to_string(config.parent().unwrap().join("component.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Prints the component's log on a failing test.
pub struct DumpOnPanic(pub PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- wockd component log (tail) ---\n{}",
                component_log_tail(&self.0, 120)
            );
        }
    }
}

/// SASL PLAIN without TLS and bind, on a host server's c2s port (`localhost`).
pub fn login(addr: SocketAddr, user: &str, resource: &str) -> Client {
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
    let mut raw = Raw::connect(addr);
    raw.send(header);
    raw.until("</stream:features>");
    raw.send(&plain_auth(user, "pw"));
    raw.until("<success");
    raw.send(header);
    raw.until("</stream:features>");
    raw.send(&format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ));
    raw.until("</iq>");
    let mut c = Client::over(raw, &format!("{user}@localhost/{resource}"));
    c.timeout = Duration::from_secs(20);
    c
}

/// Prosody and ejabberd write attributes with single quotes: compare without caring.
pub fn norm(s: &str) -> String {
    s.replace('\'', "\"")
}

/// The next stanza containing every one of `parts` (quotes normalised).
pub fn expect(c: &mut Client, parts: &[&str]) -> String {
    let parts: Vec<String> = parts.iter().map(|p| norm(p)).collect();
    norm(&c.wait(|s| {
        let s = norm(s);
        parts.iter().all(|p| s.contains(p.as_str()))
    }))
}

/// Sends `iq` (whose id is `id`) and returns the answer, normalised.
pub fn ask(c: &mut Client, id: &str, iq: &str) -> String {
    c.send(iq);
    let needle = format!("id=\"{id}\"");
    norm(&c.wait(|s| {
        let s = norm(s);
        s.starts_with("<iq") && s.contains(&needle)
    }))
}

/// Waits until the host routes to the gateway (the component has attached): disco#info of
/// the service answers with its gateway identity. While the component is not connected the
/// host answers an error (or, for an empty `domain_balancing` slot of ejabberd, nothing):
/// asked again every 100 ms (or after 1 s without an answer), for up to `secs`.
pub fn wait_attached(c: &mut Client, service: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0;
    loop {
        n += 1;
        let id = format!("attach{n}");
        let r = try_ask(
            c,
            &id,
            &format!(
                "<iq type='get' id='{id}' to='{service}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ),
            Duration::from_secs(1),
        );
        if let Some(r) = &r
            && r.contains("type=\"result\"")
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the host never routed to {service}: {r:?}"
        );
        if r.is_some() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How a roster item the transport writes (the gateway's own after registration, a legacy
/// contact the user subscribed to) reached the user's roster on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterWay {
    /// A roster push from the host: the component set the item (XEP-0356 roster privilege).
    Pushed(String),
    /// A subscription request from the item's JID (XEP-0100, no privilege), which the user
    /// approves here.
    Asked(String),
}

/// Waits for the first of: a roster push of `jid` with subscription `both` (then answered),
/// or a `subscribe` presence from `jid` (then approved).
pub fn roster_way(c: &mut Client, jid: &str) -> RosterWay {
    let item = format!("jid=\"{jid}\"");
    let from = format!("from=\"{jid}\"");
    let got = norm(&c.wait(|s| {
        let s = norm(s);
        (s.starts_with("<iq")
            && s.contains("type=\"set\"")
            && s.contains("jabber:iq:roster")
            && s.contains(&item)
            && s.contains("subscription=\"both\""))
            || (s.starts_with("<presence") && s.contains("type=\"subscribe\"") && s.contains(&from))
    }));
    if got.starts_with("<iq") {
        let id = crate::common::attr(&got, "id");
        c.send(&format!("<iq type='result' id='{id}'/>"));
        RosterWay::Pushed(got)
    } else {
        c.send(&format!("<presence to='{jid}' type='subscribed'/>"));
        RosterWay::Asked(got)
    }
}

/// What the flow saw, for the host-specific assertions.
pub struct Observed {
    pub gateway_item: RosterWay,
    /// How bob's item came after the user subscribed to `bob@irc.localhost`.
    pub buddy_item: RosterWay,
    /// The answer to the user's query of her own `urn:xmpp:bookmarks:1` node, asked after the
    /// room join was answered (the component sends its privileged publish, if any, when it
    /// gets the join, before the self-presence, over the same stream).
    pub bookmarks: String,
    /// The user's roster after the flow.
    pub roster: String,
}

/// The transport through a host: `c` (logged in to the host, roster fetched, available)
/// registers `nick` on the ngircd at `irc_port`, joins #wockd where `bob` is, messages both
/// ways in the room and privately. `c` answers the host's roster pushes.
pub fn transport_flow(c: &mut Client, bob: &mut Irc, irc_port: u16, nick: &str) -> Observed {
    // Discovery through the host.
    let info = wait_attached(c, SVC, 20);
    assert!(
        info.contains("category=\"gateway\"") && info.contains("type=\"irc\""),
        "{info}"
    );

    // Registration (XEP-0077).
    let r = ask(
        c,
        "reg1",
        &register_form(
            SVC,
            "reg1",
            &[
                ("username", nick),
                ("split:0", "127.0.0.1"),
                ("opt:port", &irc_port.to_string()),
                ("opt:ssl", "0"),
            ],
        ),
    );
    assert!(r.contains("type=\"result\""), "registration failed: {r}");

    // The gateway's roster item: pushed by the host, or asked for.
    let gateway_item = roster_way(c, SVC);
    // The legacy account logs in: the gateway's presence says so.
    expect(
        c,
        &[
            "<presence",
            &format!("from=\"{SVC}\""),
            &format!("{nick}@127.0.0.1: online"),
        ],
    );

    // The channel as a room.
    c.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    expect(c, &["<presence", &format!("from=\"{ROOM}/bob\"")]);
    let own = expect(
        c,
        &[
            "<presence",
            &format!("from=\"{ROOM}/{nick}\""),
            "code=\"110\"",
        ],
    );
    assert!(!own.contains("type=\"error\""), "{own}");
    let l = bob.expect("JOIN");
    assert!(l.contains(nick), "{l}");

    // Groupchat both ways.
    bob.send("PRIVMSG #wockd :hello from irc");
    let m = expect(c, &["<message", "hello from irc"]);
    assert!(
        m.contains("type=\"groupchat\"") && m.contains(&format!("from=\"{ROOM}/bob\"")),
        "{m}"
    );
    c.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='gc1'><body>hi irc</body></message>"
    ));
    let l = bob.expect("PRIVMSG #wockd");
    assert!(
        l.contains(":hi irc") && l.starts_with(&format!(":{nick}!")),
        "{l}"
    );
    // The room echoes the user's own message back to her (XEP-0045 §7.2.14).
    let echo = expect(c, &["<message", "hi irc"]);
    assert!(echo.contains(&format!("from=\"{ROOM}/{nick}\"")), "{echo}");

    // Private messages both ways.
    bob.send(&format!("PRIVMSG {nick} :private hello"));
    let pm = expect(c, &["<message", "private hello"]);
    assert!(pm.contains(&format!("from=\"bob@{SVC}")), "{pm}");
    assert!(!pm.contains("type=\"groupchat\""), "{pm}");
    c.send(&format!(
        "<message to='bob@{SVC}' type='chat' id='pm1'><body>private answer</body></message>"
    ));
    let l = bob.expect("PRIVMSG bob");
    assert!(
        l.contains(":private answer") && l.starts_with(&format!(":{nick}!")),
        "{l}"
    );

    // The user adds bob: the gateway says yes, and writes the item (or asks to be approved).
    c.send(&format!("<presence to='bob@{SVC}' type='subscribe'/>"));
    expect(
        c,
        &[
            "<presence",
            "type=\"subscribed\"",
            &format!("from=\"bob@{SVC}\""),
        ],
    );
    let buddy_item = roster_way(c, &format!("bob@{SVC}"));

    let bookmarks = ask(
        c,
        "bm1",
        "<iq type='get' id='bm1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    );
    let roster = ask(
        c,
        "r9",
        "<iq type='get' id='r9'><query xmlns='jabber:iq:roster'/></iq>",
    );
    Observed {
        gateway_item,
        buddy_item,
        bookmarks,
        roster,
    }
}

/// The bookmark the component would publish for the room.
pub fn has_room_bookmark(bookmarks: &str) -> bool {
    bookmarks.contains("type=\"result\"") && bookmarks.contains(&format!("<item id=\"{ROOM}\""))
}

/// Relay latency, IRC → component → host → user: the time from bob's PRIVMSG to the user
/// reading the message, for `n` messages one at a time; sorted.
pub fn measure_pm(c: &mut Client, bob: &mut Irc, nick: &str, n: usize) -> Vec<Duration> {
    let mut v = Vec::new();
    for i in 0..n {
        let text = format!("ping number {i}");
        let t = Instant::now();
        bob.send(&format!("PRIVMSG {nick} :{text}"));
        expect(c, &["<message", &text]);
        v.push(t.elapsed());
    }
    v.sort();
    v
}

/// The user → IRC leg as well: the time from the user's message to bob reading it.
pub fn measure_to_irc(c: &mut Client, bob: &mut Irc, n: usize) -> Vec<Duration> {
    let mut v = Vec::new();
    for i in 0..n {
        let text = format!("pong number {i}");
        let t = Instant::now();
        c.send(&format!(
            "<message to='bob@{SVC}' type='chat'><body>{text}</body></message>"
        ));
        bob.expect(&text);
        v.push(t.elapsed());
    }
    v.sort();
    v
}

/// Sends `iq` (whose id is `id`) and waits up to `within` for its answer: None if none came
/// (a host that drops stanzas for a vanished component says nothing).
pub fn try_ask(c: &mut Client, id: &str, iq: &str, within: Duration) -> Option<String> {
    c.send(iq);
    let needle = format!("id=\"{id}\"");
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = c.try_take(|s| {
            let s = norm(s);
            s.starts_with("<iq") && s.contains(&needle)
        }) {
            return Some(norm(&s));
        }
        if Instant::now() >= deadline {
            return None;
        }
        c.pump();
    }
}

/// A disco#info query of the gateway, answered within `within`, or None.
pub fn gateway_answers(c: &mut Client, id: &str, within: Duration) -> Option<String> {
    try_ask(
        c,
        id,
        &format!(
            "<iq type='get' id='{id}' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ),
        within,
    )
}

/// Whether the component process of `config` registered `user`'s legacy account (its log
/// says so; the log is coloured: escape sequences dropped first).
pub fn serves(config: &Path, user: &str) -> bool {
    let raw =
        std::fs::read_to_string(config.parent().unwrap().join("component.log")).unwrap_or_default();
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(ch);
        }
    }
    text.lines().any(|l| {
        l.contains("legacy account registered") && l.contains(&format!("owner={user}@localhost"))
    })
}

/// Forgets everything the host sent before a ping round trip (Client::clear expects double
/// quotes; Prosody and ejabberd write single ones).
pub fn clear(c: &mut Client) {
    let r = ask(
        c,
        "clear",
        "<iq type='get' id='clear'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(r.contains("type=\"result\""), "{r}");
    c.queue.clear();
}
