//! Conversations (IMs and chats), the conversation ui-ops and signals.
//!
//! Ownership: libpurple owns every `PurpleConversation` from its creation until it calls the
//! `destroy_conversation` ui-op (or we [`Conversation::destroy`] it). A [`Conversation`] is
//! used within the call that produced it (a ui-op or signal argument, or a fresh
//! [`Conversation::find`]), never kept across loop turns. The chat user lists and their
//! `PurpleConvChatBuddy` entries are borrowed for the call and copied out.

use std::cell::Cell;
use std::ffi::{c_char, c_void};

use purple_sys as p;

use super::account::Account;
use super::connection::Typing;
use super::ffi::{connect_signal, cstring, glist, guard, handle, opt_string, string};

handle!(
    /// A libpurple conversation (see the module's ownership note).
    Conversation,
    p::PurpleConversation
);

/// IM or chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Im,
    Chat,
    Other,
}

impl Kind {
    fn raw(self) -> p::PurpleConversationType {
        match self {
            Kind::Im => p::PURPLE_CONV_TYPE_IM,
            Kind::Chat => p::PURPLE_CONV_TYPE_CHAT,
            Kind::Other => p::PURPLE_CONV_TYPE_UNKNOWN,
        }
    }
}

/// `PurpleMessageFlags` of a written message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageFlags(pub p::PurpleMessageFlags);

impl MessageFlags {
    fn has(self, flag: p::PurpleMessageFlags) -> bool {
        self.0 & flag != 0
    }
    /// Our own message, echoed.
    pub fn send(self) -> bool {
        self.has(p::PURPLE_MESSAGE_SEND)
    }
    /// Sent by the user from another client of the network.
    pub fn remote_send(self) -> bool {
        self.has(p::PURPLE_MESSAGE_REMOTE_SEND)
    }
    pub fn recv(self) -> bool {
        self.has(p::PURPLE_MESSAGE_RECV)
    }
    pub fn system(self) -> bool {
        self.has(p::PURPLE_MESSAGE_SYSTEM)
    }
    pub fn error(self) -> bool {
        self.has(p::PURPLE_MESSAGE_ERROR)
    }
    /// Held by the network for us (offline messages, history).
    pub fn delayed(self) -> bool {
        self.has(p::PURPLE_MESSAGE_DELAYED)
    }
}

/// One occupant of a chat as the prpl lists it.
#[derive(Clone, Debug)]
pub struct ChatUser {
    pub name: String,
    /// Operator, half-operator or founder.
    pub op: bool,
}

/// # Safety
/// `cb` must be a live `PurpleConvChatBuddy`.
unsafe fn chat_user(cb: *mut c_void) -> ChatUser {
    let cb = cb as *mut p::PurpleConvChatBuddy;
    // SAFETY: per the contract; the name is copied.
    let (name, flags) = unsafe { (string((*cb).name), (*cb).flags) };
    ChatUser {
        name,
        op: flags & (p::PURPLE_CBFLAGS_OP | p::PURPLE_CBFLAGS_FOUNDER | p::PURPLE_CBFLAGS_HALFOP)
            != 0,
    }
}

impl Conversation {
    /// The account's conversation of `kind` with `name`, if open.
    pub fn find(account: Account, kind: Kind, name: &str) -> Option<Conversation> {
        let n = cstring(name);
        // SAFETY: main thread, live account; a borrowed live conversation or NULL.
        Conversation::from_ptr(unsafe {
            p::purple_find_conversation_with_account(kind.raw(), n.as_ptr(), account.as_ptr())
        })
    }

    /// Opens an IM conversation with `name` (libpurple owns it).
    pub fn new_im(account: Account, name: &str) -> Option<Conversation> {
        let n = cstring(name);
        // SAFETY: main thread, live account; libpurple creates and owns the conversation.
        Conversation::from_ptr(unsafe {
            p::purple_conversation_new(p::PURPLE_CONV_TYPE_IM, account.as_ptr(), n.as_ptr())
        })
    }

    pub fn account(self) -> Option<Account> {
        // SAFETY: main thread, live conversation.
        Account::from_ptr(unsafe { p::purple_conversation_get_account(self.as_ptr()) })
    }

    pub fn name(self) -> Option<String> {
        // SAFETY: main thread, live conversation; a borrowed string copied at once.
        opt_string(unsafe { p::purple_conversation_get_name(self.as_ptr()) })
    }

    pub fn kind(self) -> Kind {
        // SAFETY: main thread, live conversation.
        match unsafe { p::purple_conversation_get_type(self.as_ptr()) } {
            p::PURPLE_CONV_TYPE_IM => Kind::Im,
            p::PURPLE_CONV_TYPE_CHAT => Kind::Chat,
            _ => Kind::Other,
        }
    }

