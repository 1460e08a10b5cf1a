//! Authentication under hostile use (issue 10, point 6): brute force over XEP-0078 is cut off
//! like SASL; plaintext-password key derivation runs on worker threads while the server keeps
//! serving; a password change kills FAST tokens and the account's other sessions; FAST tokens
//! are not stored in a form that proves them; a deleted account leaves nothing a new account
//! of the same name could inherit (hibernating sessions, roster, vCard, private XML).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{DOMAIN, HEADER, Raw, TestServer, attr};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SM: &str = "urn:xmpp:sm:3";
const UA: &str =
    "<user-agent id='0b8f2e3c-2f51-4b4c-9d36-5d7a0c3c1e11'><software>test</software></user-agent>";

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn legacy_auth(user: &str, password: &str, id: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:auth'><username>{user}</username>\
         <password>{password}</password><resource>r</resource></query></iq>"
    )
}

#[test]
fn iq_auth_brute_force_is_cut_off_after_the_failure_limit() {
    let srv = TestServer::start_with(|c| c.auth.max_failures = 3, |_| {});
    srv.add_user("alice", "right");

    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    // Five guesses in one write: the stream must end after the third.
    let guesses: String = (1..=5)
        .map(|i| legacy_auth("alice", &format!("guess{i}"), &format!("g{i}")))
        .collect();
    c.send(&guesses);
    let all = c.until_closed();
    for i in 1..=3 {
        let at = all
            .find(&format!("id=\"g{i}\""))
            .unwrap_or_else(|| panic!("no answer to guess {i}: {all}"));
        assert!(all[at..].contains("not-acceptable"), "{all}");
    }
    assert!(
        !all.contains("id=\"g4\"") && !all.contains("id=\"g5\""),
        "guesses after the limit were answered: {all}"
    );
    assert!(
        all.contains("<policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\""),
        "{all}"
    );

    // Unknown users count the same.
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    let guesses: String = (1..=3)
        .map(|i| legacy_auth(&format!("nobody{i}"), "x", &format!("u{i}")))
        .collect();
    c.send(&guesses);
    assert!(c.until_closed().contains("<policy-violation"));

    // The failure count is per stream: a right login on a new connection works, and the
    // stanza sent right behind the credentials is handled after them, as authenticated.
    let mut ok = Raw::connect(srv.trusted);
    ok.send(HEADER);
    ok.until("</stream:features>");
    ok.send(&format!(
        "{}<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>",
        legacy_auth("alice", "right", "login")
    ));
    // Had the ping been handled before the verdict, it would have been refused (not
    // authenticated yet).
    let got = ok.until("id=\"after\"");
    assert!(
        got.contains("id=\"login\"") && !got.contains("error"),
        "{got}"
    );
}

#[test]
fn sasl_failures_and_iq_auth_failures_share_one_budget() {
    let srv = TestServer::start_with(|c| c.auth.max_failures = 2, |_| {});
    srv.add_user("alice", "right");
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    let creds = B64.encode("\0alice\0wrong");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ));
    assert!(c.until("</failure>").contains("not-authorized"));
    c.send(&legacy_auth("alice", "wrong", "g1"));
    let all = c.until_closed();
    assert!(
        all.contains("not-acceptable") && all.contains("<policy-violation"),
        "{all}"
    );
}

/// Names of this process's threads (the test servers run in it).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_login_storm_is_served_by_workers_while_routing_goes_on() {
    let srv = TestServer::start();
    srv.add_user("watcher", "pw");
    const N: usize = 12;
    for i in 0..N {
        srv.add_user(&format!("user{i}"), "pw");
    }
    let mut watcher = Raw::login_plain(srv.trusted, "watcher", "pw", "w");
    assert!(
        thread_names().iter().any(|n| n.starts_with("wockd-kdf")),
        "PLAIN login did not go through the key derivation pool: {:?}",
        thread_names()
    );

    // N PLAIN logins (one of them wrong) in flight at once, and a ping from a logged-in client.
    let mut storm: Vec<Raw> = (0..N)
        .map(|_| {
            let mut c = Raw::connect(srv.trusted);
            c.send(HEADER);
            c.until("</stream:features>");
            c
        })
        .collect();
    for (i, c) in storm.iter_mut().enumerate() {
        let password = if i == 0 { "wrong" } else { "pw" };
        let creds = B64.encode(format!("\0user{i}\0{password}"));
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ));
    }
    let pong = watcher.ping("during-storm");
    assert!(pong.contains("type=\"result\""), "{pong}");
    for (i, c) in storm.iter_mut().enumerate() {
        let answer = c.until("/>");
        if i == 0 {
            assert!(answer.contains("<failure"), "user{i}: {answer}");
        } else {
            assert!(answer.contains("<success"), "user{i}: {answer}");
        }
    }
}

