//! The seed's protocol example, replayed byte for byte from the client side over a raw socket,
//! with the server's replies compared structurally (parsed by minidom, a parser nobody here
//! wrote) with the replies the seed shows. The torrent `add` of the seed is answered by a rule
//! that defers its answer until a worker thread replies over async-channel — the pattern the
//! torrent service uses.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Raw, TestServer};
use wockd::core::stanza::{Condition, ErrorType};
use wockd::iq::Incoming;

const CLIENT: &[&str] = &[
    "<stream:stream\n  xmlns=\"jabber:client\"\n  xmlns:stream=\"http://etherx.jabber.org/streams\"\n  to=\"jabber.wockd.org\">",
    "\n<iq id=\"0\" type=\"get\">\n  <query xmlns=\"jabber:iq:auth\"/>\n</iq>",
    "\n<iq id=\"1\" type=\"set\">\n  <query xmlns=\"jabber:iq:auth\">\n    <username>bander</username>\n    <password>****</password>\n    <resource>snatch</resource>\n  </query>\n</iq>",
    "\n<iq id=\"2\" type=\"set\">\n  <query xmlns=\"jabber:iq:auth\">\n    <username>bander</username>\n    <password>*****</password>\n    <resource>snatch</resource>\n  </query>\n</iq>",
    "\n<iq id=\"3\" type=\"set\">\n  <add xmlns=\"http://wockd.org/ns/torrent\">\n    http://torrent.ubuntu.com:6969/file?info_hash=...\n  </add>\n</iq>",
    "\n</stream:stream>",
];

/// The server side of the seed (its features line is missing a `>` in the original).
const SERVER: &str = r#"<stream:stream
  xmlns="jabber:client"
  xmlns:stream="http://etherx.jabber.org/streams"
  from="jabber.wockd.org">
<stream:features>
  <auth xmlns="http://jabber.org/features/iq-auth"/>
</stream:features>
<iq id="0" type="result">
  <query xmlns="jabber:iq:auth">
    <username/>
    <password/>
    <resource/>
  </query>
</iq>
<iq id="2" type="result"/>
<iq id="3" type="result"/>
</stream:stream>"#;

const SERVER_ERROR: &str = r#"<iq xmlns="jabber:client" id="1" type="error">
  <error type="modify">
    <not-acceptable
      xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/>
  </error>
</iq>"#;

/// Attributes as "ns|name" → value.
fn attrs(e: &minidom::Element) -> BTreeMap<String, String> {
    e.attrs()
        .iter()
        .map(|((ns, name), v)| (format!("{}|{}", &**ns, name.as_str()), v.clone()))
        .collect()
}

/// Same name, namespace, attributes (the stream header may add `id`, `version`, `xml:lang`),
/// same element children in order, same trimmed text.
fn assert_same(expected: &minidom::Element, actual: &minidom::Element, header: bool) {
    assert_eq!(
        (expected.name(), expected.ns()),
        (actual.name(), actual.ns()),
        "element differs"
    );
    let (want, mut got) = (attrs(expected), attrs(actual));
    if header {
        got.retain(|k, _| {
            ![
                "|id",
                "|version",
                "http://www.w3.org/XML/1998/namespace|lang",
            ]
            .contains(&k.as_str())
        });
    }
    assert_eq!(want, got, "attributes of <{}> differ", expected.name());
    if !header {
        let text = |e: &minidom::Element| {
            e.texts()
                .map(|t| t.to_owned())
                .collect::<String>()
                .trim()
                .to_owned()
        };
        assert_eq!(
            text(expected),
            text(actual),
            "text of <{}> differs",
            expected.name()
        );
        let (a, b): (Vec<_>, Vec<_>) = (expected.children().collect(), actual.children().collect());
        assert_eq!(
            a.len(),
            b.len(),
            "children of <{}> differ: {actual:?}",
            expected.name()
        );
        for (x, y) in a.iter().zip(b) {
            assert_same(x, y, false);
        }
    }
}

/// The deferred path: the handler returns at once; a worker thread answers over async-channel
/// and a future on the main context sends the reply.
fn install_deferred_add(s: &mut wockd::core::Module) {
    s.iqs()
        .rule("http://wockd.org/ns/torrent", "add")
        .set(|iq: Incoming| {
            let url = iq.payload.text_content().trim().to_owned();
            let (tx, rx) = async_channel::bounded::<Result<(), String>>(1);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let verdict = if url.starts_with("http") {
                    Ok(())
                } else {
                    Err(format!("not a URL: {url}"))
                };
                let _ = tx.send_blocking(verdict);
            });
            wockd::net::source::spawn_local(async move {
                match rx.recv().await {
                    Ok(Ok(())) => iq.result(None),
                    Ok(Err(e)) => iq.error(ErrorType::Modify, Condition::BadRequest, &e),
                    // The worker vanished: dropping `iq` sends internal-server-error.
                    Err(_) => drop(iq),
                }
            });
        });
}

