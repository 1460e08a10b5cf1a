//! Chat with the service: any client that can send a message can use it. A message with magnet
//! links or http(s) URLs adds each (no command word needed); otherwise the first word is a
//! command: `help`, `list`, `status N`, `pause N…`, `resume N…`, `remove N…`, `delete N…`
//! (with files), `notify all|done|none`, `progress on|off`. Answers go to the sender's bare
//! JID, like the notifications, so every device sees the conversation.

use std::rc::Rc;

use jid::{BareJid, FullJid};

use super::TorrentService;
use super::command::{self, Command, Door, JobOp, Outcome};
use super::store::Notify;
use crate::xml::{Element, ns};

/// Most links added from one message.
const MAX_LINKS: usize = 10;

const HELP: &str = "Send me a magnet link or the http(s) URL of a .torrent and I download it.\n\
Commands:\n\
  list — your torrents\n\
  status N — one torrent in detail\n\
  pause N…, resume N… — stop and continue\n\
  remove N… — forget torrents, keep the files\n\
  delete N… — forget torrents and delete their files\n\
  notify all|done|none — which messages you get\n\
  progress on|off — periodic progress messages\n\
Ad-hoc commands (in your client's menu) do the same.";

/// Most job numbers in one command.
const MAX_NUMBERS: usize = 50;

/// Why a message is not a command; answered with a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reject {
    TooManyLinks,
    /// A job command without (valid) numbers; the word as typed, lower case.
    NeedNumbers(String),
    TooManyNumbers,
    /// `notify` without `all`, `done` or `none`.
    NotifyHow,
    /// `progress` without `on` or `off`.
    ProgressHow,
    Unknown,
}

/// Reads a message body (see the module comment): each link is an add of its own (and is
/// answered on its own); anything else is one command.
pub(super) fn parse(body: &str) -> Result<Vec<Command>, Reject> {
    let links: Vec<&str> = body
        .split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '<' | '>' | '"' | '\'' | '(' | ')' | ',')))
        .filter(|w| {
            let l = w.get(..8).unwrap_or(w).to_ascii_lowercase();
            l.starts_with("magnet:") || l.starts_with("http://") || l.starts_with("https://")
        })
        .take(MAX_LINKS + 1)
        .collect();
    if !links.is_empty() {
        if links.len() > MAX_LINKS {
            return Err(Reject::TooManyLinks);
        }
        let paused = body
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("paused"));
        return Ok(links
            .into_iter()
            .map(|l| Command::Add {
                source: l.to_owned(),
                paused,
                peers: Vec::new(),
            })
            .collect());
    }
    let mut words = body.split_whitespace();
    let cmd = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<&str> = words.take(MAX_NUMBERS + 1).collect();
    let op = match cmd.as_str() {
        "help" | "?" | "hi" | "hello" => return Ok(vec![Command::Help]),
        "list" | "ls" | "status" if args.is_empty() => return Ok(vec![Command::List]),
        "status" => JobOp::Status,
        "pause" => JobOp::Pause,
        "resume" => JobOp::Resume,
        "remove" | "rm" => JobOp::Remove { files: false },
        "delete" => JobOp::Remove { files: true },
        "notify" | "notifications" => {
            let notify = args
                .first()
                .and_then(|a| Notify::parse(&a.to_ascii_lowercase()))
                .ok_or(Reject::NotifyHow)?;
            return Ok(vec![Command::SetSettings {
                notify: Some(notify),
                progress: None,
            }]);
        }
        "progress" => {
            let on = match args.first().map(|a| a.to_ascii_lowercase()) {
                Some(a) if a == "on" => true,
                Some(a) if a == "off" => false,
                _ => return Err(Reject::ProgressHow),
            };
            return Ok(vec![Command::SetSettings {
                notify: None,
                progress: Some(on),
            }]);
        }
        _ => return Err(Reject::Unknown),
    };
    if args.len() > MAX_NUMBERS {
        return Err(Reject::TooManyNumbers);
    }
    let numbers: Result<Vec<i64>, _> = args
        .iter()
        .map(|a| a.trim_start_matches('#').parse::<i64>())
        .collect();
    match numbers {
        Ok(numbers) if !numbers.is_empty() => Ok(vec![Command::Jobs { op, numbers }]),
        _ => Err(Reject::NeedNumbers(cmd)),
    }
}

pub fn handle(svc: &Rc<TorrentService>, msg: Element, from: &FullJid) {
    if matches!(
        msg.get_attr("type"),
        Some("error" | "groupchat" | "headline")
    ) {
        return;
    }
    // Chat states, receipts and the like carry no body.
    let Some(body) = msg.child_text("body", ns::CLIENT).filter(|b| !b.is_empty()) else {
        return;
    };
    let owner = from.to_bare();
    let commands = match parse(&body) {
        Ok(c) => c,
        Err(r) => return say(svc, &owner, &hint(&r)),
    };
    for cmd in commands {
        let (svc2, to) = (svc.clone(), owner.clone());
        command::apply(svc, owner.clone(), Door::Chat, cmd.clone(), move |o| {
            say(&svc2, &to, &reply(&cmd, o))
        });
    }
}

