//! Federation between two wockd servers on loopback (`a.test` and `b.test`, static routes to
//! each other's s2s listener): STARTTLS both ways, dialback, messages, subscriptions, presence,
//! bounces, offline delivery of remote messages, a peer restart, and a raw peer that spoofs
//! `from`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, Raw, TestServer, plain_auth};

const A: &str = "a.test";
const B: &str = "b.test";

/// A free loopback port (bound then released; the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server for `domain` listening for servers on `own`, with static routes.
fn start(
    dir: Option<&Path>,
    domain: &'static str,
    own: u16,
    routes: Vec<(&'static str, SocketAddr)>,
    tweak: impl FnOnce(&mut wockd::config::Config) + Send + 'static,
) -> TestServer {
    let t = move |c: &mut wockd::config::Config| {
        c.domains = vec![domain.to_owned()];
        c.s2s = wockd::config::S2s::default();
        c.s2s.listen = vec![wockd::config::S2sListener {
            address: SocketAddr::from(([127, 0, 0, 1], own)),
            direct_tls: false,
        }];
        c.s2s.connect_timeout_secs = 10;
        for (d, a) in routes {
            c.s2s.routes.insert(d.to_owned(), a.to_string());
        }
        tweak(c);
    };
    match dir {
        Some(dir) => TestServer::start_in(dir, t, |_| {}),
        None => TestServer::start_with(t, |_| {}),
    }
}

fn add_user(srv: &TestServer, domain: &str, name: &str) {
    let store = wockd::store::Store::open(&srv.dir.join("wockd.sqlite")).unwrap();
    use wockd::auth::scram::{Hash, new_keys};
    let keys = vec![
        (Hash::Sha1, new_keys(Hash::Sha1, "pw", 4096).unwrap()),
        (Hash::Sha256, new_keys(Hash::Sha256, "pw", 4096).unwrap()),
    ];
    store.create_account(name, domain, &keys).unwrap();
}

fn login(srv: &TestServer, domain: &str, user: &str, resource: &str) -> Client {
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    );
    let mut raw = Raw::connect(srv.trusted);
    raw.send(&header);
    raw.until("</stream:features>");
    raw.send(&plain_auth(user, "pw"));
    raw.until("<success");
    raw.send(&header);
    raw.until("</stream:features>");
    raw.send(&format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ));
    raw.until("</iq>");
    let mut c = Client::over(raw, &format!("{user}@{domain}/{resource}"));
    c.timeout = Duration::from_secs(20);
    c
}

/// The federation links `srv` lists in its status file, once it lists `n` of them.
fn links(srv: &TestServer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(snap)) = wockd::status::read(&srv.dir)
            && snap.links.len() >= n
        {
            return snap.links;
        }
        assert!(
            Instant::now() < deadline,
            "the status file does not list {n} links"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Gives each server a certificate from one test CA and trusts that CA.
fn trusting_ca(
    dir: &Path,
    domain: &str,
    leaf: &(String, String),
    ca: &str,
) -> impl FnOnce(&mut wockd::config::Config) + Send + 'static {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key, ca_file) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert, &leaf.0).unwrap();
    std::fs::write(&key, &leaf.1).unwrap();
    std::fs::write(&ca_file, ca).unwrap();
    let _ = domain;
    move |c: &mut wockd::config::Config| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        c.s2s.ca_file = Some(ca_file);
    }
}

struct Pair {
    a: TestServer,
    b: TestServer,
    pa: u16,
    pb: u16,
}

fn pair() -> Pair {
    let (pa, pb) = (free_port(), free_port());
    let a = start(
        None,
        A,
        pa,
        vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))],
        |_| {},
    );
    let b = start(
        None,
        B,
        pb,
        vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))],
        |_| {},
    );
    add_user(&a, A, "alice");
    add_user(&b, B, "bob");
    Pair { a, b, pa, pb }
}

