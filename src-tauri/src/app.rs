//! The tray app: starts the in-process daemon, the window and the tray item,
//! and carries changes between them.
//!
//! ```text
//! daemon ──watch──▶ Host (connections + the app's connect attempts) ─┐
//! kubeconfig files (polled) ──actions::refresh_contexts──▶ AppState ─┴─▶ forward:
//!     view::build ──▶ events::VIEW to the window, tray redraw; alerts ──▶ notifications
//! tray menu ──Action──▶ actions::perform ─┐
//! daemon ──watch_activity──▶ forward_activity ──▶ events::ACTIVITY to the window
//! window ──invoke──▶ commands ────────────┴─▶ actions (connect, disconnect, copy, ...)
//! `kubesocks quit` ──▶ daemon.quit_requested ──▶ app exit ──▶ every proxy stopped
//! start ──▶ actions::reconnect_remembered (the contexts left on at the last quit)
//! ```

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use kubesocks_engine::kubeconfig::KubeSettings;
use tauri::{AppHandle, Manager as _, RunEvent, WebviewUrl, WebviewWindowBuilder, WindowEvent};
use tauri_plugin_autostart::{MacosLauncher, ManagerExt as _};
use tokio::sync::mpsc;

use crate::actions::{self, Action, AppState, WINDOW};
use crate::host::{Host, Live};
use crate::view::{self, View};
use crate::{alerts, commands, events, hints, launch, path_env, settings, tray};

/// How often the kubeconfig files are looked at for a change.
const KUBECONFIG_EVERY: Duration = Duration::from_secs(2);

/// The tray item, once it is on the bus; `None` without a session bus.
struct TrayItem(Mutex<Option<tray::Handle>>);

/// Runs the tray app until Quit, the last window closing without a tray, or `kubesocks quit`.
pub fn run(background: bool) -> ExitCode {
    let path = path_env::resolve();
    // SAFETY: nothing else runs yet: no runtime, no GTK, no other thread reads the environment.
    unsafe { std::env::set_var("PATH", &path.path) };

    let logs = kubesocks_managed::state::StateDir::locate().ok().map(|s| s.logs());
    let _log_guard = kubesocks_managed::logging::init(0, true, logs.as_deref(), "tray.log");
    kubesocks_managed::limits::raise_nofile_limit();
    tracing::info!(
        from_login_shell = path.from_shell,
        added = ?path.added,
        "PATH for exec credential plugins: {}",
        path.path.to_string_lossy()
    );

    let (clicks, click_rx) = mpsc::unbounded_channel();
    let app = tauri::Builder::default()
        // First: a second start hands its arguments to the running app and exits.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| actions::show_window(app)))
        .plugin(tauri_plugin_autostart::init(MacosLauncher::LaunchAgent, Some(vec![launch::BACKGROUND])))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .invoke_handler(commands::handler())
        .setup(move |app| {
            setup(app.handle(), background, clicks, click_rx);
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
    clicks: mpsc::UnboundedSender<Action>,
    click_rx: mpsc::UnboundedReceiver<Action>,
) {
    let signals = tauri::async_runtime::block_on(async { Signals::listen() });
    let host = match tauri::async_runtime::block_on(Host::start()) {
        Ok(host) => host,
        Err(e) => {
            let message = hints::cannot_start(&e);
            tracing::error!("{message}");
            eprintln!("kubesocks-tray: {message}");
            // Sent here and now: the notification plugin sends in the background,
            // and the app is about to exit. Started from a launcher, this is
            // the only sign the user gets.
            let shown = notify_rust::Notification::new()
                .appname("kubesocks")
                .summary("kubesocks cannot start")
                .body(&actions::as_text(&message))
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
    if saved.shared_port.is_some() {
        let (host, settings, handle) = (host.clone(), saved.clone(), app.app_handle().clone());
        tauri::async_runtime::spawn(async move {
            if let Err(e) = host.apply_shared_port(&settings).await {
                tracing::error!(error = %e, "cannot open the shared port");
                actions::notify(&handle, "kubesocks: no shared port", &e.to_string());
            }
        });
    }
    let reconnect = saved.reconnect_at_start;
    app.manage(AppState::new(host.clone(), saved, settings_path, settings::remembered_path()));
    if reconnect {
        let handle = app.app_handle().clone();
        tauri::async_runtime::spawn(async move { actions::reconnect_remembered(&handle).await });
    }

    let window = WebviewWindowBuilder::new(app, WINDOW, WebviewUrl::App("index.html".into()))
        .title("kubesocks")
        .inner_size(780.0, 620.0)
        .min_inner_size(560.0, 420.0)
        .visible(!background)
        .build();
    if let Err(e) = window {
        tracing::error!(error = %e, "cannot open the window");
    }

    let tray = tauri::async_runtime::block_on(tray::spawn(clicks));
    app.manage(TrayItem(Mutex::new(tray)));

    tauri::async_runtime::spawn(forward(app.clone()));
    tauri::async_runtime::spawn(forward_activity(app.clone()));
    tauri::async_runtime::spawn(follow_kubeconfig(app.clone()));
    tauri::async_runtime::spawn(handle_clicks(app.clone(), click_rx));
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
                let tray = app.try_state::<TrayItem>().and_then(|t| t.0.lock().unwrap().take());
                if let Some(tray) = tray {
                    tauri::async_runtime::block_on(tray.shutdown());
                }
            }
        }
        _ => {}
    }
}

fn tray_shown(app: &AppHandle) -> bool {
    app.try_state::<TrayItem>().and_then(|t| t.0.lock().unwrap().as_ref().map(tray::Handle::shown)).unwrap_or(false)
}

/// Pushes the view to the window (event `view`) and the tray whenever it
/// changes: the live status or the contexts changed, or an error got too old
/// to count as failing (hence the tick). Also raises notifications, and tells
/// the window what started or stopped (event `announce`).
async fn forward(app: AppHandle) {
    let state = app.state::<AppState>();
    let mut live = state.host.live();
    let mut contexts = state.contexts.subscribe();
    let mut before = live.borrow_and_update().clone();
    let mut alerts = alerts::Alerts::default();
    let mut shown: Option<View> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut announcement = None;
        tokio::select! {
            changed = live.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = live.borrow_and_update().clone();
                for alert in alerts.between(&before, &now, view::unix_now()) {
                    actions::notify(&app, &alert.title, &alert.body);
                }
                announcement = view::announcement(&before, &now);
                before = now;
            }
            changed = contexts.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        let fresh = state.view();
        if shown.as_ref() != Some(&fresh) {
            if let Err(e) = events::VIEW.emit(&app, &fresh) {
                tracing::warn!(error = %e, "cannot send the view to the window");
            }
            let tray = app.try_state::<TrayItem>().and_then(|t| t.0.lock().unwrap().clone());
            if let Some(tray) = tray {
                tray.update(&fresh).await;
            }
            shown = Some(fresh);
        }
        if let Some(text) = announcement {
            let _ = events::ANNOUNCE.emit(&app, &text);
        }
    }
}

