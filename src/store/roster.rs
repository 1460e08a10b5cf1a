//! Rosters and subscription states (RFC 6121).

/// Schema migration for this store (applied once, in order, by `migrations.rs`).
pub(super) const SCHEMA: &str = "";
