//! The seed's namespace `http://wockd.org/ns/torrent` (README.md documents it): `add`, `list`,
//! `status`, `pause`, `resume`, `remove` and `settings` IQs, both on the user's own stream
//! with no `to` (the seed's protocol example, through [`super::stream_torrent`]) and at the
//! service's domain. A payload is read into a [`Command`]; a payload that cannot be is
//! answered with an IQ error, and so is a command that fails.

use std::rc::Rc;

use jid::BareJid;

use super::command::{self, Command, Door, JobOp, Outcome, parse_peers, truthy};
use super::jobs::Failure;
use super::service::{TorrentService, service};
use super::store::{Notify, Settings};
use crate::core::stanza::Condition;
use crate::iq::{Incoming, IqType};
use crate::xml::{Element, ns};

/// An IQ in the torrent namespace, from the user's stream or at the service's domain.
pub(super) fn handle(iq: Incoming) {
    let Some(svc) = service(iq.server()) else {
        return iq.fail(
            Condition::ServiceUnavailable,
            "the torrent service is not enabled on this server",
        );
    };
    let Some(owner) = iq.account() else {
        return iq.fail(Condition::NotAuthorized, "");
    };
    // On the user's stream: to nobody, the server, or the user's own account — not to others.
    if let Some(to) = &iq.to
        && to.domain().as_str() != svc.domain
        && (to.node().is_some() && to.to_bare() != owner)
    {
        return iq.fail(Condition::ServiceUnavailable, "");
    }
    let cmd = match parse(&iq.payload, iq.kind) {
        Ok(c) => c,
        Err(f) => return fail(iq, f),
    };
    run(&svc, owner, cmd, iq);
}

/// Applies `cmd` and answers `iq` with what came of it.
fn run(svc: &Rc<TorrentService>, owner: BareJid, cmd: Command, iq: Incoming) {
    // A remove is answered with an empty result; the other job commands with the job.
    let removing = matches!(
        cmd,
        Command::Jobs {
            op: JobOp::Remove { .. },
            ..
        }
    );
    command::apply(svc, owner, Door::Iq, cmd, move |outcome| match outcome {
        Outcome::Added(Ok(a)) => iq.result(Some(a.job.to_element(None))),
        Outcome::Listed(jobs) => {
            let mut list = Element::new("list", ns::TORRENT);
            for (j, p) in jobs {
                list.push(j.to_element(p.as_ref()));
            }
            iq.result(Some(list));
        }
        // [`parse`] gives one job number.
        Outcome::Jobs(mut results) => match results.pop() {
            Some((_, Ok(_))) if removing => iq.result(None),
            Some((_, Ok((j, p)))) => iq.result(Some(j.to_element(p.as_ref()))),
            Some((_, Err(f))) => fail(iq, f),
            None => iq.fail(Condition::BadRequest, "give the job's number as id='N'"),
        },
        Outcome::Settings(Ok(s)) => iq.result(Some(settings_element(&s))),
        Outcome::Added(Err(f)) | Outcome::Settings(Err(f)) => fail(iq, f),
        Outcome::Help => iq.fail(
            Condition::BadRequest,
            "unknown request in the torrent namespace",
        ),
    });
}

/// Reads the payload of an IQ in the torrent namespace (`p.ns` is not checked).
pub(super) fn parse(p: &Element, kind: IqType) -> Result<Command, Failure> {
    let number = || match p.get_attr("id").map(|s| s.trim().parse::<i64>()) {
        Some(Ok(n)) => Ok(n),
        _ => Err(Failure::bad_request("give the job's number as id='N'")),
    };
    let one = |op: JobOp| -> Result<Command, Failure> {
        Ok(Command::Jobs {
            op,
            numbers: vec![number()?],
        })
    };
    let wrong_kind = || Failure::bad_request("status is a get; pause, resume and remove are sets");
    match (p.name.as_str(), kind) {
        ("add", IqType::Set) => Ok(Command::Add {
            source: p.text_content(),
            paused: truthy(p.get_attr("paused")),
            peers: parse_peers(p.get_attr("peers").unwrap_or(""))?,
        }),
        ("list", IqType::Get) => Ok(Command::List),
        ("settings", IqType::Get) => Ok(Command::GetSettings),
        ("settings", IqType::Set) => Ok(Command::SetSettings {
            notify: match p.get_attr("notify") {
                None => None,
                Some(n) => Some(
                    Notify::parse(n)
                        .ok_or_else(|| Failure::bad_request("notify must be all, done or none"))?,
                ),
            },
            progress: p.get_attr("progress").map(|v| truthy(Some(v))),
        }),
        ("status", IqType::Get) => one(JobOp::Status),
        ("pause", IqType::Set) => one(JobOp::Pause),
        ("resume", IqType::Set) => one(JobOp::Resume),
        ("remove", IqType::Set) => one(JobOp::Remove {
            files: truthy(p.get_attr("files")),
        }),
        ("status" | "pause" | "resume" | "remove", _) => {
            number()?;
            Err(wrong_kind())
        }
        _ => Err(Failure::bad_request(
            "unknown request in the torrent namespace",
        )),
    }
}

