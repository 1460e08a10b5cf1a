//! RFC 6121 rosters, subscriptions and presence over real sockets.
//!
//! Every wait is for a specific stanza; "nothing arrived" is checked after a ping round trip
//! on the acting client and then on the observer: the server handles one stanza completely
//! (including what it sends to other clients) before the next, and writes each connection's
//! output in order, so once the observer's pong is read everything sent before it has been.

mod common;

use common::{Client, DOMAIN, Raw, TestServer};

impl Client {
    /// Logs in, requests the roster (becoming an interested resource) and sends initial
    /// presence; returns once its own presence came back.
    fn online(srv: &TestServer, user: &str, resource: &str) -> Client {
        let mut c = Client::login(srv, user, resource);
        c.roster_get("login-roster");
        c.available();
        c
    }

    fn roster_get(&mut self, id: &str) -> String {
        self.send(&format!(
            "<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"
        ));
        self.expect(&[&format!("id=\"{id}\"")])
    }

    fn available(&mut self) {
        self.send("<presence/>");
        let from = format!("from=\"{}\"", self.jid);
        self.wait(|s| is_presence(s) && s.contains(&from) && !s.contains("type="));
    }

    /// Waits for the roster push about `contact`.
    fn push(&mut self, contact: &str) -> String {
        let jid = format!("jid=\"{contact}\"");
        self.wait(|s| s.starts_with("<iq") && s.contains("type=\"set\"") && s.contains(&jid))
    }
}

fn is_presence(s: &str) -> bool {
    s.starts_with("<presence")
}

/// The value of attribute `name` on the first `<tag …>` in `s`.
fn attr(s: &str, tag: &str, name: &str) -> Option<String> {
    let open = s.find(&format!("<{tag} "))?;
    let end = open + s[open..].find('>')?;
    let head = &s[open..end];
    let key = format!(" {name}=\"");
    let at = head.find(&key)? + key.len();
    let len = head[at..].find('"')?;
    Some(head[at..at + len].to_owned())
}

/// Asserts the `subscription` and `ask` of the roster item in a push or result.
fn assert_item(stanza: &str, subscription: &str, ask: Option<&str>) {
    assert_eq!(
        attr(stanza, "item", "subscription").as_deref(),
        Some(subscription),
        "{stanza}"
    );
    assert_eq!(attr(stanza, "item", "ask").as_deref(), ask, "{stanza}");
}

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// `a` and `b` (both online and interested) end up subscribed to each other.
fn make_both(a: &mut Client, b: &mut Client, a_user: &str, b_user: &str) {
    fn one_way(x: &mut Client, y: &mut Client, x_user: &str, y_user: &str) {
        x.presence_to(&jid(y_user), "subscribe");
        y.expect(&["type=\"subscribe\"", &format!("from=\"{}\"", jid(x_user))]);
        y.presence_to(&jid(x_user), "subscribed");
        x.expect(&["type=\"subscribed\"", &format!("from=\"{}\"", jid(y_user))]);
    }
    one_way(a, b, a_user, b_user);
    one_way(b, a, b_user, a_user);
    a.barrier();
    b.barrier();
    a.queue.clear();
    b.queue.clear();
    let ra = a.roster_get("check-both");
    let rb = b.roster_get("check-both");
    assert_item(&ra, "both", None);
    assert_item(&rb, "both", None);
}

