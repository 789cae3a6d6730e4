//! The kubeconfig document: which files, which context and default
//! namespace, the way kubectl reads them; a context's own standalone copy
//! (what a managed connection keeps on disk); and the environment its exec
//! plugin runs with. Building a client from it is [`super::connect`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use base64::Engine as _;

use kube::config::KubeconfigError;

pub use super::connect::{Cluster, connect, connect_to};
pub use super::exec::{ExecError, Redactor};
use super::proxy_url::ProxyUrl;
pub use super::proxy_url::ProxyUrlError;
pub use kube::config::Kubeconfig;
use serde::Serialize;

/// The kubectl-style global flags.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// The kubeconfig file; none: `$KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The context; none: the kubeconfig's current one.
    pub context: Option<String>,
    /// The namespace for short names; none: the context's, else `default`.
    pub namespace: Option<String>,
}

/// Why a kubeconfig could not be read, or its cluster not reached.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// A kubeconfig file is unreadable or malformed.
    #[error("cannot read the kubeconfig: {0}")]
    Read(#[source] KubeconfigError),
    /// There is no kubeconfig at all.
    #[error("no kubeconfig: KUBECONFIG names none and ~/.kube/config does not exist")]
    NoKubeconfig,
    /// A file the context names (a certificate, a key) is unreadable.
    #[error("cannot read {}, named by context {context}: {source}", path.display())]
    Flatten {
        /// The context.
        context: String,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The context asked for is not in the kubeconfig.
    #[error("the kubeconfig has no context {name:?}; it has: {available}")]
    UnknownContext {
        /// The context asked for.
        name: String,
        /// The contexts there are, comma-separated.
        available: String,
    },
    /// No context was asked for and the kubeconfig names no current one.
    #[error("the kubeconfig has no current context (it has: {available})")]
    NoContext {
        /// The contexts there are, comma-separated.
        available: String,
    },
    /// The context's cluster, user or auth settings are not usable.
    #[error("the kubeconfig's context {context} is unusable: {source}")]
    Config {
        /// The context.
        context: String,
        /// What kube said.
        #[source]
        source: KubeconfigError,
    },
    /// The context's exec credential plugin is not on PATH.
    #[error(
        "context {context} gets its credentials from the exec plugin {command:?}, which is not on PATH ({path}); install it, or connect from a shell that finds it"
    )]
    ExecPluginMissing {
        /// The context.
        context: String,
        /// The plugin's command.
        command: String,
        /// The PATH it was looked for on.
        path: String,
    },
    /// The context's exec credential plugin gave no credential.
    #[error("context {context} got no credentials: {source}")]
    Exec {
        /// The context.
        context: String,
        /// What went wrong with the plugin.
        #[source]
        source: ExecError,
    },
    /// The context's cluster names a `proxy-url` kubesocks cannot use.
    #[error("the cluster of context {context} names a proxy-url kubesocks cannot use")]
    ProxyUrl {
        /// The context.
        context: String,
        /// What is wrong with the proxy-url.
        #[source]
        source: ProxyUrlError,
    },
    /// The API client could not be built (TLS settings, proxy).
    #[error("cannot create a client for {server}: {source}")]
    Client {
        /// The API server's URL.
        server: String,
        /// What kube said.
        #[source]
        source: kube::Error,
    },
    /// The API server refused the credentials (401/403 to the first request).
    #[error("the API server at {server} rejected the credentials of context {context} (HTTP {code}): {message}")]
    Unauthorized {
        /// The API server's URL.
        server: String,
        /// The context.
        context: String,
        /// The HTTP status.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// The API server could not be reached.
    #[error("cannot reach the API server at {server}: {source}")]
    Unreachable {
        /// The API server's URL.
        server: String,
        /// What failed.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer the first request in time.
    #[error("the API server at {server} did not answer within {0:?}", super::connect::API_TIMEOUT)]
    Timeout {
        /// The API server's URL.
        server: String,
    },
}

/// One context of a kubeconfig, as `contexts` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ContextInfo {
    /// The context's name.
    pub name: String,
    /// Its cluster's name.
    pub cluster: String,
    /// Its API server's URL.
    pub server: String,
    /// Its namespace (`default` when it names none).
    pub namespace: String,
    /// Whether it is the kubeconfig's current context.
    pub current: bool,
}

impl KubeSettings {
    /// The kubeconfig files these settings name, absolute, the way kubectl
    /// finds them: `--kubeconfig`, else every file in `$KUBECONFIG`, else
    /// `~/.kube/config`.
    pub fn sources(&self) -> Result<Vec<PathBuf>, KubeError> {
        let paths: Vec<PathBuf> = match (&self.kubeconfig, std::env::var_os("KUBECONFIG")) {
            (Some(path), _) => vec![path.clone()],
            (None, Some(list)) if std::env::split_paths(&list).any(|p| !p.as_os_str().is_empty()) => {
                std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect()
            }
            _ => vec![std::env::home_dir().ok_or(KubeError::NoKubeconfig)?.join(".kube").join("config")],
        };
        Ok(paths.into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect())
    }
}