/// SASL2 PLAIN login asking for a FAST token; returns the stream and the token.
fn sasl2_with_token(srv: &TestServer, user: &str, password: &str) -> (Raw, String) {
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    let creds = B64.encode(format!("\0{user}\0{password}"));
    c.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{creds}</initial-response>{UA}\
         <bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>"
    ));
    let success = c.until("</success>");
    (c, attr(&success, "token"))
}

fn fast_login(srv: &TestServer, user: &str, token: &str) -> String {
    let mut data = format!("{user}\0").into_bytes();
    data.extend_from_slice(&hmac(token.as_bytes(), b"Initiator"));
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    c.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>{}</initial-response>{UA}</authenticate>",
        B64.encode(data)
    ));
    let answer = c.until("</");
    format!("{answer}{}", c.until(">"))
}

#[test]
fn fast_tokens_are_stored_hashed_and_die_with_a_password_change() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let (_phone, token) = sasl2_with_token(&srv, "alice", "pw");

    // What the database holds proves nothing: neither the token, nor the proof the client
    // sends (HMAC(token, "Initiator")), nor the server's answer (HMAC(token, "Responder")).
    {
        let store = wockd::store::Store::open(&srv.dir.join("wockd.sqlite")).unwrap();
        let mut stmt = store.conn().prepare("SELECT * FROM fast_tokens").unwrap();
        let columns = stmt.column_count();
        let rows: Vec<Vec<Vec<u8>>> = stmt
            .query_map([], |r| {
                (0..columns)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                            rusqlite::types::ValueRef::Text(t) => t.to_vec(),
                            _ => Vec::new(),
                        })
                    })
                    .collect()
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 1);
        let secrets = [
            token.as_bytes().to_vec(),
            hmac(token.as_bytes(), b"Initiator"),
            hmac(token.as_bytes(), b"Responder"),
        ];
        for value in &rows[0] {
            for secret in &secrets {
                assert!(
                    !value.windows(secret.len()).any(|w| w == secret.as_slice()),
                    "a token secret is stored as is"
                );
            }
        }
    }
    // The token works (and rotates: the "new" slot becomes "current")…
    let first = fast_login(&srv, "alice", &token);
    assert!(first.contains("<success"), "{first}");

    // …until the password changes: then it is dead, and the account's other sessions end.
    let mut desk = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    let mut changer = Raw::login_plain(srv.trusted, "alice", "pw", "changer");
    changer.send(
        "<iq type='set' id='pw'><query xmlns='jabber:iq:register'>\
         <username>alice</username><password>new pw</password></query></iq>",
    );
    assert!(changer.until("id=\"pw\"").contains("type=\"result\""));
    let rest = desk.until_closed();
    assert!(
        rest.contains("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"")
            && rest.contains("password was changed"),
        "{rest}"
    );
    // The session that changed it stays.
    assert!(changer.ping("still").contains("type=\"result\""));
    let after = fast_login(&srv, "alice", &token);
    assert!(
        after.contains("<failure") && after.contains("not-authorized"),
        "{after}"
    );
}

/// Logs in, enables resumable stream management, and returns the client and resumption id.
fn login_sm(srv: &TestServer, user: &str, password: &str, res: &str) -> (Raw, String) {
    Raw::login_sm(srv.trusted, user, password, res, 300)
}

fn register(srv: &TestServer, user: &str, password: &str) {
    let mut c = Raw::connect(srv.trusted);
    c.send(HEADER);
    c.until("</stream:features>");
    c.send(&format!(
        "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username>\
         <password>{password}</password></query></iq>"
    ));
    let answer = c.until("id=\"reg\"");
    let answer = format!("{answer}{}", c.until(">"));
    assert!(answer.contains("type=\"result\""), "{answer}");
}

