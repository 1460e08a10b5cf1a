//! The mailbox on every device: message carbons (XEP-0280) both directions, the message
//! archive (XEP-0313) with paging through 1,000 messages, offline messages appearing in the
//! archive exactly once, a message delivered live to one device found by the others, the
//! query filters (`with`, `start`/`end`, `before-id`/`after-id`), paging backwards, and the
//! archive preferences.

mod common;

use std::time::Duration;

use common::{Raw, TestServer, attr};

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

/// The value of attribute `name` on the first `<tag …>` in `s`.
fn tag_attr(s: &str, tag: &str, name: &str) -> Option<String> {
    let open = s.find(&format!("<{tag} "))?;
    let head = &s[open..open + s[open..].find('>')?];
    let key = format!(" {name}=\"");
    let at = head.find(&key)? + key.len();
    Some(head[at..at + head[at..].find('"')?].to_owned())
}

/// One archived message as a query returns it.
#[derive(Debug)]
struct Archived {
    /// The archive's (XEP-0359) id.
    id: String,
    /// The XEP-0203 stamp of when it was archived.
    stamp: String,
    body: String,
}

/// A page of results and the `<iq><fin/></iq>` that ends it.
struct Page {
    results: Vec<Archived>,
    fin: String,
}

impl Page {
    fn bodies(&self) -> Vec<&str> {
        self.results.iter().map(|r| r.body.as_str()).collect()
    }

    fn complete(&self) -> bool {
        self.fin.contains("complete=\"true\"")
    }
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

fn query_iq(id: &str, fields: &str, rsm: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='urn:xmpp:mam:2' queryid='{id}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x>\
         {rsm}</query></iq>"
    )
}

/// Runs a query (form `fields`, RSM `rsm`) and returns its page.
fn mam(c: &mut Raw, id: &str, fields: &str, rsm: &str) -> Page {
    c.send(&query_iq(id, fields, rsm));
    let reply = c.until("</fin></iq>");
    let (messages, fin) = reply.split_at(reply.rfind("<iq").unwrap());
    assert!(
        fin.contains(&format!("id=\"{id}\"")) && fin.contains("type=\"result\""),
        "{reply}"
    );
    let mut results = Vec::new();
    for part in messages.split("<result ").skip(1) {
        let part = format!("<result {part}");
        assert_eq!(
            tag_attr(&part, "result", "queryid").as_deref(),
            Some(id),
            "{part}"
        );
        results.push(Archived {
            id: tag_attr(&part, "result", "id").unwrap(),
            stamp: tag_attr(&part, "delay", "stamp").unwrap(),
            body: between(&part, "<body>", "</body>").to_owned(),
        });
    }
    Page {
        results,
        fin: fin.to_owned(),
    }
}

/// Runs a query that must fail; returns the error reply.
fn mam_error(c: &mut Raw, id: &str, fields: &str, rsm: &str) -> String {
    c.send(&query_iq(id, fields, rsm));
    let reply = c.until("</iq>");
    assert!(reply.contains("type=\"error\""), "{reply}");
    reply
}

fn rsm(inner: &str) -> String {
    format!("<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>")
}