/// Reads and merges kubeconfig files, first file wins (kubectl's rules).
pub fn read_files(paths: &[PathBuf]) -> Result<Kubeconfig, KubeError> {
    if paths.is_empty() {
        return Err(KubeError::NoKubeconfig);
    }
    paths
        .iter()
        .try_fold(Kubeconfig::default(), |merged, path| Kubeconfig::read_from(path).and_then(|kc| merged.merge(kc)))
        .map_err(KubeError::Read)
}

pub(super) fn read(settings: &KubeSettings) -> Result<Kubeconfig, KubeError> {
    read_files(&settings.sources()?)
}

/// The context to use: the one asked for, else the kubeconfig's current one.
pub fn choose_context(kc: &Kubeconfig, asked: Option<&str>) -> Result<String, KubeError> {
    let available = || kc.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    match (asked, &kc.current_context) {
        (Some(name), _) if !kc.contexts.iter().any(|c| c.name == name) => {
            Err(KubeError::UnknownContext { name: name.to_string(), available: available() })
        }
        (Some(name), _) => Ok(name.to_string()),
        (None, Some(name)) if !name.is_empty() => Ok(name.clone()),
        (None, _) => Err(KubeError::NoContext { available: available() }),
    }
}

/// A kubeconfig holding only `context`, its cluster and its user, with the
/// certificate and key files they name copied in (`kubectl config view
/// --minify --flatten`), so it stands on its own. Token files and exec
/// plugins stay references: they are meant to be re-read.
pub fn standalone(kc: &Kubeconfig, context: &str) -> Result<Kubeconfig, KubeError> {
    let named = kc.contexts.iter().find(|c| c.name == context).ok_or_else(|| KubeError::UnknownContext {
        name: context.to_string(),
        available: kc.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
    })?;
    let ctx = named.context.clone().unwrap_or_default();
    let inline = |path: &Option<String>| -> Result<Option<String>, KubeError> {
        let Some(path) = path else { return Ok(None) };
        let bytes = std::fs::read(path).map_err(|source| KubeError::Flatten {
            context: context.to_string(),
            path: PathBuf::from(path),
            source,
        })?;
        Ok(Some(base64::engine::general_purpose::STANDARD.encode(bytes)))
    };
    let mut clusters: Vec<_> = kc.clusters.iter().filter(|c| c.name == ctx.cluster).cloned().collect();
    for named in &mut clusters {
        if let Some(cluster) = &mut named.cluster
            && let Some(data) = inline(&cluster.certificate_authority.take())?
        {
            cluster.certificate_authority_data = Some(data);
        }
    }
    let user = ctx.user.clone().unwrap_or_default();
    let mut users: Vec<_> = kc.auth_infos.iter().filter(|u| u.name == user).cloned().collect();
    for named in &mut users {
        if let Some(auth) = &mut named.auth_info {
            if let Some(data) = inline(&auth.client_certificate.take())? {
                auth.client_certificate_data = Some(data);
            }
            if let Some(data) = inline(&auth.client_key.take())? {
                auth.client_key_data = Some(data.into());
            }
        }
    }
    Ok(Kubeconfig {
        clusters,
        auth_infos: users,
        contexts: vec![named.clone()],
        current_context: Some(context.to_string()),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Default::default()
    })
}

/// Which of a client's environment variables reach its exec credential
/// plugins in the daemon: PATH (to find `aws`, `gke-gcloud-auth-plugin`,
/// `kubelogin`) and the cloud CLIs' own variables (profiles, regions, config
/// dirs, and the short-lived keys `aws-vault` and SSO logins export).
pub fn is_exec_env(name: &str) -> bool {
    const PREFIXES: [&str; 6] = ["AWS_", "AZURE_", "AAD_", "CLOUDSDK_", "GOOGLE_", "KUBELOGIN_"];
    name == "PATH" || name == "USE_GKE_GCLOUD_AUTH_PLUGIN" || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// This process's variables that [`is_exec_env`] picks.
pub fn exec_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| is_exec_env(k))
        .collect()
}

/// Gives every exec credential plugin of `kc` the variables of `env` that
/// its own `env` list does not set (the kubeconfig's word wins). Kept in
/// memory only: the connection's kubeconfig file never holds them.
pub fn add_exec_env(kc: &mut Kubeconfig, env: &BTreeMap<String, String>) {
    for exec in kc.auth_infos.iter_mut().filter_map(|u| u.auth_info.as_mut()?.exec.as_mut()) {
        let list = exec.env.get_or_insert_with(Vec::new);
        let set: Vec<String> = list.iter().filter_map(|e| e.get("name").cloned()).collect();
        for (name, value) in env.iter().filter(|(name, _)| !set.contains(name)) {
            list.push(HashMap::from([("name".to_string(), name.clone()), ("value".to_string(), value.clone())]));
        }
    }
}

