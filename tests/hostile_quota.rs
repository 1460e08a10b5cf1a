//! Per-account quotas and bounded server state, over real sockets (issue 10, point 9):
//! private XML (XEP-0049), PEP (XEP-0163), vCards (XEP-0054), the message archive's retention
//! and size limit (XEP-0313), and the IQs the server sends to clients (expiry and a limit per
//! session).
//!
//! Every wait is for a specific stanza; "nothing arrived" is checked after a ping round trip.
//! The archive cleanup runs on a timer and tells no client, so its tests ask the archive until
//! it has the expected content (with a deadline).

mod common;

use std::time::{Duration, Instant};

use common::{Client, DOMAIN, TestServer, assert_error, is_result};
use wockd::config::Config;
use wockd::xml::Element;

impl Client {
    /// Logged in and available (initial presence sent and reflected).
    fn online(srv: &TestServer, user: &str, resource: &str) -> Client {
        let mut c = Client::login(srv, user, resource);
        c.send("<presence/>");
        c.clear();
        c
    }

    /// The bodies of every message in this account's archive, oldest first.
    fn archive(&mut self) -> Vec<String> {
        let qid = self.next_id("mam");
        let fin = self.iq(
            "set",
            None,
            &format!("<query xmlns='urn:xmpp:mam:2' queryid='{qid}'><set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set></query>"),
        );
        assert!(fin.contains("type=\"result\""), "{fin}");
        let qid = format!("queryid=\"{qid}\"");
        let mut bodies = Vec::new();
        while let Some(i) = self.queue.iter().position(|s| s.contains(&qid)) {
            let m = self.queue.remove(i);
            bodies.push(between(&m, "<body>", "</body>").unwrap_or_default());
        }
        bodies
    }

    /// Asks the archive until `want` holds of its bodies; panics after `secs` seconds.
    fn archive_until(&mut self, secs: u64, want: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let bodies = self.archive();
            if want(&bodies) {
                return bodies;
            }
            assert!(
                Instant::now() < deadline,
                "{}: archive still holds {bodies:?}",
                self.jid
            );
            // Nothing tells a client that the cleanup ran: ask again a little later.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn between(s: &str, open: &str, close: &str) -> Option<String> {
    let a = s.find(open)? + open.len();
    let b = a + s[a..].find(close)?;
    Some(s[a..b].to_owned())
}

fn server_with(users: &[&str], tweak: impl FnOnce(&mut Config) + Send + 'static) -> TestServer {
    let srv = TestServer::start_with(tweak, |_| {});
    for u in users {
        srv.add_user(u, "pw");
    }
    srv
}

// ---- XEP-0049 ---------------------------------------------------------------------------------

fn private_set(name: &str, text: &str) -> String {
    format!("<query xmlns='jabber:iq:private'><{name} xmlns='urn:test:q'>{text}</{name}></query>")
}

fn private_get(name: &str) -> String {
    format!("<query xmlns='jabber:iq:private'><{name} xmlns='urn:test:q'/></query>")
}

#[test]
fn private_xml_is_limited_in_items_and_bytes() {
    let srv = server_with(&["alice", "bob"], |c| {
        c.quotas.private_max_items = 3;
        c.quotas.private_max_bytes = 2048;
    });
    let mut a = Client::login(&srv, "alice", "a");
    for name in ["one", "two", "three"] {
        let r = a.iq("set", None, &private_set(name, "x"));
        assert!(is_result(&r), "{r}");
    }
    // A fourth item is refused, and nothing of that request is stored.
    let r = a.iq("set",
        None,
        "<query xmlns='jabber:iq:private'><one xmlns='urn:test:q'>changed</one><four xmlns='urn:test:q'/></query>",
    );
    assert_error(&r, "wait", "resource-constraint");
    let one = a.iq("get", None, &private_get("one"));
    assert!(one.contains(">x</one>"), "{one}");
    let four = a.iq("get", None, &private_get("four"));
    assert!(four.contains("<four xmlns=\"urn:test:q\"/>"), "{four}");
    // Replacing an item is fine; too many bytes are not, in one item or in all.
    let r = a.iq("set", None, &private_set("two", &"y".repeat(1000)));
    assert!(is_result(&r), "{r}");
    let r = a.iq("set", None, &private_set("three", &"z".repeat(1100)));
    assert_error(&r, "wait", "resource-constraint");
    let r = a.iq("set", None, &private_set("one", &"z".repeat(3000)));
    assert_error(&r, "wait", "resource-constraint");
    let three = a.iq("get", None, &private_get("three"));
    assert!(three.contains(">x</three>"), "{three}");
    // Bob's quota is his own.
    let mut b = Client::login(&srv, "bob", "b");
    let r = b.iq("set", None, &private_set("one", &"y".repeat(1500)));
    assert!(is_result(&r), "{r}");
}

// ---- XEP-0054 ---------------------------------------------------------------------------------

fn vcard(photo_bytes: usize) -> String {
    use base64::Engine;
    let photo = base64::engine::general_purpose::STANDARD.encode(vec![7u8; photo_bytes]);
    format!(
        "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard>"
    )
}

#[test]
fn vcards_are_limited_in_size() {
    let srv = server_with(&["alice"], |c| c.quotas.vcard_max_bytes = 16 * 1024);
    let mut a = Client::login(&srv, "alice", "a");
    // 10 KB of photo (13.4 KB of base64) fits; 13 KB (17.4 KB) does not.
    let r = a.iq("set", None, &vcard(10_000));
    assert!(is_result(&r), "{r}");
    let r = a.iq("set", None, &vcard(13_000));
    assert_error(&r, "modify", "not-acceptable");
    let got = a.iq("get", None, "<vCard xmlns='vcard-temp'/>");
    assert!(
        is_result(&got) && got.len() > 13_000 && got.len() < 16_000,
        "the first vCard is still there: {} bytes",
        got.len()
    );
}

// ---- XEP-0163 ---------------------------------------------------------------------------------

fn publish(node: &str, id: &str, payload: &str) -> String {
    format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item id='{id}'>{payload}</item></publish></pubsub>"
    )
}

