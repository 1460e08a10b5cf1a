//! Parses one framed stream header or top-level element with quick-xml into an [`Element`],
//! resolving namespace prefixes against the declarations the stream header made.

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use thiserror::Error;

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

/// Namespace bindings in scope: (prefix, uri); the empty prefix is the default namespace.
pub type Scope = Vec<(String, String)>;

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
    /// Declarations made on the header, inherited by every stanza of the stream.
    pub scope: Scope,
}

impl StreamHeader {
    /// The default namespace of the stream's content (`jabber:client` for clients).
    pub fn content_ns(&self) -> Option<&str> {
        lookup(&self.scope, "")
    }
}

fn lookup<'a>(scope: &'a Scope, prefix: &str) -> Option<&'a str> {
    scope
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| u.as_str())
}

fn split_qname(q: &str) -> (&str, &str) {
    match q.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", q),
    }
}

fn attr_value(a: &Attribute<'_>) -> Result<String, ParseError> {
    match a.normalized_value(XmlVersion::Implicit1_0) {
        Ok(v) => Ok(v.into_owned()),
        Err(quick_xml::Error::Escape(_)) => Err(ParseError::Restricted("entity reference")),
        Err(e) => Err(e.into()),
    }
}

/// Builds an element from a start tag: pushes its declarations onto `scope` (the caller pops
/// them when the element ends) and resolves its name against `scope`, then `outer` (the
/// stream's declarations, which are not copied for every stanza).
fn open(
    start: &BytesStart<'_>,
    scope: &mut Scope,
    outer: &Scope,
) -> Result<(Element, usize), ParseError> {
    let mut attrs = Vec::new();
    let mut declared = 0;
    for a in start.attributes().with_checks(true) {
        let a = a?;
        let key: &str = a.key.as_ref();
        let value = attr_value(&a)?;
        if key == "xmlns" {
            scope.push((String::new(), value));
            declared += 1;
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            scope.push((prefix.to_owned(), value.clone()));
            declared += 1;
            attrs.push((key.to_owned(), value));
        } else {
            attrs.push((key.to_owned(), value));
        }
    }
    let qname = start.name();
    let (prefix, local) = split_qname(qname.as_ref());
    let ns = match prefix {
        "xml" => ns::XML,
        _ => lookup(scope, prefix)
            .or_else(|| lookup(outer, prefix))
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
                scope.truncate(scope.len() - declared);
                match stack.last_mut() {
                    Some((parent, _)) => parent.children.push(Node::Element(el)),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let Some((el, declared)) = stack.pop() else {
                    return Err(ParseError::NotWellFormed("unbalanced end tag".into()));
                };
                scope.truncate(scope.len() - declared);
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
                    Ok(Some(c)) => c.to_string(),
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
        vec![
            (String::new(), ns::CLIENT.to_owned()),
            ("stream".to_owned(), ns::STREAMS.to_owned()),
        ]
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
}
