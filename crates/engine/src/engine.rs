//! The proxy engine: one cluster connection (client + watch caches) shared by
//! any number of SOCKS5 and HTTP listeners. The CLI and the tray app both run
//! it; it knows nothing of either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Credentials;
use crate::cache::{CacheError, ClusterCache};
use crate::dial::Dialer;
use crate::gateway::Route;
use crate::kubeconfig::Cluster;
use crate::listener::{Listen, ListenerKind, Listeners};
use crate::portforward::{DataPath, Forwarder};
use crate::resolve::Rules;
use crate::shared::{Shared, Upstream};
use crate::stats::StatsSnapshot;

/// How a proxy should listen and resolve. The defaults every shell uses are
/// the associated constants and [`ProxyConfig::default`].
///
/// As JSON (a managed connection's request), an absent listener is none and
/// other absent fields take their defaults; credentials are never serialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// The SOCKS5 listener, if any. It is a mixed port: it answers HTTP
    /// proxy requests and serves the PAC file too.
    #[serde(default)]
    pub socks: Option<Listen>,
    /// The HTTP proxy listener (CONNECT and absolute-form requests), if any.
    #[serde(default)]
    pub http: Option<Listen>,
    /// The DNS helper (UDP and TCP on one address), if any: cluster names
    /// answered from the caches. Loopback only: DNS has no authentication.
    #[serde(default)]
    pub dns: Option<Listen>,
    /// The cluster's DNS domain.
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    /// Dial names outside the cluster from this machine instead of refusing them.
    #[serde(default)]
    pub passthrough: bool,
    /// Let passthrough dial this machine's own loopback, unspecified and
    /// link-local addresses too (refused otherwise).
    #[serde(default)]
    pub passthrough_local: bool,
    /// Required from clients when set; mandatory for a non-loopback listener.
    #[serde(skip)]
    pub auth: Option<Credentials>,
    /// A client that has not finished its handshake by then is dropped.
    #[serde(default = "default_handshake_timeout", with = "crate::seconds")]
    pub handshake_timeout: Duration,
    /// The port-forward protocol and session settings.
    #[serde(default)]
    pub data_path: DataPath,
    /// Client connections served at once; beyond it new clients are refused
    /// (SOCKS `0x01`, HTTP 503) until some finish. At least 1. Lowered at
    /// start where the open-file limit leaves room for fewer.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl ProxyConfig {
    /// The SOCKS port a proxy listens on unless told otherwise.
    pub const DEFAULT_SOCKS_PORT: u16 = 1080;
    /// The HTTP proxy port managed connections try first.
    pub const DEFAULT_HTTP_PORT: u16 = 3128;
    /// The DNS helper port the tray offers.
    pub const DEFAULT_DNS_PORT: u16 = 5353;
    /// The port shared by every managed connection, unless told otherwise.
    pub const DEFAULT_SHARED_PORT: u16 = 1090;
    /// The cluster DNS domain unless told otherwise.
    pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
    /// How long a client may take over its handshake unless told otherwise.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// How many client connections are served at once unless told otherwise.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
}

fn default_max_connections() -> usize {
    ProxyConfig::DEFAULT_MAX_CONNECTIONS
}

fn default_domain() -> String {
    ProxyConfig::DEFAULT_CLUSTER_DOMAIN.to_string()
}

fn default_handshake_timeout() -> Duration {
    ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT
}

