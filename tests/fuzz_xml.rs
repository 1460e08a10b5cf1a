//! Property tests ("fuzzing" on the stable toolchain) of the XML input path: the framer and
//! the parser never panic on arbitrary bytes, fed in arbitrary chunks; whatever the framer
//! hands out is within the size limit; a framed valid stanza parses to what was sent; JID
//! parsing of arbitrary text never panics. `PROPTEST_CASES` sets the number of cases
//! (`scripts/fuzz.sh` runs them for longer).

use proptest::prelude::*;
use wockd::xml::parse::{self, Scope};
use wockd::xml::{Framer, Token};

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const LIMIT: usize = 512;

/// Feeds `input` to a framer in the given chunk sizes, as reads would, parsing every token.
/// Returns the tokens' byte ranges' sizes; stops at the first error.
fn frame_all(input: &[u8], chunks: &[usize]) -> Vec<usize> {
    let mut f = Framer::new(LIMIT, 8);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut sizes = Vec::new();
    let mut scope = Scope::new();
    let mut chunk_iter = chunks.iter().cycle();
    while fed < input.len() {
        let n = (*chunk_iter.next().unwrap_or(&1)).clamp(1, input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match f.next(&buf) {
                Ok(Some(Token::StreamOpen(r))) => {
                    sizes.push(r.len());
                    if let Ok(h) = parse::stream_header(&buf[r]) {
                        scope = h.scope;
                    }
                }
                Ok(Some(Token::Element(r))) => {
                    sizes.push(r.len());
                    let _ = parse::element(&buf[r], &scope);
                }
                Ok(Some(Token::StreamClose)) => {}
                Ok(None) => break,
                Err(_) => return sizes,
            }
        }
        let c = f.consumed().min(buf.len());
        buf.drain(..c);
        f.shift(c);
        // The buffer never holds more than one unit within the limit plus the last read.
        assert!(buf.len() <= LIMIT + 1 + n + 1024, "buffered {}", buf.len());
    }
    sizes
}

/// XML-ish bytes: a mix of markup characters, names, quotes and arbitrary bytes.
fn xmlish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"<".to_vec()),
        Just(b">".to_vec()),
        Just(b"</".to_vec()),
        Just(b"/>".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"=".to_vec()),
        Just(b" ".to_vec()),
        Just(b"<![CDATA[".to_vec()),
        Just(b"]]>".to_vec()),
        Just(b"<!--".to_vec()),
        Just(b"<?".to_vec()),
        Just(b"&amp;".to_vec()),
        Just(b"&#x1;".to_vec()),
        Just(b"xmlns='urn:x'".to_vec()),
        Just(b"xmlns:p='urn:p'".to_vec()),
        Just(b"p:".to_vec()),
        Just(b"message".to_vec()),
        Just(b"body".to_vec()),
        Just("é".as_bytes().to_vec()),
        Just(b"\xEF\xBF\xBF".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn framer_and_parser_never_panic(body in xmlish(), chunks in proptest::collection::vec(1usize..64, 1..8), with_header in any::<bool>()) {
        let mut input = if with_header { HEADER.to_vec() } else { Vec::new() };
        input.extend_from_slice(&body);
        for size in frame_all(&input, &chunks) {
            prop_assert!(size <= LIMIT + 1, "token of {} bytes", size);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut input = HEADER.to_vec();
        input.extend_from_slice(&bytes);
        frame_all(&input, &[17]);
        let _ = parse::element(&bytes, &Scope::new());
        let _ = parse::stream_header(&bytes);
    }

    /// Valid stanzas with arbitrary text survive framing in any chunking and parse back.
    #[test]
    fn valid_stanzas_round_trip(text in "[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}]{0,60}", to in "[a-z]{1,10}", chunks in proptest::collection::vec(1usize..32, 1..4)) {
        let el = wockd::xml::Element::stanza("message")
            .attr("to", format!("{to}@localhost"))
            .child(wockd::xml::Element::new("body", wockd::xml::ns::CLIENT).text(text.clone()));
        let mut input = HEADER.to_vec();
        input.extend_from_slice(&el.to_bytes());
        let mut f = Framer::new(64 * 1024, 8);
        let mut buf = Vec::new();
        let mut got = None;
        let mut scope = Scope::new();
        let mut fed = 0;
        let mut ci = chunks.iter().cycle();
        while fed < input.len() && got.is_none() {
            let n = (*ci.next().unwrap()).min(input.len() - fed);
            buf.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            while let Some(t) = f.next(&buf).unwrap() {
                match t {
                    Token::StreamOpen(r) => scope = parse::stream_header(&buf[r]).unwrap().scope,
                    Token::Element(r) => got = Some(parse::element(&buf[r], &scope).unwrap()),
                    Token::StreamClose => {}
                }
            }
        }
        let got = got.expect("no stanza framed");
        let body = got.get_child("body", wockd::xml::ns::CLIENT).map(|b| b.text_content());
        prop_assert_eq!(body.unwrap_or_default(), text);
    }

    #[test]
    fn jid_parsing_never_panics(s in "\\PC{0,80}", raw in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = jid::Jid::new(&s);
        let _ = jid::BareJid::new(&s);
        let _ = jid::FullJid::new(&s);
        let lossy = String::from_utf8_lossy(&raw);
        let _ = jid::Jid::new(&lossy);
    }
}
