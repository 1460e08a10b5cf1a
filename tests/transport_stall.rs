//! The transport's stall watchdog (issue 4, reconnects): an IRC server that welcomes the
//! account and then never says another word (a NAT that dropped the connection, a hung
//! server) is taken for dead after `[transport] stall_timeout`, the user is told once, and the
//! account connects again.
//!
//! Its own test binary: the watchdog's timeout is a server setting, and libpurple can be
//! initialised once per process.

mod common;
mod transport_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Raw, TestServer};
use transport_support::*;

const SVC: &str = "irc.localhost";

/// A loopback "IRC server" that answers registration with a welcome and then stays silent
/// while keeping the connection open. Each accepted connection is reported.
fn silent_ircd() -> (u16, Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            if tx.send(Instant::now()).is_err() {
                return;
            }
            std::thread::spawn(move || welcome_then_silence(s));
        }
    });
    (port, rx)
}

fn welcome_then_silence(mut s: TcpStream) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut nick = None;
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return, // the client closed: done
            Ok(_) => {}
        }
        if nick.is_none()
            && let Some(n) = line.trim_end().strip_prefix("NICK ")
        {
            let n = n.trim_start_matches(':').to_owned();
            let _ = write!(
                s,
                ":silent.test 001 {n} :Welcome\r\n:silent.test 376 {n} :End of MOTD\r\n"
            );
            nick = Some(n);
        }
        // Everything after the welcome (PING included) goes unanswered.
    }
}

#[test]
fn a_silent_connection_is_remade() {
    let (port, accepts) = silent_ircd();
    let srv = TestServer::start_with(
        |c| {
            c.transport.enabled = true;
            // ngircd listens on 127.0.0.1: the public-address rule must let it through.
            c.transport.allow_private_addresses = true;
            c.transport.stall_timeout = 3;
            c.transport.services = vec![irc_service(SVC)];
        },
        |_| {},
    );
    srv.add_user("alice", "pw");
    let mut c = Raw::login_plain(srv.trusted, "alice", "pw", "laptop");
    c.send("<presence/>");
    c.send(&register_form(
        SVC,
        "reg",
        &[
            ("username", "alicebot"),
            ("split:0", "127.0.0.1"),
            ("opt:port", &port.to_string()),
            ("opt:ssl", "0"),
        ],
    ));
    let r = until_all(&mut c, &["id=\"reg\""]);
    assert!(r.contains("type=\"result\""), "registration failed: {r}");
    accepts
        .recv_timeout(Duration::from_secs(10))
        .expect("the account never connected");
    until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    let online = Instant::now();

    // Silence: after the stall timeout the connection is given up, the user told why, and
    // the account connects again.
    let told = until_all(&mut c, &["No data from the server for 3 s"]);
    assert!(told.contains("from=\"irc.localhost\""), "{told}");
    assert!(
        online.elapsed() >= Duration::from_secs(3),
        "declared stalled after {:?}, before the timeout",
        online.elapsed()
    );
    accepts
        .recv_timeout(Duration::from_secs(15))
        .expect("no reconnect after the stall");
    until_all(&mut c, &["alicebot@127.0.0.1: online"]);
    srv.stop();
}
