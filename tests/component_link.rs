//! wockd's own IM transport as an external component (`wockd component`, XEP-0114) of a wockd
//! that hosts it with XEP-0356 privileges: a user of the host registers an IRC account on a
//! loopback ngircd through the component, joins a channel, messages both ways; IRC messages are
//! archived by the host; the room lands in the host's PEP bookmarks through `privileged_iq`;
//! the component process is killed with SIGKILL and comes back: the host's users stay
//! connected, stanzas to the gateway bounce meanwhile, the legacy account logs in again.

mod common;
mod component_hosts;
mod transport_support;

use std::time::{Duration, Instant};

use common::{Raw, TestServer};
use transport_support::*;

use component_hosts::{SECRET, SVC, component_config, spawn_component};

fn wait_status(srv: &TestServer, line: &str) {
    let path = srv.dir.join("online.txt");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l.starts_with(line)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {line:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_transport_as_a_component_of_wockd() {
    let Some(bin) = require("ngircd") else { return };
    let (_ircd, irc_port) = ngircd(&bin);
    let srv = TestServer::start_with(
        move |c| {
            use wockd::config::{Access, MessagePerm, PresencePerm};
            // Port 0, read back below: a port picked beforehand could be taken in between.
            c.component_listener.listen = vec![([127, 0, 0, 1], 0).into()];
            let mut comp = wockd::config::Component {
                domain: SVC.into(),
                secret: Some(SECRET.into()),
                ..Default::default()
            };
            comp.privileges.roster = Access::Both;
            comp.privileges.message = MessagePerm::Outgoing;
            comp.privileges.presence = PresencePerm::ManagedEntity;
            comp.privileges
                .iq
                .insert("http://jabber.org/protocol/pubsub".into(), Access::Both);
            c.components = vec![comp];
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    let host_port = srv.components[0].port();
    let dir = tempfile::tempdir().unwrap();
    let config = component_config(dir.path(), SVC, host_port);
    let mut child = spawn_component(&config);
    wait_status(&srv, &format!("component {SVC} connected"));

    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "laptop");
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    c.until("</iq>");
    c.send("<presence/>");

    // Discovery through the host.
    c.send(&format!(
        "<iq type='get' id='d1' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let info = c.until("id=\"d1\"") + &c.until("</iq>");
    assert!(
        info.contains("category=\"gateway\"") && info.contains("type=\"irc\""),
        "{info}"
    );

    // Registration (XEP-0077) and login of the legacy account.
    let mut bob = Irc::connect(irc_port, "bob");
    bob.send("JOIN #wockd");
    bob.expect(" 366 ");
    c.send(&register_form(
        SVC,
        "reg1",
        &[
            ("username", "alicebot"),
            ("split:0", "127.0.0.1"),
            ("opt:port", &irc_port.to_string()),
            ("opt:ssl", "0"),
        ],
    ));
    let r = c.until("id=\"reg1\"") + &c.until(">");
    assert!(r.contains("type=\"result\""), "registration failed: {r}");
    until_all(&mut c, &["alicebot@127.0.0.1: online"]);

    // The channel as a room, groupchat both ways.
    c.send(&format!(
        "<presence to='#wockd@{SVC}/alicebot'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    until_all(
        &mut c,
        &[&format!("from=\"#wockd@{SVC}/bob\""), "code=\"110\""],
    );
    bob.expect("JOIN");
    bob.send("PRIVMSG #wockd :hello from irc");
    let m = until_all(&mut c, &["hello from irc"]);
    assert!(m.contains("type=\"groupchat\""), "{m}");
    c.send(&format!(
        "<message to='#wockd@{SVC}' type='groupchat' id='gc1'><body>hi irc</body></message>"
    ));
    let l = bob.expect("PRIVMSG #wockd");
    assert!(l.contains(":hi irc"), "{l}");

    // 1:1 from IRC: delivered and archived by the host.
    bob.send("PRIVMSG alicebot :private hello");
    let pm = until_all(&mut c, &["private hello"]);
    assert!(pm.contains(&format!("from=\"bob@{SVC}\"")), "{pm}");
    c.send(&format!(
        "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='q1'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>bob@{SVC}</value></field></x></query></iq>"
    ));
    let archive = c.until("id=\"mam1\"");
    assert!(archive.contains("private hello"), "not archived: {archive}");

    // The joined room reached the host's PEP bookmarks through privileged_iq.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send("<iq type='get' id='bm'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>");
        let bm = c.until("id=\"bm\"") + &c.until("</iq>");
        if bm.contains(&format!("<item id=\"#wockd@{SVC}\">")) {
            break;
        }
        assert!(Instant::now() < deadline, "no bookmark: {bm}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The component process dies: the user stays connected, the gateway bounces.
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(child.child.id() as i32, libc::SIGKILL) };
    let _ = child.child.wait();
    wait_status(&srv, &format!("component {SVC} down"));
    c.send(&format!(
        "<message to='bob@{SVC}' type='chat' id='away1'><body>are you there</body></message>"
    ));
    let e = c.until("id=\"away1\"") + &c.until("</message>");
    assert!(e.contains("service-unavailable"), "{e}");
    c.send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
    c.until("id=\"ping1\"");

    // It comes back: the stored legacy account logs in again by itself.
    let _child = spawn_component(&config);
    wait_status(&srv, &format!("component {SVC} connected"));
    until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    c.send(&format!(
        "<message to='bob@{SVC}' type='chat' id='back1'><body>back again</body></message>"
    ));
    let l = bob.expect("PRIVMSG bob");
    assert!(l.contains(":back again"), "{l}");
    srv.stop();
}

/// The torrent service as a component: a user of the host lists and sets settings through it.
#[test]
fn the_torrent_service_as_a_component_of_wockd() {
    let srv = TestServer::start_with(
        move |c| {
            c.component_listener.listen = vec![([127, 0, 0, 1], 0).into()];
            c.components = vec![wockd::config::Component {
                domain: "torrent.localhost".into(),
                secret: Some(SECRET.into()),
                ..Default::default()
            }];
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    let host_port = srv.components[0].port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("component.toml");
    std::fs::write(
        &path,
        format!(
            r#"domains = ["localhost"]
data_dir = "{data}"

[transport]
enabled = false

[torrent]
enabled = true
domain = "torrent.localhost"
dht = false
lsd = false
upnp = false

[[component_link]]
domain = "torrent.localhost"
address = "127.0.0.1:{host_port}"
secret = "{SECRET}"
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let _child = spawn_component(&path);
    wait_status(&srv, "component torrent.localhost connected");
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    c.send("<presence/>");
    c.send("<iq type='get' id='l1' to='torrent.localhost'><list xmlns='http://wockd.org/ns/torrent'/></iq>");
    let r = c.until("id=\"l1\"") + &c.until(">");
    assert!(r.contains("type=\"result\""), "{r}");
    c.send("<iq type='set' id='s1' to='torrent.localhost'><settings xmlns='http://wockd.org/ns/torrent' notify='none'/></iq>");
    let r = c.until("id=\"s1\"") + &c.until(">");
    assert!(r.contains("type=\"result\""), "{r}");
    c.send("<iq type='get' id='s2' to='torrent.localhost'><settings xmlns='http://wockd.org/ns/torrent'/></iq>");
    let r = c.until("id=\"s2\"") + &c.until("</iq>");
    assert!(r.contains("notify=\"none\""), "{r}");
    // Chat with the service works too, answered from its domain.
    c.send("<message to='torrent.localhost' type='chat' id='h1'><body>help</body></message>");
    let m = c.until("</message>");
    assert!(m.contains("from=\"torrent.localhost\""), "{m}");
    srv.stop();
}

/// A host that grants the roster privilege but refuses the roster set (ejabberd 23.01 does,
/// with an internal error): the component asks the user to subscribe instead (XEP-0100), and
/// later items go that way at once. The host here is a raw XEP-0114 server in the test.
#[test]
fn a_refused_roster_set_falls_back_to_a_subscription_request() {
    use std::io::{Read, Write};
    let Some(bin) = require("ngircd") else { return };
    let (_ircd, irc_port) = ngircd(&bin);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = component_config(dir.path(), SVC, host_port);
    let _child = spawn_component(&config);
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = String::new();
    let read_until = |sock: &mut std::net::TcpStream, buf: &mut String, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = buf.find(needle) {
                let out = buf[..i + needle.len()].to_owned();
                buf.drain(..i + needle.len());
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {needle:?}; have {buf:?}"
            );
            let mut chunk = [0u8; 65536];
            if let Ok(n) = sock.read(&mut chunk) {
                assert!(n > 0, "the component closed; have {buf:?}");
                buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        }
    };
    read_until(&mut sock, &mut buf, &format!("to='{SVC}'>"));
    sock.write_all(format!(
        "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='{SVC}'>"
    ).as_bytes()).unwrap();
    read_until(&mut sock, &mut buf, "</handshake>");
    sock.write_all(b"<handshake/>").unwrap();
    // Roster set granted.
    sock.write_all(format!(
        "<message from='localhost' to='{SVC}'><privilege xmlns='urn:xmpp:privilege:2'><perm access='roster' type='both' push='false'/></privilege></message>"
    ).as_bytes()).unwrap();
    // A user of the host registers an IRC account.
    let form = register_form(
        SVC,
        "reg1",
        &[
            ("username", "alicebot"),
            ("split:0", "127.0.0.1"),
            ("opt:port", &irc_port.to_string()),
            ("opt:ssl", "0"),
        ],
    )
    .replacen("<iq ", "<iq from='alice@localhost/laptop' ", 1);
    sock.write_all(form.as_bytes()).unwrap();
    read_until(&mut sock, &mut buf, "id=\"reg1\"");
    // The gateway's own roster item comes as a privileged roster set: refuse it.
    let set = read_until(&mut sock, &mut buf, "jabber:iq:roster");
    let id = set
        .rsplit("<iq ")
        .next()
        .and_then(|s| s.split("id=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .expect("the roster set has an id")
        .to_owned();
    sock.write_all(format!(
        "<iq type='error' id='{id}' from='alice@localhost' to='{SVC}'><error type='wait'><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ).as_bytes()).unwrap();
    // The fallback: a subscription request from the gateway to the user.
    let before = read_until(&mut sock, &mut buf, "type=\"subscribe\"");
    let start = before.rfind("<presence").expect("a presence");
    let sub = before[start..].to_owned() + &read_until(&mut sock, &mut buf, ">");
    assert!(
        sub.contains("to=\"alice@localhost\"") && sub.contains(&format!("from=\"{SVC}\"")),
        "{sub}"
    );
    assert!(
        !before[..start].contains("type=\"subscribe\""),
        "no subscription request before the refusal: {before}"
    );
}
