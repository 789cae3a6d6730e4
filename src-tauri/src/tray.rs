//! The tray icon and its menu, as a StatusNotifierItem over D-Bus (`ksni`).
//!
//! Not Tauri's own tray: on Linux that one loads libappindicator / libayatana
//! at run time, which has aborted other apps at start on desktops where it is
//! missing or mismatched. A StatusNotifierItem needs nothing but the session
//! bus and is what KDE, GNOME (AppIndicator extension), Xfce, Cinnamon, sway
//! and others show. Without a tray host the app keeps working through its
//! window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ksni::menu::{CheckmarkItem, StandardItem};
use ksni::{MenuItem, TrayMethods as _};
use kubesocks_engine::kubeconfig::ContextInfo;
use tokio::sync::mpsc::UnboundedSender;

use crate::host::{ConnectionStatus, Live};

/// What a click in the menu asks the app to do.
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

/// What the icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Connected,
    /// A connection reports an error, or a connect failed.
    Error,
}

/// How long a connection's last error keeps the icon red. Refusals count as
/// errors (a typo in a URL, a browser asking for outside hosts), so a red icon
/// that never went back would soon mean nothing. A failed connect stays red
/// until it is retried or switched off.
pub const ERROR_SHOWN_FOR_SECS: u64 = 60;

/// Whether the connection had an error in the last [`ERROR_SHOWN_FOR_SECS`] before `now` (Unix seconds).
fn recent_error(connection: &ConnectionStatus, now: u64) -> bool {
    connection.stats.last_error.as_ref().is_some_and(|e| now.saturating_sub(e.at) < ERROR_SHOWN_FOR_SECS)
}

/// The icon for `live` at `now` (Unix seconds).
pub fn state_of(live: &Live, now: u64) -> State {
    if live.connections.iter().any(|c| recent_error(c, now)) || live.attempts.iter().any(|a| a.error.is_some()) {
        State::Error
    } else if live.connections.is_empty() {
        State::Idle
    } else {
        State::Connected
    }
}

/// One context line of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub context: String,
    pub connected: bool,
    pub connecting: bool,
    pub url: Option<String>,
    pub error: bool,
}

/// The kubeconfig's contexts in order, then connected contexts it lacks.
pub fn entries(contexts: &[ContextInfo], live: &Live, now: u64) -> Vec<Entry> {
    let mut names: Vec<&str> = contexts.iter().map(|c| c.name.as_str()).collect();
    for c in &live.connections {
        if !names.contains(&c.record.context.as_str()) {
            names.push(&c.record.context);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let connection = live.connections.iter().find(|c| c.record.context == name);
            let attempt = live.attempts.iter().find(|a| a.context == name);
            Entry {
                context: name.to_string(),
                connected: connection.is_some(),
                connecting: connection.is_none() && attempt.is_some_and(|a| a.error.is_none()),
                url: connection.and_then(|c| c.socks_url.clone()),
                error: connection.is_some_and(|c| recent_error(c, now)) || attempt.is_some_and(|a| a.error.is_some()),
            }
        })
        .collect()
}

/// dbusmenu reads `_` as a mnemonic marker; context names are full of them (gke_project_zone_name).
fn label(text: &str) -> String {
    text.replace('_', "__")
}

pub struct Tray {
    entries: Vec<Entry>,
    state: State,
    summary: String,
    actions: UnboundedSender<Action>,
    /// Whether a tray host shows the item; the window must stay reachable when not.
    shown: Arc<AtomicBool>,
}

impl Tray {
    fn send(&self, action: Action) {
        // The receiver lives as long as the app; a send after it is gone is moot.
        let _ = self.actions.send(action);
    }
}

impl ksni::Tray for Tray {
    fn id(&self) -> String {
        "kubesocks".into()
    }

    fn title(&self) -> String {
        "kubesocks".into()
    }

    fn icon_pixmap(&self) -> Vec<ksni::Icon> {
        let pngs: [&[u8]; 2] = match self.state {
            State::Idle => {
                [include_bytes!("../../icons/tray-idle-32.png"), include_bytes!("../../icons/tray-idle-64.png")]
            }
            State::Connected => [
                include_bytes!("../../icons/tray-connected-32.png"),
                include_bytes!("../../icons/tray-connected-64.png"),
            ],
            State::Error => {
                [include_bytes!("../../icons/tray-error-32.png"), include_bytes!("../../icons/tray-error-64.png")]
            }
        };
        pngs.iter().filter_map(|png| pixmap(png)).collect()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip { title: "kubesocks".into(), description: self.summary.clone(), ..Default::default() }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        self.send(Action::Open);
    }

