//! XEP-0163 PEP over real sockets: avatars (XEP-0084), bookmarks (XEP-0402), nicknames
//! (XEP-0172) and OMEMO keys (XEP-0384), with XEP-0115 caps answered by the test clients.
//!
//! Every wait is for a specific stanza. "Nothing arrived" is checked after a ping round trip:
//! the server handles one stanza completely (including what it sends to other clients) before
//! the next, and writes each connection's output in order, so once a client's pong is read,
//! everything the server sent it before is queued.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{DOMAIN, Responder, TestServer, is_result};
use sha1::Digest;

const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const NICK: &str = "http://jabber.org/protocol/nick";
const OMEMO_DEVICES: &str = "urn:xmpp:omemo:2:devices";
const OMEMO_BUNDLES: &str = "urn:xmpp:omemo:2:bundles";
const CAPS_NODE: &str = "https://wockd.org/test-client";

/// What a client advertises in XEP-0115 caps.
struct Caps {
    /// The identity name: different names make different `ver`s.
    name: String,
    features: Vec<String>,
    ver: String,
}

impl Caps {
    /// Caps of a client that wants notifications of `notify` (XEP-0115 §5.1 `ver`).
    fn new(name: &str, notify: &[&str]) -> Caps {
        let mut features = vec![
            "http://jabber.org/protocol/caps".to_owned(),
            "http://jabber.org/protocol/disco#info".to_owned(),
        ];
        for n in notify {
            features.push((*n).to_owned());
            features.push(format!("{n}+notify"));
        }
        features.sort();
        let mut s = format!("client/pc//{name}<");
        for f in &features {
            s.push_str(f);
            s.push('<');
        }
        let ver =
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
        Caps {
            name: name.to_owned(),
            features,
            ver,
        }
    }

    fn element(&self) -> String {
        format!(
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' ver='{}'/>",
            self.ver
        )
    }
}

/// The test clients' side of XEP-0115: answers the server's disco#info queries for the
/// advertised caps node (§6.2) and counts them.
#[derive(Default)]
struct CapsAnswers {
    caps: Option<Caps>,
    /// How many caps queries it answered.
    answered: u32,
    /// Answer caps queries with features that do not match the advertised hash.
    lie: bool,
}

impl Responder for CapsAnswers {
    fn respond(&mut self, stanza: &str) -> Option<String> {
        if !(stanza.starts_with("<iq")
            && stanza.contains("type=\"get\"")
            && stanza.contains("disco#info"))
        {
            return None;
        }
        let caps = self.caps.as_ref()?;
        let id = attr(stanza, "iq", "id").expect("query id");
        let from = attr(stanza, "iq", "from").expect("query from");
        let node = attr(stanza, "query", "node").expect("query node");
        assert_eq!(node, format!("{CAPS_NODE}#{}", caps.ver), "{stanza}");
        let mut features = String::new();
        for f in &caps.features {
            features.push_str(&format!("<feature var='{f}'/>"));
        }
        if self.lie {
            features.push_str("<feature var='urn:example:unadvertised'/>");
        }
        self.answered += 1;
        Some(format!(
            "<iq type='result' id='{id}' to='{from}'><query xmlns='http://jabber.org/protocol/disco#info' node='{node}'>\
             <identity category='client' type='pc' name='{}'/>{features}</query></iq>",
            caps.name
        ))
    }
}

/// The shared test client, answering caps queries itself.
type Client = common::Client<CapsAnswers>;

impl Client {
    fn login(srv: &TestServer, user: &str, resource: &str) -> Client {
        common::Client::<()>::login(srv, user, resource).answering(CapsAnswers::default())
    }

    /// Logs in and sends initial presence with caps wanting `notify`; returns once the
    /// server knows what the caps mean (it asked, unless `cached`).
    fn online(
        srv: &TestServer,
        user: &str,
        resource: &str,
        notify: &[&str],
        cached: bool,
    ) -> Client {
        let mut c = Client::login(srv, user, resource);
        c.roster_get();
        c.auto.caps = Some(Caps::new(&format!("client {user} {resource}"), notify));
        c.available(cached);
        c
    }

    /// Like [`Client::online`], with the caps of another client (to share a `ver`).
    fn online_as(srv: &TestServer, user: &str, resource: &str, caps: Caps, cached: bool) -> Client {
        let mut c = Client::login(srv, user, resource);
        c.roster_get();
        c.auto.caps = Some(caps);
        c.available(cached);
        c
    }

    fn roster_get(&mut self) {
        self.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
        self.expect(&["id=\"roster\""]);
    }

    /// Initial presence (with caps, if any); waits for its echo and, unless the `ver` is
    /// `cached`, for the caps query, then makes sure the server has processed the answer.
    fn available(&mut self, cached: bool) {
        let caps = self
            .auto
            .caps
            .as_ref()
            .map(Caps::element)
            .unwrap_or_default();
        self.send(&format!("<presence>{caps}</presence>"));
        let from = format!("from=\"{}\"", self.jid);
        self.wait(|s| s.starts_with("<presence") && s.contains(&from) && !s.contains("type="));
        if self.auto.caps.is_some() && !cached {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.auto.answered == 0 {
                self.read_more(deadline);
            }
        }
        self.barrier();
        assert_eq!(
            self.auto.answered,
            u32::from(self.auto.caps.is_some() && !cached),
            "{}",
            self.jid
        );
    }

