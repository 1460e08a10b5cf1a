//! The IM transport against a loopback ngircd (issue 4): XEP-0077 registration of an IRC
//! account, disco/gateway, a channel as a MUC room (occupants, join/part/nick change,
//! groupchat both ways with one reflection), 1:1 messages both ways, messages while the user
//! is offline reaching the mailbox, relay latency and RSS per legacy account.
//!
//! libpurple can be initialised once per process, so everything runs in one test function.

mod common;
mod transport_support;

use std::time::{Duration, Instant};

use common::{Raw, TestServer};
use transport_support::*;

const SVC: &str = "irc.localhost";

fn register_irc(c: &mut Raw, id: &str, nick: &str, port: u16) {
    c.send(&register_form(
        SVC,
        id,
        &[
            ("username", nick),
            ("split:0", "127.0.0.1"),
            ("opt:port", &port.to_string()),
            ("opt:ssl", "0"),
        ],
    ));
    let r = c.until(&format!("id=\"{id}\""));
    let rest = c.until(">");
    assert!(
        rest.contains("type=\"result\"") || r.contains("type=\"result\""),
        "registration failed: {r}{rest}"
    );
}

#[test]
fn irc_through_the_transport() {
    let Some(bin) = require("ngircd") else { return };
    let (mut ircd, port) = ngircd(&bin);

    let srv = TestServer::start_with(
        |c| {
            c.transport.enabled = true;
            // ngircd listens on 127.0.0.1: the public-address rule must let it through.
            c.transport.allow_private_addresses = true;
            c.transport.services = vec![irc_service(SVC)];
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "laptop");
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    c.until("</iq>");
    c.send("<presence/>");

    // Discovery and XEP-0100.
    c.send(&format!("<iq type='get' id='d1' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"));
    let info = c.until("</iq>");
    assert!(
        info.contains("category=\"gateway\"") && info.contains("type=\"irc\""),
        "{info}"
    );
    assert!(
        info.contains("jabber:iq:register") && info.contains("jabber:iq:gateway"),
        "{info}"
    );
    c.send(&format!("<iq type='set' id='g1' to='{SVC}'><query xmlns='jabber:iq:gateway'><prompt>odd nick</prompt></query></iq>"));
    let g = c.until("</iq>");
    assert!(g.contains("<jid>odd\\20nick@irc.localhost</jid>"), "{g}");

    // XEP-0077: the form comes from prpl-irc's user split and options.
    c.send(&format!(
        "<iq type='get' id='f1' to='{SVC}'><query xmlns='jabber:iq:register'/></iq>"
    ));
    let form = c.until("</iq>");
    for var in [
        "var=\"username\"",
        "var=\"split:0\"",
        "var=\"opt:port\"",
        "var=\"opt:ssl\"",
        "var=\"opt:ratelimit-interval\"",
    ] {
        assert!(form.contains(var), "{var} missing in {form}");
    }
    // Unregistered users are refused politely.
    c.send("<message to='bob@irc.localhost' type='chat' id='early'><body>x</body></message>");
    let e = c.until("</message>");
    assert!(e.contains("registration-required"), "{e}");

    // The IRC side: bob is in the channel before alice arrives.
    let mut bob = Irc::connect(port, "bob");
    bob.send("JOIN #wockd");
    bob.expect(" 366 ");

    register_irc(&mut c, "reg1", "alicebot", port);
    let up = until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    assert!(up.contains("from=\"irc.localhost\""), "{up}");

    // MUC join: occupant list and self-presence.
    c.send("<presence to='#wockd@irc.localhost/alicebot'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    let joined = until_all(
        &mut c,
        &[
            "from=\"#wockd@irc.localhost/bob\"",
            "code=\"110\"",
            "<subject>loopback test channel</subject>",
        ],
    );
    assert!(
        joined.contains("from=\"#wockd@irc.localhost/alicebot\""),
        "{joined}"
    );
    bob.expect("JOIN");

    // The joined room is in the user's XEP-0402 bookmarks (autojoin), for the other devices.
    c.send("<iq type='get' id='bm'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub></iq>");
    let bm = c.until("id=\"bm\"") + &c.until("</iq>");
    assert!(
        bm.contains("<item id=\"#wockd@irc.localhost\">")
            && bm.contains("<conference xmlns=\"urn:xmpp:bookmarks:1\"")
            && bm.contains("autojoin=\"true\"")
            && bm.contains("<nick>alicebot</nick>"),
        "{bm}"
    );

    // Room discovery: the network's public channels (IRC LIST), not only the user's.
    bob.send("JOIN #elsewhere");
    bob.expect(" 366 ");
    bob.send("TOPIC #elsewhere :a room alice never joined");
    bob.expect("TOPIC");
    c.send(&format!(
        "<iq type='get' id='di1' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
    ));
    let items = c.until("id=\"di1\"") + &c.until("</iq>");
    assert!(items.contains("type=\"result\""), "{items}");
    assert!(
        items.contains("jid=\"#elsewhere@irc.localhost\"")
            && items.contains("name=\"#elsewhere (1 user): a room alice never joined\""),
        "{items}"
    );
    assert!(items.contains("jid=\"#wockd@irc.localhost\""), "{items}");
    // XEP-0059 max: one item and the total.
    c.send(&format!(
        "<iq type='get' id='di2' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#items'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></query></iq>"
    ));
    let one = c.until("id=\"di2\"") + &c.until("</iq>");
    assert_eq!(one.matches("<item ").count(), 1, "{one}");
    let all = items.matches("<item ").count();
    assert!(all >= 2, "{items}");
    assert!(
        one.contains(&format!("<count>{all}</count>")),
        "{one}\nvs {items}"
    );

    // Groupchat both ways; the user's own message reflected once with its id.
    bob.send("PRIVMSG #wockd :hello from irc");
    let m = until_all(&mut c, &["hello from irc"]);
    assert!(
        m.contains("type=\"groupchat\"") && m.contains("from=\"#wockd@irc.localhost/bob\""),
        "{m}"
    );
    c.send("<message to='#wockd@irc.localhost' type='groupchat' id='gc1'><body>hi irc &amp; all</body></message>");
    let l = bob.expect("PRIVMSG #wockd");
    assert!(l.contains(":hi irc & all"), "{l}");
    let refl = until_all(&mut c, &["id=\"gc1\""]);
    assert!(
        refl.contains("from=\"#wockd@irc.localhost/alicebot\"")
            && refl.contains("hi irc &amp; all"),
        "{refl}"
    );
    let again = drain(&mut c, Duration::from_millis(500));
    assert!(!again.contains("hi irc"), "reflected twice: {again}");

    // Another IRC user joins, changes nick, parts.
    let mut carol = Irc::connect(port, "carol");
    carol.send("JOIN #wockd");
    carol.expect(" 366 ");
    until_all(&mut c, &["from=\"#wockd@irc.localhost/carol\""]);
    carol.send("NICK carol2");
    carol.expect("NICK");
    let nick = until_all(
        &mut c,
        &["code=\"303\"", "from=\"#wockd@irc.localhost/carol2\""],
    );
    assert!(nick.contains("nick=\"carol2\""), "{nick}");
    carol.send("PART #wockd :bye");
    let part = until_all(&mut c, &["type=\"unavailable\""]);
    assert!(part.contains("#wockd@irc.localhost/carol2"), "{part}");

    // 1:1 both ways.
    bob.send("PRIVMSG alicebot :private hello");
    let pm = until_all(&mut c, &["private hello"]);
    assert!(
        pm.contains("from=\"bob@irc.localhost\"") && pm.contains("type=\"chat\""),
        "{pm}"
    );
    c.send("<message to='bob@irc.localhost' type='chat' id='pm1'><body>hi bob</body></message>");
    let l = bob.expect("PRIVMSG bob");
    assert!(l.contains(":hi bob") && l.starts_with(":alicebot!"), "{l}");
    assert!(
        !pm.contains("xhtml-im"),
        "plain text needs no XHTML-IM: {pm}"
    );

    // Formatting: mIRC bold arrives as XEP-0071 XHTML-IM beside the plain body. The user's
    // XHTML-IM goes to libpurple as markup; prpl-irc sends its plain text (no tags leak).
    bob.send("PRIVMSG alicebot :some \x02bold\x02 news");
    let fm = until_all(&mut c, &["bold</", "</message>"]);
    assert!(
        fm.contains("<body>some bold news</body>")
            && fm.contains("<html xmlns=\"http://jabber.org/protocol/xhtml-im\">")
            && fm.contains("<body xmlns=\"http://www.w3.org/1999/xhtml\">"),
        "{fm}"
    );
    c.send("<message to='bob@irc.localhost' type='chat' id='pm2'><body>so strong</body><html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>so <strong>strong</strong></body></html></message>");
    let l = bob.expect("PRIVMSG bob");
    assert!(l.ends_with("PRIVMSG bob :so strong"), "{l:?}");

    // Relay latency XMPP → IRC → XMPP (bob echoes).
    let mut samples = Vec::new();
    let mut legs = Vec::new();
    for i in 0..40 {
        let t0 = Instant::now();
        c.send(&format!(
            "<message to='bob@irc.localhost' type='chat'><body>ping {i}</body></message>"
        ));
        let l = bob.expect(&format!(":ping {i}"));
        assert!(l.contains("PRIVMSG bob"), "{l}");
        let t1 = t0.elapsed();
        bob.send(&format!("PRIVMSG alicebot :pong {i}"));
        until_all(&mut c, &[&format!("pong {i}<")]);
        samples.push(t0.elapsed());
        legs.push((t1, t0.elapsed() - t1));
    }
    eprintln!("legs (XMPP→IRC, IRC→XMPP), first 5: {:?}", &legs[..5]);
    samples.sort();
    eprintln!(
        "relay latency XMPP→IRC→XMPP over {} round trips: median {:?}, p99 {:?}",
        samples.len(),
        samples[samples.len() / 2],
        samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
    );

    // The user goes offline; the legacy account stays connected and messages wait.
    c.send("</stream:stream>");
    c.until_closed(); // the session has ended once the server closes the stream
    drop(c);
    bob.send("PRIVMSG alicebot :while you were away");
    srv.wait_mailbox("alice", 1, 20);
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "phone");
    c.send("<presence/>");
    let off = until_all(&mut c, &["while you were away"]);
    assert!(off.contains("from=\"bob@irc.localhost\""), "{off}");
    assert!(off.contains("urn:xmpp:delay"), "no delay stamp: {off}");

    // RSS with 1, 5 and 20 legacy accounts connected.
    let mut rss = vec![(1, rss_kib())];
    for n in 2..=20 {
        register_irc(&mut c, &format!("reg{n}"), &format!("alicebot{n}"), port);
        until_all(&mut c, &[&format!("alicebot{n}@127.0.0.1: online")]);
        if n == 2 {
            // A second account on the same network: its contacts get `%2` JIDs, both ways.
            bob.send("PRIVMSG alicebot2 :to your second nick");
            let m = until_all(&mut c, &["to your second nick"]);
            assert!(m.contains("from=\"bob%2@irc.localhost\""), "{m}");
            c.send("<message to='bob%2@irc.localhost' type='chat'><body>from the second</body></message>");
            let l = bob.expect(":from the second");
            assert!(l.starts_with(":alicebot2!"), "{l}");
        }
        if n == 5 || n == 20 {
            rss.push((n, rss_kib()));
        }
    }
    eprintln!("RSS of the test process (server + libpurple + clients): {rss:?} (accounts, KiB)");

    // Ad-hoc: list accounts.
    c.send(&format!(
        "<iq type='set' id='ah1' to='{SVC}'><command xmlns='http://jabber.org/protocol/commands' node='accounts' action='execute'/></iq>"
    ));
    let ah = c.until("id=\"ah1\"");
    let ah = ah + &c.until("</iq>");
    assert!(ah.contains("alicebot20@127.0.0.1: online"), "{ah}");

    // The IRC server restarts: the account reconnects (backoff) and rejoins its channel.
    drop(bob);
    restart_ngircd(&mut ircd, &bin, port);
    let back = until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    assert!(back.contains("from=\"irc.localhost\""), "{back}");
    let mut bob = Irc::connect(port, "bob");
    bob.send("JOIN #wockd");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        bob.send("NAMES #wockd");
        let names = bob.expect(" 353 ");
        if names.split([' ', ':', '@', '+']).any(|n| n == "alicebot") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alicebot never rejoined #wockd: {names}"
        );
        bob.expect(" 366 ");
    }
}
