//! One listener for every connected context: a name ending in `.<alias>`
//! goes to that context's engine (`productpage.default.prod`,
//! `web.shop.svc.cluster.local.staging`), other names to a default context.
//!
//! A [`Gateway`] owns a mixed port (SOCKS5, HTTP and the PAC file, like an
//! engine's) and no cluster: each request picks an engine from the current
//! [`Routes`], which the host replaces whenever contexts come and go, so a
//! context connected later is reachable without restarting the listener.
//! The request then runs as one of that engine's (its figures, its log).
//!
//! An alias is a context name made a DNS label ([`alias_for`]). An alias
//! that is also a namespace of the default context wins: the user named the
//! context. IP addresses carry no alias and go to the default context.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Credentials;
use crate::engine::{EngineError, ProxyConfig, pac_url};
use crate::listener::{Listen, ListenerKind, Listeners};
use crate::resolve::{Host, Refusal};
use crate::shared::{Shared, Upstream};

/// An engine as a gateway reaches it; from [`Engine::route`](crate::Engine::route).
#[derive(Clone)]
pub struct Route(pub(crate) Arc<Shared>);

/// Which engine each alias reaches, and which alias takes names without one.
#[derive(Clone, Default)]
pub struct Routes {
    by_alias: BTreeMap<String, Route>,
    default: Option<String>,
}

impl Routes {
    /// No context yet: every request is refused until some are added.
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Names ending in `.<alias>` go to `route` (the alias is made a DNS
    /// label if it is not one).
    pub fn insert(&mut self, alias: &str, route: Route) {
        self.by_alias.insert(alias_for(alias), route);
    }

    /// Names without an alias go to this alias's engine; `None`: they are refused.
    pub fn set_default(&mut self, alias: Option<&str>) {
        self.default = alias.map(alias_for);
    }

    /// The engine `host` goes to, and the host as that engine reads it (its
    /// alias removed).
    pub(crate) fn pick(&self, host: &Host) -> Result<(Arc<Shared>, Host), Refusal> {
        let (alias, rest) = match split_alias(host, |a| self.by_alias.contains_key(a)) {
            Some((alias, rest)) => (Some(alias), rest),
            None => (self.default.clone(), host.clone()),
        };
        match alias.and_then(|a| self.by_alias.get(&a)) {
            Some(route) => Ok((route.0.clone(), rest)),
            None => Err(Refusal::NoContext { host: host.to_string() }),
        }
    }

    /// Every engine with its alias, and the default one again without: what the PAC file lists.
    pub(crate) fn engines(&self) -> Vec<(Option<String>, Arc<Shared>)> {
        let mut all: Vec<(Option<String>, Arc<Shared>)> =
            self.by_alias.iter().map(|(alias, route)| (Some(alias.clone()), route.0.clone())).collect();
        if let Some(default) = self.default.as_deref().and_then(|a| self.by_alias.get(a)) {
            all.push((None, default.0.clone()));
        }
        all
    }
}

/// `web.shop.prod` → (`prod`, `web.shop`) when `is_alias("prod")`; `None`
/// for an IP, a single label, or a last label that is no alias. Aliases
/// are matched in lower case, as DNS names are.
fn split_alias(host: &Host, is_alias: impl Fn(&str) -> bool) -> Option<(String, Host)> {
    let Host::Name(name) = host else { return None };
    let name = name.strip_suffix('.').unwrap_or(name);
    let (rest, last) = name.rsplit_once('.')?;
    let alias = last.to_ascii_lowercase();
    (!rest.is_empty() && is_alias(&alias)).then(|| (alias, Host::Name(rest.to_string())))
}

/// A context name made a DNS label: lower case, each run of other
/// characters than letters and digits one `-`, at most 63 characters
/// (`arn:aws:eks:eu-west-1:123:cluster/prod` → `arn-aws-eks-eu-west-1-123-cluster-prod`).
/// A name with no letter or digit becomes `context`.
pub fn alias_for(context: &str) -> String {
    let mut label = String::new();
    for c in context.chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c.to_ascii_lowercase());
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    label.truncate(63);
    let label = label.trim_end_matches('-');
    if label.is_empty() { "context".to_string() } else { label.to_string() }
}