#[test]
fn roster_get_set_remove_with_pushes_to_every_interested_resource() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a1 = Client::login(&srv, "alice", "one");
    let mut a2 = Client::login(&srv, "alice", "two");
    // A resource that never asked for the roster gets no pushes.
    let mut a3 = Client::login(&srv, "alice", "three");
    let r = a1.roster_get("g1");
    assert!(
        r.contains("<query xmlns=\"jabber:iq:roster\" ver=\"0\"/>"),
        "{r}"
    );
    a2.roster_get("g2");

    a1.send(
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>\
         <item jid='Bob@localhost' name='Bob' subscription='both' ask='subscribe'>\
         <group>Friends</group><group>Work</group></item></query></iq>",
    );
    a1.expect(&["id=\"s1\"", "type=\"result\""]);
    for c in [&mut a1, &mut a2] {
        let p = c.push("bob@localhost");
        // The client's subscription and ask are ignored: only the server sets them.
        assert_item(&p, "none", None);
        assert_eq!(attr(&p, "item", "name").as_deref(), Some("Bob"));
        assert!(
            p.contains("<group>Friends</group><group>Work</group>"),
            "{p}"
        );
        assert_eq!(attr(&p, "query", "ver").as_deref(), Some("1"));
        assert!(p.contains(&format!("to=\"{}\"", c.jid)), "{p}");
    }
    a3.assert_none("roster push", |s| s.contains("jabber:iq:roster"));

    // Update: new name, one group.
    a2.send(
        "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'>\
         <item jid='bob@localhost' name='Robert'><group>Work</group></item></query></iq>",
    );
    a2.expect(&["id=\"s2\"", "type=\"result\""]);
    for c in [&mut a1, &mut a2] {
        let p = c.push("bob@localhost");
        assert_eq!(attr(&p, "item", "name").as_deref(), Some("Robert"));
        assert!(
            p.contains("<group>Work</group></item>") && !p.contains("Friends"),
            "{p}"
        );
    }
    // A contact on a server we cannot reach can still be added.
    a1.send("<iq type='set' id='s3'><query xmlns='jabber:iq:roster'><item jid='carol@remote.example'/></query></iq>");
    a1.expect(&["id=\"s3\"", "type=\"result\""]);
    a2.push("carol@remote.example");
    let r = a2.roster_get("g3");
    assert!(
        r.contains("jid=\"bob@localhost\"") && r.contains("jid=\"carol@remote.example\""),
        "{r}"
    );

    // Error cases (§2.3.3, §2.5.3).
    let cases = [
        (
            "<item jid='x@localhost'/><item jid='y@localhost'/>",
            "bad-request",
        ),
        ("", "bad-request"),
        ("<item name='no jid'/>", "bad-request"),
        ("<item jid='@localhost'/>", "bad-request"),
        ("<item jid='x@localhost/res'/>", "bad-request"),
        (
            "<item jid='x@localhost'><group>G</group><group>G</group></item>",
            "bad-request",
        ),
        (
            "<item jid='x@localhost'><group></group></item>",
            "not-acceptable",
        ),
        ("<item jid='alice@localhost'/>", "not-allowed"),
        (
            "<item jid='nobody@localhost' subscription='remove'/>",
            "item-not-found",
        ),
    ];
    for (i, (item, cond)) in cases.iter().enumerate() {
        let id = format!("e{i}");
        a1.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        ));
        let r = a1.expect(&[&format!("id=\"{id}\"")]);
        assert!(
            r.contains("type=\"error\"") && r.contains(&format!("<{cond} ")),
            "{item}: {r}"
        );
    }
    let long = "n".repeat(2000);
    a1.send(&format!(
        "<iq type='set' id='e-name'><query xmlns='jabber:iq:roster'><item jid='x@localhost' name='{long}'/></query></iq>"
    ));
    let r = a1.expect(&["id=\"e-name\""]);
    assert!(r.contains("<not-acceptable "), "{r}");
    a1.send(&format!(
        "<iq type='set' id='e-group'><query xmlns='jabber:iq:roster'><item jid='x@localhost'><group>{long}</group></item></query></iq>"
    ));
    let r = a1.expect(&["id=\"e-group\""]);
    assert!(r.contains("<not-acceptable "), "{r}");
    // Someone else's roster is off limits.
    a1.send(
        "<iq type='get' id='e-other' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>",
    );
    let r = a1.expect(&["id=\"e-other\""]);
    assert!(r.contains("<forbidden "), "{r}");
    a2.assert_none("push after a failed set", |s| s.contains("x@localhost"));

    // Remove.
    a1.send("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    a1.expect(&["id=\"rm\"", "type=\"result\""]);
    for c in [&mut a1, &mut a2] {
        let p = c.push("bob@localhost");
        assert_item(&p, "remove", None);
    }
    let r = a1.roster_get("g4");
    assert!(
        !r.contains("bob@localhost") && r.contains("carol@remote.example"),
        "{r}"
    );
}

