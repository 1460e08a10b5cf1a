//! The `wockd` command: run the server, manage accounts.

use std::process::ExitCode;

fn main() -> ExitCode {
    match wockd::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wockd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