/// Writes a kubeconfig as text kubectl reads (JSON, which is YAML).
pub fn to_text(kc: &Kubeconfig) -> String {
    serde_json::to_string_pretty(kc).expect("a kubeconfig serializes")
}

/// The cluster of `context`.
fn cluster_of<'a>(kc: &'a Kubeconfig, context: &str) -> Option<&'a kube::config::Cluster> {
    let cluster = kc.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.as_ref()).map(|c| &c.cluster);
    kc.clusters.iter().find(|c| Some(&c.name) == cluster).and_then(|c| c.cluster.as_ref())
}

/// The API server URL of `context`, as the kubeconfig writes it.
pub fn server_of(kc: &Kubeconfig, context: &str) -> String {
    cluster_of(kc, context).and_then(|c| c.server.clone()).unwrap_or_default().trim_end_matches('/').to_string()
}

/// The proxy `context`'s cluster is reached through, from its `proxy-url`.
/// Only the kubeconfig says so, not `HTTPS_PROXY`: the daemon and the tray
/// app, started from elsewhere, must reach a cluster the way the shell does.
pub(super) fn proxy_of(kc: &Kubeconfig, context: &str) -> Result<Option<ProxyUrl>, ProxyUrlError> {
    match cluster_of(kc, context).and_then(|c| c.proxy_url.as_deref()).filter(|url| !url.trim().is_empty()) {
        Some(url) => ProxyUrl::parse(url).map(Some),
        None => Ok(None),
    }
}

/// Every context the kubeconfig offers.
pub fn contexts(settings: &KubeSettings) -> Result<Vec<ContextInfo>, KubeError> {
    let kc = read(settings)?;
    let current = settings.context.clone().or(kc.current_context.clone());
    Ok(kc
        .contexts
        .iter()
        .map(|named| {
            let ctx = named.context.clone().unwrap_or_default();
            let server = server_of(&kc, &named.name);
            ContextInfo {
                name: named.name.clone(),
                cluster: ctx.cluster.clone(),
                server,
                namespace: ctx.namespace.clone().unwrap_or_else(|| "default".into()),
                current: current.as_deref() == Some(named.name.as_str()),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_plugins_get_path_and_the_cloud_clis_variables_only() {
        for name in ["PATH", "AWS_PROFILE", "AWS_SESSION_TOKEN", "CLOUDSDK_CONFIG", "GOOGLE_APPLICATION_CREDENTIALS"] {
            assert!(is_exec_env(name), "{name}");
        }
        for name in ["HOME", "KUBECONFIG", "SSH_AUTH_SOCK", "MY_AWS_PROFILE", "path"] {
            assert!(!is_exec_env(name), "{name}");
        }
    }

    #[test]
    fn the_proxy_url_stays_in_a_connections_own_kubeconfig() {
        let kc: Kubeconfig = serde_json::from_value(serde_json::json!({
            "clusters": [
                {"name": "k", "cluster": {"server": "https://10.0.0.1:6443", "proxy-url": "socks5://bastion:1080"}},
                {"name": "other", "cluster": {"server": "https://10.0.0.2:6443", "proxy-url": "http://elsewhere:3128"}}
            ],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}]
        }))
        .unwrap();
        // Written and read back as the daemon does with the connection's file.
        let own = Kubeconfig::from_yaml(&to_text(&standalone(&kc, "c").unwrap())).unwrap();
        assert_eq!(own.clusters.len(), 1);
        assert_eq!(own.clusters[0].cluster.as_ref().unwrap().proxy_url.as_deref(), Some("socks5://bastion:1080"));
        assert_eq!(proxy_of(&own, "c").unwrap().unwrap().to_string(), "socks5://bastion:1080");
    }

    #[test]
    fn the_kubeconfigs_own_exec_env_wins() {
        let mut kc: Kubeconfig = serde_json::from_value(serde_json::json!({
            "users": [
                {"name": "plugin", "user": {"exec": {"command": "aws", "env": [{"name": "AWS_PROFILE", "value": "prod"}]}}},
                {"name": "token", "user": {"token": "t"}}
            ]
        }))
        .unwrap();
        let env = BTreeMap::from([
            ("AWS_PROFILE".to_string(), "dev".to_string()),
            ("PATH".to_string(), "/opt/aws/bin:/usr/bin".to_string()),
        ]);
        add_exec_env(&mut kc, &env);
        let exec = kc.auth_infos[0].auth_info.as_ref().unwrap().exec.as_ref().unwrap();
        let pairs: Vec<(&str, &str)> =
            exec.env.iter().flatten().map(|e| (e["name"].as_str(), e["value"].as_str())).collect();
        assert_eq!(pairs, [("AWS_PROFILE", "prod"), ("PATH", "/opt/aws/bin:/usr/bin")]);
        assert!(kc.auth_infos[1].auth_info.as_ref().unwrap().exec.is_none(), "users without a plugin are untouched");
    }
}
