//! Stanza-level and stream-level error conditions (RFC 6120 §8.3 and §4.9) and the helpers
//! that build error replies.

use jid::Jid;

use crate::iq::IqType;
use crate::xml::{Element, ns};

/// RFC 6120 §8.3.2 error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// RFC 6120 §8.3.3 defined stanza error conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        use Condition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            Gone => "gone",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            Redirect => "redirect",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The type RFC 6120 §8.3.3 suggests for the condition.
    pub fn default_type(self) -> ErrorType {
        use Condition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => {
                ErrorType::Modify
            }
            NotAuthorized | Forbidden | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            InternalServerError | RecipientUnavailable | RemoteServerTimeout
            | ResourceConstraint | UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// `<error type='…'><condition/><text/></error>`.
pub fn error_element(kind: ErrorType, cond: Condition, text: Option<&str>) -> Element {
    let mut err = Element::stanza("error")
        .attr("type", kind.as_str())
        .child(Element::new(cond.as_str(), ns::STANZA_ERRORS));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        err.push(
            Element::new("text", ns::STANZA_ERRORS)
                .attr("xml:lang", "en")
                .text(text),
        );
    }
    err
}

/// The error reply to `stanza` (RFC 6120 §8.3.1): same name and id, addresses swapped,
/// `type='error'`. The original payload is not echoed (a MAY), which keeps replies small.
/// Returns `None` for stanzas that must never be answered with an error (errors themselves).
pub fn error_reply(
    stanza: &Element,
    kind: ErrorType,
    cond: Condition,
    text: Option<&str>,
) -> Option<Element> {
    if stanza.get_attr("type") == Some("error") {
        return None;
    }
    let mut reply = Element::stanza(&stanza.name).attr("type", "error");
    if let Some(id) = stanza.get_attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.get_attr("to") {
        reply.set_attr("from", from);
    }
    if let Some(to) = stanza.get_attr("from") {
        reply.set_attr("to", to);
    }
    reply.push(error_element(kind, cond, text));
    Some(reply)
}

