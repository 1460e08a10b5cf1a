//! Control of legacy accounts through the IM transport, against real peers on loopback:
//!
//! 1. XEP-0050 ad-hoc commands on the service JID (`src/transport/adhoc.rs`) against ngircd:
//!    the command list, `accounts`, `disable`/`enable`, `relogin`, `settings` and `remove`,
//!    each checked by its effect on the IRC side (a raw IRC client sees the nick quit, join,
//!    change its real name, leave).
//! 2. Reconnects (`src/transport/reconnect.rs`) against a port that closes every connection
//!    with `ERROR`: the user is told why once, the service presence shows the state, and the
//!    attempts are spaced by growing delays (no reconnect storm); disable stops the retries,
//!    enable starts a fresh run, remove ends them. The give-up after `MAX_ATTEMPTS` (8) is not
//!    reached here: with the fixed 2 s base the 8th attempt comes 127–254 s after the first,
//!    and there is no configuration knob for the base.
//! 3. Headless prompts (`src/transport/requests.rs`): an IRC account with TLS to a port that
//!    presents a self-signed certificate. The user gets an XEP-0004 form from the service JID,
//!    nothing is sent on the connection before the answer, "Reject" leaves the account failed
//!    with a clear message, and answering "accept" lets it log in.
//!
//! libpurple can be initialised once per process, so everything runs in one test function.

mod common;
mod transport_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use transport_support::*;

const SVC: &str = "irc.localhost";
const COMMANDS: &str = "http://jabber.org/protocol/commands";

// ---- the XMPP side: whole stanzas, waited for by predicate ---------------------------------

/// The shared stanza-level client; IQ answers may take up to 15 s.
type Xmpp = Client;

fn xmpp(srv: &TestServer, user: &str, resource: &str) -> Xmpp {
    let mut c = Client::login(srv, user, resource);
    c.timeout = Duration::from_secs(15);
    c
}

impl Xmpp {
    /// Runs an ad-hoc command step: `execute` without a form, `complete` with one.
    fn command(&mut self, node: &str, session: Option<&str>, form: &[(&str, &str)]) -> String {
        let session = session
            .map(|s| format!(" sessionid='{s}'"))
            .unwrap_or_default();
        let (action, payload) = if form.is_empty() {
            ("execute", String::new())
        } else {
            ("complete", submit(form))
        };
        let r = self.iq_stanza(&format!(
            "<iq type='set' to='{SVC}'><command xmlns='{COMMANDS}' node='{node}' action='{action}'{session}>{payload}</command></iq>"
        ));
        assert!(r.contains("type=\"result\""), "command {node} failed: {r}");
        r
    }

    /// A two-step command: the account form, then the chosen account (by its label) with
    /// `extra` fields. Returns the account's form value and the completion note.
    fn account_command(
        &mut self,
        node: &str,
        label: &str,
        extra: &[(&str, &str)],
    ) -> (String, String) {
        let first = self.command(node, None, &[]);
        assert!(
            first.contains("status=\"executing\"") && first.contains("var=\"account\""),
            "{node}: no account form: {first}"
        );
        let account = option_value(&first, label)
            .unwrap_or_else(|| panic!("{node}: the form does not offer {label}: {first}"));
        let session = attr(&first, "sessionid").expect("no sessionid");
        let mut fields = vec![("account", account.as_str())];
        fields.extend_from_slice(extra);
        let done = self.command(node, Some(&session), &fields);
        assert!(
            done.contains("status=\"completed\""),
            "{node} did not complete: {done}"
        );
        (account, note(&done))
    }

    /// The text of the `accounts` command.
    fn accounts(&mut self) -> String {
        let r = self.command("accounts", None, &[]);
        assert!(r.contains("status=\"completed\""), "{r}");
        note(&r)
    }
}