    /// A PEP event about `node` from `owner`.
    fn event(&mut self, owner: &str, node: &str) -> String {
        let from = format!("from=\"{owner}\"");
        let node = format!("node=\"{node}\"");
        self.wait(|s| is_event(s) && s.contains(&from) && s.contains(&node))
    }

    /// Asserts that no PEP event about `node` has arrived, after a barrier.
    fn assert_no_event(&mut self, node: &str) {
        let node = format!("node=\"{node}\"");
        self.assert_none("event", |s| is_event(s) && s.contains(&node));
    }
}

fn is_event(s: &str) -> bool {
    s.starts_with("<message") && s.contains("http://jabber.org/protocol/pubsub#event")
}

/// The value of attribute `name` on the first `<tag …>` in `s`.
fn attr(s: &str, tag: &str, name: &str) -> Option<String> {
    let open = s.find(&format!("<{tag} "))?;
    let end = open + s[open..].find('>')?;
    let head = &s[open..end];
    let key = format!(" {name}=\"");
    let at = head.find(&key)? + key.len();
    let len = head[at..].find('"')?;
    Some(head[at..at + len].to_owned())
}

fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// `x` asks for `y`'s presence and `y` approves (both online): afterwards `y`'s roster has
/// `x` with subscription `from`, so `x` gets `y`'s presence and PEP events.
fn subscribe(x: &mut Client, y: &mut Client, x_user: &str, y_user: &str) {
    x.presence_to(&jid(y_user), "subscribe");
    y.expect(&["type=\"subscribe\"", &format!("from=\"{}\"", jid(x_user))]);
    y.presence_to(&jid(x_user), "subscribed");
    x.expect(&["type=\"subscribed\"", &format!("from=\"{}\"", jid(y_user))]);
    x.barrier();
    y.barrier();
}

fn publish(item_id: &str, node: &str, payload: &str, options: &str) -> String {
    let options = if options.is_empty() {
        String::new()
    } else {
        format!(
            "<publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             {options}</x></publish-options>"
        )
    };
    let item = if item_id.is_empty() {
        "<item>".to_owned()
    } else {
        format!("<item id='{item_id}'>")
    };
    format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>{item}{payload}</item></publish>{options}</pubsub>"
    )
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

fn items_query(node: &str, inner: &str) -> String {
    format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'>{inner}</items></pubsub>"
    )
}

// ---- XEP-0084 avatars -------------------------------------------------------------------------

