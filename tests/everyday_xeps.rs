//! Everyday XEPs over real sockets: service discovery (XEP-0030), ping both ways (XEP-0199),
//! version (XEP-0092), time (XEP-0202), last activity (XEP-0012), vcard-temp (XEP-0054) with
//! avatar hashes in presence (XEP-0153), private XML (XEP-0049), blocking (XEP-0191) and
//! in-band registration (XEP-0077).
//!
//! Every wait is for a specific stanza. "Nothing arrived" is checked after a ping round trip on
//! the sender and then on the observer: the server handles a stanza completely (including what
//! it sends to other clients) before the next one, and writes each connection's output in
//! order, so once the observer's pong is read everything sent to it before has been.

mod common;

use std::collections::BTreeSet;

use base64::Engine;
use common::{Client, DOMAIN, TestServer, assert_error, is_result, plain_ok};

impl Client {
    /// Logged in and available (initial presence sent and reflected).
    fn online(srv: &TestServer, user: &str, resource: &str) -> Client {
        let mut c = Client::login(srv, user, resource);
        c.send("<presence/>");
        c.clear();
        c
    }
}

/// Every value of attribute `name` in `s`.
fn attr_values(s: &str, name: &str) -> Vec<String> {
    let key = format!(" {name}=\"");
    s.match_indices(&key)
        .filter_map(|(i, _)| {
            let rest = &s[i + key.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
        .collect()
}

fn bare(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

// ---- XEP-0030 -------------------------------------------------------------------------------

#[test]
fn disco_info_of_the_server_lists_exactly_the_registered_features() {
    fn extras(s: &mut wockd::stream::Stream) {
        s.iqs()
            .rule("urn:example:echo", "echo")
            .get(|iq| iq.result(None));
        s.disco_feature("urn:example:extra");
    }
    let srv = TestServer::start_with(|_| {}, |m| extras(m));
    srv.add_user("alice", "pw");
    let mut want = wockd::stream::Stream::default();
    let (hooks, config) = (
        wockd::core::Hooks::default(),
        wockd::config::Config::default(),
    );
    wockd::modules::install_all(&mut wockd::core::Module::new(&mut want, &hooks, &config));
    extras(&mut want);
    let stage = want.session_stage();
    let want: BTreeSet<String> = stage
        .rules()
        .namespaces()
        .chain(stage.disco_features())
        .map(str::to_owned)
        .collect();

    let mut a = Client::login(&srv, "alice", "a");
    let info = a.iq(
        "get",
        Some(DOMAIN),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(is_result(&info), "{info}");
    assert!(
        info.contains("category=\"server\"") && info.contains("type=\"im\""),
        "{info}"
    );
    let got: BTreeSet<String> = attr_values(&info, "var").into_iter().collect();
    assert_eq!(got, want);
    for f in [
        "urn:xmpp:ping",
        "jabber:iq:version",
        "urn:xmpp:time",
        "jabber:iq:last",
        "vcard-temp",
        "jabber:iq:private",
        "urn:xmpp:blocking",
        "jabber:iq:register",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "urn:example:echo",
        "urn:example:extra",
    ] {
        assert!(got.contains(f), "{f} missing from {got:?}");
    }

    let items = a.iq(
        "get",
        Some(DOMAIN),
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    // The services at their own domains, and nothing else: here only the torrent service
    // (on in the default configuration; the IM transport is off).
    assert!(is_result(&items), "{items}");
    assert_eq!(attr_values(&items, "jid"), ["torrent.localhost"], "{items}");

    let node = a.iq(
        "get",
        Some(DOMAIN),
        "<query xmlns='http://jabber.org/protocol/disco#info' node='nope'/>",
    );
    assert_error(&node, "cancel", "item-not-found");
}

#[test]
fn disco_of_accounts_is_for_the_owner_and_subscribers() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    let query = "<query xmlns='http://jabber.org/protocol/disco#info'/>";

    let own = a.iq("get", Some(&bare("alice")), query);
    assert!(
        is_result(&own)
            && own.contains("category=\"account\"")
            && own.contains("type=\"registered\""),
        "{own}"
    );
    let unaddressed = a.iq("get", None, query);
    assert!(
        unaddressed.contains("category=\"account\""),
        "{unaddressed}"
    );

    // Not subscribed: indistinguishable from an account that does not exist.
    let other = b.iq("get", Some(&bare("alice")), query);
    assert_error(&other, "cancel", "service-unavailable");
    let missing = b.iq("get", Some(&bare("nobody")), query);
    assert_error(&missing, "cancel", "service-unavailable");

    // Bob subscribes to Alice's presence and she approves: now he may look.
    b.send(&format!(
        "<presence to='{}' type='subscribe'/>",
        bare("alice")
    ));
    a.expect(&["type=\"subscribe\""]);
    a.send(&format!(
        "<presence to='{}' type='subscribed'/>",
        bare("bob")
    ));
    b.expect(&["type=\"subscribed\""]);
    let allowed = b.iq("get", Some(&bare("alice")), query);
    assert!(
        is_result(&allowed) && allowed.contains("category=\"account\""),
        "{allowed}"
    );
    let last = b.iq(
        "get",
        Some(&bare("alice")),
        "<query xmlns='jabber:iq:last'/>",
    );
    assert!(is_result(&last) && last.contains("seconds=\"0\""), "{last}");
}

// ---- XEP-0199, XEP-0092, XEP-0202, XEP-0012 ------------------------------------------------------

#[test]
fn ping_version_time_and_uptime_of_the_server() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::login(&srv, "alice", "a");

    let pong = a.iq("get", Some(DOMAIN), "<ping xmlns='urn:xmpp:ping'/>");
    assert!(is_result(&pong), "{pong}");
    let own = a.iq("get", Some(&bare("alice")), "<ping xmlns='urn:xmpp:ping'/>");
    assert!(is_result(&own), "{own}");
    let other = a.iq("get", Some(&bare("bob")), "<ping xmlns='urn:xmpp:ping'/>");
    assert_error(&other, "cancel", "service-unavailable");

    let v = a.iq("get", Some(DOMAIN), "<query xmlns='jabber:iq:version'/>");
    assert!(is_result(&v), "{v}");
    assert!(v.contains("<name>wockd</name>"), "{v}");
    assert!(
        v.contains(&format!("<version>{}</version>", wockd::VERSION)),
        "{v}"
    );
    let v = a.iq(
        "get",
        Some(&bare("bob")),
        "<query xmlns='jabber:iq:version'/>",
    );
    assert_error(&v, "cancel", "service-unavailable");

    let t = a.iq("get", Some(DOMAIN), "<time xmlns='urn:xmpp:time'/>");
    assert!(is_result(&t), "{t}");
    let utc = t
        .split("<utc>")
        .nth(1)
        .and_then(|r| r.split("</utc>").next())
        .unwrap_or_default();
    assert_eq!(utc.len(), "2006-12-19T17:58:35Z".len(), "{t}");
    assert!(utc.ends_with('Z') && utc.as_bytes()[10] == b'T', "{t}");
    assert!(t.contains("<tzo>+") || t.contains("<tzo>-"), "{t}");

    let last = a.iq("get", Some(DOMAIN), "<query xmlns='jabber:iq:last'/>");
    assert!(is_result(&last), "{last}");
    let secs = attr_values(&last, "seconds");
    assert!(secs.len() == 1 && secs[0].parse::<u64>().is_ok(), "{last}");
}

#[test]
fn last_activity_of_accounts() {
    let srv = TestServer::with_users(&["alice", "bob", "carol"]);
    let mut a = Client::login(&srv, "alice", "a");
    let query = "<query xmlns='jabber:iq:last'/>";

    // Carol has never been online: nothing recorded, and only she may ask anyway.
    let mut c = Client::login(&srv, "carol", "c");
    let never = c.iq("get", Some(&bare("carol")), query);
    assert_error(&never, "cancel", "item-not-found");
    let forbidden = a.iq("get", Some(&bare("carol")), query);
    assert_error(&forbidden, "auth", "forbidden");
    let missing = a.iq("get", Some(&bare("nobody")), query);
    assert_error(&missing, "cancel", "service-unavailable");

    // Available: zero seconds.
    a.send("<presence/>");
    a.barrier();
    let online = a.iq("get", Some(&bare("alice")), query);
    assert!(
        is_result(&online) && online.contains("seconds=\"0\""),
        "{online}"
    );
}

#[test]
fn last_activity_after_logout() {
    let srv = TestServer::with_users(&["bob"]);
    let mut b = Client::online(&srv, "bob", "b");
    b.send("</stream:stream>");
    b.rest_until_closed();
    let mut b = Client::login(&srv, "bob", "again");
    let last = b.iq("get", Some(&bare("bob")), "<query xmlns='jabber:iq:last'/>");
    assert!(is_result(&last), "{last}");
    let secs: u64 = attr_values(&last, "seconds")[0].parse().unwrap();
    assert!(secs < 60, "{last}");
}

#[test]
fn server_pings_silent_clients_and_drops_dead_ones() {
    let srv = TestServer::start_with(
        |c| {
            c.limits.keepalive_secs = 1;
            c.limits.idle_timeout_secs = 600;
        },
        |_| {},
    );
    srv.add_user("alive", "pw");
    srv.add_user("dead", "pw");
    let mut alive = Client::login(&srv, "alive", "a");
    let mut dead = Client::login(&srv, "dead", "d");

    // The live client answers each ping and keeps being pinged, i.e. stays connected.
    for _ in 0..2 {
        let ping = alive.wait(|s| s.contains("urn:xmpp:ping") && s.contains("type=\"get\""));
        assert!(
            ping.contains(&format!("to=\"{}\"", alive.jid))
                && ping.contains(&format!("from=\"{DOMAIN}\"")),
            "{ping}"
        );
        let id = attr_values(&ping, "id")[0].clone();
        alive.send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"));
    }

    // The silent one is pinged, then dropped.
    dead.wait(|s| s.contains("urn:xmpp:ping") && s.contains("type=\"get\""));
    let rest = dead.rest_until_closed();
    assert!(rest.contains("<connection-timeout"), "{rest}");
    alive.barrier();
}

// ---- XEP-0054 / XEP-0153 --------------------------------------------------------------------------

#[test]
fn vcards_are_stored_and_served() {
    let srv = TestServer::with_users(&["alice", "bob", "carol"]);
    let mut a = Client::login(&srv, "alice", "a");
    let mut b = Client::login(&srv, "bob", "b");

    let mine = a.iq("get", None, "<vCard xmlns='vcard-temp'/>");
    assert_error(&mine, "cancel", "item-not-found");

    let set = a.iq(
        "set",
        None,
        "<vCard xmlns='vcard-temp'><FN>Alice &amp; Co</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>",
    );
    assert!(is_result(&set), "{set}");
    let mine = a.iq("get", None, "<vCard xmlns='vcard-temp'/>");
    assert!(
        is_result(&mine) && mine.contains("<FN>Alice &amp; Co</FN>") && mine.contains("aGVsbG8="),
        "{mine}"
    );

    // Anyone may read it; the answer comes from her bare JID.
    let theirs = b.iq("get", Some(&bare("alice")), "<vCard xmlns='vcard-temp'/>");
    assert!(
        is_result(&theirs) && theirs.contains("<FN>Alice &amp; Co</FN>"),
        "{theirs}"
    );
    assert!(
        theirs.contains(&format!("from=\"{}\"", bare("alice"))),
        "{theirs}"
    );

    // Only she may write it; bad input and unknown accounts get errors.
    let forged = b.iq(
        "set",
        Some(&bare("alice")),
        "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard>",
    );
    assert_error(&forged, "auth", "forbidden");
    let bad = b.iq(
        "set",
        None,
        "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!!</BINVAL></PHOTO></vCard>",
    );
    assert_error(&bad, "modify", "bad-request");
    let none = b.iq("get", Some(&bare("carol")), "<vCard xmlns='vcard-temp'/>");
    assert_error(&none, "cancel", "item-not-found");
    let missing = b.iq("get", Some(&bare("nobody")), "<vCard xmlns='vcard-temp'/>");
    assert_error(&missing, "cancel", "service-unavailable");
    let again = a.iq("get", None, "<vCard xmlns='vcard-temp'/>");
    assert!(again.contains("<FN>Alice &amp; Co</FN>"), "{again}");
}

/// The `<photo>` of a presence's `vcard-temp:x:update` element: `Some("")` for `<photo/>`,
/// `None` without one.
fn photo_in(presence: &str) -> Option<String> {
    if presence.contains("<photo/>") {
        return Some(String::new());
    }
    let start = presence.find("<photo>")? + "<photo>".len();
    let end = start + presence[start..].find("</photo>")?;
    Some(presence[start..end].to_owned())
}

/// A vCard with a PHOTO whose BINVAL is `bytes` in base64, folded over two lines.
fn vcard_with_photo(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let (head, tail) = b64.split_at(b64.len() / 2);
    format!(
        "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{head}\n {tail}</BINVAL></PHOTO></vCard>"
    )
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn vcard_photo_hash_is_added_to_presence() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut b = Client::online(&srv, "bob", "b");
    let from_alice = format!("from=\"{}\"", a.jid);
    let update = "<x xmlns=\"vcard-temp:x:update\">";

    // Bob subscribes to Alice. She has no vCard: her presence gets nothing added.
    b.send(&format!(
        "<presence to='{}' type='subscribe'/>",
        bare("alice")
    ));
    a.expect(&["type=\"subscribe\""]);
    a.send(&format!(
        "<presence to='{}' type='subscribed'/>",
        bare("bob")
    ));
    b.expect(&["type=\"subscribed\""]);
    let first = b.expect(&["<presence", &from_alice]);
    assert!(!first.contains("vcard-temp:x:update"), "{first}");

    // She sets a vCard with a photo: her presence goes out again, to Bob and to herself, with
    // the SHA-1 of the decoded image.
    let png = b"\x89PNG\r\n\x1a\n not really an avatar";
    let hash = sha1_hex(png);
    let set = a.iq("set", None, &vcard_with_photo(png));
    assert!(is_result(&set), "{set}");
    let again = b.expect(&["<presence", &from_alice, update]);
    assert_eq!(photo_in(&again).as_deref(), Some(hash.as_str()), "{again}");
    let own = a.expect(&["<presence", &from_alice, update]);
    assert_eq!(photo_in(&own).as_deref(), Some(hash.as_str()), "{own}");

    // Her next presence carries it, and so does what a new resource of Bob's is told.
    a.send("<presence><show>away</show></presence>");
    let away = b.expect(&["<presence", &from_alice, "<show>away</show>"]);
    assert_eq!(photo_in(&away).as_deref(), Some(hash.as_str()), "{away}");
    let mut b2 = Client::login(&srv, "bob", "b2");
    b2.send("<presence/>");
    let told = b2.expect(&["<presence", &from_alice]);
    assert!(told.contains("<show>away</show>"), "{told}");
    assert_eq!(photo_in(&told).as_deref(), Some(hash.as_str()), "{told}");
    b2.barrier();

    // The same photo again changes nothing, so nothing is re-sent.
    b.barrier();
    b.queue.clear();
    let same = a.iq("set", None, &vcard_with_photo(png));
    assert!(is_result(&same), "{same}");
    b.assert_none("a re-broadcast for an unchanged photo", |s| {
        s.starts_with("<presence") && s.contains(&from_alice)
    });

    // Another photo: re-broadcast with the new hash. No photo: an empty <photo/>.
    let other = b"GIF89a another picture";
    let set = a.iq("set", None, &vcard_with_photo(other));
    assert!(is_result(&set), "{set}");
    let changed = b.expect(&["<presence", &from_alice, update]);
    assert!(changed.contains("<show>away</show>"), "{changed}");
    assert_eq!(photo_in(&changed), Some(sha1_hex(other)), "{changed}");
    let set = a.iq(
        "set",
        None,
        "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>",
    );
    assert!(is_result(&set), "{set}");
    let removed = b.expect(&["<presence", &from_alice, update]);
    assert_eq!(photo_in(&removed).as_deref(), Some(""), "{removed}");

    // A presence with the client's own update element goes out as it was sent, and a vCard
    // change does not touch or re-send it.
    a.send(
        "<presence><x xmlns='vcard-temp:x:update'><photo>0123456789abcdef</photo></x></presence>",
    );
    let hers = b.expect(&["<presence", &from_alice, update]);
    assert_eq!(hers.matches("vcard-temp:x:update").count(), 1, "{hers}");
    assert_eq!(
        photo_in(&hers).as_deref(),
        Some("0123456789abcdef"),
        "{hers}"
    );
    b.barrier();
    b.queue.clear();
    let set = a.iq("set", None, &vcard_with_photo(png));
    assert!(is_result(&set), "{set}");
    b.assert_none("a re-broadcast over the client's own hash", |s| {
        s.starts_with("<presence") && s.contains(&from_alice)
    });
    // XEP-0153's "not ready" form (no <photo/>) is the client's too.
    a.send("<presence><x xmlns='vcard-temp:x:update'/></presence>");
    let not_ready = b.expect(&["<presence", &from_alice, "vcard-temp:x:update"]);
    assert!(
        not_ready.contains("<x xmlns=\"vcard-temp:x:update\"/>") && photo_in(&not_ready).is_none(),
        "{not_ready}"
    );
}

// ---- XEP-0049 -------------------------------------------------------------------------------------

#[test]
fn private_xml_storage() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::login(&srv, "alice", "a");

    let set = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query>",
    );
    assert!(is_result(&set), "{set}");
    let got = a.iq(
        "get",
        None,
        "<query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query>",
    );
    assert!(
        is_result(&got) && got.contains("<defaultnick>Hamlet</defaultnick>"),
        "{got}"
    );
    let empty = a.iq(
        "get",
        None,
        "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>",
    );
    assert!(
        is_result(&empty) && empty.contains("<storage xmlns=\"storage:bookmarks\"/>"),
        "{empty}"
    );

    let reserved = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:private'><x xmlns='jabber:x:data'/></query>",
    );
    assert_error(&reserved, "modify", "not-acceptable");
    let nothing = a.iq("get", None, "<query xmlns='jabber:iq:private'/>");
    assert_error(&nothing, "modify", "not-acceptable");

    // Bob cannot read or write Alice's storage.
    let mut b = Client::login(&srv, "bob", "b");
    let peek = b.iq(
        "get",
        Some(&bare("alice")),
        "<query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query>",
    );
    assert_error(&peek, "auth", "forbidden");
    let own = b.iq(
        "get",
        None,
        "<query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query>",
    );
    assert!(is_result(&own) && !own.contains("Hamlet"), "{own}");
}

// ---- XEP-0191 -------------------------------------------------------------------------------------

#[test]
fn blocking_stops_stanzas_both_ways() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::online(&srv, "alice", "a");
    let mut a2 = Client::online(&srv, "alice", "a2");
    let mut b = Client::online(&srv, "bob", "b");
    let bob_jid = b.jid.clone();

    let list = a.iq("get", None, "<blocklist xmlns='urn:xmpp:blocking'/>");
    assert!(is_result(&list) && !list.contains("<item"), "{list}");
    let block = a.iq(
        "set",
        None,
        &format!(
            "<block xmlns='urn:xmpp:blocking'><item jid='{}'/></block>",
            bare("bob")
        ),
    );
    assert!(is_result(&block), "{block}");
    // The push goes to the resource that requested the blocklist, and only to it.
    let push = a.expect(&[
        "<block xmlns=\"urn:xmpp:blocking\">",
        &format!("jid=\"{}\"", bare("bob")),
    ]);
    assert!(push.contains("type=\"set\""), "{push}");
    a2.assert_none("blocklist push", |s| s.contains("urn:xmpp:blocking"));
    let list = a2.iq("get", None, "<blocklist xmlns='urn:xmpp:blocking'/>");
    assert!(
        list.contains(&format!("<item jid=\"{}\"/>", bare("bob"))),
        "{list}"
    );

    // Bob's message is not delivered (he gets service-unavailable, as if she were offline),
    // nor is his IQ.
    b.send(&format!(
        "<message to='{}' id='m1' type='chat'><body>one</body></message>",
        a.jid
    ));
    let bounce = b.expect(&["id=\"m1\""]);
    assert_error(&bounce, "cancel", "service-unavailable");
    let iq = b.iq("get", Some(&bare("alice")), "<vCard xmlns='vcard-temp'/>");
    assert_error(&iq, "cancel", "service-unavailable");

    // Alice cannot write to Bob.
    a.send(&format!(
        "<message to='{bob_jid}' id='m2' type='chat'><body>hi</body></message>"
    ));
    let err = a.expect(&["id=\"m2\""]);
    assert_error(&err, "cancel", "not-acceptable");
    assert!(
        err.contains("<blocked xmlns=\"urn:xmpp:blocking:errors\"/>"),
        "{err}"
    );
    b.assert_none("message from a blocker", |s| s.contains("<body>hi</body>"));

    // A malformed item and an empty block are refused.
    let bad = a.iq(
        "set",
        None,
        "<block xmlns='urn:xmpp:blocking'><item jid='@@'/></block>",
    );
    assert_error(&bad, "modify", "jid-malformed");
    let empty = a.iq("set", None, "<block xmlns='urn:xmpp:blocking'/>");
    assert_error(&empty, "modify", "bad-request");

    // Unblock everything: the push says so, and Bob's next message arrives — only that one.
    let unblock = a.iq("set", None, "<unblock xmlns='urn:xmpp:blocking'/>");
    assert!(is_result(&unblock), "{unblock}");
    a.expect(&["<unblock xmlns=\"urn:xmpp:blocking\"/>"]);
    a2.expect(&["<unblock xmlns=\"urn:xmpp:blocking\"/>"]);
    b.send(&format!(
        "<message to='{}' id='m3' type='chat'><body>two</body></message>",
        a.jid
    ));
    let msg = a.wait(|s| s.starts_with("<message"));
    assert!(msg.contains("<body>two</body>"), "{msg}");
    a.assert_none("the blocked message", |s| s.contains("<body>one</body>"));
}

