//! The commands the window calls: the first [`Snapshot`], then thin wrappers
//! over [`crate::actions`]. After the snapshot, the window learns of changes
//! from the events the app pushes ([`crate::events`]).
//!
//! `ui/src/generated.ts` gets a typed function for every command in
//! [`handler`], with the docs written here (see `typescript.rs`): renaming a
//! command or changing its arguments breaks the window's TypeScript build,
//! not a click at run time. An argument of type `AppHandle` is Tauri's, not
//! the window's, and a command that returns `Err(text)` rejects with `text`.

use kubesocks_managed::control::ConnectionActivity;
use tauri::{AppHandle, Manager as _};

use crate::actions::{self, AppState};
use crate::settings::{Defaults, Settings};
use crate::view::View;

/// Everything the window needs to draw itself the first time.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Snapshot {
    pub view: View,
    pub settings: Settings,
    /// What the settings page offers where a setting is off or empty.
    pub defaults: Defaults,
    /// The folder "Open log folder" opens.
    pub log_dir: String,
    /// The app's version.
    pub version: String,
}

/// Every command the window may call.
pub fn handler() -> impl Fn(tauri::ipc::Invoke) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        snapshot,
        connect,
        disconnect,
        copy_text,
        open_logs,
        save_settings,
        reload_contexts,
        activity,
        close_client
    ]
}

/// Everything the window needs to draw itself the first time.
#[tauri::command]
pub fn snapshot(app: AppHandle) -> Snapshot {
    actions::refresh_contexts(&app);
    let state = app.state::<AppState>();
    Snapshot {
        view: state.view(),
        settings: state.settings(),
        defaults: Defaults::default(),
        log_dir: state.host.logs_dir().to_string_lossy().into_owned(),
        version: app.package_info().version.to_string(),
    }
}

/// Connects a context; resolves once it listens, rejects with the reason it could not.
#[tauri::command]
pub async fn connect(app: AppHandle, context: String) -> Result<(), String> {
    actions::connect(&app, &context).await
}

/// Stops a context's connection, or forgets its failed connect.
#[tauri::command]
pub async fn disconnect(app: AppHandle, context: String) -> Result<(), String> {
    actions::disconnect(&app, &context).await
}

/// Puts text on the clipboard.
#[tauri::command]
pub fn copy_text(app: AppHandle, text: String) -> Result<(), String> {
    actions::copy(&app, &text)
}

/// Opens the log folder in the file manager.
#[tauri::command]
pub fn open_logs(app: AppHandle) -> Result<(), String> {
    actions::open_logs(&app)
}

/// Saves the settings; resolves with them as stored.
#[tauri::command]
pub async fn save_settings(app: AppHandle, settings: Settings) -> Result<Settings, String> {
    actions::save_settings(&app, settings).await
}

/// Re-reads the kubeconfig; a change arrives as a new view.
#[tauri::command]
pub fn reload_contexts(app: AppHandle) {
    actions::refresh_contexts(&app);
}

/// What each connection's clients are doing now; changes arrive as `activity` events.
#[tauri::command]
pub async fn activity(app: AppHandle) -> Result<Vec<ConnectionActivity>, String> {
    let host = app.state::<AppState>().host.clone();
    Ok(host.current_activity().await)
}

/// Closes client connection `client` of connection `id`: both sides are reset.
#[tauri::command]
pub fn close_client(app: AppHandle, id: String, client: u64) -> Result<(), String> {
    app.state::<AppState>().host.close_client(&id, client)
}