    /// Sends `html` (libpurple markup) in an IM conversation.
    pub fn im_send(self, html: &str) {
        if self.kind() != Kind::Im {
            return;
        }
        let html = cstring(html);
        // SAFETY: main thread, live IM conversation (checked above); libpurple copies the text.
        unsafe {
            p::purple_conv_im_send(
                p::purple_conversation_get_im_data(self.as_ptr()),
                html.as_ptr(),
            )
        };
    }

    /// Sends `html` (libpurple markup) to a chat.
    pub fn chat_send(self, html: &str) {
        if self.kind() != Kind::Chat {
            return;
        }
        let html = cstring(html);
        // SAFETY: main thread, live chat conversation (checked above); libpurple copies it.
        unsafe {
            p::purple_conv_chat_send(
                p::purple_conversation_get_chat_data(self.as_ptr()),
                html.as_ptr(),
            )
        };
    }

    /// The user's nick in a chat (empty if unknown).
    pub fn chat_nick(self) -> String {
        if self.kind() != Kind::Chat {
            return String::new();
        }
        // SAFETY: main thread, live chat conversation; a borrowed string copied at once.
        string(unsafe {
            p::purple_conv_chat_get_nick(p::purple_conversation_get_chat_data(self.as_ptr()))
        })
    }

    /// The occupants of a chat.
    pub fn chat_users(self) -> Vec<ChatUser> {
        if self.kind() != Kind::Chat {
            return Vec::new();
        }
        // SAFETY: main thread, live chat conversation; the user list and its entries are
        // borrowed and copied at once.
        unsafe {
            glist(p::purple_conv_chat_get_users(
                p::purple_conversation_get_chat_data(self.as_ptr()),
            ))
            .into_iter()
            .map(|cb| chat_user(cb))
            .collect()
        }
    }

    /// Closes the conversation (for a chat, the prpl leaves the room); the handle is dead
    /// afterwards.
    pub fn destroy(self) {
        // SAFETY: main thread, live conversation; libpurple frees it (calling our
        // destroy_conversation ui-op first).
        unsafe { p::purple_conversation_destroy(self.as_ptr()) };
    }
}

/// The conversation ui-ops, as safe functions.
#[derive(Clone, Copy)]
pub struct UiOps {
    /// `(conversation, who, message markup, flags, time)`.
    pub write_im: fn(Conversation, &str, &str, MessageFlags, i64),
    pub write_chat: fn(Conversation, &str, &str, MessageFlags, i64),
    /// The fallback writer: `(conversation, name, message, flags, time)`.
    pub write_conv: fn(Conversation, &str, &str, MessageFlags, i64),
    pub chat_add_users: fn(Conversation, Vec<ChatUser>),
    /// `(conversation, old nick, new nick)`.
    pub chat_rename_user: fn(Conversation, &str, &str),
    pub chat_remove_users: fn(Conversation, Vec<String>),
    pub destroy_conversation: fn(Conversation),
}

/// Conversation signal handlers, as safe functions.
#[derive(Clone, Copy)]
pub struct Signals {
    /// `buddy-typing`, `buddy-typed`, `buddy-typing-stopped`: `(account, name, state)`.
    pub typing: fn(Account, &str, Typing),
    pub chat_joined: fn(Conversation),
    /// `chat-topic-changed`: `(conversation, who, topic)`.
    pub topic_changed: fn(Conversation, &str, &str),
}

thread_local! {
    static OPS: Cell<Option<UiOps>> = const { Cell::new(None) };
    static SIGNALS: Cell<Option<Signals>> = const { Cell::new(None) };
}

/// Sets the conversation ui-ops and connects the signals (once, on the main thread).
pub fn set_ui_ops(ops: UiOps, signals: Signals) {
    OPS.set(Some(ops));
    SIGNALS.set(Some(signals));
    // SAFETY: main thread; the struct is leaked (libpurple keeps it). Signal handlers have
    // the documented signatures (conversation-signals: buddy-typing* (PurpleAccount *,
    // const char *name), chat-joined (PurpleConversation *), chat-topic-changed
    // (PurpleConversation *, const char *who, const char *topic)).
    unsafe {
        p::purple_conversations_set_ui_ops(Box::leak(Box::new(p::PurpleConversationUiOps {
            write_im: Some(write_im),
            write_chat: Some(write_chat),
            write_conv: Some(write_conv),
            chat_add_users: Some(chat_add_users),
            chat_rename_user: Some(chat_rename_user),
            chat_remove_users: Some(chat_remove_users),
            destroy_conversation: Some(destroy_conversation),
            ..Default::default()
        })));
        let h = p::purple_conversations_get_handle();
        connect_signal(h, "buddy-typing", typing as *const ());
        connect_signal(h, "buddy-typed", typed as *const ());
        connect_signal(h, "buddy-typing-stopped", typing_stopped as *const ());
        connect_signal(h, "chat-joined", chat_joined as *const ());
        connect_signal(h, "chat-topic-changed", topic_changed as *const ());
    }
}

