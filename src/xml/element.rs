//! A small stanza tree: elements with a resolved namespace, attributes and children.
//!
//! Hand-written rather than `minidom` because minidom now sits on rxml while the project's card
//! fixes quick-xml, and because the server needs exactly two things from a tree: lookups by
//! (namespace, name) and serialisation that omits namespace declarations a parent already made.

use std::fmt;

use super::chars::write_escaped;

use super::ns;

/// A child of an element: another element or character data (already unescaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element whose name is resolved to (namespace, local name).
///
/// Attributes keep their qualified names as written (`xml:lang`, `xmlns:foo` for prefixes a
/// payload declared), so a stanza routed through the server keeps what the sender meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// A `jabber:client` stanza element (`iq`, `message`, `presence`).
    pub fn stanza(name: &str) -> Element {
        Element::new(name, ns::CLIENT)
    }

    /// Builder: sets an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: appends a child element.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends character data.
    pub fn text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_owned(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// Concatenated character data of this element's direct children.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Text of a direct child, trimmed; `None` when the child is absent.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.get_child(name, ns)
            .map(|c| c.text_content().trim().to_owned())
    }

    /// Serialises as it would appear inside a parent in namespace `parent_ns`.
    ///
    /// Elements in the streams namespace use the `stream:` prefix that every stream header
    /// declares; everything else uses a default namespace declared only where it changes.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        self.write_with(out, parent_ns, None)
    }

    /// Serialises like [`Element::write_to`] as if `last` were appended to the children: a
    /// stamped copy of a stanza without cloning the stanza (the sender's archive row).
    pub fn write_with_child(&self, out: &mut Vec<u8>, parent_ns: &str, last: &Element) {
        self.write_with(out, parent_ns, Some(last))
    }

    fn write_with(&self, out: &mut Vec<u8>, parent_ns: &str, last: Option<&Element>) {
        let prefixed = self.ns == ns::STREAMS;
        out.push(b'<');
        if prefixed {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(self.name.as_bytes());
        if !prefixed && self.ns != parent_ns {
            write_attr(out, "xmlns", &self.ns);
        }
        for (k, v) in &self.attrs {
            write_attr(out, k, v);
        }
        if self.children.is_empty() && last.is_none() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        // Children of a prefixed element inherit the stream's default namespace.
        let inner_ns = if prefixed { parent_ns } else { &self.ns };
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, inner_ns),
                // The last line of defence: whatever put text here (a legacy network, a torrent
                // name, an old archive row), nothing outside XML 1.0 leaves the server.
                Node::Text(t) => write_escaped(out, t, false),
            }
        }
        if let Some(e) = last {
            e.write_to(out, inner_ns);
        }
        out.extend_from_slice(b"</");
        if prefixed {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// Serialises as a top-level stanza of a `jabber:client` stream.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_to(&mut out, ns::CLIENT);
        out
    }
}

fn write_attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    write_escaped(out, value, true);
    out.push(b'"');
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_with_child_is_write_of_the_pushed_copy() {
        let sid = Element::new("stanza-id", ns::SID)
            .attr("id", "x")
            .attr("by", "a@b");
        for el in [
            Element::stanza("message")
                .attr("to", "a&b@x")
                .child(Element::new("body", ns::CLIENT).text("hi")),
            Element::stanza("message"),
        ] {
            let mut copy = el.clone();
            copy.push(sid.clone());
            for parent in ["", ns::CLIENT] {
                let mut out = Vec::new();
                el.write_with_child(&mut out, parent, &sid);
                let mut want = Vec::new();
                copy.write_to(&mut want, parent);
                assert_eq!(out, want);
            }
        }
    }

    #[test]
    fn serialises_with_escaping_and_minimal_namespaces() {
        let el = Element::stanza("message")
            .attr("to", "a&b@x")
            .child(Element::new("body", ns::CLIENT).text("1 < 2 & \"q\""))
            .child(Element::new("ping", ns::PING));
        assert_eq!(
            el.to_string(),
            "<message to=\"a&amp;b@x\"><body>1 &lt; 2 &amp; \"q\"</body><ping xmlns=\"urn:xmpp:ping\"/></message>"
        );
    }

    #[test]
    fn stream_namespace_uses_prefix() {
        let el =
            Element::new("features", ns::STREAMS).child(Element::new("auth", ns::IQ_AUTH_FEATURE));
        assert_eq!(
            el.to_string(),
            "<stream:features><auth xmlns=\"http://jabber.org/features/iq-auth\"/></stream:features>"
        );
    }

    #[test]
    fn never_writes_characters_outside_xml() {
        let el = Element::stanza("message")
            .attr("to", "a\u{1}b@x")
            .child(Element::new("body", ns::CLIENT).text("ring\u{7} \u{3}4red\u{FFFF}!"));
        let out = String::from_utf8(el.to_bytes()).unwrap();
        assert_eq!(
            out,
            "<message to=\"ab@x\"><body>ring 4red!</body></message>"
        );
    }
}