#[test]
fn subscribe_then_subscribed_then_mutual() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");

    a.presence_to("bob@localhost", "subscribe");
    assert_item(&a.push("bob@localhost"), "none", Some("subscribe"));
    // Forwarded from alice's bare JID (§3.1.2).
    let req = b.expect(&["type=\"subscribe\""]);
    assert_eq!(
        attr(&req, "presence", "from").as_deref(),
        Some("alice@localhost"),
        "{req}"
    );
    // Pending-in creates no roster item for bob.
    b.assert_none("roster push before approval", |s| {
        s.contains("jabber:iq:roster")
    });

    b.presence_to("alice@localhost", "subscribed");
    assert_item(&b.push("alice@localhost"), "from", None);
    assert_item(&a.push("bob@localhost"), "to", None);
    let ok = a.expect(&["type=\"subscribed\""]);
    assert_eq!(
        attr(&ok, "presence", "from").as_deref(),
        Some("bob@localhost")
    );
    // Then alice gets bob's current presence.
    a.wait(|s| is_presence(s) && s.contains("from=\"bob@localhost/b\"") && !s.contains("type="));

    // Bob's updates now reach alice; alice's do not reach bob.
    b.send("<presence><show>away</show></presence>");
    let p = a.expect(&["from=\"bob@localhost/b\"", "<show>away</show>"]);
    assert!(is_presence(&p));
    a.send("<presence><show>dnd</show></presence>");
    a.expect(&["from=\"alice@localhost/a\"", "<show>dnd</show>"]);
    b.assert_none("alice's presence", |s| {
        s.contains("from=\"alice@localhost/a\"")
    });

    // The other direction.
    b.presence_to("alice@localhost", "subscribe");
    assert_item(&b.push("alice@localhost"), "from", Some("subscribe"));
    a.expect(&["type=\"subscribe\"", "from=\"bob@localhost\""]);
    a.presence_to("bob@localhost", "subscribed");
    assert_item(&a.push("bob@localhost"), "both", None);
    assert_item(&b.push("alice@localhost"), "both", None);
    b.expect(&["from=\"alice@localhost/a\"", "<show>dnd</show>"]);

    // Subscribing again when already subscribed: bob's side answers subscribed at once, and
    // alice's side ignores that answer as it has nothing pending (§3.1.3, §3.1.6).
    a.presence_to("bob@localhost", "subscribe");
    b.assert_none("repeated request", |s| s.contains("type=\"subscribe\""));
    a.assert_none("push or subscribed", |s| {
        s.contains("jabber:iq:roster") || s.contains("type=\"subscribed\"")
    });
}

#[test]
fn features_and_pre_approval() {
    let srv = TestServer::with_users(&["bob", "carol"]);
    // Check the stream features by hand (login_plain discards them).
    {
        let (_, f) = Raw::authenticated(srv.trusted, "bob", "pw");
        assert!(
            f.contains("<ver xmlns=\"urn:xmpp:features:rosterver\"/>"),
            "{f}"
        );
        assert!(
            f.contains("<sub xmlns=\"urn:xmpp:features:pre-approval\"/>"),
            "{f}"
        );
    }
    let mut b = Client::online(&srv, "bob", "b");
    let mut c = Client::online(&srv, "carol", "c");

    // Bob pre-approves carol: an item with approved='true', nothing sent to carol.
    b.presence_to("carol@localhost", "subscribed");
    let p = b.push("carol@localhost");
    assert_item(&p, "none", None);
    assert_eq!(attr(&p, "item", "approved").as_deref(), Some("true"));
    c.assert_none("anything from bob", |s| s.contains("bob@localhost"));

    // Carol's request is approved at once, without bothering bob.
    c.presence_to("bob@localhost", "subscribe");
    assert_item(&c.push("bob@localhost"), "none", Some("subscribe"));
    assert_item(&c.push("bob@localhost"), "to", None);
    c.expect(&["type=\"subscribed\"", "from=\"bob@localhost\""]);
    c.wait(|s| is_presence(s) && s.contains("from=\"bob@localhost/b\"") && !s.contains("type="));
    let p = b.push("carol@localhost");
    assert_item(&p, "from", None);
    assert_eq!(attr(&p, "item", "approved"), None);
    b.assert_none("the request", |s| s.contains("type=\"subscribe\""));

    // A pre-approval can be withdrawn with unsubscribed.
    c.presence_to("bob@localhost", "subscribed");
    let p = c.push("bob@localhost");
    assert_eq!(attr(&p, "item", "approved").as_deref(), Some("true"));
    c.presence_to("bob@localhost", "unsubscribed");
    let p = c.push("bob@localhost");
    assert_eq!(attr(&p, "item", "approved"), None);
    assert_item(&p, "to", None);
    b.presence_to("carol@localhost", "subscribe");
    assert_item(&b.push("carol@localhost"), "from", Some("subscribe"));
    c.expect(&["type=\"subscribe\"", "from=\"bob@localhost\""]);
}

