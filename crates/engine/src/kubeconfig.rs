//! Which cluster to talk to: kubeconfig, context and default namespace, the
//! way kubectl reads them, and a first request that proves the API server is
//! reachable and accepts the credentials.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;

use kube::config::{KubeConfigOptions, KubeconfigError};

use crate::exec::{Credential, EXEC_TIMEOUT, ExecAuth, ExecAuthLayer};
pub use crate::exec::{ExecError, Redactor};
use crate::proxy_url::ProxyUrl;
pub use crate::proxy_url::ProxyUrlError;
pub use kube::config::Kubeconfig;
use kube::{Client, Config};
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

/// A connected, verified cluster.
#[derive(Clone)]
pub struct Cluster {
    /// The API client, with the context's credentials.
    pub client: Client,
    /// The context's name.
    pub context: String,
    /// The API server's URL.
    pub server: String,
    /// The proxy the API server is reached through (the kubeconfig's
    /// `proxy-url`, without user and password), if any.
    pub proxy: Option<String>,
    /// Namespace for short names: `-n`, else the context's, else `default`.
    pub namespace: String,
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
    #[error("the API server at {server} did not answer within {0:?}", API_TIMEOUT)]
    Timeout {
        /// The API server's URL.
        server: String,
    },
}

const API_TIMEOUT: Duration = Duration::from_secs(15);

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

fn read(settings: &KubeSettings) -> Result<Kubeconfig, KubeError> {
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
fn proxy_of(kc: &Kubeconfig, context: &str) -> Result<Option<ProxyUrl>, ProxyUrlError> {
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

/// Builds a client for the chosen context and checks that the API server answers.
pub async fn connect(settings: &KubeSettings) -> Result<Cluster, KubeError> {
    let kc = read(settings)?;
    let context = choose_context(&kc, settings.context.as_deref())?;
    connect_to(kc, &context, settings.namespace.as_deref()).await
}

/// Builds a client for `context` of `kc` and checks that the API server
/// answers. `namespace` overrides the context's default namespace.
pub async fn connect_to(kc: Kubeconfig, context: &str, namespace: Option<&str>) -> Result<Cluster, KubeError> {
    connect_with(kc, context, namespace, EXEC_TIMEOUT).await
}

/// [`connect_to`], with an exec plugin given `exec_timeout` per run.
async fn connect_with(
    kc: Kubeconfig,
    context: &str,
    namespace: Option<&str>,
    exec_timeout: Duration,
) -> Result<Cluster, KubeError> {
    // kube's own error for this is a bare "No such file or directory".
    if let Some((command, path)) = missing_exec_plugin(&kc, context) {
        return Err(KubeError::ExecPluginMissing { context: context.to_string(), command, path });
    }
    let context = context.to_string();
    let proxy = proxy_of(&kc, &context).map_err(|source| KubeError::ProxyUrl { context: context.clone(), source })?;
    let options = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
    let mut config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|source| KubeError::Config { context: context.clone(), source })?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    if let Some(ns) = namespace {
        config.default_namespace = ns.to_string();
    }
    let namespace = config.default_namespace.clone();
    let exec = take_exec(&mut config, exec_timeout)
        .await
        .map_err(|source| KubeError::Exec { context: context.clone(), source })?;
    if let Some(proxy) = &proxy {
        tracing::info!(%server, %proxy, "the API server is reached through the kubeconfig's proxy-url");
    }
    let client =
        client(config, exec, proxy.as_ref()).map_err(|source| KubeError::Client { server: server.clone(), source })?;
    match tokio::time::timeout(API_TIMEOUT, client.apiserver_version()).await {
        Err(_) => Err(KubeError::Timeout { server }),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 || status.code == 403 => {
            Err(KubeError::Unauthorized { server, context, code: status.code, message: status.message })
        }
        Ok(Err(source)) => Err(KubeError::Unreachable { server, source }),
        Ok(Ok(_)) => Ok(Cluster { client, context, server, proxy: proxy.map(|p| p.to_string()), namespace }),
    }
}

/// The exec plugin of `context`'s user, with the PATH it was looked for on,
/// when it cannot be found there (the plugin's own `env` PATH, else ours).
fn missing_exec_plugin(kc: &Kubeconfig, context: &str) -> Option<(String, String)> {
    let user = kc.contexts.iter().find(|c| c.name == context)?.context.as_ref()?.user.clone()?;
    let exec = kc.auth_infos.iter().find(|u| u.name == user)?.auth_info.as_ref()?.exec.as_ref()?;
    let command = exec.command.clone()?;
    let own_path = exec.env.iter().flatten().find(|e| e.get("name").map(String::as_str) == Some("PATH"));
    let path = match own_path.and_then(|e| e.get("value")) {
        Some(path) => path.clone(),
        None => std::env::var("PATH").unwrap_or_default(),
    };
    let runnable = |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file());
    let found = if command.contains('/') {
        runnable(std::path::Path::new(&command))
    } else {
        std::env::split_paths(&path).any(|dir| runnable(&dir.join(&command)))
    };
    (!found).then_some((command, path))
}

