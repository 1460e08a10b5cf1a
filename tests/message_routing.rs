//! RFC 6121 §8.5 message routing between local accounts, over raw sockets: bare JIDs go to the
//! available resources of highest non-negative priority (headlines to all non-negative ones),
//! full JIDs to their resource, and errors come back for accounts and domains that do not
//! exist — but never in answer to an error.
//!
//! "Did not arrive" is checked with a barrier: a later stanza on the same path (a message to
//! the resource's full JID from the same sender, or a ping answered by the server) arrives
//! after anything routed before it, so the text read up to the barrier holds everything that
//! was delivered.

mod common;

use common::{Raw, TestServer};

/// Logs in and, with `priority`, becomes available (and waits until the server took it in).
fn login(srv: &TestServer, user: &str, resource: &str, priority: Option<i8>) -> Raw {
    let mut c = Raw::login_plain(srv.trusted, user, "pw", resource);
    if let Some(p) = priority {
        c.send(&format!("<presence><priority>{p}</priority></presence>"));
        c.ping("ready");
    }
    c
}

fn chat(to: &str, id: &str, body: &str) -> String {
    format!("<message type='chat' to='{to}' id='{id}'><body>{body}</body></message>")
}

/// Has `c` got `body` and nothing before it that contains `absent`? Checked with a message
/// from `sender` to `full` as the barrier.
fn barrier(sender: &mut Raw, c: &mut Raw, full: &str, tag: &str) -> String {
    sender.send(&chat(full, tag, tag));
    until_message(c, &format!("{tag}</body>"))
}

/// Reads up to `needle` and on to the end of the message it is in.
fn until_message(c: &mut Raw, needle: &str) -> String {
    c.until(needle) + &c.until("</message>")
}

#[test]
fn bare_jid_goes_to_the_highest_priority_and_full_jid_to_its_resource() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut five = login(&srv, "alice", "five", Some(5));
    let mut one = login(&srv, "alice", "one", Some(1));
    let mut neg = login(&srv, "alice", "neg", Some(-1));
    let mut bob = login(&srv, "bob", "x", None);

    // Chat to the bare JID: only priority 5, stamped with a stanza id for alice's archive.
    bob.send(&chat("alice@localhost", "c1", "to-bare"));
    let got = five.until("</message>");
    assert!(got.contains("to-bare"), "{got}");
    assert!(got.contains("<stanza-id xmlns=\"urn:xmpp:sid:0\""), "{got}");
    assert!(got.contains("by=\"alice@localhost\""), "{got}");
    let seen = barrier(&mut bob, &mut one, "alice@localhost/one", "b-one");
    assert!(
        !seen.contains("to-bare"),
        "priority 1 got the bare-JID chat: {seen}"
    );
    let seen = barrier(&mut bob, &mut neg, "alice@localhost/neg", "b-neg");
    assert!(
        !seen.contains("to-bare"),
        "negative priority got the bare-JID chat: {seen}"
    );

    // A full JID reaches its resource whatever its priority.
    bob.send(&chat("alice@localhost/one", "c2", "to-one"));
    assert!(one.until("</message>").contains("to-one"));
    let seen = barrier(&mut bob, &mut five, "alice@localhost/five", "b-five");
    assert!(!seen.contains("to-one"), "{seen}");

    // Normal (no type) behaves like chat.
    bob.send("<message to='alice@localhost' id='n1'><body>normal-msg</body></message>");
    assert!(five.until("</message>").contains("normal-msg"));
    let seen = barrier(&mut bob, &mut one, "alice@localhost/one", "b-one2");
    assert!(!seen.contains("normal-msg"), "{seen}");

    // A full JID whose resource is gone counts as the bare JID.
    bob.send(&chat("alice@localhost/gone", "c3", "to-gone"));
    assert!(five.until("</message>").contains("to-gone"));

    // Headlines go to every non-negative resource; not to a resource that is gone.
    bob.send("<message type='headline' to='alice@localhost' id='h1'><body>news</body></message>");
    assert!(five.until("</message>").contains("news"));
    assert!(one.until("</message>").contains("news"));
    let seen = barrier(&mut bob, &mut neg, "alice@localhost/neg", "b-neg2");
    assert!(
        !seen.contains("news"),
        "negative priority got a headline: {seen}"
    );
    bob.send("<message type='headline' to='alice@localhost/gone' id='h2'><body>stale-news</body></message>");
    let seen = barrier(&mut bob, &mut five, "alice@localhost/five", "b-five2");
    assert!(!seen.contains("stale-news"), "{seen}");

    // Two resources sharing the highest priority both get it.
    let mut five2 = login(&srv, "alice", "five2", Some(5));
    bob.send(&chat("alice@localhost", "c4", "to-both"));
    assert!(five.until("</message>").contains("to-both"));
    assert!(five2.until("</message>").contains("to-both"));

    // Groupchat to a bare JID: service-unavailable, and no resource gets it.
    bob.send("<message type='groupchat' to='alice@localhost' id='g1'><body>room</body></message>");
    let err = bob.until("</message>");
    assert!(
        err.contains("type=\"error\"") && err.contains("id=\"g1\""),
        "{err}"
    );
    assert!(err.contains("<service-unavailable"), "{err}");
    let seen = barrier(&mut bob, &mut five, "alice@localhost/five", "b-five3");
    assert!(!seen.contains(">room<"), "{seen}");

    // Nothing of the above bounced back to bob other than the groupchat.
    let rest = bob.ping("end");
    assert!(!rest.contains("<message"), "{rest}");
}

#[test]
fn errors_for_missing_accounts_and_domains_but_never_for_errors() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = login(&srv, "bob", "x", Some(0));

    bob.send(&chat("nobody@localhost", "u1", "hello?"));
    let err = bob.until("</message>");
    assert!(
        err.contains("type=\"error\"") && err.contains("id=\"u1\""),
        "{err}"
    );
    assert!(err.contains("from=\"nobody@localhost\""), "{err}");
    assert!(err.contains("<service-unavailable"), "{err}");

    bob.send("<message type='headline' to='nobody@localhost' id='u2'><body>x</body></message>");
    let err = bob.until("</message>");
    assert!(
        err.contains("id=\"u2\"") && err.contains("<service-unavailable"),
        "{err}"
    );

    bob.send(&chat("someone@elsewhere.example", "r1", "far away"));
    let err = bob.until("</message>");
    assert!(
        err.contains("type=\"error\"") && err.contains("id=\"r1\""),
        "{err}"
    );
    assert!(err.contains("<remote-server-not-found"), "{err}");

    // Errors are never answered: not for a missing account, a foreign domain, an offline
    // account (where they are not stored either) or an online one.
    for to in [
        "nobody@localhost",
        "someone@elsewhere.example",
        "alice@localhost",
        "alice@localhost/gone",
    ] {
        bob.send(&format!(
            "<message type='error' to='{to}' id='e1'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        ));
    }
    // A message to oneself with no `to` is for one's own account.
    bob.send("<message type='error' id='e2'><body>err</body></message>");
    let seen = bob.ping("p1");
    assert!(!seen.contains("<message"), "an error was answered: {seen}");

    // Nothing of that waits for alice: only the chat sent after it.
    bob.send(&chat("alice@localhost", "m1", "marker"));
    bob.ping("p2");
    let mut alice = login(&srv, "alice", "a", None);
    alice.send("<presence/>");
    let got = until_message(&mut alice, "marker</body>");
    assert!(
        !got.contains("type=\"error\""),
        "an error message was stored: {got}"
    );
    assert_eq!(got.matches("<message").count(), 1, "{got}");
}
