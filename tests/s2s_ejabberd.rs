//! Federation with a real ejabberd (Debian 12's 23.01) on loopback: wockd serves `w.test` on
//! 127.0.0.2, ejabberd serves `e.test` on 127.0.0.4, both on port 5269. wockd reaches
//! ejabberd by a static route. ejabberd finds wockd by name: its SRV lookups go to DNS (and
//! find nothing), and its A/AAAA lookups go through libc (`net:getaddrinfo` in p1_xmpp 1.6.1,
//! so an Erlang inetrc file does not help); ejabberd therefore runs in a mount namespace of
//! its own (`unshare -m`) where a hosts file of the test's (`127.0.0.2 w.test`) is bind-mounted
//! over `/etc/hosts`; the system's `/etc/hosts` is left alone. Certificates come from a test
//! CA made here; each side trusts it.
//!
//! ejabberd runs as its own node (own name, cookie, config, spool and log dirs in a tempdir)
//! through Debian's `ejabberdctl foreground`, with `ERL_DIST_PORT` set: the node listens for
//! distribution on a fixed loopback port and neither it nor `ejabberdctl register` starts or
//! asks an `epmd`. The node is stopped by its pid file and its process group on drop.
//!
//! One test function: ejabberd starts once, and the fixed addresses allow one test at a time.

mod common;
mod transport_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Raw, TestServer, plain_auth};
use transport_support::{Guard, free_port, require};

const W: &str = "w.test";
const E: &str = "e.test";
const W_IP: [u8; 4] = [127, 0, 0, 2];
const E_IP: &str = "127.0.0.4";

struct Certs {
    ca: String,
    w: (String, String),
    e: (String, String),
}

/// Certificates valid from yesterday for 30 days: ejabberd 23.01's pkix arms an Erlang timer
/// for each certificate's expiry, and rcgen's default (year 4096) overflows it (`badarg` in
/// `erlang:start_timer`, the pkix server dies and ejabberd has no certificate: "TLS failed:
/// no_certfile").
fn make_certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let day = Duration::from_secs(86_400);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let (not_before, not_after) = (epoch + (now - day), epoch + (now + 30 * day));
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wockd federation test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Certs {
        ca: ca_cert.pem(),
        w: leaf(W),
        e: leaf(E),
    }
}

/// The running ejabberd: its guard, c2s port, and how to run `ejabberdctl` against it.
struct Ejabberd {
    guard: Guard,
    c2s: u16,
    ctl: Vec<String>,
    root: bool,
}

impl Ejabberd {
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut c = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "ejabberd", "--"]);
            c.args(&self.ctl);
            c
        } else {
            let mut c = Command::new(&self.ctl[0]);
            c.args(&self.ctl[1..]);
            c
        };
        c.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ejabberdctl")
    }

    fn log(&self) -> PathBuf {
        self.guard.dir.path().join("logs/ejabberd.log")
    }
}