fn submit(fields: &[(&str, &str)]) -> String {
    let mut x = String::from("<x xmlns='jabber:x:data' type='submit'>");
    for (k, v) in fields {
        x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    x + "</x>"
}

fn attr(stanza: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = stanza.find(&key)? + key.len();
    let j = stanza[i..].find('"')?;
    Some(stanza[i..i + j].to_owned())
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let i = s.find(open)? + open.len();
    let j = s[i..].find(close)?;
    Some(&s[i..i + j])
}

fn note(stanza: &str) -> String {
    let i = stanza.find("<note").expect("no note");
    between(&stanza[i..], ">", "</note>")
        .expect("empty note")
        .to_owned()
}

fn body(stanza: &str) -> String {
    between(stanza, "<body>", "</body>")
        .unwrap_or_default()
        .to_owned()
}

/// The value of the list option labelled `label` in a form.
fn option_value(form: &str, label: &str) -> Option<String> {
    let i = form.find(&format!("<option label=\"{label}\">"))?;
    between(&form[i..], "<value>", "</value>").map(str::to_owned)
}

/// The value of the field `var` in a form.
fn field_value(form: &str, var: &str) -> Option<String> {
    let i = form.find(&format!("var=\"{var}\""))?;
    let field = &form[i..i + form[i..].find("</field>")?];
    between(field, "<value>", "</value>").map(str::to_owned)
}

fn from_service(s: &str) -> bool {
    s.contains(&format!("from=\"{SVC}\""))
}

fn service_presence(s: &str) -> bool {
    s.starts_with("<presence") && from_service(s)
}

fn service_message(s: &str) -> bool {
    s.starts_with("<message") && from_service(s)
}

fn register_irc(x: &mut Xmpp, nick: &str, port: u16, ssl: bool) {
    let r = x.iq_stanza(
        &register_form(
            SVC,
            "",
            &[
                ("username", nick),
                ("split:0", "127.0.0.1"),
                ("opt:port", &port.to_string()),
                ("opt:ssl", if ssl { "1" } else { "0" }),
            ],
        )
        .replacen(" id=''", "", 1),
    );
    assert!(r.contains("type=\"result\""), "registration failed: {r}");
}

// ---- the IRC side -----------------------------------------------------------------------------

/// The nicks ISON finds online among `nicks`.
fn ison(irc: &mut Irc, nicks: &str) -> Vec<String> {
    irc.send(&format!("ISON {nicks}"));
    let l = irc.expect(" 303 ");
    l.rsplit_once(" :")
        .map(|(_, n)| n.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Waits until `nick` quits (seen from a shared channel).
fn expect_quit(irc: &mut Irc, nick: &str) -> String {
    let l = irc.expect(&format!(":{nick}!"));
    if l.contains(" QUIT") {
        return l;
    }
    // Another line of the nick (a late message): keep looking for the QUIT.
    let l = irc.expect(" QUIT");
    assert!(l.starts_with(&format!(":{nick}!")), "{l}");
    l
}

fn expect_join(irc: &mut Irc, nick: &str, channel: &str) {
    loop {
        let l = irc.expect(&format!(":{nick}!"));
        if l.contains(&format!(" JOIN {channel}")) || l.contains(&format!(" JOIN :{channel}")) {
            return;
        }
        assert!(!l.contains(" QUIT"), "{nick} quit instead of joining: {l}");
    }
}

// ---- a port that refuses IRC ---------------------------------------------------------------

/// Accepts every connection, reads the client's first bytes, answers `ERROR :Closing link`
/// and closes. Each accept is reported with its time.
fn closing_server() -> (u16, Receiver<Instant>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if tx.send(Instant::now()).is_err() {
                return;
            }
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b);
                let _ = s.write_all(b"ERROR :Closing link: (wockd-test) [refused by the test]\r\n");
                let _ = s.shutdown(Shutdown::Write);
                // Drain until the client closes, so it sees a clean EOF and not a reset.
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            });
        }
    });
    (port, rx)
}

// ---- a TLS port with a self-signed certificate, speaking just enough IRC -----------------

