//! Interop with a real external component: Debian 12's Biboumi (9.0), the XMPP–IRC gateway,
//! attached to wockd over XEP-0114 (`[[components]]`), reaching a loopback ngircd.
//!
//! Biboumi's JIDs: `#chan%127.0.0.1@biboumi.localhost` is the channel `#chan` on the IRC server
//! `127.0.0.1`, `nick%127.0.0.1@biboumi.localhost` an IRC user, `127.0.0.1@biboumi.localhost`
//! the server (its ad-hoc `configure` sets the port, as ngircd listens on a free one).
//!
//! What a Prosody user sees with the same Biboumi (checked by hand against Prosody 0.12 with
//! mod_carbons and mod_mam), and what these tests assert of wockd:
//! - Biboumi addresses private IRC messages to the full JID of each resource that joined a
//!   channel on that IRC server, marked `<private xmlns='urn:xmpp:carbons:2'/>` and
//!   `<no-copy xmlns='urn:xmpp:hints'/>`: they are archived (MAM) but never carbon-copied to the
//!   account's other resources. What the user sends to an IRC nick is carbon-copied (`<sent/>`).
//! - With a channel configured `persistent` (ad-hoc `configure` on the channel JID), Biboumi
//!   stays on IRC when the user's last resource leaves the room (the server's unavailable
//!   presence to the room, RFC 6121 directed presence) and records the channel in its own
//!   archive; at the next join it replays what was said as MUC history with a delay stamp.
//!   Private messages that arrive while no resource is in a channel are dropped by Biboumi
//!   (src/bridge/bridge.cpp `Bridge::send_message` sends to no one): they never reach the
//!   server, so the server's offline storage is not involved, and that part is not tested.
//!
//! Biboumi runs on loopback only: it connects to wockd's component port at 127.0.0.1, to the
//! IRC server by the IP literal 127.0.0.1 (no DNS), binds its outgoing sockets to 127.0.0.1, has
//! its identd off (`identd_port=0`) and its database and log in a temporary directory. Every
//! process started here is stopped by its guard, also when a test fails; then the tail of
//! Biboumi's log (every stanza and IRC line, `log_level=0`) is printed. Set
//! `WOCKD_TEST_LOG=info` to see wockd's stanzas too (`log.xml`).

mod common;
mod transport_support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use transport_support::{Guard, Irc, ngircd, require};

const BIB: &str = "biboumi.localhost";
const SECRET: &str = "s3cret";
/// The IRC server as Biboumi names it in JIDs (and connects to: an IP literal, no DNS).
const IRC: &str = "127.0.0.1";
const NICK: &str = "alicenick";

/// Biboumi under a kill-on-drop guard; prints the tail of its log when a test fails.
struct Biboumi {
    log: PathBuf,
    _guard: Guard,
}

