//! What the user can do, whether from the window (through [`crate::commands`])
//! or the tray menu (an [`Action`], through [`perform`]): connect, disconnect,
//! copy, reload the contexts, save the settings, open the logs, show the
//! window, quit; and at start, connect again the contexts left on. Also the
//! state these act on, [`AppState`].
//!
//! Nothing here redraws: each action changes the host's live status or the
//! contexts, and the app's forwarding task (`app::forward`) pushes the new
//! [`View`] to the window and the tray.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use kubesocks_engine::kubeconfig;
use kubesocks_managed::control::ConnectionStatus;
use tauri::{AppHandle, Manager as _};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_notification::NotificationExt as _;
use tauri_plugin_opener::OpenerExt as _;
use tokio::sync::watch;

use crate::host::{self, Contexts, Host};
use crate::settings::{self, Remembered, Settings};
use crate::view::{self, View};

/// The label of the app's one window.
pub const WINDOW: &str = "main";

/// What the actions, the commands and the forwarding task share.
pub struct AppState {
    pub host: Host,
    settings: Mutex<Settings>,
    settings_path: Option<PathBuf>,
    /// The contexts switched on in the app and not switched off since.
    remembered: Mutex<Remembered>,
    remembered_path: Option<PathBuf>,
    /// The kubeconfig's contexts as read last; a change is pushed to the window and the tray.
    pub contexts: watch::Sender<Contexts>,
    /// The connections (IDs) whose kubeconfig entry changed since they were
    /// made, as found when the contexts were read last.
    outdated: Mutex<BTreeSet<String>>,
}

impl AppState {
    pub fn new(
        host: Host,
        settings: Settings,
        settings_path: Option<PathBuf>,
        remembered_path: Option<PathBuf>,
    ) -> AppState {
        let remembered = remembered_path.as_deref().map(settings::load_remembered).unwrap_or_default();
        AppState {
            host,
            settings: Mutex::new(settings),
            settings_path,
            remembered: Mutex::new(remembered),
            remembered_path,
            contexts: watch::Sender::new(host::contexts()),
            outdated: Mutex::default(),
        }
    }

    /// What the window and the tray show now.
    pub fn view(&self) -> View {
        view::build(&self.contexts.borrow(), &self.host.current(), &self.outdated.lock().unwrap(), view::unix_now())
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    /// Notes that the user switched `context` on or off, in the file too.
    fn remember(&self, context: &str, on: bool) {
        let mut remembered = self.remembered.lock().unwrap();
        let changed = if on { remembered.switched_on(context) } else { remembered.switched_off(context) };
        if let (true, Some(path)) = (changed, &self.remembered_path)
            && let Err(e) = settings::save_remembered(path, &remembered)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the contexts left on");
        }
    }
}

/// What a click in the tray menu asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect(String),
    Disconnect(String),
    Copy(String),
    Open,
    Quit,
    /// The menu is about to open: re-read the kubeconfig.
    Refresh,
}

/// Does what the tray menu asked. Failures become notifications: the menu has
/// no other way to say them.
pub async fn perform(app: &AppHandle, action: Action) {
    match action {
        Action::Connect(context) => {
            let app = app.clone();
            // Connecting takes a while (API server, caches): don't hold up the
            // menu. A failure reaches the window and a notification as a failed
            // attempt, through the live status.
            tauri::async_runtime::spawn(async move {
                let _ = connect(&app, &context).await;
            });
        }
        Action::Disconnect(context) => {
            if let Err(e) = disconnect(app, &context).await {
                notify(app, &format!("kubesocks: cannot disconnect {context}"), &e);
            }
        }
        Action::Copy(text) => {
            if let Err(e) = copy(app, &text) {
                notify(app, "kubesocks: cannot copy", &e);
            }
        }
        Action::Open => show_window(app),
        Action::Quit => app.exit(0),
        Action::Refresh => refresh_contexts(app),
    }
}

/// Connects a context with the current settings; once connected, it comes
/// back on at the app's next start.
pub async fn connect(app: &AppHandle, context: &str) -> Result<(), String> {
    let state = app.state::<AppState>();
    let settings = state.settings();
    state.host.connect(context, &settings).await?;
    state.remember(context, true);
    Ok(())
}

/// Stops the context's connection, or forgets its failed connect; either
/// way it stays off at the app's next start.
pub async fn disconnect(app: &AppHandle, context: &str) -> Result<(), String> {
    let state = app.state::<AppState>();
    state.host.disconnect(context).await?;
    state.remember(context, false);
    Ok(())
}