#[test]
fn avatar_metadata_reaches_subscribed_contacts_with_notify() {
    let srv = TestServer::with_users(&["alice", "bob", "carol"]);
    let mut alice = Client::online(&srv, "alice", "desk", &[AVATAR_METADATA], false);
    let mut bob = Client::online(&srv, "bob", "phone", &[AVATAR_METADATA], false);
    let mut carol = Client::online(&srv, "carol", "pc", &[AVATAR_METADATA], false);
    subscribe(&mut bob, &mut alice, "bob", "alice");
    // Carol wants metadata too, but shares no presence with alice.

    // XEP-0084 §4.1: data first, then metadata.
    let data = "<data xmlns='urn:xmpp:avatar:data'>iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==</data>";
    let hash = "111f4b3c50d7b0df729d299bc6f8e9ef9066971f";
    let r = alice.iq_id(
        "d1",
        &format!(
            "<iq type='set' id='d1'>{}</iq>",
            publish(hash, AVATAR_DATA, data, "")
        ),
    );
    assert!(is_result(&r), "{r}");
    assert!(r.contains(&format!("<item id=\"{hash}\"/>")), "{r}");
    let metadata = format!(
        "<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='68' id='{hash}' height='1' type='image/png' width='1'/></metadata>"
    );
    let r = alice.iq_id(
        "m1",
        &format!(
            "<iq type='set' id='m1'>{}</iq>",
            publish(hash, AVATAR_METADATA, &metadata, "")
        ),
    );
    assert!(is_result(&r), "{r}");

    // Bob (subscribed, +notify) and alice's own resource get the metadata from alice's bare JID.
    let ev = bob.event(&jid("alice"), AVATAR_METADATA);
    assert!(ev.contains("type=\"headline\""), "{ev}");
    assert!(ev.contains(&format!("to=\"{}\"", bob.jid)), "{ev}");
    assert!(
        ev.contains(&format!(
            "<item id=\"{hash}\"><metadata xmlns=\"urn:xmpp:avatar:metadata\"><info "
        )),
        "{ev}"
    );
    assert!(
        !ev.contains("urn:xmpp:delay"),
        "a live event has no delay: {ev}"
    );
    alice.event(&jid("alice"), AVATAR_METADATA);
    // Nobody advertised +notify for the data node; carol has no subscription.
    bob.assert_no_event(AVATAR_DATA);
    alice.assert_no_event(AVATAR_DATA);
    carol.assert_no_event(AVATAR_METADATA);

    // Bob fetches the data by id (presence access model: he is subscribed).
    let r = bob.iq_id(
        "get-data",
        &format!(
            "<iq type='get' id='get-data' to='{}'>{}</iq>",
            jid("alice"),
            items_query(AVATAR_DATA, &format!("<item id='{hash}'/>"))
        ),
    );
    assert!(is_result(&r), "{r}");
    assert!(r.contains(&format!("from=\"{}\"", jid("alice"))), "{r}");
    assert!(r.contains("iVBORw0KGgo"), "{r}");

    // Carol is refused (XEP-0060 §6.5.9.8).
    let r = carol.iq_id(
        "get-data",
        &format!(
            "<iq type='get' id='get-data' to='{}'>{}</iq>",
            jid("alice"),
            items_query(AVATAR_DATA, "")
        ),
    );
    assert!(r.contains("type=\"error\""), "{r}");
    assert!(
        r.contains("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"),
        "{r}"
    );
    assert!(
        r.contains(
            "<presence-subscription-required xmlns=\"http://jabber.org/protocol/pubsub#errors\"/>"
        ),
        "{r}"
    );

    // A second resource of bob with the same caps: the ver is known (no query), and it gets
    // alice's last metadata at once, with a delay (XEP-0163 §4.3.2).
    let caps = Caps::new("client bob phone", &[AVATAR_METADATA]);
    let mut bob2 = Client::online_as(&srv, "bob", "tablet", caps, true);
    let ev = bob2.event(&jid("alice"), AVATAR_METADATA);
    assert!(
        ev.contains(hash) && ev.contains("<delay xmlns=\"urn:xmpp:delay\""),
        "{ev}"
    );
    bob2.assert_no_event(AVATAR_DATA);

    // Avatar disabled (§4.6): empty metadata, also to bob's new resource.
    let r = alice.iq_id(
        "m2",
        &format!(
            "<iq type='set' id='m2'>{}</iq>",
            publish(
                "current",
                AVATAR_METADATA,
                "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
                ""
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    for c in [&mut bob, &mut bob2] {
        let ev = c.event(&jid("alice"), AVATAR_METADATA);
        assert!(
            ev.contains(
                "<item id=\"current\"><metadata xmlns=\"urn:xmpp:avatar:metadata\"/></item>"
            ),
            "{ev}"
        );
    }
    // max_items defaults to 1: only the newest metadata is kept.
    let r = bob.iq_id(
        "meta",
        &format!(
            "<iq type='get' id='meta' to='{}'>{}</iq>",
            jid("alice"),
            items_query(AVATAR_METADATA, "")
        ),
    );
    assert!(
        r.contains("<item id=\"current\">") && !r.contains(hash),
        "{r}"
    );
}

#[test]
fn notifications_stop_when_unavailable_and_follow_caps_changes() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut alice = Client::online(&srv, "alice", "desk", &[], false);
    let mut bob = Client::online(&srv, "bob", "phone", &[], false);
    subscribe(&mut bob, &mut alice, "bob", "alice");
    let nick = "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>";
    let r = alice.iq_id(
        "n1",
        &format!(
            "<iq type='set' id='n1'>{}</iq>",
            publish("", NICK, nick, "")
        ),
    );
    assert!(is_result(&r), "{r}");
    bob.assert_no_event(NICK);

    // Bob's client starts wanting nicks: new caps in a presence update bring the last item.
    bob.auto.caps = Some(Caps::new("bob with nick", &[NICK]));
    bob.auto.answered = 0;
    let caps = bob.auto.caps.as_ref().unwrap().element();
    bob.send(&format!("<presence>{caps}</presence>"));
    let ev = bob.event(&jid("alice"), NICK);
    assert!(
        ev.contains(">Alice</nick>") && ev.contains("urn:xmpp:delay"),
        "{ev}"
    );
    assert_eq!(bob.auto.answered, 1);

    // A later presence with the same caps sends nothing again.
    bob.send(&format!("<presence><show>away</show>{caps}</presence>"));
    bob.assert_no_event(NICK);

    // Unavailable: no more events; available again: the last item once more.
    bob.send("<presence type='unavailable'/>");
    bob.barrier();
    let nick2 = "<nick xmlns='http://jabber.org/protocol/nick'>Alice L.</nick>";
    let r = alice.iq_id(
        "n2",
        &format!(
            "<iq type='set' id='n2'>{}</iq>",
            publish("", NICK, nick2, "")
        ),
    );
    assert!(is_result(&r), "{r}");
    bob.assert_no_event(NICK);
    bob.send(&format!("<presence>{caps}</presence>"));
    let ev = bob.event(&jid("alice"), NICK);
    assert!(ev.contains(">Alice L.</nick>"), "{ev}");

    // Negative priority: no notifications (XEP-0163 §4.3.1).
    bob.send(&format!(
        "<presence><priority>-1</priority>{caps}</presence>"
    ));
    bob.barrier();
    let r = alice.iq_id(
        "n3",
        &format!(
            "<iq type='set' id='n3'>{}</iq>",
            publish("", NICK, nick, "")
        ),
    );
    assert!(is_result(&r), "{r}");
    bob.assert_no_event(NICK);
}

#[test]
fn caps_that_do_not_match_their_hash_count_for_one_resource_only() {
    let srv = TestServer::with_users(&["alice"]);
    let mut liar = Client::login(&srv, "alice", "liar");
    liar.auto.caps = Some(Caps::new("shared client", &[NICK]));
    liar.auto.lie = true;
    liar.available(false);
    // The same ver again: not cached, so it is asked too.
    let mut honest = Client::online_as(
        &srv,
        "alice",
        "honest",
        Caps::new("shared client", &[NICK]),
        false,
    );
    let r = honest.iq_id(
        "n1",
        &format!(
            "<iq type='set' id='n1'>{}</iq>",
            publish(
                "",
                NICK,
                "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>",
                ""
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    // The liar's own answer still says what it wants.
    liar.event(&jid("alice"), NICK);
    honest.event(&jid("alice"), NICK);
    // Now verified and cached: a third resource is not asked.
    let mut third = Client::online_as(
        &srv,
        "alice",
        "third",
        Caps::new("shared client", &[NICK]),
        true,
    );
    third.event(&jid("alice"), NICK);
}

// ---- XEP-0172 nicknames, persistence ----------------------------------------------------------

#[test]
fn nickname_last_item_on_login_and_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let srv = TestServer::start_in(tmp.path(), |_| {}, |_| {});
        srv.add_user("alice", "pw");
        srv.add_user("bob", "pw");
        let mut alice = Client::online(&srv, "alice", "desk", &[NICK], false);
        let mut bob = Client::online(&srv, "bob", "phone", &[NICK], false);
        subscribe(&mut bob, &mut alice, "bob", "alice");
        let nick = "<nick xmlns='http://jabber.org/protocol/nick'>Ali &amp; Ce</nick>";
        let r = alice.iq_id(
            "n",
            &format!("<iq type='set' id='n'>{}</iq>", publish("", NICK, nick, "")),
        );
        assert!(is_result(&r), "{r}");
        let id = attr(&r, "item", "id").expect("a generated ItemID");
        assert!(!id.is_empty());
        let ev = bob.event(&jid("alice"), NICK);
        assert!(
            ev.contains(&format!("<item id=\"{id}\">")) && ev.contains("Ali &amp; Ce"),
            "{ev}"
        );
        srv.stop();
    }
    let srv = TestServer::start_in(tmp.path(), |_| {}, |_| {});
    // Bob's new session gets alice's nick from the database, as does alice's.
    let mut bob = Client::online(&srv, "bob", "phone", &[NICK], false);
    let ev = bob.event(&jid("alice"), NICK);
    assert!(
        ev.contains("Ali &amp; Ce") && ev.contains("urn:xmpp:delay"),
        "{ev}"
    );
    let mut alice = Client::online(&srv, "alice", "laptop", &[NICK], false);
    alice.event(&jid("alice"), NICK);
    // And by retrieval, without a `to` (the own account).
    let r = alice.iq_id(
        "get",
        &format!("<iq type='get' id='get'>{}</iq>", items_query(NICK, "")),
    );
    assert!(r.contains("Ali &amp; Ce") && !r.contains(" from="), "{r}");
}

// ---- XEP-0402 bookmarks -----------------------------------------------------------------------

fn bookmark_options() -> String {
    [
        field("pubsub#persist_items", "true"),
        field("pubsub#max_items", "max"),
        field("pubsub#send_last_published_item", "never"),
        field("pubsub#access_model", "whitelist"),
    ]
    .concat()
}

#[test]
fn bookmarks_publish_options_retrieve_retract() {
    let srv = TestServer::with_users(&["juliet", "romeo"]);
    let mut desk = Client::online(&srv, "juliet", "desk", &[BOOKMARKS], false);
    let mut phone = Client::online(&srv, "juliet", "phone", &[BOOKMARKS], false);
    let mut romeo = Client::online(&srv, "romeo", "orchard", &[BOOKMARKS], false);
    subscribe(&mut romeo, &mut desk, "romeo", "juliet");

    let play = "<conference xmlns='urn:xmpp:bookmarks:1' name='The Play&apos;s the Thing' autojoin='true'><nick>JC</nick></conference>";
    let r = desk.iq_id(
        "b1",
        &format!(
            "<iq type='set' id='b1'>{}</iq>",
            publish(
                "theplay@conference.shakespeare.lit",
                BOOKMARKS,
                play,
                &bookmark_options()
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    let orchard = "<conference xmlns='urn:xmpp:bookmarks:1' name='Orchard'/>";
    let r = desk.iq_id(
        "b2",
        &format!(
            "<iq type='set' id='b2'>{}</iq>",
            publish(
                "orchard@conference.shakespeare.lit",
                BOOKMARKS,
                orchard,
                &bookmark_options()
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    // Both own resources are told; romeo (whitelist) is not.
    for c in [&mut desk, &mut phone] {
        let ev = c.event(&jid("juliet"), BOOKMARKS);
        assert!(ev.contains("theplay@conference.shakespeare.lit"), "{ev}");
        let ev = c.event(&jid("juliet"), BOOKMARKS);
        assert!(ev.contains("orchard@conference.shakespeare.lit"), "{ev}");
    }
    romeo.assert_no_event(BOOKMARKS);

    // Retrieval: both items (max_items=max keeps them), in publication order.
    let r = phone.iq_id(
        "all",
        &format!(
            "<iq type='get' id='all'>{}</iq>",
            items_query(BOOKMARKS, "")
        ),
    );
    let play_at = r.find("theplay@").expect(&r);
    let orchard_at = r.find("orchard@").expect(&r);
    assert!(play_at < orchard_at, "{r}");
    assert!(
        r.contains("<nick>JC</nick>") && r.contains("autojoin=\"true\""),
        "{r}"
    );
    let r = phone.iq_id("last", &format!("<iq type='get' id='last'>{}</iq>", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1' max_items='1'/></pubsub>"));
    assert!(r.contains("orchard@") && !r.contains("theplay@"), "{r}");

    // Romeo may not read them (XEP-0060 §6.5.9.10).
    let r = romeo.iq_id(
        "peek",
        &format!(
            "<iq type='get' id='peek' to='{}'>{}</iq>",
            jid("juliet"),
            items_query(BOOKMARKS, "")
        ),
    );
    assert!(
        r.contains("<not-allowed xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"),
        "{r}"
    );
    assert!(
        r.contains("<closed-node xmlns=\"http://jabber.org/protocol/pubsub#errors\"/>"),
        "{r}"
    );
    // Nor publish there.
    let r = romeo.iq_id(
        "evil",
        &format!(
            "<iq type='set' id='evil' to='{}'>{}</iq>",
            jid("juliet"),
            publish("x", BOOKMARKS, orchard, "")
        ),
    );
    assert!(r.contains("<forbidden "), "{r}");

    // Retract with notify (XEP-0402 §3.3).
    let r = phone.iq_id(
        "rm",
        "<iq type='set' id='rm'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:bookmarks:1' notify='true'><item id='orchard@conference.shakespeare.lit'/></retract></pubsub></iq>",
    );
    assert!(is_result(&r), "{r}");
    for c in [&mut desk, &mut phone] {
        let ev = c.event(&jid("juliet"), BOOKMARKS);
        assert!(
            ev.contains("<retract id=\"orchard@conference.shakespeare.lit\"/>"),
            "{ev}"
        );
    }
    romeo.assert_no_event(BOOKMARKS);
    let r = phone.iq_id("again", "<iq type='set' id='again'><pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='urn:xmpp:bookmarks:1'><item id='orchard@conference.shakespeare.lit'/></retract></pubsub></iq>");
    assert!(r.contains("<item-not-found "), "{r}");
    let r = phone.iq_id(
        "one",
        &format!(
            "<iq type='get' id='one'>{}</iq>",
            items_query(BOOKMARKS, "")
        ),
    );
    assert!(r.contains("theplay@") && !r.contains("orchard@"), "{r}");

    // send_last_published_item=never: a new resource gets no bookmark on login.
    let mut tablet = Client::online(&srv, "juliet", "tablet", &[BOOKMARKS], false);
    tablet.assert_no_event(BOOKMARKS);
}

#[test]
fn publish_options_preconditions_and_node_configuration() {
    let srv = TestServer::with_users(&["juliet"]);
    let mut c = Client::online(&srv, "juliet", "desk", &[], false);
    let play = "<conference xmlns='urn:xmpp:bookmarks:1' name='Play'/>";
    // A node made with the defaults (presence access, one item).
    let r = c.iq_id(
        "p0",
        &format!(
            "<iq type='set' id='p0'>{}</iq>",
            publish("a", BOOKMARKS, play, "")
        ),
    );
    assert!(is_result(&r), "{r}");
    // Publishing with other options: conflict + precondition-not-met (XEP-0060 §7.1.5).
    let r = c.iq_id(
        "p1",
        &format!(
            "<iq type='set' id='p1'>{}</iq>",
            publish("b", BOOKMARKS, play, &bookmark_options())
        ),
    );
    assert!(r.contains("type=\"error\""), "{r}");
    assert!(
        r.contains("<conflict xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/>"),
        "{r}"
    );
    assert!(
        r.contains("<precondition-not-met xmlns=\"http://jabber.org/protocol/pubsub#errors\"/>"),
        "{r}"
    );
    // Nothing was published.
    let r = c.iq_id(
        "l1",
        &format!("<iq type='get' id='l1'>{}</iq>", items_query(BOOKMARKS, "")),
    );
    assert!(
        r.contains("<item id=\"a\">") && !r.contains("<item id=\"b\">"),
        "{r}"
    );

    // What a client then does: fetch the form, submit the options, publish again.
    let r = c.iq_id(
        "cfg",
        "<iq type='get' id='cfg'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    );
    assert!(is_result(&r), "{r}");
    assert!(
        r.contains("http://jabber.org/protocol/pubsub#node_config"),
        "{r}"
    );
    assert!(r.contains("var=\"pubsub#access_model\""), "{r}");
    assert!(r.contains("<value>presence</value>"), "{r}");
    let submit = format!(
        "<iq type='set' id='set'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         {}</x></configure></pubsub></iq>",
        bookmark_options()
    );
    let r = c.iq_id("set", &submit);
    assert!(is_result(&r), "{r}");
    let r = c.iq_id(
        "p2",
        &format!(
            "<iq type='set' id='p2'>{}</iq>",
            publish("b", BOOKMARKS, play, &bookmark_options())
        ),
    );
    assert!(is_result(&r), "{r}");
    let r = c.iq_id(
        "l2",
        &format!("<iq type='get' id='l2'>{}</iq>", items_query(BOOKMARKS, "")),
    );
    assert!(
        r.contains("<item id=\"a\">") && r.contains("<item id=\"b\">"),
        "{r}"
    );
    let r = c.iq_id(
        "cfg2",
        "<iq type='get' id='cfg2'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'/></pubsub></iq>",
    );
    assert!(
        r.contains("<value>whitelist</value>") && r.contains("<value>max</value>"),
        "{r}"
    );

    // Invalid configuration: not-acceptable; invalid publish-options: bad-request.
    let r = c.iq_id(
        "bad",
        "<iq type='set' id='bad'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='urn:xmpp:bookmarks:1'>\
         <x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>lots</value></field></x></configure></pubsub></iq>",
    );
    assert!(r.contains("<not-acceptable "), "{r}");
    let r = c.iq_id(
        "bad2",
        &format!(
            "<iq type='set' id='bad2'>{}</iq>",
            publish(
                "c",
                "urn:example:new",
                play,
                &field("pubsub#access_model", "everyone")
            )
        ),
    );
    assert!(r.contains("<bad-request "), "{r}");
    // A new node takes its publish-options as configuration; lowering max_items trims it.
    let r = c.iq_id(
        "new",
        &format!(
            "<iq type='set' id='new'>{}</iq>",
            publish(
                "1",
                "urn:example:new",
                play,
                &field("pubsub#max_items", "3")
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    for i in 2..=4 {
        let id = format!("n{i}");
        let r = c.iq_id(
            &id,
            &format!(
                "<iq type='set' id='{id}'>{}</iq>",
                publish(&i.to_string(), "urn:example:new", play, "")
            ),
        );
        assert!(is_result(&r), "{r}");
    }
    let r = c.iq_id(
        "l3",
        &format!(
            "<iq type='get' id='l3'>{}</iq>",
            items_query("urn:example:new", "")
        ),
    );
    assert!(
        !r.contains("<item id=\"1\">")
            && r.contains("<item id=\"2\">")
            && r.contains("<item id=\"4\">"),
        "{r}"
    );

    // Default configuration, creation, deletion, purge.
    let r = c.iq_id("def", "<iq type='get' id='def'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><default/></pubsub></iq>");
    assert!(r.contains("<default>") || r.contains("<default "), "{r}");
    assert!(r.contains("<value>on_sub_and_presence</value>"), "{r}");
    let r = c.iq_id(
        "mk",
        "<iq type='set' id='mk'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='urn:example:made'/><configure><x xmlns='jabber:x:data' type='submit'><field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub></iq>",
    );
    assert!(is_result(&r), "{r}");
    let r = c.iq_id("mk2", "<iq type='set' id='mk2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='urn:example:made'/></pubsub></iq>");
    assert!(r.contains("<conflict "), "{r}");
    let r = c.iq_id(
        "empty",
        &format!(
            "<iq type='get' id='empty'>{}</iq>",
            items_query("urn:example:made", "")
        ),
    );
    assert!(r.contains("<items node=\"urn:example:made\"/>"), "{r}");
    let r = c.iq_id(
        "purge",
        "<iq type='set' id='purge'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><purge node='urn:example:new'/></pubsub></iq>",
    );
    assert!(is_result(&r), "{r}");
    let r = c.iq_id(
        "l4",
        &format!(
            "<iq type='get' id='l4'>{}</iq>",
            items_query("urn:example:new", "")
        ),
    );
    assert!(r.contains("<items node=\"urn:example:new\"/>"), "{r}");
    let r = c.iq_id(
        "del",
        "<iq type='set' id='del'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:example:new'/></pubsub></iq>",
    );
    assert!(is_result(&r), "{r}");
    let r = c.iq_id(
        "l5",
        &format!(
            "<iq type='get' id='l5'>{}</iq>",
            items_query("urn:example:new", "")
        ),
    );
    assert!(r.contains("<item-not-found "), "{r}");
    let r = c.iq_id(
        "aff",
        "<iq type='get' id='aff'><pubsub xmlns='http://jabber.org/protocol/pubsub'><affiliations/></pubsub></iq>",
    );
    assert!(
        r.contains("node=\"urn:example:made\"") && r.contains("affiliation=\"owner\""),
        "{r}"
    );
}

#[test]
fn deleting_a_node_notifies() {
    let srv = TestServer::with_users(&["juliet"]);
    let mut desk = Client::online(&srv, "juliet", "desk", &["urn:example:status"], false);
    let r = desk.iq_id(
        "p",
        &format!(
            "<iq type='set' id='p'>{}</iq>",
            publish(
                "x",
                "urn:example:status",
                "<s xmlns='urn:example:status'/>",
                ""
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    desk.event(&jid("juliet"), "urn:example:status");
    let r = desk.iq_id(
        "del",
        "<iq type='set' id='del'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='urn:example:status'/></pubsub></iq>",
    );
    assert!(is_result(&r), "{r}");
    let ev = desk.event(&jid("juliet"), "urn:example:status");
    assert!(ev.contains("<delete node=\"urn:example:status\"/>"), "{ev}");
}

// ---- XEP-0384 OMEMO ---------------------------------------------------------------------------

#[test]
fn omemo_devices_and_bundles_are_open_to_strangers() {
    let srv = TestServer::with_users(&["alice", "mallory"]);
    let mut alice = Client::online(&srv, "alice", "conversations", &[OMEMO_DEVICES], false);
    let mut stranger = Client::online(&srv, "mallory", "dino", &[OMEMO_DEVICES], false);
    let open = field("pubsub#access_model", "open");
    let devices = "<devices xmlns='urn:xmpp:omemo:2'><device id='12345'/><device id='4223' label='Gajim on Ubuntu Linux'/></devices>";
    let r = alice.iq_id(
        "dl",
        &format!(
            "<iq type='set' id='dl'>{}</iq>",
            publish("current", OMEMO_DEVICES, devices, &open)
        ),
    );
    assert!(is_result(&r), "{r}");
    let bundle = "<bundle xmlns='urn:xmpp:omemo:2'><spk id='0'>BASE64ENCODED</spk><spks>BASE64ENCODED</spks><ik>BASE64ENCODED</ik>\
                  <prekeys><pk id='0'>BASE64ENCODED</pk><pk id='1'>BASE64ENCODED</pk></prekeys></bundle>";
    let options = [open.clone(), field("pubsub#max_items", "max")].concat();
    let r = alice.iq_id(
        "bn",
        &format!(
            "<iq type='set' id='bn'>{}</iq>",
            publish("12345", OMEMO_BUNDLES, bundle, &options)
        ),
    );
    assert!(is_result(&r), "{r}");
    alice.event(&jid("alice"), OMEMO_DEVICES);
    // A stranger (no presence subscription) gets no event, but may fetch both.
    stranger.assert_no_event(OMEMO_DEVICES);
    let r = stranger.iq_id(
        "get-dl",
        &format!(
            "<iq type='get' id='get-dl' to='{}'>{}</iq>",
            jid("alice"),
            items_query(OMEMO_DEVICES, "")
        ),
    );
    assert!(is_result(&r), "{r}");
    assert!(
        r.contains(
            "<item id=\"current\"><devices xmlns=\"urn:xmpp:omemo:2\"><device id=\"12345\"/>"
        ),
        "{r}"
    );
    let r = stranger.iq_id(
        "get-bn",
        &format!(
            "<iq type='get' id='get-bn' to='{}'>{}</iq>",
            jid("alice"),
            items_query(OMEMO_BUNDLES, "<item id='12345'/>")
        ),
    );
    assert!(is_result(&r), "{r}");
    assert!(
        r.contains("<item id=\"12345\"><bundle xmlns=\"urn:xmpp:omemo:2\"><spk id=\"0\">"),
        "{r}"
    );
    assert!(r.contains("<pk id=\"1\">BASE64ENCODED</pk>"), "{r}");
    // An unknown item: an empty list (XEP-0060 §6.5.9.11); an unknown node: item-not-found.
    let r = stranger.iq_id(
        "get-none",
        &format!(
            "<iq type='get' id='get-none' to='{}'>{}</iq>",
            jid("alice"),
            items_query(OMEMO_BUNDLES, "<item id='999'/>")
        ),
    );
    assert!(
        r.contains(&format!("<items node=\"{OMEMO_BUNDLES}\"/>")),
        "{r}"
    );
    let r = stranger.iq_id(
        "get-missing",
        &format!(
            "<iq type='get' id='get-missing' to='{}'>{}</iq>",
            jid("alice"),
            items_query("urn:example:none", "")
        ),
    );
    assert!(r.contains("<item-not-found "), "{r}");

    // Legacy OMEMO (eu.siacs.conversations.axolotl) the same way.
    let legacy = "<list xmlns='eu.siacs.conversations.axolotl'><device id='12345'/></list>";
    let r = alice.iq_id(
        "old",
        &format!(
            "<iq type='set' id='old'>{}</iq>",
            publish(
                "current",
                "eu.siacs.conversations.axolotl.devicelist",
                legacy,
                &open
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    let r = stranger.iq_id(
        "get-old",
        &format!(
            "<iq type='get' id='get-old' to='{}'>{}</iq>",
            jid("alice"),
            items_query("eu.siacs.conversations.axolotl.devicelist", "")
        ),
    );
    assert!(
        r.contains("<list xmlns=\"eu.siacs.conversations.axolotl\"><device id=\"12345\"/></list>"),
        "{r}"
    );
}

// ---- addressing and bad requests --------------------------------------------------------------

#[test]
fn addressing_and_bad_requests() {
    let srv = TestServer::with_users(&["alice"]);
    let mut c = Client::online(&srv, "alice", "desk", &[], false);
    let nick = "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>";
    // To the own bare JID: the reply comes from it.
    let r = c.iq_id(
        "own",
        &format!(
            "<iq type='set' id='own' to='{}'>{}</iq>",
            jid("alice"),
            publish("1", NICK, nick, "")
        ),
    );
    assert!(
        is_result(&r) && r.contains(&format!("from=\"{}\"", jid("alice"))),
        "{r}"
    );
    // The server domain is no pubsub service; accounts that do not exist answer nothing.
    let r = c.iq_id(
        "dom",
        &format!(
            "<iq type='get' id='dom' to='{DOMAIN}'>{}</iq>",
            items_query(NICK, "")
        ),
    );
    assert!(r.contains("<service-unavailable "), "{r}");
    let r = c.iq_id(
        "nobody",
        &format!(
            "<iq type='get' id='nobody' to='nobody@{DOMAIN}'>{}</iq>",
            items_query(NICK, "")
        ),
    );
    assert!(r.contains("<service-unavailable "), "{r}");
    let subscribe = format!(
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><subscribe node='n' jid='{}'/></pubsub>",
        c.jid
    );
    let cases = [
        (
            "no-node",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish><item><x xmlns='urn:x'/></item></publish></pubsub>",
            "<nodeid-required ",
        ),
        (
            "no-item",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'/></pubsub>",
            "<item-required ",
        ),
        (
            "no-payload",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item/></publish></pubsub>",
            "<payload-required ",
        ),
        (
            "two-payloads",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><a xmlns='urn:x'/><b xmlns='urn:x'/></item></publish></pubsub>",
            "<invalid-payload ",
        ),
        (
            "two-items",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><a xmlns='urn:x'/></item><item><a xmlns='urn:x'/></item></publish></pubsub>",
            "<invalid-payload ",
        ),
        ("subscribe", subscribe.as_str(), "feature=\"subscribe\""),
        (
            "retract-none",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><retract node='n'><item/></retract></pubsub>",
            "<item-required ",
        ),
        (
            "unknown",
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><frobnicate/></pubsub>",
            "<bad-request ",
        ),
    ];
    for (id, payload, expected) in cases {
        let r = c.iq_id(id, &format!("<iq type='set' id='{id}'>{payload}</iq>"));
        assert!(
            r.contains("type=\"error\"") && r.contains(expected),
            "{id}: {r}"
        );
    }
    let r = c.iq_id("mi", &format!("<iq type='get' id='mi'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{NICK}' max_items='x'/></pubsub></iq>"));
    assert!(r.contains("<bad-request "), "{r}");
    // The connection is still fine after all that.
    c.barrier();
}

/// XEP-0163 §8.1 and XEP-0313 §7: an account's bare JID says it has PEP and an archive, lists
/// the nodes the requester may see, and describes them.
#[test]
fn account_disco_shows_pep_and_the_archive() {
    let srv = TestServer::with_users(&["juliet", "romeo"]);
    let mut desk = Client::online(&srv, "juliet", "desk", &[BOOKMARKS], false);
    let mut romeo = Client::online(&srv, "romeo", "orchard", &[], false);
    subscribe(&mut romeo, &mut desk, "romeo", "juliet");
    let r = desk.iq_id(
        "b1",
        &format!(
            "<iq type='set' id='b1'>{}</iq>",
            publish(
                "theplay@conference.shakespeare.lit",
                BOOKMARKS,
                "<conference xmlns='urn:xmpp:bookmarks:1' name='Play'/>",
                &bookmark_options()
            )
        ),
    );
    assert!(is_result(&r), "{r}");
    let nick = "<nick xmlns='http://jabber.org/protocol/nick'>Jule</nick>";
    let r = desk.iq_id(
        "n1",
        &format!(
            "<iq type='set' id='n1'>{}</iq>",
            publish("", "http://jabber.org/protocol/nick", nick, "")
        ),
    );
    assert!(is_result(&r), "{r}");

    let info = desk.iq_id(
        "i1",
        "<iq type='get' id='i1' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    for want in [
        "category=\"pubsub\" type=\"pep\"",
        "category=\"account\" type=\"registered\"",
        "var=\"urn:xmpp:mam:2\"",
        "var=\"http://jabber.org/protocol/pubsub#publish\"",
    ] {
        assert!(info.contains(want), "{want} missing: {info}");
    }

    // The owner sees both nodes; romeo (a subscriber) sees the presence-access nick node but
    // not the whitelisted bookmarks.
    let own = desk.iq_id(
        "i2",
        "<iq type='get' id='i2' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(
        own.contains(&format!("node=\"{BOOKMARKS}\""))
            && own.contains("node=\"http://jabber.org/protocol/nick\""),
        "{own}"
    );
    let theirs = romeo.iq_id(
        "i3",
        "<iq type='get' id='i3' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert!(
        theirs.contains("node=\"http://jabber.org/protocol/nick\"") && !theirs.contains(BOOKMARKS),
        "{theirs}"
    );
    let node = desk.iq_id(
        "i4",
        &format!("<iq type='get' id='i4' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{BOOKMARKS}'/></iq>"),
    );
    assert!(is_result(&node) && node.contains("type=\"leaf\""), "{node}");
    let hidden = romeo.iq_id(
        "i5",
        &format!("<iq type='get' id='i5' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='{BOOKMARKS}'/></iq>"),
    );
    assert!(hidden.contains("item-not-found"), "{hidden}");
}

/// A new presence subscription delivers the owner's last items at once (XEP-0163 §4.3.2 "on
/// subscription"), not only at the subscriber's next login.
#[test]
fn a_new_subscriber_gets_the_last_items_at_once() {
    let srv = TestServer::with_users(&["alice", "bob"]);
    let mut alice = Client::online(&srv, "alice", "desk", &[NICK], false);
    let mut bob = Client::online(&srv, "bob", "phone", &[NICK], false);
    let nick = "<nick xmlns='http://jabber.org/protocol/nick'>Alice the First</nick>";
    let r = alice.iq_id(
        "n",
        &format!("<iq type='set' id='n'>{}</iq>", publish("", NICK, nick, "")),
    );
    assert!(is_result(&r), "{r}");
    bob.barrier();
    bob.assert_no_event(NICK); // not subscribed yet
    subscribe(&mut bob, &mut alice, "bob", "alice");
    let ev = bob.event(&jid("alice"), NICK);
    assert!(ev.contains("Alice the First"), "{ev}");
}
