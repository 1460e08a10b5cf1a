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
    let links: Vec<String> = body
        .split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '<' | '>' | '"' | '\'' | '(' | ')' | ',')))
        .filter(|w| {
            let l = w.to_ascii_lowercase();
            l.starts_with("magnet:") || l.starts_with("http://") || l.starts_with("https://")
        })
        .map(str::to_owned)
        .collect();
    if !links.is_empty() {
        if links.len() > MAX_LINKS {
            return say(
                svc,
                &owner,
                &format!("That is more than {MAX_LINKS} links; send fewer at a time."),
            );
        }
        let paused = body
            .split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("paused"));
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
        return;
    }
    let mut words = body.split_whitespace();
    let cmd = words.next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    match cmd.as_str() {
        "help" | "?" | "hi" | "hello" => say(svc, &owner, HELP),
        "list" | "ls" | "status" if args.is_empty() => {
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
        "status" | "pause" | "resume" | "remove" | "rm" | "delete" => {
            let numbers: Result<Vec<i64>, _> = args
                .iter()
                .map(|a| a.trim_start_matches('#').parse::<i64>())
                .collect();
            let numbers = match numbers {
                Ok(n) if !n.is_empty() => n,
                _ => {
                    return say(
                        svc,
                        &owner,
                        &format!("Say which jobs by number, e.g. `{cmd} 3`."),
                    );
                }
            };
            let svc = svc.clone();
            source::spawn_local(async move {
                let mut lines = Vec::new();
                for n in numbers {
                    let r: Result<String, Failure> = match cmd.as_str() {
                        "status" => svc
                            .status(&owner, n)
                            .await
                            .map(|(j, p)| j.summary(p.as_ref())),
                        "pause" => svc
                            .pause(&owner, n)
                            .await
                            .map(|(j, _)| format!("Paused job {n}: {}.", j.label())),
                        "resume" => svc
                            .resume(&owner, n)
                            .await
                            .map(|(j, _)| format!("Resumed job {n}: {}.", j.label())),
                        "delete" => svc
                            .remove(&owner, n, true)
                            .await
                            .map(|j| format!("Removed job {n} and its files: {}.", j.label())),
                        _ => svc
                            .remove(&owner, n, false)
                            .await
                            .map(|j| format!("Removed job {n}: {} (files kept).", j.label())),
                    };
                    lines.push(r.unwrap_or_else(|f| format!("Job {n}: {}", f.text)));
                }
                say(&svc, &owner, &lines.join("\n"));
            });
        }
        "notify" | "notifications" => {
            let Some(n) = args
                .first()
                .and_then(|a| Notify::parse(&a.to_ascii_lowercase()))
            else {
                return say(
                    svc,
                    &owner,
                    "Say `notify all`, `notify done` or `notify none`.",
                );
            };
            let text = match svc
                .settings(&owner)
                .and_then(|s| svc.set_settings(&owner, super::store::Settings { notify: n, ..s }))
            {
                Ok(()) => format!("Notifications: {}.", n.as_str()),
                Err(f) => f.text,
            };
            say(svc, &owner, &text);
        }
        "progress" => {
            let on = match args.first().map(|a| a.to_ascii_lowercase()) {
                Some(a) if a == "on" => true,
                Some(a) if a == "off" => false,
                _ => return say(svc, &owner, "Say `progress on` or `progress off`."),
            };
            let text = match svc.settings(&owner).and_then(|s| {
                svc.set_settings(&owner, super::store::Settings { progress: on, ..s })
            }) {
                Ok(()) => format!("Progress messages {}.", if on { "on" } else { "off" }),
                Err(f) => f.text,
            };
            say(svc, &owner, &text);
        }
        _ => say(
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
