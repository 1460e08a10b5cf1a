//! Finds stanza boundaries in a non-blocking XMPP byte stream.
//!
//! quick-xml has no push (resumable) parser: given half a stanza it reports an error, and
//! re-parsing from the start on every read would be quadratic. So this small state machine
//! only *frames* — it walks each byte once, across reads, tracking tags, quotes and depth —
//! and hands every complete top-level element to quick-xml (see `parse.rs`) for real parsing.
//! It also enforces the limits RFC 6120 §11 and the config ask for before anything is buffered
//! without bound: stanza size, nesting depth, and no comments, processing instructions or
//! DTDs (restricted XML).

use std::ops::Range;

use thiserror::Error;

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Token {
    /// The stream header start tag, `<stream:stream …>`.
    StreamOpen(Range<usize>),
    /// One complete top-level element (a stanza or a negotiation element).
    Element(Range<usize>),
    /// `</stream:stream>`.
    StreamClose,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramerError {
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    #[error("elements nested deeper than {0}")]
    TooDeep(u32),
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("not well-formed: {0}")]
    NotWellFormed(&'static str),
    #[error("character data at stream level")]
    TextAtStreamLevel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Content,
    /// Just after `<`.
    TagOpen,
    StartTag {
        quote: u8,
        slash: bool,
    },
    EndTag,
    XmlDecl,
    CData,
}

/// Incremental framer. Positions are offsets into the caller's buffer; when the caller drops
/// consumed bytes from the front it calls [`Framer::shift`].
#[derive(Debug)]
pub struct Framer {
    state: State,
    pos: usize,
    depth: u32,
    tag_start: usize,
    element_start: usize,
    header_seen: bool,
    max_bytes: usize,
    max_depth: u32,
    /// Names of the open elements, concatenated, so a mismatched end tag is caught here
    /// rather than leaving the framer waiting for an end that never comes.
    names: Vec<u8>,
    name_starts: Vec<usize>,
}

impl Framer {
    pub fn new(max_bytes: usize, max_depth: u32) -> Framer {
        Framer {
            state: State::Content,
            pos: 0,
            depth: 0,
            tag_start: 0,
            element_start: 0,
            header_seen: false,
            max_bytes,
            max_depth,
            names: Vec::new(),
            name_starts: Vec::new(),
        }
    }

    /// Starts over for a stream restart (after STARTTLS or SASL), at buffer offset `at`.
    pub fn restart(&mut self, at: usize) {
        *self = Framer {
            pos: at,
            ..Framer::new(self.max_bytes, self.max_depth)
        };
    }

    /// The caller removed `n` bytes from the front of its buffer.
    pub fn shift(&mut self, n: usize) {
        self.pos -= n;
        self.tag_start = self.tag_start.saturating_sub(n);
        self.element_start = self.element_start.saturating_sub(n);
    }

    /// Offset up to which the buffer holds nothing the framer still needs.
    pub fn consumed(&self) -> usize {
        match (self.state, self.depth) {
            (State::Content, 0 | 1) => self.pos,
            (_, 0 | 1) => self.tag_start,
            _ => self.element_start,
        }
    }

    /// True while a stanza (or tag) is partially received.
    pub fn in_progress(&self) -> bool {
        self.depth > 1 || self.state != State::Content
    }

    /// Scans forward and returns the next complete token, or `None` when more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Token>, FramerError> {
        while self.pos < buf.len() {
            self.check_size()?;
            match self.state {
                State::Content => {
                    let rest = &buf[self.pos..];
                    match memchr::memchr(b'<', rest) {
                        Some(i) => {
                            self.check_text(&rest[..i])?;
                            self.tag_start = self.pos + i;
                            self.pos += i + 1;
                            self.state = State::TagOpen;
                        }
                        None => {
                            self.check_text(rest)?;
                            self.pos = buf.len();
                        }
                    }
                }
                State::TagOpen => match buf[self.pos] {
                    b'/' => {
                        self.pos += 1;
                        self.state = State::EndTag;
                    }
                    b'?' => {
                        if self.header_seen || self.depth > 0 {
                            return Err(FramerError::Restricted("processing instruction"));
                        }
                        self.pos += 1;
                        self.state = State::XmlDecl;
                    }
                    b'!' => {
                        let rest = &buf[self.pos..];
                        if rest.len() < 8 {
                            // Decide once enough bytes are here to tell CDATA from the rest.
                            if !b"![CDATA[".starts_with(rest) {
                                return Err(self.bang_error(rest));
                            }
                            return Ok(None);
                        }
                        if rest.starts_with(b"![CDATA[") && self.depth >= 2 {
                            self.pos += 8;
                            self.state = State::CData;
                        } else {
                            return Err(self.bang_error(rest));
                        }
                    }
                    _ => {
                        self.state = State::StartTag {
                            quote: 0,
                            slash: false,
                        };
                        if self.depth == 1 {
                            self.element_start = self.tag_start;
                        }
                    }
                },
                State::StartTag { quote, slash } => {
                    if quote != 0 {
                        // Skip the attribute value in one step; the size check follows.
                        match memchr::memchr(quote, &buf[self.pos..]) {
                            Some(i) => {
                                self.pos += i + 1;
                                self.state = State::StartTag { quote: 0, slash };
                            }
                            None => self.pos = buf.len(),
                        }
                        continue;
                    }
                    let b = buf[self.pos];
                    self.pos += 1;
                    match b {
                        b'"' | b'\'' => {
                            self.state = State::StartTag {
                                quote: b,
                                slash: false,
                            }
                        }
                        b'/' => {
                            self.state = State::StartTag {
                                quote: 0,
                                slash: true,
                            }
                        }
                        b'>' => {
                            self.state = State::Content;
                            if !slash {
                                self.push_name(buf);
                            }
                            if let Some(tok) = self.start_tag_done(slash)? {
                                return Ok(Some(tok));
                            }
                        }
                        _ => {
                            self.state = State::StartTag {
                                quote: 0,
                                slash: false,
                            }
                        }
                    }
                }
                State::EndTag => match memchr::memchr(b'>', &buf[self.pos..]) {
                    Some(i) => {
                        self.pos += i + 1;
                        self.state = State::Content;
                        self.pop_name(buf)?;
                        if let Some(tok) = self.end_tag_done()? {
                            return Ok(Some(tok));
                        }
                    }
                    None => self.pos = buf.len(),
                },
                State::XmlDecl => match memchr::memmem::find(&buf[self.pos..], b"?>") {
                    Some(i) => {
                        let decl = &buf[self.tag_start..self.pos + i + 2];
                        if !decl.starts_with(b"<?xml ") && !decl.starts_with(b"<?xml?") {
                            return Err(FramerError::Restricted("processing instruction"));
                        }
                        self.pos += i + 2;
                        self.state = State::Content;
                    }
                    None => {
                        if buf.len() - self.tag_start > 1024 {
                            return Err(FramerError::TooLarge(1024));
                        }
                        // Keep the last byte in case it is the `?` of `?>`.
                        self.pos = buf.len().saturating_sub(1).max(self.pos);
                        return Ok(None);
                    }
                },
                State::CData => match memchr::memmem::find(&buf[self.pos..], b"]]>") {
                    Some(i) => {
                        self.pos += i + 3;
                        self.state = State::Content;
                    }
                    None => {
                        self.pos = buf.len().saturating_sub(2).max(self.pos);
                        return Ok(None);
                    }
                },
            }
        }
        self.check_size()?;
        Ok(None)
    }

    /// The size limit, checked in every state: a stanza (from its start tag) or, at stream
    /// level, a single tag (the header, an end tag) may not exceed `max_bytes`, whatever it
    /// is made of (quoted attribute values and end tags included).
    fn check_size(&self) -> Result<(), FramerError> {
        let start = if self.depth >= 2 {
            self.element_start
        } else if self.state != State::Content {
            self.tag_start
        } else {
            return Ok(());
        };
        if self.pos - start > self.max_bytes {
            return Err(FramerError::TooLarge(self.max_bytes));
        }
        Ok(())
    }

    fn push_name(&mut self, buf: &[u8]) {
        let tag = &buf[self.tag_start + 1..self.pos];
        let end = tag
            .iter()
            .position(|b| b" \t\r\n/>".contains(b))
            .unwrap_or(tag.len());
        self.name_starts.push(self.names.len());
        self.names.extend_from_slice(&tag[..end]);
    }

    fn pop_name(&mut self, buf: &[u8]) -> Result<(), FramerError> {
        let name = buf[self.tag_start + 2..self.pos - 1].trim_ascii_end();
        let Some(start) = self.name_starts.pop() else {
            return Err(FramerError::NotWellFormed("end tag without start tag"));
        };
        if &self.names[start..] != name {
            return Err(FramerError::NotWellFormed("mismatched end tag"));
        }
        self.names.truncate(start);
        if self.names.is_empty() && self.names.capacity() > 256 {
            self.names = Vec::new();
        }
        Ok(())
    }

    fn bang_error(&self, rest: &[u8]) -> FramerError {
        if rest.starts_with(b"!-") {
            FramerError::Restricted("comment")
        } else if rest.starts_with(b"![") {
            FramerError::Restricted("CDATA outside a stanza")
        } else {
            FramerError::Restricted("DTD or entity declaration")
        }
    }

    fn check_text(&self, text: &[u8]) -> Result<(), FramerError> {
        if self.depth <= 1 && !text.iter().all(|b| b" \t\r\n".contains(b)) {
            return Err(if self.depth == 0 {
                FramerError::NotWellFormed("text before the stream header")
            } else {
                FramerError::TextAtStreamLevel
            });
        }
        Ok(())
    }

    fn start_tag_done(&mut self, self_closing: bool) -> Result<Option<Token>, FramerError> {
        match self.depth {
            0 => {
                if self_closing {
                    return Err(FramerError::NotWellFormed("empty stream element"));
                }
                self.depth = 1;
                self.header_seen = true;
                Ok(Some(Token::StreamOpen(self.tag_start..self.pos)))
            }
            1 if self_closing => Ok(Some(Token::Element(self.element_start..self.pos))),
            _ if self_closing => Ok(None),
            d => {
                if d > self.max_depth {
                    return Err(FramerError::TooDeep(self.max_depth));
                }
                self.depth += 1;
                Ok(None)
            }
        }
    }

    fn end_tag_done(&mut self) -> Result<Option<Token>, FramerError> {
        match self.depth {
            0 => Err(FramerError::NotWellFormed(
                "end tag before the stream header",
            )),
            1 => {
                self.depth = 0;
                Ok(Some(Token::StreamClose))
            }
            2 => {
                self.depth = 1;
                Ok(Some(Token::Element(self.element_start..self.pos)))
            }
            _ => {
                self.depth -= 1;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framer: &mut Framer, buf: &[u8]) -> Result<Vec<Token>, FramerError> {
        let mut out = Vec::new();
        while let Some(t) = framer.next(buf)? {
            out.push(t);
        }
        Ok(out)
    }

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x'>";

    #[test]
    fn frames_header_stanzas_and_close_byte_by_byte() {
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b" <iq id='a>' type=\"get\"><q xmlns='y'><![CDATA[</iq>]]></q></iq>\n<presence/></stream:stream>");
        let mut f = Framer::new(1000, 10);
        let mut toks = Vec::new();
        for end in 1..=input.len() {
            while let Some(t) = f.next(&input[..end]).unwrap() {
                toks.push(t);
            }
        }
        assert_eq!(toks.len(), 4);
        let Token::Element(r) = &toks[1] else {
            panic!()
        };
        assert!(input[r.clone()].starts_with(b"<iq id='a>'"));
        assert!(input[r.clone()].ends_with(b"</iq>"));
        let Token::Element(r) = &toks[2] else {
            panic!()
        };
        assert_eq!(&input[r.clone()], b"<presence/>");
        assert_eq!(toks[3], Token::StreamClose);
    }

    #[test]
    fn limits_and_restricted_xml() {
        let mut f = Framer::new(50, 3);
        let mut input = HEADER.to_vec();
        input.extend_from_slice(
            b"<message><body>0123456789012345678901234567890123456789012</body></message>",
        );
        assert_eq!(all(&mut f, &input), Err(FramerError::TooLarge(50)));

        let mut f = Framer::new(1000, 3);
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b"<a><b><c><d><e/></d></c></b></a>");
        assert_eq!(all(&mut f, &input), Err(FramerError::TooDeep(3)));

        for bad in [
            &b"<!DOCTYPE x [<!ENTITY a 'b'>]>"[..],
            b"<!-- hi -->",
            b"<?foo bar?>",
        ] {
            let mut f = Framer::new(1000, 3);
            let mut input = HEADER.to_vec();
            input.extend_from_slice(bad);
            assert!(
                matches!(all(&mut f, &input), Err(FramerError::Restricted(_))),
                "{bad:?}"
            );
        }
        let mut f = Framer::new(1000, 3);
        assert!(matches!(
            all(&mut f, b"<!DOCTYPE stream>"),
            Err(FramerError::Restricted(_))
        ));
    }

    /// Every unterminated shape is refused once it passes the limit, never buffered on.
    #[test]
    fn unterminated_input_is_refused_in_every_state() {
        let endless = vec![b'x'; 300];
        let shapes: [&[u8]; 8] = [
            b"<stream:stream xmlns='jabber:client' a='",
            b"<stream:stream xmlns='jabber:client' a=\"",
            b"<stream:stream xmlns='jabber:client' ",
            b"</",
            b"<message a='",
            b"<message>",
            b"<message><body>",
            b"<message><x a=\"",
        ];
        for (i, shape) in shapes.into_iter().enumerate() {
            let mut input = if i < 4 { Vec::new() } else { HEADER.to_vec() };
            if i == 3 {
                input = HEADER.to_vec();
            }
            input.extend_from_slice(shape);
            let mut f = Framer::new(100, 10);
            let mut result = Ok(());
            // Fed in small reads, as a slow attacker would.
            for chunk in endless.chunks(7) {
                input.extend_from_slice(chunk);
                if let Err(e) = all(&mut f, &input) {
                    result = Err(e);
                    break;
                }
            }
            assert_eq!(result, Err(FramerError::TooLarge(100)), "shape {i}");
        }
    }

    #[test]
    fn text_at_stream_level_is_refused_but_whitespace_is_keepalive() {
        let mut f = Framer::new(1000, 3);
        let mut input = HEADER.to_vec();
        input.extend_from_slice(b" \n\t ");
        assert_eq!(all(&mut f, &input).unwrap().len(), 1);
        input.extend_from_slice(b"hello");
        assert_eq!(all(&mut f, &input), Err(FramerError::TextAtStreamLevel));
    }

    #[test]
    fn shift_keeps_partial_stanza() {
        let mut f = Framer::new(1000, 5);
        let mut buf = HEADER.to_vec();
        buf.extend_from_slice(b"<message><bo");
        assert!(matches!(
            all(&mut f, &buf).unwrap()[..],
            [Token::StreamOpen(_)]
        ));
        let n = f.consumed();
        buf.drain(..n);
        f.shift(n);
        assert!(buf.starts_with(b"<message>"));
        buf.extend_from_slice(b"dy>hi</body></message>");
        assert_eq!(
            all(&mut f, &buf).unwrap(),
            vec![Token::Element(0..buf.len())]
        );
    }
}