/// Takes the exec plugin out of `config`, where kube would run it (see
/// [`crate::exec`]), and runs it once: a client certificate goes back into
/// `config` for kube's TLS setup; a token is kept by the returned layer,
/// which refreshes it. Only a plugin that kube would use is taken (kube
/// prefers a token, a token file, a password or an auth provider).
async fn take_exec(config: &mut Config, timeout: Duration) -> Result<Option<ExecAuthLayer>, ExecError> {
    let user = &mut config.auth_info;
    if user.auth_provider.is_some() || user.username.is_some() || user.token.is_some() || user.token_file.is_some() {
        return Ok(None);
    }
    let Some(exec) = user.exec.take() else { return Ok(None) };
    let auth = ExecAuth::new(exec, timeout);
    match auth.run().await? {
        Credential::Certificate { certificate, key } => {
            // The kubeconfig's fields hold PEM in base64; the plugin hands out PEM.
            let base64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
            user.client_certificate_data = Some(base64(certificate));
            user.client_key_data = Some(base64(key).into());
            Ok(None)
        }
        Credential::Token { token, expires } => {
            auth.keep(token, expires).await;
            Ok(Some(ExecAuthLayer(std::sync::Arc::new(auth))))
        }
    }
}

/// kube's own client stack (base URI, retries, credentials, extra headers,
/// timeouts) on a connector with `TCP_NODELAY`, through `proxy` when the
/// kubeconfig names one, with `exec` for a context whose exec plugin
/// kubesocks runs itself. Every port-forward is a new TLS connection, and
/// without `TCP_NODELAY` the request that follows the TLS handshake waits
/// for the server's delayed ACK: about 40 ms on each connection.
fn client(config: Config, exec: Option<ExecAuthLayer>, proxy: Option<&ProxyUrl>) -> Result<Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt as _;

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    match proxy {
        None => stack(config, exec, http),
        Some(proxy) => {
            // kubectl's TLS to an https:// proxy: the cluster's own settings.
            let proxy_tls = config.rustls_client_config()?;
            stack(config, exec, proxy.dialer(http, proxy_tls))
        }
    }
}

