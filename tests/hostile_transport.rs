//! Hostile input through the IM transport (issue 10), against a loopback ngircd:
//!
//! * XEP-0106 names with a backslash before a multi-byte character (`\aé@irc.localhost`, which
//!   used to abort the server) to contact JIDs, rooms and the gateway prompt: the server stays
//!   up, and another user still logs in and exchanges a message.
//! * IRC colours, bold, bells… from an IRC peer: the user and the archive get clean text.
//! * Control characters in registration and settings fields: refused, and ngircd never sees
//!   the injected line.
//! * The public-address rule: a service without `allow_private_addresses` refuses servers at
//!   loopback addresses (numeric, IPv4-mapped, by name), at registration and — for accounts
//!   already stored — at connect time (numeric in `login`, names in the DNS ui-op); a listener
//!   at that address sees no connection.
//!
//! libpurple can be initialised once per process, so everything runs in one test function.

mod common;
mod transport_support;

use std::net::TcpListener;

use common::{DOMAIN, Raw, TestServer};
use transport_support::*;

/// Allows private addresses (ngircd is on 127.0.0.1).
const SVC: &str = "irc.localhost";
/// The same network with the public-address rule on.
const PUB: &str = "ircpub.localhost";

/// The IQ reply with `id`, whole (with what came before it in the buffer).
fn iq_reply(c: &mut Raw, id: &str) -> String {
    let mut r = c.until(&format!("id=\"{id}\""));
    r.push_str(&c.until(">"));
    if !r.ends_with("/>") {
        r.push_str(&c.until("</iq>"));
    }
    r
}

fn register(c: &mut Raw, svc: &str, id: &str, fields: &[(&str, &str)]) -> String {
    c.send(&register_form(svc, id, fields));
    iq_reply(c, id)
}