/// How a gateway's listener treats its clients (as an engine's does).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where it listens.
    pub listen: Listen,
    /// Required from clients when set; mandatory off loopback.
    pub auth: Option<Credentials>,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Client connections served at once.
    pub max_connections: usize,
}

impl GatewayConfig {
    /// Listening at `listen`, with the engine's defaults.
    pub fn new(listen: Listen) -> GatewayConfig {
        GatewayConfig {
            listen,
            auth: None,
            handshake_timeout: ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: ProxyConfig::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A running shared port. Dropping it stops the listener at once.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listeners: Listeners,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.listeners.cancel();
        self.shared.cut.cancel();
    }
}

impl Gateway {
    /// Binds the port and serves it with `routes`.
    pub async fn start(config: GatewayConfig, routes: Routes) -> Result<Gateway, EngineError> {
        if config.max_connections == 0 {
            return Err(EngineError::NoConnectionsAllowed);
        }
        if !config.listen.addr.ip().is_loopback() && config.auth.is_none() {
            return Err(EngineError::OpenListener { addr: config.listen.addr });
        }
        let listener = config.listen.bind().await?;
        let addr = listener.local_addr().map_err(|source| EngineError::Bind { addr: config.listen.addr, source })?;
        let upstream = Upstream::Contexts(std::sync::RwLock::new(routes));
        // A client costs a descriptor here; its pod side is counted by its engine.
        let max_connections = crate::nofile::fitting_cap(config.max_connections, 1);
        let shared = Arc::new(Shared::new(upstream, config.auth, config.handshake_timeout, max_connections));
        let listeners = Listeners::default();
        listeners.spawn(listener, ListenerKind::Mixed, shared.clone());
        Ok(Gateway { shared, addr, listeners })
    }

    /// From now on, new requests are routed by `routes`; open ones go on.
    pub fn set_routes(&self, routes: Routes) {
        if let Upstream::Contexts(current) = &self.shared.upstream {
            *current.write().unwrap() = routes;
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of its PAC file, which covers every routed context.
    pub fn pac_url(&self) -> String {
        pac_url(self.addr)
    }

    /// Closes the listener: once this returns its port is free. Open
    /// connections go on.
    pub async fn stop_listening(&self) {
        self.listeners.stop().await;
    }

    /// Closes the listener (its port is free once this returns), lets open
    /// connections run for up to `grace`, then cuts them.
    pub async fn shutdown(self, grace: Duration) {
        self.listeners.stop().await;
        self.shared.drain(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(host: &str) -> Option<(String, String)> {
        let host = Host::parse(host);
        split_alias(&host, |a| ["prod", "staging"].contains(&a)).map(|(a, rest)| (a, rest.to_string()))
    }

    #[test]
    fn the_last_label_picks_the_context_and_is_removed() {
        assert_eq!(split("productpage.default.prod"), Some(("prod".into(), "productpage.default".into())));
        assert_eq!(
            split("web.shop.svc.cluster.local.staging."),
            Some(("staging".into(), "web.shop.svc.cluster.local".into()))
        );
        assert_eq!(split("WEB.Shop.PROD"), Some(("prod".into(), "WEB.Shop".into())));
    }

    #[test]
    fn names_without_an_alias_ips_and_bare_aliases_are_not_split() {
        assert_eq!(split("web.shop"), None);
        assert_eq!(split("prod"), None, "a single label is a short name, not an alias");
        assert_eq!(split(".prod"), None);
        assert_eq!(split("10.0.0.1"), None);
        assert_eq!(split("[fd00::1]"), None);
        assert_eq!(split("web.prod.example.com"), None);
    }

    #[test]
    fn context_names_become_dns_labels() {
        assert_eq!(alias_for("prod"), "prod");
        assert_eq!(alias_for("Kind-Dev"), "kind-dev");
        assert_eq!(alias_for("arn:aws:eks:eu-west-1:123:cluster/prod"), "arn-aws-eks-eu-west-1-123-cluster-prod");
        assert_eq!(alias_for("gke_proj_europe-west1_main"), "gke-proj-europe-west1-main");
        assert_eq!(alias_for("--x--"), "x");
        assert_eq!(alias_for("ü-ö"), "context");
        assert_eq!(alias_for(&"a".repeat(80)).len(), 63);
        assert_eq!(alias_for(&format!("{}-b", "a".repeat(62))), "a".repeat(62), "no trailing dash after truncation");
    }
}
