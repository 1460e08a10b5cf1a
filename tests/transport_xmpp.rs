//! XMPP as a foreign network (issue 4): a loopback Prosody reached through prpl-jabber.
//! Roster import with names and groups, presence both ways, messages both ways, and a legacy
//! account with a wrong password (one clear error, no retry storm).
//!
//! libpurple can be initialised once per process, so everything runs in one test function.

mod common;
mod transport_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Raw, TestServer};
use transport_support::*;
use wockd::config::TransportService;

const SVC: &str = "xmpp.localhost";
const BOB: &str = "bob\\40localhost@xmpp.localhost";

fn register(c: &mut Raw, id: &str, user: &str, pw: &str) {
    c.send(&register_form(
        SVC,
        id,
        &[
            ("username", user),
            ("split:0", "localhost"),
            ("split:1", "wockd"),
            ("password", pw),
        ],
    ));
    let r = until_all(c, &[&format!("id=\"{id}\"")]);
    assert!(r.contains("type=\"result\""), "registration failed: {r}");
}

#[test]
fn xmpp_through_the_transport() {
    if require("prosody").is_none() {
        return;
    }
    let (_prosody, port) = prosody(&[
        ("alice", "pw-alice"),
        ("bob", "pw-bob"),
        ("carol", "pw-carol"),
        ("dave", "pw-dave"),
        ("erin", "pw-erin"),
    ]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // On Prosody: alice has bob as "Bobby" in "Friends", mutually subscribed.
    let mut bob = Raw::login_plain(addr, "bob", "pw-bob", "desk");
    let mut alice = Raw::login_plain(addr, "alice", "pw-alice", "setup");
    alice.send("<iq type='set' id='rs'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bobby'><group>Friends</group></item></query></iq>");
    until_all(&mut alice, &["id='rs'"]);
    bob.send("<iq type='set' id='rs'><query xmlns='jabber:iq:roster'><item jid='alice@localhost'/></query></iq>");
    until_all(&mut bob, &["id='rs'"]);
    // Prosody pushes roster changes to sessions that fetched the roster: the pushes tell
    // when each step of the subscription handshake is done.
    for (c, id) in [(&mut alice, "rg"), (&mut bob, "rg")] {
        c.send(&format!(
            "<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>"
        ));
        until_all(c, &[&format!("id='{id}'")]);
    }
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    until_all(&mut alice, &["ask='subscribe'"]);
    until_all(&mut bob, &["ask='subscribe'"]);
    alice.send("<presence to='bob@localhost' type='subscribed'/>");
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    until_all(&mut alice, &["subscription='both'"]);
    until_all(&mut bob, &["subscription='both'"]);
    alice.send("</stream:stream>");
    drop(alice);
    bob.send("<presence><status>at my desk</status></presence>");
    drain(&mut bob, Duration::from_millis(300));

    let srv = TestServer::start_with(
        move |c| {
            c.transport.enabled = true;
            c.transport.services = vec![TransportService {
                domain: SVC.into(),
                prpl: "prpl-jabber".into(),
                name: None,
                defaults: BTreeMap::from([
                    ("connect_server".into(), "127.0.0.1".into()),
                    ("port".into(), port.to_string()),
                    ("connection_security".into(), "opportunistic_tls".into()),
                    ("auth_plain_in_clear".into(), "1".into()),
                ]),
                // Prosody listens on 127.0.0.1: this service may connect to private addresses.
                allow_private_addresses: Some(true),
            }];
        },
        |_| {},
    );
    srv.add_user("wuser", "pw");
    let mut c = Raw::login_plain(srv.trusted, "wuser", "pw", "laptop");
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    c.until("</iq>");
    c.send("<presence/>");

    c.send(&format!("<iq type='get' id='d1' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = until_all(&mut c, &["id=\"d1\""]);
    assert!(
        info.contains("category=\"gateway\"") && info.contains("type=\"xmpp\""),
        "{info}"
    );

    register(&mut c, "reg1", "alice", "pw-alice");
    // Roster import: bob with his name and group; his presence follows.
    let got = until_all(
        &mut c,
        &[
            "alice@localhost/wockd: online",
            &format!("jid=\"{BOB}\""),
            "name=\"Bobby\"",
            "<group>Friends</group>",
            "at my desk",
        ],
    );
    assert!(
        got.contains(&format!("from=\"{BOB}\"")),
        "bob's presence missing: {got}"
    );

    // The user's presence reaches the legacy network.
    c.send(&format!(
        "<presence to='{SVC}'><show>away</show><status>lunch</status></presence>"
    ));
    let p = bob.until("lunch");
    assert!(
        p.contains("alice@localhost/wockd") && p.contains("<show>away</show>"),
        "{p}"
    );

    // Messages both ways.
    bob.send(
        "<message to='alice@localhost' type='chat' id='m1'><body>hi from prosody</body></message>",
    );
    let m = until_all(&mut c, &["hi from prosody"]);
    assert!(
        m.contains(&format!("from=\"{BOB}\"")) && m.contains("type=\"chat\""),
        "{m}"
    );
    c.send(&format!(
        "<message to='{BOB}' type='chat' id='m2'><body>hi from wockd &lt;3</body></message>"
    ));
    let m = bob.until("</message>");
    assert!(
        m.contains("alice@localhost/wockd") && m.contains("hi from wockd &lt;3"),
        "{m}"
    );

    // Chat states (XEP-0085) both ways, through libpurple's typing notifications.
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    let t = until_all(&mut c, &["<composing"]);
    assert!(t.contains(&format!("from=\"{BOB}\"")), "{t}");
    c.send(&format!(
        "<message to='{BOB}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ));
    let t = bob.until("</message>");
    assert!(t.contains("<composing"), "{t}");

    // Avatars: bob's picture on Prosody (vCard + XEP-0153 hash in his presence) is fetched by
    // prpl-jabber and reaches the user as the contact's hash in presence and vCard PHOTO.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let png = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(PNG)
            .unwrap()
    };
    let hash: String = {
        use sha1::Digest as _;
        sha1::Sha1::digest(&png)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    bob.send(&format!("<iq type='set' id='vc'><vCard xmlns='vcard-temp'><FN>Bob B.</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG}</BINVAL></PHOTO></vCard></iq>"));
    // Prosody orders attributes at random: read the whole start tag.
    let r = bob.until("id='vc'") + &bob.until(">");
    assert!(r.contains("type='result'"), "{r}");
    bob.send(&format!("<presence><status>with a face</status><x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x></presence>"));
    let pr = until_all(&mut c, &[&format!("<photo>{hash}</photo>")]);
    assert!(pr.contains(&format!("from=\"{BOB}\"")), "{pr}");
    c.send(&format!(
        "<iq type='get' id='vc1' to='{BOB}'><vCard xmlns='vcard-temp'/></iq>"
    ));
    let vc = until_all(&mut c, &["id=\"vc1\"", "</iq>"]);
    assert!(
        vc.contains(&format!("<BINVAL>{PNG}</BINVAL>")) && vc.contains("<TYPE>image/png</TYPE>"),
        "{vc}"
    );
    assert!(
        vc.contains("<FN>Bobby</FN>"),
        "the roster name is the display name: {vc}"
    );

    // XHTML-IM both ways: prpl-jabber passes the markup on.
    c.send(&format!(
        "<message to='{BOB}' type='chat' id='m3'><body>so strong</body><html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>so <strong>strong</strong></body></html></message>"
    ));
    let m = bob.until("</message>");
    assert!(
        m.contains("http://jabber.org/protocol/xhtml-im") && m.contains("bold;'>strong</span>"),
        "{m}"
    );
    bob.send("<message to='alice@localhost' type='chat' id='m4'><body>bold move</body><html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><em>bold</em> move</body></html></message>");
    let m = until_all(&mut c, &["bold move", "</html>"]);
    assert!(
        m.contains("<html xmlns=\"http://jabber.org/protocol/xhtml-im\">") && m.contains("bold</"),
        "{m}"
    );

    // Removing the contact from the wockd roster removes the legacy buddy: Prosody tells bob
    // that alice unsubscribed.
    c.send(&format!(
        "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='{BOB}' subscription='remove'/></query></iq>"
    ));
    until_all(&mut c, &["id=\"rm\""]);
    let u = bob.until("type='unsubscribe'");
    assert!(u.contains("from='alice@localhost"), "{u}");

    // A legacy authorisation request becomes a subscription request; approving it answers
    // the legacy contact.
    let mut dave = Raw::login_plain(addr, "dave", "pw-dave", "desk");
    dave.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>");
    until_all(&mut dave, &["id='rg'"]);
    dave.send("<presence/>");
    dave.send("<presence to='alice@localhost' type='subscribe'/>");
    const DAVE: &str = "dave\\40localhost@xmpp.localhost";
    let sub = until_all(&mut c, &[&format!("from=\"{DAVE}\""), "type=\"subscribe\""]);
    assert!(sub.contains("<presence"), "{sub}");
    c.send(&format!("<presence to='{DAVE}' type='subscribed'/>"));
    let ok = dave.until("type='subscribed'") + &dave.until(">");
    assert!(ok.contains("from='alice@localhost"), "{ok}");

    // Subscribing to a contact JID adds the legacy buddy: Prosody asks erin.
    let mut erin = Raw::login_plain(addr, "erin", "pw-erin", "desk");
    erin.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>");
    until_all(&mut erin, &["id='rg'"]);
    erin.send("<presence/>");
    const ERIN: &str = "erin\\40localhost@xmpp.localhost";
    c.send(&format!("<presence to='{ERIN}' type='subscribe'/>"));
    let push = until_all(&mut c, &[&format!("jid=\"{ERIN}\"")]);
    assert!(push.contains("jabber:iq:roster"), "no roster push: {push}");
    let ask = erin.until("type='subscribe'") + &erin.until(">");
    assert!(ask.contains("from='alice@localhost"), "{ask}");

    // Wrong password: a clear error, said once, no retries.
    register(&mut c, "reg2", "carol", "not-her-password");
    let e = until_all(&mut c, &["carol@localhost/wockd: cannot connect"]);
    assert!(e.contains("Not retrying"), "{e}");
    let later = drain(&mut c, Duration::from_secs(6));
    assert!(
        !later.contains("carol@localhost/wockd: cannot connect"),
        "told twice: {later}"
    );
    assert!(
        !later.contains("carol@localhost/wockd: connecting"),
        "retried: {later}"
    );
}
