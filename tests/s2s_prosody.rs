//! Federation with a real Prosody (Debian 12's 0.12) on loopback: wockd serves `w.test` on
//! 127.0.0.2, Prosody serves `p.test` on 127.0.0.3, both on port 5269. wockd reaches Prosody by
//! a static route; Prosody finds wockd through libunbound reading a hosts file of the test's
//! own (`unbound = { hoststxt = "…" }`), so `/etc/hosts` is left alone. Certificates come from
//! a test CA made here; each side trusts it.
//!
//! One test function: Prosody starts once, and the fixed addresses allow one test at a time.

mod common;
mod transport_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Client, Raw, TestServer, plain_auth};
use transport_support::{Guard, free_port, require};

const W: &str = "w.test";
const P: &str = "p.test";
const W_IP: [u8; 4] = [127, 0, 0, 2];
const P_IP: &str = "127.0.0.3";

struct Certs {
    ca: String,
    w: (String, String),
    p: (String, String),
}

fn make_certs() -> Certs {
    let (ca, mut leaves) = common::test_ca(&[W, P]);
    let p = leaves.pop().unwrap();
    let w = leaves.pop().unwrap();
    Certs { ca, w, p }
}

/// Prosody for `p.test` with s2s on 127.0.0.3:5269 and c2s on a free port; `pat` registered.
fn prosody(dir: &Path, certs: &Certs, hosts: &Path) -> (Guard, u16) {
    let d = dir;
    let c2s = free_port();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("certs")).unwrap();
    std::fs::write(d.join("certs/p.test.crt"), &certs.p.0).unwrap();
    std::fs::write(d.join("certs/p.test.key"), &certs.p.1).unwrap();
    std::fs::write(d.join("ca.pem"), &certs.ca).unwrap();
    let conf = d.join("prosody.cfg.lua");
    std::fs::write(
        &conf,
        format!(
            "pidfile = \"{d}/prosody.pid\"; data_path = \"{d}/data\"\n\
             certificates = \"{d}/certs\"\n\
             ssl = {{ cafile = \"{d}/ca.pem\" }}\n\
             interfaces = {{ \"{P_IP}\" }}\n\
             c2s_ports = {{ {c2s} }}; s2s_ports = {{ 5269 }}; c2s_direct_tls_ports = {{ }}; s2s_direct_tls_ports = {{ }}\n\
             http_ports = {{ }}; https_ports = {{ }}; component_ports = {{ }}\n\
             unbound = {{ hoststxt = \"{hosts}\"; resolvconf = true }}\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"tls\", \"dialback\", \"disco\", \"ping\", \"presence\", \"message\", \"iq\", \"offline\", \"version\" }}\n\
             modules_disabled = {{ \"posix\" }}\n\
             authentication = \"internal_hashed\"\n\
             c2s_require_encryption = false\n\
             s2s_require_encryption = true\n\
             s2s_secure_auth = false\n\
             allow_unencrypted_plain_auth = true\n\
             log = {{ debug = \"{d}/prosody.log\" }}\n\
             VirtualHost \"{P}\"\n",
            d = d.display(),
            hosts = hosts.display(),
        ),
    )
    .unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let st = Command::new("chown")
            .args(["-R", "prosody:prosody"])
            .arg(d)
            .status()
            .unwrap();
        assert!(st.success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
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
    let st = cmd("prosodyctl")
        .arg("--config")
        .arg(&conf)
        .args(["register", "pat", P, "pw"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "prosodyctl register failed");
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
    let g = Guard {
        child,
        extra_pidfile: Some(d.join("prosody.pid")),
        dir: tempfile::tempdir().unwrap(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect((P_IP, c2s)).is_err()
        || std::net::TcpStream::connect((P_IP, 5269)).is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "prosody did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (g, c2s)
}

fn login(addr: SocketAddr, domain: &str, user: &str, resource: &str) -> Client {
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    );
    let mut raw = Raw::connect(addr);
    raw.send(&header);
    raw.until("</stream:features>");
    raw.send(&plain_auth(user, "pw"));
    raw.until("<success");
    raw.send(&header);
    raw.until("</stream:features>");
    raw.send(&format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ));
    raw.until("</iq>");
    let mut c = Client::over(raw, &format!("{user}@{domain}/{resource}"));
    c.timeout = Duration::from_secs(30);
    c
}

/// Prosody writes attributes with single quotes: compare without caring.
fn norm(s: &str) -> String {
    s.replace('\'', "\"")
}

fn expect(c: &mut Client, parts: &[&str]) -> String {
    let parts: Vec<String> = parts.iter().map(|p| norm(p)).collect();
    norm(&c.wait(|s| {
        let s = norm(s);
        parts.iter().all(|p| s.contains(p.as_str()))
    }))
}

/// Prosody and wockd federating, each with one account (`pat`, `wendy`); `None` when Prosody
/// is missing and the test may skip.
struct Fed {
    w: TestServer,
    data: std::path::PathBuf,
    pc2s: u16,
    _prosody: Guard,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn setup(tweak: impl Fn(&mut wockd::config::Config) + Send + 'static) -> Option<Fed> {
    require("prosody")?;
    if !Path::new("/usr/share/lua/5.4/lunbound.so").exists()
        && !Path::new("/usr/lib/x86_64-linux-gnu/lua/5.4/lunbound.so").exists()
        && Command::new("dpkg")
            .args(["-s", "lua-unbound"])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
    {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("lua-unbound is not installed (CI=true: .ci/run must install it)");
        }
        eprintln!("\n*** SKIPPING: lua-unbound is not installed ***\n");
        return None;
    }
    let certs = make_certs();
    let pdir = tempfile::tempdir().unwrap();
    let hosts = pdir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.2 {W}\n{P_IP} {P}\n")).unwrap();
    let (_prosody, pc2s) = prosody(pdir.path(), &certs, &hosts);

    let wdir = tempfile::tempdir().unwrap();
    std::fs::write(wdir.path().join("w.crt"), &certs.w.0).unwrap();
    std::fs::write(wdir.path().join("w.key"), &certs.w.1).unwrap();
    std::fs::write(wdir.path().join("ca.pem"), &certs.ca).unwrap();
    let base = wdir.path().to_owned();
    let data = base.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let w = TestServer::start_in(
        &data,
        move |c| {
            c.domains = vec![W.to_owned()];
            c.tls.cert = Some(base.join("w.crt"));
            c.tls.key = Some(base.join("w.key"));
            c.s2s = wockd::config::S2s::default();
            c.s2s.listen = vec![wockd::config::S2sListener {
                address: SocketAddr::from((W_IP, 5269)),
                direct_tls: false,
            }];
            c.s2s.ca_file = Some(base.join("ca.pem"));
            c.s2s.routes.insert(P.into(), format!("{P_IP}:5269"));
            c.s2s.connect_timeout_secs = 20;
            tweak(c);
        },
        |_| {},
    );
    {
        let store = wockd::store::Store::open(&data.join("wockd.sqlite")).unwrap();
        use wockd::auth::scram::{Hash, new_keys};
        let keys = vec![
            (Hash::Sha1, new_keys(Hash::Sha1, "pw", 4096).unwrap()),
            (Hash::Sha256, new_keys(Hash::Sha256, "pw", 4096).unwrap()),
        ];
        store.create_account("wendy", W, &keys).unwrap();
    }
    Some(Fed {
        w,
        data,
        pc2s,
        _prosody,
        _dirs: (pdir, wdir),
    })
}

#[test]
fn federates_with_prosody() {
    let Some(fed) = setup(|_| {}) else { return };
    let (w, data, pc2s) = (&fed.w, fed.data.clone(), fed.pc2s);
    let mut wendy = login(w.trusted, W, "wendy", "laptop");
    let mut pat = login(
        SocketAddr::new(P_IP.parse().unwrap(), pc2s),
        P,
        "pat",
        "phone",
    );
    wendy.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    pat.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>");
    expect(&mut pat, &["id=\"r0\""]);
    wendy.send("<presence/>");
    pat.send("<presence/>");

    // wockd → Prosody → wockd.
    wendy.send(
        "<message to='pat@p.test' type='chat' id='w1'><body>hello from wockd</body></message>",
    );
    let got = expect(&mut pat, &["hello from wockd"]);
    assert!(got.contains("from=\"wendy@w.test/laptop\""), "{got}");
    pat.send("<message to='wendy@w.test/laptop' type='chat' id='p1'><body>hello from prosody</body></message>");
    let got = expect(&mut wendy, &["hello from prosody"]);
    assert!(got.contains("from=\"pat@p.test/phone\""), "{got}");

    // Subscriptions both ways end in `both` on both sides.
    wendy.presence_to("pat@p.test", "subscribe");
    expect(&mut pat, &["type=\"subscribe\"", "from=\"wendy@w.test\""]);
    pat.send("<presence to='wendy@w.test' type='subscribed'/>");
    expect(&mut wendy, &["type=\"subscribed\"", "from=\"pat@p.test\""]);
    pat.send("<presence to='wendy@w.test' type='subscribe'/>");
    expect(&mut wendy, &["type=\"subscribe\"", "from=\"pat@p.test\""]);
    wendy.presence_to("pat@p.test", "subscribed");
    expect(&mut wendy, &["<presence", "from=\"pat@p.test/phone\""]);
    expect(&mut pat, &["<presence", "from=\"wendy@w.test/laptop\""]);
    let r = wendy.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    assert!(
        r.contains("jid=\"pat@p.test\"") && r.contains("subscription=\"both\""),
        "{r}"
    );
    pat.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    let r = expect(&mut pat, &["id=\"r1\""]);
    assert!(
        r.contains("jid=\"wendy@w.test\"") && r.contains("subscription=\"both\""),
        "{r}"
    );

    // Disco and ping of the remote server, and of a remote full JID.
    let pong = wendy.iq("get", Some(P), "<ping xmlns='urn:xmpp:ping'/>");
    assert!(norm(&pong).contains("type=\"result\""), "{pong}");
    let info = wendy.iq(
        "get",
        Some(P),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        norm(&info).contains("type=\"result\"") && info.contains("identity"),
        "{info}"
    );
    pat.send("<iq type='get' id='pp' to='w.test'><ping xmlns='urn:xmpp:ping'/></iq>");
    let pong = expect(&mut pat, &["id=\"pp\""]);
    assert!(pong.contains("type=\"result\""), "{pong}");
    pat.send("<iq type='get' id='pd' to='w.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = expect(&mut pat, &["id=\"pd\""]);
    assert!(
        info.contains("type=\"result\"") && info.contains("identity"),
        "{info}"
    );

    // A message to a user Prosody does not have bounces back.
    wendy.send("<message to='nobody@p.test' type='chat' id='nb'><body>?</body></message>");
    let err = expect(&mut wendy, &["id=\"nb\"", "type=\"error\""]);
    assert!(
        err.contains("service-unavailable") || err.contains("item-not-found"),
        "{err}"
    );

    // wendy logs out: Prosody's user sees her go.
    wendy.send("</stream:stream>");
    expect(
        &mut pat,
        &["from=\"wendy@w.test/laptop\"", "type=\"unavailable\""],
    );
    // A message while she is offline waits in her mailbox and arrives with a delay stamp.
    pat.send(
        "<message to='wendy@w.test' type='chat' id='p2'><body>while you were away</body></message>",
    );
    let store = wockd::store::Store::open(&data.join("wockd.sqlite")).unwrap();
    let id = store.account_id("wendy", W).unwrap().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while wockd::store::mailbox::count_pending(store.conn(), id).unwrap() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no offline message for wendy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut wendy = login(w.trusted, W, "wendy", "laptop");
    wendy.send("<presence/>");
    let got = expect(&mut wendy, &["while you were away"]);
    assert!(got.contains("urn:xmpp:delay"), "{got}");
    // Her initial presence probed Prosody: pat's presence comes back.
    expect(&mut wendy, &["<presence", "from=\"pat@p.test/phone\""]);
}

