//! XEP-0050 ad-hoc commands with XEP-0004 data forms at the service's domain, so users of
//! Gajim, Conversations, Dino and Psi do everything from their menus: add, list, pause,
//! resume, remove, settings. Also the service's XEP-0030 disco answers.
//!
//! Every command is one stage: `execute` returns a form (or, for `list`, the result at once)
//! and the submission completes it. Submissions carry everything, so no session state is kept;
//! the `sessionid` is echoed. Failures of the operation itself complete the command with an
//! error note (XEP-0050 §3.4.7), which every client shows; malformed requests get IQ errors.

use std::rc::Rc;

use jid::BareJid;

use super::TorrentService;
use super::command::{self, Command, Door, JobOp, Outcome, truthy};
use super::jobs::{Failure, Job, human_bytes};
use super::store::Notify;
use crate::core::stanza::Condition;
use crate::iq::Incoming;
use crate::xml::{Element, ns};

pub const NS_COMMANDS: &str = crate::xml::ns::COMMANDS;
pub const NS_DATA: &str = crate::xml::ns::DATA_FORMS;
const NS_DISCO_INFO: &str = crate::xml::ns::DISCO_INFO;
const NS_DISCO_ITEMS: &str = crate::xml::ns::DISCO_ITEMS;

/// (node, name) of every command.
pub const COMMANDS: &[(&str, &str)] = &[
    ("add", "Add a torrent"),
    ("list", "List my torrents"),
    ("pause", "Pause torrents"),
    ("resume", "Resume torrents"),
    ("remove", "Remove torrents"),
    ("settings", "Torrent settings"),
];

/// disco#info of the service (no node), of the command list or of one command.
pub fn disco_info(node: Option<&str>) -> Option<Element> {
    let mut q = Element::new("query", NS_DISCO_INFO);
    if let Some(n) = node {
        q.set_attr("node", n);
    }
    let identity = |cat: &str, kind: &str, name: &str| {
        Element::new("identity", NS_DISCO_INFO)
            .attr("category", cat)
            .attr("type", kind)
            .attr("name", name)
    };
    let feature = |v: &str| Element::new("feature", NS_DISCO_INFO).attr("var", v);
    match node {
        None => {
            q.push(identity("component", "generic", "Torrents"));
            for f in [
                NS_DISCO_INFO,
                NS_DISCO_ITEMS,
                NS_COMMANDS,
                NS_DATA,
                ns::TORRENT,
                ns::PING,
            ] {
                q.push(feature(f));
            }
        }
        Some(NS_COMMANDS) => q.push(identity("automation", "command-list", "Torrent commands")),
        Some(n) => {
            let (_, name) = COMMANDS.iter().find(|(c, _)| *c == n)?;
            q.push(identity("automation", "command-node", name));
            q.push(feature(NS_COMMANDS));
            q.push(feature(NS_DATA));
        }
    }
    Some(q)
}

/// disco#items: the commands under their node, nothing at the root.
pub fn disco_items(domain: &str, node: Option<&str>) -> Element {
    let mut q = Element::new("query", NS_DISCO_ITEMS);
    if let Some(n) = node {
        q.set_attr("node", n);
    }
    if node == Some(NS_COMMANDS) {
        for (n, name) in COMMANDS {
            q.push(
                Element::new("item", NS_DISCO_ITEMS)
                    .attr("jid", domain)
                    .attr("node", *n)
                    .attr("name", *name),
            );
        }
    }
    q
}

/// What an ad-hoc request asks for, besides its node and session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// `action='cancel'`.
    Cancel,
    /// Execution without a submitted form: answered with the command's form.
    Form,
    /// A submitted form, or `list` (which has no form): the command to apply.
    Run(Command),
}

/// An ad-hoc request as read from its `<command/>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    /// One of [`COMMANDS`].
    pub node: String,
    /// As the client sent it; a new one is made when it sent none.
    pub session: Option<String>,
    pub step: Step,
}