/// The client stack of [`client`] on `tcp`, the connector under the TLS.
fn stack<C>(config: Config, exec: Option<ExecAuthLayer>, tcp: C) -> Result<Client, kube::Error>
where
    C: tower::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response:
        hyper_util::client::legacy::connect::Connection + hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use kube::client::ConfigExt as _;
    use kube::client::retry::RetryPolicy;

    let https = config.rustls_https_connector_with_connector(tcp)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, kube::client::Body>(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .option_layer(exec)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace))
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
    fn a_missing_exec_plugin_is_named_with_the_path_searched() {
        let kc = |command: &str, path: &str| -> Kubeconfig {
            serde_json::from_value(serde_json::json!({
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "users": [{"name": "u", "user": {"exec": {"command": command, "env": [{"name": "PATH", "value": path}]}}}]
            }))
            .unwrap()
        };
        assert_eq!(
            missing_exec_plugin(&kc("no-such-plugin", "/usr/bin:/bin"), "c"),
            Some(("no-such-plugin".into(), "/usr/bin:/bin".into()))
        );
        assert_eq!(missing_exec_plugin(&kc("sh", "/usr/bin:/bin"), "c"), None, "found on the plugin's PATH");
        assert_eq!(missing_exec_plugin(&kc("/bin/sh", ""), "c"), None, "a path is taken as it is");
        assert!(missing_exec_plugin(&kc("/nowhere/aws", "/bin"), "c").is_some());
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
    fn a_bad_proxy_url_names_the_context() {
        let kc: Kubeconfig = serde_json::from_value(serde_json::json!({
            "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443", "proxy-url": "socks4://b:1080"}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}]
        }))
        .unwrap();
        let e = tokio::runtime::Runtime::new().unwrap().block_on(connect_to(kc, "c", None)).err().unwrap();
        assert_eq!(
            crate::error_chain(&e),
            "the cluster of context c names a proxy-url kubesocks cannot use: proxy-url \"socks4://b:1080\" has the \
             scheme \"socks4\", which kubesocks does not support (it supports http, https and socks5)"
        );
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

    /// An API server on plain HTTP that answers every request with its
    /// version and records the `Authorization` header of each.
    async fn fake_api_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let auth = head
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")));
                    record.lock().unwrap().push(auth.unwrap_or("none").trim().to_string());
                    let body =
                        serde_json::json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0", "gitCommit": "x",
                        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.26",
                        "compiler": "gc", "platform": "linux/amd64"})
                        .to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    /// A kubeconfig for `server` whose user's credentials come from the
    /// shell script `script` (written to a directory of the test's own).
    fn exec_kubeconfig(test: &str, server: &str, script: &str) -> (Kubeconfig, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("kubesocks-exec-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("plugin");
        std::fs::write(&plugin, format!("#!/bin/sh\ncd {}\n{script}\n", dir.display())).unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kc = serde_json::from_value(serde_json::json!({
            "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": server}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                "command": plugin, "interactiveMode": "Never"}}}]
        }))
        .unwrap();
        (kc, dir)
    }

    fn token_script(expires: &str) -> String {
        format!(
            "n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count\n\
             echo \"{{\\\"apiVersion\\\":\\\"client.authentication.k8s.io/v1\\\",\\\"kind\\\":\\\"ExecCredential\\\",\
             \\\"status\\\":{{\\\"token\\\":\\\"tok-$n\\\"{expires}}}}}\""
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_exec_plugin_runs_without_blocking_the_runtime() {
        let (server, seen) = fake_api_server().await;
        let (kc, dir) = exec_kubeconfig("blocking", &server, &format!("sleep 1\n{}", token_script("")));
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let cluster = connect_to(kc, "c", None).await.unwrap();
        ticker.abort();
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        // The plugin sleeps a second: a runtime it does not block ticks all along.
        assert!(ticks >= 50, "the one runtime thread ticked only {ticks} times while the plugin ran");
        assert_eq!(*seen.lock().unwrap(), ["Bearer tok-1"]);
        assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap().trim(), "1", "the plugin ran once");
        drop(cluster);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_hung_exec_plugin_is_stopped_at_the_timeout() {
        let (server, _) = fake_api_server().await;
        let (kc, dir) = exec_kubeconfig("hung", &server, "echo $$ > pid\nexec sleep 60");
        let start = std::time::Instant::now();
        let e = connect_with(kc, "c", None, Duration::from_millis(500)).await.err().expect("no credentials");
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        assert!(matches!(&e, KubeError::Exec { source: ExecError::Timeout { .. }, .. }), "{e}");
        assert!(crate::error_chain(&e).contains("did not finish within 500ms"), "{e}");
        let pid = std::fs::read_to_string(dir.join("pid")).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
        {
            assert!(std::time::Instant::now() < deadline, "the plugin still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn tokens_are_kept_until_they_are_about_to_expire() {
        let (server, seen) = fake_api_server().await;
        let soon = "$(date -u -d @$(( $(date +%s) + 30 )) +%Y-%m-%dT%H:%M:%SZ)";
        let (kc, dir) =
            exec_kubeconfig("refresh", &server, &token_script(&format!(",\\\"expirationTimestamp\\\":\\\"{soon}\\\"")));
        let cluster = connect_to(kc, "c", None).await.unwrap();
        cluster.client.apiserver_version().await.unwrap();
        // A token that expires within a minute is fetched again for each request.
        assert_eq!(*seen.lock().unwrap(), ["Bearer tok-2", "Bearer tok-3"]);
        std::fs::remove_dir_all(&dir).unwrap();

        let (server, seen) = fake_api_server().await;
        let later = ",\\\"expirationTimestamp\\\":\\\"2099-01-01T00:00:00Z\\\"";
        let (kc, dir) = exec_kubeconfig("keep", &server, &token_script(later));
        let cluster = connect_to(kc, "c", None).await.unwrap();
        cluster.client.apiserver_version().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["Bearer tok-1", "Bearer tok-1"]);
        assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap().trim(), "1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failing_plugin_is_reported_without_the_secrets_it_was_given() {
        let (server, _) = fake_api_server().await;
        let script = "echo \"cannot log in with key $AWS_SECRET_ACCESS_KEY\" >&2\nexit 1";
        let (mut kc, dir) = exec_kubeconfig("secret", &server, script);
        let canary = "kubesocks-canary-5ecret-7a1e";
        let env = BTreeMap::from([
            ("AWS_SECRET_ACCESS_KEY".to_string(), canary.to_string()),
            ("PATH".to_string(), std::env::var("PATH").unwrap()),
        ]);
        add_exec_env(&mut kc, &env);
        let e = connect_to(kc, "c", None).await.err().expect("the plugin fails");
        let text = crate::error_chain(&e);
        assert!(!text.contains(canary) && !format!("{e:?}").contains(canary), "{text}");
        assert!(text.contains("failed (exit status: 1): cannot log in with key <redacted>"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
