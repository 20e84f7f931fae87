//! The `tandem-bench` binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match tandem_bench::cli::run(tandem_bench::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
