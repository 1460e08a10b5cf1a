//! Chat with the service: any client that can send a message can use it. A message with magnet
//! links or http(s) URLs adds each (no command word needed); otherwise the first word is a
//! command: `help`, `list`, `status N`, `pause N…`, `resume N…`, `remove N…`, `delete N…`
//! (with files), `notify all|done|none`, `progress on|off`. Answers go to the sender's bare
//! JID, like the notifications, so every device sees the conversation.

use std::rc::Rc;

use jid::{BareJid, FullJid};

use super::TorrentService;
use super::jobs::Failure;
use super::service::AddOptions;
use super::store::Notify;
use crate::net::source;
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

/// What a chat message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Command {
    /// Add each link; `paused` if the message starts with the word "paused".
    Add {
        links: Vec<String>,
        paused: bool,
    },
    TooManyLinks,
    Help,
    List,
    Jobs {
        op: JobOp,
        numbers: Vec<i64>,
    },
    /// A job command without (valid) numbers; the word as typed, lower case.
    NeedNumbers(String),
    TooManyNumbers,
    /// `notify …`: `None` when the word after it is not a setting.
    Notify(Option<Notify>),
    /// `progress on|off`.
    Progress(Option<bool>),
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobOp {
    Status,
    Pause,
    Resume,
    /// Forget, keep the files.
    Remove,
    /// Forget and delete the files.
    Delete,
}