#[test]
fn messages_cross_both_ways_with_addresses_intact() {
    let p = pair();
    let mut alice = login(&p.a, A, "alice", "laptop");
    let mut bob = login(&p.b, B, "bob", "phone");
    bob.send("<presence/>");
    alice.send("<presence/>");
    alice.send("<message to='bob@b.test' type='chat' id='m1'><body>hello bob</body></message>");
    let got = bob.expect(&["hello bob"]);
    assert!(got.contains("from=\"alice@a.test/laptop\""), "{got}");
    // Self-signed certificates: encrypted, authenticated by dialback; `wockd status` lists it.
    let l = links(&p.a, 1);
    assert!(
        l.iter().any(|l| l.starts_with("out b.test tls dialback")),
        "{l:?}"
    );
    assert!(got.contains("to=\"bob@b.test\""), "{got}");
    // Namespaces as a client expects them: no jabber:server leaks into a client stream.
    assert!(!got.contains("jabber:server"), "{got}");
    bob.send(
        "<message to='alice@a.test/laptop' type='chat' id='m2'><body>hi alice</body></message>",
    );
    let got = alice.expect(&["hi alice"]);
    assert!(got.contains("from=\"bob@b.test/phone\""), "{got}");
    // A second message reuses the link (and arrives in order).
    for i in 0..20 {
        alice.send(&format!(
            "<message to='bob@b.test/phone' type='chat'><body>n{i}</body></message>"
        ));
    }
    for i in 0..20 {
        bob.expect(&[&format!("<body>n{i}</body>")]);
    }
    // Both sides archived the exchange (MAM is the same path as for local senders).
    let id = bob.send_iq("type='set'", "<query xmlns='urn:xmpp:mam:2' queryid='q1'/>");
    let fin = bob.answer(&id, 20);
    assert!(fin.contains("type=\"result\""), "{fin}");
    let archived: Vec<String> = bob
        .queue
        .drain(..)
        .filter(|s| s.contains("queryid=\"q1\""))
        .collect();
    assert!(
        archived.iter().any(|s| s.contains("hello bob")),
        "bob's archive: {archived:#?}"
    );
    // …and the sender's archive has its copy (a remote recipient is reachable).
    let id = alice.send_iq("type='set'", "<query xmlns='urn:xmpp:mam:2' queryid='q2'/>");
    let fin = alice.answer(&id, 20);
    assert!(fin.contains("type=\"result\""), "{fin}");
    let archived: Vec<String> = alice
        .queue
        .drain(..)
        .filter(|s| s.contains("queryid=\"q2\""))
        .collect();
    assert!(
        archived
            .iter()
            .any(|s| s.contains("hello bob") && s.contains("to=\"bob@b.test\"")),
        "alice's archive: {archived:#?}"
    );
    let _ = (p.pa, p.pb);
}

#[test]
fn subscription_handshake_ends_in_both_and_presence_flows() {
    let p = pair();
    let mut alice = login(&p.a, A, "alice", "laptop");
    let mut bob = login(&p.b, B, "bob", "phone");
    alice.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    bob.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    alice.send("<presence/>");
    bob.send("<presence/>");
    // alice subscribes to bob; bob approves and subscribes back; alice approves.
    alice.presence_to("bob@b.test", "subscribe");
    let req = bob.expect(&["type=\"subscribe\""]);
    assert!(req.contains("from=\"alice@a.test\""), "{req}");
    bob.presence_to("alice@a.test", "subscribed");
    alice.expect(&["type=\"subscribed\"", "from=\"bob@b.test\""]);
    // Approved: alice gets bob's current presence.
    alice.expect(&["<presence", "from=\"bob@b.test/phone\""]);
    bob.presence_to("alice@a.test", "subscribe");
    alice.expect(&["type=\"subscribe\"", "from=\"bob@b.test\""]);
    alice.presence_to("bob@b.test", "subscribed");
    bob.expect(&["type=\"subscribed\"", "from=\"alice@a.test\""]);
    bob.expect(&["<presence", "from=\"alice@a.test/laptop\""]);
    let ra = alice.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    assert!(
        ra.contains("jid=\"bob@b.test\"") && ra.contains("subscription=\"both\""),
        "{ra}"
    );
    let rb = bob.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    assert!(
        rb.contains("jid=\"alice@a.test\"") && rb.contains("subscription=\"both\""),
        "{rb}"
    );
    // PEP: alice's nickname reaches her remote subscriber.
    let r = alice.iq(
        "set",
        None,
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='http://jabber.org/protocol/nick'><item><nick xmlns='http://jabber.org/protocol/nick'>Ally</nick></item></publish></pubsub>",
    );
    assert!(r.contains("type=\"result\""), "{r}");
    let ev = bob.expect(&["http://jabber.org/protocol/pubsub#event", "Ally"]);
    assert!(ev.contains("from=\"alice@a.test\""), "{ev}");
    // Presence updates both ways.
    alice.send("<presence><show>away</show></presence>");
    bob.expect(&["from=\"alice@a.test/laptop\"", "<show>away</show>"]);
    // A new resource of bob gets alice's presence through a probe at login.
    let mut bob2 = login(&p.b, B, "bob", "tablet");
    bob2.send("<presence/>");
    bob2.expect(&["from=\"alice@a.test/laptop\"", "<show>away</show>"]);
    // alice logs out: bob's resources see her go.
    alice.send("</stream:stream>");
    bob.expect(&["from=\"alice@a.test/laptop\"", "type=\"unavailable\""]);
    bob2.expect(&["from=\"alice@a.test/laptop\"", "type=\"unavailable\""]);
}