#[test]
fn a_deleted_account_leaves_nothing_to_a_new_one_of_the_same_name() {
    let srv = TestServer::start_with(|c| c.auth.registration = true, |_| {});
    register(&srv, "alice", "old");
    srv.add_user("bob", "pw");

    // Alice keeps things: a roster item, a vCard, private XML, and a phone session that
    // hibernates (its TCP connection dies with stream management resumable).
    let (mut phone, sm_id) = login_sm(&srv, "alice", "old", "phone");
    for (id, payload) in [
        (
            "roster",
            "<query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'/></query>",
        ),
        (
            "vcard",
            "<vCard xmlns='vcard-temp'><FN>Old Alice</FN></vCard>",
        ),
        (
            "private",
            "<query xmlns='jabber:iq:private'><secret xmlns='x:secret'>kept</secret></query>",
        ),
    ] {
        phone.send(&format!("<iq type='set' id='{id}'>{payload}</iq>"));
        let answer = phone.until(&format!("id=\"{id}\""));
        assert!(answer.contains("type=\"result\""), "{id}: {answer}");
    }
    drop(phone);

    // The desk deletes the account. Its ping round trip first: the phone's EOF is on the
    // server's socket before the ping is written, so it is handled no later than the ping and
    // the phone session is hibernating when the removal arrives.
    let mut desk = Raw::login_plain(srv.trusted, "alice", "old", "desk");
    desk.ping("barrier");
    desk.send("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    assert!(desk.until("id=\"rm\"").contains("type=\"result\""));
    desk.until_closed();

    // A new account with the same name…
    register(&srv, "alice", "new");
    let mut fresh = Raw::connect(srv.trusted);
    fresh.send(HEADER);
    fresh.until("</stream:features>");
    let creds = B64.encode("\0alice\0new");
    fresh.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    ));
    fresh.until("<success");
    fresh.send(HEADER);
    fresh.until("</stream:features>");
    // …cannot resume the old account's session…
    fresh.send(&format!("<resume xmlns='{SM}' previd='{sm_id}' h='0'/>"));
    let resumed = fresh.until("/>");
    assert!(
        resumed.contains("<failed") && !resumed.contains("<resumed"),
        "the old session was resumed: {resumed}"
    );
    // …and starts empty.
    fresh.send(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>",
    );
    fresh.until("id=\"bind\"");
    fresh.until("</iq>");
    for (id, payload, leftover) in [
        ("r", "<query xmlns='jabber:iq:roster'/>", "bob@localhost"),
        ("v", "<vCard xmlns='vcard-temp'/>", "Old Alice"),
        (
            "p",
            "<query xmlns='jabber:iq:private'><secret xmlns='x:secret'/></query>",
            "kept",
        ),
    ] {
        fresh.send(&format!("<iq type='get' id='{id}'>{payload}</iq>"));
        let head = fresh.until(&format!("id=\"{id}\""));
        let answer = format!("{head}{}", fresh.ping(&format!("after-{id}")));
        assert!(
            !answer.contains(leftover),
            "{id}: the new account sees the old one's data: {answer}"
        );
    }
    // The account's bare JID is the new one for others too.
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    let vcard = {
        bob.send(&format!(
            "<iq type='get' id='bv' to='alice@{DOMAIN}'><vCard xmlns='vcard-temp'/></iq>"
        ));
        let head = bob.until("id=\"bv\"");
        format!("{head}{}", bob.ping("bb"))
    };
    assert!(!vcard.contains("Old Alice"), "{vcard}");
}

#[test]
fn unknown_users_cost_a_key_derivation_too() {
    use std::time::{Duration, Instant};
    use wockd::auth::kdf::verify_job;
    // The same job for an unknown user (dummy verifier) at a cheap and at a costly iteration
    // count: the costly one must take clearly longer, i.e. PBKDF2 really runs for unknown users
    // with the configured count. The best of three runs damps scheduling noise.
    let best = |iterations: u32| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                assert!(!verify_job(None, iterations, "guess".into())());
                t.elapsed()
            })
            .min()
            .unwrap_or(Duration::ZERO)
    };
    let cheap = best(1);
    let costly = best(20_000);
    assert!(
        costly > cheap * 20,
        "unknown user: 1 iteration {cheap:?}, 20000 iterations {costly:?}"
    );
}

/// The command line (`wockd passwd`, `wockd deluser`) writes the database from another
/// process; the test does the same through the store API from another connection.
#[test]
fn command_line_password_change_and_deletion_reach_the_running_server() {
    use wockd::auth::scram::{Hash, new_keys};
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let (_phone, token) = sasl2_with_token(&srv, "alice", "pw");
    let mut desk = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    let store = wockd::store::Store::open(&srv.dir.join("wockd.sqlite")).unwrap();

    // `wockd passwd`: the sessions end within the server's next housekeeping round, and the
    // FAST token is gone with the old password.
    let keys = |pw: &str| {
        vec![
            (Hash::Sha1, new_keys(Hash::Sha1, pw, 4096).unwrap()),
            (Hash::Sha256, new_keys(Hash::Sha256, pw, 4096).unwrap()),
        ]
    };
    store.set_keys("alice", DOMAIN, &keys("new")).unwrap();
    let rest = desk.until_closed();
    assert!(rest.contains("password was changed"), "{rest}");
    let after = fast_login(&srv, "alice", &token);
    assert!(after.contains("<failure"), "{after}");

    // `wockd deluser` while a session hibernates: it ends for good.
    let (phone, sm_id) = login_sm(&srv, "alice", "new", "phone");
    drop(phone);
    let mut desk = Raw::login_plain(srv.trusted, "alice", "new", "desk");
    desk.ping("barrier");
    store.delete_account("alice", DOMAIN).unwrap();
    let rest = desk.until_closed();
    assert!(rest.contains("account was deleted"), "{rest}");
    srv.add_user("alice", "again");
    let mut fresh = Raw::connect(srv.trusted);
    fresh.send(HEADER);
    fresh.until("</stream:features>");
    fresh.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        B64.encode("\0alice\0again")
    ));
    fresh.until("<success");
    fresh.send(HEADER);
    fresh.until("</stream:features>");
    fresh.send(&format!("<resume xmlns='{SM}' previd='{sm_id}' h='0'/>"));
    let resumed = fresh.until("/>");
    assert!(resumed.contains("<failed"), "{resumed}");
}
