//! Test harness: a real wockd on ephemeral loopback ports, on its own thread with its own glib
//! main context; a raw-socket XMPP connection for byte-level tests ([`Raw`]) and the stanza-level
//! client built on it ([`Client`], in `client.rs`).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wockd::config::{Config, Listener};
use wockd::core::Module;

pub mod client;
pub mod xmpp;

#[allow(unused_imports)]
pub use client::{Client, Responder, split_stanzas};

pub const DOMAIN: &str = "localhost";

/// A running server. Dropping it shuts the server down and joins its thread.
pub struct TestServer {
    /// Plain listener marked trusted loopback (PLAIN and iq-auth allowed without TLS).
    pub trusted: SocketAddr,
    /// Plain listener that requires STARTTLS before authentication.
    pub untrusted: SocketAddr,
    /// XEP-0368 direct TLS listener.
    pub direct_tls: SocketAddr,
    /// The component listener's addresses (XEP-0114), when components are configured.
    pub components: Vec<SocketAddr>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

pub fn test_config(dir: &Path) -> Config {
    let l = |trusted, tls| Listener {
        address: "127.0.0.1:0".parse().unwrap(),
        direct_tls: tls,
        trusted_loopback: trusted,
    };
    let mut c = Config {
        domains: vec![DOMAIN.to_owned()],
        data_dir: Some(dir.to_owned()),
        listen: vec![l(true, false), l(false, false), l(false, true)],
        ..Config::default()
    };
    c.log.level = "warn".into();
    c
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {}, |_| {})
    }

    /// Starts a server; `tweak` edits the config, `install` adds test rules and hooks (as a
    /// module's `install` would).
    pub fn start_with(
        tweak: impl FnOnce(&mut Config) + Send + 'static,
        install: impl FnOnce(&mut Module) + Send + 'static,
    ) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut s = Self::start_in(&dir, tweak, install);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data directory (for restart tests).
    pub fn start_in(
        dir: &Path,
        tweak: impl FnOnce(&mut Config) + Send + 'static,
        install: impl FnOnce(&mut Module) + Send + 'static,
    ) -> TestServer {
        let _ = tracing_subscriber_init();
        let mut config = test_config(dir);
        tweak(&mut config);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let ctx = glib::MainContext::new();
            ctx.with_thread_default(|| {
                let store = wockd::store::Store::open(&config.database_path()).unwrap();
                let server = wockd::server::Server::new(config, store, |s| {
                    wockd::modules::install_all(s);
                    install(s);
                })
                .unwrap();
                let bound = server.start().unwrap();
                wockd::modules::install_services(&server);
                wockd::status::start(&server);
                addr_tx
                    .send((bound, wockd::component::bound(&server)))
                    .unwrap();
                let main_loop = glib::MainLoop::new(Some(&ctx), false);
                let ml = main_loop.clone();
                let srv = server.clone();
                ctx.spawn_local(async move {
                    let _ = stop_rx.recv().await;
                    srv.shutdown();
                    wockd::modules::stop_services(&srv);
                    ml.quit();
                });
                main_loop.run();
                drop(server);
            })
            .unwrap();
        });
        let (bound, components) = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        TestServer {
            trusted: bound[0].0,
            untrusted: bound[1].0,
            direct_tls: bound[2].0,
            components,
            dir: dir.to_owned(),
            _tmp: None,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Starts a server with accounts `users`, each with password `pw`.
    pub fn with_users(users: &[&str]) -> TestServer {
        let srv = TestServer::start();
        for u in users {
            srv.add_user(u, "pw");
        }
        srv
    }

    /// Creates an account through the same store API the CLI uses.
    pub fn add_user(&self, name: &str, password: &str) {
        let store = wockd::store::Store::open(&self.dir.join("wockd.sqlite")).unwrap();
        use wockd::auth::scram::{Hash, new_keys};
        let keys = vec![
            (Hash::Sha1, new_keys(Hash::Sha1, password, 4096).unwrap()),
            (
                Hash::Sha256,
                new_keys(Hash::Sha256, password, 4096).unwrap(),
            ),
        ];
        store.create_account(name, DOMAIN, &keys).unwrap();
    }

    /// Waits until `user`'s mailbox holds at least `n` undelivered messages (read from the
    /// database, as `wockd status` does); panics after `secs` seconds.
    pub fn wait_mailbox(&self, user: &str, n: u64, secs: u64) {
        let store = wockd::store::Store::open(&self.dir.join("wockd.sqlite")).unwrap();
        let id = store
            .account_id(user, DOMAIN)
            .unwrap()
            .expect("no such account");
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let have = wockd::store::mailbox::count_pending(store.conn(), id).unwrap();
            if have >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user}'s mailbox holds {have} messages, not {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The self-signed certificate the server made (PEM), for clients to trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("tls").join("cert.pem")
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send_blocking(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn tracing_subscriber_init() -> Result<(), ()> {
    if std::env::var_os("WOCKD_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("WOCKD_TEST_LOG"))
            .with_test_writer()
            .try_init();
    }
    Ok(())
}

/// A raw-socket client: writes bytes, reads until a predicate on the accumulated text holds.
pub struct Raw {
    pub sock: TcpStream,
    pub buf: String,
}

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Raw {
            sock,
            buf: String::new(),
        }
    }

    pub fn send(&mut self, s: &str) {
        self.sock.write_all(s.as_bytes()).unwrap();
    }

    /// Reads until `needle` appears in the unread text; returns the text up to and including
    /// it and keeps the rest. Panics after 10 s.
    pub fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.buf.find(needle) {
                let end = i + needle.len();
                let out = self.buf[..end].to_owned();
                self.buf.drain(..end);
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; have {:?}",
                self.buf
            );
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed waiting for {needle:?}; have {:?}",
                    self.buf
                ),
                Ok(n) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read error: {e}"),
            }
        }
    }

    /// A ping round trip (id `id`): returns everything read up to the end of the answer's
    /// start tag, so the server has handled all this connection sent before.
    pub fn ping(&mut self, id: &str) -> String {
        self.send(&format!(
            "<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        let mut seen = self.until(&format!("id=\"{id}\""));
        seen.push_str(&self.until(">"));
        seen
    }

    /// Reads until the server closes the connection; returns everything unread.
    pub fn until_closed(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "server did not close; have {:?}",
                self.buf
            );
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => return std::mem::take(&mut self.buf),
                Ok(n) => self.buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return std::mem::take(&mut self.buf);
                }
                Err(e) => panic!("read error: {e}"),
            }
        }
    }

    /// Connects and opens a stream; returns the connection and the stream features.
    pub fn open(addr: SocketAddr) -> (Raw, String) {
        let mut c = Raw::connect(addr);
        c.send(HEADER);
        let features = c.until("</stream:features>");
        (c, features)
    }

    /// Opens a stream on a trusted listener, authenticates with SASL PLAIN and restarts the
    /// stream; returns the connection (not yet bound) and the new stream features.
    pub fn authenticated(addr: SocketAddr, user: &str, password: &str) -> (Raw, String) {
        let (mut c, _) = Raw::open(addr);
        c.send(&plain_auth(user, password));
        c.until("<success");
        c.send(HEADER);
        let features = c.until("</stream:features>");
        (c, features)
    }

    /// Opens a stream on a trusted listener and logs in with SASL PLAIN; returns after bind.
    pub fn login_plain(addr: SocketAddr, user: &str, password: &str, resource: &str) -> Raw {
        let (mut c, _) = Raw::authenticated(addr, user, password);
        c.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ));
        c.until("</iq>");
        c
    }

    /// Logs in like [`Raw::login_plain`] and enables XEP-0198 stream management with
    /// resumption (`max` seconds); returns the connection and the resumption id.
    pub fn login_sm(
        addr: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
        max: u32,
    ) -> (Raw, String) {
        let mut c = Raw::login_plain(addr, user, password, resource);
        c.send(&format!(
            "<enable xmlns='urn:xmpp:sm:3' resume='true' max='{max}'/>"
        ));
        let enabled = c.until("/>");
        assert!(
            enabled.contains("<enabled") && enabled.contains("resume=\"true\""),
            "{enabled}"
        );
        let id = attr(&enabled, "id");
        (c, id)
    }
}

