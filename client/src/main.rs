//! The `tandem` binary.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match tandem_client::cli::run(tandem_client::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if tandem_client::cli::is_closed_stdout(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
