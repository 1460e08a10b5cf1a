//! The XML layer: a stanza tree, an incremental framer for non-blocking byte streams, and the
//! quick-xml based parser that turns one framed stanza into a tree.

pub mod chars;
pub mod element;
pub mod framer;
pub mod ns;
pub mod parse;

pub use element::{Element, Node};
pub use framer::{Framer, FramerError, Token};
pub use parse::{ParseError, StreamHeader};
