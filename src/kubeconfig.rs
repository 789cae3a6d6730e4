//! Which cluster to talk to: kubeconfig, context and default namespace, the
//! way kubectl reads them, and a first request that proves the API server is
//! reachable and accepts the credentials.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use serde::Serialize;

/// The kubectl-style global flags.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A connected, verified cluster.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub context: String,
    pub server: String,
    /// Namespace for short names: `-n`, else the context's, else `default`.
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig: {0}")]
    Read(#[source] KubeconfigError),
    #[error("the kubeconfig has no context {name:?}; it has: {available}")]
    UnknownContext { name: String, available: String },
    #[error("the kubeconfig has no current context; pass --context (it has: {available})")]
    NoContext { available: String },
    #[error("the kubeconfig's context {context} is unusable: {source}")]
    Config {
        context: String,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot create a client for {server}: {source}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API server at {server} rejected the credentials of context {context} (HTTP {code}): {message}")]
    Unauthorized { server: String, context: String, code: u16, message: String },
    #[error("cannot reach the API server at {server}: {source}")]
    Unreachable {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API server at {server} did not answer within {0:?}", API_TIMEOUT)]
    Timeout { server: String },
}

const API_TIMEOUT: Duration = Duration::from_secs(15);

/// One context of a kubeconfig, as `contexts` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ContextInfo {
    pub name: String,
    pub cluster: String,
    pub server: String,
    pub namespace: String,
    pub current: bool,
}

fn read(settings: &KubeSettings) -> Result<Kubeconfig, KubeError> {
    match &settings.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    }
    .map_err(KubeError::Read)
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
            let server = kc
                .clusters
                .iter()
                .find(|c| c.name == ctx.cluster)
                .and_then(|c| c.cluster.as_ref())
                .and_then(|c| c.server.clone())
                .unwrap_or_default();
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
    let available = kc.contexts.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let context = match (&settings.context, &kc.current_context) {
        (Some(name), _) if !kc.contexts.iter().any(|c| &c.name == name) => {
            return Err(KubeError::UnknownContext { name: name.clone(), available });
        }
        (Some(name), _) | (None, Some(name)) => name.clone(),
        (None, None) => return Err(KubeError::NoContext { available }),
    };
    let options = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
    let mut config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|source| KubeError::Config { context: context.clone(), source })?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    if let Some(ns) = &settings.namespace {
        config.default_namespace = ns.clone();
    }
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|source| KubeError::Client { server: server.clone(), source })?;
    match tokio::time::timeout(API_TIMEOUT, client.apiserver_version()).await {
        Err(_) => Err(KubeError::Timeout { server }),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 || status.code == 403 => {
            Err(KubeError::Unauthorized { server, context, code: status.code, message: status.message })
        }
        Ok(Err(source)) => Err(KubeError::Unreachable { server, source }),
        Ok(Ok(_)) => Ok(Cluster { client, context, server, namespace }),
    }
}
