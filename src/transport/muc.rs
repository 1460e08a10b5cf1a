//! Legacy group chats as XEP-0045 rooms (a subset): `escaped-room[%n]@service/nick`.
//!
//! * Join: presence to `room@service/nick` → `chat_info_defaults` + `serv_join_chat` (nick
//!   passed as `handle` where the prpl has one; IRC nicks are per server, so IRC rooms use
//!   the account's nick and the self-presence says so with status 210).
//! * Occupants: the prpl's user list (`chat_add_users`, also the snapshot on `chat-joined`)
//!   → available presences with `muc#user` items (ops as moderators); parts → unavailable;
//!   nick changes → unavailable with status 303 and the new nick, then available.
//! * Self-presence with status 110 once the prpl reports the join; subject from
//!   `chat-topic-changed`.
//! * Groupchat messages both ways; the user's own message is reflected exactly once, when the
//!   prpl echoes it (`PURPLE_MESSAGE_SEND`), with the id the client used.
//! * Rooms are remembered in the store and re-joined after reconnects and restarts; leaving
//!   (unavailable presence from the last joined session) forgets the room.
//! * Private messages to `room@service/nick` go to the nick as a 1:1 conversation.

use std::collections::VecDeque;
use std::rc::Rc;

use jid::{BareJid, FullJid};

use super::forms;
use super::purple::Conversation;
use super::purple::conversation::{ChatUser, Kind, MessageFlags};
use super::purple::markup::{html_to_text, text_to_html};
use super::{Room, ServiceInfo, Transport, accounts, core, messages, text};
use crate::core::stanza::Condition;
use crate::router::ServiceHost;
use crate::server::Server;
use crate::xml::{Element, ns};

/// Subscribes to the lifecycle events: a link that comes up re-joins the rooms; one that
/// goes down retracts their occupants.
pub fn subscribe(events: &super::events::Events) {
    events
        .link_up
        .subscribe(|server, e| rejoin_all(server, e.id));
    events
        .link_down
        .subscribe(|server, e| account_gone(server, e.id));
}

fn is_irc_channel(name: &str) -> bool {
    name.starts_with(['#', '&', '+', '!'])
}

/// True if `node@service` names a room for this user.
pub fn is_room(server: &Server, owner: &BareJid, service: &str, node: &str) -> bool {
    let t = Transport::get(server);
    let Some((id, name)) = t.resolve(owner, service, node) else {
        return false;
    };
    let legacy = t.legacy.borrow();
    let Some(l) = legacy.get(&id) else {
        return false;
    };
    l.rooms.contains_key(&name)
        || (l.protocol == "prpl-irc" && is_irc_channel(&name))
        || super::roomlist::is_listed(id, &name)
}

pub fn room_info(node: &str) -> Element {
    let name = super::escape::parse_contact_node(node).0;
    Element::new("query", forms::DISCO_INFO)
        .child(
            Element::new("identity", forms::DISCO_INFO)
                .attr("category", "conference")
                .attr("type", "text")
                .attr("name", name),
        )
        .child(Element::new("feature", forms::DISCO_INFO).attr("var", forms::MUC))
        .child(Element::new("feature", forms::DISCO_INFO).attr("var", "muc_persistent"))
        .child(Element::new("feature", forms::DISCO_INFO).attr("var", "muc_open"))
}

fn send_to_joined(server: &Rc<Server>, id: i64, room: &str, build: impl Fn(&FullJid) -> Element) {
    let targets: Vec<FullJid> = Transport::get(server)
        .legacy
        .borrow()
        .get(&id)
        .and_then(|l| l.rooms.get(room))
        .map(|r| r.joined_by.clone())
        .unwrap_or_default();
    for to in targets {
        server.to_session(&to, &build(&to));
    }
}

/// The resource an occupant appears as: the nick without what XML or a JID cannot carry;
/// a nick that still makes no valid JID (C1 controls, unassigned code points…) appears as
/// `x-` and the hex of its first bytes, the same every time.
fn occupant_nick(room_jid: &BareJid, nick: &str) -> String {
    let clean = text::line(nick);
    if FullJid::new(&format!("{room_jid}/{clean}")).is_ok() {
        return clean;
    }
    let hex: String = nick.bytes().take(32).map(|b| format!("{b:02x}")).collect();
    format!("x-{hex}")
}

/// `room@service/nick` of an occupant (see [`occupant_nick`]).
fn occupant_jid(room_jid: &BareJid, nick: &str) -> String {
    format!("{room_jid}/{}", occupant_nick(room_jid, nick))
}

