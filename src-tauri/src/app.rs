//! The tray app: starts the in-process daemon, the window and the tray item,
//! and carries changes between them.
//!
//! ```text
//! daemon ──watch──▶ Host (connections + the app's connect attempts)
//!                     └─▶ forward_live: "live" event to the window, tray redraw, notifications
//! tray menu ──Action──▶ handle_actions ─┐
//! window ──invoke──▶ commands ──────────┴─▶ connect / disconnect / copy / settings
//! `kubesocks quit` ──▶ daemon.quit_requested ──▶ app exit ──▶ every proxy stopped
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use tauri::{AppHandle, Emitter as _, Manager as _, RunEvent, WebviewUrl, WebviewWindowBuilder, WindowEvent};
use tauri_plugin_autostart::{MacosLauncher, ManagerExt as _};
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_notification::NotificationExt as _;
use tokio::sync::mpsc;

use crate::host::{self, ConnectionStatus, Contexts, Host};
use crate::settings::{self, Settings};
use crate::tray::{self, Action};
use crate::{alerts, commands, launch, path_env};

const WINDOW: &str = "main";

/// What the commands and background tasks share.
pub struct AppState {
    pub host: Host,
    pub settings: Mutex<Settings>,
    settings_path: Option<PathBuf>,
    contexts: Mutex<Contexts>,
    tray: Mutex<Option<tray::Handle>>,
}

