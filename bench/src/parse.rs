//! `parse-worst`: how long wockd's own framer and parser take on the worst stanzas the default
//! limits allow (256 KiB, depth 32, 64 attributes and 32 namespace declarations per element):
//! in-process, no server involved. Each shape is framed and parsed `rounds` times; the result is
//! the median time per stanza and the throughput in MiB/s.

use std::time::Instant;

use wockd::xml::parse::{self, Scope};
use wockd::xml::{Framer, Token};

const HEADER: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const LIMIT: usize = 256 * 1024;

/// Fills a `<message>` with copies of `unit` up to just under the limit.
fn fill(unit: &str) -> String {
    let mut s = String::from("<message to='a@localhost'>");
    while s.len() + unit.len() + 10 < LIMIT {
        s.push_str(unit);
    }
    s.push_str("</message>");
    s
}

fn shapes() -> Vec<(&'static str, String)> {
    let decls: String = (0..32).map(|i| format!(" xmlns:p{i}='urn:{i}'")).collect();
    let attrs: String = (0..63).map(|i| format!(" a{i}='v'")).collect();
    // 30 nested levels, each declaring 32 prefixes, the innermost using the outermost prefix.
    let mut nest = String::new();
    for _ in 0..30 {
        nest.push_str(&format!("<x{decls}>"));
    }
    nest.push_str("<p0:y/>");
    for _ in 0..30 {
        nest.push_str("</x>");
    }
    vec![
        ("deep nesting, 32 declarations a level", fill(&nest)),
        ("64 attributes an element", fill(&format!("<x{attrs}/>"))),
        ("tiny elements", fill("<a/>")),
        ("character references", fill("&#x263A;&amp;")),
        ("plain text body", fill("lorem ipsum dolor sit amet ")),
    ]
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    let header = parse::stream_header(HEADER.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let scope: Scope = header.scope;
    let mut worst = 0.0f64;
    for (name, stanza) in shapes() {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let mut f = Framer::new(LIMIT, 32);
            let mut buf = Vec::with_capacity(HEADER.len() + stanza.len());
            buf.extend_from_slice(HEADER.as_bytes());
            buf.extend_from_slice(stanza.as_bytes());
            let mut parsed = false;
            while let Some(tok) = f.next(&buf).map_err(|e| anyhow::anyhow!("{name}: {e}"))? {
                if let Token::Element(r) = tok {
                    parse::element(&buf[r], &scope).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
                    parsed = true;
                }
            }
            anyhow::ensure!(parsed, "{name}: nothing framed");
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        worst = worst.max(median);
        println!(
            "{name:40} {:7} bytes  {:8.3} ms  {:7.1} MiB/s",
            stanza.len(),
            median * 1e3,
            stanza.len() as f64 / median / (1024.0 * 1024.0)
        );
    }
    println!("RESULT parse worst_ms={:.3}", worst * 1e3);
    Ok(())
}
