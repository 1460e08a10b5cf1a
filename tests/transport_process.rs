//! `[transport] process = "separate"`: `wockd run` starts the IM transport as its own child
//! process (`wockd component`) attached over a loopback component link. The test runs the real
//! binary: a user registers an IRC account on a loopback ngircd and talks to IRC; the transport
//! process is killed with SIGKILL; the user stays connected, the child comes back by itself,
//! tells the user once, and the legacy account logs in again.

mod common;
mod transport_support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Raw;
use transport_support::*;

const SVC: &str = "irc.localhost";

fn write_config(dir: &Path, c2s: u16, comp: u16) -> std::path::PathBuf {
    let path = dir.join("wockd.toml");
    std::fs::write(
        &path,
        format!(
            r#"domains = ["localhost"]
data_dir = "{data}"

[[listen]]
address = "127.0.0.1:{c2s}"
trusted_loopback = true

[log]
level = "info"

[s2s]
enabled = false

[component_listener]
listen = ["127.0.0.1:{comp}"]

[torrent]
enabled = false

[transport]
enabled = true
process = "separate"
allow_private_addresses = true

[[transport.services]]
domain = "{SVC}"
prpl = "prpl-irc"
defaults = {{ "ratelimit-interval" = "0", "ratelimit-burst" = "100" }}
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

fn status_line(dir: &Path, prefix: &str) -> Option<String> {
    std::fs::read_to_string(dir.join("data/online.txt"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
}

fn wait_line(dir: &Path, prefix: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(l) = status_line(dir, prefix)
            && Some(l.as_str()) != not
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed {prefix:?}: {:?}",
            std::fs::read_to_string(dir.join("data/online.txt"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_crashing_transport_process_does_not_take_the_server_down() {
    let Some(bin) = require("ngircd") else { return };
    let (_ircd, irc_port) = ngircd(&bin);
    let dir = tempfile::tempdir().unwrap();
    let (c2s, comp) = (free_port(), free_port());
    let config = write_config(dir.path(), c2s, comp);
    let wockd = env!("CARGO_BIN_EXE_wockd");
    let mut add = Command::new(wockd)
        .arg("-c")
        .arg(&config)
        .args(["adduser", "alice@localhost", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        add.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    }
    assert!(add.wait().unwrap().success());
    let log = std::fs::File::create(dir.path().join("wockd.log")).unwrap();
    let child = Command::new(wockd)
        .process_group(0)
        .arg("-c")
        .arg(&config)
        .arg("run")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Guard {
        child,
        extra_pidfile: None,
        dir: tempfile::tempdir().unwrap(),
    };
    wait_port(c2s, "wockd");
    wait_line(dir.path(), &format!("component {SVC} connected"), None);
    let first = wait_line(dir.path(), "transport-process ", None);

    let mut c = Raw::login_plain(([127, 0, 0, 1], c2s).into(), "alice", "pw", "laptop");
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    c.until("</iq>");
    c.send("<presence/>");
    let mut bob = Irc::connect(irc_port, "bob");
    c.send(&register_form(
        SVC,
        "reg1",
        &[
            ("username", "alicebot"),
            ("split:0", "127.0.0.1"),
            ("opt:port", &irc_port.to_string()),
            ("opt:ssl", "0"),
        ],
    ));
    let r = c.until("id=\"reg1\"") + &c.until(">");
    assert!(r.contains("type=\"result\""), "registration failed: {r}");
    until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    c.send(&format!(
        "<message to='bob@{SVC}' type='chat' id='m1'><body>before the crash</body></message>"
    ));
    assert!(bob.expect("PRIVMSG bob").contains(":before the crash"));

    let pid: i32 = first
        .trim_start_matches("transport-process ")
        .trim()
        .parse()
        .unwrap();
    // libpurple (opened at run time) is mapped in the transport process only.
    let maps = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps(_server.child.id()).contains("libpurple"),
        "the main process mapped libpurple"
    );
    assert!(maps(pid as u32).contains("libpurple.so"));

    // SIGKILL to the transport process.
    // SAFETY: kill(2) on the transport process the server under test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    // The user stays connected; the gateway comes back by itself and tells the user once.
    c.send("<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
    c.until("id=\"ping1\"");
    let notice = until_all(
        &mut c,
        &["stopped unexpectedly", "alicebot@127.0.0.1: online"],
    );
    assert!(
        notice.contains("type=\"headline\"") && notice.contains(&format!("from=\"{SVC}\"")),
        "{notice}"
    );
    let second = wait_line(dir.path(), "transport-process ", Some(&first));
    assert_ne!(first, second);
    wait_line(dir.path(), &format!("component {SVC} connected"), None);
    c.send(&format!(
        "<message to='bob@{SVC}' type='chat' id='m2'><body>after the crash</body></message>"
    ));
    assert!(bob.expect("PRIVMSG bob").contains(":after the crash"));
    let rest = drain(&mut c, Duration::from_millis(300));
    assert!(
        !rest.contains("stopped unexpectedly"),
        "told more than once: {rest}"
    );
}
