//! The daemon the app hosts in-process: the same [`Daemon`] as `kubesocks
//! daemon`, serving the control socket, so `kubesocks connect/status/...`
//! in a terminal drive this app. This module is the app's only contact with
//! it: it turns the app's settings into connect requests and merges the
//! daemon's pushed connection list with the app's own connect attempts into
//! one [`Live`] stream, from which [`crate::view`] computes what the window
//! and the tray show.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kubesocks_engine::kubeconfig::{self, ContextInfo, KubeSettings};
use kubesocks_engine::{Listen, ProxyConfig, error_chain, loopback};
use kubesocks_managed::control::{
    ConnectRequest, ConnectionActivity, ConnectionStatus, SharedPortRequest, SharedPortStatus,
};
use kubesocks_managed::state::StateDir;
use kubesocks_managed::{Daemon, DaemonError};
use tokio::sync::watch;

use crate::hints;
use crate::settings::Settings;

/// What the hosting program is called in `kubesocks status`.
const HOST_NAME: &str = "kubesocks-tray";

/// A connect started from the app that has not produced a connection yet, or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub context: String,
    /// None while under way; the reason (with the app's advice) once it failed.
    pub error: Option<String>,
}

/// Everything live: the daemon's connections and the app's own attempts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    pub connections: Vec<ConnectionStatus>,
    pub attempts: Vec<Attempt>,
    /// The port shared by every connection, if open.
    pub shared_port: Option<SharedPortStatus>,
}

/// The kubeconfig's contexts, as read last.
#[derive(Debug, Clone, Default)]
pub struct Contexts {
    pub contexts: Vec<ContextInfo>,
    /// Why they could not be read, with the app's advice.
    pub kubeconfig_error: Option<String>,
    /// The files they come from, for display (`~/.kube/config`).
    pub kubeconfig: Vec<String>,
}

#[derive(Clone)]
pub struct Host {
    daemon: Daemon,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    live: watch::Sender<Live>,
}

impl Host {
    /// Becomes the daemon of the state directory. Fails when another daemon
    /// (a headless `kubesocks daemon`, or another tray) already serves it.
    pub async fn start() -> Result<Host, DaemonError> {
        let state = StateDir::locate()?;
        let daemon = Daemon::start(state, HOST_NAME).await?;
        let host = Host { daemon, attempts: Arc::default(), live: watch::Sender::new(Live::default()) };
        host.publish();
        let follower = host.clone();
        let mut updates = host.daemon.watch();
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                follower.publish();
            }
        });
        Ok(host)
    }

    /// The live picture, re-sent on every change.
    pub fn live(&self) -> watch::Receiver<Live> {
        self.live.subscribe()
    }

    pub fn current(&self) -> Live {
        self.live.borrow().clone()
    }

    fn publish(&self) {
        let connections = self.daemon.status();
        let mut attempts = self.attempts.lock().unwrap();
        // A failure is moot once the context is connected (from a terminal, say).
        attempts.retain(|a| a.error.is_none() || !connections.iter().any(|c| c.record.context == a.context));
        let live = Live { connections, attempts: attempts.clone(), shared_port: self.daemon.shared_port() };
        drop(attempts);
        self.live.send_if_modified(|current| {
            let changed = *current != live;
            *current = live;
            changed
        });
    }

    fn set_attempt(&self, context: &str, attempt: Option<Attempt>) {
        {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.retain(|a| a.context != context);
            attempts.extend(attempt);
        }
        self.publish();
    }

    /// Opens, moves or closes the shared port as `settings` say.
    pub async fn apply_shared_port(&self, settings: &Settings) -> Result<(), String> {
        let request = SharedPortRequest {
            listen: settings.shared_port.map(|port| Listen::exact(loopback(port))),
            default_context: settings.default_context.clone(),
        };
        let result = self.daemon.set_shared_port(request).await;
        self.publish();
        result.map(|_| ()).map_err(|e| error_chain(&e))
    }

    /// Connects `context` with the listeners and domain of `settings` (or
    /// finds the connection it already has).
    pub async fn connect(&self, context: &str, settings: &Settings) -> Result<(), String> {
        self.set_attempt(context, Some(Attempt { context: context.into(), error: None }));
        let request = connect_request(context, settings);
        match self.daemon.connect(request).await {
            Ok(_) => {
                self.set_attempt(context, None);
                Ok(())
            }
            // Another request (the window and the tray at once, or a terminal)
            // is connecting this context: that one decides, this one is no failure.
            Err(e @ DaemonError::Busy { .. }) => {
                self.set_attempt(context, None);
                Err(error_chain(&e))
            }
            Err(e) => {
                let message = hints::connect_failed(&e, settings);
                self.set_attempt(context, Some(Attempt { context: context.into(), error: Some(message.clone()) }));
                Err(message)
            }
        }
    }

    /// Stops the context's connection (its ports are free when this returns),
    /// or forgets its failed attempt.
    pub async fn disconnect(&self, context: &str) -> Result<(), String> {
        let ids: Vec<String> =
            self.daemon.status().into_iter().filter(|c| c.record.context == context).map(|c| c.record.id).collect();
        self.set_attempt(context, None);
        for id in ids {
            self.daemon.disconnect(&id).await.map_err(|e| error_chain(&e))?;
        }
        Ok(())
    }

    /// What every connection's clients are doing, re-sent about once a
    /// second while it changes (the daemon gathers it only while watched).
    pub fn activity(&self) -> watch::Receiver<Vec<ConnectionActivity>> {
        self.daemon.watch_activity()
    }

    /// What every connection's clients are doing now.
    pub async fn current_activity(&self) -> Vec<ConnectionActivity> {
        self.daemon.activity(None).await.unwrap_or_default()
    }

    /// Closes one client connection of connection `id` (both sides reset).
    pub fn close_client(&self, id: &str, client: u64) -> Result<(), String> {
        self.daemon.close_client(id, client).map_err(|e| error_chain(&e))
    }

    /// Resolves when a client asked the daemon to quit (`kubesocks quit`).
    pub async fn quit_requested(&self) {
        self.daemon.quit_requested().await
    }

    /// Stops every proxy and the control socket.
    pub async fn shutdown(&self) {
        self.daemon.shutdown().await
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.daemon.state().logs()
    }
}