fn assert_pubsub_error(s: &str, kind: &str, condition: &str, pubsub: &str) {
    assert_error(s, kind, condition);
    assert!(
        s.contains(&format!(
            "<{pubsub} xmlns=\"http://jabber.org/protocol/pubsub#errors\""
        )),
        "expected {pubsub}: {s}"
    );
}

#[test]
fn pep_nodes_items_and_item_size_are_limited() {
    let srv = server_with(&["alice"], |c| {
        c.quotas.pep_max_nodes = 2;
        c.quotas.pep_max_items = 3;
        c.quotas.pep_max_item_bytes = 1024;
    });
    let mut a = Client::login(&srv, "alice", "a");
    let small = "<n xmlns='urn:test:n'>x</n>";
    // A node keeping 'max' items keeps the service's 3, the oldest dropped on publish.
    let r = a.iq("set",
        None,
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='urn:test:one'/><configure><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#max_items'><value>max</value></field></x></configure></pubsub>",
    );
    assert!(is_result(&r), "{r}");
    for i in 1..=5 {
        let r = a.iq(
            "set",
            None,
            &publish("urn:test:one", &format!("i{i}"), small),
        );
        assert!(is_result(&r), "{r}");
    }
    let items = a.iq(
        "get",
        None,
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:test:one'/></pubsub>",
    );
    let ids: Vec<&str> = ["i1", "i2", "i3", "i4", "i5"]
        .into_iter()
        .filter(|i| items.contains(&format!("id=\"{i}\"")))
        .collect();
    assert_eq!(ids, ["i3", "i4", "i5"], "{items}");
    // More than the service keeps cannot be configured.
    let r = a.iq("set",
        None,
        "<pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:test:one'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field><field var='pubsub#max_items'><value>4</value></field></x></configure></pubsub>",
    );
    assert_error(&r, "modify", "not-acceptable");
    // XEP-0060 §7.1.3.5: a payload over the limit.
    let big = format!("<n xmlns='urn:test:n'>{}</n>", "b".repeat(1100));
    let r = a.iq("set", None, &publish("urn:test:one", "big", &big));
    assert_pubsub_error(&r, "modify", "not-acceptable", "payload-too-big");
    // A second node is fine, a third is one too many (auto-create included).
    let r = a.iq("set", None, &publish("urn:test:two", "1", small));
    assert!(is_result(&r), "{r}");
    let r = a.iq("set", None, &publish("urn:test:three", "1", small));
    assert_pubsub_error(&r, "cancel", "resource-constraint", "max-nodes-exceeded");
    let r = a.iq(
        "set",
        None,
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='urn:test:four'/></pubsub>",
    );
    assert_pubsub_error(&r, "cancel", "resource-constraint", "max-nodes-exceeded");
}

// ---- XEP-0313 ---------------------------------------------------------------------------------

fn chat(to: &str, body: &str) -> String {
    format!("<message to='{to}@{DOMAIN}' type='chat'><body>{body}</body></message>")
}

/// `[mam] keep`: messages older than that leave the archive at the next cleanup, except those
/// still waiting for offline delivery, which the recipient gets when it comes online.
#[test]
fn archive_retention_spares_undelivered_messages() {
    let srv = server_with(&["alice", "bob", "carol"], |c| {
        c.mam.keep = "2s".into();
        c.mam.cleanup_interval_secs = 1;
    });
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    a.send(&chat("bob", "live"));
    b.expect(&["<body>live</body>"]);
    a.send(&chat("carol", "for later"));
    a.barrier();
    let kept = b.archive();
    assert_eq!(kept, ["live"]);
    let gone = |bodies: &[String]| bodies.is_empty();
    b.archive_until(15, gone);
    a.archive_until(15, gone);
    // Carol's message waited for her: delivered at login, after the cleanup ran.
    let mut c = Client::login(&srv, "carol", "c");
    c.send("<presence/>");
    let m = c.expect(&["<body>for later</body>"]);
    assert!(m.contains("urn:xmpp:delay"), "{m}");
}

