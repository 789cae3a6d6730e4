//! The `kubesocks` command line, shared by the `kubesocks` binary and the
//! tray app's headless mode: parse with [`Cli`], run with [`run`], and print
//! an error with [`report`].
//!
//! This is the top of the headless stack: it shapes what the user typed
//! (`args`) into calls of the engine (`proxy_out`: `proxy-out`, `contexts`)
//! and of managed mode (`manage`: `connect`, `disconnect`, `quit`, `status`,
//! `daemon`; `activity`: `connections`, `failures`), prints their results (`output`), and adds to their errors the
//! advice that fits a command-line user (`hints`: which flag to pass).

mod activity;
mod args;
mod hints;
mod manage;
mod output;
mod proxy_out;

use anyhow::{Context as _, Result};
use kubesocks_managed::state::StateDir;

pub use args::{Cli, Command};
pub use hints::report;

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<()> {
    // Long-running commands log to a file too; the others only to stderr.
    let log_file = match cli.command {
        Command::ProxyOut(_) => Some("proxy-out.log"),
        Command::Daemon => Some("daemon.log"),
        _ => None,
    };
    let state = || StateDir::locate().context("cannot use kubesocks' state directory");
    // proxy-out also runs where no state dir can be made (containers, CI):
    // then it logs to stderr only. The daemon needs one.
    let log_dir = match cli.command {
        Command::ProxyOut(_) => state().ok().map(|s| s.logs()),
        Command::Daemon => Some(state()?.logs()),
        _ => None,
    };
    let _guard = kubesocks_managed::logging::init(cli.verbose, true, log_dir.as_deref(), log_file.unwrap_or_default());
    if log_file.is_some() {
        // A proxy holds a descriptor or two per client: take all the system allows.
        kubesocks_managed::limits::raise_nofile_limit();
    }
    match &cli.command {
        Command::ProxyOut(args) => crate::proxy_out::run(&cli.kube(), args).await,
        Command::Contexts(out) => crate::proxy_out::contexts(&cli.kube(), out.output),
        Command::Connect(args) => crate::manage::connect(&state()?, &cli.kube(), args).await,
        Command::Disconnect(args) => crate::manage::disconnect(&state()?, args).await,
        Command::Quit => crate::manage::quit(&state()?).await,
        Command::Status(out) => crate::manage::status(&state()?, out.output).await,
        Command::SharedPort(args) => crate::manage::shared_port(&state()?, args).await,
        Command::Daemon => crate::manage::daemon(state()?).await,
        Command::Connections(args) => crate::activity::connections(&state()?, args).await,
        Command::Failures(args) => crate::activity::failures(&state()?, args).await,
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(
                args.shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "kubesocks",
                &mut script,
            );
            crate::output::write_out(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            crate::output::write_out(&page)
        }
    }
}
