//! Where the torrent engine may connect on a user's behalf (issue 10, point 7). Unless
//! `[torrent] fetch_private_addresses` is on, every address that a user can name must pass
//! [`crate::net::addr::is_remote`] — public, and not this host:
//!
//! - peers (`peers='…'` of an `add`, a magnet's `x.pe`): refused, the add fails with
//!   `policy-violation` naming the peer ([`check_peer`]);
//! - trackers (a magnet's `tr=`, a .torrent's `announce`/`announce-list`): a tracker whose URL
//!   is not http, https or udp, whose IP literal is not public, or whose host name does not
//!   resolve or resolves to any non-public address is *dropped* — the torrent goes on with the
//!   others (many torrents list dozens, some long dead or sinkholed to 127.0.0.1), and its owner
//!   is told which were ignored and why. At most [`MAX_TRACKERS`] are checked; the rest are
//!   dropped too. The engine gets a magnet or .torrent without them ([`filter_magnet`],
//!   [`filter_torrent`]; the info dictionary, and so the info hash, is kept byte for byte);
//! - every other peer the engine learns (from trackers, DHT, peer exchange) is stopped by the
//!   blocklist librqbit checks before each outgoing connection ([`blocklist`]), written from
//!   the same table at engine start.
//!
//! DHT, LSD and UPnP stay as configured. Known limits: a tracker's host name is checked when
//! the torrent is added; should its DNS answer change later, librqbit's own HTTP client
//! follows it. librqbit contacts the peers it hears of while resolving a magnet's metadata
//! without consulting its blocklist; with DHT off (the embedded default) those come only from
//! the checked trackers and peers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

use super::jobs::Failure;
use crate::core::stanza::Condition;
use crate::net::addr::{self, is_remote};

/// Most trackers of one torrent that are checked (and kept).
pub const MAX_TRACKERS: usize = 64;

/// How long the name of a tracker may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A tracker left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub tracker: String,
    pub why: String,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.tracker, self.why)
    }
}