/// Connects the contexts left on when the app last quit, with the current
/// settings, one after the other in the order they were switched on, so the
/// ports go to them in a steady order, not to whichever cluster answers
/// first. One the kubeconfig no longer has is skipped (it stays remembered:
/// a file of `$KUBECONFIG` may be back later). A failure shows as a failed
/// connect, as a switch's does, and leaves the list as it is.
pub async fn reconnect_remembered(app: &AppHandle) {
    let state = app.state::<AppState>();
    let remembered = state.remembered.lock().unwrap().contexts.clone();
    for context in remembered {
        if !state.contexts.borrow().contexts.iter().any(|c| c.name == context) {
            tracing::warn!(context, "not connecting a context left on: the kubeconfig no longer has it");
            continue;
        }
        tracing::info!(context, "connecting a context left on");
        let settings = state.settings();
        if let Err(error) = state.host.connect(&context, &settings).await {
            tracing::warn!(context, error, "cannot connect a context left on");
        }
    }
}

pub fn copy(app: &AppHandle, text: &str) -> Result<(), String> {
    app.clipboard().write_text(text).map_err(|e| e.to_string())
}

/// Re-reads the kubeconfig, and checks each connection against the entry it
/// was made from.
pub fn refresh_contexts(app: &AppHandle) {
    // A second start can ask for the window while setup has not finished.
    if let Some(state) = app.try_state::<AppState>() {
        *state.outdated.lock().unwrap() = outdated(&state.host.current().connections);
        // Sent last: the view it triggers reads the connections checked above.
        state.contexts.send_replace(host::contexts());
    }
}

/// The connections whose kubeconfig entry changed since they were made: the
/// entry in their own kubeconfig (written when they were made) against the
/// same context in the files they were made from, read now. One whose
/// context or files are gone or unreadable is not counted: reconnecting it
/// could not pick up a change.
fn outdated(connections: &[ConnectionStatus]) -> BTreeSet<String> {
    let changed = |c: &ConnectionStatus| {
        let entry = |files: &[PathBuf]| {
            kubeconfig::read_files(files).and_then(|kc| kubeconfig::standalone(&kc, &c.record.context))
        };
        match (entry(std::slice::from_ref(&c.record.kubeconfig)), entry(&c.record.source_kubeconfigs)) {
            (Ok(then), Ok(now)) => view::entry_changed(&then, &now),
            _ => false,
        }
    };
    connections.iter().filter(|c| changed(c)).map(|c| c.record.id.clone()).collect()
}

/// Checks and saves the settings (and the autostart entry) and opens the
/// shared port they ask for; returns them as saved.
pub async fn save_settings(app: &AppHandle, settings: Settings) -> Result<Settings, String> {
    let settings = settings.validated().map_err(|e| e.to_string())?;
    let state = app.state::<AppState>();
    let autostart = app.autolaunch();
    let result = if settings.start_at_login { autostart.enable() } else { autostart.disable() };
    result.map_err(|e| format!("cannot change start at login: {e}"))?;
    if let Some(path) = &state.settings_path {
        settings::save(path, &settings).map_err(|e| format!("cannot save the settings to {}: {e}", path.display()))?;
    }
    *state.settings.lock().unwrap() = settings.clone();
    state.host.apply_shared_port(&settings).await.map_err(|e| format!("saved, but {e}"))?;
    Ok(settings)
}

/// Opens the state directory's `logs/` in the file manager.
pub fn open_logs(app: &AppHandle) -> Result<(), String> {
    let dir = app.state::<AppState>().host.logs_dir();
    app.opener().open_path(dir.to_string_lossy(), None::<&str>).map_err(|e| e.to_string())
}

/// Brings the window forward, with the contexts read afresh.
pub fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window(WINDOW) {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
    refresh_contexts(app);
}

/// A desktop notification; without a notification service it is only logged.
pub fn notify(app: &AppHandle, title: &str, body: &str) {
    tracing::warn!("{title}: {body}");
    // Returns at once: the plugin sends over D-Bus on a blocking thread of its own.
    if let Err(e) = app.notification().builder().title(title).body(as_text(body)).show() {
        tracing::debug!(error = %e, "no desktop notification");
    }
}

/// `body` as a notification shows it: as text. Notification servers read a
/// body as markup (`<a href>`, `<img>`, `<b>`), and a body quotes names and
/// messages that the cluster or a kubeconfig chose.
pub fn as_text(body: &str) -> String {
    body.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_shows_markup_from_the_cluster_as_text() {
        let hostile = r#"pod <a href="http://evil.example">web</a> & <img src=x> refused"#;
        assert_eq!(
            as_text(hostile),
            "pod &lt;a href=\"http://evil.example\"&gt;web&lt;/a&gt; &amp; &lt;img src=x&gt; refused"
        );
        assert_eq!(as_text("no ready endpoint for web.shop"), "no ready endpoint for web.shop");
    }
}
