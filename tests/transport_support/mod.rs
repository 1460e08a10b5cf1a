//! Shared helpers of the transport tests: loopback ngircd / Prosody under a kill-on-drop
//! guard, a raw IRC client, and order-insensitive waits on the raw XMPP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Raw;

/// An IRC service at `domain` for a test server, with libpurple's IRC rate limit (2 s, burst
/// 5) off: it would delay and drop test lines.
pub fn irc_service(domain: &str) -> wockd::config::TransportService {
    wockd::config::TransportService {
        domain: domain.into(),
        prpl: "prpl-irc".into(),
        name: None,
        defaults: std::collections::BTreeMap::from([
            ("ratelimit-interval".into(), "0".into()),
            ("ratelimit-burst".into(), "100".into()),
        ]),
        allow_private_addresses: None,
    }
}

/// Under `CI=true` a missing server fails the test; locally it is skipped, loudly.
pub fn require(binary: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.exists());
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{binary} is not installed (CI=true: .ci/run must install it)");
        }
        eprintln!("\n*** SKIPPING: {binary} is not installed; install it to run this test ***\n");
    }
    found
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) on drop; `extra_pidfile` names a pid file whose
/// process is killed too (prosody under runuser).
pub struct Guard {
    pub child: Child,
    pub extra_pidfile: Option<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The daemon the pid file names (prosody under runuser is not our child), then our
        // child's whole process group: SIGTERM, up to 5 s to go, then SIGKILL, so that no
        // process outlives its test.
        if let Some(pf) = &self.extra_pidfile
            && let Ok(s) = std::fs::read_to_string(pf)
            && let Ok(pid) = s.trim().parse::<i32>()
        {
            stop(pid);
        }
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this test started (see `process_group(0)`).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever of the group is left goes now.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to `pid`, then SIGKILL if it is still there after 5 s.
fn stop(pid: i32) {
    // SAFETY: kill(2) on a pid this test's server recorded in its pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Stops the ngircd of `guard` and starts it again on the same port and configuration (the
/// IRC server goes away under its clients).
pub fn restart_ngircd(guard: &mut Guard, bin: &Path, port: u16) {
    let _ = guard.child.kill();
    let _ = guard.child.wait();
    let d = guard.dir.path();
    let log = std::fs::File::create(d.join("ngircd-2.log")).unwrap();
    guard.child = Command::new(bin)
        .process_group(0)
        .args(["-n", "-f"])
        .arg(d.join("ngircd.conf"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot restart ngircd");
    wait_port(port, "ngircd");
}

pub fn ngircd(bin: &Path) -> (Guard, u16) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    std::fs::create_dir_all(d.join("run")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = d.join("ngircd.conf");
    std::fs::write(
        &conf,
        format!(
            "[Global]\n\tName = irc.wockd.test\n\tInfo = wockd loopback test ircd\n\tListen = 127.0.0.1\n\tPorts = {port}\n\
             \tMotdPhrase = \"wockd test server\"\n\tPidFile = {}/run/ngircd.pid\n\tServerUID = nobody\n\tServerGID = nogroup\n\
             \tAdminInfo1 = wockd test\n\tAdminInfo2 = loopback only\n\tAdminEMail = nobody@localhost\n\
             [Limits]\n\tMaxConnectionsIP = 0\n\tPingTimeout = 120\n\tPongTimeout = 20\n\tMaxPenaltyTime = 0\n\tMaxNickLength = 30\n\
             [Options]\n\tPAM = no\n\tIdent = no\n\tDNS = no\n\
             [Channel]\n\tName = #wockd\n\tTopic = loopback test channel\n\tModes = +tn\n",
            d.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.join("ngircd.log")).unwrap();
    let child = Command::new(bin)
        .process_group(0)
        .args(["-n", "-f"])
        .arg(&conf)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start ngircd");
    let g = Guard {
        child,
        extra_pidfile: None,
        dir,
    };
    wait_port(port, "ngircd");
    (g, port)
}

/// A raw-socket IRC client (the one IRC peer of the tests).
pub struct Irc {
    pub w: TcpStream,
    pub r: BufReader<TcpStream>,
    pub nick: String,
    /// A line read in part when the read timed out.
    partial: String,
}

impl Irc {
    pub fn connect(port: u16, nick: &str) -> Irc {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut c = Irc {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            nick: nick.into(),
            partial: String::new(),
        };
        c.send(&format!("NICK {nick}"));
        c.send(&format!("USER {nick} 0 * :{nick} the tester"));
        c.expect(" 001 ");
        c
    }

    pub fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    /// The next whole line (without its line end), answering PINGs on the way; None once
    /// `deadline` has passed without one.
    pub fn next_line(&mut self, deadline: Instant) -> Option<String> {
        while Instant::now() < deadline {
            match self.r.read_line(&mut self.partial) {
                Ok(0) => panic!(
                    "IRC {}: connection closed; unfinished line {:?}",
                    self.nick, self.partial
                ),
                Ok(_) if self.partial.ends_with('\n') => {
                    let line = std::mem::take(&mut self.partial);
                    let line = line.trim_end().to_owned();
                    if let Some(rest) = line.strip_prefix("PING ") {
                        let pong = format!("PONG {rest}");
                        self.send(&pong);
                    }
                    return Some(line);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("IRC {}: read error: {e}", self.nick),
            }
        }
        None
    }

    /// Reads lines (answering PINGs) until one contains `needle`; returns it.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, Duration::from_secs(15))
    }

    pub fn expect_within(&mut self, needle: &str, t: Duration) -> String {
        let deadline = Instant::now() + t;
        loop {
            match self.next_line(deadline) {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("IRC {}: timed out waiting for {needle:?}", self.nick),
            }
        }
    }

    /// Reads lines for `d`; panics if one contains `needle`.
    pub fn assert_quiet(&mut self, needle: &str, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(line) = self.next_line(deadline) {
            assert!(
                !line.contains(needle),
                "IRC {}: unexpected {needle:?}: {line:?}",
                self.nick
            );
        }
    }
}

/// Reads until every needle appeared in the unread text (in any order); returns and
/// consumes all text read so far.
pub fn until_all(c: &mut Raw, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if needles.iter().all(|n| c.buf.contains(n)) {
            return std::mem::take(&mut c.buf);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needles:?}; have {:?}",
            c.buf
        );
        let mut chunk = [0u8; 65536];
        match c.sock.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed waiting for {needles:?}; have {:?}",
                c.buf
            ),
            Ok(n) => c.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read error: {e}"),
        }
    }
}

/// Reads for `d`; returns what arrived.
pub fn drain(c: &mut Raw, d: Duration) -> String {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        let mut chunk = [0u8; 65536];
        match c.sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => c.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
    }
    std::mem::take(&mut c.buf)
}

pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// XEP-0077 registration through the data form.
pub fn register_form(service: &str, id: &str, fields: &[(&str, &str)]) -> String {
    let mut f = String::from(
        "<field var='FORM_TYPE' type='hidden'><value>jabber:iq:register</value></field>",
    );
    for (k, v) in fields {
        f.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    format!(
        "<iq type='set' id='{id}' to='{service}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>{f}</x></query></iq>"
    )
}

/// Prosody on loopback with a fresh data dir; `users` are registered first.
pub fn prosody(users: &[(&str, &str)]) -> (Guard, u16) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let port = free_port();
    let comp = free_port();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("certs")).unwrap();
    let conf = d.join("prosody.cfg.lua");
    std::fs::write(
        &conf,
        format!(
            "pidfile = \"{d}/prosody.pid\"; data_path = \"{d}/data\"\n\
             certificates = \"{d}/certs\"\n\
             interfaces = {{ \"127.0.0.1\" }}\n\
             c2s_ports = {{ {port} }}; s2s_ports = {{ }}; c2s_direct_tls_ports = {{ }}\n\
             http_ports = {{ }}; https_ports = {{ }}\n\
             component_ports = {{ {comp} }}; component_interfaces = {{ \"127.0.0.1\" }}\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"disco\", \"ping\", \"presence\", \"message\", \"iq\", \"vcard\" }}\n\
             modules_disabled = {{ \"s2s\", \"tls\", \"posix\", \"offline\" }}\n\
             authentication = \"internal_hashed\"\n\
             c2s_require_encryption = false\n\
             allow_unencrypted_plain_auth = true\n\
             log = {{ debug = \"{d}/prosody.log\" }}\n\
             VirtualHost \"localhost\"\n",
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
    for (u, pw) in users {
        let st = cmd("prosodyctl")
            .arg("--config")
            .arg(&conf)
            .args(["register", u, "localhost", pw])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "prosodyctl register {u} failed");
    }
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
        dir,
    };
    wait_port(port, "prosody");
    (g, port)
}