/// "ignored trackers: a (why), b (why)" — empty when nothing was ignored.
pub fn describe(ignored: &[Ignored]) -> String {
    match ignored {
        [] => String::new(),
        [one] => format!("ignored tracker {one}"),
        _ => format!(
            "ignored trackers: {}",
            ignored
                .iter()
                .map(Ignored::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A peer the user named: refused unless it is remote (or private addresses are allowed).
pub fn check_peer(peer: SocketAddr, allow_private: bool) -> Result<(), Failure> {
    if allow_private || is_remote(peer.ip()) {
        Ok(())
    } else {
        Err(Failure::new(
            Condition::PolicyViolation,
            format!(
                "peer {peer} is not a public address; this server does not connect to its own network"
            ),
        ))
    }
}

/// What the URL alone says: `Err(why)` to drop it, `Ok(None)` for a good IP literal,
/// `Ok(Some((host, port)))` when a name must be resolved.
fn check_tracker_url(tracker: &str) -> Result<Option<(String, u16)>, String> {
    let url = Url::parse(tracker).map_err(|_| "not a valid URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https" | "udp") {
        return Err(format!("unsupported scheme `{}:`", url.scheme()));
    }
    let ip: IpAddr = match url.host() {
        None => return Err("no host".into()),
        Some(Host::Domain(d)) => {
            let port = url.port_or_known_default().unwrap_or(0);
            return Ok(Some((d.to_owned(), port)));
        }
        Some(Host::Ipv4(a)) => a.into(),
        Some(Host::Ipv6(a)) => a.into(),
    };
    if is_remote(ip) {
        Ok(None)
    } else {
        Err("not a public address".into())
    }
}

/// `Ok` if librqbit may announce to `tracker`: see the module comment.
pub async fn check_tracker(tracker: &str) -> Result<(), String> {
    let Some((host, port)) = check_tracker_url(tracker)? else {
        return Ok(());
    };
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| "its name did not resolve in time".to_owned())?
        .map_err(|_| "its name does not resolve".to_owned())?;
    let mut any = false;
    for a in found {
        any = true;
        if !is_remote(a.ip()) {
            return Err(format!(
                "its name resolves to {}, not a public address",
                a.ip()
            ));
        }
    }
    if any {
        Ok(())
    } else {
        Err("its name has no address".into())
    }
}

/// The trackers that may be used, in order (duplicates removed), and those dropped.
pub async fn filter_trackers(
    trackers: Vec<String>,
    allow_private: bool,
) -> (Vec<String>, Vec<Ignored>) {
    let mut unique: Vec<String> = Vec::new();
    for t in trackers {
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    if allow_private {
        return (unique, Vec::new());
    }
    let mut ignored = Vec::new();
    for t in unique.drain(MAX_TRACKERS.min(unique.len())..) {
        ignored.push(Ignored {
            tracker: t,
            why: format!("more than {MAX_TRACKERS} trackers"),
        });
    }
    // Checked concurrently: a dead name costs its timeout once, not once per tracker.
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in unique.iter().enumerate() {
        let t = t.clone();
        set.spawn(async move { (i, check_tracker(&t).await) });
    }
    let mut verdicts: Vec<Option<Result<(), String>>> = vec![None; unique.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, v)) = r
            && let Some(slot) = verdicts.get_mut(i)
        {
            *slot = Some(v);
        }
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (t, v) in unique.into_iter().zip(verdicts) {
        match v {
            Some(Ok(())) => kept.push(t),
            Some(Err(why)) => dropped.push(Ignored { tracker: t, why }),
            None => dropped.push(Ignored {
                tracker: t,
                why: "could not be checked".into(),
            }),
        }
    }
    dropped.extend(ignored);
    (kept, dropped)
}

/// A magnet's query pairs, raw and decoded the way librqbit decodes them.
fn magnet_pairs(magnet: &str) -> Vec<(&str, String, String)> {
    let query = magnet.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|raw| {
            let (k, v) = url::form_urlencoded::parse(raw.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            (raw, k, v)
        })
        .collect()
}

/// The `tr=` values of a magnet, decoded.
pub fn magnet_trackers(magnet: &str) -> Vec<String> {
    magnet_pairs(magnet)
        .into_iter()
        .filter(|(_, k, _)| k == "tr")
        .map(|(_, _, v)| v)
        .collect()
}

/// `magnet` with only the `tr=` parameters in `keep`; everything else unchanged.
pub fn magnet_keeping(magnet: &str, keep: &[String]) -> String {
    let Some((head, _)) = magnet.split_once('?') else {
        return magnet.to_owned();
    };
    let pairs: Vec<&str> = magnet_pairs(magnet)
        .into_iter()
        .filter(|(_, k, v)| k != "tr" || keep.contains(v))
        .map(|(raw, _, _)| raw)
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

/// The magnet to give the engine, and the trackers left out.
pub async fn filter_magnet(magnet: &str, allow_private: bool) -> (String, Vec<Ignored>) {
    if allow_private {
        return (magnet.to_owned(), Vec::new());
    }
    let (kept, ignored) = filter_trackers(magnet_trackers(magnet), allow_private).await;
    if ignored.is_empty() {
        return (magnet.to_owned(), ignored);
    }
    (magnet_keeping(magnet, &kept), ignored)
}

fn not_torrent(e: impl fmt::Display) -> Failure {
    Failure::new(
        Condition::NotAcceptable,
        format!("not a valid .torrent: {e}"),
    )
}

/// The trackers librqbit would use: `announce-list` if it names any, else `announce`
/// (names that are not UTF-8 are skipped, as librqbit skips them).
pub fn torrent_trackers(bytes: &[u8]) -> Result<Vec<String>, Failure> {
    let meta = librqbit::torrent_from_bytes(bytes).map_err(not_torrent)?;
    Ok(meta
        .iter_announce()
        .filter_map(|t| std::str::from_utf8(t.as_ref()).ok().map(str::to_owned))
        .collect())
}

fn bencode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// A .torrent with the same info dictionary (byte for byte: same info hash) and exactly
/// `trackers` (each its own tier). Other top-level keys (comment, DHT nodes…) are left out.
pub fn torrent_with_trackers(bytes: &[u8], trackers: &[String]) -> Result<Vec<u8>, Failure> {
    let meta = librqbit::torrent_from_bytes(bytes).map_err(not_torrent)?;
    let info: &[u8] = meta.info.raw_bytes.as_ref();
    let mut out = Vec::with_capacity(info.len() + 64 * trackers.len() + 64);
    out.push(b'd');
    if let Some(first) = trackers.first() {
        bencode_bytes(&mut out, b"announce");
        bencode_bytes(&mut out, first.as_bytes());
        bencode_bytes(&mut out, b"announce-list");
        out.push(b'l');
        for t in trackers {
            out.push(b'l');
            bencode_bytes(&mut out, t.as_bytes());
            out.push(b'e');
        }
        out.push(b'e');
    }
    bencode_bytes(&mut out, b"info");
    out.extend_from_slice(info);
    out.push(b'e');
    Ok(out)
}

/// The .torrent to give the engine, and the trackers left out.
pub async fn filter_torrent(
    bytes: Vec<u8>,
    allow_private: bool,
) -> Result<(Vec<u8>, Vec<Ignored>), Failure> {
    if allow_private {
        return Ok((bytes, Vec::new()));
    }
    let trackers = torrent_trackers(&bytes)?;
    let (kept, ignored) = filter_trackers(trackers, allow_private).await;
    if ignored.is_empty() {
        return Ok((bytes, ignored));
    }
    Ok((torrent_with_trackers(&bytes, &kept)?, ignored))
}

/// librqbit's blocklist format (`name:first-last` per line): every non-public range, and this
/// host's own addresses in each of their forms.
pub fn blocklist(own: &[IpAddr]) -> String {
    let mut ranges = addr::non_public_ranges();
    for ip in own {
        ranges.push((*ip, *ip));
        if let IpAddr::V4(a) = ip {
            ranges.extend(addr::embedded_forms(*a, *a));
        }
    }
    let mut out =
        String::from("# Written by wockd at engine start: addresses users may not reach.\n");
    for (first, last) in ranges {
        out.push_str(&format!("wockd:{first}-{last}\n"));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid single-file .torrent of `len` bytes named `name` (all pieces zero hashes).
    pub(crate) fn tiny_torrent(name: &str, len: u64, trackers: &[&str]) -> Vec<u8> {
        let piece: u64 = 16384;
        let pieces = len.div_ceil(piece).max(1);
        let mut info = Vec::new();
        info.push(b'd');
        bencode_bytes(&mut info, b"length");
        info.extend_from_slice(format!("i{len}e").as_bytes());
        bencode_bytes(&mut info, b"name");
        bencode_bytes(&mut info, name.as_bytes());
        bencode_bytes(&mut info, b"piece length");
        info.extend_from_slice(format!("i{piece}e").as_bytes());
        bencode_bytes(&mut info, b"pieces");
        bencode_bytes(&mut info, &vec![0u8; 20 * pieces as usize]);
        info.push(b'e');
        let mut t = Vec::new();
        t.push(b'd');
        if let Some(first) = trackers.first() {
            bencode_bytes(&mut t, b"announce");
            bencode_bytes(&mut t, first.as_bytes());
        }
        if trackers.len() > 1 {
            bencode_bytes(&mut t, b"announce-list");
            t.push(b'l');
            for tr in trackers {
                t.push(b'l');
                bencode_bytes(&mut t, tr.as_bytes());
                t.push(b'e');
            }
            t.push(b'e');
        }
        bencode_bytes(&mut t, b"comment");
        bencode_bytes(&mut t, b"made by a test");
        bencode_bytes(&mut t, b"info");
        t.extend_from_slice(&info);
        t.push(b'e');
        t
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn peers_and_tracker_urls() {
        assert!(check_peer("127.0.0.1:6881".parse().unwrap(), false).is_err());
        assert!(check_peer("[::ffff:10.0.0.1]:6881".parse().unwrap(), false).is_err());
        assert!(check_peer("127.0.0.1:6881".parse().unwrap(), true).is_ok());
        assert!(check_peer("1.1.1.1:6881".parse().unwrap(), false).is_ok());
        let e = check_peer("192.168.1.2:1".parse().unwrap(), false).unwrap_err();
        assert_eq!(e.cond, Condition::PolicyViolation);
        assert!(e.text.contains("192.168.1.2:1"), "{}", e.text);

        for (url, bad) in [
            ("http://127.0.0.1:6969/announce", true),
            ("udp://[::1]:6969", true),
            ("http://[::ffff:7f00:1]/a", true),
            ("http://2130706433/announce", true), // 127.0.0.1 as a number
            ("http://0x7f.1/announce", true),
            ("http://169.254.169.254/latest", true),
            ("http://10.0.0.1/", true),
            ("wss://tracker.example/", true),
            ("file:///etc/passwd", true),
            ("not a url", true),
            ("http://1.1.1.1/announce", false),
            ("udp://[2606:4700::1111]:80", false),
        ] {
            assert_eq!(check_tracker_url(url).is_err(), bad, "{url}");
        }
        assert_eq!(
            check_tracker_url("udp://tracker.example.org:1337/announce").unwrap(),
            Some(("tracker.example.org".to_owned(), 1337))
        );
        // Names: "localhost" resolves to loopback; `.invalid` never resolves.
        let rt = rt();
        let e = rt
            .block_on(check_tracker("http://localhost:1/announce"))
            .unwrap_err();
        assert!(e.contains("not a public address"), "{e}");
        assert!(rt.block_on(check_tracker("http://x.invalid/a")).is_err());
    }

    #[test]
    fn magnets_lose_only_the_refused_trackers() {
        let m = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a+b\
                 &tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&tr=http://1.1.1.1/a&x.pe=1.2.3.4:5\
                 &t%72=udp%3A%2F%2F%5B%3A%3A1%5D%3A2";
        assert_eq!(
            magnet_trackers(m),
            vec![
                "http://127.0.0.1:1/announce",
                "http://1.1.1.1/a",
                "udp://[::1]:2"
            ]
        );
        let (out, ignored) = rt().block_on(filter_magnet(m, false));
        assert_eq!(magnet_trackers(&out), vec!["http://1.1.1.1/a"]);
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(
            out.contains("&dn=a+b&") && out.contains("x.pe=1.2.3.4:5"),
            "{out}"
        );
        // librqbit reads it the same way.
        let parsed = librqbit::Magnet::parse(&out).unwrap();
        assert_eq!(parsed.trackers, vec!["http://1.1.1.1/a"]);
        assert_eq!(parsed.name.as_deref(), Some("a b"));
        let (same, none) = rt().block_on(filter_magnet(m, true));
        assert!(same == m && none.is_empty());
        assert!(describe(&ignored).contains("127.0.0.1:1"));
    }

    #[test]
    fn torrents_lose_only_the_refused_trackers_and_keep_their_hash() {
        let t = tiny_torrent(
            "a.bin",
            40000,
            &["http://127.0.0.1:9/announce", "http://1.1.1.1/announce"],
        );
        let hash = librqbit::torrent_from_bytes(&t).unwrap().info_hash;
        let (out, ignored) = rt().block_on(filter_torrent(t.clone(), false)).unwrap();
        assert_eq!(ignored.len(), 1);
        assert_eq!(ignored[0].tracker, "http://127.0.0.1:9/announce");
        assert_eq!(
            torrent_trackers(&out).unwrap(),
            vec!["http://1.1.1.1/announce"]
        );
        assert_eq!(librqbit::torrent_from_bytes(&out).unwrap().info_hash, hash);
        // Nothing to drop: the bytes are untouched.
        let ok = tiny_torrent("a.bin", 40000, &["http://1.1.1.1/announce"]);
        let (same, none) = rt().block_on(filter_torrent(ok.clone(), false)).unwrap();
        assert!(same == ok && none.is_empty());
        // Only a loopback tracker: none left.
        let lo = tiny_torrent("a.bin", 1, &["http://127.0.0.1:9/announce"]);
        let (out, ignored) = rt().block_on(filter_torrent(lo, false)).unwrap();
        assert!(torrent_trackers(&out).unwrap().is_empty() && ignored.len() == 1);
        assert_eq!(
            rt().block_on(filter_torrent(b"d4:infoi1ee".to_vec(), false))
                .unwrap_err()
                .cond,
            Condition::NotAcceptable
        );
    }

    #[test]
    fn too_many_trackers_are_cut() {
        let many: Vec<String> = (0..MAX_TRACKERS + 5)
            .map(|i| format!("http://1.1.1.{}/a", i % 250))
            .collect();
        let (kept, ignored) = rt().block_on(filter_trackers(many, false));
        assert_eq!(kept.len(), MAX_TRACKERS);
        assert_eq!(ignored.len(), 5);
    }

    #[test]
    fn blocklist_lines_parse_as_librqbit_reads_them() {
        let text = blocklist(&["203.0.114.7".parse().unwrap()]);
        let mut n = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // librqbit: IPv6 lines (more than two colons) split at the first colon, IPv4
            // lines at the last.
            let (name, range) = if line.matches(':').count() > 2 {
                line.split_once(':').unwrap()
            } else {
                line.rsplit_once(':').unwrap()
            };
            assert_eq!(name, "wockd");
            let (a, b) = range.split_once('-').unwrap();
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(a.is_ipv4(), b.is_ipv4(), "{line}");
            assert!(a <= b, "{line}");
            n += 1;
        }
        assert!(n > 20);
        assert!(text.contains("wockd:203.0.114.7-203.0.114.7\n"));
        assert!(text.contains("wockd:::ffff:203.0.114.7-::ffff:203.0.114.7\n"));
    }

    fn tracker_like() -> impl Strategy<Value = String> {
        prop_oneof![
            "(http|https|udp|ftp)://[a-z0-9.:\\[\\]]{0,30}(/[a-z]{0,8})?",
            any::<String>(),
        ]
    }

    proptest! {
        /// Any tracker list: the rebuilt .torrent keeps its info hash and exactly the trackers
        /// asked for.
        #[test]
        fn rebuilt_torrent_round_trips(trackers in proptest::collection::vec("[ -~]{1,40}", 0..6)) {
            let t = tiny_torrent("x", 100, &[]);
            let out = torrent_with_trackers(&t, &trackers).unwrap();
            let meta = librqbit::torrent_from_bytes(&out).unwrap();
            prop_assert_eq!(meta.info_hash, librqbit::torrent_from_bytes(&t).unwrap().info_hash);
            prop_assert_eq!(torrent_trackers(&out).unwrap(), trackers);
        }

        /// Arbitrary bytes as a .torrent: an error, never a panic.
        #[test]
        fn any_bytes_as_torrent(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = torrent_trackers(&b);
            let _ = torrent_with_trackers(&b, &["http://1.1.1.1/".to_owned()]);
        }

        /// Arbitrary tracker strings are judged without panicking; only the schemes librqbit
        /// speaks and hosts that are names or public literals get through.
        #[test]
        fn any_tracker_url(t in tracker_like()) {
            if let Ok(None) = check_tracker_url(&t) {
                let u = Url::parse(&t).unwrap();
                prop_assert!(matches!(u.scheme(), "http" | "https" | "udp"));
            }
        }

        /// Rewriting a magnet keeps every other parameter, raw, in order.
        #[test]
        fn magnet_rewrite_keeps_the_rest(
            params in proptest::collection::vec(("(tr|dn|xt|x\\.pe|so|t%72)", "[a-zA-Z0-9%:/.+]{0,20}"), 0..8),
        ) {
            let m = format!(
                "magnet:?{}",
                params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
            );
            let out = magnet_keeping(&m, &[]);
            prop_assert!(magnet_trackers(&out).is_empty());
            let others = |s: &str| magnet_pairs(s)
                .into_iter()
                .filter(|(_, k, _)| k != "tr")
                .map(|(raw, _, _)| raw.to_owned())
                .collect::<Vec<_>>();
            prop_assert_eq!(others(&out), others(&m));
            let all = magnet_trackers(&m);
            prop_assert_eq!(magnet_trackers(&magnet_keeping(&m, &all)), all);
        }
    }
}
