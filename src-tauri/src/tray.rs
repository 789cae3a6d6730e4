//! The tray icon and its menu, as a StatusNotifierItem over D-Bus (`ksni`).
//!
//! Not Tauri's own tray: on Linux that one loads libappindicator / libayatana
//! at run time, which has aborted other apps at start on desktops where it is
//! missing or mismatched. A StatusNotifierItem needs nothing but the session
//! bus and is what KDE, GNOME (AppIndicator extension), Xfce, Cinnamon, sway
//! and others show. Without a tray host the app keeps working through its
//! window.
//!
//! It draws the rows and icon state of a [`View`] (the same the window
//! draws) and sends what a click asks for as an [`Action`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ksni::menu::{CheckmarkItem, StandardItem};
use ksni::{MenuItem, TrayMethods as _};
use tokio::sync::mpsc::UnboundedSender;

use crate::actions::Action;
use crate::view::{Icon, Row, RowState, View};

/// dbusmenu reads `_` as a mnemonic marker; context names are full of them (gke_project_zone_name).
fn label(text: &str) -> String {
    text.replace('_', "__")
}

struct Tray {
    rows: Vec<Row>,
    icon: Icon,
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
        let pngs: [&[u8]; 2] = match self.icon {
            Icon::Idle => {
                [include_bytes!("../../icons/tray-idle-32.png"), include_bytes!("../../icons/tray-idle-64.png")]
            }
            Icon::Connected => [
                include_bytes!("../../icons/tray-connected-32.png"),
                include_bytes!("../../icons/tray-connected-64.png"),
            ],
            Icon::Error => {
                [include_bytes!("../../icons/tray-error-32.png"), include_bytes!("../../icons/tray-error-64.png")]
            }
        };
        pngs.iter().filter_map(|png| pixmap(png)).collect()
    }

    /// A failing row asks for attention, which tray hosts may show (a
    /// highlight, a blink) beside the error icon.
    fn status(&self) -> ksni::Status {
        match self.icon {
            Icon::Error => ksni::Status::NeedsAttention,
            Icon::Idle | Icon::Connected => ksni::Status::Active,
        }
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
        if self.rows.is_empty() {
            items.push(StandardItem { label: "No kube contexts".into(), enabled: false, ..Default::default() }.into());
        }
        for row in &self.rows {
            let suffix = match row.state {
                RowState::Connecting => " (connecting…)",
                RowState::Reconnecting => " (reconnecting…)",
                RowState::Failing | RowState::Degraded | RowState::Failed => " (error)",
                RowState::Off | RowState::On => "",
            };
            let context = row.name.clone();
            let connected = row.connection.is_some();
            items.push(
                CheckmarkItem {
                    label: label(&format!("{}{suffix}", row.name)),
                    checked: row.switched_on,
                    enabled: row.state != RowState::Connecting,
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
            // The socks5h URL for tools, the PAC URL for browsers.
            let socks = row.url.clone().map(|url| (format!("    Copy {url}"), url));
            let pac = row.pac_url.clone().map(|url| ("    Copy PAC URL".to_string(), url));
            for (text, url) in [socks, pac].into_iter().flatten() {
                items.push(
                    StandardItem {
                        label: label(&text),
                        icon_name: "edit-copy".into(),
                        activate: Box::new(move |tray: &mut Self| tray.send(Action::Copy(url.clone()))),
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

/// The menu's first line and the tooltip.
fn summary(rows: &[Row]) -> String {
    let connected: Vec<&str> = rows.iter().filter(|r| r.connection.is_some()).map(|r| r.name.as_str()).collect();
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
    /// Shows `view`; returns at once (the tray service redraws on its own task).
    pub async fn update(&self, view: &View) {
        let rows = view.rows.clone();
        let icon = view.icon;
        self.inner
            .update(move |tray| {
                tray.summary = summary(&rows);
                tray.rows = rows;
                tray.icon = icon;
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
    let tray =
        Tray { rows: Vec::new(), icon: Icon::Idle, summary: "Not connected".into(), actions, shown: shown.clone() };
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
    use crate::host::{Attempt, Contexts, Live, sample_connection};
    use kubesocks_engine::kubeconfig::ContextInfo;

    fn ctx(name: &str) -> ContextInfo {
        ContextInfo {
            name: name.into(),
            cluster: "c".into(),
            server: "https://k:6443".into(),
            namespace: "default".into(),
            current: false,
        }
    }

    #[test]
    fn the_menu_has_a_check_item_per_row_with_its_url_and_state() {
        let contexts = Contexts { contexts: vec![ctx("dev"), ctx("prod"), ctx("staging")], ..Contexts::default() };
        let live = Live {
            connections: vec![
                sample_connection("00000439", "prod", 1081),
                sample_connection("0000043a", "elsewhere", 1082),
            ],
            attempts: vec![
                Attempt { context: "dev".into(), error: None },
                Attempt { context: "staging".into(), error: Some("unreachable".into()) },
            ],
            ..Live::default()
        };
        let view = crate::view::build(&contexts, &live, &Default::default(), 0);
        let tray = Tray {
            summary: summary(&view.rows),
            rows: view.rows,
            icon: view.icon,
            actions: tokio::sync::mpsc::unbounded_channel().0,
            shown: Arc::default(),
        };
        let items: Vec<(String, Option<bool>, bool)> = ksni::Tray::menu(&tray)
            .into_iter()
            .filter_map(|item| match item {
                MenuItem::Checkmark(c) => Some((c.label, Some(c.checked), c.enabled)),
                MenuItem::Standard(s) => Some((s.label, None, s.enabled)),
                _ => None,
            })
            .collect();
        let expect = |label: &str, checked: Option<bool>, enabled: bool| (label.to_string(), checked, enabled);
        assert_eq!(
            items,
            [
                expect("2 connected: prod, elsewhere", None, false),
                expect("dev (connecting…)", Some(true), false),
                expect("prod", Some(true), true),
                expect("    Copy socks5h://127.0.0.1:1081", None, true),
                expect("    Copy PAC URL", None, true),
                expect("staging (error)", Some(false), true),
                expect("elsewhere", Some(true), true),
                expect("    Copy socks5h://127.0.0.1:1082", None, true),
                expect("    Copy PAC URL", None, true),
                expect("Open kubesocks", None, true),
                expect("Quit", None, true),
            ]
        );
    }

    #[test]
    fn the_summary_names_the_connected_contexts() {
        let contexts = Contexts { contexts: vec![ctx("dev")], ..Contexts::default() };
        assert_eq!(
            summary(&crate::view::build(&contexts, &Live::default(), &Default::default(), 0).rows),
            "Not connected"
        );
        let one =
            Live { connections: vec![sample_connection("00000001", "dev", 1081)], attempts: vec![], ..Live::default() };
        assert_eq!(summary(&crate::view::build(&contexts, &one, &Default::default(), 0).rows), "Connected: dev");
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
