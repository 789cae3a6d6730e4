//! What a start of `kubesocks-tray` is: the tray app, or the headless CLI.
//! Decided from argv alone, before anything touches GTK or a display, so
//! `kubesocks-tray proxy-out` works on a server without one.

use std::ffi::{OsStr, OsString};

/// Started by the login autostart entry: tray only, no window.
pub const BACKGROUND: &str = "--background";
/// Added by WebKitWebDriver when it launches the app for an automated session.
const AUTOMATION: &str = "--automation";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A subcommand or flag of the `kubesocks` CLI: run it headless.
    Cli,
    /// No arguments (or only the app's own flags): the tray app.
    Tray { background: bool },
}

pub fn mode(args: impl IntoIterator<Item = OsString>) -> Mode {
    let args: Vec<OsString> = args.into_iter().collect();
    let own = |a: &OsString| a == OsStr::new(BACKGROUND) || a == OsStr::new(AUTOMATION);
    if args.iter().all(own) {
        Mode::Tray { background: args.iter().any(|a| a == OsStr::new(BACKGROUND)) }
    } else {
        Mode::Cli
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(args: &[&str]) -> Mode {
        mode(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_start_the_tray_with_its_window() {
        assert_eq!(of(&[]), Mode::Tray { background: false });
        assert_eq!(of(&["--automation"]), Mode::Tray { background: false });
    }

    #[test]
    fn the_autostart_flag_starts_the_tray_without_a_window() {
        assert_eq!(of(&["--background"]), Mode::Tray { background: true });
    }

    #[test]
    fn anything_else_is_the_cli() {
        for args in [
            &["proxy-out"][..],
            &["--kubeconfig", "x", "proxy-out"],
            &["status", "-o", "json"],
            &["--help"],
            &["--version"],
            &["daemon"],
            &["--background", "status"],
        ] {
            assert_eq!(of(args), Mode::Cli, "{args:?}");
        }
    }
}