#[test]
fn disco_and_ping_of_the_remote_server_and_a_remote_full_jid() {
    let p = pair();
    let mut alice = login(&p.a, A, "alice", "laptop");
    let mut bob = login(&p.b, B, "bob", "phone");
    bob.send("<presence/>");
    bob.barrier();
    let pong = alice.iq("get", Some(B), "<ping xmlns='urn:xmpp:ping'/>");
    assert!(
        pong.contains("type=\"result\"") && pong.contains("from=\"b.test\""),
        "{pong}"
    );
    let info = alice.iq(
        "get",
        Some(B),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        info.contains("type=\"result\"") && info.contains("identity"),
        "{info}"
    );
    // An IQ to a remote full JID reaches that client; its answer comes back.
    let id = alice.send_iq(
        "type='get' to='bob@b.test/phone'",
        "<query xmlns='jabber:iq:version'/>",
    );
    let req = bob.expect(&["jabber:iq:version", &format!("id=\"{id}\"")]);
    assert!(req.contains("from=\"alice@a.test/laptop\""), "{req}");
    bob.send(&format!(
        "<iq type='result' to='alice@a.test/laptop' id='{id}'><query xmlns='jabber:iq:version'><name>bobclient</name></query></iq>"
    ));
    let ans = alice.answer(&id, 20);
    assert!(
        ans.contains("bobclient") && ans.contains("from=\"bob@b.test/phone\""),
        "{ans}"
    );
    // An account's vCard is read across servers.
    let set = bob.iq(
        "set",
        None,
        "<vCard xmlns='vcard-temp'><FN>Bob Remote</FN></vCard>",
    );
    assert!(set.contains("type=\"result\""), "{set}");
    let vc = alice.iq("get", Some("bob@b.test"), "<vCard xmlns='vcard-temp'/>");
    assert!(
        vc.contains("Bob Remote") && vc.contains("from=\"bob@b.test\""),
        "{vc}"
    );
    // An IQ to a resource that is not online is answered with an error from b.test.
    let err = alice.iq(
        "get",
        Some("bob@b.test/nowhere"),
        "<query xmlns='jabber:iq:version'/>",
    );
    assert!(
        err.contains("type=\"error\"") && err.contains("service-unavailable"),
        "{err}"
    );
}

#[test]
fn bounces_for_unknown_users_and_unknown_domains() {
    let p = pair();
    let mut alice = login(&p.a, A, "alice", "laptop");
    alice.send("<message to='nobody@b.test' id='x1' type='chat'><body>anyone?</body></message>");
    let err = alice.expect(&["type=\"error\"", "id=\"x1\""]);
    assert!(err.contains("service-unavailable"), "{err}");
    alice
        .send("<message to='someone@nowhere.invalid' id='x2' type='chat'><body>?</body></message>");
    let err = alice.expect(&["type=\"error\"", "id=\"x2\""]);
    assert!(err.contains("remote-server-not-found"), "{err}");
    assert!(err.contains("from=\"someone@nowhere.invalid\""), "{err}");
    // An error is never bounced.
    alice.send("<message to='someone@nowhere.invalid' id='x3' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>");
    alice.assert_none("a bounce of an error", |s| s.contains("id=\"x3\""));
}

