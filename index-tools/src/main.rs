//! The `tandem-index` binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match tandem_index_tools::run(tandem_index_tools::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if tandem_index_tools::is_closed_stdout(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-index: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
