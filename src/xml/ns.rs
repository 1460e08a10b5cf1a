//! Namespace names used across the server, in one place so a typo cannot split a feature.

pub const CLIENT: &str = "jabber:client";
/// RFC 6120 §4.8.3: the content namespace of server-to-server streams.
pub const SERVER: &str = "jabber:server";
pub const STREAMS: &str = "http://etherx.jabber.org/streams";
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const IQ_AUTH: &str = "jabber:iq:auth";
pub const IQ_AUTH_FEATURE: &str = "http://jabber.org/features/iq-auth";
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
pub const PING: &str = "urn:xmpp:ping";
pub const TORRENT: &str = "http://wockd.org/ns/torrent";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const VCARD: &str = "vcard-temp";
pub const VCARD_UPDATE: &str = "vcard-temp:x:update";
pub const PRIVATE: &str = "jabber:iq:private";
pub const BLOCKING: &str = "urn:xmpp:blocking";
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const VERSION: &str = "jabber:iq:version";
pub const TIME: &str = "urn:xmpp:time";
pub const LAST: &str = "jabber:iq:last";
pub const ROSTER: &str = "jabber:iq:roster";
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0203 Delayed Delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0359 Unique and Stable Stanza IDs.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0334 Message Processing Hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0085 Chat State Notifications.
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0160 offline storage, a disco feature without a namespace of its own.
pub const MSGOFFLINE: &str = "msgoffline";
/// XEP-0060 Publish-Subscribe, as XEP-0163 PEP uses it.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const PUBSUB_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// XEP-0115 Entity Capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0004 Data Forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0280 Message Carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 Stanza Forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0313 Message Archive Management.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0059 Result Set Management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0045 Multi-User Chat.
pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0249 Direct MUC Invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
/// XEP-0050 Ad-Hoc Commands.
pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
/// XEP-0071 XHTML-IM.
pub const XHTML_IM: &str = "http://jabber.org/protocol/xhtml-im";
pub const XHTML: &str = "http://www.w3.org/1999/xhtml";
/// XEP-0100 Gateway Interaction.
pub const GATEWAY: &str = "jabber:iq:gateway";
/// XEP-0402 PEP Native Bookmarks.
pub const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
/// XEP-0198 Stream Management.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352 Client State Indication.
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0388 Extensible SASL Profile.
pub const SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0484 Fast Authentication Streamlining Tokens.
pub const FAST: &str = "urn:xmpp:fast:0";
