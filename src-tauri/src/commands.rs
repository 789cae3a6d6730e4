//! The commands the window calls (`invoke` in ui/src/api.ts): the first
//! [`Snapshot`], then thin wrappers over [`crate::actions`]. After the
//! snapshot, the window learns of changes from the events the app pushes
//! (`view`, `announce`; see `app::forward`).

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

#[tauri::command]
pub async fn connect(app: AppHandle, context: String) -> Result<(), String> {
    actions::connect(&app, &context).await
}

#[tauri::command]
pub async fn disconnect(app: AppHandle, context: String) -> Result<(), String> {
    actions::disconnect(&app, &context).await
}

#[tauri::command]
pub fn copy_text(app: AppHandle, text: String) -> Result<(), String> {
    actions::copy(&app, &text)
}

#[tauri::command]
pub fn open_logs(app: AppHandle) -> Result<(), String> {
    actions::open_logs(&app)
}

#[tauri::command]
pub async fn save_settings(app: AppHandle, settings: Settings) -> Result<Settings, String> {
    actions::save_settings(&app, settings).await
}

#[tauri::command]
pub fn reload_contexts(app: AppHandle) {
    actions::refresh_contexts(&app);
}