// ---- XEP-0077 -------------------------------------------------------------------------------------

#[test]
fn registration_is_off_by_default() {
    let srv = TestServer::with_users(&[]);
    let (mut c, features) = Client::unauthenticated(&srv, "(unauthenticated)");
    assert!(
        !features.contains("http://jabber.org/features/iq-register"),
        "{features}"
    );
    let get = c.iq("get", None, "<query xmlns='jabber:iq:register'/>");
    assert_error(&get, "cancel", "service-unavailable");
    let set = c.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><username>eve</username><password>pw</password></query>",
    );
    assert_error(&set, "cancel", "service-unavailable");
    assert!(!plain_ok(srv.trusted, "eve", "pw"));
}

#[test]
fn registration_when_enabled() {
    let srv = TestServer::start_with(|c| c.auth.registration = true, |_| {});
    srv.add_user("taken", "pw");
    let (mut c, features) = Client::unauthenticated(&srv, "(unauthenticated)");
    assert!(
        features.contains("<register xmlns=\"http://jabber.org/features/iq-register\"/>"),
        "{features}"
    );

    let form = c.iq("get", None, "<query xmlns='jabber:iq:register'/>");
    assert!(
        is_result(&form) && form.contains("<username/>") && form.contains("<password/>"),
        "{form}"
    );
    let missing = c.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><username>eve</username></query>",
    );
    assert_error(&missing, "modify", "not-acceptable");
    let taken = c.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><username>taken</username><password>x</password></query>",
    );
    assert_error(&taken, "cancel", "conflict");
    let ok = c.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><username>eve</username><password>s3cret</password></query>",
    );
    assert!(is_result(&ok), "{ok}");

    // The new account logs in.
    let mut eve = Client::login_at(srv.trusted, "eve", "s3cret", "e");
    let reg = eve.iq("get", None, "<query xmlns='jabber:iq:register'/>");
    assert!(
        reg.contains("<registered/>") && reg.contains("<username>eve</username>"),
        "{reg}"
    );
}

