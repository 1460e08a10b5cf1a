//! External components (XEP-0114) attached to wockd: the handshake and its edge cases (wrong
//! secret, unknown domain, a second stream, stanzas before the handshake, a spoofed `from`),
//! stanzas both ways, messages from a component archived, carbon-copied and kept offline like
//! any other, bounces while the component is away, the component in the server's disco#items,
//! and the server serving clients after hostile component input.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Raw, TestServer};
use sha1::{Digest, Sha1};

const COMP: &str = "gw.localhost";
const SECRET: &str = "s3cret-for-tests";

/// A server with accounts alice and bob and the component `COMP` configured; returns it and
/// the component listener's address.
fn start() -> (TestServer, SocketAddr) {
    start_tweaked(|_| {})
}

fn start_tweaked(
    tweak: impl FnOnce(&mut wockd::config::Config) + Send + 'static,
) -> (TestServer, SocketAddr) {
    // Port 0: the listener's address is read back (a port picked beforehand could be taken
    // by a parallel test in between).
    let srv = TestServer::start_with(
        move |c| {
            c.component_listener.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
            c.components = vec![wockd::config::Component {
                domain: COMP.into(),
                secret: Some(SECRET.into()),
                ..Default::default()
            }];
            tweak(c);
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let addr = srv.components[0];
    (srv, addr)
}

/// Opens a component stream for `domain`; returns it and the stream id.
fn open(addr: SocketAddr, domain: &str) -> (Raw, String) {
    let mut raw = Raw::connect(addr);
    raw.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    ));
    let header = raw.until(">");
    let header = if header.starts_with("<?xml") {
        raw.until(">")
    } else {
        header
    };
    let id = header
        .split_once(" id='")
        .and_then(|(_, r)| r.split_once('\''))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_default();
    (raw, id)
}

