//! The per-user job model: what a user added, in which state it is, and which notifications
//! they have had. librqbit only knows info hashes; ownership, states and the `notified` flags
//! live here (and in the store), so each JID sees and controls only its own jobs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use jid::BareJid;

use crate::core::stanza::Condition;
use crate::xml::{Element, ns};

/// Why an operation failed: an XMPP condition and a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct Failure {
    pub cond: Condition,
    pub text: String,
}

impl Failure {
    pub fn new(cond: Condition, text: impl Into<String>) -> Failure {
        Failure {
            cond,
            text: text.into(),
        }
    }

    pub fn bad_request(text: impl Into<String>) -> Failure {
        Failure::new(Condition::BadRequest, text)
    }

    pub fn no_job(number: i64) -> Failure {
        Failure::new(Condition::ItemNotFound, format!("you have no job {number}"))
    }
}

/// Notification bits of `torrent_jobs.notified`: each event is announced once, ever.
pub const NOTE_ADDED: u8 = 1;
pub const NOTE_METADATA: u8 = 2;
pub const NOTE_FINISHED: u8 = 4;
pub const NOTE_FAILED: u8 = 8;
/// Trackers were left out by the address policy (see `guard.rs`).
pub const NOTE_IGNORED: u8 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Fetching the .torrent from its URL.
    Fetching,
    /// A magnet waiting for its metadata from peers.
    Resolving,
    Downloading,
    Paused,
    /// Every selected piece is on disk (the torrent keeps seeding unless paused).
    Finished,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Fetching => "fetching",
            State::Resolving => "resolving",
            State::Downloading => "downloading",
            State::Paused => "paused",
            State::Finished => "finished",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> State {
        match s {
            "fetching" => State::Fetching,
            "resolving" => State::Resolving,
            "downloading" => State::Downloading,
            "paused" => State::Paused,
            "finished" => State::Finished,
            _ => State::Failed,
        }
    }

    /// Not yet handed to the engine.
    pub fn pending(self) -> bool {
        matches!(self, State::Fetching | State::Resolving)
    }
}

/// One download job.
#[derive(Clone, Debug)]
pub struct Job {
    /// Row id (internal).
    pub id: i64,
    pub account: i64,
    pub owner: BareJid,
    /// What the owner calls it: "job 3". Per account, never reused.
    pub number: i64,
    pub source: String,
    pub info_hash: Option<String>,
    pub name: Option<String>,
    pub state: State,
    pub error: Option<String>,
    /// The output folder given to librqbit (inside the owner's folder).
    pub folder: Option<PathBuf>,
    /// Peers named by the user (magnet `x.pe`); librqbit does not persist them.
    pub peers: Vec<SocketAddr>,
    pub total: Option<u64>,
    pub created: i64,
    pub notified: u8,
    /// librqbit's id while the engine has the torrent (not stored).
    pub torrent: Option<usize>,
}

/// Live numbers from the engine, for status replies.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub have: u64,
    pub total: u64,
    pub down_bps: u64,
    pub up_bps: u64,
    pub eta_secs: Option<u64>,
    pub peers: u32,
    pub paused: bool,
    pub error: Option<String>,
}

/// All jobs of the server, by row id.
#[derive(Default)]
pub struct Jobs {
    by_id: BTreeMap<i64, Job>,
}

impl Jobs {
    pub fn insert(&mut self, job: Job) {
        self.by_id.insert(job.id, job);
    }

    pub fn remove(&mut self, id: i64) -> Option<Job> {
        self.by_id.remove(&id)
    }