/// RFC 6120 §4.9.3 stream error conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    BadFormat,
    Conflict,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    ResourceConstraint,
    RestrictedXml,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamError {
    /// The stream error RFC 6120 §4.9.3 names for a framing failure (client, server and
    /// component streams alike).
    pub fn for_framing(e: &crate::xml::FramerError) -> StreamError {
        use crate::xml::FramerError;
        match e {
            FramerError::TooLarge(_) | FramerError::TooDeep(_) => StreamError::PolicyViolation,
            FramerError::Restricted(_) => StreamError::RestrictedXml,
            FramerError::NotWellFormed(_) => StreamError::NotWellFormed,
            FramerError::TextAtStreamLevel => StreamError::BadFormat,
        }
    }

    pub fn as_str(self) -> &'static str {
        use StreamError::*;
        match self {
            BadFormat => "bad-format",
            Conflict => "conflict",
            ConnectionTimeout => "connection-timeout",
            HostUnknown => "host-unknown",
            ImproperAddressing => "improper-addressing",
            InternalServerError => "internal-server-error",
            InvalidFrom => "invalid-from",
            InvalidNamespace => "invalid-namespace",
            InvalidXml => "invalid-xml",
            NotAuthorized => "not-authorized",
            NotWellFormed => "not-well-formed",
            PolicyViolation => "policy-violation",
            RemoteConnectionFailed => "remote-connection-failed",
            ResourceConstraint => "resource-constraint",
            RestrictedXml => "restricted-xml",
            SystemShutdown => "system-shutdown",
            UndefinedCondition => "undefined-condition",
            UnsupportedEncoding => "unsupported-encoding",
            UnsupportedStanzaType => "unsupported-stanza-type",
            UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error><condition/><text/></stream:error>`.
    pub fn element(self, text: Option<&str>) -> Element {
        let mut e = Element::new("error", ns::STREAMS)
            .child(Element::new(self.as_str(), ns::STREAM_ERRORS));
        if let Some(text) = text {
            e.push(
                Element::new("text", ns::STREAM_ERRORS)
                    .attr("xml:lang", "en")
                    .text(text),
            );
        }
        e
    }
}

/// Splits a get/set IQ into its type and single payload; `None` when it is not a well-formed
/// request (the router answers those with `bad-request`).
pub fn request_parts(el: &Element) -> Option<(IqType, &Element)> {
    let kind = IqType::parse(el.get_attr("type")?)?;
    let mut children = el.elements();
    let payload = children.next()?;
    if children.next().is_some() {
        return None;
    }
    Some((kind, payload))
}

/// The `to` of a stanza, parsed; `Err` when present but malformed.
pub fn parse_to(el: &Element) -> Result<Option<Jid>, jid::Error> {
    match el.get_attr("to") {
        None => Ok(None),
        Some(s) => prepared(s).map(Some),
    }
}

/// Addresses parsed lately, by their text: the same few recipients come back stanza after
/// stanza, and `Jid::new` (stringprep of each part) cost ~1,900 instructions each time, 5% of
/// the main thread in the 50-pair flood. Only valid addresses are kept, at most
/// [`PREPARED_MAX`]; when full the cache starts over (a sender of many different addresses
/// only costs the parsing it would have cost anyway).
const PREPARED_MAX: usize = 4096;

thread_local! {
    static PREPARED: std::cell::RefCell<foldhash::HashMap<Box<str>, Jid>> =
        std::cell::RefCell::new(foldhash::HashMap::default());
}

fn prepared(s: &str) -> Result<Jid, jid::Error> {
    if let Some(j) = PREPARED.with_borrow(|m| m.get(s).cloned()) {
        return Ok(j);
    }
    let j = Jid::new(s)?;
    PREPARED.with_borrow_mut(|m| {
        if m.len() >= PREPARED_MAX {
            m.clear();
        }
        m.insert(s.into(), j.clone());
    });
    Ok(j)
}

pub fn stanza_error(el: &Element, cond: Condition, text: &str) -> Option<Element> {
    error_reply(el, cond.default_type(), cond, Some(text))
}

pub fn modify_error(el: &Element, cond: Condition) -> Option<Element> {
    error_reply(el, ErrorType::Modify, cond, None)
}

/// A stanza error as a value (RFC 6120 §8.3): what a handler returns with `?` and the IQ
/// machinery turns into the error answer. An application-specific condition (XEP-0060's
/// `<precondition-not-met/>`, say) travels with it.
#[derive(Clone, Debug, PartialEq)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub cond: Condition,
    pub text: std::borrow::Cow<'static, str>,
    /// An application-specific condition element, added after the defined one (boxed: errors
    /// travel in `Result`s and should stay small).
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// `cond` with its usual type.
    pub fn new(cond: Condition, text: impl Into<std::borrow::Cow<'static, str>>) -> StanzaError {
        StanzaError {
            kind: cond.default_type(),
            cond,
            text: text.into(),
            app: None,
        }
    }

    /// The same with another error type.
    pub fn typed(mut self, kind: ErrorType) -> StanzaError {
        self.kind = kind;
        self
    }

    /// The same with an application-specific condition.
    pub fn with_app(mut self, app: Element) -> StanzaError {
        self.app = Some(Box::new(app));
        self
    }

    /// The `<error/>` element.
    pub fn element(&self) -> Element {
        let mut err = error_element(self.kind, self.cond, Some(&self.text));
        if let Some(app) = &self.app {
            err.push(Element::clone(app));
        }
        err
    }
}

impl From<Condition> for StanzaError {
    fn from(cond: Condition) -> StanzaError {
        StanzaError::new(cond, "")
    }
}

impl From<crate::store::StoreError> for StanzaError {
    /// Logged here, answered `internal-server-error` (the details stay in the log).
    fn from(e: crate::store::StoreError) -> StanzaError {
        tracing::error!("store error: {e}");
        StanzaError::new(Condition::InternalServerError, "")
    }
}

/// What an IQ handler returns: the result's payload (or none), or the error to answer with.
pub type IqResult = Result<Option<Element>, StanzaError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn to(s: &str) -> Element {
        Element::stanza("message").attr("to", s)
    }

    /// The cache of parsed addresses answers like `Jid::new`, twice, and stays bounded.
    #[test]
    fn parsed_addresses_are_cached_faithfully() {
        for _ in 0..2 {
            let j = parse_to(&to("Alice@Example.ORG/Phone")).unwrap().unwrap();
            assert_eq!(j, Jid::new("alice@example.org/Phone").unwrap());
            assert!(parse_to(&to("a@@b")).is_err());
            assert!(parse_to(&to("")).is_err());
        }
        assert_eq!(parse_to(&Element::stanza("message")).unwrap(), None);
        for n in 0..PREPARED_MAX + 10 {
            parse_to(&to(&format!("u{n}@example.org"))).unwrap();
        }
        assert!(PREPARED.with_borrow(|m| m.len()) <= PREPARED_MAX);
        assert_eq!(
            parse_to(&to("u1@example.org")).unwrap().unwrap().as_str(),
            "u1@example.org"
        );
    }
}