fn digest(id: &str, secret: &str) -> String {
    Sha1::digest(format!("{id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A component stream for `COMP`, authenticated.
fn connect(addr: SocketAddr) -> Raw {
    let (mut raw, id) = open(addr, COMP);
    assert!(!id.is_empty(), "the server gives a stream id");
    raw.send(&format!("<handshake>{}</handshake>", digest(&id, SECRET)));
    raw.until("<handshake/>");
    raw
}

/// Reads the next complete stanza containing all of `parts`.
fn expect(raw: &mut Raw, parts: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let stanzas = common::split_stanzas(&mut raw.buf);
        if let Some(s) = stanzas.iter().find(|s| parts.iter().all(|p| s.contains(p))) {
            return s.clone();
        }
        seen.extend(stanzas);
        assert!(
            std::time::Instant::now() < deadline,
            "component: timed out waiting for {parts:?}; saw {seen:?}"
        );
        let mut chunk = [0u8; 65536];
        match raw.sock.read(&mut chunk) {
            Ok(0) => panic!("component stream closed waiting for {parts:?}; saw {seen:?}"),
            Ok(n) => raw.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
    }
}

fn enable_carbons(c: &mut Client) {
    let r = c.iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>");
    assert!(r.contains("type=\"result\""), "{r}");
}

#[test]
fn stanzas_flow_both_ways_and_component_messages_are_archived_and_carbon_copied() {
    let (srv, addr) = start();
    let mut comp = connect(addr);
    let mut phone = Client::login(&srv, "alice", "phone");
    let mut desk = Client::login(&srv, "alice", "desk");
    enable_carbons(&mut phone);
    enable_carbons(&mut desk);
    phone.send("<presence/>");
    desk.send("<presence/>");
    phone.clear();
    desk.clear();

    // User → component: `from` is the user's full JID, `to` kept.
    phone.send(&format!(
        "<message to='bob%irc@{COMP}' type='chat' id='m1'><body>hello gateway</body></message>"
    ));
    let got = expect(&mut comp, &["hello gateway"]);
    assert!(got.contains("from=\"alice@localhost/phone\""), "{got}");
    assert!(got.contains(&format!("to=\"bob%irc@{COMP}\"")), "{got}");

    // Component → user's bare JID: delivered, carbon-copied, archived.
    comp.send(&format!(
        "<message from='bob%irc@{COMP}' to='alice@localhost' type='chat' id='r1'><body>hello from IRC</body></message>"
    ));
    let a = phone.expect(&["hello from IRC"]);
    let b = desk.expect(&["hello from IRC"]);
    assert!(a.contains(&format!("from=\"bob%irc@{COMP}\"")), "{a}");
    assert!(b.contains(&format!("from=\"bob%irc@{COMP}\"")), "{b}");

    // To one full JID: the other resource gets a received carbon.
    comp.send(&format!(
        "<message from='bob%irc@{COMP}' to='alice@localhost/phone' type='chat' id='r2'><body>just the phone</body></message>"
    ));
    phone.expect(&["just the phone"]);
    let copy = desk.expect(&["just the phone"]);
    assert!(
        copy.contains("<received xmlns=\"urn:xmpp:carbons:2\">"),
        "{copy}"
    );

    // Both are in the archive, with the component's JID.
    let id = phone.send_iq(
        "type='set'",
        &format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='f'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>bob%irc@{COMP}</value></field></x></query>"
        ),
    );
    let fin = phone.answer(&id, 10);
    assert!(fin.contains("<fin"), "{fin}");
    let results: Vec<String> = phone.collect_for(Duration::ZERO, |s| {
        s.contains("<result xmlns=\"urn:xmpp:mam:2\"")
    });
    let all = results.concat();
    for body in ["hello gateway", "hello from IRC", "just the phone"] {
        assert!(all.contains(body), "archive lacks {body:?}: {results:#?}");
    }

    // IQs both ways: the component asks the user's client, the client answers.
    comp.send(&format!(
        "<iq type='get' id='v1' from='{COMP}' to='alice@localhost/desk'><query xmlns='jabber:iq:version'/></iq>"
    ));
    let q = desk.expect(&["jabber:iq:version", "id=\"v1\""]);
    assert!(q.contains(&format!("from=\"{COMP}\"")), "{q}");
    desk.send(&format!(
        "<iq type='result' id='v1' to='{COMP}'><query xmlns='jabber:iq:version'><name>desk</name></query></iq>"
    ));
    let answer = expect(&mut comp, &["id=\"v1\"", "<name>desk</name>"]);
    assert!(answer.contains("from=\"alice@localhost/desk\""), "{answer}");

    // The component asks the server itself (disco, ping).
    comp.send(&format!(
        "<iq type='get' id='p1' from='{COMP}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    let pong = expect(&mut comp, &["id=\"p1\""]);
    assert!(pong.contains("type=\"result\""), "{pong}");

    // The component's domain is in the server's disco#items.
    let items = phone.iq(
        "get",
        Some("localhost"),
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    assert!(items.contains(&format!("jid=\"{COMP}\"")), "{items}");
    drop(comp);
    srv.stop();
}

#[test]
fn a_component_message_to_an_offline_user_waits_in_the_mailbox() {
    let (srv, addr) = start();
    let mut comp = connect(addr);
    comp.send(&format!(
        "<message from='carol%irc@{COMP}' to='alice@localhost' type='chat' id='o1'><body>while you were away</body></message>"
    ));
    srv.wait_mailbox("alice", 1, 10);
    let mut alice = Client::login(&srv, "alice", "later");
    alice.send("<presence/>");
    let m = alice.expect(&["while you were away"]);
    assert!(m.contains(&format!("from=\"carol%irc@{COMP}\"")), "{m}");
    assert!(m.contains("<delay xmlns=\"urn:xmpp:delay\""), "{m}");
    drop(comp);
    srv.stop();
}

#[test]
fn presence_subscription_with_a_gateway_contact() {
    let (srv, addr) = start();
    let mut comp = connect(addr);
    let mut alice = Client::login(&srv, "alice", "phone");
    alice.send("<presence/>");
    // The gateway asks to subscribe to the user (XEP-0100 §5.1: legacy contacts).
    comp.send(&format!(
        "<presence from='dave%irc@{COMP}' to='alice@localhost' type='subscribe'/>"
    ));
    alice.expect(&["type=\"subscribe\"", "dave%irc@"]);
    alice.send(&format!(
        "<presence to='dave%irc@{COMP}' type='subscribed'/>"
    ));
    let s = expect(&mut comp, &["type=\"subscribed\"", "dave%irc@"]);
    assert!(s.contains("from=\"alice@localhost"), "{s}");
    // The contact's presence reaches the user.
    comp.send(&format!(
        "<presence from='dave%irc@{COMP}/irc' to='alice@localhost'><show>away</show></presence>"
    ));
    let p = alice.expect(&["dave%irc@", "<show>away</show>"]);
    assert!(!p.contains("type="), "{p}");
    let roster = alice.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    assert!(
        roster.contains(&format!("jid=\"dave%irc@{COMP}\"")),
        "{roster}"
    );
    drop(comp);
    srv.stop();
}

#[test]
fn stanzas_for_a_disconnected_component_bounce() {
    let (srv, addr) = start();
    let mut alice = Client::login(&srv, "alice", "phone");
    // Never connected.
    alice.send(&format!(
        "<message to='x@{COMP}' id='b1' type='chat'><body>anyone?</body></message>"
    ));
    let e = alice.expect(&["id=\"b1\"", "type=\"error\""]);
    assert!(e.contains("<service-unavailable"), "{e}");
    let r = alice.iq(
        "get",
        Some(COMP),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        r.contains("type=\"error\"") && r.contains("<service-unavailable"),
        "{r}"
    );
    // Connected, then gone.
    let comp = connect(addr);
    alice.send(&format!(
        "<iq type='get' id='d1' to='{COMP}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let mut comp = comp;
    expect(&mut comp, &["id=\"d1\""]);
    drop(comp);
    // Wait until the server has seen the disconnection (status shows it), then send.
    wait_status(&srv, &format!("component {COMP} down"));
    alice.send(&format!(
        "<message to='x@{COMP}' id='b2' type='chat'><body>still there?</body></message>"
    ));
    let e = alice.expect(&["id=\"b2\"", "type=\"error\""]);
    assert!(e.contains("<service-unavailable"), "{e}");
    // And a reconnecting component gets traffic again.
    let mut comp = connect(addr);
    wait_status(&srv, &format!("component {COMP} connected"));
    alice.send(&format!(
        "<message to='x@{COMP}' id='b3' type='chat'><body>welcome back</body></message>"
    ));
    expect(&mut comp, &["welcome back"]);
    srv.stop();
}

fn wait_status(srv: &TestServer, line: &str) {
    let path = srv.dir.join("online.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| l.starts_with(line)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed {line:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_wrong_secret_is_not_authorized() {
    let (srv, addr) = start();
    let (mut raw, id) = open(addr, COMP);
    raw.send(&format!("<handshake>{}</handshake>", digest(&id, "wrong")));
    let rest = raw.until_closed();
    assert!(rest.contains("<not-authorized"), "{rest}");
    // The right one still works, and clients are served.
    let _comp = connect(addr);
    Client::login(&srv, "alice", "after").barrier();
    srv.stop();
}

#[test]
fn an_unknown_domain_is_host_unknown() {
    let (srv, addr) = start();
    let (mut raw, _) = open(addr, "nope.localhost");
    let rest = raw.until_closed();
    assert!(rest.contains("<host-unknown"), "{rest}");
    // A component cannot claim a hosted domain either.
    let (mut raw, _) = open(addr, "localhost");
    let rest = raw.until_closed();
    assert!(rest.contains("<host-unknown"), "{rest}");
    srv.stop();
}

#[test]
fn a_second_stream_for_a_connected_domain_is_a_conflict() {
    let (srv, addr) = start();
    let mut first = connect(addr);
    let (mut second, id) = open(addr, COMP);
    second.send(&format!("<handshake>{}</handshake>", digest(&id, SECRET)));
    let rest = second.until_closed();
    assert!(rest.contains("<conflict"), "{rest}");
    // The first stream still carries traffic.
    let mut alice = Client::login(&srv, "alice", "phone");
    alice.send(&format!(
        "<message to='{COMP}' type='chat'><body>first one</body></message>"
    ));
    expect(&mut first, &["first one"]);
    srv.stop();
}

#[test]
fn stanzas_before_the_handshake_are_not_authorized() {
    let (srv, addr) = start();
    let (mut raw, _) = open(addr, COMP);
    raw.send(&format!(
        "<message from='{COMP}' to='alice@localhost'><body>sneaky</body></message>"
    ));
    let rest = raw.until_closed();
    assert!(rest.contains("<not-authorized"), "{rest}");
    let mut alice = Client::login(&srv, "alice", "phone");
    alice.send("<presence/>");
    alice.assert_none("the unauthenticated message", |s| s.contains("sneaky"));
    srv.stop();
}

#[test]
fn a_spoofed_from_is_invalid_from() {
    let (srv, addr) = start();
    let mut comp = connect(addr);
    let mut alice = Client::login(&srv, "alice", "phone");
    comp.send("<message from='bob@localhost' to='alice@localhost'><body>i am bob</body></message>");
    let rest = comp.until_closed();
    assert!(rest.contains("<invalid-from"), "{rest}");
    alice.assert_none("the spoofed message", |s| s.contains("i am bob"));
    // Nor a JID at another server.
    let mut comp = connect(addr);
    comp.send(
        "<message from='eve@elsewhere.example' to='alice@localhost'><body>hi</body></message>",
    );
    let rest = comp.until_closed();
    assert!(rest.contains("<invalid-from"), "{rest}");
    // A stanza without 'to' is improper addressing.
    let mut comp = connect(addr);
    comp.send(&format!(
        "<message from='{COMP}'><body>to nobody</body></message>"
    ));
    let rest = comp.until_closed();
    assert!(rest.contains("<improper-addressing"), "{rest}");
    srv.stop();
}

#[test]
fn hostile_component_input_closes_only_that_stream() {
    let (srv, addr) = start_tweaked(|c| c.limits.max_stanza_bytes = 64 * 1024);
    // Wrong namespace.
    let mut raw = Raw::connect(addr);
    raw.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='gw.localhost'>");
    let rest = raw.until_closed();
    assert!(rest.contains("<invalid-namespace"), "{rest}");
    // Not XML.
    let mut raw = Raw::connect(addr);
    raw.send("GET / HTTP/1.1\r\n\r\n");
    let rest = raw.until_closed();
    assert!(
        rest.contains("<not-well-formed") || rest.is_empty(),
        "{rest}"
    );
    // A control character (not allowed in XML 1.0) in a component's stanza.
    let mut comp = connect(addr);
    comp.send(&format!(
        "<message from='{COMP}' to='alice@localhost'><body>bell \u{7} here</body></message>"
    ));
    let rest = comp.until_closed();
    assert!(rest.contains("<not-well-formed"), "{rest}");
    // A stream that stops mid-stanza and goes away: nothing of it is delivered.
    let mut comp = connect(addr);
    comp.send(&format!(
        "<message from='{COMP}' to='alice@localhost'><body>unterminated"
    ));
    drop(comp);
    // A stanza deeper than the depth limit.
    let mut comp = connect(addr);
    let deep = "<x>".repeat(200) + &"</x>".repeat(200);
    comp.send(&format!(
        "<message from='{COMP}' to='alice@localhost'>{deep}</message>"
    ));
    let rest = comp.until_closed();
    assert!(rest.contains("<policy-violation"), "{rest}");
    // An oversized stanza from an authenticated component.
    let mut comp = connect(addr);
    let big = "x".repeat(100 * 1024);
    comp.send(&format!(
        "<message from='{COMP}' to='alice@localhost'><body>{big}</body></message>"
    ));
    let rest = comp.until_closed();
    assert!(rest.contains("<policy-violation"), "{rest}");
    // Multi-byte text split at every boundary still arrives whole.
    let mut comp = connect(addr);
    let mut alice = Client::login(&srv, "alice", "phone");
    let msg = format!(
        "<message from='z@{COMP}' to='alice@localhost/phone' type='chat'><body>héllo ☃ 𝄞 ok</body></message>"
    );
    for b in msg.as_bytes().chunks(1) {
        comp.sock
            .write_all(b)
            .expect("the server reads byte by byte");
    }
    alice.expect(&["héllo ☃ 𝄞 ok"]);
    alice.assert_none("a broken stanza", |s| {
        s.contains("unterminated") || s.contains("bell")
    });
    // The server still serves clients and the component.
    Client::login(&srv, "bob", "after").barrier();
    drop(comp);
    let _again = connect(addr);
    srv.stop();
}

#[test]
fn status_lists_components() {
    let (srv, addr) = start();
    wait_status(&srv, &format!("component {COMP} down"));
    let _comp = connect(addr);
    wait_status(&srv, &format!("component {COMP} connected"));
    srv.stop();
}

// ---- XEP-0356 privileges ----------------------------------------------------------------------

fn start_privileged() -> (TestServer, SocketAddr) {
    start_tweaked(|c| {
        use wockd::config::{Access, MessagePerm, PresencePerm};
        let p = &mut c.components[0].privileges;
        p.roster = Access::Both;
        p.message = MessagePerm::Outgoing;
        p.presence = PresencePerm::ManagedEntity;
        p.iq.insert("http://jabber.org/protocol/pubsub".into(), Access::Both);
    })
}

#[test]
fn privileges_are_advertised_after_the_handshake() {
    let (srv, addr) = start_privileged();
    let mut comp = connect(addr);
    let adv = expect(&mut comp, &["urn:xmpp:privilege:2"]);
    assert!(adv.contains("from=\"localhost\""), "{adv}");
    assert!(adv.contains(&format!("to=\"{COMP}\"")), "{adv}");
    for perm in [
        "access=\"roster\" type=\"both\"",
        "access=\"message\" type=\"outgoing\"",
        "access=\"presence\" type=\"managed_entity\"",
        "ns=\"http://jabber.org/protocol/pubsub\" type=\"both\"",
    ] {
        assert!(adv.contains(perm), "{perm} missing: {adv}");
    }
    // Without privileges, nothing is advertised and roster access is forbidden.
    drop(comp);
    srv.stop();
    let (srv, addr) = start();
    let mut comp = connect(addr);
    comp.send(&format!(
        "<iq type='get' id='r0' from='{COMP}' to='alice@localhost'><query xmlns='jabber:iq:roster'/></iq>"
    ));
    let r = expect(&mut comp, &["id=\"r0\""]);
    assert!(
        r.contains("type=\"error\"") && r.contains("<forbidden"),
        "{r}"
    );
    assert!(!r.contains("urn:xmpp:privilege"), "{r}");
    srv.stop();
}

#[test]
fn a_privileged_component_reads_and_writes_the_users_roster() {
    let (srv, addr) = start_privileged();
    let mut comp = connect(addr);
    let mut alice = Client::login(&srv, "alice", "phone");
    let r = alice.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    assert!(r.contains("type=\"result\""), "{r}");
    comp.send(&format!(
        "<iq type='set' id='r1' from='{COMP}' to='alice@localhost'><query xmlns='jabber:iq:roster'>\
         <item jid='erin%irc@{COMP}' subscription='both' name='Erin'><group>IRC</group></item></query></iq>"
    ));
    let r = expect(&mut comp, &["id=\"r1\""]);
    assert!(r.contains("type=\"result\""), "{r}");
    assert!(r.contains("from=\"alice@localhost\""), "{r}");
    // The user's client gets the push, with the subscription the gateway stated.
    let push = alice.expect(&["jabber:iq:roster", "erin%irc@"]);
    assert!(push.contains("subscription=\"both\""), "{push}");
    // The component reads it back.
    comp.send(&format!(
        "<iq type='get' id='r2' from='{COMP}' to='alice@localhost'><query xmlns='jabber:iq:roster'/></iq>"
    ));
    let r = expect(&mut comp, &["id=\"r2\""]);
    assert!(
        r.contains(&format!("jid=\"erin%irc@{COMP}\"")) && r.contains("<group>IRC</group>"),
        "{r}"
    );
    // Not a user here: item-not-found; another server's user: not served as a roster request.
    comp.send(&format!(
        "<iq type='get' id='r3' from='{COMP}' to='nobody@localhost'><query xmlns='jabber:iq:roster'/></iq>"
    ));
    let r = expect(&mut comp, &["id=\"r3\""]);
    assert!(r.contains("type=\"error\""), "{r}");
    srv.stop();
}

#[test]
fn a_privileged_outgoing_message_is_carbon_copied_archived_and_delivered() {
    let (srv, addr) = start_privileged();
    let mut comp = connect(addr);
    let mut phone = Client::login(&srv, "alice", "phone");
    let r = phone.iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>");
    assert!(r.contains("type=\"result\""), "{r}");
    phone.send("<presence/>");
    phone.clear();
    comp.send(&format!(
        "<message from='{COMP}' to='localhost'><privilege xmlns='urn:xmpp:privilege:2'>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='alice@localhost' \
         to='frank%irc@{COMP}' type='chat' id='slidge-carbon-1'><body>sent from the official app</body></message>\
         </forwarded></privilege></message>"
    ));
    // A sent carbon on the user's client.
    let carbon = phone.expect(&["sent from the official app"]);
    assert!(
        carbon.contains("<sent xmlns=\"urn:xmpp:carbons:2\">"),
        "{carbon}"
    );
    // Delivered to its `to`: the gateway gets its own message back, from the user.
    let back = expect(&mut comp, &["sent from the official app"]);
    assert!(back.contains("from=\"alice@localhost"), "{back}");
    // In the user's archive, as sent by the user.
    let id = phone.send_iq("type='set'", "<query xmlns='urn:xmpp:mam:2' queryid='s'/>");
    let fin = phone.answer(&id, 10);
    assert!(fin.contains("<fin"), "{fin}");
    let rows = phone
        .collect_for(Duration::ZERO, |s| {
            s.contains("<result xmlns=\"urn:xmpp:mam:2\"")
        })
        .concat();
    assert!(rows.contains("sent from the official app"), "{rows}");
    // Forged: a user of another server, or a full JID.
    for from in ["mallory@elsewhere.example", "alice@localhost/phone"] {
        comp.send(&format!(
            "<message from='{COMP}' to='localhost' id='forged'><privilege xmlns='urn:xmpp:privilege:2'>\
             <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='{from}' \
             to='frank%irc@{COMP}' type='chat'><body>forged</body></message></forwarded></privilege></message>"
        ));
        let e = expect(&mut comp, &["id=\"forged\"", "type=\"error\""]);
        assert!(e.contains("<forbidden"), "{e}");
    }
    phone.assert_none("a forged message", |s| s.contains("forged"));
    srv.stop();
}

#[test]
fn outgoing_messages_need_the_privilege() {
    let (srv, addr) = start();
    let mut comp = connect(addr);
    let mut phone = Client::login(&srv, "alice", "phone");
    phone.send("<presence/>");
    comp.send(&format!(
        "<message from='{COMP}' to='localhost' id='np'><privilege xmlns='urn:xmpp:privilege:2'>\
         <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='alice@localhost' \
         to='bob@localhost' type='chat'><body>not allowed</body></message></forwarded></privilege></message>"
    ));
    let e = expect(&mut comp, &["id=\"np\"", "type=\"error\""]);
    assert!(e.contains("<forbidden"), "{e}");
    let mut bob = Client::login(&srv, "bob", "desk");
    bob.send("<presence/>");
    bob.assert_none("the unprivileged message", |s| s.contains("not allowed"));
    srv.stop();
}

#[test]
fn managed_entity_presence_and_privileged_iq() {
    let (srv, addr) = start_privileged();
    let mut comp = connect(addr);
    let mut phone = Client::login(&srv, "alice", "phone");
    phone.send("<presence><show>dnd</show></presence>");
    let p = expect(&mut comp, &["<show>dnd</show>"]);
    assert!(p.contains("from=\"alice@localhost/phone\""), "{p}");
    assert!(p.contains(&format!("to=\"{COMP}\"")), "{p}");

    // Publish to the user's own PEP through privileged_iq (what Slidge does for bookmarks).
    comp.send(&format!(
        "<iq type='set' id='pi1' from='{COMP}' to='alice@localhost'><privileged_iq xmlns='urn:xmpp:privilege:2'>\
         <iq xmlns='jabber:client' type='set' to='alice@localhost' id='inner1'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:example:gw'>\
         <item id='one'><entry xmlns='urn:example:gw'>from the gateway</entry></item></publish></pubsub>\
         </iq></privileged_iq></iq>"
    ));
    let r = expect(&mut comp, &["id=\"pi1\""]);
    assert!(r.contains("type=\"result\""), "{r}");
    assert!(
        r.contains("<privilege xmlns=\"urn:xmpp:privilege:2\">")
            && r.contains("<forwarded xmlns=\"urn:xmpp:forward:0\">")
            && r.contains("id=\"inner1\""),
        "{r}"
    );
    let items = phone.iq(
        "get",
        Some("alice@localhost"),
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:example:gw'/></pubsub>",
    );
    assert!(items.contains("from the gateway"), "{items}");
    // A namespace that is not granted, and another user's account: forbidden.
    comp.send(&format!(
        "<iq type='get' id='pi2' from='{COMP}' to='alice@localhost'><privileged_iq xmlns='urn:xmpp:privilege:2'>\
         <iq xmlns='jabber:client' type='get' to='alice@localhost' id='inner2'><vCard xmlns='vcard-temp'/></iq>\
         </privileged_iq></iq>"
    ));
    let r = expect(&mut comp, &["id=\"pi2\""]);
    assert!(
        r.contains("type=\"error\"") && r.contains("<forbidden"),
        "{r}"
    );
    comp.send(&format!(
        "<iq type='get' id='pi3' from='{COMP}' to='alice@localhost'><privileged_iq xmlns='urn:xmpp:privilege:2'>\
         <iq xmlns='jabber:client' type='get' to='bob@localhost' id='inner3'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:example:gw'/></pubsub></iq>\
         </privileged_iq></iq>"
    ));
    let r = expect(&mut comp, &["id=\"pi3\""]);
    assert!(
        r.contains("type=\"error\"") && r.contains("<forbidden"),
        "{r}"
    );
    // An error of the inner request comes back wrapped, with the error on the outer IQ too.
    comp.send(&format!(
        "<iq type='get' id='pi4' from='{COMP}' to='alice@localhost'><privileged_iq xmlns='urn:xmpp:privilege:2'>\
         <iq xmlns='jabber:client' type='get' to='alice@localhost' id='inner4'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:example:none'/></pubsub></iq>\
         </privileged_iq></iq>"
    ));
    let r = expect(&mut comp, &["id=\"pi4\""]);
    assert!(
        r.contains("type=\"error\"") && r.contains("<item-not-found"),
        "{r}"
    );
    assert!(r.contains("id=\"inner4\""), "{r}");
    srv.stop();
}

/// Round trip user → wockd → raw component → wockd → user (the component echoes at once),
/// and messages per second from a component to one user. `cargo test --release --test
/// component -- --ignored --nocapture measure` (read-rate limits off).
#[test]
#[ignore]
fn measure_component_round_trip() {
    let (srv, addr) = start_tweaked(|c| {
        c.limits.read_rate = 1 << 40;
        c.limits.read_burst = 1 << 40;
        c.component_listener.read_rate = 1 << 40;
        c.component_listener.read_burst = 1 << 40;
    });
    let mut comp = connect(addr);
    let mut alice = Client::login(&srv, "alice", "phone");
    alice.send("<presence/>");
    alice.clear();
    let mut times = Vec::new();
    for i in 0..2000 {
        let t = std::time::Instant::now();
        alice.send(&format!(
            "<message to='echo@{COMP}' type='chat' id='e{i}'><body>{i}</body></message>"
        ));
        expect(&mut comp, &[&format!("id=\"e{i}\"")]);
        comp.send(&format!(
            "<message from='echo@{COMP}' to='alice@localhost/phone' type='chat' id='r{i}'><body>{i}</body></message>"
        ));
        let id = format!("id=\"r{i}\"");
        alice.wait(|s| s.contains(&id));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "user → component → user: p50 {:?} p99 {:?} max {:?} (2000, archived)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    let n = 20_000;
    let t = std::time::Instant::now();
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "<message from='flood@{COMP}' to='alice@localhost/phone' type='chat'><body>{i}</body></message>"
        ));
        if batch.len() > 64 * 1024 {
            comp.send(&batch);
            batch.clear();
        }
    }
    comp.send(&batch);
    let last = format!("<body>{}</body>", n - 1);
    alice.timeout = Duration::from_secs(60);
    alice.wait(|s| s.contains(&last));
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} messages component → user: {:.0} msg/s (each archived)",
        n as f64 / secs
    );
    srv.stop();
}