/// Runs the tray app until Quit, the last window closing without a tray, or `kubesocks quit`.
pub fn run(background: bool) -> ExitCode {
    let path = path_env::resolve();
    // SAFETY: nothing else runs yet: no runtime, no GTK, no other thread reads the environment.
    unsafe { std::env::set_var("PATH", &path.path) };

    let logs = kubesocks_managed::state::StateDir::locate().ok().map(|s| s.logs());
    let _log_guard = kubesocks_managed::logging::init(0, true, logs.as_deref(), "tray.log");
    tracing::info!(
        from_login_shell = path.from_shell,
        added = ?path.added,
        "PATH for exec credential plugins: {}",
        path.path.to_string_lossy()
    );

    let (actions, action_rx) = mpsc::unbounded_channel();
    let app = tauri::Builder::default()
        // First: a second start hands its arguments to the running app and exits.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| show_window(app)))
        .plugin(tauri_plugin_autostart::init(MacosLauncher::LaunchAgent, Some(vec![launch::BACKGROUND])))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .invoke_handler(tauri::generate_handler![
            commands::snapshot,
            commands::connect,
            commands::disconnect,
            commands::copy_text,
            commands::open_logs,
            commands::save_settings,
            commands::reload_contexts,
        ])
        .setup(move |app| {
            setup(app.handle(), background, actions, action_rx);
            Ok(())
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            eprintln!("kubesocks-tray: cannot start the app: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = app.run_return(on_event);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn setup(
    app: &AppHandle,
    background: bool,
    actions: mpsc::UnboundedSender<Action>,
    action_rx: mpsc::UnboundedReceiver<Action>,
) {
    let signals = tauri::async_runtime::block_on(async { Signals::listen() });
    let host = match tauri::async_runtime::block_on(Host::start()) {
        Ok(host) => host,
        Err(e) => {
            let mut message = host::error_text(&e);
            if e.is_already_running() {
                // Most likely a headless `kubesocks daemon` that `kubesocks connect` started.
                message.push_str(". Stop it with `kubesocks quit`, then start kubesocks again.");
            }
            tracing::error!("{message}");
            eprintln!("kubesocks-tray: {message}");
            // Sent here and now: the notification plugin sends in the background,
            // and the app is about to exit. Started from a launcher, this is
            // the only sign the user gets.
            let shown = notify_rust::Notification::new()
                .appname("kubesocks")
                .summary("kubesocks cannot start")
                .body(&message)
                .show();
            if let Err(e) = shown {
                tracing::debug!(error = %e, "no desktop notification");
            }
            // Through the event loop, so `run` returns and the log is flushed.
            app.exit(1);
            return;
        }
    };
    let settings_path = settings::path();
    let mut saved = settings_path.as_deref().map(settings::load).unwrap_or_default();
    if let Ok(enabled) = app.autolaunch().is_enabled() {
        saved.start_at_login = enabled;
    }
    app.manage(AppState {
        host: host.clone(),
        settings: Mutex::new(saved),
        settings_path,
        contexts: Mutex::new(host::contexts()),
        tray: Mutex::new(None),
    });

    let window = WebviewWindowBuilder::new(app, WINDOW, WebviewUrl::App("index.html".into()))
        .title("kubesocks")
        .inner_size(780.0, 620.0)
        .min_inner_size(560.0, 420.0)
        .visible(!background)
        .build();
    if let Err(e) = window {
        tracing::error!(error = %e, "cannot open the window");
    }

    let tray = tauri::async_runtime::block_on(tray::spawn(actions));
    *app.state::<AppState>().tray.lock().unwrap() = tray;

    tauri::async_runtime::spawn(forward_live(app.clone(), host.live()));
    tauri::async_runtime::spawn(handle_actions(app.clone(), action_rx));
    if let Some(signals) = signals {
        tauri::async_runtime::spawn(exit_on_signals(app.clone(), signals));
    }
    let quitter = app.clone();
    tauri::async_runtime::spawn(async move {
        host.quit_requested().await;
        tracing::info!("quit requested through the control socket");
        quitter.exit(0);
    });
}

fn on_event(app: &AppHandle, event: RunEvent) {
    match event {
        RunEvent::WindowEvent { label, event: WindowEvent::CloseRequested { api, .. }, .. } if tray_shown(app) => {
            // With a tray icon, closing the window only hides it; the proxies go on.
            api.prevent_close();
            if let Some(window) = app.get_webview_window(&label) {
                let _ = window.hide();
            }
        }
        RunEvent::Exit => {
            if let Some(state) = app.try_state::<AppState>() {
                // Stopping waits for connects under way (seconds at worst): don't leave a frozen window meanwhile.
                if let Some(window) = app.get_webview_window(WINDOW) {
                    let _ = window.hide();
                }
                tracing::info!("stopping every proxy");
                tauri::async_runtime::block_on(state.host.shutdown());
                let tray = state.tray.lock().unwrap().take();
                if let Some(tray) = tray {
                    tauri::async_runtime::block_on(tray.shutdown());
                }
            }
        }
        _ => {}
    }
}

fn tray_shown(app: &AppHandle) -> bool {
    app.try_state::<AppState>().and_then(|s| s.tray.lock().unwrap().as_ref().map(tray::Handle::shown)).unwrap_or(false)
}

/// Pushes every change to the window and the tray, and raises notifications.
/// The tray is also redrawn every few seconds, so an old error stops showing
/// even when nothing else changes.
async fn forward_live(app: AppHandle, mut live: tokio::sync::watch::Receiver<host::Live>) {
    let mut before = live.borrow_and_update().clone();
    let mut alerts = alerts::Alerts::default();
    let mut redraw = tokio::time::interval(std::time::Duration::from_secs(5));
    update_tray(&app, &before).await;
    loop {
        tokio::select! {
            changed = live.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = redraw.tick() => {
                update_tray(&app, &before).await;
                continue;
            }
        }
        let now = live.borrow_and_update().clone();
        if let Err(e) = app.emit("live", &now) {
            tracing::warn!(error = %e, "cannot send the live status to the window");
        }
        update_tray(&app, &now).await;
        for alert in alerts.between(&before, &now, unix_now()) {
            notify(&app, &alert.title, &alert.body);
        }
        before = now;
    }
}

async fn update_tray(app: &AppHandle, live: &host::Live) {
    let state = app.state::<AppState>();
    let tray = state.tray.lock().unwrap().clone();
    if let Some(tray) = tray {
        let contexts = state.contexts.lock().unwrap().contexts.clone();
        tray.update(&contexts, live, unix_now()).await;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// SIGTERM (logout, `kill`), SIGINT and SIGHUP, listened for from the start of
/// setup (before the control socket exists), so none of them can kill the app
/// with proxies up and their kubeconfigs left on disk.
struct Signals(tokio::signal::unix::Signal, tokio::signal::unix::Signal, tokio::signal::unix::Signal);

impl Signals {
    /// Must run inside the async runtime (it registers with its driver).
    fn listen() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| signal(kind).inspect_err(|e| tracing::warn!(error = %e, "cannot listen for signals")).ok();
        Some(Signals(listen(SignalKind::terminate())?, listen(SignalKind::interrupt())?, listen(SignalKind::hangup())?))
    }
}

/// Quits like the menu's Quit on the first signal: every proxy stopped, its
/// kubeconfig deleted, the control socket removed.
async fn exit_on_signals(app: AppHandle, mut signals: Signals) {
    tokio::select! {
        _ = signals.0.recv() => {}
        _ = signals.1.recv() => {}
        _ = signals.2.recv() => {}
    }
    tracing::info!("stopping on a signal");
    app.exit(0);
}

async fn handle_actions(app: AppHandle, mut actions: mpsc::UnboundedReceiver<Action>) {
    while let Some(action) = actions.recv().await {
        let state = app.state::<AppState>();
        match action {
            Action::Connect(context) => {
                let app = app.clone();
                // Connecting takes a while (API server, caches): don't hold up the menu.
                tauri::async_runtime::spawn(async move {
                    let _ = connect(&app, &context).await;
                });
            }
            Action::Disconnect(context) => {
                if let Err(e) = state.host.disconnect_context(&context).await {
                    notify(&app, &format!("kubesocks: cannot disconnect {context}"), &e);
                }
            }
            Action::Copy(text) => {
                if let Err(e) = copy(&app, &text) {
                    notify(&app, "kubesocks: cannot copy", &e);
                }
            }
            Action::Open => show_window(&app),
            Action::Quit => app.exit(0),
            Action::Refresh => {
                refresh_contexts(&app);
                update_tray(&app, &state.host.current()).await;
            }
        }
    }
}

/// Connects a context with the current settings; failures also reach the
/// window (as a failed attempt) and a notification, through the live stream.
pub async fn connect(app: &AppHandle, context: &str) -> Result<ConnectionStatus, String> {
    let state = app.state::<AppState>();
    let settings = state.settings.lock().unwrap().clone();
    state.host.connect(context, &settings).await
}

pub fn copy(app: &AppHandle, text: &str) -> Result<(), String> {
    app.clipboard().write_text(text).map_err(|e| e.to_string())
}

/// Re-reads the kubeconfig; tells the window when the list changed.
pub fn refresh_contexts(app: &AppHandle) -> Contexts {
    let fresh = host::contexts();
    // A second start can ask for the window while setup has not finished.
    let Some(state) = app.try_state::<AppState>() else { return fresh };
    let mut current = state.contexts.lock().unwrap();
    let changed = serde_json::to_value(&*current).ok() != serde_json::to_value(&fresh).ok();
    *current = fresh.clone();
    drop(current);
    if changed {
        let _ = app.emit("contexts", &fresh);
    }
    fresh
}

pub fn save_settings(app: &AppHandle, settings: Settings) -> Result<Settings, String> {
    let settings = settings.validated().map_err(|e| e.to_string())?;
    let state = app.state::<AppState>();
    let autostart = app.autolaunch();
    let result = if settings.start_at_login { autostart.enable() } else { autostart.disable() };
    result.map_err(|e| format!("cannot change start at login: {e}"))?;
    if let Some(path) = &state.settings_path {
        settings::save(path, &settings).map_err(|e| format!("cannot save the settings to {}: {e}", path.display()))?;
    }
    *state.settings.lock().unwrap() = settings.clone();
    Ok(settings)
}

pub fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window(WINDOW) {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
    refresh_contexts(app);
}

/// A desktop notification; without a notification service it is only logged.
fn notify(app: &AppHandle, title: &str, body: &str) {
    tracing::warn!("{title}: {body}");
    // Returns at once: the plugin sends over D-Bus on a blocking thread of its own.
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::debug!(error = %e, "no desktop notification");
    }
}