#[test]
fn request_to_offline_contact_is_stored_and_delivered_at_login() {
    let dir = tempfile::tempdir().unwrap();
    {
        let srv = TestServer::start_in(dir.path(), |_| {}, |_| {});
        srv.add_user("alice", "pw");
        srv.add_user("dave", "pw");
        let mut a = Client::online(&srv, "alice", "a");
        a.send("<presence to='dave@localhost' type='subscribe'><status>it is alice</status></presence>");
        assert_item(&a.push("dave@localhost"), "none", Some("subscribe"));
        // A subscribe to an account that does not exist is denied on its behalf.
        a.presence_to("nobody@localhost", "subscribe");
        assert_item(&a.push("nobody@localhost"), "none", Some("subscribe"));
        assert_item(&a.push("nobody@localhost"), "none", None);
        a.expect(&["type=\"unsubscribed\"", "from=\"nobody@localhost\""]);
        srv.stop();
    }
    // After a restart: the request comes from the database.
    let srv = TestServer::start_in(dir.path(), |_| {}, |_| {});
    let mut a = Client::online(&srv, "alice", "a");
    let mut d = Client::login(&srv, "dave", "d");
    let r = d.roster_get("r");
    assert!(
        !r.contains("<item"),
        "a pending request is no roster item: {r}"
    );
    d.send("<presence/>");
    let req = d.expect(&["type=\"subscribe\"", "from=\"alice@localhost\""]);
    assert!(req.contains("<status>it is alice</status>"), "{req}");
    // Every new available resource gets it until it is answered.
    let mut d2 = Client::online(&srv, "dave", "d2");
    d2.expect(&["type=\"subscribe\"", "from=\"alice@localhost\""]);

    d2.presence_to("alice@localhost", "subscribed");
    for c in [&mut d, &mut d2] {
        assert_item(&c.push("alice@localhost"), "from", None);
    }
    assert_item(&a.push("dave@localhost"), "to", None);
    a.expect(&["type=\"subscribed\"", "from=\"dave@localhost\""]);
    a.wait(|s| is_presence(s) && s.contains("from=\"dave@localhost/d\"") && !s.contains("type="));
    a.wait(|s| is_presence(s) && s.contains("from=\"dave@localhost/d2\"") && !s.contains("type="));

    // Answered: a new resource no longer gets the request.
    let mut d3 = Client::online(&srv, "dave", "d3");
    d3.assert_none("the answered request", |s| s.contains("type=\"subscribe\""));
}