/// Pushes what the connections' clients are doing to the window (event
/// `activity`) as the daemon re-sends it: at most about once a second, and
/// only when it changed.
async fn forward_activity(app: AppHandle) {
    let mut activity = app.state::<AppState>().host.activity();
    while activity.changed().await.is_ok() {
        let now = activity.borrow_and_update().clone();
        if let Err(e) = events::ACTIVITY.emit(&app, &now) {
            tracing::warn!(error = %e, "cannot send the connections' activity to the window");
        }
    }
}

/// Reads the kubeconfig again when one of its files changes (edited,
/// replaced, created or deleted), so the window follows edits without a
/// restart, and when the connections change, so each new one is checked
/// against its entry. Polls the files' metadata: a few `stat`s every two
/// seconds cost nothing, need no dependency, and see a file that does not
/// exist yet, or one replaced by a rename (how editors and kubectl save),
/// which a watch on the file would lose.
async fn follow_kubeconfig(app: AppHandle) {
    let state = app.state::<AppState>();
    let mut every = tokio::time::interval(KUBECONFIG_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = None;
    loop {
        every.tick().await;
        let stamp = KubeconfigStamp::now(&state.host.current());
        // The first look only sets the mark: the contexts were read at start.
        if seen.as_ref().is_some_and(|seen| *seen != stamp) {
            actions::refresh_contexts(&app);
        }
        seen = Some(stamp);
    }
}

/// What differs when the kubeconfig is worth reading again.
#[derive(Debug, PartialEq, Eq)]
struct KubeconfigStamp {
    /// Each file (the app's, and those the connections were made from);
    /// none while it does not exist.
    files: Vec<(PathBuf, Option<FileStamp>)>,
    /// The connections' IDs.
    connections: BTreeSet<String>,
}

/// A file's device, inode, size, and modification and change times (s, ns).
type FileStamp = (u64, u64, u64, i64, i64, i64, i64);

impl KubeconfigStamp {
    fn now(live: &Live) -> KubeconfigStamp {
        let mut paths: BTreeSet<PathBuf> = KubeSettings::default().sources().unwrap_or_default().into_iter().collect();
        paths.extend(live.connections.iter().flat_map(|c| c.record.source_kubeconfigs.iter().cloned()));
        let files = paths
            .into_iter()
            .map(|path| {
                // The change time too: it moves even when a copy keeps the modification time.
                let meta = std::fs::metadata(&path)
                    .ok()
                    .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()));
                (path, meta)
            })
            .collect();
        KubeconfigStamp { files, connections: live.connections.iter().map(|c| c.record.id.clone()).collect() }
    }
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

/// The tray menu's clicks, in order.
async fn handle_clicks(app: AppHandle, mut clicks: mpsc::UnboundedReceiver<Action>) {
    while let Some(action) = clicks.recv().await {
        actions::perform(&app, action).await;
    }
}