#[test]
fn archive_filters_by_time_and_by_id_and_pages_backwards() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    // Three batches, apart in time (the archive's stamps have milliseconds): a0..a3, b0..b3,
    // c0..c3, all to alice's mailbox (she is offline).
    for (n, batch) in ["a", "b", "c"].iter().enumerate() {
        if n > 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        for i in 0..4 {
            bob.send(&format!(
                "<message type='chat' to='alice@localhost'><body>{batch}{i}</body></message>"
            ));
        }
        bob.ping(&format!("s{batch}"));
    }
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "a");
    let all = mam(&mut a, "all", "", "");
    let expected: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|b| (0..4).map(move |i| format!("{b}{i}")))
        .collect();
    assert_eq!(all.bodies(), expected);
    assert!(all.complete(), "{}", all.fin);
    let r = &all.results;
    let bodies = |p: &Page| p.bodies().iter().map(|b| b.to_string()).collect::<Vec<_>>();

    // start and end are inclusive, to the precision of the stamps the archive hands out.
    let mid = mam(
        &mut a,
        "mid",
        &(field("start", &r[4].stamp) + &field("end", &r[7].stamp)),
        "",
    );
    assert_eq!(bodies(&mid), expected[4..8], "{:?} {:?}", mid.results, r);
    assert!(mid.complete());
    let late = mam(&mut a, "late", &field("start", &r[8].stamp), "");
    assert_eq!(bodies(&late), expected[8..]);
    let early = mam(&mut a, "early", &field("end", &r[3].stamp), "");
    assert_eq!(bodies(&early), expected[..4]);
    // A zone offset is understood (XEP-0082): 02:00 at +02:00 is midnight UTC.
    let offset = mam(
        &mut a,
        "offset",
        &field("start", "1970-01-01T02:00:00+02:00"),
        "",
    );
    assert_eq!(offset.results.len(), 12);
    // Nothing in the range: an empty, complete page.
    let future = mam(
        &mut a,
        "future",
        &field("start", "2999-01-01T00:00:00Z"),
        "",
    );
    assert!(
        future.results.is_empty() && future.complete(),
        "{}",
        future.fin
    );
    assert!(!future.fin.contains("<first>"), "{}", future.fin);
    assert!(
        mam_error(&mut a, "badtime", &field("start", "last tuesday"), "").contains("bad-request")
    );

    // after-id and before-id are exclusive.
    let between_ids = mam(
        &mut a,
        "ids",
        &(field("after-id", &r[3].id) + &field("before-id", &r[8].id)),
        "",
    );
    assert_eq!(bodies(&between_ids), expected[4..8]);
    // Combined with `with` and a page size: the first two of the window, more to come.
    let window = mam(
        &mut a,
        "window",
        &(field("with", "bob@localhost") + &field("after-id", &r[3].id)),
        &rsm("<max>2</max>"),
    );
    assert_eq!(bodies(&window), expected[4..6]);
    assert!(!window.complete(), "{}", window.fin);
    assert!(
        mam_error(&mut a, "badid", &field("after-id", "no-such-id"), "").contains("item-not-found")
    );
    assert!(
        mam_error(&mut a, "badid2", &field("before-id", "no-such-id"), "")
            .contains("item-not-found")
    );

    // Paging backwards, 5 at a time: <before/> is the last page, then <before>first</before>
    // the one before it, down to a complete page holding the oldest message.
    let mut pages = Vec::new();
    let mut before = String::new();
    loop {
        let page = mam(
            &mut a,
            &format!("back{}", pages.len()),
            "",
            &rsm(&format!("<max>5</max><before>{before}</before>")),
        );
        assert!(!page.results.is_empty());
        let first = between(&page.fin, "<first>", "</first>").to_owned();
        let last = between(&page.fin, "<last>", "</last>").to_owned();
        assert_eq!(first, page.results[0].id);
        assert_eq!(last, page.results.last().unwrap().id);
        before = first;
        let done = page.complete();
        pages.push(bodies(&page));
        if done {
            break;
        }
        assert!(pages.len() < 5, "paging does not end: {pages:?}");
    }
    assert_eq!(
        pages,
        [
            expected[7..].to_vec(),
            expected[2..7].to_vec(),
            expected[..2].to_vec()
        ]
    );
    // Backwards inside a window: before-id closes it, RSM pages back from its end.
    let tail = mam(
        &mut a,
        "tail",
        &field("before-id", &r[8].id),
        &rsm("<max>3</max><before/>"),
    );
    assert_eq!(bodies(&tail), expected[5..8]);
    assert!(!tail.complete());
    let prev = mam(
        &mut a,
        "prev",
        &field("before-id", &r[8].id),
        &rsm(&format!("<max>3</max><before>{}</before>", r[5].id)),
    );
    assert_eq!(bodies(&prev), expected[2..5]);
}

#[test]
fn message_delivered_live_to_one_device_is_in_the_archive_once() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut phone = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    phone.send("<presence/>");
    phone.ping("p1");
    // The desk is connected but not available: bare-JID messages go to the phone only.
    let mut desk = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    bob.send("<message type='chat' to='alice@localhost' id='m1'><body>live hello</body></message>");
    let live = phone.until("</message>");
    assert!(live.contains("<body>live hello</body>"), "{live}");
    assert_eq!(
        tag_attr(&live, "stanza-id", "by").as_deref(),
        Some("alice@localhost"),
        "{live}"
    );
    let sid = tag_attr(&live, "stanza-id", "id").unwrap();
    desk.ping("d1");
    assert!(!desk.buf.contains("live hello"), "{}", desk.buf);

    // Every device finds it in the archive, once, with the id it was delivered with.
    for (c, id) in [(&mut desk, "qd"), (&mut phone, "qp")] {
        let page = mam(c, id, &field("with", "bob@localhost"), "");
        assert_eq!(page.bodies(), ["live hello"], "{:?}", page.results);
        assert_eq!(page.results[0].id, sid);
    }
    // It was delivered, so it is not an offline message: the desk becoming available does
    // not get it again.
    desk.send("<presence/>");
    desk.ping("d2");
    let after = std::mem::take(&mut desk.buf);
    assert!(!after.contains("live hello"), "{after}");
}

/// Waits for the answer to IQ `id` and checks that it is a result.
fn assert_result(c: &mut Raw, id: &str) {
    let got = c.until(&format!("id=\"{id}\""));
    let head = &got[got.rfind("<iq").unwrap()..];
    assert!(head.contains("type=\"result\""), "{got}");
}

fn prefs_iq(c: &mut Raw, id: &str, iq: &str) -> String {
    c.send(iq);
    c.until(&format!("id=\"{id}\""));
    c.until("</iq>")
}