/// The contexts of the kubeconfig the app was started with (`$KUBECONFIG`,
/// else `~/.kube/config`), read afresh.
pub fn contexts() -> Contexts {
    let settings = KubeSettings::default();
    let home = std::env::home_dir();
    let kubeconfig =
        settings.sources().unwrap_or_default().iter().map(|p| tilde(p, home.as_deref())).collect::<Vec<_>>();
    match kubeconfig::contexts(&settings) {
        Ok(contexts) => Contexts { contexts, kubeconfig_error: None, kubeconfig },
        Err(e) => {
            Contexts { contexts: Vec::new(), kubeconfig_error: Some(hints::kubeconfig_unreadable(&e)), kubeconfig }
        }
    }
}

/// `path` with the home directory written as `~`.
fn tilde(path: &std::path::Path, home: Option<&std::path::Path>) -> String {
    match home.and_then(|h| path.strip_prefix(h).ok()) {
        Some(rest) => format!("~/{}", rest.display()),
        None => path.display().to_string(),
    }
}

/// A connection as the daemon reports it (no error, no traffic), for the app's unit tests.
#[cfg(test)]
pub fn sample_connection(id: &str, context: &str, port: u16) -> ConnectionStatus {
    let record = kubesocks_managed::state::ConnectionRecord {
        id: id.into(),
        context: context.into(),
        server: "https://k:6443".into(),
        namespace: "default".into(),
        kubeconfig: "/k".into(),
        source_kubeconfigs: Vec::new(),
        socks: Some(([127, 0, 0, 1], port).into()),
        http: None,
        dns: None,
        cluster_domain: ProxyConfig::DEFAULT_CLUSTER_DOMAIN.into(),
        passthrough: false,
        alias: context.into(),
        pid: 1,
        log: "/l".into(),
        started_at: 0,
    };
    ConnectionStatus::new(record, Default::default())
}

/// What the app asks the daemon for when `context` is switched on.
fn connect_request(context: &str, settings: &Settings) -> ConnectRequest {
    ConnectRequest {
        kubeconfigs: Vec::new(),
        context: Some(context.into()),
        namespace: None,
        // Exec plugins get the app's own PATH (from the login shell) and
        // cloud variables, as `kubesocks connect` sends a terminal's: sent
        // with the request, their values are known to the daemon, which
        // hides them from anything it logs or shows.
        exec_env: kubesocks_engine::kubeconfig::exec_env(),
        alias: settings.aliases.get(context).cloned(),
        proxy: ProxyConfig {
            socks: Some(Listen::or_next_free(loopback(settings.socks_port))),
            http: settings.http_port.map(|port| Listen::or_next_free(loopback(port))),
            dns: settings.dns_port.map(|port| Listen::or_next_free(loopback(port))),
            cluster_domain: settings.cluster_domain.clone(),
            passthrough: settings.passthrough,
            ..ProxyConfig::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_connect_carries_the_settings_alias_and_the_apps_plugin_variables() {
        let settings = Settings { aliases: [("prod-eu".into(), "prod".into())].into(), ..Settings::default() };
        let request = connect_request("prod-eu", &settings);
        assert_eq!(request.alias.as_deref(), Some("prod"));
        assert_eq!(connect_request("dev", &settings).alias, None, "no alias set: the daemon makes one of the name");
        // The app's variables go with the request, so the daemon can hide
        // their values; PATH is one every process has.
        assert_eq!(request.exec_env.get("PATH"), std::env::var("PATH").ok().as_ref());
        assert_eq!(request.exec_env, kubesocks_engine::kubeconfig::exec_env());
    }

    #[test]
    fn paths_under_home_are_shown_with_a_tilde() {
        let home = Some(Path::new("/home/ada"));
        assert_eq!(tilde(Path::new("/home/ada/.kube/config"), home), "~/.kube/config");
        assert_eq!(tilde(Path::new("/etc/kube/config"), home), "/etc/kube/config");
        assert_eq!(tilde(Path::new("/home/adam/config"), home), "/home/adam/config");
        assert_eq!(tilde(Path::new("/home/ada/c"), None), "/home/ada/c");
    }
}
