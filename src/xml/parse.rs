//! Parses one framed stream header or top-level element with quick-xml into an [`Element`],
//! resolving namespace prefixes against the declarations the stream header made.

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

use super::chars::{has_forbidden_bytes, is_xml_char};
use super::element::{Element, Node};
use super::ns;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("undeclared namespace prefix {0:?}")]
    UnboundPrefix(String),
    /// A limit on the shape of an element (attributes, declarations): a policy violation.
    #[error("{0}")]
    Limit(&'static str),
}

impl From<quick_xml::Error> for ParseError {
    fn from(e: quick_xml::Error) -> Self {
        ParseError::NotWellFormed(e.to_string())
    }
}

impl From<quick_xml::events::attributes::AttrError> for ParseError {
    fn from(e: quick_xml::events::attributes::AttrError) -> Self {
        ParseError::NotWellFormed(e.to_string())
    }
}

/// At most this many namespace declarations on one element (Prosody and ejabberd have no such
/// cap; no real stanza comes near it).
pub const MAX_DECLARATIONS: usize = 32;
/// At most this many attributes on one element: quick-xml's duplicate check is quadratic in it.
pub const MAX_ATTRIBUTES: usize = 64;

/// Namespace bindings in scope: each prefix maps to a stack of URIs (innermost last), so a
/// lookup is one map probe however deep the element and however many declarations enclose it.
/// The default namespace (the empty prefix, declared on nearly every payload) has a stack of
/// its own, so the common case does not even hash.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    default: Vec<String>,
    prefixed: HashMap<String, Vec<String>>,
    /// The prefixes in declaration order (`None` for the default), to undo an element's
    /// declarations when it ends.
    log: Vec<Option<String>>,
}

impl Scope {
    pub fn new() -> Scope {
        Scope::default()
    }

    /// A scope with only a default namespace (to re-read stored stanzas).
    pub fn with_default(uri: &str) -> Scope {
        let mut s = Scope::new();
        s.declare("", uri.to_owned());
        s
    }

    /// The same bindings with the default namespace replaced by `uri`: a server stream's
    /// stanzas (`jabber:server`) are read as `jabber:client` ones, the namespace they have
    /// inside the server, so nothing downstream tells them apart.
    pub fn with_default_replaced(&self, uri: &str) -> Scope {
        let mut s = self.clone();
        match s.default.last_mut() {
            Some(d) => *d = uri.to_owned(),
            None => s.declare("", uri.to_owned()),
        }
        s
    }

    /// The URI bound to `prefix` (`""` for the default namespace).
    pub fn get(&self, prefix: &str) -> Option<&str> {
        if prefix.is_empty() {
            self.default.last()
        } else {
            self.prefixed.get(prefix).and_then(|v| v.last())
        }
        .map(String::as_str)
    }

    fn declare(&mut self, prefix: &str, uri: String) {
        if prefix.is_empty() {
            self.default.push(uri);
            self.log.push(None);
        } else {
            match self.prefixed.get_mut(prefix) {
                Some(stack) => stack.push(uri),
                None => {
                    self.prefixed.insert(prefix.to_owned(), vec![uri]);
                }
            }
            self.log.push(Some(prefix.to_owned()));
        }
    }

    /// Undoes the last `n` declarations.
    fn undo(&mut self, n: usize) {
        for _ in 0..n {
            match self.log.pop() {
                Some(None) => {
                    self.default.pop();
                }
                Some(Some(p)) => {
                    if let Some(stack) = self.prefixed.get_mut(&p) {
                        stack.pop();
                    }
                }
                None => return,
            }
        }
    }
}

/// What a stream header said (RFC 6120 §4.7).
#[derive(Debug, Clone, Default)]
pub struct StreamHeader {
    /// Resolved namespace of the root element (must be the streams namespace).
    pub ns: String,
    pub name: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
    /// The stream id (set by the receiving entity; server-to-server dialback needs it).
    pub id: Option<String>,
    /// Declarations made on the header, inherited by every stanza of the stream.
    pub scope: Scope,
}