#[test]
fn a_remote_message_waits_in_the_mailbox_and_arrives_with_a_delay_stamp() {
    let p = pair();
    let mut alice = login(&p.a, A, "alice", "laptop");
    alice.send(
        "<message to='bob@b.test' type='chat' id='off1'><body>while you were out</body></message>",
    );
    // Stored in bob's mailbox on b.test.
    let store = wockd::store::Store::open(&p.b.dir.join("wockd.sqlite")).unwrap();
    let id = store.account_id("bob", B).unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wockd::store::mailbox::count_pending(store.conn(), id).unwrap() < 1 {
        assert!(
            Instant::now() < deadline,
            "the message did not reach bob's mailbox"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut bob = login(&p.b, B, "bob", "phone");
    bob.send("<presence/>");
    let got = bob.expect(&["while you were out"]);
    assert!(
        got.contains("urn:xmpp:delay") && got.contains("from=\"alice@a.test/laptop\""),
        "{got}"
    );
}

#[test]
fn a_restarted_peer_is_reached_again_by_the_next_message() {
    let (pa, pb) = (free_port(), free_port());
    let bdir = tempfile::tempdir().unwrap();
    let route_b = vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))];
    let route_a = || vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))];
    let a = start(None, A, pa, route_b, |_| {});
    add_user(&a, A, "alice");
    let b = start(Some(bdir.path()), B, pb, route_a(), |_| {});
    add_user(&b, B, "bob");
    let mut alice = login(&a, A, "alice", "laptop");
    {
        let mut bob = login(&b, B, "bob", "phone");
        bob.send("<presence/>");
        alice.send("<message to='bob@b.test/phone' type='chat'><body>before</body></message>");
        bob.expect(&["before"]);
    }
    b.stop();
    let b = start(Some(bdir.path()), B, pb, route_a(), |_| {});
    let mut bob = login(&b, B, "bob", "phone");
    bob.send("<presence/>");
    bob.barrier();
    alice.send("<message to='bob@b.test/phone' type='chat'><body>after</body></message>");
    bob.expect(&["after"]);
}

#[test]
fn remote_senders_are_subject_to_blocking() {
    let p = pair();
    let mut alice = login(&p.a, A, "alice", "laptop");
    let mut bob = login(&p.b, B, "bob", "phone");
    bob.send("<presence/>");
    let r = bob.iq(
        "set",
        None,
        "<block xmlns='urn:xmpp:blocking'><item jid='a.test'/></block>",
    );
    assert!(r.contains("type=\"result\""), "{r}");
    alice.send("<message to='bob@b.test' id='blk' type='chat'><body>blocked?</body></message>");
    let err = alice.expect(&["type=\"error\"", "id=\"blk\""]);
    assert!(err.contains("service-unavailable"), "{err}");
    bob.assert_none("a message from a blocked domain", |s| {
        s.contains("blocked?")
    });
}

/// A fake authoritative server for `c.test`: answers every dialback verification as valid
/// and never offers TLS. Returns its address; the thread ends when the connection does.
fn fake_authoritative() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = String::new();
        let mut chunk = [0u8; 8192];
        let mut header_sent = false;
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            if !header_sent && buf.contains("<stream:stream") {
                header_sent = true;
                let _ = s.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' id='fake1' from='c.test' version='1.0'><stream:features/>");
            }
            while let Some(start) = buf.find("<db:verify") {
                let Some(end) = buf[start..].find("</db:verify>") else {
                    break;
                };
                let v = buf[start..start + end].to_owned();
                buf.drain(..start + end + 12);
                let id = common::attr(&v.replace('\'', "\""), "id");
                let _ = s.write_all(
                    format!("<db:verify from='c.test' to='a.test' id='{id}' type='valid'/>")
                        .as_bytes(),
                );
            }
        }
    });
    addr
}

#[test]
fn a_peer_spoofing_from_gets_invalid_from() {
    let auth = fake_authoritative();
    let pa = free_port();
    let a = start(None, A, pa, vec![("c.test", auth)], |c| {
        c.s2s.require_tls = false;
    });
    add_user(&a, A, "alice");
    let mut alice = login(&a, A, "alice", "laptop");
    alice.send("<presence/>");
    alice.barrier();
    let mut peer = Raw::connect(SocketAddr::from(([127, 0, 0, 1], pa)));
    peer.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='c.test' to='a.test' version='1.0'>");
    peer.until("</stream:features>");
    // A stanza before authenticating is refused.
    // (Sent on a second stream so this one can go on.)
    let mut early = Raw::connect(SocketAddr::from(([127, 0, 0, 1], pa)));
    early.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='c.test' to='a.test' version='1.0'>");
    early.until("</stream:features>");
    early.send("<message from='eve@c.test' to='alice@a.test'><body>early</body></message>");
    let closed = early.until_closed();
    assert!(closed.contains("not-authorized"), "{closed}");
    peer.send("<db:result from='c.test' to='a.test'>0123456789abcdef</db:result>");
    let ok = peer.until("/>");
    assert!(
        ok.contains("type='valid'") || ok.contains("type=\"valid\""),
        "{ok}"
    );
    peer.send(
        "<message from='carol@c.test/x' to='alice@a.test' type='chat'><body>legit</body></message>",
    );
    alice.expect(&["legit", "from=\"carol@c.test/x\""]);
    peer.send("<message from='mallory@d.test' to='alice@a.test' type='chat'><body>spoofed</body></message>");
    let closed = peer.until_closed();
    assert!(closed.contains("invalid-from"), "{closed}");
    alice.assert_none("the spoofed message", |s| s.contains("spoofed"));
}