/// The URL of the PAC file served at `addr`.
pub fn pac_url(addr: SocketAddr) -> String {
    format!("http://{addr}/proxy.pac")
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            socks: Some(Listen::exact(loopback(ProxyConfig::DEFAULT_SOCKS_PORT))),
            http: None,
            dns: None,
            cluster_domain: default_domain(),
            passthrough: false,
            passthrough_local: false,
            auth: None,
            handshake_timeout: ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT,
            data_path: DataPath::default(),
            max_connections: ProxyConfig::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A listener's address could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        /// The address asked for (the last one tried, for a port search).
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A listener off loopback without credentials would be an open proxy.
    #[error("{addr} is not a loopback address: anyone who can reach it could use the proxy, so it needs credentials")]
    OpenListener {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The DNS helper off loopback: DNS has no authentication, so anyone
    /// who can reach it could read the cluster's names and addresses.
    #[error("{addr} is not a loopback address: the DNS helper has no authentication, so it listens on loopback only")]
    OpenDnsListener {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Neither a SOCKS nor an HTTP listener was asked for.
    #[error("no listener to serve: neither SOCKS nor HTTP was asked for")]
    NoListener,
    /// A connection cap of 0 would refuse every client.
    #[error("a connection cap of 0 would refuse every client")]
    NoConnectionsAllowed,
    /// The watch caches could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => " (another program uses this port)",
        std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

/// A running proxy. Dropping it stops the listeners at once; [`Engine::shutdown`]
/// lets open connections finish first.
pub struct Engine {
    shared: Arc<Shared>,
    dialer: Arc<Dialer>,
    socks: Option<SocketAddr>,
    http: Option<SocketAddr>,
    dns: Option<SocketAddr>,
    listeners: Listeners,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.listeners.cancel();
        self.shared.cut.cancel();
    }
}

impl Engine {
    /// Binds the listeners first (so a port in use fails fast), then syncs the
    /// caches, then starts serving.
    pub async fn start(cluster: Cluster, config: ProxyConfig) -> Result<Engine, EngineError> {
        if config.socks.is_none() && config.http.is_none() {
            return Err(EngineError::NoListener);
        }
        if config.max_connections == 0 {
            return Err(EngineError::NoConnectionsAllowed);
        }
        for listen in config.socks.iter().chain(config.http.iter()) {
            if !listen.addr.ip().is_loopback() && config.auth.is_none() {
                return Err(EngineError::OpenListener { addr: listen.addr });
            }
        }
        if let Some(listen) = config.dns.filter(|l| !l.addr.ip().is_loopback()) {
            return Err(EngineError::OpenDnsListener { addr: listen.addr });
        }
        let socks = match config.socks {
            Some(listen) => Some(listen.bind().await?),
            None => None,
        };
        let http = match config.http {
            Some(listen) => Some(listen.bind().await?),
            None => None,
        };
        let dns = match config.dns {
            Some(listen) => Some(listen.bind_with(crate::dns::bind).await?),
            None => None,
        };

        let cache = ClusterCache::start(cluster.client.clone(), &cluster.namespace).await?;
        let mut rules = Rules::new(&config.cluster_domain, &cluster.namespace);
        rules.passthrough_local = config.passthrough_local;
        let per_client = if config.data_path.protocol == Some(crate::portforward::Protocol::WebSocket) { 2 } else { 1 };
        let max_connections = crate::nofile::fitting_cap(config.max_connections, per_client);
        let forwarder = Forwarder::new(cluster.client, config.data_path);
        let dialer = Arc::new(Dialer::new(forwarder, cache, rules, config.passthrough));
        let upstream = Upstream::Cluster(dialer.clone());
        let shared = Arc::new(Shared::new(upstream, config.auth, config.handshake_timeout, max_connections));
        let mut engine = Engine { shared, dialer, socks: None, http: None, dns: None, listeners: Listeners::default() };
        if let Some(listener) = socks {
            engine.socks = Some(listener.local_addr().expect("a bound listener has an address"));
            engine.listeners.spawn(listener, ListenerKind::Mixed, engine.shared.clone());
        }
        if let Some(listener) = http {
            engine.http = Some(listener.local_addr().expect("a bound listener has an address"));
            engine.listeners.spawn(listener, ListenerKind::Http, engine.shared.clone());
        }
        if let Some((udp, tcp)) = dns {
            engine.dns = Some(tcp.local_addr().expect("a bound listener has an address"));
            let mut server = crate::dns::serve(engine.dialer.clone(), udp, tcp);
            engine.listeners.spawn_until_stopped(|stopped| async move {
                stopped.cancelled().await;
                if let Err(e) = server.shutdown_gracefully().await {
                    tracing::warn!(error = %e, "the DNS helper stopped with an error");
                }
            });
        }
        Ok(engine)
    }

    /// Where the SOCKS listener (the mixed port) listens, if there is one.
    pub fn socks_addr(&self) -> Option<SocketAddr> {
        self.socks
    }

    /// The URL of the PAC file for browsers: on the mixed port, else on
    /// the HTTP listener.
    pub fn pac_url(&self) -> Option<String> {
        self.socks.or(self.http).map(pac_url)
    }

    /// Where the DNS helper listens (UDP and TCP), if there is one.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns
    }

    /// Where the HTTP listener listens, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The engine's live figures.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot { portforward_protocol: self.dialer.protocol(), ..self.shared.stats.snapshot() }
    }

    /// A URL of a real Service in `namespace` (else a template), for a first try.
    pub async fn example_url(&self, namespace: &str, domain: &str) -> String {
        let snapshot = self.dialer.cache().snapshot().await;
        match snapshot.example_service(namespace) {
            Some((name, port)) => format!("http://{name}.{namespace}.svc.{domain}:{port}/"),
            None => format!("http://SERVICE.{namespace}.svc.{domain}:PORT/"),
        }
    }

    /// Closes the listeners: once this returns their ports are free.
    /// Open connections go on.
    pub async fn stop_listening(&self) {
        self.listeners.stop().await;
    }

    /// A handle a [`Gateway`](crate::Gateway) routes names to this engine with.
    pub fn route(&self) -> Route {
        Route(self.shared.clone())
    }

    /// Closes the listeners, lets open connections run for up to `grace`,
    /// then cuts them.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_listening().await;
        self.shared.drain(grace).await;
    }
}
