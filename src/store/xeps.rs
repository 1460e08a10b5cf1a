//! vCards (XEP-0054), private XML (XEP-0049), blocklists (XEP-0191), last activity (XEP-0012).

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = "";
