//! XEP-0388 SASL2 + XEP-0386 Bind 2 + XEP-0484 FAST: a phone logs in, binds and enables stream
//! management in one round trip and gets a token; after its TCP connection dies it comes back
//! with the token and resumes its session, again in one round trip.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{HEADER, Raw, TestServer, attr};
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn ht_proof(user: &str, token: &str) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes()).unwrap();
    m.update(b"Initiator");
    let mut data = format!("{user}\0").into_bytes();
    data.extend_from_slice(&m.finalize().into_bytes());
    B64.encode(data)
}

const UA: &str = "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>test</software><device>phone</device></user-agent>";

#[test]
fn sasl2_bind2_fast_login_and_resume() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");

    // First login: password, Bind 2 with inline SM, and a FAST token request.
    let mut phone = Raw::connect(srv.trusted);
    phone.send(HEADER);
    let features = phone.until("</stream:features>");
    assert!(
        features.contains("urn:xmpp:sasl:2") && features.contains("HT-SHA-256-NONE"),
        "{features}"
    );
    let creds = B64.encode("\0alice\0pw");
    phone.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{creds}</initial-response>{UA}\
         <bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:sm:3'/></bind>\
         <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>"
    ));
    let success = phone.until("</success>");
    assert!(
        success.contains("<authorization-identifier>alice@localhost/Phone."),
        "{success}"
    );
    assert!(
        success.contains("<enabled") && success.contains("resume=\"true\""),
        "{success}"
    );
    let sm_id = attr(&success, "id");
    let token = attr(&success, "token");
    // No stream restart: the session works at once.
    phone.send("<presence/>");
    let full = success
        .split("<authorization-identifier>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();

    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    bob.send(&format!(
        "<message to='{full}' type='chat'><body>while you were away</body></message>"
    ));
    phone.until("while you were away");
    drop(phone); // the phone loses its connection without acknowledging

    // A wrong token is refused.
    let mut bad = Raw::connect(srv.trusted);
    bad.send(HEADER);
    bad.until("</stream:features>");
    bad.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>{}</initial-response>{UA}</authenticate>",
        ht_proof("alice", "not-the-token")
    ));
    assert!(bad.until("</failure>").contains("not-authorized"));

    // Reconnect: FAST token + inline resumption, one round trip; the unacknowledged message
    // comes again, and a rotated token is handed out.
    let mut again = Raw::connect(srv.trusted);
    again.send(HEADER);
    again.until("</stream:features>");
    again.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='HT-SHA-256-NONE'><initial-response>{}</initial-response>{UA}\
         <resume xmlns='urn:xmpp:sm:3' previd='{sm_id}' h='0'/><fast xmlns='urn:xmpp:fast:0'/></authenticate>",
        ht_proof("alice", &token)
    ));
    let success = again.until("</success>");
    assert!(
        success.contains("<resumed")
            && success.contains(&format!("<authorization-identifier>{full}<")),
        "{success}"
    );
    let new_token = attr(&success, "token");
    assert_ne!(new_token, token);
    assert!(again.until("</message>").contains("while you were away"));
    bob.send(&format!(
        "<message to='{full}' type='chat'><body>welcome back</body></message>"
    ));
    assert!(again.until("</message>").contains("welcome back"));
}

/// Bind 2 with carbons enabled inline (XEP-0386 §4): the new session gets <received/> copies
/// at once, without a separate carbons IQ.
#[test]
fn bind2_enables_carbons_inline() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut desk = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    desk.send("<presence/>");

    let mut phone = Raw::connect(srv.trusted);
    phone.send(HEADER);
    let features = phone.until("</stream:features>");
    assert!(
        features.contains("var=\"urn:xmpp:carbons:2\"")
            && features.contains("var=\"urn:xmpp:csi:0\""),
        "{features}"
    );
    let creds = B64.encode("\0alice\0pw");
    phone.send(&format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{creds}</initial-response>{UA}\
         <bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag><enable xmlns='urn:xmpp:carbons:2'/></bind></authenticate>"
    ));
    phone.until("</success>");
    phone.send("<presence/>");
    desk.until("from=\"alice@localhost/Phone.");

    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    bob.send("<message to='alice@localhost/desk' type='chat'><body>for the desk</body></message>");
    let copy = phone.until("</message>");
    assert!(
        copy.contains("<received xmlns=\"urn:xmpp:carbons:2\"") && copy.contains("for the desk"),
        "{copy}"
    );
}
