//! What the torrent service can be asked to do, as one typed value, and the one place that
//! does it.
//!
//! The three front doors — the protocol IQs ([`super::iq`]), XEP-0050 ad-hoc commands
//! ([`super::adhoc`]) and chat ([`super::chat`]) — each parse their input into a [`Command`]
//! (a parse error is a value each door renders its own way: an IQ error, an ad-hoc note, a chat
//! reply) and hand it to [`apply`], which calls the service and reports an [`Outcome`]. So the
//! doors differ only in how they read and how they answer; what `pause 3` does is decided
//! here once. (The shape of mini-redis's `cmd/`: parse into a typed value, then apply.)

use std::net::SocketAddr;
use std::rc::Rc;

use jid::BareJid;

use super::jobs::{Failure, Job, Progress};
use super::service::{Accepted, AddOptions, TorrentService};
use super::store::{Notify, Settings};
use crate::net::source;

/// Most peers one `add` may name (besides a magnet's own `x.pe`, counted with them).
pub(super) const MAX_PEERS: usize = 50;

/// One request to the torrent service, whichever door it came through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Command {
    /// Add what `source` names: a magnet link, the http(s) URL of a .torrent, or a .torrent
    /// in base64.
    Add {
        source: String,
        /// Added paused: nothing is downloaded until it is resumed.
        paused: bool,
        /// Peers to ask besides trackers and DHT (like a magnet's `x.pe`; LAN and tests).
        peers: Vec<SocketAddr>,
    },
    /// The owner's jobs, with live numbers.
    List,
    /// `op` on each of the owner's jobs `numbers`, in order (one for an IQ, several from a
    /// form or a chat line).
    Jobs { op: JobOp, numbers: Vec<i64> },
    /// The owner's notification settings.
    GetSettings,
    /// Changes the settings that are given and keeps the others.
    SetSettings {
        notify: Option<Notify>,
        progress: Option<bool>,
    },
    /// What the service can do (chat's `help`; the other doors have disco for that).
    Help,
}

/// What [`Command::Jobs`] does to each job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobOp {
    Status,
    Pause,
    Resume,
    /// Forgets the job; `files`: and deletes what it downloaded.
    Remove {
        files: bool,
    },
}

/// Which door a command came through. Only the `add` notification depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Door {
    Iq,
    AdHoc,
    /// The chat door answers an add in the conversation itself, so the owner gets no separate
    /// "added" notification.
    Chat,
}

/// What a [`Command`] came to, for its door to render.
// One per command, moved once into its door's callback: boxing the job would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Outcome {
    /// [`Command::Add`]: the accepted job or why not.
    Added(Result<Accepted, Failure>),
    /// [`Command::List`].
    Listed(Vec<(Job, Option<Progress>)>),
    /// [`Command::Jobs`]: each job number with the job as it is now (no numbers after a
    /// remove), or why not.
    Jobs(Vec<(i64, JobResult)>),
    /// [`Command::GetSettings`] and [`Command::SetSettings`]: the settings now in force.
    Settings(Result<Settings, Failure>),
    /// [`Command::Help`].
    Help,
}

/// One job of a [`Command::Jobs`].
pub(super) type JobResult = Result<(Job, Option<Progress>), Failure>;

