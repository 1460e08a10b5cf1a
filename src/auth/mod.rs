pub mod plain;
pub mod scram;