    fn menu_about_to_show(&mut self) {
        self.send(Action::Refresh);
    }

    fn watcher_online(&self) {
        self.shown.store(true, Ordering::Relaxed);
    }

    fn watcher_offline(&self, reason: ksni::OfflineReason) -> bool {
        tracing::info!(?reason, "no tray host shows the kubesocks icon now");
        self.shown.store(false, Ordering::Relaxed);
        true
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        let mut items: Vec<MenuItem<Self>> = vec![
            StandardItem { label: label(&self.summary), enabled: false, ..Default::default() }.into(),
            MenuItem::Separator,
        ];
        if self.entries.is_empty() {
            items.push(StandardItem { label: "No kube contexts".into(), enabled: false, ..Default::default() }.into());
        }
        for entry in &self.entries {
            let suffix = match (entry.connecting, entry.error) {
                (true, _) => " (connecting…)",
                (false, true) => " (error)",
                _ => "",
            };
            let context = entry.context.clone();
            let connected = entry.connected;
            items.push(
                CheckmarkItem {
                    label: label(&format!("{}{suffix}", entry.context)),
                    checked: entry.connected || entry.connecting,
                    enabled: !entry.connecting,
                    activate: Box::new(move |tray: &mut Self| {
                        tray.send(if connected {
                            Action::Disconnect(context.clone())
                        } else {
                            Action::Connect(context.clone())
                        })
                    }),
                    ..Default::default()
                }
                .into(),
            );
            if let Some(url) = &entry.url {
                let copy = url.clone();
                items.push(
                    StandardItem {
                        label: label(&format!("    Copy {url}")),
                        icon_name: "edit-copy".into(),
                        activate: Box::new(move |tray: &mut Self| tray.send(Action::Copy(copy.clone()))),
                        ..Default::default()
                    }
                    .into(),
                );
            }
        }
        items.push(MenuItem::Separator);
        items.push(
            StandardItem {
                label: "Open kubesocks".into(),
                activate: Box::new(|tray: &mut Self| tray.send(Action::Open)),
                ..Default::default()
            }
            .into(),
        );
        items.push(
            StandardItem {
                label: "Quit".into(),
                icon_name: "application-exit".into(),
                activate: Box::new(|tray: &mut Self| tray.send(Action::Quit)),
                ..Default::default()
            }
            .into(),
        );
        items
    }
}

fn summary(entries: &[Entry]) -> String {
    let connected: Vec<&str> = entries.iter().filter(|e| e.connected).map(|e| e.context.as_str()).collect();
    match connected.len() {
        0 => "Not connected".into(),
        1 => format!("Connected: {}", connected[0]),
        n => format!("{n} connected: {}", connected.join(", ")),
    }
}

/// A PNG as the ARGB32 (network byte order) pixmap StatusNotifierItem wants.
fn pixmap(png: &[u8]) -> Option<ksni::Icon> {
    let image = tauri::image::Image::from_bytes(png).ok()?;
    Some(ksni::Icon { width: image.width() as i32, height: image.height() as i32, data: rgba_to_argb(image.rgba()) })
}

fn rgba_to_argb(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4).flat_map(|p| [p[3], p[0], p[1], p[2]]).collect()
}

/// The running tray item.
#[derive(Clone)]
pub struct Handle {
    inner: ksni::Handle<Tray>,
    shown: Arc<AtomicBool>,
}

impl Handle {
    /// Shows the state at `now` (Unix seconds); returns at once (the tray
    /// service redraws on its own task).
    pub async fn update(&self, contexts: &[ContextInfo], live: &Live, now: u64) {
        let fresh = entries(contexts, live, now);
        let state = state_of(live, now);
        self.inner
            .update(move |tray| {
                tray.summary = summary(&fresh);
                tray.entries = fresh;
                tray.state = state;
            })
            .await;
    }

    /// Whether a tray host currently shows the icon.
    pub fn shown(&self) -> bool {
        self.shown.load(Ordering::Relaxed)
    }