    pub fn get(&self, id: i64) -> Option<&Job> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Job> {
        self.by_id.get_mut(&id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Job> {
        self.by_id.values()
    }

    /// The owner's jobs, oldest first.
    pub fn of(&self, owner: &BareJid) -> Vec<&Job> {
        let mut v: Vec<&Job> = self.by_id.values().filter(|j| &j.owner == owner).collect();
        v.sort_by_key(|j| j.number);
        v
    }

    /// The owner's job by its number; another user's jobs are invisible.
    pub fn find(&self, owner: &BareJid, number: i64) -> Option<&Job> {
        self.by_id
            .values()
            .find(|j| &j.owner == owner && j.number == number)
    }

    pub fn by_hash(&self, hash: &str) -> Option<&Job> {
        self.by_id
            .values()
            .find(|j| j.info_hash.as_deref() == Some(hash) && j.state != State::Failed)
    }

    pub fn by_torrent(&self, torrent: usize) -> Option<&Job> {
        self.by_id.values().find(|j| j.torrent == Some(torrent))
    }

    /// Jobs and bytes the account has, for its quotas.
    pub fn usage(&self, account: i64) -> (u32, u64) {
        self.by_id
            .values()
            .filter(|j| j.account == account)
            .fold((0, 0), |(n, b), j| (n + 1, b + j.total.unwrap_or(0)))
    }
}

/// What an `add` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddInput {
    Url(String),
    Magnet {
        uri: String,
        info_hash: String,
        name: Option<String>,
        peers: Vec<SocketAddr>,
    },
    Torrent(Vec<u8>),
}

/// Reads the text of an `add`: an http(s) URL, a magnet (or a bare 40-hex info hash), or a
/// base64 .torrent (whitespace allowed). `max_bytes` bounds the decoded .torrent.
pub fn parse_add(text: &str, max_bytes: u64) -> Result<AddInput, Failure> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Failure::bad_request(
            "give an http(s) URL of a .torrent, a magnet link or a base64 .torrent",
        ));
    }
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    if lower.starts_with("magnet:") {
        return parse_magnet(t);
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if t.contains(char::is_whitespace) {
            return Err(Failure::bad_request("a URL cannot contain spaces"));
        }
        return Ok(AddInput::Url(t.to_owned()));
    }
    if t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return parse_magnet(&format!("magnet:?xt=urn:btih:{t}"));
    }
    // Any other `scheme:` is a URL we refuse (base64 has no colon).
    if let Some((scheme, _)) = t.split_once(':')
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    {
        return Err(Failure::new(
            Condition::BadRequest,
            format!("unsupported URL scheme `{scheme}:`; use http, https or magnet"),
        ));
    }
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() as u64 > max_bytes.saturating_mul(4) / 3 + 4 {
        return Err(Failure::new(
            Condition::PolicyViolation,
            format!(
                "the .torrent is larger than the limit of {}",
                human_bytes(max_bytes)
            ),
        ));
    }
    let engine = base64::engine::general_purpose::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    match engine.decode(compact.as_bytes()) {
        Ok(bytes) if bytes.first() == Some(&b'd') => Ok(AddInput::Torrent(bytes)),
        Ok(_) => Err(Failure::new(
            Condition::NotAcceptable,
            "the base64 data is not a .torrent file",
        )),
        Err(_) => Err(Failure::bad_request(
            "not an http(s) URL, a magnet link or a base64 .torrent",
        )),
    }
}