#[test]
fn archive_preferences_round_trip_and_decide_what_outgoing_messages_are_kept() {
    let srv = TestServer::start();
    for u in ["alice", "bob", "carol", "dave", "erin"] {
        srv.add_user(u, "pw");
    }
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "desk");
    // Nothing set: archive everything.
    let got = prefs_iq(
        &mut a,
        "p0",
        "<iq type='get' id='p0'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(
        got.contains("default=\"always\"") && !got.contains("<jid>"),
        "{got}"
    );

    // Set: JIDs are normalised and kept once; the answer is what is stored.
    let set = prefs_iq(
        &mut a,
        "p1",
        "<iq type='set' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='roster'>\
         <always><jid>carol@localhost</jid></always>\
         <never><jid>Bob@LOCALHOST</jid><jid>bob@localhost</jid></never></prefs></iq>",
    );
    let stored = "default=\"roster\"><always><jid>carol@localhost</jid></always>\
                  <never><jid>bob@localhost</jid></never></prefs>";
    assert!(set.contains(stored), "{set}");
    let got = prefs_iq(
        &mut a,
        "p2",
        "<iq type='get' id='p2'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(got.contains(stored), "{got}");
    // Refused sets change nothing.
    let bad = prefs_iq(
        &mut a,
        "p3",
        "<iq type='set' id='p3'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>",
    );
    assert!(bad.contains("bad-request"), "{bad}");
    let bad = prefs_iq(
        &mut a,
        "p4",
        "<iq type='set' id='p4'><prefs xmlns='urn:xmpp:mam:2' default='never'>\
         <always><jid>@@</jid></always></prefs></iq>",
    );
    assert!(bad.contains("jid-malformed"), "{bad}");
    let got = prefs_iq(
        &mut a,
        "p5",
        "<iq type='get' id='p5'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
    );
    assert!(got.contains(stored), "{got}");

    // Erin is in alice's roster; dave is not; carol is not either, but always archived.
    a.send("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='erin@localhost'/></query></iq>");
    assert_result(&mut a, "r1");
    for who in ["bob", "carol", "dave", "erin"] {
        a.send(&format!(
            "<message type='chat' to='{who}@localhost'><body>to {who}</body></message>"
        ));
    }
    let page = mam(&mut a, "out", "", "");
    assert_eq!(page.bodies(), ["to carol", "to erin"], "{:?}", page.results);

    // Messages stored while alice has no available resource are kept whatever the
    // preferences say (offline delivery goes through the mailbox), bob's included.
    let mut bob = Raw::login_plain(srv.trusted, "bob", "pw", "b");
    bob.send("<message type='chat' to='alice@localhost'><body>while away</body></message>");
    bob.ping("b1");
    a.send("<presence/>");
    assert!(a.until("</message>").contains("<body>while away</body>"));
    let page = mam(&mut a, "in", &field("with", "bob@localhost"), "");
    assert_eq!(page.bodies(), ["while away"], "{:?}", page.results);
}

#[test]
fn never_and_roster_preferences_stop_archiving_of_live_incoming_messages() {
    let srv = TestServer::start();
    for u in ["alice", "bob", "carol", "dave"] {
        srv.add_user(u, "pw");
    }
    let mut a = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    prefs_iq(
        &mut a,
        "p1",
        "<iq type='set' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='roster'>\
         <always/><never><jid>bob@localhost</jid></never></prefs></iq>",
    );
    // Bob is in the roster too: the never list wins over the roster default.
    for who in ["bob", "carol"] {
        a.send(&format!(
            "<iq type='set' id='r-{who}'><query xmlns='jabber:iq:roster'><item jid='{who}@localhost'/></query></iq>"
        ));
        assert_result(&mut a, &format!("r-{who}"));
    }
    a.send("<presence/>");
    a.ping("s1");

    // Live to the bare JID (deliver_to_bare) and to the full JID (deliver_to_full).
    let mut senders = Vec::new();
    for who in ["bob", "carol", "dave"] {
        let mut c = Raw::login_plain(srv.trusted, who, "pw", "x");
        for to in ["alice@localhost", "alice@localhost/phone"] {
            c.send(&format!(
                "<message type='chat' to='{to}'><body>{who} to {to}</body></message>"
            ));
            let got = a.until("</message>");
            assert!(
                got.contains(&format!("<body>{who} to {to}</body>")),
                "{got}"
            );
            // XEP-0359: a stanza id of alice's archive only on what the archive keeps.
            assert_eq!(
                got.contains("<stanza-id"),
                who == "carol",
                "{who} to {to}: {got}"
            );
        }
        senders.push(c);
    }
    let page = mam(&mut a, "q", "", "");
    assert_eq!(
        page.bodies(),
        ["carol to alice@localhost", "carol to alice@localhost/phone"],
        "{:?}",
        page.results
    );
}