    /// Takes the item off the bus, so the icon goes at once rather than when the process ends.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

/// Puts the item on the session bus. `None` when there is no session bus at
/// all; a desktop without a tray host yet still gets the item, which shows up
/// when a host starts.
pub async fn spawn(actions: UnboundedSender<Action>) -> Option<Handle> {
    // Shown until told otherwise: ksni reports a missing host (during spawn,
    // or later) through watcher_offline, and only a return through watcher_online.
    let shown = Arc::new(AtomicBool::new(true));
    let tray = Tray {
        entries: Vec::new(),
        state: State::Idle,
        summary: "Not connected".into(),
        actions,
        shown: shown.clone(),
    };
    match tray.assume_sni_available(true).spawn().await {
        Ok(inner) => {
            tracing::info!("tray item registered on the session bus");
            Some(Handle { inner, shown })
        }
        Err(e) => {
            tracing::warn!(error = %e, "no tray icon: the window is the way in");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Attempt, sample_connection};
    use kubesocks_engine::ErrorReport;

    fn ctx(name: &str) -> ContextInfo {
        ContextInfo {
            name: name.into(),
            cluster: "c".into(),
            server: "https://k:6443".into(),
            namespace: "default".into(),
            current: false,
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn conn(context: &str, port: u16, error: bool) -> ConnectionStatus {
        let mut c = sample_connection(&format!("{port:08x}"), context, port);
        c.stats.last_error = error.then(|| ErrorReport { message: "boom".into(), at: NOW - 5 });
        c
    }

    #[test]
    fn the_icon_state_follows_connections_and_errors() {
        assert_eq!(state_of(&Live::default(), NOW), State::Idle);
        let on = Live { connections: vec![conn("a", 1080, false)], attempts: vec![] };
        assert_eq!(state_of(&on, NOW), State::Connected);
        let failing = Live { connections: vec![conn("a", 1080, true)], attempts: vec![] };
        assert_eq!(state_of(&failing, NOW), State::Error);
        let later = NOW - 5 + ERROR_SHOWN_FOR_SECS;
        assert_eq!(state_of(&failing, later), State::Connected, "an old error no longer turns the icon red");
        let failed =
            Live { connections: vec![], attempts: vec![Attempt { context: "b".into(), error: Some("x".into()) }] };
        assert_eq!(state_of(&failed, later), State::Error, "a failed connect stays red");
        let pending = Live { connections: vec![], attempts: vec![Attempt { context: "b".into(), error: None }] };
        assert_eq!(state_of(&pending, NOW), State::Idle);
    }

    #[test]
    fn entries_list_contexts_in_order_with_urls_and_add_foreign_connections() {
        let live = Live {
            connections: vec![conn("prod", 1081, false), conn("elsewhere", 1082, true)],
            attempts: vec![Attempt { context: "dev".into(), error: None }],
        };
        let got = entries(&[ctx("dev"), ctx("prod"), ctx("staging")], &live, NOW);
        let summary: Vec<_> =
            got.iter().map(|e| (e.context.as_str(), e.connected, e.connecting, e.url.as_deref(), e.error)).collect();
        assert_eq!(
            summary,
            [
                ("dev", false, true, None, false),
                ("prod", true, false, Some("socks5h://127.0.0.1:1081"), false),
                ("staging", false, false, None, false),
                ("elsewhere", true, false, Some("socks5h://127.0.0.1:1082"), true),
            ]
        );
        assert_eq!(super::summary(&got), "2 connected: prod, elsewhere");
    }

    #[test]
    fn menu_labels_keep_underscores() {
        assert_eq!(label("gke_proj_zone_c"), "gke__proj__zone__c");
    }

    #[test]
    fn the_tray_icons_decode_to_argb_pixmaps() {
        assert_eq!(rgba_to_argb(&[1, 2, 3, 4, 5, 6, 7, 8]), [4, 1, 2, 3, 8, 5, 6, 7]);
        let icon = pixmap(include_bytes!("../../icons/tray-error-32.png")).expect("a PNG");
        assert_eq!((icon.width, icon.height, icon.data.len()), (32, 32, 32 * 32 * 4));
        assert!(icon.data.chunks_exact(4).any(|p| p[0] == 255), "some pixels are opaque");
    }
}