fn fail(iq: Incoming, f: Failure) {
    iq.error(f.cond.default_type(), f.cond, &f.text);
}

fn settings_element(s: &Settings) -> Element {
    Element::new("settings", ns::TORRENT)
        .attr("notify", s.notify.as_str())
        .attr("progress", if s.progress { "true" } else { "false" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::command::MAX_PEERS;
    use crate::torrent::command::tests::any_peer;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    /// The payload a client sends for `c` (a command this door can express).
    fn payload(c: &Command) -> (Element, IqType) {
        let el = |name: &str| Element::new(name, ns::TORRENT);
        let b = |v: bool| if v { "true" } else { "false" };
        let job = |numbers: &[i64]| numbers.first().map(i64::to_string).unwrap_or_default();
        match c {
            Command::Add {
                source,
                paused,
                peers,
            } => {
                let list: Vec<String> = peers.iter().map(SocketAddr::to_string).collect();
                (
                    el("add")
                        .attr("paused", b(*paused))
                        .attr("peers", list.join(","))
                        .text(source.clone()),
                    IqType::Set,
                )
            }
            Command::List => (el("list"), IqType::Get),
            Command::GetSettings => (el("settings"), IqType::Get),
            Command::SetSettings { notify, progress } => {
                let mut e = el("settings");
                if let Some(n) = notify {
                    e.set_attr("notify", n.as_str());
                }
                if let Some(p) = progress {
                    e.set_attr("progress", b(*p));
                }
                (e, IqType::Set)
            }
            Command::Jobs { op, numbers } => match op {
                JobOp::Status => (el("status").attr("id", job(numbers)), IqType::Get),
                JobOp::Pause => (el("pause").attr("id", job(numbers)), IqType::Set),
                JobOp::Resume => (el("resume").attr("id", job(numbers)), IqType::Set),
                JobOp::Remove { files } => (
                    el("remove")
                        .attr("id", job(numbers))
                        .attr("files", b(*files)),
                    IqType::Set,
                ),
            },
            Command::Help => (el("help"), IqType::Get),
        }
    }

    fn xml(s: &str) -> Element {
        crate::xml::parse::element(s.as_bytes(), &crate::xml::parse::Scope::new()).unwrap()
    }

    #[test]
    fn requests() {
        let p = |xml: Element, k| parse(&xml, k);
        let e = |n: &str| Element::new(n, ns::TORRENT);
        assert_eq!(
            p(e("status"), IqType::Get).unwrap_err().text,
            "give the job's number as id='N'"
        );
        assert!(
            p(e("status").attr("id", "1"), IqType::Set)
                .unwrap_err()
                .text
                .contains("status is a get")
        );
        assert!(p(e("add"), IqType::Get).is_err());
        assert!(p(e("settings").attr("notify", "loud"), IqType::Set).is_err());
        assert!(p(e("add").attr("peers", "1.2.3.4"), IqType::Set).is_err());
        let many = vec!["1.2.3.4:5"; MAX_PEERS + 1].join(" ");
        assert!(p(e("add").attr("peers", many), IqType::Set).is_err());
        assert_eq!(
            p(e("pause").attr("id", " 7 "), IqType::Set).unwrap(),
            Command::Jobs {
                op: JobOp::Pause,
                numbers: vec![7]
            }
        );
    }

    /// The payloads of README.md's protocol section and the seed's example, as sent.
    #[test]
    fn payloads_as_documented() {
        let p = |s: &str, k| parse(&xml(s), k);
        // The seed's example: the URL with the whitespace around it (the add trims it).
        assert_eq!(
            p(
                "<add xmlns='http://wockd.org/ns/torrent'>\n    http://x/a.torrent\n  </add>",
                IqType::Set
            ),
            Ok(Command::Add {
                source: "\n    http://x/a.torrent\n  ".into(),
                paused: false,
                peers: Vec::new()
            })
        );
        assert_eq!(
            p(
                "<add xmlns='http://wockd.org/ns/torrent' paused='1' \
                 peers='127.0.0.1:6881, [::1]:6882'>magnet:?xt=urn:btih:00</add>",
                IqType::Set
            ),
            Ok(Command::Add {
                source: "magnet:?xt=urn:btih:00".into(),
                paused: true,
                peers: vec![
                    "127.0.0.1:6881".parse().unwrap(),
                    "[::1]:6882".parse().unwrap()
                ]
            })
        );
        assert_eq!(
            p("<list xmlns='http://wockd.org/ns/torrent'/>", IqType::Get),
            Ok(Command::List)
        );
        assert_eq!(
            p(
                "<status xmlns='http://wockd.org/ns/torrent' id='3'/>",
                IqType::Get
            ),
            Ok(Command::Jobs {
                op: JobOp::Status,
                numbers: vec![3]
            })
        );
        assert_eq!(
            p(
                "<resume xmlns='http://wockd.org/ns/torrent' id='3'/>",
                IqType::Set
            ),
            Ok(Command::Jobs {
                op: JobOp::Resume,
                numbers: vec![3]
            })
        );
        assert_eq!(
            p(
                "<remove xmlns='http://wockd.org/ns/torrent' id='2' files='true'/>",
                IqType::Set
            ),
            Ok(Command::Jobs {
                op: JobOp::Remove { files: true },
                numbers: vec![2]
            })
        );
        assert_eq!(
            p(
                "<remove xmlns='http://wockd.org/ns/torrent' id='2'/>",
                IqType::Set
            ),
            Ok(Command::Jobs {
                op: JobOp::Remove { files: false },
                numbers: vec![2]
            })
        );
        assert_eq!(
            p(
                "<settings xmlns='http://wockd.org/ns/torrent'/>",
                IqType::Get
            ),
            Ok(Command::GetSettings)
        );
        assert_eq!(
            p(
                "<settings xmlns='http://wockd.org/ns/torrent' notify='done' progress='true'/>",
                IqType::Set
            ),
            Ok(Command::SetSettings {
                notify: Some(Notify::Done),
                progress: Some(true)
            })
        );
        // Wrong kinds and strangers are bad requests.
        let e = p("<list xmlns='http://wockd.org/ns/torrent'/>", IqType::Set).unwrap_err();
        assert_eq!(
            (e.cond, e.text.as_str()),
            (
                Condition::BadRequest,
                "unknown request in the torrent namespace"
            )
        );
        let e = p(
            "<pause xmlns='http://wockd.org/ns/torrent' id='x'/>",
            IqType::Set,
        )
        .unwrap_err();
        assert_eq!(e.text, "give the job's number as id='N'");
        assert!(p("<help xmlns='http://wockd.org/ns/torrent'/>", IqType::Get).is_err());
    }

    fn any_command() -> impl Strategy<Value = Command> {
        let notify = prop_oneof![Just(Notify::All), Just(Notify::Done), Just(Notify::None)];
        let job = |op: JobOp| {
            any::<i64>().prop_map(move |n| Command::Jobs {
                op,
                numbers: vec![n],
            })
        };
        prop_oneof![
            (
                "[^\\s]([^<]{0,30}[^\\s])?",
                any::<bool>(),
                proptest::collection::vec(any_peer(), 0..MAX_PEERS)
            )
                .prop_map(|(source, paused, peers)| Command::Add {
                    source,
                    paused,
                    peers
                }),
            Just(Command::List),
            Just(Command::GetSettings),
            (
                proptest::option::of(notify),
                proptest::option::of(any::<bool>())
            )
                .prop_map(|(notify, progress)| Command::SetSettings { notify, progress }),
            job(JobOp::Status),
            job(JobOp::Pause),
            job(JobOp::Resume),
            any::<bool>().prop_flat_map(move |files| job(JobOp::Remove { files })),
        ]
    }

    proptest! {
        /// Every command reads back from the payload a client would send for it.
        #[test]
        fn requests_round_trip(c in any_command()) {
            let (el, kind) = payload(&c);
            prop_assert_eq!(parse(&el, kind).unwrap(), c);
        }

        /// Any name, attributes and text: a command or an error, never a panic.
        #[test]
        fn any_payload(
            name in "(add|list|settings|status|pause|resume|remove|[a-z]{0,5})",
            attrs in proptest::collection::vec(
                ("(id|peers|paused|files|notify|progress|[a-z]{1,3})", any::<String>()),
                0..6,
            ),
            text in any::<String>(),
            set in any::<bool>(),
        ) {
            let mut el = Element::new(name, ns::TORRENT).text(text);
            for (k, v) in attrs {
                el.set_attr(&k, v);
            }
            let _ = parse(&el, if set { IqType::Set } else { IqType::Get });
        }
    }
}
