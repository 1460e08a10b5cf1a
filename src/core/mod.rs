//! What every layer above the XML shares: stanza errors and helpers, time.

pub mod stanza;
pub mod time;