/// Reads a message body (see the module comment).
pub(super) fn parse(body: &str) -> Command {
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
            return Command::TooManyLinks;
        }
        let paused = body
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("paused"));
        return Command::Add {
            links: links.into_iter().map(str::to_owned).collect(),
            paused,
        };
    }
    let mut words = body.split_whitespace();
    let cmd = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<&str> = words.take(MAX_NUMBERS + 1).collect();
    let op = match cmd.as_str() {
        "help" | "?" | "hi" | "hello" => return Command::Help,
        "list" | "ls" | "status" if args.is_empty() => return Command::List,
        "status" => JobOp::Status,
        "pause" => JobOp::Pause,
        "resume" => JobOp::Resume,
        "remove" | "rm" => JobOp::Remove,
        "delete" => JobOp::Delete,
        "notify" | "notifications" => {
            return Command::Notify(
                args.first()
                    .and_then(|a| Notify::parse(&a.to_ascii_lowercase())),
            );
        }
        "progress" => {
            return Command::Progress(match args.first().map(|a| a.to_ascii_lowercase()) {
                Some(a) if a == "on" => Some(true),
                Some(a) if a == "off" => Some(false),
                _ => None,
            });
        }
        _ => return Command::Unknown,
    };
    if args.len() > MAX_NUMBERS {
        return Command::TooManyNumbers;
    }
    let numbers: Result<Vec<i64>, _> = args
        .iter()
        .map(|a| a.trim_start_matches('#').parse::<i64>())
        .collect();
    match numbers {
        Ok(numbers) if !numbers.is_empty() => Command::Jobs { op, numbers },
        _ => Command::NeedNumbers(cmd),
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
    match parse(&body) {
        Command::TooManyLinks => say(
            svc,
            &owner,
            &format!("That is more than {MAX_LINKS} links; send fewer at a time."),
        ),
        Command::Add { links, paused } => {
            for link in links {
                let (svc2, to, text) = (svc.clone(), owner.clone(), link.clone());
                let opts = AddOptions {
                    paused,
                    peers: Vec::new(),
                };
                svc.add(
                    owner.clone(),
                    &text,
                    opts,
                    false,
                    Box::new(move |r| {
                        let text = match r {
                            Ok(a) if a.resolving => format!(
                                "Added job {}: {} — waiting for the metadata from peers; I will tell you when it arrives.",
                                a.job.number,
                                a.job.label()
                            ),
                            Ok(a) => format!("Added job {}: {} — {}.", a.job.number, a.job.label(), a.job.state.as_str()),
                            Err(f) => format!("Could not add {}: {}", shorten(&link), f.text),
                        };
                        say(&svc2, &to, &text);
                    }),
                );
            }
        }
        Command::Help => say(svc, &owner, HELP),
        Command::List => {
            let svc = svc.clone();
            source::spawn_local(async move {
                let jobs = svc.list(&owner).await;
                let text = if jobs.is_empty() {
                    "You have no torrents. Send me a magnet link or a .torrent URL.".to_owned()
                } else {
                    jobs.iter()
                        .map(|(j, p)| j.summary(p.as_ref()))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                say(&svc, &owner, &text);
            });
        }
        Command::NeedNumbers(cmd) => say(
            svc,
            &owner,
            &format!("Say which jobs by number, e.g. `{cmd} 3`."),
        ),
        Command::TooManyNumbers => say(
            svc,
            &owner,
            &format!("At most {MAX_NUMBERS} jobs at a time."),
        ),
        Command::Jobs { op, numbers } => {
            let svc = svc.clone();
            source::spawn_local(async move {
                let mut lines = Vec::new();
                for n in numbers {
                    let r: Result<String, Failure> = match op {
                        JobOp::Status => svc
                            .status(&owner, n)
                            .await
                            .map(|(j, p)| j.summary(p.as_ref())),
                        JobOp::Pause => svc
                            .pause(&owner, n)
                            .await
                            .map(|(j, _)| format!("Paused job {n}: {}.", j.label())),
                        JobOp::Resume => svc
                            .resume(&owner, n)
                            .await
                            .map(|(j, _)| format!("Resumed job {n}: {}.", j.label())),
                        JobOp::Delete => svc
                            .remove(&owner, n, true)
                            .await
                            .map(|j| format!("Removed job {n} and its files: {}.", j.label())),
                        JobOp::Remove => svc
                            .remove(&owner, n, false)
                            .await
                            .map(|j| format!("Removed job {n}: {} (files kept).", j.label())),
                    };
                    lines.push(r.unwrap_or_else(|f| format!("Job {n}: {}", f.text)));
                }
                say(&svc, &owner, &lines.join("\n"));
            });
        }
        Command::Notify(None) => say(
            svc,
            &owner,
            "Say `notify all`, `notify done` or `notify none`.",
        ),
        Command::Notify(Some(n)) => {
            let text = match svc
                .settings(&owner)
                .and_then(|s| svc.set_settings(&owner, super::store::Settings { notify: n, ..s }))
            {
                Ok(()) => format!("Notifications: {}.", n.as_str()),
                Err(f) => f.text,
            };
            say(svc, &owner, &text);
        }
        Command::Progress(None) => say(svc, &owner, "Say `progress on` or `progress off`."),
        Command::Progress(Some(on)) => {
            let text = match svc.settings(&owner).and_then(|s| {
                svc.set_settings(&owner, super::store::Settings { progress: on, ..s })
            }) {
                Ok(()) => format!("Progress messages {}.", if on { "on" } else { "off" }),
                Err(f) => f.text,
            };
            say(svc, &owner, &text);
        }
        Command::Unknown => say(
            svc,
            &owner,
            "I did not understand that. Send `help` for what I can do.",
        ),
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

    #[test]
    fn words_and_links() {
        assert_eq!(parse("help"), Command::Help);
        assert_eq!(parse("  LIST "), Command::List);
        assert_eq!(parse("status"), Command::List);
        assert_eq!(
            parse("pause 3 #4"),
            Command::Jobs {
                op: JobOp::Pause,
                numbers: vec![3, 4]
            }
        );
        assert_eq!(parse("rm x"), Command::NeedNumbers("rm".into()));
        assert_eq!(parse("notify DONE"), Command::Notify(Some(Notify::Done)));
        assert_eq!(parse("progress maybe"), Command::Progress(None));
        assert_eq!(
            parse("paused <magnet:?xt=urn:btih:ab>, http://x/y"),
            Command::Add {
                links: vec!["magnet:?xt=urn:btih:ab".into(), "http://x/y".into()],
                paused: true
            }
        );
        assert_eq!(parse(&"http://x ".repeat(11)), Command::TooManyLinks);
        assert_eq!(
            parse(&format!("pause{}", " 1".repeat(51))),
            Command::TooManyNumbers
        );
        // A multi-byte word where a scheme would be: no slicing inside a character.
        assert_eq!(parse("magnéééé:x"), Command::Unknown);
        assert_eq!(parse("é"), Command::Unknown);
    }

    fn op() -> impl Strategy<Value = (JobOp, &'static str)> {
        prop_oneof![
            Just((JobOp::Status, "status")),
            Just((JobOp::Pause, "pause")),
            Just((JobOp::Resume, "Resume")),
            Just((JobOp::Remove, "rm")),
            Just((JobOp::Remove, "REMOVE")),
            Just((JobOp::Delete, "delete")),
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
                Command::Jobs { op, numbers }
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
            prop_assert_eq!(parse(&body), Command::Add { links, paused });
        }
    }
}
