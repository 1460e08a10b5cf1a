//! wockd's IM transport as an external component (`wockd component`, XEP-0114) of a real
//! Prosody (Debian 12's 0.12) on loopback: a Prosody user registers an IRC account on a
//! loopback ngircd through the component, joins a channel, messages both ways in the room and
//! privately.
//!
//! Prosody without prosody-modules' mod_privilege grants no XEP-0356 privileges, and wockd
//! degrades the way XEP-0100 gateways do: the gateway's roster item comes as a subscription
//! request from the gateway (no roster set), and joined rooms are not bookmarked (no
//! `privileged_iq`). With mod_privilege (Debian's `prosody-modules`), the gateway's item is
//! pushed into the roster and the room lands in the user's PEP bookmarks.

mod common;
mod component_hosts;
mod transport_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use component_hosts::*;
use transport_support::*;

/// Where Debian's prosody-modules puts mod_privilege.
const MOD_PRIVILEGE: &str = "/usr/lib/prosody/modules/mod_privilege/mod_privilege.lua";

/// A Prosody of the test's own: fresh data dir, c2s (PLAIN without TLS) and the component
/// listener on free loopback ports, `alice` and `carol` registered.
struct Prosody {
    guard: Guard,
    c2s: u16,
    component: u16,
}

impl Prosody {
    fn log(&self) -> PathBuf {
        self.guard.dir.path().join("prosody.log")
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- prosody log (tail) ---");
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// `privileged`: load mod_privilege and grant `irc.localhost` roster, outgoing messages,
/// managed-entity presence and pubsub IQs.
fn prosody(privileged: bool) -> Prosody {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let c2s = free_port();
    let component = free_port();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("certs")).unwrap();
    let privilege = if privileged {
        format!(
            "modules_enabled = {{ \"privilege\" }}\n\
             privileged_entities = {{\n\
             \x20 [\"{SVC}\"] = {{\n\
             \x20   roster = \"both\"; message = \"outgoing\"; presence = \"managed_entity\";\n\
             \x20   iq = {{ [\"http://jabber.org/protocol/pubsub\"] = \"both\" }};\n\
             \x20 }};\n\
             }}\n"
        )
    } else {
        String::new()
    };
    let conf = d.join("prosody.cfg.lua");
    std::fs::write(
        &conf,
        format!(
            "pidfile = \"{d}/prosody.pid\"; data_path = \"{d}/data\"\n\
             certificates = \"{d}/certs\"\n\
             interfaces = {{ \"127.0.0.1\" }}\n\
             c2s_ports = {{ {c2s} }}; s2s_ports = {{ }}; c2s_direct_tls_ports = {{ }}\n\
             http_ports = {{ }}; https_ports = {{ }}\n\
             component_ports = {{ {component} }}; component_interfaces = {{ \"127.0.0.1\" }}\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"disco\", \"ping\", \"presence\", \"message\", \"iq\", \"pep\" }}\n\
             modules_disabled = {{ \"s2s\", \"tls\", \"posix\", \"offline\" }}\n\
             authentication = \"internal_hashed\"\n\
             c2s_require_encryption = false\n\
             allow_unencrypted_plain_auth = true\n\
             log = {{ debug = \"{d}/prosody.log\" }}\n\
             VirtualHost \"localhost\"\n\
             {privilege}\
             Component \"{SVC}\"\n\
             \x20 component_secret = \"{SECRET}\"\n",
            d = d.display()
        ),
    )
    .unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let st = Command::new("chown")
            .args(["-R", "prosody:prosody"])
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cmd = |prog: &str| {
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "prosody", "--", prog]);
            c
        } else {
            Command::new(prog)
        }
    };
    for u in ["alice", "carol"] {
        let st = cmd("prosodyctl")
            .arg("--config")
            .arg(&conf)
            .args(["register", u, "localhost", "pw"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "prosodyctl register {u} failed");
    }
    use std::os::unix::process::CommandExt;
    let child = cmd("prosody")
        .process_group(0)
        .arg("--config")
        .arg(&conf)
        .arg("-F")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start prosody");
    let p = Prosody {
        guard: Guard {
            child,
            extra_pidfile: Some(d.join("prosody.pid")),
            dir,
        },
        c2s,
        component,
    };
    wait_port(c2s, "prosody c2s");
    wait_port(component, "prosody component listener");
    p
}

struct Setup {
    // Dropped in this order: the component, then Prosody, then ngircd.
    _dump: DumpOnPanic,
    _component: Guard,
    prosody: Prosody,
    _ircd: Guard,
    irc_port: u16,
    _dir: tempfile::TempDir,
}

