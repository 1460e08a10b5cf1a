//! XEP-0352 client state indication: while inactive, presence updates, chat states and PEP
//! notifications are held back and coalesced; a message with a body goes out at once, after
//! what was held.

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

/// XEP-0115 §5.1 `ver` of a client with identity `client/pc//{name}` and `features`.
fn caps_ver(name: &str, features: &mut [String]) -> String {
    use base64::Engine;
    use sha1::Digest;
    features.sort();
    let mut s = format!("client/pc//{name}<");
    for f in features.iter() {
        s.push_str(f);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

/// The value of attribute `name` on the last `<tag …>` in `s`.
fn last_attr(s: &str, tag: &str, name: &str) -> String {
    let open = s.rfind(&format!("<{tag} ")).unwrap();
    let head = &s[open..open + s[open..].find('>').unwrap()];
    let key = format!(" {name}=\"");
    let at = head
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {head}"))
        + key.len();
    head[at..at + head[at..].find('"').unwrap()].to_owned()
}

/// Everything the server has sent `c` so far (kept in its buffer too).
fn read_available(c: &mut Raw) -> String {
    use std::io::Read;
    let mut chunk = [0u8; 65536];
    loop {
        match c.sock.read(&mut chunk) {
            Ok(0) => panic!("connection closed"),
            Ok(n) => c.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return c.buf.clone();
            }
            Err(e) => panic!("read error: {e}"),
        }
    }
}

/// Publishes `payload` as item `item` of the account's own PEP node `node`.
fn publish(c: &mut Raw, id: &str, node: &str, item: &str, payload: &str) {
    c.send(&format!(
        "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='{node}'><item id='{item}'>{payload}</item></publish></pubsub></iq>"
    ));
    let got = c.until(&format!("id=\"{id}\""));
    assert!(got[got.rfind("<iq").unwrap()..].contains("result"), "{got}");
}

#[test]
fn inactive_client_gets_pep_notifications_held_and_coalesced() {
    const NICK: &str = "http://jabber.org/protocol/nick";
    const AVATAR: &str = "urn:xmpp:avatar:metadata";
    const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut phone = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    // Caps wanting notifications of the three nodes; the server asks what they mean.
    let mut features: Vec<String> = vec![
        "http://jabber.org/protocol/caps".into(),
        "http://jabber.org/protocol/disco#info".into(),
    ];
    for n in [NICK, AVATAR, BOOKMARKS] {
        features.push(n.into());
        features.push(format!("{n}+notify"));
    }
    let ver = caps_ver("phone", &mut features);
    let node = "https://wockd.org/test-client";
    phone.send(&format!(
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{node}' ver='{ver}'/></presence>"
    ));
    let query = phone.until("http://jabber.org/protocol/disco#info");
    let (id, from) = (
        last_attr(&query, "iq", "id"),
        last_attr(&query, "iq", "from"),
    );
    let vars: String = features
        .iter()
        .map(|f| format!("<feature var='{f}'/>"))
        .collect();
    phone.send(&format!(
        "<iq type='result' id='{id}' to='{from}'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}#{ver}'>\
         <identity category='client' type='pc' name='phone'/>{vars}</query></iq>"
    ));
    phone.send("<iq type='get' id='ready'><ping xmlns='urn:xmpp:ping'/></iq>");
    phone.until("id=\"ready\"");
    phone.send("<inactive xmlns='urn:xmpp:csi:0'/>");

    // Another device of the account publishes: the nickname three times and the avatar
    // twice (single-item nodes: only the latest matters), two bookmarks (one item each:
    // both matter).
    let mut desk = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    for n in 1..=3 {
        publish(
            &mut desk,
            &format!("nick{n}"),
            NICK,
            "current",
            &format!("<nick xmlns='{NICK}'>Alice {n}</nick>"),
        );
    }
    for h in ["h1", "h2"] {
        publish(
            &mut desk,
            h,
            AVATAR,
            h,
            &format!(
                "<metadata xmlns='{AVATAR}'><info id='{h}' bytes='1' type='image/png'/></metadata>"
            ),
        );
    }
    for room in ["r1", "r2"] {
        publish(
            &mut desk,
            room,
            BOOKMARKS,
            &format!("{room}@muc.localhost"),
            &format!("<conference xmlns='{BOOKMARKS}' autojoin='true'/>"),
        );
    }
    // A message with a body is important: it goes out at once, after what was held.
    desk.send("<message to='alice@localhost/phone' type='chat'><body>wake up</body></message>");
    let got = phone.until("<body>wake up</body>");
    let events = |node: &str| got.matches(&format!("<items node=\"{node}\"")).count();
    assert_eq!(events(NICK), 1, "nickname not coalesced: {got}");
    assert!(
        got.contains("Alice 3</nick>"),
        "the latest nickname must win: {got}"
    );
    assert_eq!(events(AVATAR), 1, "avatar not coalesced: {got}");
    assert!(
        got.contains("id=\"h2\"") && !got.contains("id=\"h1\""),
        "{got}"
    );
    assert_eq!(events(BOOKMARKS), 2, "bookmarks lost: {got}");
    assert!(
        got.find("r1@muc.localhost").unwrap() < got.find("r2@muc.localhost").unwrap(),
        "{got}"
    );
    assert!(got.rfind("pubsub#event").unwrap() < got.find("wake up").unwrap());

    phone.until("</message>");

    // Still inactive: a new notification waits again (the server sent everything due with
    // the publish result, so the phone's socket shows nothing), and goes out when the client
    // is active.
    publish(
        &mut desk,
        "nick4",
        NICK,
        "current",
        &format!("<nick xmlns='{NICK}'>Alice 4</nick>"),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let early = read_available(&mut phone);
    assert!(!early.contains("Alice 4"), "sent while inactive: {early}");
    phone.send("<active xmlns='urn:xmpp:csi:0'/>");
    let got = phone.until("Alice 4</nick>");
    assert!(got.contains(&format!("<items node=\"{NICK}\"")), "{got}");
}