#[test]
fn password_change() {
    let srv = TestServer::with_users(&["alice"]);
    let mut a = Client::login(&srv, "alice", "a");
    let empty = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><username>alice</username><password/></query>",
    );
    assert_error(&empty, "modify", "bad-request");
    let other = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><username>bob</username><password>x</password></query>",
    );
    assert_error(&other, "modify", "bad-request");
    let changed = a.iq(
        "set",
        Some(DOMAIN),
        "<query xmlns='jabber:iq:register'><username>alice</username><password>n3w pass</password></query>",
    );
    assert!(is_result(&changed), "{changed}");
    assert!(plain_ok(srv.trusted, "alice", "n3w pass"));
    assert!(!plain_ok(srv.trusted, "alice", "pw"));
    let mut again = Client::login_at(srv.trusted, "alice", "n3w pass", "again");
    again.barrier();
    // The session that changed it stays.
    a.barrier();
}

#[test]
fn account_removal_closes_every_stream() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut a = Client::login(&srv, "alice", "a");
    let mut a2 = Client::login(&srv, "alice", "a2");
    let mut b = Client::login(&srv, "bob", "b");
    let set = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:private'><p xmlns='x:p'/></query>",
    );
    assert!(is_result(&set), "{set}");

    let forbidden = b.iq(
        "set",
        Some(&bare("alice")),
        "<query xmlns='jabber:iq:register'><remove/></query>",
    );
    assert_error(&forbidden, "auth", "forbidden");
    let bad = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><remove/><username>alice</username></query>",
    );
    assert_error(&bad, "modify", "bad-request");

    let removed = a.iq(
        "set",
        None,
        "<query xmlns='jabber:iq:register'><remove/></query>",
    );
    assert!(is_result(&removed), "{removed}");
    for c in [&mut a, &mut a2] {
        let rest = c.rest_until_closed();
        assert!(
            rest.contains("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\""),
            "{rest}"
        );
    }
    assert!(!plain_ok(srv.trusted, "alice", "pw"));
    let gone = b.iq("get", Some(&bare("alice")), "<vCard xmlns='vcard-temp'/>");
    assert_error(&gone, "cancel", "service-unavailable");
}