/// Reads a `<command xmlns='http://jabber.org/protocol/commands'/>` (its namespace is not
/// checked). Errors are the IQ errors to answer with.
pub(super) fn parse(p: &Element) -> Result<Request, Failure> {
    let Some(node) = p
        .get_attr("node")
        .filter(|n| COMMANDS.iter().any(|(c, _)| c == n))
        .map(str::to_owned)
    else {
        return Err(Failure::new(Condition::ItemNotFound, "no such command"));
    };
    let session = p.get_attr("sessionid").map(str::to_owned);
    let action = p.get_attr("action").unwrap_or("execute");
    let step = if action == "cancel" {
        Step::Cancel
    } else if !matches!(action, "execute" | "complete" | "next") {
        return Err(Failure::bad_request(
            "this command has one stage: execute, complete or cancel",
        ));
    } else if node == "list" {
        Step::Run(Command::List)
    } else {
        match p
            .get_child("x", NS_DATA)
            .filter(|x| x.get_attr("type") == Some("submit"))
        {
            None => Step::Form,
            Some(x) => Step::Run(parse_submission(&node, x)?),
        }
    };
    Ok(Request {
        node,
        session,
        step,
    })
}

/// `<command xmlns='http://jabber.org/protocol/commands'/>` set.
pub fn handle(svc: &Rc<TorrentService>, iq: Incoming) {
    let Some(owner) = iq.account() else {
        return iq.fail(Condition::NotAuthorized, "");
    };
    let request = match parse(&iq.payload) {
        Ok(r) => r,
        Err(f) => return iq.fail(f.cond, &f.text),
    };
    let reply = Reply {
        session: request
            .session
            .unwrap_or_else(|| new_session(&request.node)),
        node: request.node,
    };
    match request.step {
        Step::Cancel => iq.result(Some(reply.head("canceled"))),
        Step::Form => match start_form(svc, &owner, &reply.node) {
            Ok(form) => iq.result(Some(reply.executing(form))),
            Err(note) => iq.result(Some(reply.completed("info", &note))),
        },
        Step::Run(cmd) => {
            let op = match &cmd {
                Command::Jobs { op, .. } => Some(*op),
                _ => None,
            };
            command::apply(svc, owner, Door::AdHoc, cmd, move |o| {
                iq.result(Some(answer(&reply, op, o)))
            });
        }
    }
}

/// The completed command for an outcome; `op`: of a [`Command::Jobs`].
fn answer(reply: &Reply, op: Option<JobOp>, o: Outcome) -> Element {
    match o {
        Outcome::Listed(jobs) => {
            let mut x = Element::new("x", NS_DATA)
                .attr("type", "result")
                .child(Element::new("title", NS_DATA).text("My torrents"));
            let mut reported = Element::new("reported", NS_DATA);
            for (var, label) in [
                ("id", "Job"),
                ("name", "Name"),
                ("state", "State"),
                ("progress", "Progress"),
                ("speed", "Speed"),
                ("eta", "Time left"),
            ] {
                reported.push(field(var, None, Some(label)));
            }
            x.push(reported);
            let mut lines = Vec::new();
            for (j, p) in &jobs {
                let (progress, speed, eta) = match p {
                    Some(p) if p.total > 0 => (
                        format!(
                            "{:.1}%",
                            p.have.min(p.total) as f64 * 100.0 / p.total as f64
                        ),
                        format!("{}/s", human_bytes(p.down_bps)),
                        p.eta_secs
                            .map(super::jobs::human_duration)
                            .unwrap_or_default(),
                    ),
                    _ => (String::new(), String::new(), String::new()),
                };
                let mut item = Element::new("item", NS_DATA);
                for (var, v) in [
                    ("id", j.number.to_string()),
                    ("name", j.label()),
                    ("state", j.state.as_str().to_owned()),
                    ("progress", progress),
                    ("speed", speed),
                    ("eta", eta),
                ] {
                    item.push(field(var, None, None).child(value(&v)));
                }
                x.push(item);
                lines.push(j.summary(p.as_ref()));
            }
            let note = if lines.is_empty() {
                "You have no torrents.".to_owned()
            } else {
                lines.join("\n")
            };
            reply.completed("info", &note).child(x)
        }
        Outcome::Added(Ok(a)) => {
            let note = if a.resolving {
                format!(
                    "Added job {}: {} — waiting for metadata; you will get a message.",
                    a.job.number,
                    a.job.label()
                )
            } else {
                format!("Added job {}: {}.", a.job.number, a.job.label())
            };
            reply.completed("info", &note)
        }
        Outcome::Jobs(results) if results.is_empty() => reply.completed("info", "Nothing chosen."),
        Outcome::Jobs(results) => {
            let mut lines = Vec::new();
            let mut failed = false;
            for (n, r) in results {
                match r {
                    Ok((j, p)) => lines.push(match op {
                        Some(JobOp::Pause) => format!("Paused job {n}: {}.", j.label()),
                        Some(JobOp::Resume) => format!("Resumed job {n}: {}.", j.label()),
                        Some(JobOp::Remove { files }) => {
                            let what = if files { " and its files" } else { "" };
                            format!("Removed job {n}{what}: {}.", j.label())
                        }
                        Some(JobOp::Status) | None => j.summary(p.as_ref()),
                    }),
                    Err(f) => {
                        failed = true;
                        lines.push(format!("Job {n}: {}", f.text));
                    }
                }
            }
            let kind = if failed { "error" } else { "info" };
            reply.completed(kind, &lines.join("\n"))
        }
        Outcome::Settings(Ok(_)) => reply.completed("info", "Settings saved."),
        Outcome::Added(Err(f)) | Outcome::Settings(Err(f)) => reply.completed("error", &f.text),
        Outcome::Help => reply.completed("info", "Choose a command from the list."),
    }
}