impl StreamHeader {
    /// The default namespace of the stream's content (`jabber:client` for clients).
    pub fn content_ns(&self) -> Option<&str> {
        self.scope.get("")
    }
}

fn check_chars(text: &str) -> Result<(), ParseError> {
    if has_forbidden_bytes(text.as_bytes()) {
        return Err(ParseError::NotWellFormed(
            "character not allowed in XML".into(),
        ));
    }
    Ok(())
}

fn split_qname(q: &str) -> (&str, &str) {
    match q.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", q),
    }
}

fn attr_value(a: &Attribute<'_>) -> Result<String, ParseError> {
    match a.normalized_value(XmlVersion::Implicit1_0) {
        // Character references may have produced what the raw bytes could not hold. A value
        // borrowed from the input is clean: every input is checked whole before parsing.
        Ok(v) => {
            if let std::borrow::Cow::Owned(owned) = &v {
                check_chars(owned)?;
            }
            Ok(v.into_owned())
        }
        Err(quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(..))) => {
            Err(ParseError::Restricted("entity reference"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Builds an element from a start tag: pushes its declarations onto `scope` (the caller undoes
/// them when the element ends) and resolves its name against `scope`, then `outer` (the
/// stream's declarations, which are not copied for every stanza).
fn open(
    start: &BytesStart<'_>,
    scope: &mut Scope,
    outer: &Scope,
) -> Result<(Element, usize), ParseError> {
    // On an error the caller drops `scope` with the whole parse, so nothing is undone here.
    let mut attrs = Vec::new();
    let mut declared = 0;
    for (i, a) in start.attributes().with_checks(true).enumerate() {
        if i == MAX_ATTRIBUTES {
            return Err(ParseError::Limit("too many attributes on one element"));
        }
        let a = a?;
        let key: &str = a.key.as_ref();
        let value = attr_value(&a)?;
        let prefix = if key == "xmlns" {
            Some("")
        } else {
            key.strip_prefix("xmlns:")
        };
        if let Some(prefix) = prefix {
            if declared == MAX_DECLARATIONS {
                return Err(ParseError::Limit(
                    "too many namespace declarations on one element",
                ));
            }
            declared += 1;
            if prefix.is_empty() {
                scope.declare(prefix, value);
                continue;
            }
            scope.declare(prefix, value.clone());
        }
        attrs.push((key.to_owned(), value));
    }
    let qname = start.name();
    let (prefix, local) = split_qname(qname.as_ref());
    let ns = match prefix {
        "xml" => ns::XML,
        _ => scope
            .get(prefix)
            .or_else(|| outer.get(prefix))
            .ok_or_else(|| ParseError::UnboundPrefix(prefix.to_owned()))?,
    };
    Ok((
        Element {
            name: local.to_owned(),
            ns: ns.to_owned(),
            attrs,
            children: Vec::new(),
        },
        declared,
    ))
}

fn reader(input: &[u8]) -> Reader<&[u8]> {
    let mut r = Reader::from_reader(input);
    let cfg = r.config_mut();
    cfg.trim_text(false);
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    r
}

/// Parses a stream header start tag (`<stream:stream …>`).
pub fn stream_header(input: &[u8]) -> Result<StreamHeader, ParseError> {
    if has_forbidden_bytes(input) {
        return Err(ParseError::NotWellFormed(
            "character not allowed in XML".into(),
        ));
    }
    let mut r = reader(input);
    loop {
        match r.read_event()? {
            Event::Start(start) => {
                let mut scope = Scope::new();
                let (el, _) = open(&start, &mut scope, &Scope::new())?;
                let mut h = StreamHeader {
                    ns: el.ns,
                    name: el.name,
                    scope,
                    ..StreamHeader::default()
                };
                for (k, v) in el.attrs {
                    match k.as_str() {
                        "to" => h.to = Some(v),
                        "from" => h.from = Some(v),
                        "version" => h.version = Some(v),
                        "xml:lang" => h.lang = Some(v),
                        "id" => h.id = Some(v),
                        _ => {}
                    }
                }
                return Ok(h);
            }
            Event::Decl(_) | Event::Text(_) => continue,
            _ => return Err(ParseError::NotWellFormed("expected a stream header".into())),
        }
    }
}

/// Parses one complete top-level element, with the stream's declarations in scope.
pub fn element(input: &[u8], stream_scope: &Scope) -> Result<Element, ParseError> {
    if has_forbidden_bytes(input) {
        return Err(ParseError::NotWellFormed(
            "character not allowed in XML".into(),
        ));
    }
    let mut r = reader(input);
    // Declarations made inside the element; the stream's are looked up after them.
    let mut scope = Scope::new();
    // (element, number of declarations it pushed)
    let mut stack: Vec<(Element, usize)> = Vec::new();
    loop {
        match r.read_event()? {
            Event::Start(start) => {
                let opened = open(&start, &mut scope, stream_scope)?;
                stack.push(opened);
            }
            Event::Empty(start) => {
                let (el, declared) = open(&start, &mut scope, stream_scope)?;
                scope.undo(declared);
                match stack.last_mut() {
                    Some((parent, _)) => parent.children.push(Node::Element(el)),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let Some((el, declared)) = stack.pop() else {
                    return Err(ParseError::NotWellFormed("unbalanced end tag".into()));
                };
                scope.undo(declared);
                match stack.last_mut() {
                    Some((parent, _)) => parent.children.push(Node::Element(el)),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content())?,
            Event::CData(c) => {
                push_text(&mut stack, &c.xml10_content())?;
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                    Ok(Some(_)) => {
                        return Err(ParseError::NotWellFormed(
                            "character reference to a character not allowed in XML".into(),
                        ));
                    }
                    Ok(None) => resolve_predefined_entity(&r.xml10_content())
                        .ok_or(ParseError::Restricted("entity reference"))?
                        .to_owned(),
                    Err(e) => return Err(e.into()),
                };
                push_text(&mut stack, &text)?;
            }
            Event::Comment(_) => return Err(ParseError::Restricted("comment")),
            Event::PI(_) | Event::Decl(_) => {
                return Err(ParseError::Restricted("processing instruction"));
            }
            Event::DocType(_) => return Err(ParseError::Restricted("DTD")),
            Event::Eof => return Err(ParseError::NotWellFormed("unexpected end".into())),
        }
    }
}

fn push_text(stack: &mut [(Element, usize)], text: &str) -> Result<(), ParseError> {
    let Some((el, _)) = stack.last_mut() else {
        return Err(ParseError::NotWellFormed("text outside an element".into()));
    };
    // Merge adjacent runs (quick-xml splits text around entity references).
    if let Some(Node::Text(prev)) = el.children.last_mut() {
        prev.push_str(text);
    } else {
        el.children.push(Node::Text(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_scope() -> Scope {
        let mut s = Scope::new();
        s.declare("", ns::CLIENT.to_owned());
        s.declare("stream", ns::STREAMS.to_owned());
        s
    }

    #[test]
    fn header() {
        let h = stream_header(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>").unwrap();
        assert_eq!(h.ns, ns::STREAMS);
        assert_eq!(h.name, "stream");
        assert_eq!(h.to.as_deref(), Some("localhost"));
        assert_eq!(h.lang.as_deref(), Some("en"));
        assert_eq!(h.content_ns(), Some(ns::CLIENT));
    }

    #[test]
    fn element_with_entities_prefixes_and_lang() {
        let el = element(
            b"<message xml:lang='de' to='a@b'><body>x &amp; y &#x263A; &lt;</body><p:x xmlns:p='urn:p' p:a='1'/></message>",
            &client_scope(),
        )
        .unwrap();
        assert!(el.is("message", ns::CLIENT));
        assert_eq!(el.get_attr("xml:lang"), Some("de"));
        assert_eq!(
            el.child_text("body", ns::CLIENT).unwrap(),
            "x & y \u{263A} <"
        );
        let x = el.get_child("x", "urn:p").unwrap();
        assert_eq!(x.get_attr("p:a"), Some("1"));
        // round trip keeps the meaning
        let again = element(&el.to_bytes(), &client_scope()).unwrap();
        assert_eq!(again, el);
    }

    #[test]
    fn inner_declarations_shadow_the_streams() {
        let el = element(
            b"<message><x xmlns='urn:x'><y/><stream:z/></x><body/></message>",
            &client_scope(),
        )
        .unwrap();
        let x = el.get_child("x", "urn:x").unwrap();
        assert!(x.get_child("y", "urn:x").is_some());
        assert!(x.get_child("z", ns::STREAMS).is_some());
        assert!(el.get_child("body", ns::CLIENT).is_some());
    }

    #[test]
    fn refuses_custom_entities_and_unbound_prefixes() {
        assert_eq!(
            element(b"<message><body>&xxe;</body></message>", &client_scope()),
            Err(ParseError::Restricted("entity reference"))
        );
        assert!(matches!(
            element(b"<q:message/>", &client_scope()),
            Err(ParseError::UnboundPrefix(_))
        ));
        assert!(element(b"<message><body></message>", &client_scope()).is_err());
    }

    #[test]
    fn refuses_characters_outside_xml_char() {
        for bad in [
            &b"<message><body>bell \x07</body></message>"[..],
            b"<message><body>nul \x00</body></message>",
            b"<message><body>&#x7;</body></message>",
            b"<message><body>&#0;</body></message>",
            b"<message><body>&#xD800;</body></message>",
            b"<message><body>&#xFFFE;</body></message>",
            b"<message><body>\xEF\xBF\xBF</body></message>",
            b"<message to='a&#x1b;b'/>",
            b"<message to='a\x1bb'/>",
        ] {
            assert!(
                matches!(
                    element(bad, &client_scope()),
                    Err(ParseError::NotWellFormed(_))
                ),
                "{bad:?}"
            );
        }
        assert!(stream_header(b"<stream:stream xmlns:stream='x' to='a\x01'>").is_err());
        let ok = element(
            b"<message><body>tab\tlf\ncr\r &#x9; \xEF\xBF\xBD \xF0\x9F\x98\x80</body></message>",
            &client_scope(),
        )
        .unwrap();
        assert!(
            ok.child_text("body", ns::CLIENT)
                .unwrap()
                .contains('\u{1F600}')
        );
    }

    #[test]
    fn caps_attributes_and_declarations_per_element() {
        let attrs: String = (0..MAX_ATTRIBUTES).map(|i| format!(" a{i}='x'")).collect();
        assert!(element(format!("<message{attrs}/>").as_bytes(), &client_scope()).is_ok());
        assert_eq!(
            element(
                format!("<message{attrs} z='1'/>").as_bytes(),
                &client_scope()
            ),
            Err(ParseError::Limit("too many attributes on one element"))
        );
        let decls: String = (0..=MAX_DECLARATIONS)
            .map(|i| format!(" xmlns:p{i}='urn:{i}'"))
            .collect();
        assert_eq!(
            element(format!("<message{decls}/>").as_bytes(), &client_scope()),
            Err(ParseError::Limit(
                "too many namespace declarations on one element"
            ))
        );
    }

    /// Deep nesting with declarations at every level: lookups stay one probe, and each
    /// element's declarations are undone when it ends.
    #[test]
    fn scope_is_restored_after_each_element() {
        let mut xml = String::from("<message>");
        for i in 0..30 {
            xml.push_str(&format!("<x xmlns='urn:{i}' xmlns:p='urn:p{i}'>"));
        }
        xml.push_str("<p:leaf/>");
        for _ in 0..30 {
            xml.push_str("</x>");
        }
        xml.push_str("<p:after xmlns:p='urn:last'/><body/></message>");
        let el = element(xml.as_bytes(), &client_scope()).unwrap();
        let mut x = el.get_child("x", "urn:0").unwrap();
        for i in 1..30 {
            x = x.get_child("x", &format!("urn:{i}")).unwrap();
        }
        assert!(x.get_child("leaf", "urn:p29").is_some());
        assert!(el.get_child("after", "urn:last").is_some());
        assert!(el.get_child("body", ns::CLIENT).is_some());
    }
}