/// Carries out `cmd` for `owner` and calls `done` once with what came of it: at once when
/// the answer is at hand (settings, help, an empty job list, an add refused before it
/// started), otherwise from the main loop when the engine has answered (an add, for a magnet,
/// after at most the service's wait for metadata).
pub(super) fn apply(
    svc: &Rc<TorrentService>,
    owner: BareJid,
    door: Door,
    cmd: Command,
    done: impl FnOnce(Outcome) + 'static,
) {
    match cmd {
        Command::Add {
            source,
            paused,
            peers,
        } => svc.add(
            owner,
            &source,
            AddOptions { paused, peers },
            door != Door::Chat,
            Box::new(move |r| done(Outcome::Added(r))),
        ),
        Command::List => {
            let svc = svc.clone();
            source::spawn_local(async move { done(Outcome::Listed(svc.list(&owner).await)) });
        }
        Command::Jobs { numbers, .. } if numbers.is_empty() => done(Outcome::Jobs(Vec::new())),
        Command::Jobs { op, numbers } => {
            let svc = svc.clone();
            source::spawn_local(async move {
                let mut results = Vec::with_capacity(numbers.len());
                for n in numbers {
                    let r = match op {
                        JobOp::Status => svc.status(&owner, n).await,
                        JobOp::Pause => svc.pause(&owner, n).await,
                        JobOp::Resume => svc.resume(&owner, n).await,
                        JobOp::Remove { files } => {
                            svc.remove(&owner, n, files).await.map(|j| (j, None))
                        }
                    };
                    results.push((n, r));
                }
                done(Outcome::Jobs(results));
            });
        }
        Command::GetSettings => done(Outcome::Settings(svc.settings(&owner))),
        Command::SetSettings { notify, progress } => {
            let r = svc.settings(&owner).and_then(|mut s| {
                if let Some(n) = notify {
                    s.notify = n;
                }
                if let Some(p) = progress {
                    s.progress = p;
                }
                svc.set_settings(&owner, s).map(|()| s)
            });
            done(Outcome::Settings(r));
        }
        Command::Help => done(Outcome::Help),
    }
}

/// A boolean attribute or form value as clients write it.
pub(super) fn truthy(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("1" | "true" | "yes" | "on"))
}

/// `ip:port` peers separated by commas or spaces (at most [`MAX_PEERS`]).
pub(super) fn parse_peers(s: &str) -> Result<Vec<SocketAddr>, Failure> {
    let peers: Vec<&str> = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .take(MAX_PEERS + 1)
        .collect();
    if peers.len() > MAX_PEERS {
        return Err(Failure::bad_request(format!(
            "at most {MAX_PEERS} peers can be given"
        )));
    }
    peers
        .into_iter()
        .map(|p| {
            p.parse().map_err(|_| {
                let shown: String = p.chars().take(60).collect();
                Failure::bad_request(format!("peer `{shown}` is not ip:port"))
            })
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn booleans_as_clients_write_them() {
        for yes in ["1", "true", " yes", "on "] {
            assert!(truthy(Some(yes)), "{yes}");
        }
        for no in ["0", "false", "no", "off", "", "TRUE", "y"] {
            assert!(!truthy(Some(no)), "{no}");
        }
        assert!(!truthy(None));
    }

    #[test]
    fn peer_lists() {
        assert_eq!(
            parse_peers("127.0.0.1:6881, [::1]:7000\n10.0.0.2:1").unwrap(),
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "[::1]:7000".parse().unwrap(),
                "10.0.0.2:1".parse().unwrap(),
            ]
        );
        assert_eq!(parse_peers("").unwrap(), Vec::<SocketAddr>::new());
        assert_eq!(
            parse_peers("1.2.3.4").unwrap_err().text,
            "peer `1.2.3.4` is not ip:port"
        );
        let many = vec!["1.2.3.4:5"; MAX_PEERS + 1].join(" ");
        assert!(parse_peers(&many).is_err());
        let enough = vec!["1.2.3.4:5"; MAX_PEERS].join(",");
        assert_eq!(parse_peers(&enough).unwrap().len(), MAX_PEERS);
    }

    /// Peers as users write them (no IPv6 flow label or scope).
    pub(crate) fn any_peer() -> impl Strategy<Value = SocketAddr> {
        (any::<std::net::IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
    }

    proptest! {
        /// Peer lists: any text is read or refused without panicking; lists of addresses
        /// read back.
        #[test]
        fn peers_round_trip(
            peers in proptest::collection::vec(any_peer(), 0..MAX_PEERS),
            sep in "(,|, | |\\n)",
            junk in any::<String>(),
        ) {
            let text = peers.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(&sep);
            prop_assert_eq!(parse_peers(&text).unwrap(), peers);
            let _ = parse_peers(&junk);
        }
    }
}