/// Figures for the closing note, not a test: `cargo test --release --test s2s_prosody --
/// --ignored --nocapture`. Round trip wockd → Prosody → wockd over one link (a ping of
/// p.test), and messages per second over one link each way. wockd's read-rate limits are off
/// for it; Prosody runs as configured above (no mod_limits).
#[test]
#[ignore]
fn measure_with_prosody() {
    let Some(fed) = setup(|c| {
        c.limits.read_rate = 1 << 40;
        c.limits.read_burst = 1 << 40;
        c.s2s.read_rate = 1 << 40;
        c.s2s.read_burst = 1 << 40;
    }) else {
        return;
    };
    let mut wendy = login(fed.w.trusted, W, "wendy", "laptop");
    let mut pat = login(
        SocketAddr::new(P_IP.parse().unwrap(), fed.pc2s),
        P,
        "pat",
        "phone",
    );
    pat.send("<presence/>");
    wendy.send("<presence/>");
    wendy.iq("get", Some(P), "<ping xmlns='urn:xmpp:ping'/>");
    let mut rtts = Vec::new();
    for _ in 0..2000 {
        let t = std::time::Instant::now();
        let r = wendy.iq("get", Some(P), "<ping xmlns='urn:xmpp:ping'/>");
        rtts.push(t.elapsed());
        assert!(norm(&r).contains("type=\"result\""), "{r}");
    }
    rtts.sort();
    let pct = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "rtt wockd client → wockd → Prosody → wockd → client (ping of p.test, one link): p50 {:?} p99 {:?} max {:?}",
        pct(0.5),
        pct(0.99),
        rtts[rtts.len() - 1]
    );
    let n = 10_000;
    for (from, to, label) in [(0, 1, "wockd → Prosody"), (1, 0, "Prosody → wockd")] {
        let clients = [&mut wendy, &mut pat];
        let to_jid = if to == 1 {
            "pat@p.test/phone"
        } else {
            "wendy@w.test/laptop"
        };
        let mut out = String::new();
        let t = std::time::Instant::now();
        for i in 0..n {
            out.push_str(&format!(
                "<message to='{to_jid}' type='chat'><body>{label} m{i} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx</body></message>"
            ));
        }
        clients[from].send(&out);
        clients[to].timeout = std::time::Duration::from_secs(300);
        let last = format!("{label} m{} ", n - 1);
        clients[to].wait(|s| s.contains(&last));
        println!(
            "{n} messages {label} over one link: {:.0} msg/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
        clients[to].queue.clear();
    }
}