/// A magnet's info hash (BTv1, hex), display name and explicit peers (`x.pe`, BEP 9).
fn parse_magnet(uri: &str) -> Result<AddInput, Failure> {
    let m = librqbit::Magnet::parse(uri)
        .map_err(|e| Failure::bad_request(format!("not a valid magnet link: {e:#}")))?;
    let hash = m.as_id20().ok_or_else(|| {
        Failure::bad_request("the magnet link has no BitTorrent v1 info hash (xt=urn:btih:…)")
    })?;
    let mut peers = Vec::new();
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if k == "x.pe" {
            let v = percent_decode(v);
            let addr = v
                .parse::<SocketAddr>()
                .map_err(|_| Failure::bad_request(format!("magnet peer `{v}` is not ip:port")))?;
            peers.push(addr);
        }
    }
    Ok(AddInput::Magnet {
        uri: uri.to_owned(),
        info_hash: hash.as_string(),
        name: m.name.clone(),
        peers,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1h 02m`, `3m 10s`, `12s`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

impl Job {
    /// What to call the job in a sentence.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => shorten(&self.source, 60),
        }
    }

    /// `<job xmlns='http://wockd.org/ns/torrent' id='3' state='downloading' …/>`; live
    /// numbers when the engine gave them.
    pub fn to_element(&self, p: Option<&Progress>) -> Element {
        let mut el = Element::new("job", ns::TORRENT)
            .attr("id", self.number.to_string())
            .attr("state", self.state.as_str());
        if let Some(n) = &self.name {
            el.set_attr("name", n.as_str());
        }
        if let Some(h) = &self.info_hash {
            el.set_attr("hash", h.as_str());
        }
        if let Some(t) = self.total {
            el.set_attr("size", t.to_string());
        }
        if let Some(p) = p {
            el.set_attr("have", p.have.min(p.total).to_string());
            el.set_attr("progress", format!("{:.1}", percent(p)));
            el.set_attr("down", p.down_bps.to_string());
            el.set_attr("up", p.up_bps.to_string());
            el.set_attr("peers", p.peers.to_string());
            if let Some(eta) = p.eta_secs {
                el.set_attr("eta", eta.to_string());
            }
            if p.paused && self.state == State::Finished {
                el.set_attr("seeding", "false");
            }
        } else if self.state == State::Finished {
            el.set_attr("progress", "100.0");
        }
        if let Some(e) = &self.error {
            el.set_attr("error", e.as_str());
        }
        el.text(self.source.clone())
    }

    /// One line for chat and command notes: `3. ubuntu.iso — downloading 45.0% of 1.2 GiB, 3.1 MiB/s, 2m 10s left, 4 peers`.
    pub fn summary(&self, p: Option<&Progress>) -> String {
        let mut s = format!(
            "{}. {} — {}",
            self.number,
            self.label(),
            self.state.as_str()
        );
        match (self.state, p) {
            (State::Downloading | State::Paused, Some(p)) => {
                let _ = write!(s, " {:.1}% of {}", percent(p), human_bytes(p.total));
                if self.state == State::Downloading {
                    let _ = write!(s, ", {}/s", human_bytes(p.down_bps));
                    if let Some(eta) = p.eta_secs {
                        let _ = write!(s, ", {} left", human_duration(eta));
                    }
                    let _ = write!(
                        s,
                        ", {} peer{}",
                        p.peers,
                        if p.peers == 1 { "" } else { "s" }
                    );
                }
            }
            (State::Finished, _) => {
                if let Some(t) = self.total {
                    let _ = write!(s, " ({})", human_bytes(t));
                }
                if p.is_some_and(|p| p.paused) {
                    s.push_str(", not seeding");
                }
            }
            (State::Failed, _) => {
                if let Some(e) = &self.error {
                    let _ = write!(s, ": {e}");
                }
            }
            _ => {}
        }
        s
    }
}

fn percent(p: &Progress) -> f64 {
    if p.total == 0 {
        0.0
    } else {
        (p.have.min(p.total) as f64) * 100.0 / p.total as f64
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn add_input_kinds() {
        assert_eq!(
            parse_add(" http://x/a.torrent\n", 100).unwrap(),
            AddInput::Url("http://x/a.torrent".into())
        );
        let m = parse_add(
            &format!("magnet:?xt=urn:btih:{HASH}&dn=a%20b&x.pe=127.0.0.1:6881"),
            100,
        )
        .unwrap();
        match m {
            AddInput::Magnet {
                info_hash,
                peers,
                name,
                ..
            } => {
                assert_eq!(info_hash, HASH);
                assert_eq!(peers, vec!["127.0.0.1:6881".parse().unwrap()]);
                assert_eq!(name.as_deref(), Some("a b"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_add(HASH, 100).unwrap(),
            AddInput::Magnet { .. }
        ));
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"d4:infod1:xi1eee");
        let (a, b) = b64.split_at(5);
        assert_eq!(
            parse_add(&format!("{a}\n {b}"), 100).unwrap(),
            AddInput::Torrent(b"d4:infod1:xi1eee".to_vec())
        );
        for bad in [
            "",
            "ftp://x/y",
            "file:///etc/passwd",
            "magnet:?dn=x",
            "!!!",
            "aGVsbG8=",
        ] {
            assert!(parse_add(bad, 100).is_err(), "{bad}");
        }
        assert_eq!(
            parse_add("ftp://x/y", 100).unwrap_err().cond,
            Condition::BadRequest
        );
        let big = base64::engine::general_purpose::STANDARD.encode(vec![b'd'; 300]);
        assert_eq!(
            parse_add(&big, 100).unwrap_err().cond,
            Condition::PolicyViolation
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16 << 20), "16.0 MiB");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(130), "2m 10s");
        assert_eq!(human_duration(3720), "1h 02m");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn enc(s: &str) -> String {
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
        }

        fn peer() -> impl Strategy<Value = SocketAddr> {
            (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(ip, p))
        }

        proptest! {
            /// Any text as an add: an input or an error, never a panic.
            #[test]
            fn any_add_text(t in any::<String>(), max in 0u64..10_000) {
                let _ = parse_add(&t, max);
            }

            /// Magnet-shaped text, with the parameters that wockd reads itself.
            #[test]
            fn any_magnet(
                params in proptest::collection::vec(
                    ("(xt|dn|tr|x\\.pe|so|[a-z.]{0,4})", "(urn:btih:[0-9a-fA-F]{0,41}|[%0-9a-zA-Z:.\\[\\]+]{0,24}|%[0-9a-f]?)"),
                    0..6,
                ),
            ) {
                let m = format!(
                    "magnet:?{}",
                    params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
                );
                let _ = parse_add(&m, 100);
                let _ = percent_decode(&m);
            }

            /// A magnet made of a hash, a name and peers reads back as them.
            #[test]
            fn magnet_round_trip(
                hash in "[0-9a-f]{40}",
                name in proptest::option::of("[^\\x00]{1,30}"),
                peers in proptest::collection::vec(peer(), 0..5),
            ) {
                let mut m = format!("magnet:?xt=urn:btih:{hash}");
                if let Some(n) = &name {
                    m.push_str(&format!("&dn={}", enc(n)));
                }
                for p in &peers {
                    m.push_str(&format!("&x.pe={}", enc(&p.to_string())));
                }
                match parse_add(&m, 100).unwrap() {
                    AddInput::Magnet { uri, info_hash, name: got, peers: got_peers } => {
                        prop_assert_eq!(uri, m);
                        prop_assert_eq!(info_hash, hash);
                        prop_assert_eq!(got, name);
                        prop_assert_eq!(got_peers, peers);
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }

            /// A base64 .torrent (any bytes that start like a bencoded dictionary) reads back.
            #[test]
            fn base64_round_trip(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), wrap in 1usize..80) {
                bytes.insert(0, b'd');
                let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                let wrapped: Vec<String> = b64
                    .as_bytes()
                    .chunks(wrap)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                prop_assert_eq!(
                    parse_add(&wrapped.join("\n"), 1000).unwrap(),
                    AddInput::Torrent(bytes)
                );
            }
        }
    }
}
