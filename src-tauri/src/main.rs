//! `kubesocks-tray`: the kubesocks tray app. With a subcommand it is the
//! headless `kubesocks` CLI instead (`kubesocks-tray proxy-out`, `status`, ...),
//! dispatched before any GUI initialisation.
//!
//! The top of the layers: this crate → `kubesocks` (the CLI, for headless
//! mode) → `kubesocks-managed` (the daemon it hosts) → `kubesocks-engine`.
//! Its window is the web UI in `ui/`, whose types are generated from the
//! Rust ones here (`ui/src/generated.ts`, see `typescript`).
//!
//! Its modules, top down; each uses only modules listed after it:
//! * `main`: argv decides (`launch`), tray or headless CLI.
//! * `app`: builds the Tauri app (plugins, window, tray item), forwards every
//!   change of the view to the window and the tray, exits on Quit.
//! * `commands` (what the window invokes) and `tray` (the tray item and its
//!   menu) are the two ways in; both call `actions`.
//! * `actions`: what the user can do (connect, disconnect, copy, reload the
//!   contexts, save the settings, open the logs, show the window, quit), the
//!   reconnecting of the contexts left on, and the state it acts on.
//! * `alerts`: which changes become notifications.
//! * `view`: what the user sees, computed once for the window and the tray:
//!   the rows, whether a context is failing and why, the headline, the icon.
//! * `host`: the only contact with the daemon, in-process: connect requests
//!   from the settings, and the live status (connections and the app's own
//!   connect attempts).
//! * `hints`: the advice a tray user gets with an error (the engine and the
//!   daemon state facts only).
//! * `settings` (the settings file; its defaults are the engine's),
//!   `launch`, `path_env` (the PATH exec credential plugins are found in).
//! * `typescript` (tests only): writes `ui/src/generated.ts` from the types
//!   above, and fails when the committed file is stale.
//!
//! ```text
//! window ─invoke─▶ commands ─┐
//! tray menu ─────▶ tray ─────┴─▶ actions ─▶ host ─▶ Daemon (kubesocks-managed)
//! Daemon ─watch─▶ host ─▶ app::forward ─▶ view::build ─▶ window (events::VIEW), tray
//! ```

mod actions;
mod alerts;
mod app;
mod commands;
mod events;
mod hints;
mod host;
mod launch;
mod path_env;
mod settings;
mod tray;
#[cfg(test)]
mod typescript;
mod view;

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