#[test]
fn a_stream_to_a_domain_not_served_gets_host_unknown() {
    let pa = free_port();
    let a = start(None, A, pa, vec![], |_| {});
    let mut peer = Raw::connect(SocketAddr::from(([127, 0, 0, 1], pa)));
    peer.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='c.test' to='elsewhere.test' version='1.0'>");
    let closed = peer.until_closed();
    assert!(closed.contains("host-unknown"), "{closed}");
    // Without TLS a dialback attempt is refused (TLS is required by default).
    let mut peer = Raw::connect(SocketAddr::from(([127, 0, 0, 1], pa)));
    peer.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='c.test' to='a.test' version='1.0'>");
    let f = peer.until("</stream:features>");
    assert!(f.contains("<required/>"), "{f}");
    peer.send("<db:result from='c.test' to='a.test'>0123</db:result>");
    let closed = peer.until_closed();
    assert!(closed.contains("policy-violation"), "{closed}");
    drop(a);
}

#[test]
fn with_federation_off_nothing_listens_and_remote_stanzas_bounce() {
    let pa = free_port();
    let a = start(None, A, pa, vec![], |c| {
        c.s2s.enabled = false;
    });
    add_user(&a, A, "alice");
    assert!(TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], pa))).is_err());
    let mut alice = login(&a, A, "alice", "laptop");
    alice.send("<message to='bob@b.test' id='off' type='chat'><body>?</body></message>");
    let err = alice.expect(&["type=\"error\"", "id=\"off\""]);
    assert!(err.contains("remote-server-not-found"), "{err}");
}

#[test]
fn with_a_trusted_ca_both_sides_authenticate_by_certificate() {
    let (ca, leaves) = common::test_ca(&[A, B]);
    let certs = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let ta = trusting_ca(&certs.path().join("a"), A, &leaves[0], &ca);
    let tb = trusting_ca(&certs.path().join("b"), B, &leaves[1], &ca);
    // Dialback off: only certificates can work.
    let a = start(
        None,
        A,
        pa,
        vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))],
        move |c| {
            ta(c);
            c.s2s.dialback = false;
        },
    );
    let b = start(
        None,
        B,
        pb,
        vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))],
        move |c| {
            tb(c);
            c.s2s.dialback = false;
        },
    );
    add_user(&a, A, "alice");
    add_user(&b, B, "bob");
    let mut alice = login(&a, A, "alice", "laptop");
    let mut bob = login(&b, B, "bob", "phone");
    bob.send("<presence/>");
    alice.send("<presence/>");
    bob.barrier();
    alice.send("<message to='bob@b.test/phone' type='chat'><body>by certificate</body></message>");
    bob.expect(&["by certificate"]);
    bob.send("<message to='alice@a.test/laptop' type='chat'><body>and back</body></message>");
    alice.expect(&["and back"]);
    let la = links(&a, 2);
    assert!(
        la.iter()
            .any(|l| l.starts_with("out b.test tls certificate")),
        "{la:?}"
    );
    assert!(
        la.iter()
            .any(|l| l.starts_with("in b.test tls certificate")),
        "{la:?}"
    );
}

