//! The tray's settings: what new connections listen on and resolve with,
//! whether the app starts at login and connects again what was left on.
//! Kept as JSON in the config directory, beside the contexts left on
//! ([`Remembered`]). Every default is the engine's ([`ProxyConfig`]'s
//! constants), so the CLI, the daemon, the tray and the window agree on them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kubesocks_engine::ProxyConfig;
use serde::{Deserialize, Serialize};

/// What new connections listen on and resolve with, and what the app does at login and at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(default)]
pub struct Settings {
    /// First SOCKS port tried; the next free one is taken when it is busy.
    pub socks_port: u16,
    /// Serve an HTTP proxy too, from this port on; none: SOCKS only.
    pub http_port: Option<u16>,
    /// The DNS suffix of the cluster's Service names.
    pub cluster_domain: String,
    /// Dial names outside the cluster from this machine instead of refusing
    /// them, so a browser given the socks5h URL keeps the rest of the web.
    pub passthrough: bool,
    /// Answer DNS for cluster names, from this port on (UDP and TCP); none: off.
    pub dns_port: Option<u16>,
    /// One port for every connected context (`web.shop.<alias>`); none: off.
    pub shared_port: Option<u16>,
    /// The context that names without an alias go to on the shared port.
    pub default_context: Option<String>,
    /// The alias a context's names end in on the shared port, where it is
    /// not the context's name made a DNS label (context → alias).
    pub aliases: BTreeMap<String, String>,
    /// Start the app in the tray at login.
    pub start_at_login: bool,
    /// Connect at start the contexts that were switched on in the app when it quit.
    pub reconnect_at_start: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let defaults = Defaults::default();
        Settings {
            socks_port: defaults.socks_port,
            http_port: None,
            cluster_domain: defaults.cluster_domain,
            passthrough: false,
            dns_port: None,
            shared_port: None,
            default_context: None,
            aliases: BTreeMap::new(),
            start_at_login: false,
            reconnect_at_start: true,
        }
    }
}

/// What the settings page starts a field at: the engine's defaults. The HTTP
/// port is offered when HTTP is switched on, though HTTP is off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Defaults {
    /// The first SOCKS port tried.
    pub socks_port: u16,
    /// The first HTTP port tried.
    pub http_port: u16,
    /// The DNS helper's port offered when it is switched on.
    pub dns_port: u16,
    /// The shared port offered when it is switched on.
    pub shared_port: u16,
    /// The cluster DNS domain.
    pub cluster_domain: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            socks_port: ProxyConfig::DEFAULT_SOCKS_PORT,
            http_port: ProxyConfig::DEFAULT_HTTP_PORT,
            dns_port: ProxyConfig::DEFAULT_DNS_PORT,
            shared_port: ProxyConfig::DEFAULT_SHARED_PORT,
            cluster_domain: ProxyConfig::DEFAULT_CLUSTER_DOMAIN.into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("port 0 is not a port; use 1 to 65535")]
    ZeroPort,
    #[error("the SOCKS, HTTP and shared ports must differ")]
    SamePort,
    #[error("{0:?} is not a DNS domain (letters, digits, '-' and '.', e.g. {example})", example = ProxyConfig::DEFAULT_CLUSTER_DOMAIN)]
    Domain(String),
    #[error("{alias:?}, the alias of {context}, is not a DNS label (letters, digits and '-', at most 63)")]
    Alias { context: String, alias: String },
    #[error("{first} and {second} have the same alias {alias:?}")]
    SameAlias { alias: String, first: String, second: String },
}

impl Settings {
    /// The settings as saved: checked, the domain trimmed and lower-cased.
    pub fn validated(mut self) -> Result<Settings, SettingsError> {
        if self.socks_port == 0 || self.http_port == Some(0) || self.shared_port == Some(0) || self.dns_port == Some(0)
        {
            return Err(SettingsError::ZeroPort);
        }
        let shared_clash = self.shared_port.is_some_and(|p| p == self.socks_port || Some(p) == self.http_port);
        if self.http_port == Some(self.socks_port) || shared_clash {
            return Err(SettingsError::SamePort);
        }
        self.default_context = self.default_context.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
        let domain = self.cluster_domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(SettingsError::Domain(self.cluster_domain));
        }
        self.cluster_domain = domain;
        let mut aliases = BTreeMap::new();
        let mut taken = BTreeMap::new();
        for (context, alias) in std::mem::take(&mut self.aliases) {
            let alias = alias.trim().to_ascii_lowercase();
            if alias.is_empty() {
                continue;
            }
            if !label_ok(&alias) {
                return Err(SettingsError::Alias { context, alias });
            }
            if let Some(first) = taken.insert(alias.clone(), context.clone()) {
                return Err(SettingsError::SameAlias { alias, first, second: context });
            }
            aliases.insert(context, alias);
        }
        self.aliases = aliases;
        Ok(self)
    }
}

