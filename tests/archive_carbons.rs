//! The mailbox on every device: message carbons (XEP-0280) both directions, the message
//! archive (XEP-0313) with paging through 1,000 messages, and offline messages appearing in the
//! archive exactly once.

mod common;

use common::{Raw, TestServer};

fn attr(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + name.len()
        + 2;
    text[start..].split('"').next().unwrap().to_owned()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let s = text
        .find(open)
        .unwrap_or_else(|| panic!("{open} not in {text}"))
        + open.len();
    &text[s..s + text[s..].find(close).unwrap()]
}

#[test]
fn carbons_both_directions_and_private_opt_out() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut phone = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    let mut desk = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    bob.send("<presence/>");
    for (c, id) in [(&mut phone, "c1"), (&mut desk, "c2")] {
        c.send(&format!(
            "<iq type='set' id='{id}'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
        ));
        assert!(c.until(&format!("id=\"{id}\"")).contains("result"));
        c.send("<presence/>");
    }
    // Received: bob writes to the phone's full JID; the desk gets a <received/> copy.
    bob.send("<message type='chat' to='alice@localhost/phone'><body>to the phone</body></message>");
    assert!(phone.until("</message>").contains("to the phone"));
    let copy = desk.until("</received>").to_owned();
    assert!(
        copy.contains("<received xmlns=\"urn:xmpp:carbons:2\">") && copy.contains("to the phone"),
        "{copy}"
    );
    assert!(copy.contains("from=\"alice@localhost\""), "{copy}");

    // Sent: the desk writes to bob; the phone gets a <sent/> copy; bob gets the message once.
    desk.send("<message type='chat' to='bob@localhost'><body>from the desk</body></message>");
    let sent = phone.until("</sent>");
    assert!(
        sent.contains("<sent xmlns=\"urn:xmpp:carbons:2\">") && sent.contains("from the desk"),
        "{sent}"
    );
    assert!(bob.until("</message>").contains("from the desk"));

    // <private/> opts out; the next eligible message shows nothing leaked before it.
    desk.send("<message type='chat' to='bob@localhost'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>");
    desk.send("<message type='chat' to='bob@localhost'><body>public</body></message>");
    let next = phone.until("</sent>");
    assert!(
        !next.contains("secret") && next.contains("public"),
        "{next}"
    );
}

#[test]
fn archive_pages_through_1000_messages_and_holds_offline_ones_once() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    // Alice is offline: these go to her mailbox.
    for i in 0..1000 {
        bob.send(&format!(
            "<message type='chat' to='alice@localhost'><body>n{i}</body></message>"
        ));
    }
    bob.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>");
    bob.until("id=\"sync\"");

    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    // Page forwards 100 at a time: 1,000 messages, in order, each once.
    let mut after = String::new();
    let mut seen = 0;
    let mut page = 0;
    loop {
        let set = if after.is_empty() {
            "<set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set>".to_owned()
        } else {
            format!(
                "<set xmlns='http://jabber.org/protocol/rsm'><max>100</max><after>{after}</after></set>"
            )
        };
        a.send(&format!(
            "<iq type='set' id='q{page}'><query xmlns='urn:xmpp:mam:2' queryid='f{page}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>bob@localhost</value></field></x>{set}</query></iq>"
        ));
        let reply = a.until("</fin></iq>");
        let results = reply.matches(&format!("queryid=\"f{page}\"")).count();
        for i in seen..seen + results {
            assert_eq!(
                reply.matches(&format!("<body>n{i}</body>")).count(),
                1,
                "n{i} on page {page}"
            );
        }
        seen += results;
        after = between(&reply, "<last>", "</last>").to_owned();
        page += 1;
        if reply.contains("complete=\"true\"") {
            break;
        }
        assert!(page < 20, "paging does not end");
    }
    assert_eq!(seen, 1000);

    // Backwards: <before/> gives the last page; flip-page reverses it.
    a.send("<iq type='set' id='last'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before/></set></query></iq>");
    let last = a.until("</fin></iq>");
    let (p7, p9) = (last.find("n997").unwrap(), last.find("n999").unwrap());
    assert!(p7 < p9, "{last}");
    a.send("<iq type='set' id='flip'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before/></set><flip-page/></query></iq>");
    let flipped = a.until("</fin></iq>");
    assert!(
        flipped.find("n999").unwrap() < flipped.find("n997").unwrap(),
        "{flipped}"
    );

    // An unknown id is item-not-found.
    a.send("<iq type='set' id='bad'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>nope</after></set></query></iq>");
    assert!(a.until("</iq>").contains("item-not-found"));

    // Offline delivery uses the same ids as the archive: n0 arrives with the stanza id its
    // archive result carries.
    a.send("<presence/>");
    let first = a.until("<body>n0</body>");
    let rest = a.until("</message>");
    let sid = attr(&rest, "id");
    a.send("<iq type='set' id='one'><query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></query></iq>");
    let one = a.until("</fin></iq>");
    assert!(
        one.contains(&format!("id=\"{sid}\"")),
        "archive and offline ids differ: {first}{rest} vs {one}"
    );
}