fn occupant_presence(
    room_jid: &BareJid,
    nick: &str,
    to: &FullJid,
    role: &str,
    statuses: &[&str],
) -> Element {
    let mut x = Element::new("x", forms::MUC_USER).child(
        Element::new("item", forms::MUC_USER)
            .attr(
                "affiliation",
                if role == "moderator" { "admin" } else { "none" },
            )
            .attr("role", role),
    );
    for s in statuses {
        x.push(Element::new("status", forms::MUC_USER).attr("code", *s));
    }
    let mut p = Element::stanza("presence")
        .attr("from", occupant_jid(room_jid, nick))
        .attr("to", to.to_string())
        .child(x);
    if role == "none" {
        p.set_attr("type", "unavailable");
    }
    p
}

/// Adds the room to the user's XEP-0402 bookmarks (autojoin) unless it is there already, so
/// the user's other devices join it too, and join it again after reconnecting. Leaving from
/// a client sets autojoin off in that bookmark itself (XEP-0402 §4), which we leave alone.
fn bookmark(server: &Rc<Server>, owner: &BareJid, room_jid: &BareJid, room: &str, nick: &str) {
    const NS: &str = crate::xml::ns::BOOKMARKS;
    let conference = Element::new("conference", NS)
        .attr("name", room)
        .attr("autojoin", "true")
        .child(Element::new("nick", NS).text(nick));
    // XEP-0402 §3.1's publish-options, so clients' later publishes match the node.
    let options = crate::transport::forms::pubsub_options(&[
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ]);
    if crate::core::uplink::is_foreign(server, owner) {
        // The user's PEP is the host's: published there when the host granted pubsub.
        let service = room_jid.domain().as_str();
        if crate::core::uplink::Uplinks::get(server, service)
            .iq_set
            .contains(crate::xml::ns::PUBSUB)
        {
            let publish = Element::new("pubsub", crate::xml::ns::PUBSUB)
                .child(
                    Element::new("publish", crate::xml::ns::PUBSUB)
                        .attr("node", NS)
                        .child(
                            Element::new("item", crate::xml::ns::PUBSUB)
                                .attr("id", room_jid.as_str())
                                .child(conference),
                        ),
                )
                .child(Element::new("publish-options", crate::xml::ns::PUBSUB).child(options));
            server.route_local(crate::core::uplink::privileged_set(
                service,
                owner,
                &crate::net::link::random_id(),
                publish,
            ));
        }
        return;
    }
    let mut publish = crate::core::PepPublish {
        owner: owner.clone(),
        node: NS.to_owned(),
        item_id: room_jid.to_string(),
        payload: conference,
        options: Some(options),
        published: None,
    };
    server.hooks.fire(server, &mut publish);
    if let Some(Err(e)) = publish.published {
        tracing::warn!("cannot bookmark {room_jid}: {e}");
    }
}

/// Presence from the user to `room@service/nick`: join or leave.
pub fn presence_from_user(
    server: &Rc<Server>,
    info: &ServiceInfo,
    from: &FullJid,
    node: &str,
    nick: &str,
    el: Element,
) {
    let owner = from.to_bare();
    let t = Transport::get(server);
    let Some((id, room)) = t.resolve(&owner, &info.domain, node) else {
        return;
    };
    let Some(room_jid) = t.contact_jid(id, &room) else {
        return;
    };
    match el.get_attr("type") {
        Some("unavailable") => {
            let last = {
                let mut legacy = t.legacy.borrow_mut();
                let Some(l) = legacy.get_mut(&id) else { return };
                let Some(r) = l.rooms.get_mut(&room) else {
                    return;
                };
                r.joined_by.retain(|j| j != from);
                r.joined_by.is_empty()
            };
            let own = own_nick(server, id, &room).unwrap_or_else(|| nick.to_owned());
            server.to_session(
                from,
                &occupant_presence(&room_jid, &own, from, "none", &["110"]),
            );
            if last {
                leave_legacy(server, id, &room);
                if let Some(l) = t.legacy.borrow_mut().get_mut(&id) {
                    l.rooms.remove(&room);
                }
                if let Err(e) = server.store.delete_legacy_room(id, &room) {
                    tracing::warn!("cannot forget room: {e}");
                }
            }
        }
        None => {
            let (already, joined) = {
                let mut legacy = t.legacy.borrow_mut();
                let Some(l) = legacy.get_mut(&id) else { return };
                let r = l.rooms.entry(room.clone()).or_insert_with(|| Room {
                    nick: nick.to_owned(),
                    ..Default::default()
                });
                let already = r.joined_by.contains(from);
                if !already {
                    r.joined_by.push(from.clone());
                }
                (already, r.joined)
            };
            if let Err(e) = server.store.save_legacy_room(id, &room, Some(nick)) {
                tracing::warn!("cannot remember room: {e}");
            }
            bookmark(server, &owner, &room_jid, &room, nick);
            if joined {
                if !already {
                    replay_state(server, id, &room, from);
                }
                return;
            }
            if accounts::connection(server, id).is_none() {
                // Joined when the account (re)connects.
                tracing::debug!(%room, "account not connected; join deferred");
                return;
            }
            join_legacy(server, id, &room, nick);
        }
        _ => {}
    }
}