/// The answer to a message that is not a command.
fn hint(r: &Reject) -> String {
    match r {
        Reject::TooManyLinks => {
            format!("That is more than {MAX_LINKS} links; send fewer at a time.")
        }
        Reject::NeedNumbers(cmd) => format!("Say which jobs by number, e.g. `{cmd} 3`."),
        Reject::TooManyNumbers => format!("At most {MAX_NUMBERS} jobs at a time."),
        Reject::NotifyHow => "Say `notify all`, `notify done` or `notify none`.".to_owned(),
        Reject::ProgressHow => "Say `progress on` or `progress off`.".to_owned(),
        Reject::Unknown => "I did not understand that. Send `help` for what I can do.".to_owned(),
    }
}

/// The answer to `cmd`, which came to `o`.
fn reply(cmd: &Command, o: Outcome) -> String {
    match o {
        Outcome::Added(r) => match r {
            Ok(a) if a.resolving => format!(
                "Added job {}: {} — waiting for the metadata from peers; I will tell you when it arrives.",
                a.job.number,
                a.job.label()
            ),
            Ok(a) => format!(
                "Added job {}: {} — {}.",
                a.job.number,
                a.job.label(),
                a.job.state.as_str()
            ),
            Err(f) => {
                let source = match cmd {
                    Command::Add { source, .. } => source.as_str(),
                    _ => "",
                };
                format!("Could not add {}: {}", shorten(source), f.text)
            }
        },
        Outcome::Listed(jobs) if jobs.is_empty() => {
            "You have no torrents. Send me a magnet link or a .torrent URL.".to_owned()
        }
        Outcome::Listed(jobs) => jobs
            .iter()
            .map(|(j, p)| j.summary(p.as_ref()))
            .collect::<Vec<_>>()
            .join("\n"),
        Outcome::Jobs(results) => {
            let op = match cmd {
                Command::Jobs { op, .. } => *op,
                _ => JobOp::Status,
            };
            results
                .into_iter()
                .map(|(n, r)| match r {
                    Ok((j, p)) => match op {
                        JobOp::Status => j.summary(p.as_ref()),
                        JobOp::Pause => format!("Paused job {n}: {}.", j.label()),
                        JobOp::Resume => format!("Resumed job {n}: {}.", j.label()),
                        JobOp::Remove { files: true } => {
                            format!("Removed job {n} and its files: {}.", j.label())
                        }
                        JobOp::Remove { files: false } => {
                            format!("Removed job {n}: {} (files kept).", j.label())
                        }
                    },
                    Err(f) => format!("Job {n}: {}", f.text),
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Outcome::Settings(Err(f)) => f.text,
        Outcome::Settings(Ok(s)) => match cmd {
            Command::SetSettings {
                progress: Some(on), ..
            } => format!("Progress messages {}.", if *on { "on" } else { "off" }),
            _ => format!("Notifications: {}.", s.notify.as_str()),
        },
        Outcome::Help => HELP.to_owned(),
    }
}

fn say(svc: &TorrentService, to: &BareJid, text: &str) {
    svc.message(to, "chat", text, None, None);
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 70 {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(70).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(c: Command) -> Result<Vec<Command>, Reject> {
        Ok(vec![c])
    }

    fn add(source: &str, paused: bool) -> Command {
        Command::Add {
            source: source.into(),
            paused,
            peers: Vec::new(),
        }
    }

    #[test]
    fn words_and_links() {
        assert_eq!(parse("help"), one(Command::Help));
        assert_eq!(parse("  LIST "), one(Command::List));
        assert_eq!(parse("status"), one(Command::List));
        assert_eq!(
            parse("pause 3 #4"),
            one(Command::Jobs {
                op: JobOp::Pause,
                numbers: vec![3, 4]
            })
        );
        assert_eq!(parse("rm x"), Err(Reject::NeedNumbers("rm".into())));
        assert_eq!(
            parse("notify DONE"),
            one(Command::SetSettings {
                notify: Some(Notify::Done),
                progress: None
            })
        );
        assert_eq!(parse("progress maybe"), Err(Reject::ProgressHow));
        assert_eq!(
            parse("paused <magnet:?xt=urn:btih:ab>, http://x/y"),
            Ok(vec![
                add("magnet:?xt=urn:btih:ab", true),
                add("http://x/y", true)
            ])
        );
        assert_eq!(parse(&"http://x ".repeat(11)), Err(Reject::TooManyLinks));
        assert_eq!(
            parse(&format!("pause{}", " 1".repeat(51))),
            Err(Reject::TooManyNumbers)
        );
        // A multi-byte word where a scheme would be: no slicing inside a character.
        assert_eq!(parse("magnéééé:x"), Err(Reject::Unknown));
        assert_eq!(parse("é"), Err(Reject::Unknown));
    }

    /// What people type, as the help text teaches it.
    #[test]
    fn the_help_texts_commands() {
        let jobs = |op, numbers: &[i64]| {
            one(Command::Jobs {
                op,
                numbers: numbers.to_vec(),
            })
        };
        assert_eq!(parse("ls"), one(Command::List));
        assert_eq!(parse("Hello"), one(Command::Help));
        assert_eq!(parse("?"), one(Command::Help));
        assert_eq!(parse("status 2"), jobs(JobOp::Status, &[2]));
        assert_eq!(parse("resume 1 2"), jobs(JobOp::Resume, &[1, 2]));
        assert_eq!(
            parse("remove 5"),
            jobs(JobOp::Remove { files: false }, &[5])
        );
        assert_eq!(
            parse("delete #5 6"),
            jobs(JobOp::Remove { files: true }, &[5, 6])
        );
        assert_eq!(parse("delete"), Err(Reject::NeedNumbers("delete".into())));
        assert_eq!(
            parse("notifications off"),
            one(Command::SetSettings {
                notify: Some(Notify::None),
                progress: None
            })
        );
        assert_eq!(parse("notify"), Err(Reject::NotifyHow));
        assert_eq!(parse("notify loud"), Err(Reject::NotifyHow));
        assert_eq!(
            parse("progress ON"),
            one(Command::SetSettings {
                notify: None,
                progress: Some(true)
            })
        );
        assert_eq!(
            parse("progress off"),
            one(Command::SetSettings {
                notify: None,
                progress: Some(false)
            })
        );
        assert_eq!(
            parse("https://example.org/debian.iso.torrent"),
            Ok(vec![add("https://example.org/debian.iso.torrent", false)])
        );
        assert_eq!(
            parse("please get \"HTTP://x/a.torrent\" (magnet:?xt=urn:btih:cd)"),
            Ok(vec![
                add("HTTP://x/a.torrent", false),
                add("magnet:?xt=urn:btih:cd", false)
            ])
        );
        assert_eq!(parse("what is this"), Err(Reject::Unknown));
        assert_eq!(parse("   "), Err(Reject::Unknown));
    }

    /// Every refusal has its hint, and a hint names what to type.
    #[test]
    fn hints() {
        assert_eq!(
            hint(&Reject::NeedNumbers("rm".into())),
            "Say which jobs by number, e.g. `rm 3`."
        );
        assert_eq!(hint(&Reject::TooManyNumbers), "At most 50 jobs at a time.");
        assert!(hint(&Reject::TooManyLinks).contains("more than 10 links"));
        assert!(hint(&Reject::NotifyHow).contains("`notify done`"));
        assert!(hint(&Reject::ProgressHow).contains("`progress on`"));
        assert!(hint(&Reject::Unknown).contains("`help`"));
    }

    fn op() -> impl Strategy<Value = (JobOp, &'static str)> {
        prop_oneof![
            Just((JobOp::Status, "status")),
            Just((JobOp::Pause, "pause")),
            Just((JobOp::Resume, "Resume")),
            Just((JobOp::Remove { files: false }, "rm")),
            Just((JobOp::Remove { files: false }, "REMOVE")),
            Just((JobOp::Remove { files: true }, "delete")),
        ]
    }

    proptest! {
        /// Any text: a command, never a panic.
        #[test]
        fn any_body(body in any::<String>()) {
            let _ = parse(&body);
        }

        /// Words from the command vocabulary in any order and spacing.
        #[test]
        fn any_words(words in proptest::collection::vec(
            "(help|list|status|pause|resume|rm|delete|notify|progress|paused|on|off|all|done|#?-?[0-9]{1,20}|magnet:[^ ]{0,10}|https?://[^ ]{0,10}|[^ ]{0,6})",
            0..12,
        ), sep in "[ \t\n]{1,3}") {
            let _ = parse(&words.join(&sep));
        }

        /// A job command with numbers reads back as written.
        #[test]
        fn job_commands_round_trip(
            (op, word) in op(),
            numbers in proptest::collection::vec(any::<i64>(), 1..MAX_NUMBERS),
            hash in any::<bool>(),
        ) {
            let text = numbers
                .iter()
                .map(|n| if hash { format!("#{n}") } else { n.to_string() })
                .collect::<Vec<_>>()
                .join(" ");
            prop_assert_eq!(
                parse(&format!("{word} {text}")),
                Ok(vec![Command::Jobs { op, numbers }])
            );
        }

        /// Links are found wherever they stand, in order, and only they.
        #[test]
        fn links_round_trip(
            links in proptest::collection::vec("(magnet:\\?xt=[a-z0-9]{1,10}|https?://[a-z]{1,8}/[a-z]{0,8})", 1..=MAX_LINKS),
            paused in any::<bool>(),
        ) {
            let body = format!(
                "{}please add {}",
                if paused { "paused " } else { "" },
                links.join(" and ")
            );
            let adds = links
                .iter()
                .map(|l| Command::Add { source: l.clone(), paused, peers: Vec::new() })
                .collect();
            prop_assert_eq!(parse(&body), Ok(adds));
        }
    }
}
