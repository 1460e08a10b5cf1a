//! Just enough XML for a load generator: a streaming framer that cuts the server's byte stream
//! into stream headers and complete top-level elements (RFC 6120 §4.2, §4.4), and a tiny DOM
//! parser for the negotiation elements. Stanzas on the hot path (messages) are not parsed into a
//! tree; callers look at the raw bytes with [`start_attr`] and [`child_text_raw`].

use std::ops::Range;

use memchr::memmem;

/// What the framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `<stream:stream …>` (also after a stream restart).
    Header(Range<usize>),
    /// A complete top-level element.
    Element(Range<usize>),
    /// `</stream:stream>`.
    End,
}

/// Incremental framer over its own receive buffer.
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// End of the received data in `buf` (the rest is spare room).
    end: usize,
    /// Everything before this has been handed out and may be discarded.
    start: usize,
    /// Where scanning resumes.
    pos: usize,
    depth: u32,
    el_start: usize,
}

#[derive(Debug)]
pub struct XmlError(pub &'static str);

impl Framer {
    pub fn new() -> Framer {
        Framer {
            buf: Vec::with_capacity(4096),
            ..Default::default()
        }
    }

    /// Room to read into (at least `want` bytes); then call [`Framer::filled`].
    pub fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0
            && (self.start == self.end
                || self.start >= 32 * 1024
                || self.buf.len() - self.end < want)
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.pos -= self.start;
            self.el_start = self.el_start.saturating_sub(self.start);
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Keeps `n` bytes read into the room from [`Framer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }

    pub fn slice(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// The next frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, XmlError> {
        let buf = &self.buf[..self.end];
        let len = buf.len();
        loop {
            let Some(i) = memchr::memchr(b'<', &buf[self.pos..]) else {
                if self.depth == 0 && buf[self.pos..].iter().any(|c| !c.is_ascii_whitespace()) {
                    return Err(XmlError("text at stream level"));
                }
                self.pos = len;
                if self.depth == 0 {
                    self.start = len;
                }
                return Ok(None);
            };
            let lt = self.pos + i;
            let rest = &buf[lt..];
            if rest.len() < 2 {
                self.pos = lt;
                return Ok(None);
            }
            // Markup that is not an element: skip it whole.
            let skip_until = match rest[1] {
                b'?' => Some(&b"?>"[..]),
                b'!' if rest.len() < 9 => {
                    self.pos = lt;
                    return Ok(None);
                }
                b'!' if rest.starts_with(b"<!--") => Some(&b"-->"[..]),
                b'!' if rest.starts_with(b"<![CDATA[") => Some(&b"]]>"[..]),
                b'!' => return Err(XmlError("DTD or unknown markup")),
                _ => None,
            };
            if let Some(end) = skip_until {
                match memmem::find(&rest[2..], end) {
                    Some(k) => {
                        self.pos = lt + 2 + k + end.len();
                        continue;
                    }
                    None => {
                        self.pos = lt;
                        return Ok(None);
                    }
                }
            }
            // A tag: find its '>' outside quoted attribute values.
            let mut quote = 0u8;
            let mut gt = None;
            for (k, &c) in rest.iter().enumerate().skip(1) {
                if quote != 0 {
                    if c == quote {
                        quote = 0;
                    }
                } else if c == b'"' || c == b'\'' {
                    quote = c;
                } else if c == b'>' {
                    gt = Some(k);
                    break;
                }
            }
            let Some(gt) = gt else {
                self.pos = lt;
                return Ok(None);
            };
            let tag_end = lt + gt + 1;
            self.pos = tag_end;
            if rest[1] == b'/' {
                if self.depth == 0 {
                    self.start = tag_end;
                    return Ok(Some(Frame::End));
                }
                self.depth -= 1;
                if self.depth == 0 {
                    self.start = tag_end;
                    return Ok(Some(Frame::Element(self.el_start..tag_end)));
                }
            } else if rest[gt - 1] == b'/' {
                if self.depth == 0 {
                    self.start = tag_end;
                    return Ok(Some(Frame::Element(lt..tag_end)));
                }
            } else {
                if self.depth == 0 {
                    let name = tag_name(&rest[1..gt]);
                    if name == b"stream" || name.ends_with(b":stream") {
                        self.start = tag_end;
                        return Ok(Some(Frame::Header(lt..tag_end)));
                    }
                    self.el_start = lt;
                }
                self.depth += 1;
                if self.depth > 64 {
                    return Err(XmlError("too deep"));
                }
            }
        }
    }
}

fn tag_name(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .position(|c| c.is_ascii_whitespace() || *c == b'/' || *c == b'>')
        .unwrap_or(s.len());
    &s[..end]
}

/// The local name of the first tag in `el` (prefix stripped).
#[cfg(test)]
pub fn local_name(el: &[u8]) -> &[u8] {
    let n = tag_name(el.get(1..).unwrap_or_default());
    match n.iter().rposition(|c| *c == b':') {
        Some(i) => &n[i + 1..],
        None => n,
    }
}

/// An attribute of the first start tag, unescaped only if it needs it.
pub fn start_attr(el: &[u8], name: &str) -> Option<String> {
    let gt = {
        let mut quote = 0u8;
        let mut found = None;
        for (k, &c) in el.iter().enumerate() {
            if quote != 0 {
                if c == quote {
                    quote = 0;
                }
            } else if c == b'"' || c == b'\'' {
                quote = c;
            } else if c == b'>' {
                found = Some(k);
                break;
            }
        }
        found?
    };
    let mut p = Parser {
        s: &el[..=gt],
        i: 1,
    };
    p.name();
    loop {
        p.ws();
        match p.peek() {
            Some(b'/') | Some(b'>') | None => return None,
            _ => {}
        }
        let (k, v) = p.attr()?;
        if k == name {
            return Some(v);
        }
    }
}

/// The text of the first `<child>…</child>` anywhere in `el`, raw (no unescaping); for the hot
/// path where the content is known to need none.
pub fn child_text_raw<'a>(el: &'a [u8], child: &str) -> Option<&'a [u8]> {
    let open = format!("<{child}");
    let mut from = 0;
    loop {
        let i = from + memmem::find(&el[from..], open.as_bytes())?;
        let after = *el.get(i + open.len())?;
        if after == b'>' || after == b' ' || after.is_ascii_whitespace() || after == b'/' {
            let gt = i + memchr::memchr(b'>', &el[i..])?;
            if el[gt - 1] == b'/' {
                return Some(&[]);
            }
            let close = format!("</{child}>");
            let end = gt + 1 + memmem::find(&el[gt + 1..], close.as_bytes())?;
            return Some(&el[gt + 1..end]);
        }
        from = i + 1;
    }
}

/// A parsed element: local names only, attributes as written (with prefixes).
#[derive(Debug, Default, Clone)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<El>,
    pub text: String,
}

impl El {
    pub fn parse(s: &[u8]) -> Result<El, XmlError> {
        let mut p = Parser { s, i: 0 };
        p.element(0)
    }

    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn name(&mut self) -> String {
        let st = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() || c == b'/' || c == b'>' || c == b'=' {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[st..self.i]).into_owned()
    }

    fn attr(&mut self) -> Option<(String, String)> {
        let k = self.name();
        self.ws();
        if self.peek()? != b'=' {
            return None;
        }
        self.i += 1;
        self.ws();
        let q = self.peek()?;
        if q != b'"' && q != b'\'' {
            return None;
        }
        self.i += 1;
        let st = self.i;
        let end = st + memchr::memchr(q, &self.s[st..])?;
        self.i = end + 1;
        Some((k, unescape(&self.s[st..end])))
    }

    fn element(&mut self, depth: u32) -> Result<El, XmlError> {
        if depth > 64 {
            return Err(XmlError("too deep"));
        }
        self.ws();
        if self.peek() != Some(b'<') {
            return Err(XmlError("expected <"));
        }
        self.i += 1;
        let qname = self.name();
        let name = match qname.rfind(':') {
            Some(i) => qname[i + 1..].to_owned(),
            None => qname,
        };
        let mut el = El {
            name,
            ..Default::default()
        };
        loop {
            self.ws();
            match self.peek() {
                Some(b'/') => {
                    self.i += 2;
                    return Ok(el);
                }
                Some(b'>') => {
                    self.i += 1;
                    break;
                }
                Some(_) => {
                    let a = self.attr().ok_or(XmlError("bad attribute"))?;
                    el.attrs.push(a);
                }
                None => return Err(XmlError("truncated tag")),
            }
        }
        loop {
            let st = self.i;
            let lt = st + memchr::memchr(b'<', &self.s[st..]).ok_or(XmlError("truncated"))?;
            if lt > st {
                el.text.push_str(&unescape(&self.s[st..lt]));
            }
            self.i = lt;
            let rest = &self.s[lt..];
            if rest.starts_with(b"</") {
                let gt = memchr::memchr(b'>', rest).ok_or(XmlError("truncated"))?;
                self.i = lt + gt + 1;
                return Ok(el);
            } else if rest.starts_with(b"<!--") {
                let k = memmem::find(rest, b"-->").ok_or(XmlError("truncated"))?;
                self.i = lt + k + 3;
            } else if rest.starts_with(b"<![CDATA[") {
                let k = memmem::find(rest, b"]]>").ok_or(XmlError("truncated"))?;
                el.text.push_str(&String::from_utf8_lossy(&rest[9..k]));
                self.i = lt + k + 3;
            } else if rest.starts_with(b"<?") {
                let k = memmem::find(rest, b"?>").ok_or(XmlError("truncated"))?;
                self.i = lt + k + 2;
            } else {
                let child = self.element(depth + 1)?;
                el.children.push(child);
            }
        }
    }
}

/// Replaces the predefined and numeric entities.
pub fn unescape(s: &[u8]) -> String {
    if memchr::memchr(b'&', s).is_none() {
        return String::from_utf8_lossy(s).into_owned();
    }
    let text = String::from_utf8_lossy(s);
    let mut out = String::with_capacity(text.len());
    let mut rest = &*text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';') else { break };
        let ent = &rest[1..semi];
        let c = match ent {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['<', '>', '&', '\'', '"']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Framer, s: &[u8]) {
        let sp = f.spare(s.len());
        sp[..s.len()].copy_from_slice(s);
        f.filled(s.len());
    }

    #[test]
    fn frames_split_input() {
        let all = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' a='x>y'> <stream:features><mechanisms xmlns='m'><mechanism>PLAIN</mechanism></mechanisms></stream:features><a/><!-- c --><message to='x'><body>hi &amp; <![CDATA[<x>]]></body></message></stream:stream>";
        for split in 0..all.len() {
            let mut f = Framer::new();
            let mut got = Vec::new();
            for part in [&all[..split], &all[split..]] {
                feed(&mut f, part);
                while let Some(fr) = f.next_frame().unwrap() {
                    got.push(match fr {
                        Frame::Header(r) => format!("H{}", local_name(f.slice(r)).len()),
                        Frame::Element(r) => {
                            String::from_utf8(local_name(f.slice(r)).to_vec()).unwrap()
                        }
                        Frame::End => "END".into(),
                    });
                }
            }
            assert_eq!(
                got,
                ["H6", "features", "a", "message", "END"],
                "split {split}"
            );
        }
    }

    #[test]
    fn parses_elements() {
        let e = El::parse(b"<iq type='result' id=\"b\"><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>a@b/c&amp;d</jid></bind></iq>").unwrap();
        assert_eq!(e.name, "iq");
        assert_eq!(e.attr("id"), Some("b"));
        assert_eq!(
            e.child("bind").unwrap().child("jid").unwrap().text,
            "a@b/c&d"
        );
        let m = b"<message from='a' type=\"error\"><body>x y</body></message>";
        assert_eq!(start_attr(m, "type").as_deref(), Some("error"));
        assert_eq!(child_text_raw(m, "body"), Some(&b"x y"[..]));
        assert_eq!(local_name(b"<stream:error>"), b"error");
    }
}