/// The value of the first attribute `name` in `text` (panics if there is none).
pub fn attr(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        + name.len()
        + 2;
    text[start..].split('"').next().unwrap().to_owned()
}

/// Whether an answer is a result.
pub fn is_result(s: &str) -> bool {
    s.contains("type=\"result\"")
}

/// Asserts an error answer with `condition` (and the error `type`).
pub fn assert_error(s: &str, kind: &str, condition: &str) {
    assert!(
        s.contains("type=\"error\"")
            && s.contains(&format!("<error type=\"{kind}\""))
            && s.contains(&format!(
                "<{condition} xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\""
            )),
        "expected {kind}/{condition}: {s}"
    );
}

/// The SASL PLAIN `<auth>` element for `user` and `password`.
pub fn plain_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
}

/// SASL PLAIN on a fresh stream at `addr` (a trusted listener): true on `<success/>`, false on
/// `<failure/>` (anything else fails the test).
pub fn plain_ok(addr: SocketAddr, user: &str, password: &str) -> bool {
    let (mut c, _) = Raw::open(addr);
    c.send(&plain_auth(user, password));
    let answer = c.until("xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"");
    let answer = answer + &c.until(">");
    assert!(
        answer.contains("<success") || answer.contains("<failure"),
        "{answer}"
    );
    answer.contains("<success")
}

/// A direct-TLS (XEP-0368) client stream.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects to the direct-TLS listener, trusting the server's self-signed certificate.
pub fn tls_client(srv: &TestServer) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(srv.cert_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = TcpStream::connect(srv.direct_tls).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads from `s` until `needle` is in `buf`; returns the text up to it and keeps the rest.
/// Panics after 20 s or on EOF.
pub fn read_until(s: &mut impl Read, buf: &mut String, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = buf.find(needle) {
            let out = buf[..i + needle.len()].to_owned();
            buf.drain(..i + needle.len());
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "timeout waiting for {needle}: {} bytes buffered",
            buf.len()
        );
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) => panic!("closed waiting for {needle}: {buf}"),
            Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// A test CA (PEM) and, for each of `names`, a certificate it signed for that name and its
/// key (PEM): for federation tests where both sides trust the CA.
pub fn test_ca(names: &[&str]) -> (String, Vec<(String, String)>) {
    let sets: Vec<Vec<&str>> = names.iter().map(|n| vec![*n]).collect();
    let sets: Vec<&[&str]> = sets.iter().map(Vec::as_slice).collect();
    test_ca_sans(&sets)
}

/// Like [`test_ca`], each certificate naming a set of domains.
pub fn test_ca_sans(leaves: &[&[&str]]) -> (String, Vec<(String, String)>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wockd federation test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaves = leaves
        .iter()
        .map(|names| {
            let key = KeyPair::generate().unwrap();
            let sans: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        })
        .collect();
    (ca_cert.pem(), leaves)
}