/// ejabberd for `e.test` with s2s on 127.0.0.4:5269 and c2s on a free port; `ed` registered.
fn ejabberd(certs: &Certs) -> Ejabberd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let c2s = free_port();
    let dist = free_port();
    for sub in ["spool", "logs", "conf"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    // certfiles: the leaf with its key, and the CA (ejabberd builds the chain from them).
    std::fs::write(
        d.join("conf/e.test.pem"),
        format!("{}{}", certs.e.0, certs.e.1),
    )
    .unwrap();
    std::fs::write(d.join("conf/ca.pem"), &certs.ca).unwrap();
    std::fs::write(
        d.join("conf/ejabberd.yml"),
        format!(
            "hosts: [{E}]\n\
             loglevel: debug\n\
             log_rotate_count: 0\n\
             certfiles: [\"{d}/conf/e.test.pem\", \"{d}/conf/ca.pem\"]\n\
             ca_file: \"{d}/conf/ca.pem\"\n\
             s2s_use_starttls: required\n\
             s2s_dns_timeout: 2\n\
             s2s_dns_retries: 1\n\
             s2s_max_retry_delay: 2\n\
             auth_method: internal\n\
             listen:\n\
             \x20 - port: 5269\n\
             \x20   ip: \"{E_IP}\"\n\
             \x20   module: ejabberd_s2s_in\n\
             \x20 - port: {c2s}\n\
             \x20   ip: \"{E_IP}\"\n\
             \x20   module: ejabberd_c2s\n\
             \x20   starttls_required: false\n\
             acl:\n\
             \x20 local:\n\
             \x20   user_regexp: \"\"\n\
             access_rules:\n\
             \x20 local:\n\
             \x20   allow: local\n\
             \x20 c2s:\n\
             \x20   allow: all\n\
             modules:\n\
             \x20 mod_roster: {{}}\n\
             \x20 mod_disco: {{}}\n\
             \x20 mod_ping: {{}}\n\
             \x20 mod_offline: {{}}\n\
             \x20 mod_version: {{}}\n\
             \x20 mod_s2s_dialback: {{}}\n",
            d = d.display(),
        ),
    )
    .unwrap();
    // Debian's inetrc for the node (ejabberdctl points ERL_INETRC at `<config dir>/inetrc`),
    // and the hosts file its mount namespace sees as /etc/hosts.
    std::fs::write(
        d.join("conf/inetrc"),
        "{lookup, [\"file\", \"native\"]}.\n{host, {127,0,0,1}, [\"localhost\"]}.\n{file, resolv, \"/etc/resolv.conf\"}.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("hosts"),
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.0.2 w.test\n",
    )
    .unwrap();
    let nonce = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    // ERL_DIST_PORT: distribution on a fixed port, no epmd (`-start_epmd false`);
    // INET_DIST_INTERFACE keeps it on loopback.
    std::fs::write(
        d.join("conf/ejabberdctl.cfg"),
        format!(
            "ERLANG_NODE=wockd_ejabberd_{nonce}@localhost\n\
             ERL_DIST_PORT={dist}\n\
             INET_DIST_INTERFACE=127.0.0.1\n\
             ERL_OPTIONS=\"-setcookie wockd{nonce}\"\n\
             EJABBERD_PID_PATH={d}/ejabberd.pid\n\
             EJABBERD_BYPASS_WARNINGS=true\n",
            d = d.display(),
        ),
    )
    .unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let script = if root {
        "/usr/sbin/ejabberdctl".to_owned()
    } else {
        // Debian's script insists on root or the `ejabberd` user; a copy without that
        // check runs the node as the test's own user.
        let s = std::fs::read_to_string("/usr/sbin/ejabberdctl").unwrap();
        let s = s.replace("INSTALLUSER=ejabberd", "INSTALLUSER=");
        let p = d.join("ejabberdctl");
        std::fs::write(&p, s).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    };
    let ctl: Vec<String> = vec![
        script,
        "--config-dir".into(),
        format!("{}/conf", d.display()),
        "--ctl-config".into(),
        format!("{}/conf/ejabberdctl.cfg", d.display()),
        "--spool".into(),
        format!("{}/spool", d.display()),
        "--logs".into(),
        format!("{}/logs", d.display()),
    ];
    if root {
        let st = Command::new("chown")
            .args(["-R", "ejabberd:ejabberd"])
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    use std::os::unix::process::CommandExt;
    // A private mount namespace (as root; otherwise inside a user namespace too) where the
    // test's hosts file is /etc/hosts, then ejabberdctl in the foreground.
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.arg("-r");
    }
    cmd.args([
        "-m",
        "--",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(d.join("hosts"));
    if root {
        cmd.args(["runuser", "-u", "ejabberd", "--"]);
    }
    cmd.args(&ctl);
    let out = std::fs::File::create(d.join("foreground.out")).unwrap();
    let child = cmd
        .arg("foreground")
        .process_group(0)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start ejabberd");
    let mut e = Ejabberd {
        guard: Guard {
            child,
            extra_pidfile: Some(d.join("ejabberd.pid")),
            dir,
        },
        c2s,
        ctl,
        root,
    };
    // The tempdir goes with the guard on failure: say what ejabberdctl (or unshare) said.
    let out =
        |d: &std::path::Path| std::fs::read_to_string(d.join("foreground.out")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect((E_IP, c2s)).is_err()
        || std::net::TcpStream::connect((E_IP, 5269)).is_err()
    {
        if let Ok(Some(st)) = e.guard.child.try_wait() {
            panic!("ejabberd exited ({st}) before listening:\n{}", out(&d));
        }
        assert!(
            Instant::now() < deadline,
            "ejabberd did not start:\n{}",
            out(&d)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Registration goes through the node's distribution port: retry while it settles.
    loop {
        let o = e.ctl(&["register", "ed", E, "pw"]);
        if o.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ejabberdctl register failed: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    e
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        // On failure, ejabberd's side of the story: its dir goes with the guard, so the
        // whole log is kept in the temp dir and its tail printed.
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.log())
        {
            let keep =
                std::env::temp_dir().join(format!("s2s_ejabberd-{}.log", std::process::id()));
            let _ = std::fs::write(&keep, &log);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(150)..];
            eprintln!(
                "--- ejabberd log (last {} lines; all of it in {}) ---",
                tail.len(),
                keep.display()
            );
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
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

/// ejabberd writes attributes with single quotes: compare without caring.
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

#[test]
fn federates_with_ejabberd() {
    if require("ejabberdctl").is_none() {
        return;
    }
    let t0 = Instant::now();
    let certs = make_certs();
    let ej = ejabberd(&certs);
    eprintln!("ejabberd up after {:?}", t0.elapsed());

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
            c.s2s.routes.insert(E.into(), format!("{E_IP}:5269"));
            c.s2s.connect_timeout_secs = 20;
            // Every s2s element in the log (WOCKD_TEST_LOG=wockd::s2s=info shows it).
            c.log.xml = true;
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
    let mut wendy = login(w.trusted, W, "wendy", "laptop");
    let mut ed = login(
        SocketAddr::new(E_IP.parse().unwrap(), ej.c2s),
        E,
        "ed",
        "phone",
    );
    wendy.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    ed.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>");
    expect(&mut ed, &["id=\"r0\""]);
    wendy.send("<presence/>");
    ed.send("<presence/>");

    // wockd → ejabberd → wockd.
    let t = Instant::now();
    wendy.send(
        "<message to='ed@e.test' type='chat' id='w1'><body>hello from wockd</body></message>",
    );
    let got = expect(&mut ed, &["hello from wockd"]);
    assert!(got.contains("from=\"wendy@w.test/laptop\""), "{got}");
    assert!(got.contains("to=\"ed@e.test"), "{got}");
    eprintln!("first message wockd → ejabberd after {:?}", t.elapsed());
    let t = Instant::now();
    ed.send("<message to='wendy@w.test/laptop' type='chat' id='e1'><body>hello from ejabberd</body></message>");
    let got = expect(&mut wendy, &["hello from ejabberd"]);
    assert!(got.contains("from=\"ed@e.test/phone\""), "{got}");
    assert!(got.contains("to=\"wendy@w.test/laptop\""), "{got}");
    eprintln!("first message ejabberd → wockd after {:?}", t.elapsed());

    // Subscriptions both ways end in `both` on both sides.
    wendy.presence_to("ed@e.test", "subscribe");
    expect(&mut ed, &["type=\"subscribe\"", "from=\"wendy@w.test\""]);
    ed.send("<presence to='wendy@w.test' type='subscribed'/>");
    expect(&mut wendy, &["type=\"subscribed\"", "from=\"ed@e.test\""]);
    ed.send("<presence to='wendy@w.test' type='subscribe'/>");
    expect(&mut wendy, &["type=\"subscribe\"", "from=\"ed@e.test\""]);
    wendy.presence_to("ed@e.test", "subscribed");
    expect(&mut wendy, &["<presence", "from=\"ed@e.test/phone\""]);
    expect(&mut ed, &["<presence", "from=\"wendy@w.test/laptop\""]);
    let r = wendy.iq("get", None, "<query xmlns='jabber:iq:roster'/>");
    assert!(
        r.contains("jid=\"ed@e.test\"") && r.contains("subscription=\"both\""),
        "{r}"
    );
    ed.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    let r = expect(&mut ed, &["id=\"r1\""]);
    assert!(
        r.contains("jid=\"wendy@w.test\"") && r.contains("subscription=\"both\""),
        "{r}"
    );

    // Disco and ping of the remote server, both ways.
    let pong = wendy.iq("get", Some(E), "<ping xmlns='urn:xmpp:ping'/>");
    assert!(norm(&pong).contains("type=\"result\""), "{pong}");
    let info = wendy.iq(
        "get",
        Some(E),
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        norm(&info).contains("type=\"result\"") && info.contains("identity"),
        "{info}"
    );
    ed.send("<iq type='get' id='ep' to='w.test'><ping xmlns='urn:xmpp:ping'/></iq>");
    let pong = expect(&mut ed, &["id=\"ep\""]);
    assert!(pong.contains("type=\"result\""), "{pong}");
    ed.send("<iq type='get' id='ed' to='w.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = expect(&mut ed, &["id=\"ed\""]);
    assert!(
        info.contains("type=\"result\"") && info.contains("identity"),
        "{info}"
    );

    // A message to a user ejabberd does not have bounces back.
    wendy.send("<message to='nobody@e.test' type='chat' id='nb'><body>?</body></message>");
    let err = expect(&mut wendy, &["id=\"nb\"", "type=\"error\""]);
    assert!(
        err.contains("service-unavailable") || err.contains("item-not-found"),
        "{err}"
    );

    // wendy logs out: ejabberd's user sees her go.
    wendy.send("</stream:stream>");
    expect(
        &mut ed,
        &["from=\"wendy@w.test/laptop\"", "type=\"unavailable\""],
    );
    // A message while she is offline waits in her mailbox and arrives with a delay stamp.
    ed.send(
        "<message to='wendy@w.test' type='chat' id='e2'><body>while you were away</body></message>",
    );
    let store = wockd::store::Store::open(&data.join("wockd.sqlite")).unwrap();
    let id = store.account_id("wendy", W).unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while wockd::store::mailbox::count_pending(store.conn(), id).unwrap() < 1 {
        assert!(Instant::now() < deadline, "no offline message for wendy");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut wendy = login(w.trusted, W, "wendy", "laptop");
    wendy.send("<presence/>");
    let got = expect(&mut wendy, &["while you were away"]);
    assert!(got.contains("urn:xmpp:delay"), "{got}");
    assert!(got.contains("from=\"ed@e.test/phone\""), "{got}");
    // Her initial presence probed ejabberd: ed's presence comes back.
    expect(&mut wendy, &["<presence", "from=\"ed@e.test/phone\""]);
    // ed logs out: wendy sees him go.
    ed.send("</stream:stream>");
    expect(
        &mut wendy,
        &["from=\"ed@e.test/phone\"", "type=\"unavailable\""],
    );
    drop(w);
    drop(ej);
    eprintln!("test took {:?}", t0.elapsed());
}
