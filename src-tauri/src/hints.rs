//! The advice a tray user gets with an error. The engine and the daemon state
//! facts ("another program uses this port"); which setting to change, or what
//! to do in this app, is said here, as the CLI's hints say which flag to pass.
//! Errors that arrive as text (a connection's last error) are shown as they are.

use kubesocks_engine::kubeconfig::KubeError;
use kubesocks_engine::{EngineError, error_chain};
use kubesocks_managed::DaemonError;

use crate::settings::Settings;

/// A failed connect, as its row and its notification show it.
pub fn connect_failed(e: &DaemonError, settings: &Settings) -> String {
    with_advice(error_chain(e), connect_advice(e, settings))
}

/// Why the app cannot start (it exits after saying so).
pub fn cannot_start(e: &DaemonError) -> String {
    let advice = match e {
        // Most likely a headless `kubesocks daemon` that `kubesocks connect` started.
        DaemonError::AlreadyRunning { .. } => Some("Stop it with `kubesocks quit`, then start kubesocks again.".into()),
        _ => None,
    };
    with_advice(format!("cannot start the kubesocks daemon: {}", error_chain(e)), advice)
}

/// Why the kubeconfig's contexts cannot be listed, for the window's banner.
pub fn kubeconfig_unreadable(e: &KubeError) -> String {
    with_advice(error_chain(e), kube_advice(e))
}

fn with_advice(facts: String, advice: Option<String>) -> String {
    match advice {
        Some(advice) => format!("{facts}. {advice}"),
        None => facts,
    }
}

fn connect_advice(e: &DaemonError, settings: &Settings) -> Option<String> {
    match e {
        DaemonError::Engine { source: EngineError::Bind { addr, source }, .. } => match source.kind() {
            // The engine already tried the ports above the first one.
            std::io::ErrorKind::AddrInUse => {
                Some(format!("Change the first {} port in Settings.", which_port(addr.port(), settings)))
            }
            std::io::ErrorKind::PermissionDenied => Some("Choose ports from 1024 up in Settings.".into()),
            _ => None,
        },
        DaemonError::Kube(e) => kube_advice(e),
        _ => None,
    }
}

fn kube_advice(e: &KubeError) -> Option<String> {
    match e {
        KubeError::NoKubeconfig => {
            Some("Create ~/.kube/config, or set KUBECONFIG for your session, then reload the contexts.".into())
        }
        KubeError::UnknownContext { .. } => Some("The kubeconfig changed: reload the contexts.".into()),
        // The app reads the login shell's PATH once, at start (see path_env).
        KubeError::ExecPluginMissing { .. } => Some(
            "The app looks for it on your login shell's PATH as it was when the app started: \
             install it there, then quit and start kubesocks again."
                .into(),
        ),
        _ => None,
    }
}

/// Which of the settings' listeners a port was searched from: the one whose
/// first port is the nearest below it (the engine searches upwards).
fn which_port(port: u16, settings: &Settings) -> &'static str {
    let candidates = [("SOCKS", Some(settings.socks_port)), ("HTTP", settings.http_port)];
    candidates
        .into_iter()
        .filter_map(|(name, first)| first.filter(|&first| first <= port).map(|first| (first, name)))
        .max()
        .map_or("SOCKS", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_failure(port: u16, kind: std::io::ErrorKind) -> DaemonError {
        DaemonError::Engine {
            context: "dev".into(),
            source: EngineError::Bind { addr: ([127, 0, 0, 1], port).into(), source: kind.into() },
        }
    }

    #[test]
    fn a_port_in_use_names_the_setting_to_change() {
        let settings = Settings { socks_port: 2000, http_port: Some(3000), ..Settings::default() };
        let socks = connect_failed(&bind_failure(2100, std::io::ErrorKind::AddrInUse), &settings);
        assert!(
            socks.starts_with("cannot start the proxy for context dev: cannot listen on 127.0.0.1:2100"),
            "{socks}"
        );
        assert!(socks.ends_with(". Change the first SOCKS port in Settings."), "{socks}");
        let http = connect_failed(&bind_failure(3100, std::io::ErrorKind::AddrInUse), &settings);
        assert!(http.ends_with(". Change the first HTTP port in Settings."), "{http}");
        let low = connect_failed(&bind_failure(80, std::io::ErrorKind::PermissionDenied), &settings);
        assert!(low.ends_with(". Choose ports from 1024 up in Settings."), "{low}");
    }

    #[test]
    fn facts_without_advice_are_shown_as_they_are() {
        let busy = DaemonError::Busy { context: "dev".into() };
        assert_eq!(connect_failed(&busy, &Settings::default()), "context dev is being connected by another request");
        let other = bind_failure(2000, std::io::ErrorKind::AddrNotAvailable);
        assert!(!connect_failed(&other, &Settings::default()).contains("Settings"));
    }

    #[test]
    fn kubeconfig_trouble_says_what_to_do_in_the_app() {
        let gone = DaemonError::Kube(KubeError::UnknownContext { name: "old".into(), available: "dev".into() });
        assert!(connect_failed(&gone, &Settings::default()).ends_with("reload the contexts."));
        assert!(kubeconfig_unreadable(&KubeError::NoKubeconfig).starts_with("no kubeconfig: "));
        assert!(kubeconfig_unreadable(&KubeError::NoKubeconfig).contains("Create ~/.kube/config"));
    }

    #[test]
    fn a_running_daemon_is_named_with_how_to_stop_it() {
        let text = cannot_start(&DaemonError::AlreadyRunning { pid: Some(42) });
        assert_eq!(
            text,
            "cannot start the kubesocks daemon: a kubesocks daemon is already running (pid 42). \
             Stop it with `kubesocks quit`, then start kubesocks again."
        );
    }

    #[test]
    fn error_text_joins_the_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot start")]
        struct Plain(#[source] std::io::Error);
        assert_eq!(error_chain(&Plain(std::io::Error::other("denied"))), "cannot start: denied");
    }
}