#[derive(Debug)]
enum TlsEv {
    Accepted,
    Handshake,
    Line(String),
    Closed,
}

fn tls_irc_server() -> (u16, Receiver<TlsEv>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            if tx.send(TlsEv::Accepted).is_err() {
                return;
            }
            let (cfg, tx) = (cfg.clone(), tx.clone());
            std::thread::spawn(move || serve_tls(s, cfg, tx));
        }
    });
    (port, rx)
}

fn serve_tls(s: TcpStream, cfg: Arc<rustls::ServerConfig>, tx: Sender<TlsEv>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            let _ = tx.send(TlsEv::Closed);
            return;
        }
    }
    let _ = tx.send(TlsEv::Handshake);
    let mut r = BufReader::new(tls);
    let mut nick = None;
    let mut user = false;
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => {
                let _ = tx.send(TlsEv::Closed);
                return;
            }
        }
        let l = line.trim_end().to_owned();
        let _ = tx.send(TlsEv::Line(l.clone()));
        let registering = nick.is_none() || !user;
        if let Some(n) = l.strip_prefix("NICK ") {
            nick = Some(n.trim_start_matches(':').to_owned());
        }
        user |= l.starts_with("USER ");
        let reply = match &nick {
            // Registered: welcome and an empty MOTD, which prpl-irc takes as logged in.
            Some(n) if registering && user => Some(format!(
                ":tls.test 001 {n} :Welcome\r\n:tls.test 376 {n} :End of MOTD\r\n"
            )),
            _ => l
                .strip_prefix("PING ")
                .map(|p| format!(":tls.test PONG tls.test {p}\r\n")),
        };
        if let Some(reply) = reply
            && (r.get_mut().write_all(reply.as_bytes()).is_err() || r.get_mut().flush().is_err())
        {
            let _ = tx.send(TlsEv::Closed);
            return;
        }
    }
}

/// A new connection to the TLS port and its completed handshake.
fn expect_handshake(tls: &Receiver<TlsEv>) {
    assert!(matches!(next_tls(tls, "a connection", 10), TlsEv::Accepted));
    assert!(matches!(
        next_tls(tls, "the TLS handshake", 10),
        TlsEv::Handshake
    ));
}

fn next_tls(rx: &Receiver<TlsEv>, what: &str, secs: u64) -> TlsEv {
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(e) => e,
        Err(RecvTimeoutError::Timeout) => panic!("TLS port: timed out waiting for {what}"),
        Err(e) => panic!("TLS port: {e}"),
    }
}

// ---- the test ---------------------------------------------------------------------------------