#[allow(clippy::unnecessary_cast)] // time_t is i64 here, not on every target
fn time(t: p::time_t) -> i64 {
    t as i64
}

unsafe extern "C" fn write_im(
    conv: *mut p::PurpleConversation,
    who: *const c_char,
    message: *const c_char,
    flags: p::PurpleMessageFlags,
    mtime: p::time_t,
) {
    guard("write_im", (), || {
        if let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) {
            (ops.write_im)(
                conv,
                &string(who),
                &string(message),
                MessageFlags(flags),
                time(mtime),
            )
        }
    })
}

unsafe extern "C" fn write_chat(
    conv: *mut p::PurpleConversation,
    who: *const c_char,
    message: *const c_char,
    flags: p::PurpleMessageFlags,
    mtime: p::time_t,
) {
    guard("write_chat", (), || {
        if let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) {
            (ops.write_chat)(
                conv,
                &string(who),
                &string(message),
                MessageFlags(flags),
                time(mtime),
            )
        }
    })
}

unsafe extern "C" fn write_conv(
    conv: *mut p::PurpleConversation,
    name: *const c_char,
    _alias: *const c_char,
    message: *const c_char,
    flags: p::PurpleMessageFlags,
    mtime: p::time_t,
) {
    guard("write_conv", (), || {
        if let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) {
            (ops.write_conv)(
                conv,
                &string(name),
                &string(message),
                MessageFlags(flags),
                time(mtime),
            )
        }
    })
}

unsafe extern "C" fn chat_add_users(
    conv: *mut p::PurpleConversation,
    cbuddies: *mut p::GList,
    _new: p::gboolean,
) {
    guard("chat_add_users", (), || {
        let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) else {
            return;
        };
        // SAFETY: the list and its PurpleConvChatBuddy entries are borrowed for the call.
        let users = glist(cbuddies)
            .into_iter()
            .map(|cb| unsafe { chat_user(cb) })
            .collect();
        (ops.chat_add_users)(conv, users)
    })
}

unsafe extern "C" fn chat_remove_users(conv: *mut p::PurpleConversation, users: *mut p::GList) {
    guard("chat_remove_users", (), || {
        let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) else {
            return;
        };
        // A borrowed list of borrowed names, copied.
        let nicks = glist(users)
            .into_iter()
            .map(|n| string(n as *const c_char))
            .collect();
        (ops.chat_remove_users)(conv, nicks)
    })
}

unsafe extern "C" fn chat_rename_user(
    conv: *mut p::PurpleConversation,
    old: *const c_char,
    new: *const c_char,
    _alias: *const c_char,
) {
    guard("chat_rename_user", (), || {
        if let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) {
            (ops.chat_rename_user)(conv, &string(old), &string(new))
        }
    })
}

unsafe extern "C" fn destroy_conversation(conv: *mut p::PurpleConversation) {
    guard("destroy_conversation", (), || {
        if let (Some(ops), Some(conv)) = (OPS.get(), Conversation::from_ptr(conv)) {
            (ops.destroy_conversation)(conv)
        }
    })
}

fn typing_signal(acc: *mut p::PurpleAccount, name: *const c_char, state: Typing) {
    if let (Some(s), Some(acc)) = (SIGNALS.get(), Account::from_ptr(acc)) {
        (s.typing)(acc, &string(name), state)
    }
}

unsafe extern "C" fn typing(acc: *mut p::PurpleAccount, name: *const c_char, _data: *mut c_void) {
    guard("typing", (), || typing_signal(acc, name, Typing::Composing))
}

unsafe extern "C" fn typed(acc: *mut p::PurpleAccount, name: *const c_char, _data: *mut c_void) {
    guard("typed", (), || typing_signal(acc, name, Typing::Paused))
}

unsafe extern "C" fn typing_stopped(
    acc: *mut p::PurpleAccount,
    name: *const c_char,
    _data: *mut c_void,
) {
    guard("typing_stopped", (), || {
        typing_signal(acc, name, Typing::Stopped)
    })
}

unsafe extern "C" fn chat_joined(conv: *mut p::PurpleConversation, _data: *mut c_void) {
    guard("chat_joined", (), || {
        if let (Some(s), Some(conv)) = (SIGNALS.get(), Conversation::from_ptr(conv)) {
            (s.chat_joined)(conv)
        }
    })
}

unsafe extern "C" fn topic_changed(
    conv: *mut p::PurpleConversation,
    who: *const c_char,
    topic: *const c_char,
    _d: *mut c_void,
) {
    guard("topic_changed", (), || {
        if let (Some(s), Some(conv)) = (SIGNALS.get(), Conversation::from_ptr(conv)) {
            (s.topic_changed)(conv, &string(who), &string(topic))
        }
    })
}