#[test]
fn without_a_valid_certificate_and_with_dialback_off_the_peer_is_refused() {
    let (pa, pb) = (free_port(), free_port());
    let a = start(
        None,
        A,
        pa,
        vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))],
        |c| {
            c.s2s.dialback = false;
        },
    );
    let b = start(
        None,
        B,
        pb,
        vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))],
        |_| {},
    );
    add_user(&a, A, "alice");
    add_user(&b, B, "bob");
    let mut alice = login(&a, A, "alice", "laptop");
    let mut bob = login(&b, B, "bob", "phone");
    alice.send("<message to='bob@b.test' type='chat' id='r1'><body>?</body></message>");
    let err = alice.expect(&["type=\"error\"", "id=\"r1\""]);
    assert!(err.contains("remote-server-not-found"), "{err}");
    // The other way: a.test refuses b.test's dialback.
    bob.send("<message to='alice@a.test' type='chat' id='r2'><body>?</body></message>");
    let err = bob.expect(&["type=\"error\"", "id=\"r2\""]);
    assert!(err.contains("remote-server-not-found"), "{err}");
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Figures for the closing note, not a test: `cargo test --release --test s2s -- --ignored
/// --nocapture measure`. Round trip over one link (a ping of the remote server, 2,000 times),
/// messages per second over one link, and the memory of idle links (200 remote domains,
/// certificate authentication so no dialback links are made).
#[test]
#[ignore]
fn measure_wockd_to_wockd() {
    // Read-rate limits off on both servers for the throughput figure (the defaults would
    // hold one client to 1 MiB/s and one link to 4 MiB/s).
    let (pa, pb) = (free_port(), free_port());
    let unlimited = |c: &mut wockd::config::Config| {
        c.limits.read_rate = 1 << 40;
        c.limits.read_burst = 1 << 40;
        c.s2s.read_rate = 1 << 40;
        c.s2s.read_burst = 1 << 40;
    };
    let a = start(
        None,
        A,
        pa,
        vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))],
        unlimited,
    );
    let b = start(
        None,
        B,
        pb,
        vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))],
        unlimited,
    );
    add_user(&a, A, "alice");
    add_user(&b, B, "bob");
    let p = Pair { a, b, pa, pb };
    let mut alice = login(&p.a, A, "alice", "laptop");
    let mut bob = login(&p.b, B, "bob", "phone");
    bob.send("<presence/>");
    bob.barrier();
    alice.iq("get", Some(B), "<ping xmlns='urn:xmpp:ping'/>");
    let mut rtts = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let r = alice.iq("get", Some(B), "<ping xmlns='urn:xmpp:ping'/>");
        rtts.push(t.elapsed());
        assert!(r.contains("type=\"result\""));
    }
    rtts.sort();
    println!(
        "rtt a.test client → b.test → client (ping over one link): p50 {:?} p99 {:?} max {:?}",
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99),
        rtts[rtts.len() - 1]
    );
    let n = 20_000;
    let sender = std::thread::spawn(move || {
        let mut out = String::new();
        for i in 0..n {
            out.push_str(&format!(
                "<message to='bob@b.test/phone' type='chat'><body>m{i} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</body></message>"
            ));
            if out.len() > 64 * 1024 {
                alice.send(&out);
                out.clear();
            }
        }
        alice.send(&out);
        alice
    });
    let t = Instant::now();
    bob.timeout = Duration::from_secs(120);
    bob.expect(&[&format!("<body>m{} ", n - 1)]);
    let secs = t.elapsed().as_secs_f64();
    let _alice = sender.join().unwrap();
    println!(
        "{n} messages of 100 bytes a.test → b.test over one link: {:.0} msg/s (both servers and both clients in this process)",
        n as f64 / secs
    );
    drop(bob);
    drop(p);

    // Idle links: a.test talks to 200 domains served by one other server.
    let certs = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let domains: Vec<String> = (0..200).map(|i| format!("d{i}.test")).collect();
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let (ca, leaves) = common::test_ca_sans(&[&[A], &names]);
    let ta = trusting_ca(&certs.path().join("a"), A, &leaves[0], &ca);
    let tb = trusting_ca(&certs.path().join("b"), "d.test", &leaves[1], &ca);
    let routes: Vec<(&'static str, SocketAddr)> = domains
        .iter()
        .map(|d| {
            (
                &*Box::leak(d.clone().into_boxed_str()),
                SocketAddr::from(([127, 0, 0, 1], pb)),
            )
        })
        .collect();
    let a = start(None, A, pa, routes, move |c| {
        ta(c);
        c.s2s.dialback = false;
    });
    let ds = domains.clone();
    let b = start(
        None,
        B,
        pb,
        vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))],
        move |c| {
            tb(c);
            c.domains = ds;
            c.s2s.dialback = false;
            // 200 links from one address arrive at once here.
            c.s2s.max_links_per_domain = 200;
        },
    );
    add_user(&a, A, "alice");
    let mut alice = login(&a, A, "alice", "laptop");
    alice.send("<presence to='u@d0.test'/>");
    links(&a, 1);
    let before = rss_kib();
    for d in &domains[1..] {
        alice.send(&format!("<presence to='u@{d}'/>"));
    }
    links(&a, domains.len());
    links(&b, domains.len());
    alice.barrier();
    let after = rss_kib();
    println!(
        "{} idle links (one outgoing on a.test and one incoming on the other server each, TLS, certificate auth): {} KiB more RSS, {:.1} KiB per link",
        2 * (domains.len() - 1),
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / (2 * (domains.len() - 1)) as f64
    );
    drop(b);
}

