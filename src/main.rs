//! `kubesocks`: the headless command line.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kubesocks::cli::Cli::parse();
    match kubesocks::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubesocks: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