#[test]
fn seed_protocol_example_replayed() {
    let srv = TestServer::start_with(
        |c| c.domains = vec!["jabber.wockd.org".into()],
        install_deferred_add,
    );
    let store = wockd::store::Store::open(&srv.dir.join("wockd.sqlite")).unwrap();
    use wockd::auth::scram::{Hash, new_keys};
    let keys = vec![
        (Hash::Sha1, new_keys(Hash::Sha1, "*****", 4096).unwrap()),
        (Hash::Sha256, new_keys(Hash::Sha256, "*****", 4096).unwrap()),
    ];
    store
        .create_account("bander", "jabber.wockd.org", &keys)
        .unwrap();

    let mut c = Raw::connect(srv.trusted);
    let mut got = String::new();
    c.send(CLIENT[0]);
    got += &c.until("</stream:features>");
    c.send(CLIENT[1]);
    got += &c.until("</iq>");
    c.send(CLIENT[2]);
    let error = c.until("</iq>");
    c.send(CLIENT[3]);
    got += &c.until("/>");
    c.send(CLIENT[4]);
    got += &c.until("/>");
    c.send(CLIENT[5]);
    got += &c.until_closed();
    assert!(
        got.trim_end().ends_with("</stream:stream>"),
        "graceful close expected: {got}"
    );

    // Drop the XML declaration; minidom parses the rest as one document.
    let got = got.trim_start_matches("<?xml version='1.0'?>");
    let actual: minidom::Element = got.parse().unwrap_or_else(|e| panic!("{e}: {got}"));
    let expected: minidom::Element = SERVER.parse().unwrap();
    assert_same(&expected, &actual, true);
    let children: Vec<_> = actual.children().collect();
    let want: Vec<_> = expected.children().collect();
    assert_eq!(children.len(), want.len(), "{actual:?}");
    for (w, a) in want.iter().zip(children) {
        assert_same(w, a, false);
    }
    let error: minidom::Element = error
        .replace("<iq ", "<iq xmlns='jabber:client' ")
        .parse()
        .unwrap();
    assert_same(&SERVER_ERROR.parse().unwrap(), &error, false);
}

#[test]
fn deferred_answer_reports_worker_errors() {
    let srv = TestServer::start_with(|_| {}, install_deferred_add);
    srv.add_user("alice", "pw");
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "r");
    c.send("<iq id='a' type='set'><add xmlns='http://wockd.org/ns/torrent'>ftp-nope</add></iq>");
    let reply = c.until("</iq>");
    assert!(
        reply.contains("type=\"error\"") && reply.contains("bad-request"),
        "{reply}"
    );
    assert!(reply.contains("not a URL: ftp-nope"), "{reply}");
    // A second client keeps working while the first waits on a worker.
    c.send("<iq id='b' type='set'><add xmlns='http://wockd.org/ns/torrent'>http://x/y.torrent</add></iq>");
    let mut d = Raw::login_plain(srv.trusted, "alice", "pw", "other");
    d.send("<iq id='p' type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(d.until("id=\"p\"/>").contains("type=\"result\""));
    let reply = c.until("id=\"b\"/>");
    assert!(reply.contains("type=\"result\""), "{reply}");
}

#[test]
fn legacy_auth_needs_tls_on_untrusted_listener() {
    let srv = TestServer::start();
    srv.add_user("alice", "pw");
    let mut c = Raw::connect(srv.untrusted);
    c.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>");
    let features = c.until("<stream:features/>");
    assert!(!features.contains("iq-auth"), "{features}");
    c.send("<iq id='1' type='set'><query xmlns='jabber:iq:auth'><username>alice</username><password>pw</password><resource>r</resource></query></iq>");
    let reply = c.until("</iq>");
    assert!(
        reply.contains("not-allowed"),
        "plaintext password accepted without TLS: {reply}"
    );
    // Missing fields → not-acceptable on a listener where iq-auth is allowed.
    let mut t = Raw::connect(srv.trusted);
    t.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>");
    t.until("</stream:features>");
    t.send("<iq id='2' type='set'><query xmlns='jabber:iq:auth'><username>alice</username></query></iq>");
    let reply = t.until("</iq>");
    assert!(
        reply.contains("not-acceptable") && reply.contains("type=\"modify\""),
        "{reply}"
    );
    // Right password: bound, and the session works (ping to the server).
    t.send("<iq id='3' type='set'><query xmlns='jabber:iq:auth'><username>alice</username><password>pw</password><resource>r</resource></query></iq>");
    assert!(t.until("id=\"3\"/>").contains("result"));
    t.send("<iq id='4' type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert!(t.until("id=\"4\"/>").contains("result"));
}