/// `[mam] max_messages_per_account`: the cleanup keeps the newest messages of each archive;
/// messages waiting for offline delivery are never dropped.
#[test]
fn archive_size_limit_keeps_the_newest_and_every_undelivered_message() {
    let srv = server_with(&["alice", "bob", "carol"], |c| {
        c.mam.max_messages_per_account = 3;
        c.mam.cleanup_interval_secs = 1;
    });
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    for i in 1..=5 {
        a.send(&chat("carol", &format!("offline {i}")));
    }
    for i in 1..=5 {
        a.send(&chat("bob", &format!("live {i}")));
    }
    b.expect(&["<body>live 5</body>"]);
    let newest = |bodies: &[String]| bodies == ["live 3", "live 4", "live 5"];
    a.archive_until(15, newest);
    b.archive_until(15, newest);
    let mut c = Client::login(&srv, "carol", "c");
    c.send("<presence/>");
    for i in 1..=5 {
        c.expect(&[&format!("<body>offline {i}</body>")]);
    }
}

// ---- IQs from the server ----------------------------------------------------------------------

const TEST_NS: &str = "urn:test:server-iq";

/// Test rules: `<ask/>` (set) has the server send the requester a ping and report the outcome
/// in a message once its callback runs; `<pending/>` (get) returns how many IQs the server
/// waits an answer for.
fn install_probe(s: &mut wockd::core::Module) {
    s.iqs().rule(TEST_NS, "ask").set(|iq| {
        let server = iq.server().clone();
        let Some(to) = iq.from.clone() else { return };
        let label = iq.payload.get_attr("label").unwrap_or("").to_owned();
        let ping = Element::stanza("iq")
            .attr("type", "get")
            .attr("from", DOMAIN)
            .child(Element::new("ping", "urn:xmpp:ping"));
        let back = to.clone();
        server.send_iq(
            &to,
            ping,
            Box::new(move |server, answer| {
                let condition = answer
                    .elements()
                    .find(|e| e.name == "error")
                    .and_then(|e| e.elements().next())
                    .map_or(String::new(), |c| c.name.clone());
                let kind = answer.get_attr("type").unwrap_or("");
                let report = Element::stanza("message")
                    .attr("from", DOMAIN)
                    .attr("to", back.to_string())
                    .child(Element::stanza("body").text(format!("{label}: {kind} {condition}")));
                server.deliver_to_full(&back, &report);
            }),
        );
        iq.result(None);
    });
    s.iqs().rule(TEST_NS, "pending").get(|iq| {
        let n = iq.server().pending_iq_count();
        iq.result(Some(
            Element::new("pending", TEST_NS).attr("n", n.to_string()),
        ));
    });
}

fn ask(c: &mut Client, label: &str) -> String {
    let r = c.iq(
        "set",
        None,
        &format!("<ask xmlns='{TEST_NS}' label='{label}'/>"),
    );
    assert!(is_result(&r), "{r}");
    // The server's ping; its id is what an answer must carry.
    let ping = c.expect(&["<ping xmlns=\"urn:xmpp:ping\""]);
    between(&ping, "id=\"", "\"").expect("an id")
}

fn pending(c: &mut Client) -> String {
    let r = c.iq("get", None, &format!("<pending xmlns='{TEST_NS}'/>"));
    between(&r, " n=\"", "\"").unwrap_or_else(|| panic!("{r}"))
}

#[test]
fn server_iqs_expire_and_are_bounded_per_session() {
    let srv = TestServer::start_with(
        |c| {
            c.limits.server_iq_timeout_secs = 1;
            c.limits.max_pending_iqs = 2;
        },
        install_probe,
    );
    srv.add_user("alice", "pw");
    let mut a = Client::login(&srv, "alice", "a");

    // Never answered: the callback hears of a timeout, and a late answer is ignored.
    let id = ask(&mut a, "silent");
    assert_eq!(pending(&mut a), "1");
    let report = a.expect(&["<body>silent: "]);
    assert!(
        report.contains("silent: error remote-server-timeout"),
        "{report}"
    );
    assert_eq!(pending(&mut a), "0");
    a.send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"));
    a.assert_none("a second callback", |s| s.contains("<body>silent"));

    // Answered in time: the callback gets the answer.
    let id = ask(&mut a, "answered");
    a.send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"));
    a.expect(&["<body>answered: result </body>"]);

    // A third unanswered query gives up the oldest of the session's two.
    ask(&mut a, "first");
    ask(&mut a, "second");
    ask(&mut a, "third");
    let report = a.expect(&["<body>first: "]);
    assert!(
        report.contains("first: error resource-constraint"),
        "{report}"
    );
    assert_eq!(pending(&mut a), "2");

    // The session ends: nothing is left waiting for it.
    let mut b = Client::login(&srv, "alice", "b");
    a.send("</stream:stream>");
    a.raw.until_closed();
    assert_eq!(pending(&mut b), "0");
}