struct Reply {
    node: String,
    session: String,
}

impl Reply {
    fn head(&self, status: &str) -> Element {
        Element::new("command", NS_COMMANDS)
            .attr("node", self.node.as_str())
            .attr("sessionid", self.session.as_str())
            .attr("status", status)
    }

    fn executing(&self, form: Element) -> Element {
        self.head("executing")
            .child(
                Element::new("actions", NS_COMMANDS)
                    .attr("execute", "complete")
                    .child(Element::new("complete", NS_COMMANDS)),
            )
            .child(form)
    }

    fn completed(&self, kind: &str, note: &str) -> Element {
        self.head("completed").child(
            Element::new("note", NS_COMMANDS)
                .attr("type", kind)
                .text(note),
        )
    }
}

fn new_session(node: &str) -> String {
    use rand::Rng;
    format!("{node}-{:016x}", rand::thread_rng().r#gen::<u64>())
}

fn field(var: &str, kind: Option<&str>, label: Option<&str>) -> Element {
    let mut f = Element::new("field", NS_DATA).attr("var", var);
    if let Some(k) = kind {
        f.set_attr("type", k);
    }
    if let Some(l) = label {
        f.set_attr("label", l);
    }
    f
}

fn value(v: &str) -> Element {
    Element::new("value", NS_DATA).text(v)
}

fn option(label: &str, v: &str) -> Element {
    Element::new("option", NS_DATA)
        .attr("label", label)
        .child(value(v))
}

fn form(title: &str, instructions: &str) -> Element {
    Element::new("x", NS_DATA)
        .attr("type", "form")
        .child(Element::new("title", NS_DATA).text(title))
        .child(Element::new("instructions", NS_DATA).text(instructions))
}

/// The form of a command, or a note when there is nothing to choose from.
fn start_form(svc: &TorrentService, owner: &BareJid, node: &str) -> Result<Element, String> {
    match node {
        "add" => Ok(form(
            "Add a torrent",
            "Paste a magnet link, the http(s) URL of a .torrent file, or a .torrent in base64.",
        )
        .child(
            field(
                "url",
                Some("text-multi"),
                Some("Magnet link, .torrent URL or base64 .torrent"),
            )
            .child(Element::new("required", NS_DATA)),
        )
        .child(field("paused", Some("boolean"), Some("Add paused")).child(value("0")))),
        "pause" | "resume" | "remove" => {
            let jobs: Vec<Job> = svc
                .jobs_of(owner)
                .into_iter()
                .filter(|j| match node {
                    "pause" => matches!(
                        j.state,
                        super::jobs::State::Downloading | super::jobs::State::Finished
                    ),
                    "resume" => matches!(
                        j.state,
                        super::jobs::State::Paused | super::jobs::State::Finished
                    ),
                    _ => true,
                })
                .collect();
            if jobs.is_empty() {
                return Err(format!("You have no torrents to {node}."));
            }
            let mut list = field("jobs", Some("list-multi"), Some("Torrents"))
                .child(Element::new("required", NS_DATA));
            for j in &jobs {
                list.push(option(
                    &format!("{}. {} ({})", j.number, j.label(), j.state.as_str()),
                    &j.number.to_string(),
                ));
            }
            let title = match node {
                "pause" => "Pause torrents",
                "resume" => "Resume torrents",
                _ => "Remove torrents",
            };
            let mut f = form(title, "Choose the torrents.").child(list);
            if node == "remove" {
                f.push(
                    field(
                        "delete_files",
                        Some("boolean"),
                        Some("Also delete the downloaded files"),
                    )
                    .child(value("0")),
                );
            }
            Ok(f)
        }
        _ => {
            let s = svc.settings(owner).map_err(|f| f.text)?;
            let mut notify = field("notify", Some("list-single"), Some("Notifications"))
                .child(value(s.notify.as_str()));
            for (label, v) in [
                ("Added, metadata, finished, failed", "all"),
                ("Only finished and failed", "done"),
                ("None", "none"),
            ] {
                notify.push(option(label, v));
            }
            let mut f = form(
                "Torrent settings",
                "Which messages the torrent service sends you.",
            )
            .child(notify);
            if svc.config().progress_interval_secs > 0 {
                f.push(
                    field(
                        "progress",
                        Some("boolean"),
                        Some("Periodic progress messages while downloading"),
                    )
                    .child(value(if s.progress { "1" } else { "0" })),
                );
            }
            Ok(f)
        }
    }
}

/// Values of field `var` in a submitted form.
fn values(x: &Element, var: &str) -> Vec<String> {
    x.elements()
        .filter(|f| f.is("field", NS_DATA) && f.get_attr("var") == Some(var))
        .flat_map(|f| {
            f.elements()
                .filter(|v| v.is("value", NS_DATA))
                .map(|v| v.text_content())
        })
        .collect()
}

/// Most jobs chosen in one submission.
const MAX_CHOSEN: usize = 50;

/// Reads the submitted form `x` of command `node` (one of [`COMMANDS`] but `list`).
pub(super) fn parse_submission(node: &str, x: &Element) -> Result<Command, Failure> {
    let first = |var: &str| values(x, var).into_iter().next();
    match node {
        "add" => Ok(Command::Add {
            source: values(x, "url").join("\n"),
            paused: truthy(first("paused").as_deref()),
            peers: Vec::new(),
        }),
        "pause" | "resume" | "remove" => {
            let chosen = values(x, "jobs");
            if chosen.len() > MAX_CHOSEN {
                return Err(Failure::bad_request(format!(
                    "at most {MAX_CHOSEN} jobs at a time"
                )));
            }
            let numbers = chosen
                .iter()
                .map(|v| v.trim().parse::<i64>())
                .collect::<Result<Vec<i64>, _>>()
                .map_err(|_| Failure::bad_request("jobs are chosen by number"))?;
            let op = match node {
                "pause" => JobOp::Pause,
                "resume" => JobOp::Resume,
                _ => JobOp::Remove {
                    files: truthy(first("delete_files").as_deref()),
                },
            };
            Ok(Command::Jobs { op, numbers })
        }
        _ => Ok(Command::SetSettings {
            notify: match first("notify") {
                None => None,
                Some(v) => Some(
                    Notify::parse(v.trim())
                        .ok_or_else(|| Failure::bad_request("notify must be all, done or none"))?,
                ),
            },
            progress: first("progress").map(|v| truthy(Some(&v))),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A submitted form with these fields (var, values).
    fn submitted(fields: &[(String, Vec<String>)]) -> Element {
        let mut x = Element::new("x", NS_DATA).attr("type", "submit");
        for (var, vals) in fields {
            let mut f = field(var, None, None);
            for v in vals {
                f.push(value(v));
            }
            x.push(f);
        }
        x
    }

    #[test]
    fn forms() {
        let s = |f: &[(&str, &[&str])]| {
            submitted(
                &f.iter()
                    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            parse_submission("add", &s(&[("url", &["a", "b"]), ("paused", &["true"])])).unwrap(),
            Command::Add {
                source: "a\nb".into(),
                paused: true,
                peers: Vec::new()
            }
        );
        assert_eq!(
            parse_submission(
                "remove",
                &s(&[("jobs", &[" 1", "2 "]), ("delete_files", &["1"])])
            )
            .unwrap(),
            Command::Jobs {
                op: JobOp::Remove { files: true },
                numbers: vec![1, 2]
            }
        );
        assert!(parse_submission("pause", &s(&[("jobs", &["one"])])).is_err());
        let many: Vec<String> = (0..=MAX_CHOSEN).map(|n| n.to_string()).collect();
        assert!(parse_submission("pause", &submitted(&[("jobs".into(), many)])).is_err());
        assert_eq!(
            parse_submission("settings", &s(&[("notify", &["none"])])).unwrap(),
            Command::SetSettings {
                notify: Some(Notify::None),
                progress: None
            }
        );
        assert!(parse_submission("settings", &s(&[("notify", &["loud"])])).is_err());
    }

    fn xml(s: &str) -> Element {
        crate::xml::parse::element(s.as_bytes(), &crate::xml::parse::Scope::new()).unwrap()
    }

    /// `<command/>`s as Gajim, Conversations and Psi send them.
    #[test]
    fn requests_as_clients_send_them() {
        let p = |s: &str| parse(&xml(s));
        let run = |node: &str, session: Option<&str>, cmd| Request {
            node: node.into(),
            session: session.map(str::to_owned),
            step: Step::Run(cmd),
        };
        // Executing `list` from the menu runs it; so does `complete` with a stray form.
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='list' action='execute'/>"
            ),
            Ok(run("list", None, Command::List))
        );
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='list' \
               sessionid='s1' action='complete'><x xmlns='jabber:x:data' type='submit'/></command>"
            ),
            Ok(run("list", Some("s1"), Command::List))
        );
        // Other commands first answer with their form (no action means execute).
        assert_eq!(
            p("<command xmlns='http://jabber.org/protocol/commands' node='pause'/>"),
            Ok(Request {
                node: "pause".into(),
                session: None,
                step: Step::Form
            })
        );
        // A form that is not submitted (`type='form'`) is not a submission.
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='remove' sessionid='r'>\
               <x xmlns='jabber:x:data' type='form'/></command>"
            )
            .map(|r| r.step),
            Ok(Step::Form)
        );
        // The submission completes it.
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='remove' \
               sessionid='remove-1' action='complete'><x xmlns='jabber:x:data' type='submit'>\
               <field var='jobs' type='list-multi'><value>2</value><value>5</value></field>\
               <field var='delete_files' type='boolean'><value>1</value></field></x></command>"
            ),
            Ok(run(
                "remove",
                Some("remove-1"),
                Command::Jobs {
                    op: JobOp::Remove { files: true },
                    numbers: vec![2, 5]
                }
            ))
        );
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='add' sessionid='a'>\
               <x xmlns='jabber:x:data' type='submit'><field var='url'>\
               <value>magnet:?xt=urn:btih:00</value></field>\
               <field var='paused'><value>false</value></field></x></command>"
            )
            .map(|r| r.step),
            Ok(Step::Run(Command::Add {
                source: "magnet:?xt=urn:btih:00".into(),
                paused: false,
                peers: Vec::new()
            }))
        );
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='settings' \
               action='next'><x xmlns='jabber:x:data' type='submit'>\
               <field var='notify'><value>done</value></field>\
               <field var='progress'><value>true</value></field></x></command>"
            )
            .map(|r| r.step),
            Ok(Step::Run(Command::SetSettings {
                notify: Some(Notify::Done),
                progress: Some(true)
            }))
        );
        assert_eq!(
            p(
                "<command xmlns='http://jabber.org/protocol/commands' node='add' \
               sessionid='add-9' action='cancel'/>"
            ),
            Ok(Request {
                node: "add".into(),
                session: Some("add-9".into()),
                step: Step::Cancel
            })
        );
        // Refusals are the IQ errors to answer with.
        let err = |s: &str| p(s).unwrap_err();
        let e = err("<command xmlns='http://jabber.org/protocol/commands' node='reboot'/>");
        assert_eq!(
            (e.cond, e.text.as_str()),
            (Condition::ItemNotFound, "no such command")
        );
        let e = err("<command xmlns='http://jabber.org/protocol/commands'/>");
        assert_eq!(e.cond, Condition::ItemNotFound);
        let e =
            err("<command xmlns='http://jabber.org/protocol/commands' node='add' action='prev'/>");
        assert_eq!(e.cond, Condition::BadRequest);
        let e = err(
            "<command xmlns='http://jabber.org/protocol/commands' node='pause'>\
                     <x xmlns='jabber:x:data' type='submit'><field var='jobs'>\
                     <value>three</value></field></x></command>",
        );
        assert_eq!(
            (e.cond, e.text.as_str()),
            (Condition::BadRequest, "jobs are chosen by number")
        );
    }

    /// Any element tree of the data-forms vocabulary, and strangers.
    fn any_element() -> impl Strategy<Value = Element> {
        let leaf = (
            "(value|field|x|required|option|[a-z]{1,4})",
            prop_oneof![Just(NS_DATA.to_owned()), "[a-z:]{0,6}"],
            proptest::option::of("(url|jobs|paused|delete_files|notify|progress|[a-z]{0,4})"),
            any::<String>(),
        )
            .prop_map(|(name, ns, var, text)| {
                let mut e = Element::new(name, ns).text(text);
                if let Some(v) = var {
                    e.set_attr("var", v);
                }
                e
            });
        leaf.prop_recursive(4, 40, 6, |inner| {
            (inner.clone(), proptest::collection::vec(inner, 0..6)).prop_map(|(mut e, kids)| {
                for k in kids {
                    e.push(k);
                }
                e
            })
        })
    }

    fn node() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("add"),
            Just("pause"),
            Just("resume"),
            Just("remove"),
            Just("settings")
        ]
    }

    proptest! {
        /// Any tree as a `<command/>`: a request or an error, never a panic.
        #[test]
        fn any_command(node in "(list|add|pause|resume|remove|settings|[a-z]{0,3})",
                       action in proptest::option::of("(execute|complete|next|cancel|prev|[a-z]{0,3})"),
                       x in any_element()) {
            let mut c = Element::new("command", NS_COMMANDS).attr("node", node).child(x);
            if let Some(a) = action {
                c.set_attr("action", a);
            }
            let _ = parse(&c);
        }

        /// Any tree as a submitted form: a submission or an error, never a panic.
        #[test]
        fn any_form(node in node(), x in any_element()) {
            let _ = parse_submission(node, &x);
        }

        /// Forms built from a submission read back as it.
        #[test]
        fn forms_round_trip(
            node in node(),
            text in "[^\n]{0,40}",
            flag in any::<bool>(),
            numbers in proptest::collection::vec(any::<i64>(), 0..MAX_CHOSEN),
            notify in proptest::option::of(prop_oneof![
                Just(Notify::All), Just(Notify::Done), Just(Notify::None)
            ]),
            progress in proptest::option::of(any::<bool>()),
        ) {
            let b = |v: bool| if v { "1".to_owned() } else { "0".to_owned() };
            let (fields, want) = match node {
                "add" => (
                    vec![("url".into(), vec![text.clone()]), ("paused".into(), vec![b(flag)])],
                    Command::Add { source: text, paused: flag, peers: Vec::new() },
                ),
                "settings" => {
                    let mut f = Vec::new();
                    if let Some(n) = notify {
                        f.push(("notify".into(), vec![n.as_str().to_owned()]));
                    }
                    if let Some(p) = progress {
                        f.push(("progress".into(), vec![b(p)]));
                    }
                    (f, Command::SetSettings { notify, progress })
                }
                _ => (
                    vec![
                        ("jobs".into(), numbers.iter().map(i64::to_string).collect()),
                        ("delete_files".into(), vec![b(flag)]),
                    ],
                    Command::Jobs {
                        op: match node {
                            "pause" => JobOp::Pause,
                            "resume" => JobOp::Resume,
                            _ => JobOp::Remove { files: flag },
                        },
                        numbers,
                    },
                ),
            };
            prop_assert_eq!(parse_submission(node, &submitted(&fields)).unwrap(), want);
        }
    }
}