/// Asks the prpl to join `room`.
fn join_legacy(server: &Server, id: i64, room: &str, nick: &str) {
    if let Some(gc) = accounts::connection(server, id) {
        gc.join_chat(room, nick);
    }
}

fn find_chat(server: &Server, id: i64, room: &str) -> Option<Conversation> {
    let acc = Transport::get(server)
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.account)?;
    Conversation::find(acc, Kind::Chat, room)
}

fn leave_legacy(server: &Server, id: i64, room: &str) {
    if let Some(conv) = find_chat(server, id, room) {
        // Destroying the conversation makes the prpl leave the room (serv_chat_leave).
        conv.destroy();
    }
}

fn own_nick(server: &Server, id: i64, room: &str) -> Option<String> {
    let n = find_chat(server, id, room)?.chat_nick();
    (!n.is_empty())
        .then_some(n)
        .or_else(|| accounts::display_name(server, id))
}

fn role_of(user: &ChatUser) -> &'static str {
    if user.op { "moderator" } else { "participant" }
}

/// Everything a session that joins an already-joined room must see.
fn replay_state(server: &Rc<Server>, id: i64, room: &str, to: &FullJid) {
    let t = Transport::get(server);
    let Some(room_jid) = t.contact_jid(id, room) else {
        return;
    };
    let Some(conv) = find_chat(server, id, room) else {
        return;
    };
    let own = own_nick(server, id, room).unwrap_or_default();
    for user in conv.chat_users() {
        if user.name != own {
            server.to_session(
                to,
                &occupant_presence(&room_jid, &user.name, to, role_of(&user), &[]),
            );
        }
    }
    let asked = t
        .legacy
        .borrow()
        .get(&id)
        .and_then(|l| l.rooms.get(room))
        .map(|r| r.nick.clone())
        .unwrap_or_default();
    let mut codes = vec!["110"];
    if asked != own {
        codes.push("210");
    }
    server.to_session(
        to,
        &occupant_presence(&room_jid, &own, to, "participant", &codes),
    );
    let subject = t
        .legacy
        .borrow()
        .get(&id)
        .and_then(|l| l.rooms.get(room))
        .and_then(|r| r.subject.clone());
    server.to_session(
        to,
        &Element::stanza("message")
            .attr("from", room_jid.to_string())
            .attr("to", to.to_string())
            .attr("type", "groupchat")
            .attr("id", messages::new_id())
            .child(Element::new("subject", ns::CLIENT).text(subject.unwrap_or_default())),
    );
}

/// `(server, legacy id, room name)` for a chat conversation.
fn conv_room(conv: Conversation) -> Option<(Rc<Server>, i64, String)> {
    let server = core::server()?;
    let acc = conv.account()?;
    let name = conv.name().unwrap_or_default();
    let id = Transport::get(&server).id_of(acc)?;
    Some((server, id, name))
}

pub fn chat_joined(conv: Conversation) {
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    let t = Transport::get(&server);
    let users = {
        let mut legacy = t.legacy.borrow_mut();
        let Some(l) = legacy.get_mut(&id) else { return };
        // A room joined from elsewhere (another client, a server-side autojoin) is kept
        // without sessions; joining it later replays the state.
        let r = l.rooms.entry(room.clone()).or_default();
        r.joined = true;
        r.joined_by.clone()
    };
    for to in users {
        replay_state(&server, id, &room, &to);
    }
}

pub fn topic_changed(conv: Conversation, who: &str, topic: &str) {
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    let t = Transport::get(&server);
    let topic = text::line(topic);
    if let Some(r) = t
        .legacy
        .borrow_mut()
        .get_mut(&id)
        .and_then(|l| l.rooms.get_mut(&room))
    {
        r.subject = Some(topic.clone());
    }
    let Some(room_jid) = t.contact_jid(id, &room) else {
        return;
    };
    let from = if who.is_empty() {
        room_jid.to_string()
    } else {
        occupant_jid(&room_jid, who)
    };
    send_to_joined(&server, id, &room, |to| {
        Element::stanza("message")
            .attr("from", from.as_str())
            .attr("to", to.to_string())
            .attr("type", "groupchat")
            .attr("id", messages::new_id())
            .child(Element::new("subject", ns::CLIENT).text(topic.as_str()))
    });
}

