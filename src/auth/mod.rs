pub mod kdf;
pub mod plain;
pub mod scram;