impl Drop for Biboumi {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- last {} lines of biboumi's log ({}) ---\n{}\n---",
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// Starts Biboumi for `BIB` against wockd's component listener at `component`; returns once it
/// has authenticated (its log says so), or fails the test.
fn biboumi(bin: &Path, component: SocketAddr) -> Biboumi {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("biboumi.log");
    let conf = d.join("biboumi.cfg");
    std::fs::write(
        &conf,
        format!(
            "hostname={BIB}\n\
             password={SECRET}\n\
             xmpp_server_ip={ip}\n\
             port={port}\n\
             admin=\n\
             identd_port=0\n\
             db_name={db}\n\
             log_file={log}\n\
             log_level=0\n\
             policy_directory={d}\n\
             outgoing_bind=127.0.0.1\n\
             realname_customization=true\n\
             realname_from_jid=false\n\
             ca_file=\n",
            ip = component.ip(),
            port = component.port(),
            db = d.join("biboumi.sqlite").display(),
            log = log.display(),
            d = d.display(),
        ),
    )
    .unwrap();
    let out = std::fs::File::create(d.join("stdout.log")).unwrap();
    let child = Command::new(bin)
        .process_group(0)
        .arg(&conf)
        .env_remove("BIBOUMI_PASSWORD")
        .env_remove("BIBOUMI_HOSTNAME")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start biboumi");
    let mut b = Biboumi {
        log,
        _guard: Guard {
            child,
            extra_pidfile: None,
            dir,
        },
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&b.log).unwrap_or_default();
        if text.contains("Authenticated with the XMPP server") {
            return b;
        }
        if let Ok(Some(status)) = b._guard.child.try_wait() {
            panic!("biboumi exited ({status}) before authenticating to wockd");
        }
        assert!(
            Instant::now() < deadline,
            "biboumi did not authenticate to wockd's component port {component} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// wockd, ngircd and Biboumi, stopped in reverse order on drop.
struct World {
    /// The IRC server's port.
    port: u16,
    // Field order is drop order: Biboumi leaves first (it QUITs IRC and closes its stream),
    // then wockd, then ngircd.
    bib: Biboumi,
    srv: TestServer,
    _ircd: Guard,
}

/// Starts everything, or None when Biboumi or ngircd is missing (skipped loudly; a failure
/// under `CI=true`).
fn world() -> Option<World> {
    let bib_bin = require("biboumi")?;
    let ircd_bin = require("ngircd")?;
    let (ircd, port) = ngircd(&ircd_bin);
    let srv = TestServer::start_with(
        move |c| {
            // Port 0, read back below: a port picked beforehand could be taken in between.
            c.component_listener.listen = vec![SocketAddr::from(([127, 0, 0, 1], 0))];
            c.components = vec![wockd::config::Component {
                domain: BIB.into(),
                secret: Some(SECRET.into()),
                ..Default::default()
            }];
            c.log.xml = std::env::var_os("WOCKD_TEST_LOG").is_some();
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    let bib = biboumi(&bib_bin, srv.components[0]);
    Some(World {
        port,
        bib,
        srv,
        _ircd: ircd,
    })
}

fn room(chan: &str) -> String {
    format!("{chan}%{IRC}@{BIB}")
}

fn irc_user(nick: &str) -> String {
    format!("{nick}%{IRC}@{BIB}")
}

/// Stanzas relayed from the component reach clients in the client namespace.
fn assert_client_ns(s: &str) {
    assert!(
        !s.contains("jabber:component:accept"),
        "a component stanza reached a client in the component namespace: {s}"
    );
}

/// Runs the two-step ad-hoc command `node` on `to` (XEP-0050): execute, then complete with
/// the data form `fields`; returns the completion.
fn adhoc(c: &mut Client, to: &str, node: &str, fields: &str) -> String {
    let form = c.iq(
        "set",
        Some(to),
        &format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'/>"
        ),
    );
    assert!(
        form.contains("type=\"result\"") && form.contains("status=\"executing\""),
        "{to} {node}: {form}"
    );
    let session = common::attr(&form, "sessionid");
    let done = c.iq(
        "set",
        Some(to),
        &format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='{node}' sessionid='{session}' action='complete'>\
             <x xmlns='jabber:x:data' type='submit'>{fields}</x></command>"
        ),
    );
    assert!(
        done.contains("type=\"result\"")
            && done.contains("status=\"completed\"")
            && done.contains("Configuration successfully applied."),
        "{to} {node}: {done}"
    );
    done
}

/// Points Biboumi at the loopback ngircd: plain port `port`, no TLS ports (its defaults are
/// 6667 and 6697/6670).
fn configure_irc_server(c: &mut Client, port: u16) {
    adhoc(
        c,
        &format!("{IRC}@{BIB}"),
        "configure",
        &format!(
            "<field var='ports'><value>{port}</value></field><field var='tls_ports'/>\
             <field var='verify_cert'><value>true</value></field>"
        ),
    );
}

/// Joins `chan` as `NICK` (asking for `history` stanzas of MUC history) and returns the
/// self-presence (status 110).
fn join(c: &mut Client, chan: &str, history: u32) -> String {
    let r = room(chan);
    c.send(&format!(
        "<presence to='{r}/{NICK}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='{history}'/></x></presence>"
    ));
    let me = format!("from=\"{r}/{NICK}\"");
    let p = c.wait_for("the MUC self-presence", 30, |s| {
        s.starts_with("<presence") && s.contains(&me) && s.contains("code=\"110\"")
    });
    assert_client_ns(&p);
    assert!(!p.contains("type=\"error\""), "{p}");
    p
}

/// A user logged in on resource `res` with initial presence sent.
fn online(srv: &TestServer, res: &str) -> Client {
    let mut c = Client::login(srv, "alice", res);
    c.send("<presence/>");
    c.barrier();
    c
}

#[test]
fn biboumi_channel_both_ways() {
    let Some(w) = world() else { return };
    let mut laptop = online(&w.srv, "laptop");
    configure_irc_server(&mut laptop, w.port);

    let mut bob = Irc::connect(w.port, "bob");
    bob.send("JOIN #chan");
    bob.expect(" 366 ");

    let me = join(&mut laptop, "#chan", 0);
    assert!(me.contains("to=\"alice@localhost/laptop\""), "{me}");
    // bob is an occupant; the IRC side sees the user join under the nick.
    let r = room("#chan");
    let occupant = laptop.wait_for("bob's occupant presence", 10, |s| {
        s.starts_with("<presence") && s.contains(&format!("from=\"{r}/bob\""))
    });
    assert_client_ns(&occupant);
    let j = bob.expect("JOIN");
    assert!(j.starts_with(&format!(":{NICK}!")), "{j}");

    // XMPP → IRC, and Biboumi's reflection back to the sender (with the message's id).
    laptop.send(&format!(
        "<message to='{r}' type='groupchat' id='gc1'><body>hi irc &amp; all</body></message>"
    ));
    let line = bob.expect("PRIVMSG #chan");
    assert!(
        line.starts_with(&format!(":{NICK}!")) && line.ends_with(":hi irc & all"),
        "{line}"
    );
    let refl = laptop.wait_for("the reflection of gc1", 10, |s| {
        s.starts_with("<message") && s.contains("id=\"gc1\"")
    });
    assert!(
        refl.contains(&format!("from=\"{r}/{NICK}\""))
            && refl.contains("type=\"groupchat\"")
            && refl.contains("hi irc &amp; all"),
        "{refl}"
    );

    // IRC → XMPP.
    bob.send("PRIVMSG #chan :hello from irc");
    let m = laptop.wait_for("bob's channel message", 15, |s| {
        s.starts_with("<message") && s.contains("hello from irc")
    });
    assert_client_ns(&m);
    assert!(
        m.contains(&format!("from=\"{r}/bob\""))
            && m.contains("type=\"groupchat\"")
            && m.contains("to=\"alice@localhost/laptop\""),
        "{m}"
    );

    // Leaving the room: Biboumi PARTs the IRC channel.
    laptop.send(&format!("<presence to='{r}/{NICK}' type='unavailable'/>"));
    let part = bob.expect(" PART ");
    assert!(part.starts_with(&format!(":{NICK}!")), "{part}");
    drop(w);
}

#[test]
fn biboumi_private_message_archived_not_carbon_copied() {
    let Some(w) = world() else { return };
    let mut laptop = online(&w.srv, "laptop");
    let mut phone = online(&w.srv, "phone");
    let on = phone.iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>");
    assert!(on.contains("type=\"result\""), "{on}");
    configure_irc_server(&mut laptop, w.port);

    let mut bob = Irc::connect(w.port, "bob");
    bob.send("JOIN #pm");
    bob.expect(" 366 ");
    // Biboumi sends private messages to the resources that are in a channel of that server.
    join(&mut laptop, "#pm", 0);
    bob.expect("JOIN");

    let peer = irc_user("bob");
    bob.send(&format!("PRIVMSG {NICK} :private hello"));
    let pm = laptop.wait_for("bob's private message", 15, |s| {
        s.starts_with("<message") && s.contains("private hello")
    });
    assert_client_ns(&pm);
    assert!(
        pm.contains(&format!("from=\"{peer}\""))
            && pm.contains("type=\"chat\"")
            && pm.contains("to=\"alice@localhost/laptop\""),
        "{pm}"
    );
    // Marked <private/> + <no-copy/> by Biboumi: no <received/> carbon on the phone (Prosody
    // does the same). The barrier orders it: wockd handled the message, carbons included,
    // before the phone's ping.
    phone.assert_none("a carbon of a message marked private", |s| {
        s.contains("private hello")
    });

    // What the user sends to the IRC nick reaches IRC and the phone as a <sent/> carbon.
    laptop.send(&format!(
        "<message to='{peer}' type='chat' id='r1'><body>reply to bob</body></message>"
    ));
    let line = bob.expect("PRIVMSG bob");
    assert!(
        line.starts_with(&format!(":{NICK}!")) && line.ends_with(":reply to bob"),
        "{line}"
    );
    let sent = phone.wait_for("the <sent/> carbon of r1", 10, |s| {
        s.contains("<sent ") && s.contains("urn:xmpp:carbons:2") && s.contains("reply to bob")
    });
    assert!(
        sent.contains("from=\"alice@localhost\"") && sent.contains(&format!("to=\"{peer}\"")),
        "{sent}"
    );

    // Both directions are in the user's archive.
    let query = format!(
        "<query xmlns='urn:xmpp:mam:2' queryid='pmq'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='with'><value>{peer}</value></field></x></query>"
    );
    let id = laptop.send_iq("type='set'", &query);
    let fin = laptop.answer(&id, 10);
    assert!(
        fin.contains("type=\"result\"") && fin.contains("<fin"),
        "{fin}"
    );
    let mut results = Vec::new();
    while let Some(r) = laptop.try_take(|s| s.contains("queryid=\"pmq\"")) {
        results.push(r);
    }
    assert_eq!(results.len(), 2, "archive with {peer}: {results:#?}");
    assert!(
        results[0].contains("private hello")
            && results[0].contains(&format!("from=\"{peer}\""))
            && results[0].contains("urn:xmpp:delay"),
        "{results:#?}"
    );
    assert!(
        results[1].contains("reply to bob") && results[1].contains(&format!("to=\"{peer}\"")),
        "{results:#?}"
    );
    assert!(
        !results
            .iter()
            .any(|r| r.contains("jabber:component:accept")),
        "{results:#?}"
    );
    drop(w);
}

/// Waits until a line of Biboumi's log (`log_level=0`: every stanza and IRC line it reads)
/// satisfies `pred`; fails the test after `secs`. Reading the log file leaves Biboumi alone
/// (polling its sqlite database can make its writes fail with SQLITE_BUSY).
fn wait_log(bib: &Biboumi, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let log = std::fs::read_to_string(&bib.log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| pred(l)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "biboumi's log shows no {what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn biboumi_persistent_channel_while_offline() {
    let Some(w) = world() else { return };
    let mut laptop = online(&w.srv, "laptop");
    configure_irc_server(&mut laptop, w.port);
    let mut bob = Irc::connect(w.port, "bob");
    bob.send("JOIN #away");
    bob.expect(" 366 ");
    join(&mut laptop, "#away", 0);
    bob.expect("JOIN");
    let r = room("#away");
    adhoc(
        &mut laptop,
        &r,
        "configure",
        "<field var='persistent'><value>true</value></field>",
    );

    // The user goes offline: wockd tells the room (RFC 6121 directed presence: the session
    // had sent presence to it), and Biboumi stays on IRC.
    laptop.send("</stream:stream>");
    laptop.rest_until_closed();
    drop(laptop);
    wait_log(
        &w.bib,
        "unavailable presence from alice/laptop to #away (wockd must send it when the session ends)",
        15,
        |l| {
            l.contains("XMPP RECEIVING: <presence")
                && l.contains("from='alice@localhost/laptop'")
                && l.contains(&format!("to='{r}/"))
                && l.contains("type='unavailable'")
        },
    );
    // Said on IRC while the user has no resource; Biboumi reads it (and records it).
    bob.send("PRIVMSG #away :said while you were away");
    wait_log(&w.bib, "bob's line in #away", 15, |l| {
        l.contains("IRC RECEIVING:")
            && l.contains("IrcMessage[PRIVMSG]{#away}{said while you were away}")
    });

    // Next login: Biboumi kept the IRC connection, and no resource is in #away any more (wockd
    // sent the unavailable presence when the session ended).
    let mut phone = online(&w.srv, "phone");
    let info = phone.iq(
        "set",
        Some(&format!("{IRC}@{BIB}")),
        "<command xmlns='http://jabber.org/protocol/commands' node='get-irc-connection-info' action='execute'/>",
    );
    assert!(
        info.contains(&format!("Connected to IRC server {IRC} on port {}", w.port)),
        "{info}"
    );
    assert!(
        !info.contains("#away from"),
        "Biboumi still counts a resource in #away: wockd did not send the room an unavailable presence when the session ended: {info}"
    );
    bob.send("NAMES #away");
    let names = bob.expect(" 353 ");
    assert!(
        names
            .rsplit(':')
            .next()
            .unwrap()
            .split(' ')
            .any(|n| n.trim_start_matches(['@', '+']) == NICK),
        "{NICK} left #away: {names}"
    );

    // Rejoining: what was said comes as history, with a delay stamp.
    join(&mut phone, "#away", 20);
    let h = phone.wait_for("the history of #away", 10, |s| {
        s.starts_with("<message") && s.contains("said while you were away")
    });
    assert_client_ns(&h);
    assert!(
        h.contains(&format!("from=\"{r}/bob\""))
            && h.contains("type=\"groupchat\"")
            && h.contains("<delay ")
            && h.contains("urn:xmpp:delay")
            && h.contains("to=\"alice@localhost/phone\""),
        "{h}"
    );
    drop(w);
}

/// Relay latency XMPP → IRC → XMPP through Biboumi attached to wockd: the user's groupchat
/// line reaches the raw IRC client, which answers at once; the time until the answer is back
/// at the user. Median and max of 50 (`cargo test --release --test component_biboumi --
/// --ignored --nocapture measure`).
#[test]
#[ignore]
fn measure_biboumi_relay() {
    let Some(w) = world() else { return };
    let mut laptop = online(&w.srv, "laptop");
    configure_irc_server(&mut laptop, w.port);
    let mut bob = Irc::connect(w.port, "bob");
    bob.send("JOIN #chan");
    bob.expect(" 366 ");
    join(&mut laptop, "#chan", 0);
    bob.expect("JOIN");
    let r = room("#chan");
    let (mut out, mut back) = (Vec::new(), Vec::new());
    for i in 0..50 {
        let t = std::time::Instant::now();
        laptop.send(&format!(
            "<message to='{r}' type='groupchat' id='m{i}'><body>ping {i}</body></message>"
        ));
        bob.expect(&format!(":ping {i}"));
        out.push(t.elapsed());
        let t = std::time::Instant::now();
        bob.send(&format!("PRIVMSG #chan :pong {i}"));
        laptop.wait_for("the pong", 10, |s| {
            s.starts_with("<message") && s.contains(&format!("pong {i}<"))
        });
        back.push(t.elapsed());
    }
    for v in [&mut out, &mut back] {
        v.sort();
    }
    println!(
        "Biboumi on wockd, XMPP → IRC: median {:?}, max {:?}; IRC → XMPP: median {:?}, max {:?} (50 each; ngircd's own per-client penalty is in these)",
        out[out.len() / 2],
        out[out.len() - 1],
        back[back.len() / 2],
        back[back.len() - 1]
    );
    drop(w);
}
