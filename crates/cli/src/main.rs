//! `kubesocks`: the headless command line.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kubesocks::Cli::parse();
    match kubesocks::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            kubesocks::report(&e);
            std::process::ExitCode::FAILURE
        }
    }
}