/// The characters of `s` that XML 1.0 cannot carry, raw or as character references.
fn invalid_xml(s: &str) -> Vec<String> {
    let mut bad: Vec<String> = s
        .chars()
        .filter(|c| {
            (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r' | '\x7f'))
                || matches!(c, '\u{FFFE}' | '\u{FFFF}')
        })
        .map(|c| format!("U+{:04X}", c as u32))
        .collect();
    for r in [
        "&#2;", "&#3;", "&#7;", "&#x2;", "&#x3;", "&#x7;", "&#xFFFF;",
    ] {
        if s.contains(r) {
            bad.push(r.to_owned());
        }
    }
    bad
}

#[test]
fn hostile_input_through_the_transport() {
    let Some(bin) = require("ngircd") else { return };
    let (_ircd, port) = ngircd(&bin);

    // Listeners where the refused registrations point: they must see no connection.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    let trap6 = TcpListener::bind(("::1", trap_port)).ok();
    trap.set_nonblocking(true).unwrap();
    if let Some(t) = &trap6 {
        t.set_nonblocking(true).unwrap();
    }

    // Accounts stored before the rule existed (or before the admin turned it on): they must
    // not connect either. `localhost` goes through the DNS ui-op, `127.1` through libpurple's
    // own numeric parse.
    let dir = tempfile::tempdir().unwrap();
    {
        let cfg = common::test_config(dir.path());
        std::fs::create_dir_all(dir.path()).unwrap();
        let store = wockd::store::Store::open(&cfg.database_path()).unwrap();
        use wockd::auth::scram::{Hash, new_keys};
        let keys = vec![(Hash::Sha256, new_keys(Hash::Sha256, "pw", 4096).unwrap())];
        store.create_account("olduser", DOMAIN, &keys).unwrap();
        for host in ["localhost", "127.1"] {
            store
                .save_legacy_account(
                    ("olduser", DOMAIN),
                    PUB,
                    "prpl-irc",
                    &format!("old@{host}"),
                    None,
                    &[
                        ("port".into(), trap_port.to_string()),
                        ("ssl".into(), "0".into()),
                    ],
                )
                .unwrap();
        }
    }

    let srv = TestServer::start_in(
        dir.path(),
        |c| {
            c.transport.enabled = true;
            let mut open = irc_service(SVC);
            open.allow_private_addresses = Some(true);
            c.transport.services = vec![open, irc_service(PUB)];
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    srv.add_user("bob", "pw");
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "laptop");
    c.send("<presence/>");

    // ---- XEP-0106 names that used to abort the process -------------------------------------
    let nasty = [
        "\\aé",
        "\\é",
        "a\\é",
        "x\\5",
        "\\5",
        "é\\",
        "\\2",
        "\\5é",
        "\\a\u{1F600}",
    ];
    let probe = |c: &mut Raw, round: &str| {
        for (i, n) in nasty.iter().enumerate() {
            c.send(&format!(
                "<message to='{n}@{SVC}' type='chat' id='{round}m{i}'><body>hi</body></message>"
            ));
            c.send(&format!(
                "<presence to='#{n}@{SVC}/me' id='{round}p{i}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
            ));
            c.send(&format!(
                "<iq type='get' id='{round}v{i}' to='{n}@{SVC}'><vCard xmlns='vcard-temp'/></iq>"
            ));
            c.send(&format!(
                "<iq type='set' id='{round}g{i}' to='{SVC}'><query xmlns='jabber:iq:gateway'><prompt>{n}</prompt></query></iq>"
            ));
            iq_reply(c, &format!("{round}g{i}"));
        }
        // Still answering.
        c.send(&format!(
            "<iq type='get' id='{round}ping' to='{SVC}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let pong = iq_reply(c, &format!("{round}ping"));
        assert!(pong.contains("type=\"result\""), "{pong}");
    };
    probe(&mut c, "a");

    // Register on the open service: now the names reach the account's contacts and rooms.
    let reg = register(
        &mut c,
        SVC,
        "reg1",
        &[
            ("username", "alicebot"),
            ("split:0", "127.0.0.1"),
            ("opt:port", &port.to_string()),
            ("opt:ssl", "0"),
        ],
    );
    assert!(reg.contains("type=\"result\""), "{reg}");
    until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    probe(&mut c, "b");

    // ---- IRC formatting and controls from a peer -------------------------------------------
    let mut carol = Irc::connect(port, "carol");
    carol.send(
        "PRIVMSG alicebot :\x02bold\x02 \x0304,01red\x03 \x0399dim\x03 \x07bell \x1ditalic\x1d \x1funder\x1f \x1estrike\x1e \x11mono\x11 \x16rev\x16 \x04FF00FFhex\x04 \x0freset end",
    );
    let got = until_all(&mut c, &["reset end", "</message>"]);
    let clean = "bold red dim bell italic under strike mono rev hex reset end";
    assert!(got.contains(&format!("<body>{clean}</body>")), "{got:?}");
    assert!(
        invalid_xml(&got).is_empty(),
        "{:?} in {got:?}",
        invalid_xml(&got)
    );

    // A topic with colours, as the room subject.
    carol.send("JOIN #hostile");
    carol.expect(" 366 ");
    carol.send("TOPIC #hostile :\x0304,01coloured\x03 \x07topic\x02!");
    carol.expect("TOPIC");
    c.send("<presence to='#hostile@irc.localhost/alicebot'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    // The join sends the subject known so far; the topic (IRC 332) may come just after it, as a
    // subject change: wait for the one with the topic.
    let joined = until_all(&mut c, &["code=\"110\"", "topic!</subject>"]);
    assert!(
        joined.contains("<subject>coloured topic!</subject>"),
        "{joined:?}"
    );
    assert!(invalid_xml(&joined).is_empty(), "{joined:?}");
    carol.expect("JOIN");
    carol.send("PRIVMSG #hostile :\x0312blue\x03 \x07in the room");
    let gc = until_all(&mut c, &["in the room", "</message>"]);
    assert!(gc.contains("<body>blue in the room</body>"), "{gc:?}");
    assert!(invalid_xml(&gc).is_empty(), "{gc:?}");

    // The archive holds the clean text.
    c.send(
        "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2' queryid='q1'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>carol@irc.localhost</value></field></x></query></iq>",
    );
    let page = iq_reply(&mut c, "mam1");
    assert!(page.contains(&format!("<body>{clean}</body>")), "{page:?}");
    assert!(invalid_xml(&page).is_empty(), "{page:?}");

    // ---- Control characters in forms ---------------------------------------------------------
    for (id, fields, label) in [
        (
            "cc1",
            vec![
                ("username", "evil&#13;&#10;QUIT :injected"),
                ("split:0", "127.0.0.1"),
            ],
            "Username",
        ),
        (
            "cc2",
            vec![("username", "evil"), ("split:0", "127.0.0.1&#10;QUIT")],
            "Server",
        ),
        (
            "cc3",
            vec![
                ("username", "evil"),
                ("split:0", "127.0.0.1"),
                ("opt:realname", "x&#13;&#10;QUIT :injected"),
            ],
            "Real name",
        ),
    ] {
        let mut f = fields.clone();
        let p = port.to_string();
        f.push(("opt:port", &p));
        f.push(("opt:ssl", "0"));
        let r = register(&mut c, SVC, id, &f);
        assert!(
            r.contains("type=\"error\"") && r.contains("not-acceptable"),
            "{id}: {r}"
        );
        assert!(
            r.contains(label) && r.contains("control character"),
            "{id}: {r}"
        );
    }
    // The settings command refuses them too.
    c.send(&format!(
        "<iq type='set' id='set1' to='{SVC}'><command xmlns='http://jabber.org/protocol/commands' node='settings'>\
         <x xmlns='jabber:x:data' type='submit'><field var='account'><value>1</value></field>\
         <field var='opt:quitmsg'><value>bye&#13;&#10;PRIVMSG carol :injected</value></field></x></command></iq>"
    ));
    let s = iq_reply(&mut c, "set1");
    assert!(
        s.contains("not-acceptable") && s.contains("control character"),
        "{s}"
    );
    // ngircd never saw an `evil` client nor an injected line.
    carol.send("WHOIS evil");
    let w = carol.expect(" 401 ");
    assert!(w.contains("evil"), "{w}");
    carol.send("PING :sync");
    let mut seen = String::new();
    loop {
        let l = carol.expect("");
        if l.contains("PONG") && l.contains("sync") {
            break;
        }
        seen.push_str(&l);
    }
    assert!(!seen.contains("injected"), "{seen}");

    // ---- The public-address rule --------------------------------------------------------------
    for (id, host, why) in [
        ("pa1", "127.0.0.1".to_owned(), "not a public address"),
        ("pa2", "::ffff:127.0.0.1".to_owned(), "not a public address"),
        ("pa3", "127.1".to_owned(), "not a public address"),
        ("pa4", "localhost".to_owned(), "resolves to"),
        (
            "pa5",
            format!("127.0.0.1:{trap_port}"),
            "not a public address",
        ),
    ] {
        let r = register(
            &mut c,
            PUB,
            id,
            &[
                ("username", "alicebot"),
                ("split:0", &host),
                ("opt:port", &trap_port.to_string()),
                ("opt:ssl", "0"),
            ],
        );
        assert!(
            r.contains("type=\"error\"") && r.contains("not-acceptable") && r.contains(why),
            "{host}: {r}"
        );
    }
    // Nothing was registered there.
    c.send(&format!(
        "<iq type='set' id='acc1' to='{PUB}'><command xmlns='http://jabber.org/protocol/commands' node='accounts'/></iq>"
    ));
    let a = iq_reply(&mut c, "acc1");
    assert!(a.contains("No accounts"), "{a}");

    // The stored accounts were refused at connect time, and their owner is told why.
    let mut old = Raw::login_plain(srv.trusted, "olduser", "pw", "desk");
    old.send("<presence/>");
    let told = until_all(
        &mut old,
        &[
            "old@127.1: cannot connect: 127.1 is 127.0.0.1, not a public address",
            "old@localhost",
            "localhost resolves to",
        ],
    );
    assert!(invalid_xml(&told).is_empty(), "{told:?}");
    for t in std::iter::once(&trap).chain(trap6.as_ref()) {
        match t.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("something connected to the trap listener: {other:?}"),
        }
    }

    // ---- The server is still fine: another user logs in and exchanges a message -------------
    let mut b = Raw::login_plain(srv.trusted, "bob", "pw", "phone");
    b.send("<presence/>");
    b.send(
        "<message to='alice@localhost' type='chat' id='bm1'><body>still there?</body></message>",
    );
    until_all(&mut c, &["still there?"]);
    c.send("<message to='bob@localhost' type='chat' id='am1'><body>yes</body></message>");
    until_all(&mut b, &["<body>yes</body>"]);
}
