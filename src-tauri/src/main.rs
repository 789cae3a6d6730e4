//! `kubesocks-tray`: the kubesocks tray app. With a subcommand it is the
//! headless `kubesocks` CLI instead (`kubesocks-tray proxy-out`, `status`, ...),
//! dispatched before any GUI initialisation.

mod alerts;
mod app;
mod commands;
mod host;
mod launch;
mod path_env;
mod settings;
mod tray;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    match launch::mode(std::env::args_os().skip(1)) {
        launch::Mode::Cli => headless(),
        launch::Mode::Tray { background } => app::run(background),
    }
}

/// Exactly what the `kubesocks` binary does.
fn headless() -> ExitCode {
    let cli = kubesocks::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kubesocks: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kubesocks::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            kubesocks::report(&e);
            ExitCode::FAILURE
        }
    }
}