#[test]
fn blocked_domains_do_not_federate() {
    let (pa, pb) = (free_port(), free_port());
    let a = start(
        None,
        A,
        pa,
        vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))],
        |c| {
            c.s2s.block = vec![B.to_owned()];
        },
    );
    let b = start(
        None,
        B,
        pb,
        vec![(A, SocketAddr::from(([127, 0, 0, 1], pa)))],
        |_| {},
    );
    add_user(&a, A, "alice");
    add_user(&b, B, "bob");
    let mut alice = login(&a, A, "alice", "laptop");
    let mut bob = login(&b, B, "bob", "phone");
    alice.send("<message to='bob@b.test' type='chat' id='b1'><body>?</body></message>");
    let err = alice.expect(&["type=\"error\"", "id=\"b1\""]);
    assert!(err.contains("not-allowed"), "{err}");
    // b.test's attempt is refused by a.test: its dialback gets an error, the message bounces.
    bob.send("<message to='alice@a.test' type='chat' id='b2'><body>?</body></message>");
    let err = bob.expect(&["type=\"error\"", "id=\"b2\""]);
    assert!(err.contains("remote-server-not-found"), "{err}");
    alice.assert_none("a message from a blocked domain", |s| {
        s.contains("id=\"b2\"")
    });
}

#[test]
fn each_hosted_domain_presents_its_own_certificate() {
    // a.test also hosts a2.test; each has a certificate of its own in `certificates_dir`,
    // and b.test accepts only valid certificates (dialback off).
    const A2: &str = "a2.test";
    let (ca, leaves) = common::test_ca(&[A, A2, B]);
    let certs = tempfile::tempdir().unwrap();
    let (pa, pb) = (free_port(), free_port());
    let dir = certs.path().join("per-domain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a2.test.crt"), &leaves[1].0).unwrap();
    std::fs::write(dir.join("a2.test.key"), &leaves[1].1).unwrap();
    let ta = trusting_ca(&certs.path().join("a"), A, &leaves[0], &ca);
    let tb = trusting_ca(&certs.path().join("b"), B, &leaves[2], &ca);
    let a = start(
        None,
        A,
        pa,
        vec![(B, SocketAddr::from(([127, 0, 0, 1], pb)))],
        move |c| {
            ta(c);
            c.domains = vec![A.to_owned(), A2.to_owned()];
            c.tls.certificates_dir = Some(dir);
            c.s2s.dialback = false;
        },
    );
    let b = start(
        None,
        B,
        pb,
        vec![
            (A, SocketAddr::from(([127, 0, 0, 1], pa))),
            (A2, SocketAddr::from(([127, 0, 0, 1], pa))),
        ],
        move |c| {
            tb(c);
            c.s2s.dialback = false;
        },
    );
    add_user(&b, B, "bob");
    {
        let store = wockd::store::Store::open(&a.dir.join("wockd.sqlite")).unwrap();
        use wockd::auth::scram::{Hash, new_keys};
        let keys = vec![(Hash::Sha256, new_keys(Hash::Sha256, "pw", 4096).unwrap())];
        store.create_account("ann", A2, &keys).unwrap();
    }
    let mut ann = login(&a, A2, "ann", "laptop");
    let mut bob = login(&b, B, "bob", "phone");
    bob.send("<presence/>");
    ann.send("<presence/>");
    bob.barrier();
    ann.send("<message to='bob@b.test/phone' type='chat'><body>from a2</body></message>");
    bob.expect(&["from a2", "from=\"ann@a2.test/laptop\""]);
    bob.send("<message to='ann@a2.test/laptop' type='chat'><body>to a2</body></message>");
    ann.expect(&["to a2"]);
}