/// Where the settings live: `<config dir>/kubesocks/tray.json`.
pub fn path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "kubesocks").map(|d| d.config_dir().join("tray.json"))
}

/// The saved settings; defaults when there are none or they are unreadable
/// (then the reason is logged and the file is left for the user to inspect).
pub fn load(path: &Path) -> Settings {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the settings; using defaults");
            Settings::default()
        }
        Ok(bytes) => match serde_json::from_slice::<Settings>(&bytes).map(Settings::validated) {
            Ok(Ok(settings)) => settings,
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "invalid settings; using defaults");
                Settings::default()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable settings; using defaults");
                Settings::default()
            }
        },
    }
}

/// Writes the settings, replacing the file at once.
pub fn save(path: &Path, settings: &Settings) -> std::io::Result<()> {
    replace(path, &serde_json::to_vec_pretty(settings).expect("settings serialize"))
}

/// Writes `bytes` to `path`, creating its directory.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a crash never leaves half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The contexts switched on in the app (its window or tray menu) and not
/// switched off since, in the order they were switched on: what the app
/// connects again at its next start when [`Settings::reconnect_at_start`]
/// says so.
///
/// A file of its own beside the settings, not a field of them: it changes
/// with every switch, on the app's side, while the settings page saves the
/// settings whole as it read them when it opened, which would put back the
/// list of that moment. It is the user's choice, so neither a failure nor
/// quitting (which stops every proxy) changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Remembered {
    pub contexts: Vec<String>,
}

impl Remembered {
    /// Adds `context` (last); false when it was there already.
    pub fn switched_on(&mut self, context: &str) -> bool {
        if self.contexts.iter().any(|c| c == context) {
            return false;
        }
        self.contexts.push(context.to_string());
        true
    }

    /// Removes `context`; false when it was not there.
    pub fn switched_off(&mut self, context: &str) -> bool {
        let before = self.contexts.len();
        self.contexts.retain(|c| c != context);
        self.contexts.len() != before
    }
}

/// Where the contexts left on live: `<config dir>/kubesocks/remembered-contexts.json`.
pub fn remembered_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "kubesocks").map(|d| d.config_dir().join("remembered-contexts.json"))
}

/// The contexts left on; none when the file is missing or unreadable (then
/// the reason is logged: nothing comes back on, which is safe).
pub fn load_remembered(path: &Path) -> Remembered {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Remembered::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the contexts left on");
            Remembered::default()
        }
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable list of the contexts left on");
            Remembered::default()
        }),
    }
}