pub fn chat_add_users(conv: Conversation, users: Vec<ChatUser>) {
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    let t = Transport::get(&server);
    let Some(room_jid) = t.contact_jid(id, &room) else {
        return;
    };
    let own = own_nick(&server, id, &room).unwrap_or_default();
    for user in users {
        let nick = user.name.clone();
        if nick == own {
            continue;
        }
        if let Some(r) = t
            .legacy
            .borrow_mut()
            .get_mut(&id)
            .and_then(|l| l.rooms.get_mut(&room))
        {
            r.occupants.insert(nick.clone());
        }
        send_to_joined(&server, id, &room, |to| {
            occupant_presence(&room_jid, &nick, to, role_of(&user), &[])
        });
    }
}

pub fn chat_remove_users(conv: Conversation, nicks: Vec<String>) {
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    let t = Transport::get(&server);
    let Some(room_jid) = t.contact_jid(id, &room) else {
        return;
    };
    for nick in nicks {
        if let Some(r) = t
            .legacy
            .borrow_mut()
            .get_mut(&id)
            .and_then(|l| l.rooms.get_mut(&room))
        {
            r.occupants.remove(&nick);
        }
        send_to_joined(&server, id, &room, |to| {
            occupant_presence(&room_jid, &nick, to, "none", &[])
        });
    }
}

pub fn chat_rename_user(conv: Conversation, old: &str, new: &str) {
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    let t = Transport::get(&server);
    let Some(room_jid) = t.contact_jid(id, &room) else {
        return;
    };
    let (old, new) = (old.to_owned(), new.to_owned());
    let own = own_nick(&server, id, &room).unwrap_or_default();
    let is_self = own == new;
    if let Some(r) = t
        .legacy
        .borrow_mut()
        .get_mut(&id)
        .and_then(|l| l.rooms.get_mut(&room))
    {
        r.occupants.remove(&old);
        if !is_self {
            r.occupants.insert(new.clone());
        }
    }
    let extra: &[&str] = if is_self { &["110"] } else { &[] };
    send_to_joined(&server, id, &room, |to| {
        let mut codes = vec!["303"];
        codes.extend_from_slice(extra);
        let mut p = occupant_presence(&room_jid, &old, to, "none", &codes);
        // §7.6: the unavailable presence carries the new nick; the role stays.
        if let Some(item) = p
            .get_child_mut("x", forms::MUC_USER)
            .and_then(|x| x.get_child_mut("item", forms::MUC_USER))
        {
            item.set_attr("nick", occupant_nick(&room_jid, &new));
            item.set_attr("role", "participant");
        }
        p
    });
    send_to_joined(&server, id, &room, |to| {
        occupant_presence(&room_jid, &new, to, "participant", extra)
    });
}

pub fn write_chat(conv: Conversation, who: &str, message: &str, flags: MessageFlags, _mtime: i64) {
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    let t = Transport::get(&server);
    let Some(room_jid) = t.contact_jid(id, &room) else {
        return;
    };
    // Bells, IRC codes prpl-irc left, U+FFFF…: gone before anything is sent.
    let html = text::display(message);
    let text = html_to_text(&html);
    if flags.system() || who.is_empty() || text.is_empty() {
        // Topic lines, joins and parts as text: the presences and subject carry them.
        tracing::debug!(%room, "system line: {text}");
        return;
    }
    let mut msg_id = None;
    if flags.send() {
        msg_id = t
            .legacy
            .borrow_mut()
            .get_mut(&id)
            .and_then(|l| l.rooms.get_mut(&room))
            .and_then(|r| r.pending_ids.pop_front());
    }
    let msg_id = msg_id.unwrap_or_else(messages::new_id);
    let xhtml = messages::xhtml_im(&html);
    send_to_joined(&server, id, &room, |to| {
        let mut m = Element::stanza("message")
            .attr("from", occupant_jid(&room_jid, who))
            .attr("to", to.to_string())
            .attr("type", "groupchat")
            .attr("id", msg_id.as_str())
            .child(Element::new("body", ns::CLIENT).text(text.as_str()));
        if let Some(x) = &xhtml {
            m.push(x.clone());
        }
        m
    });
}

