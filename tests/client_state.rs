//! XEP-0352 client state indication: while inactive, presence updates and chat states are held
//! back and coalesced; a message with a body goes out at once, after what was held.

mod common;

use common::{Raw, TestServer};

#[test]
fn inactive_client_gets_coalesced_presence_and_immediate_messages() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    let mut b = Raw::login_plain(srv.trusted, "bob", "pw", "pc");
    a.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    for show in ["away", "xa", "dnd"] {
        b.send(&format!(
            "<presence to='alice@localhost/phone'><show>{show}</show></presence>"
        ));
    }
    b.send("<message to='alice@localhost/phone' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
    // Order check: the server handles bob's stanzas in order; a ping round trip proves they
    // were all processed before the important message is sent.
    b.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>");
    b.until("id=\"sync\"");
    b.send("<message to='alice@localhost/phone' type='chat'><body>wake up</body></message>");
    let got = a.until("<body>wake up</body>");
    assert_eq!(
        got.matches("<presence").count(),
        1,
        "presence not coalesced: {got}"
    );
    assert!(
        got.contains("<show>dnd</show>"),
        "the latest presence must win: {got}"
    );
    let (typing, body) = (got.find("composing").unwrap(), got.find("wake up").unwrap());
    assert!(typing < body, "order lost: {got}");

    // Active again: held stanzas are released at once.
    b.send("<presence to='alice@localhost/phone'><show>chat</show></presence>");
    b.send("<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>");
    b.until("id=\"sync2\"");
    a.send("<active xmlns='urn:xmpp:csi:0'/>");
    assert!(a.until("</presence>").contains("<show>chat</show>"));
}