/// Writes the contexts left on, replacing the file at once.
pub fn save_remembered(path: &Path, remembered: &Remembered) -> std::io::Result<()> {
    replace(path, &serde_json::to_vec_pretty(remembered).expect("the list serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_engines_socks_only_no_autostart_and_reconnecting_what_was_left_on() {
        let s = Settings::default();
        assert_eq!(
            (s.socks_port, s.http_port, s.cluster_domain.as_str(), s.passthrough, s.start_at_login),
            (ProxyConfig::DEFAULT_SOCKS_PORT, None, ProxyConfig::DEFAULT_CLUSTER_DOMAIN, false, false)
        );
        assert!(s.reconnect_at_start);
        let offered = Defaults::default();
        assert_eq!(offered.http_port, ProxyConfig::DEFAULT_HTTP_PORT, "the port offered when HTTP is switched on");
        assert_eq!((offered.socks_port, offered.cluster_domain), (s.socks_port, s.cluster_domain));
    }

    #[test]
    fn validation_normalises_the_domain_and_rejects_nonsense() {
        let ok = Settings { cluster_domain: " Corp.Example. ".into(), ..Settings::default() }.validated().unwrap();
        assert_eq!(ok.cluster_domain, "corp.example");
        for bad in ["", ".", "a..b", "-a.b", "a b", "a_b.c", "ünï.code"] {
            let s = Settings { cluster_domain: bad.into(), ..Settings::default() };
            assert_eq!(s.validated(), Err(SettingsError::Domain(bad.into())), "{bad:?}");
        }
        let zero = Settings { socks_port: 0, ..Settings::default() };
        assert_eq!(zero.validated(), Err(SettingsError::ZeroPort));
        let same = Settings { socks_port: 2000, http_port: Some(2000), ..Settings::default() };
        assert_eq!(same.validated(), Err(SettingsError::SamePort));
        let shared = Settings { socks_port: 2000, shared_port: Some(2000), ..Settings::default() };
        assert_eq!(shared.validated(), Err(SettingsError::SamePort));
        let blank = Settings { default_context: Some("  ".into()), ..Settings::default() };
        assert_eq!(blank.validated().unwrap().default_context, None, "a blank default context is none");
    }

    #[test]
    fn aliases_are_dns_labels_each_used_once_and_blank_ones_are_dropped() {
        let aliases = |pairs: &[(&str, &str)]| pairs.iter().map(|(c, a)| (c.to_string(), a.to_string())).collect();
        let s = Settings { aliases: aliases(&[("prod-eu", " Prod "), ("dev", "  ")]), ..Settings::default() };
        assert_eq!(s.validated().unwrap().aliases, aliases(&[("prod-eu", "prod")]));
        for bad in ["a.b", "a b", "-a", "a-", "ü", &"a".repeat(64)] {
            let s = Settings { aliases: aliases(&[("ctx", bad)]), ..Settings::default() };
            let alias = bad.to_string();
            assert_eq!(s.validated(), Err(SettingsError::Alias { context: "ctx".into(), alias }), "{bad:?}");
        }
        let twice = Settings { aliases: aliases(&[("a", "x"), ("b", "X")]), ..Settings::default() };
        let e = SettingsError::SameAlias { alias: "x".into(), first: "a".into(), second: "b".into() };
        assert_eq!(twice.validated(), Err(e));
    }

    #[test]
    fn settings_round_trip_through_the_file_and_survive_a_broken_one() {
        let dir = std::env::temp_dir().join(format!("kubesocks-settings-{}", std::process::id()));
        let path = dir.join("nested/tray.json");
        assert_eq!(load(&path), Settings::default(), "missing file: defaults");
        let s = Settings {
            socks_port: 1999,
            http_port: Some(2999),
            cluster_domain: "c.l".into(),
            passthrough: true,
            dns_port: Some(5999),
            shared_port: Some(3999),
            default_context: Some("prod".into()),
            aliases: BTreeMap::from([("arn:aws:eks:eu:1:cluster/prod".into(), "prod".into())]),
            start_at_login: true,
            reconnect_at_start: false,
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path), s);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path), Settings::default());
        std::fs::write(&path, br#"{"socks_port": 2000}"#).unwrap();
        assert_eq!(load(&path).socks_port, 2000, "missing fields take defaults");
        assert!(load(&path).reconnect_at_start, "saved before the setting existed: on");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_contexts_left_on_keep_their_order_and_their_file() {
        let mut on = Remembered::default();
        assert!(on.switched_on("prod") && on.switched_on("dev"));
        assert!(!on.switched_on("prod"), "once each");
        assert_eq!(on.contexts, ["prod", "dev"], "in the order they were switched on");
        assert!(on.switched_off("prod") && !on.switched_off("prod"));
        assert!(on.switched_on("prod"));
        assert_eq!(on.contexts, ["dev", "prod"]);

        let dir = std::env::temp_dir().join(format!("kubesocks-remembered-{}", std::process::id()));
        let path = dir.join("nested/remembered-contexts.json");
        assert_eq!(load_remembered(&path), Remembered::default(), "missing file: none");
        save_remembered(&path, &on).unwrap();
        assert_eq!(load_remembered(&path), on);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap()).unwrap(),
            serde_json::json!({"contexts": ["dev", "prod"]})
        );
        std::fs::write(&path, b"[not the list").unwrap();
        assert_eq!(load_remembered(&path), Remembered::default(), "unreadable: none come back");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
