//! The commands the window calls (`invoke` in ui/src/api.ts). Each is a thin
//! wrapper over the app's actions in [`crate::app`].

use std::path::PathBuf;

use serde::Serialize;
use tauri::{AppHandle, State};

use crate::app::{self, AppState};
use crate::host::{Contexts, Live};
use crate::settings::Settings;

/// Everything the window needs to draw itself the first time.
#[derive(Serialize)]
pub struct Snapshot {
    #[serde(flatten)]
    contexts: Contexts,
    live: Live,
    settings: Settings,
    log_dir: PathBuf,
    version: String,
}

#[tauri::command]
pub fn snapshot(app: AppHandle, state: State<'_, AppState>) -> Snapshot {
    Snapshot {
        contexts: app::refresh_contexts(&app),
        live: state.host.current(),
        settings: state.settings.lock().unwrap().clone(),
        log_dir: state.host.logs_dir(),
        version: app.package_info().version.to_string(),
    }
}

#[tauri::command]
pub async fn connect(app: AppHandle, context: String) -> Result<(), String> {
    app::connect(&app, &context).await.map(|_| ())
}

#[tauri::command]
pub async fn disconnect(state: State<'_, AppState>, id: String) -> Result<(), String> {
    state.host.disconnect(&id).await
}

#[tauri::command]
pub fn copy_text(app: AppHandle, text: String) -> Result<(), String> {
    app::copy(&app, &text)
}

#[tauri::command]
pub fn open_logs(app: AppHandle, state: State<'_, AppState>) -> Result<(), String> {
    use tauri_plugin_opener::OpenerExt as _;
    app.opener().open_path(state.host.logs_dir().to_string_lossy(), None::<&str>).map_err(|e| e.to_string())
}

#[tauri::command]
pub fn save_settings(app: AppHandle, settings: Settings) -> Result<Settings, String> {
    app::save_settings(&app, settings)
}

#[tauri::command]
pub fn reload_contexts(app: AppHandle) -> Contexts {
    app::refresh_contexts(&app)
}
