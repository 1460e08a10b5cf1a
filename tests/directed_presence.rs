//! RFC 6121 §4.6.3 over real sockets: a session that sent directed presence to a full JID (no
//! subscription between the two accounts) makes that JID get `unavailable` when it ends, however
//! it ends: a clean `</stream:stream>`, a stream error, a lost TCP connection, or a
//! stream-management resumption window running out. Also: directed presence bookkeeping is
//! bounded per session.
//!
//! Every wait is for a specific stanza; "nothing arrived" is checked after a ping round trip on
//! the observer (the server handles a stanza completely before the next one and writes each
//! connection's output in order).

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer};

impl Client {
    /// Logged in and available (initial presence sent and reflected).
    fn online(srv: &TestServer, user: &str, resource: &str) -> Client {
        let mut c = Client::login(srv, user, resource);
        c.send("<presence/>");
        let from = format!("from=\"{}\"", c.jid);
        c.wait(|s| s.starts_with("<presence") && s.contains(&from));
        c
    }
}

fn server() -> TestServer {
    let srv = TestServer::start();
    for u in ["alice", "bob"] {
        srv.add_user(u, "pw");
    }
    srv
}

/// How alice's session ends.
enum Ending {
    /// `</stream:stream>` from the client.
    CleanClose,
    /// A stream error from the server (here: bad XML from the client).
    StreamError,
    /// The TCP connection is dropped without a closing tag.
    SocketLost,
}

/// Alice (available or not) sends directed presence to bob's full JID, with no subscription
/// either way; when her session ends, bob/b gets her unavailable presence — once.
fn directed_then(ending: Ending, alice_available: bool) {
    let srv = server();
    let mut bob = Client::online(&srv, "bob", "b");
    let mut alice = if alice_available {
        Client::online(&srv, "alice", "a")
    } else {
        Client::login(&srv, "alice", "a")
    };
    alice.send("<presence to='bob@localhost/b'><status>hi bob</status></presence>");
    bob.expect(&["from=\"alice@localhost/a\"", "hi bob"]);
    alice.barrier();
    match ending {
        Ending::CleanClose => {
            alice.send("</stream:stream>");
            let rest = alice.raw.until_closed();
            assert!(rest.contains("</stream:stream>"), "{rest}");
        }
        Ending::StreamError => {
            alice.send("<message><unclosed></message>");
            let rest = alice.raw.until_closed();
            assert!(rest.contains("<stream:error>"), "{rest}");
        }
        Ending::SocketLost => drop(alice),
    }
    let gone = bob.expect(&["from=\"alice@localhost/a\"", "type=\"unavailable\""]);
    assert!(gone.starts_with("<presence"), "{gone}");
    bob.assert_none("a second unavailable", |s| {
        s.contains("from=\"alice@localhost/a\"")
    });
}

#[test]
fn clean_close_sends_unavailable_to_a_full_jid() {
    directed_then(Ending::CleanClose, true);
}

#[test]
fn clean_close_without_initial_presence_sends_unavailable() {
    directed_then(Ending::CleanClose, false);
}

#[test]
fn stream_error_sends_unavailable_to_a_full_jid() {
    directed_then(Ending::StreamError, true);
}

#[test]
fn lost_connection_sends_unavailable_to_a_full_jid() {
    directed_then(Ending::SocketLost, true);
}

#[test]
fn lost_connection_without_initial_presence_sends_unavailable() {
    directed_then(Ending::SocketLost, false);
}

/// XEP-0198: a lost connection with resumption enabled keeps the session; only when the
/// resumption window runs out does the session end and bob get the unavailable presence.
#[test]
fn resumption_timeout_sends_unavailable_to_a_full_jid() {
    let srv = server();
    let mut bob = Client::online(&srv, "bob", "b");
    let mut alice = Client::online(&srv, "alice", "a");
    alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true' max='1'/>");
    alice.expect(&["<enabled", "resume=\"true\""]);
    alice.send("<presence to='bob@localhost/b'><status>hi bob</status></presence>");
    bob.expect(&["from=\"alice@localhost/a\"", "hi bob"]);
    alice.barrier();
    let lost = Instant::now();
    drop(alice);
    bob.expect(&["from=\"alice@localhost/a\"", "type=\"unavailable\""]);
    assert!(
        lost.elapsed() >= Duration::from_millis(900),
        "unavailable sent while the session could still be resumed"
    );
}

/// Directed unavailable presence forgets the JID: the session's end sends nothing more.
#[test]
fn directed_unavailable_is_not_repeated_at_the_end() {
    let srv = server();
    let mut bob = Client::online(&srv, "bob", "b");
    let mut alice = Client::login(&srv, "alice", "a");
    alice.send("<presence to='bob@localhost/b'/>");
    bob.expect(&["from=\"alice@localhost/a\""]);
    alice.send("<presence to='bob@localhost/b' type='unavailable'/>");
    bob.expect(&["from=\"alice@localhost/a\"", "type=\"unavailable\""]);
    alice.send("</stream:stream>");
    alice.raw.until_closed();
    bob.assert_none("a second unavailable", |s| {
        s.contains("from=\"alice@localhost/a\"")
    });
}

/// One session's directed presence is tracked for at most 1000 entities: the next directed
/// available presence is refused with resource-constraint (and not sent); a directed
/// unavailable frees a place. Bare JIDs of the local domain are tracked whether or not the
/// account exists, which makes the limit cheap to reach.
#[test]
fn directed_presence_bookkeeping_is_bounded() {
    let srv = server();
    let mut alice = Client::online(&srv, "alice", "a");
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("<presence to='nobody{i}@localhost'/>"));
    }
    alice.send(&batch);
    alice.assert_none("an error below the limit", |s| s.contains("type=\"error\""));
    alice.send("<presence to='nobody1000@localhost' id='over'/>");
    let refused = alice.expect(&["id=\"over\""]);
    assert!(
        refused.contains("type=\"error\"") && refused.contains("<resource-constraint "),
        "{refused}"
    );
    // Presence again to a JID already tracked is fine.
    alice.send("<presence to='nobody7@localhost' id='again'/>");
    alice.assert_none("an error for a tracked JID", |s| s.contains("id=\"again\""));
    // A directed unavailable frees a place.
    alice.send("<presence to='nobody3@localhost' type='unavailable'/>");
    alice.send("<presence to='nobody1000@localhost' id='fits'/>");
    alice.assert_none("an error after a place was freed", |s| {
        s.contains("id=\"fits\"")
    });
    alice.send("<presence to='nobody1001@localhost' id='over2'/>");
    let refused = alice.expect(&["id=\"over2\""]);
    assert!(refused.contains("<resource-constraint "), "{refused}");
}