fn setup(privileged: bool) -> Option<Setup> {
    let ngircd_bin = require("ngircd")?;
    require("prosody")?;
    if privileged && !Path::new(MOD_PRIVILEGE).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{MOD_PRIVILEGE} is missing (CI=true: install Debian's prosody-modules)");
        }
        eprintln!(
            "\n*** SKIPPING: {MOD_PRIVILEGE} is missing; install prosody-modules to run this test ***\n"
        );
        return None;
    }
    let (ircd, irc_port) = ngircd(&ngircd_bin);
    let prosody = prosody(privileged);
    let dir = tempfile::tempdir().unwrap();
    let config = component_config(dir.path(), SVC, prosody.component);
    let component = spawn_component(&config);
    Some(Setup {
        _dump: DumpOnPanic(config),
        _component: component,
        prosody,
        _ircd: ircd,
        irc_port,
        _dir: dir,
    })
}

fn user(s: &Setup, name: &str) -> common::Client {
    let mut c = login(
        std::net::SocketAddr::from(([127, 0, 0, 1], s.prosody.c2s)),
        name,
        "laptop",
    );
    let r = ask(
        &mut c,
        "r0",
        "<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>",
    );
    assert!(r.contains("type=\"result\""), "{r}");
    c.send("<presence/>");
    c
}

#[test]
fn the_transport_as_a_component_of_prosody() {
    let Some(s) = setup(false) else { return };
    let mut alice = user(&s, "alice");
    let mut bob = Irc::connect(s.irc_port, "bob");
    bob.send("JOIN #wockd");
    bob.expect(" 366 ");
    let seen = transport_flow(&mut alice, &mut bob, s.irc_port, "alicebot");

    // No privileges: the gateway asked for a subscription (XEP-0100) instead of setting its
    // roster item, and so did bob's legacy contact; approved, both are in Prosody's roster.
    let RosterWay::Asked(p) = &seen.gateway_item else {
        panic!(
            "a roster push without roster privilege: {:?}",
            seen.gateway_item
        );
    };
    assert!(p.contains("to=\"alice@localhost\""), "{p}");
    let RosterWay::Asked(p) = &seen.buddy_item else {
        panic!(
            "a roster push without roster privilege: {:?}",
            seen.buddy_item
        );
    };
    assert!(p.contains("to=\"alice@localhost\""), "{p}");
    assert_roster(&seen.roster);
    // No pubsub privilege: no bookmark for the joined room in Prosody's PEP.
    assert!(
        !has_room_bookmark(&seen.bookmarks),
        "a bookmark without pubsub privilege: {}",
        seen.bookmarks
    );
}

/// The gateway (subscription `from` when approved, `both` when pushed) and bob (`both`).
fn assert_roster(roster: &str) {
    assert!(roster.contains(&format!("jid=\"{SVC}\"")), "{roster}");
    let bob = roster
        .split("<item ")
        .find(|i| i.contains(&format!("jid=\"bob@{SVC}\"")))
        .unwrap_or_else(|| panic!("no bob in {roster}"));
    assert!(bob.contains("subscription=\"both\""), "{roster}");
}

/// With prosody-modules' mod_privilege granting roster, message, presence and pubsub IQs.
/// Ignored: not verified yet. With Debian's prosody-modules 0.0~hg20230223 loaded through
/// `plugin_paths` from an unpacked .deb, no grants reached wockd (the gateway still asked for
/// a subscription); whether the module loaded at all is not established.
#[test]
#[ignore]
fn the_transport_as_a_privileged_component_of_prosody() {
    let Some(s) = setup(true) else { return };
    let mut alice = user(&s, "alice");
    let mut bob = Irc::connect(s.irc_port, "bob");
    bob.send("JOIN #wockd");
    bob.expect(" 366 ");
    let seen = transport_flow(&mut alice, &mut bob, s.irc_port, "alicebot");
    for way in [&seen.gateway_item, &seen.buddy_item] {
        assert!(
            matches!(way, RosterWay::Pushed(_)),
            "roster privilege granted, yet a subscription request: {way:?}"
        );
    }
    assert_roster(&seen.roster);
    assert!(
        has_room_bookmark(&seen.bookmarks),
        "no bookmark of {ROOM}: {}",
        seen.bookmarks
    );
}

/// Figures, not a test: `cargo test --test component_prosody -- --ignored --nocapture`.
/// Relay latency through Prosody: bob's PRIVMSG → ngircd → libpurple → component → Prosody →
/// alice, and alice → Prosody → component → ngircd → bob; 20 messages each, one at a time.
#[test]
#[ignore]
fn measure_relay_through_prosody() {
    let Some(s) = setup(false) else { return };
    let mut alice = user(&s, "alice");
    let mut bob = Irc::connect(s.irc_port, "bob");
    bob.send("JOIN #wockd");
    bob.expect(" 366 ");
    transport_flow(&mut alice, &mut bob, s.irc_port, "alicebot");
    let v = measure_pm(&mut alice, &mut bob, "alicebot", 20);
    println!(
        "IRC → XMPP through Prosody: median {:?} min {:?} max {:?} (n={})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    );
    let v = measure_to_irc(&mut alice, &mut bob, 20);
    println!(
        "XMPP → IRC through Prosody: median {:?} min {:?} max {:?} (n={})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    );
}