#[test]
fn transport_control() {
    let Some(bin) = require("ngircd") else { return };
    let t0 = Instant::now();
    let (_ircd, port) = ngircd(&bin);

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
    let mut x = xmpp(&srv, "alice", "laptop");
    let roster = x.iq_stanza("<iq type='get'><query xmlns='jabber:iq:roster'/></iq>");
    assert!(roster.contains("type=\"result\""), "{roster}");
    x.send("<presence/>");

    // Nothing asked yet: a chat message to the service says so.
    x.send(&format!(
        "<message to='{SVC}' type='chat'><body>hello?</body></message>"
    ));
    let nothing = x.wait_for("the reply to a stray message", 10, service_message);
    assert!(
        body(&nothing).contains("Nothing is waiting for an answer"),
        "{nothing}"
    );

    // No accounts yet: the command says so rather than showing an empty list.
    assert!(
        x.accounts().contains("No accounts"),
        "accounts before registering"
    );

    // ---- 1. XEP-0050 ad-hoc commands ----------------------------------------------------------

    let mut bob = Irc::connect(port, "bob");
    bob.send("JOIN #wockd");
    bob.expect(" 366 ");
    assert!(ison(&mut bob, "alicebot").is_empty());

    register_irc(&mut x, "alicebot", port, false);
    let up = x.wait_for("the service presence: online", 20, |s| {
        service_presence(s) && s.contains("alicebot@127.0.0.1: online")
    });
    assert!(!up.contains("type="), "online yet not available: {up}");
    x.send("<presence to='#wockd@irc.localhost/alicebot'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    x.wait_for("the room's self-presence", 15, |s| {
        s.starts_with("<presence") && s.contains("code=\"110\"")
    });
    expect_join(&mut bob, "alicebot", "#wockd");

    // The command list: disco#items on the commands node.
    let items = x.iq_stanza(&format!(
        "<iq type='get' to='{SVC}'><query xmlns='http://jabber.org/protocol/disco#items' node='{COMMANDS}'/></iq>"
    ));
    assert!(items.contains("type=\"result\""), "{items}");
    for node in [
        "accounts", "relogin", "enable", "disable", "remove", "settings",
    ] {
        assert!(
            items.contains(&format!("<item jid=\"{SVC}\" node=\"{node}\"")),
            "command {node} not listed: {items}"
        );
    }
    // An unknown command is an error, not an empty success.
    let bad = x.iq_stanza(&format!(
        "<iq type='set' to='{SVC}'><command xmlns='{COMMANDS}' node='no-such' action='execute'/></iq>"
    ));
    assert!(
        bad.contains("type=\"error\"") && bad.contains("item-not-found"),
        "{bad}"
    );

    // accounts: the registered account and its state.
    let list = x.accounts();
    assert_eq!(list, "alicebot@127.0.0.1: online");
    const BOT: &str = "alicebot@127.0.0.1";

    // Another user sees none of alice's accounts and cannot act on them by id.
    let alice_id = option_value(&x.command("disable", None, &[]), BOT).unwrap();
    srv.add_user("eve", "pw");
    let mut eve = xmpp(&srv, "eve", "x");
    assert!(eve.accounts().contains("No accounts"));
    let r = eve.iq_stanza(&format!(
        "<iq type='set' to='{SVC}'><command xmlns='{COMMANDS}' node='disable' action='complete' sessionid='s1'>{}</command></iq>",
        submit(&[("account", &alice_id)])
    ));
    assert!(
        r.contains("type=\"error\"") || r.contains("No accounts"),
        "eve acted on alice's account: {r}"
    );
    bob.assert_quiet(":alicebot!", Duration::from_secs(1));
    assert_eq!(x.accounts(), "alicebot@127.0.0.1: online");

    // disable: the nick quits IRC and stays away; the state says disabled.
    x.clear();
    let (id, n) = x.account_command("disable", BOT, &[]);
    assert!(n.contains("disabled"), "{n}");
    let q = expect_quit(&mut bob, "alicebot");
    eprintln!("disable → {q}");
    x.wait_for("the service presence: disabled", 10, |s| {
        service_presence(s) && s.contains("alicebot@127.0.0.1: disabled")
    });
    assert!(ison(&mut bob, "alicebot").is_empty(), "still on IRC");
    assert_eq!(x.accounts(), "alicebot@127.0.0.1: disabled");

    // settings of a disabled account are saved, and it stays disabled.
    let (_, n) = x.account_command("settings", BOT, &[("opt:realname", "Edited While Off")]);
    assert!(n.contains("settings saved"), "{n}");
    bob.assert_quiet(":alicebot!", Duration::from_secs(2));
    assert!(
        ison(&mut bob, "alicebot").is_empty(),
        "disabled, yet on IRC"
    );
    assert_eq!(x.accounts(), "alicebot@127.0.0.1: disabled");

    // enable: back on IRC (with the new settings) and in the channel (the room is rejoined).
    x.clear();
    let (_, n) = x.account_command("enable", BOT, &[]);
    assert!(n.contains("enabled"), "{n}");
    expect_join(&mut bob, "alicebot", "#wockd");
    x.wait_for("the service presence: online again", 15, |s| {
        service_presence(s) && s.contains("alicebot@127.0.0.1: online")
    });
    assert_eq!(ison(&mut bob, "alicebot"), ["alicebot"]);
    assert_eq!(x.accounts(), "alicebot@127.0.0.1: online");
    bob.send("WHOIS alicebot");
    let whois = bob.expect(" 311 ");
    assert!(whois.ends_with(":Edited While Off"), "{whois}");
    // enable again while online: nothing changes (no reconnect, still online).
    x.account_command("enable", BOT, &[]);
    bob.assert_quiet(":alicebot!", Duration::from_secs(1));
    assert_eq!(x.accounts(), "alicebot@127.0.0.1: online");

    // relogin: a new IRC connection (quit, then join again).
    x.clear();
    let (_, n) = x.account_command("relogin", BOT, &[]);
    assert!(n.contains("logging in again"), "{n}");
    expect_quit(&mut bob, "alicebot");
    expect_join(&mut bob, "alicebot", "#wockd");
    x.wait_for("the service presence: online after relogin", 15, |s| {
        service_presence(s) && s.contains("alicebot@127.0.0.1: online")
    });

    // settings: the form shows the current options; a new real name reaches IRC.
    let form = x.command("settings", None, &[]);
    assert!(
        form.contains("var=\"opt:realname\"") && form.contains("var=\"password\""),
        "settings form: {form}"
    );
    assert_eq!(field_value(&form, "opt:port"), Some(port.to_string()));
    assert_eq!(
        field_value(&form, "opt:ratelimit-interval").as_deref(),
        Some("0")
    );
    bob.send("WHOIS alicebot");
    let before = bob.expect(" 311 ");
    assert!(!before.ends_with(":Control Test Name"), "{before}");
    x.clear();
    let session = attr(&form, "sessionid").unwrap();
    let done = x.command(
        "settings",
        Some(&session),
        &[("account", &id), ("opt:realname", "Control Test Name")],
    );
    assert!(
        done.contains("status=\"completed\"") && note(&done).contains("settings saved"),
        "{done}"
    );
    expect_quit(&mut bob, "alicebot");
    expect_join(&mut bob, "alicebot", "#wockd");
    bob.send("WHOIS alicebot");
    let after = bob.expect(" 311 ");
    assert!(
        after.ends_with(":Control Test Name"),
        "real name not applied: {after}"
    );
    let form = x.command("settings", None, &[]);
    assert_eq!(
        field_value(&form, "opt:realname").as_deref(),
        Some("Control Test Name"),
        "{form}"
    );
    // Only what was submitted changed.
    assert_eq!(field_value(&form, "opt:port"), Some(port.to_string()));

    // remove: the nick leaves IRC, the list is empty, the service goes offline.
    x.clear();
    let (_, n) = x.account_command("remove", BOT, &[]);
    assert!(n.contains("removed"), "{n}");
    expect_quit(&mut bob, "alicebot");
    x.wait_for("the service going unavailable after remove", 10, |s| {
        service_presence(s) && s.contains("type=\"unavailable\"")
    });
    assert!(ison(&mut bob, "alicebot").is_empty(), "still on IRC");
    assert!(x.accounts().contains("No accounts"));
    bob.assert_quiet(":alicebot!", Duration::from_secs(2));
    let after_remove = x.command("disable", None, &[]);
    assert!(
        after_remove.contains("status=\"completed\"") && after_remove.contains("No accounts"),
        "{after_remove}"
    );
    eprintln!("[{:?}] ad-hoc commands done", t0.elapsed());

    // ---- 2. Errors that loop: told once, growing delays ---------------------------------------

    let (storm_port, accepts) = closing_server();
    x.clear();
    register_irc(&mut x, "alicestorm", storm_port, false);
    let first_at = accepts
        .recv_timeout(Duration::from_secs(10))
        .expect("the account never connected to the closing port");
    let mut at = vec![first_at];
    let mut seen: Vec<String> = Vec::new();
    let keep = |s: &str| service_message(s) || service_presence(s);
    // Four attempts: three delays, 1–2 s, 2–4 s, 4–8 s by reconnect.rs (BASE 2 s, ×2, jitter).
    let deadline = Instant::now() + Duration::from_secs(25);
    while at.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} connection attempts in 25 s",
            at.len()
        );
        seen.extend(x.collect_for(Duration::from_millis(100), keep));
        if let Ok(t) = accepts.try_recv() {
            at.push(t);
        }
    }
    // The fifth attempt is due 8–16 s after the fourth: nothing within 5 s.
    let quiet_from = Instant::now();
    while quiet_from.elapsed() < Duration::from_secs(5) {
        seen.extend(x.collect_for(Duration::from_millis(100), keep));
        if let Ok(t) = accepts.try_recv() {
            at.push(t);
        }
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("[{:?}] reconnect gaps: {gaps:?}", t0.elapsed());
    assert_eq!(
        at.len(),
        4,
        "a fifth attempt came too early (a storm?): gaps {gaps:?}"
    );
    let slack = Duration::from_millis(1500);
    for (i, g) in gaps.iter().enumerate() {
        let full = Duration::from_secs(2 << i);
        assert!(
            *g + Duration::from_millis(300) >= full / 2 && *g <= full + slack,
            "delay {} is {g:?}, not within [{:?}, {:?}]: {gaps:?}",
            i + 1,
            full / 2,
            full
        );
    }
    assert!(gaps[2] > gaps[0], "delays do not grow: {gaps:?}");
    let msgs: Vec<String> = seen
        .iter()
        .filter(|s| s.starts_with("<message"))
        .map(|s| body(s))
        .collect();
    eprintln!("told: {msgs:#?}");
    assert_eq!(
        msgs.len(),
        1,
        "the user should hear once about {} identical failures: {msgs:#?}",
        at.len()
    );
    assert!(
        msgs[0].starts_with("alicestorm@127.0.0.1: disconnected: ")
            && msgs[0].contains("Reconnecting in"),
        "{}",
        msgs[0]
    );
    // The delay announced is the one taken (within rounding and scheduling).
    let told_secs: f64 = between(&msgs[0], "Reconnecting in ", "s.")
        .and_then(|n| n.parse().ok())
        .expect("no delay in the message");
    assert!(
        (gaps[0].as_secs_f64() - told_secs).abs() <= 0.75,
        "told {told_secs} s, reconnected after {:?}",
        gaps[0]
    );
    let reason = msgs[0]
        .trim_start_matches("alicestorm@127.0.0.1: disconnected: ")
        .split(". Reconnecting")
        .next()
        .unwrap()
        .to_owned();
    assert!(!reason.is_empty());
    let down: Vec<&String> = seen
        .iter()
        .filter(|s| s.starts_with("<presence") && s.contains("<show>xa</show>"))
        .collect();
    assert!(
        down.iter().any(|s| s.contains(&format!(
            "alicestorm@127.0.0.1: down ({reason}), reconnecting"
        ))),
        "no service presence with the reason: {seen:#?}"
    );
    let list = x.accounts();
    assert!(
        list.starts_with("alicestorm@127.0.0.1: down (")
            || list == "alicestorm@127.0.0.1: connecting",
        "{list}"
    );
    // Disabling stops the retries (the pending timer is cancelled).
    const STORM: &str = "alicestorm@127.0.0.1";
    x.account_command("disable", STORM, &[]);
    assert!(
        accepts.recv_timeout(Duration::from_secs(3)).is_err(),
        "a disabled account kept reconnecting"
    );
    assert_eq!(x.accounts(), "alicestorm@127.0.0.1: disabled");
    // Enabling starts a fresh run: an attempt at once, the reason told again, the first
    // (shortest) delay again.
    x.clear();
    x.account_command("enable", STORM, &[]);
    accepts
        .recv_timeout(Duration::from_secs(10))
        .expect("enable did not connect");
    let again = x.wait_for("the reason, told again after enable", 10, |s| {
        service_message(s) && s.contains("disconnected:")
    });
    let again = body(&again);
    let secs: u64 = between(&again, "Reconnecting in ", "s.")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{again}"));
    assert!(secs <= 2, "not a fresh run of retries: {again}");
    // Removing it ends the retries too.
    x.account_command("remove", STORM, &[]);
    assert!(
        accepts.recv_timeout(Duration::from_secs(3)).is_err(),
        "a removed account kept reconnecting"
    );
    eprintln!("[{:?}] reconnects done", t0.elapsed());

    // ---- 3. A certificate prompt: never accepted automatically ------------------------------

    let (tls_port, tls) = tls_irc_server();
    x.clear();
    register_irc(&mut x, "alicessl", tls_port, true);
    expect_handshake(&tls);
    let prompt = x.wait_for("the certificate question", 15, |s| {
        service_message(s) && s.contains("jabber:x:data")
    });
    eprintln!("prompt: {prompt}");
    assert!(
        prompt.contains("type=\"form\"") && body(&prompt).contains("127.0.0.1"),
        "{prompt}"
    );
    assert!(
        prompt.to_lowercase().contains("certificate"),
        "not about the certificate: {prompt}"
    );
    let request = field_value(&prompt, "request").expect("no request field");
    let reject = option_value(&prompt, "Reject").expect("no Reject option");
    assert!(option_value(&prompt, "Accept").is_some(), "{prompt}");
    // Unanswered: no IRC byte goes over the connection, the account is not online.
    if let Ok(e) = tls.recv_timeout(Duration::from_secs(3)) {
        panic!("before the answer, the TLS port saw {e:?}");
    }
    assert_eq!(x.accounts(), "alicessl@127.0.0.1: connecting");
    // Reject (by the form): the connection closes without IRC, the account fails for good.
    x.clear();
    x.send(&format!(
        "<message to='{SVC}' type='chat'>{}</message>",
        submit(&[("request", &request), ("action", &reject)])
    ));
    match next_tls(&tls, "the close after Reject", 10) {
        TlsEv::Closed => {}
        e => panic!("after Reject the TLS port saw {e:?}"),
    }
    let told = x.wait_for("the message after Reject", 10, |s| {
        service_message(s) && s.contains("alicessl@127.0.0.1")
    });
    let told = body(&told);
    eprintln!("after Reject: {told}");
    assert!(
        told.contains("cannot connect") && told.contains("Not retrying"),
        "{told}"
    );
    let list = x.accounts();
    assert!(list.starts_with("alicessl@127.0.0.1: failed: "), "{list}");
    if let Ok(e) = tls.recv_timeout(Duration::from_secs(3)) {
        panic!("a rejected certificate was retried: {e:?}");
    }
    // Re-login asks again; "accept" as a chat reply lets the connection proceed.
    x.clear();
    x.account_command("relogin", "alicessl@127.0.0.1", &[]);
    expect_handshake(&tls);
    let again = x.wait_for("the certificate question again", 15, |s| {
        service_message(s) && s.contains("jabber:x:data")
    });
    assert!(body(&again).contains("127.0.0.1"), "{again}");
    if let Ok(e) = tls.recv_timeout(Duration::from_secs(1)) {
        panic!("before the answer, the TLS port saw {e:?}");
    }
    // An answer that is none of the choices is asked again; "View Certificate..." too.
    x.send(&format!(
        "<message to='{SVC}' type='chat'><body>maybe</body></message>"
    ));
    let retry = x.wait_for("the 'not a choice' reply", 10, service_message);
    assert!(body(&retry).contains("not one of the choices"), "{retry}");
    x.send(&format!(
        "<message to='{SVC}' type='chat'><body>3</body></message>"
    ));
    let shown = x.wait_for("the question after View Certificate", 10, |s| {
        service_message(s) && s.contains("jabber:x:data")
    });
    assert!(
        body(&shown).contains("Accept certificate for 127.0.0.1"),
        "{shown}"
    );
    if let Ok(e) = tls.recv_timeout(Duration::from_secs(1)) {
        panic!("before the answer, the TLS port saw {e:?}");
    }
    x.send(&format!(
        "<message to='{SVC}' type='chat'><body>accept</body></message>"
    ));
    match next_tls(&tls, "IRC after Accept", 10) {
        TlsEv::Line(l) => assert!(
            ["NICK ", "USER ", "PASS ", "CAP "]
                .iter()
                .any(|c| l.starts_with(c)),
            "{l}"
        ),
        e => panic!("after Accept the TLS port saw {e:?}"),
    }
    x.wait_for("the service presence: TLS account online", 15, |s| {
        service_presence(s) && s.contains("alicessl@127.0.0.1: online")
    });
    assert_eq!(x.accounts(), "alicessl@127.0.0.1: online");
    eprintln!("[{:?}] certificate prompt done", t0.elapsed());

    // ---- 4. Certificate trust is per wockd user ---------------------------------------------

    // Alice's "accept" is remembered for her: a re-login goes straight to IRC, no question.
    x.clear();
    x.account_command("relogin", "alicessl@127.0.0.1", &[]);
    let mut saw_irc = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !saw_irc {
        assert!(
            Instant::now() < deadline,
            "alice's re-login never reached IRC"
        );
        if let Ok(TlsEv::Line(l)) = tls.recv_timeout(Duration::from_millis(200)) {
            saw_irc = ["NICK ", "USER ", "PASS ", "CAP "]
                .iter()
                .any(|c| l.starts_with(c));
        }
    }
    x.wait_for("the service presence: TLS account online again", 15, |s| {
        service_presence(s) && s.contains("alicessl@127.0.0.1: online")
    });
    x.pump();
    assert!(
        x.try_take(|s: &str| service_message(s) && s.contains("jabber:x:data"))
            .is_none(),
        "alice was asked again about a certificate she accepted"
    );
    // Eve connecting to the same host is asked for herself — alice's trust is not hers —
    // and alice is not asked about eve's connection.
    eve.send("<presence/>");
    eve.clear();
    x.clear();
    register_irc(&mut eve, "evessl", tls_port, true);
    let q = eve.wait_for("eve's own certificate question", 15, |s| {
        service_message(s) && s.contains("jabber:x:data")
    });
    assert!(body(&q).contains("127.0.0.1"), "{q}");
    let mut irc_lines = Vec::new();
    while let Ok(e) = tls.recv_timeout(Duration::from_secs(2)) {
        // The port is shared with alice's live connection: only eve's lines count.
        if let TlsEv::Line(l) = e
            && l.contains("evessl")
        {
            irc_lines.push(l);
        }
    }
    assert!(
        irc_lines.is_empty(),
        "eve's connection went on before she answered: {irc_lines:?}"
    );
    assert!(eve.accounts().starts_with("evessl@127.0.0.1: connecting"));
    x.pump();
    assert!(
        x.try_take(|s: &str| service_message(s) && s.contains("jabber:x:data"))
            .is_none(),
        "alice got eve's certificate question"
    );
    let request = field_value(&q, "request").expect("no request field");
    let reject = option_value(&q, "Reject").expect("no Reject option");
    eve.send(&format!(
        "<message to='{SVC}' type='chat'>{}</message>",
        submit(&[("request", &request), ("action", &reject)])
    ));
    eve.wait_for("eve told her account failed", 10, |s| {
        service_message(s) && s.contains("evessl@127.0.0.1") && s.contains("Not retrying")
    });
    assert_eq!(x.accounts(), "alicessl@127.0.0.1: online");
    eprintln!("[{:?}] per-user certificate trust done", t0.elapsed());
}