#[test]
fn unsubscribe_unsubscribed_deny_and_remove() {
    let srv = TestServer::with_users(&["alice", "bob", "carol"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    let mut c = Client::online(&srv, "carol", "c");
    make_both(&mut a, &mut b, "alice", "bob");

    // Alice stops receiving bob's presence.
    a.presence_to("bob@localhost", "unsubscribe");
    assert_item(&a.push("bob@localhost"), "from", None);
    assert_item(&b.push("alice@localhost"), "to", None);
    b.expect(&["type=\"unsubscribe\"", "from=\"alice@localhost\""]);
    a.expect(&["type=\"unavailable\"", "from=\"bob@localhost/b\""]);

    // Alice cancels bob's subscription to her.
    a.presence_to("bob@localhost", "unsubscribed");
    assert_item(&a.push("bob@localhost"), "none", None);
    assert_item(&b.push("alice@localhost"), "none", None);
    b.expect(&["type=\"unsubscribed\"", "from=\"alice@localhost\""]);
    b.expect(&["type=\"unavailable\"", "from=\"alice@localhost/a\""]);
    a.send("<presence><show>chat</show></presence>");
    a.expect(&["from=\"alice@localhost/a\"", "<show>chat</show>"]);
    b.assert_none("alice's presence", |s| s.contains("<show>chat</show>"));

    // Denying a request: carol asks, alice refuses; no item is left on alice's side.
    c.presence_to("alice@localhost", "subscribe");
    assert_item(&c.push("alice@localhost"), "none", Some("subscribe"));
    a.expect(&["type=\"subscribe\"", "from=\"carol@localhost\""]);
    a.presence_to("carol@localhost", "unsubscribed");
    assert_item(&c.push("alice@localhost"), "none", None);
    c.expect(&["type=\"unsubscribed\"", "from=\"alice@localhost\""]);
    let r = a.roster_get("after-deny");
    assert!(!r.contains("carol"), "{r}");
    let mut a2 = Client::online(&srv, "alice", "a2");
    a2.assert_none("the denied request", |s| s.contains("type=\"subscribe\""));

    // Carol cancels her own request before it is answered.
    c.presence_to("alice@localhost", "subscribe");
    a.expect(&["type=\"subscribe\"", "from=\"carol@localhost\""]);
    assert_item(&c.push("alice@localhost"), "none", Some("subscribe"));
    c.presence_to("alice@localhost", "unsubscribe");
    assert_item(&c.push("alice@localhost"), "none", None);
    a.expect(&["type=\"unsubscribe\"", "from=\"carol@localhost\""]);
    a.presence_to("carol@localhost", "subscribed");
    // Nothing pending any more: that "subscribed" is a pre-approval, not an answer.
    let p = a.push("carol@localhost");
    assert_item(&p, "none", None);
    assert_eq!(attr(&p, "item", "approved").as_deref(), Some("true"));
    c.assert_none("a subscribed", |s| s.contains("type=\"subscribed\""));

    // Removing a mutual contact cancels both subscriptions (§2.5.2).
    make_both(&mut a, &mut b, "alice", "bob");
    a.send("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>");
    a.expect(&["id=\"rm\"", "type=\"result\""]);
    assert_item(&a.push("bob@localhost"), "remove", None);
    b.expect(&["type=\"unsubscribed\"", "from=\"alice@localhost\""]);
    b.expect(&["type=\"unsubscribe\"", "from=\"alice@localhost\""]);
    b.expect(&["type=\"unavailable\"", "from=\"alice@localhost/a\""]);
    b.barrier();
    let r = b.roster_get("after-remove");
    assert_item(&r, "none", None);
}

#[test]
fn presence_broadcast_on_login_and_unavailable_when_the_connection_drops() {
    let srv = TestServer::with_users(&["alice", "bob", "carol"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    make_both(&mut a, &mut b, "alice", "bob");

    // A second resource of alice: bob and alice/a see it come online, and it learns who is
    // online (bob, alice/a) without asking.
    let mut a2 = Client::login(&srv, "alice", "a2");
    a2.send("<presence><priority>-1</priority><status>phone</status></presence>");
    let p = b.expect(&["from=\"alice@localhost/a2\"", "<status>phone</status>"]);
    assert_eq!(attr(&p, "presence", "to").as_deref(), Some("bob@localhost"));
    a.expect(&["from=\"alice@localhost/a2\"", "<status>phone</status>"]);
    a2.expect(&["from=\"alice@localhost/a2\"", "<status>phone</status>"]);
    a2.wait(|s| is_presence(s) && s.contains("from=\"bob@localhost/b\""));
    a2.wait(|s| is_presence(s) && s.contains("from=\"alice@localhost/a\""));

    // Negative priority: a message to the bare JID goes to alice/a only.
    b.send("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>");
    a.expect(&["<message", "id=\"m1\""]);
    a2.assert_none("message for the bare JID", |s| s.starts_with("<message"));

    // Directed presence to carol, who is not subscribed.
    let mut c = Client::online(&srv, "carol", "c");
    a2.send("<presence to='carol@localhost'><status>hello carol</status></presence>");
    c.expect(&["from=\"alice@localhost/a2\"", "hello carol"]);

    // Alice's phone loses its connection: everyone who saw it gets unavailable.
    drop(a2);
    let unavailable = ["type=\"unavailable\"", "from=\"alice@localhost/a2\""];
    b.expect(&unavailable);
    a.expect(&unavailable);
    c.expect(&unavailable);

    // A graceful close does the same.
    a.send("</stream:stream>");
    b.expect(&["type=\"unavailable\"", "from=\"alice@localhost/a\""]);
    c.assert_none("alice/a's unavailable", |s| {
        s.contains("from=\"alice@localhost/a\"")
    });

    // An explicit probe (§4.3) and bad priority.
    b.send("<presence to='alice@localhost' type='probe'/>");
    b.expect(&["type=\"unavailable\"", "from=\"alice@localhost\""]);
    c.send("<presence to='bob@localhost' type='probe'/>");
    c.assert_none("bob's presence", |s| s.contains("from=\"bob@localhost"));
    b.send("<presence><priority>300</priority></presence>");
    let e = b.expect(&["type=\"error\""]);
    assert!(e.contains("<bad-request "), "{e}");
}

#[test]
fn roster_versioning() {
    let srv = TestServer::with_users(&["alice"]);
    let mut a = Client::login(&srv, "alice", "a");
    a.send("<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver=''/></iq>");
    let r = a.expect(&["id=\"v1\""]);
    let v0 = attr(&r, "query", "ver").expect("a version");
    a.send(&format!(
        "<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='{v0}'/></iq>"
    ));
    let r = a.expect(&["id=\"v2\""]);
    assert_eq!(
        r, "<iq type=\"result\" id=\"v2\"/>",
        "unchanged roster: empty result"
    );

    a.send("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/></query></iq>");
    let p = a.push("x@localhost");
    let v1 = attr(&p, "query", "ver").expect("pushes carry the version");
    assert_ne!(v0, v1);
    a.expect(&["id=\"s\""]);

    // A stale version gets the whole roster with the new version.
    a.send(&format!(
        "<iq type='get' id='v3'><query xmlns='jabber:iq:roster' ver='{v0}'/></iq>"
    ));
    let r = a.expect(&["id=\"v3\""]);
    assert_eq!(attr(&r, "query", "ver").as_deref(), Some(v1.as_str()));
    assert!(r.contains("jid=\"x@localhost\""), "{r}");
    a.send(&format!(
        "<iq type='get' id='v4'><query xmlns='jabber:iq:roster' ver='{v1}'/></iq>"
    ));
    assert_eq!(a.expect(&["id=\"v4\""]), "<iq type=\"result\" id=\"v4\"/>");
}

#[test]
fn no_presence_across_a_block() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    make_both(&mut a, &mut b, "alice", "bob");

    a.send("<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>");
    a.expect(&["id=\"blk\"", "type=\"result\""]);

    // Neither direction: alice's update does not reach bob, bob's does not reach alice.
    a.send("<presence><status>hidden from bob</status></presence>");
    a.expect(&["from=\"alice@localhost/a\"", "hidden from bob"]);
    b.send("<presence><status>hidden from alice</status></presence>");
    b.expect(&["from=\"bob@localhost/b\"", "hidden from alice"]);
    a.assert_none("bob's presence", |s| s.contains("hidden from alice"));
    b.assert_none("alice's presence", |s| s.contains("hidden from bob"));

    // A new resource of alice is not told bob's presence, and bob does not see it arrive.
    let mut a2 = Client::online(&srv, "alice", "a2");
    a2.assert_none("bob's presence", |s| s.contains("from=\"bob@localhost/b\""));
    b.assert_none("alice/a2", |s| s.contains("from=\"alice@localhost/a2\""));
    // Nor does a probe reveal it.
    b.send("<presence to='alice@localhost' type='probe'/>");
    b.assert_none("an answer to the probe", |s| {
        s.contains("from=\"alice@localhost")
    });
}