pub fn destroy_conversation(conv: Conversation) {
    if conv.kind() != Kind::Chat {
        return;
    }
    let Some((server, id, room)) = conv_room(conv) else {
        return;
    };
    if let Some(r) = Transport::get(&server)
        .legacy
        .borrow_mut()
        .get_mut(&id)
        .and_then(|l| l.rooms.get_mut(&room))
    {
        r.joined = false;
    }
}

/// A groupchat message from the user.
pub fn message_from_user(
    server: &Rc<Server>,
    info: &ServiceInfo,
    from: &FullJid,
    node: &str,
    el: Element,
) {
    let owner = from.to_bare();
    let t = Transport::get(server);
    let Some((id, room)) = t.resolve(&owner, &info.domain, node) else {
        return;
    };
    let joined = t
        .legacy
        .borrow()
        .get(&id)
        .and_then(|l| l.rooms.get(&room))
        .is_some_and(|r| r.joined_by.contains(from));
    let conv = find_chat(server, id, &room);
    let (true, Some(conv)) = (joined, conv) else {
        return super::service::bounce(
            server,
            from,
            &el,
            Condition::NotAcceptable,
            "join the room first",
        );
    };
    let Some(body) = el.child_text("body", ns::CLIENT).filter(|b| !b.is_empty()) else {
        return;
    };
    if let Some(r) = t
        .legacy
        .borrow_mut()
        .get_mut(&id)
        .and_then(|l| l.rooms.get_mut(&room))
    {
        let mid = el
            .get_attr("id")
            .map(str::to_owned)
            .unwrap_or_else(messages::new_id);
        r.pending_ids.push_back(mid);
        // A prpl that never echoes must not grow this without bound.
        while r.pending_ids.len() > 50 {
            r.pending_ids.pop_front();
        }
    }
    conv.chat_send(&text_to_html(&body));
}

/// A private message to `room@service/nick`.
pub fn private_message(
    server: &Rc<Server>,
    info: &ServiceInfo,
    from: &FullJid,
    node: &str,
    nick: &str,
    el: Element,
) {
    let owner = from.to_bare();
    let t = Transport::get(server);
    let Some((id, room)) = t.resolve(&owner, &info.domain, node) else {
        return;
    };
    let protocol = t
        .legacy
        .borrow()
        .get(&id)
        .map(|l| l.protocol.clone())
        .unwrap_or_default();
    // IRC nicks are server-wide; XMPP rooms address occupants as room@server/nick.
    let target = if protocol == "prpl-jabber" {
        format!("{room}/{nick}")
    } else {
        nick.to_owned()
    };
    let index = t.legacy.borrow().get(&id).map(|l| l.index).unwrap_or(0);
    messages::to_legacy(
        server,
        info,
        from,
        &super::escape::contact_node(&target, index),
        el,
    );
}

/// Re-joins the rooms of an account that (re)connected: stored ones and live ones.
pub fn rejoin_all(server: &Rc<Server>, id: i64) {
    let mut rooms: Vec<(String, String)> = server
        .store
        .legacy_rooms(id)
        .unwrap_or_default()
        .into_iter()
        .map(|(r, n)| (r, n.unwrap_or_default()))
        .collect();
    {
        let t = Transport::get(server);
        let mut legacy = t.legacy.borrow_mut();
        if let Some(l) = legacy.get_mut(&id) {
            for (room, nick) in &rooms {
                l.rooms.entry(room.clone()).or_insert_with(|| Room {
                    nick: nick.clone(),
                    pending_ids: VecDeque::new(),
                    ..Default::default()
                });
            }
            for (room, r) in &l.rooms {
                if !rooms.iter().any(|(n, _)| n == room) {
                    rooms.push((room.clone(), r.nick.clone()));
                }
            }
        }
    }
    for (room, nick) in rooms {
        join_legacy(server, id, &room, &nick);
    }
}

/// The account dropped: occupants vanish for the user until the rooms are re-joined.
pub fn account_gone(server: &Rc<Server>, id: i64) {
    let t = Transport::get(server);
    let rooms: Vec<(String, Vec<String>)> = t
        .legacy
        .borrow_mut()
        .get_mut(&id)
        .map(|l| {
            l.rooms
                .iter_mut()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        std::mem::take(&mut r.occupants).into_iter().collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for (room, occupants) in rooms {
        let Some(room_jid) = t.contact_jid(id, &room) else {
            continue;
        };
        for nick in occupants {
            send_to_joined(server, id, &room, |to| {
                occupant_presence(&room_jid, &nick, to, "none", &[])
            });
        }
    }
}
