//! The proxy engine: one cluster connection (client + watch caches) behind
//! any number of listeners (the mixed SOCKS5/HTTP port, an HTTP-only port,
//! the DNS helper). The CLI and the tray app both run it; it knows nothing
//! of either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::activity::ActivitySnapshot;
use crate::cluster::cache::ClusterCache;
use crate::cluster::kubeconfig::Cluster;
use crate::config::{ProxyConfig, pac_url};
use crate::dial::Dialer;
use crate::dial::backend::Backend;
use crate::dial::routes::Route;
use crate::error::EngineError;
use crate::listen::accept::ListenerKind;
use crate::listen::front_door::BackEnds;
use crate::listen::server::{Admitting, Server};
use crate::portforward::{Forwarder, Protocol};
use crate::route::Rules;
use crate::stats::StatsSnapshot;

/// A running proxy. Dropping it stops the listeners at once; [`Engine::shutdown`]
/// lets open connections finish first.
pub struct Engine {
    backend: Arc<Backend>,
    server: Server,
    socks: Option<SocketAddr>,
    http: Option<SocketAddr>,
    dns: Option<SocketAddr>,
}

impl Engine {
    /// Binds the listeners first (so a port in use fails fast), then syncs the
    /// caches, then starts serving.
    pub async fn start(cluster: Cluster, config: ProxyConfig) -> Result<Engine, EngineError> {
        if config.socks.is_none() && config.http.is_none() {
            return Err(EngineError::NoListener);
        }
        // On the v4 WebSocket protocol each connection is a connection to the API server of its own.
        let descriptors_per_client = if config.data_path.protocol == Some(Protocol::WebSocket) { 2 } else { 1 };
        let admitting = Admitting {
            auth: config.auth,
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections,
            descriptors_per_client,
        };
        admitting.check(config.socks.iter().chain(config.http.iter()).map(|l| &l.addr))?;
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
            Some(listen) => Some(listen.bind_with(crate::listen::dns::bind).await?),
            None => None,
        };

        let cache = ClusterCache::start(cluster.client.clone(), &cluster.namespace).await?;
        let mut rules = Rules::new(&config.cluster_domain, &cluster.namespace);
        rules.passthrough_local = config.passthrough_local;
        let forwarder = Forwarder::new(cluster.upgrades, config.data_path);
        let dialer = Arc::new(Dialer::new(&cluster.context, forwarder, cache, rules, config.passthrough));
        let backend = Arc::new(Backend::new(dialer.clone()));
        let server = Server::new(BackEnds::One(backend.clone()), admitting);
        let socks = socks.map(|listener| server.serve(listener, ListenerKind::Mixed));
        let http = http.map(|listener| server.serve(listener, ListenerKind::Http));
        let dns = dns.map(|(udp, tcp)| {
            let addr = tcp.local_addr().expect("a bound listener has an address");
            let mut dns_server = crate::listen::dns::serve(dialer, udp, tcp);
            server.serve_until_stopped(|stopped| async move {
                stopped.cancelled().await;
                if let Err(e) = dns_server.shutdown_gracefully().await {
                    tracing::warn!(error = %e, "the DNS helper stopped with an error");
                }
            });
            addr
        });
        Ok(Engine { backend, server, socks, http, dns })
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
        let dialer = self.backend.dialer();
        StatsSnapshot {
            portforward_protocol: dialer.protocol(),
            health: dialer.cache().health(),
            ..self.backend.stats.snapshot()
        }
    }

    /// What its clients are doing: the connections open now, the latest
    /// failures and the traffic of the last minutes (whichever port they
    /// came through: its own or a gateway's).
    ///
    /// The programs behind connections listed for the first time are looked
    /// up meanwhile, which takes a few milliseconds; the future holds no
    /// borrow of the engine.
    pub fn activity(&self) -> impl Future<Output = ActivitySnapshot> + Send + 'static {
        let activity = self.backend.activity.clone();
        async move { activity.snapshot().await }
    }

    /// Closes one open client connection, resetting both sides. False if
    /// no connection with that ID is open.
    pub fn close_client(&self, id: u64) -> bool {
        self.backend.activity.close(id)
    }

    /// A URL of a real Service in `namespace` (else a template), for a first try.
    pub async fn example_url(&self, namespace: &str, domain: &str) -> String {
        let cache = self.backend.dialer().cache();
        cache.listed().await;
        let snapshot = cache.snapshot().await;
        match snapshot.example_service(namespace) {
            Some((name, port)) => format!("http://{name}.{namespace}.svc.{domain}:{port}/"),
            None => format!("http://SERVICE.{namespace}.svc.{domain}:PORT/"),
        }
    }

    /// Closes the listeners: once this returns their ports are free.
    /// Open connections go on.
    pub async fn stop_listening(&self) {
        self.server.stop_listening().await;
    }

    /// A handle a [`Gateway`](crate::Gateway) routes names to this engine with.
    pub fn route(&self) -> Route {
        Route(self.backend.clone())
    }

    /// Closes the listeners, lets open connections run for up to `grace`,
    /// then cuts them.
    pub async fn shutdown(self, grace: Duration) {
        self.server.shutdown(grace).await;
    }
}
