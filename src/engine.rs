//! The proxy engine: one cluster connection (client + watch caches) shared by
//! any number of SOCKS5 and HTTP listeners. The CLI and the tray app both run
//! it; it knows nothing of either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::auth::Credentials;
use crate::cache::{CacheError, ClusterCache};
use crate::dial::{DialError, Dialer};
use crate::kubeconfig::Cluster;
use crate::resolve::Rules;
use crate::stats::{Stats, StatsSnapshot};

/// Where a listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub addr: SocketAddr,
    /// When the port is taken, take the next free one above it.
    #[serde(default)]
    pub or_next_free: bool,
}

impl Listen {
    /// Exactly this address: a port in use is an error.
    pub fn exact(addr: SocketAddr) -> Listen {
        Listen { addr, or_next_free: false }
    }

    /// This address, or the first free port above it on the same IP.
    pub fn or_next_free(addr: SocketAddr) -> Listen {
        Listen { addr, or_next_free: true }
    }

    async fn bind(self) -> Result<TcpListener, EngineError> {
        let mut addr = self.addr;
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Ok(listener),
                Err(e)
                    if self.or_next_free
                        && e.kind() == std::io::ErrorKind::AddrInUse
                        && addr.port() != 0
                        && addr.port() < self.addr.port().saturating_add(PORT_SEARCH) =>
                {
                    addr.set_port(addr.port() + 1);
                }
                Err(source) => return Err(EngineError::Bind { addr, source }),
            }
        }
    }
}

/// How many ports above the asked one [`Listen::or_next_free`] tries.
const PORT_SEARCH: u16 = 100;

/// How a proxy should listen and resolve.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub socks: Option<Listen>,
    pub http: Option<Listen>,
    pub cluster_domain: String,
    /// Dial names outside the cluster from this machine instead of refusing them.
    pub passthrough: bool,
    /// Required from clients when set; mandatory for a non-loopback listener.
    pub auth: Option<Credentials>,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            socks: Some(Listen::exact(SocketAddr::from(([127, 0, 0, 1], 1080)))),
            http: None,
            cluster_domain: "cluster.local".into(),
            passthrough: false,
            auth: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{addr} is not a loopback address: anyone who can reach it could use the proxy; set --auth USER:PASSWORD to listen there"
    )]
    OpenListener { addr: SocketAddr },
    #[error("no listener: give --listen-socks and/or --listen-http")]
    NoListener,
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another program uses this port: pick another with --listen-socks / --listen-http)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: pick a higher one)",
        _ => "",
    }
}

/// What the listeners of one engine share.
pub struct Shared {
    pub(crate) dialer: Dialer,
    pub(crate) stats: Arc<Stats>,
    pub(crate) auth: Option<Credentials>,
    pub(crate) handshake_timeout: Duration,
    ids: AtomicU64,
    /// Every client connection and every CONNECT tunnel, so a drain waits for them.
    tasks: TaskTracker,
    /// Cuts whatever is still open when a drain ends.
    cut: CancellationToken,
}

impl Shared {
    /// Runs one client's work as part of this engine: drains wait for it, and
    /// it is cut when a drain ends. It logs in the caller's tracing span.
    pub(crate) fn spawn_tracked(&self, work: impl Future<Output = ()> + Send + 'static) {
        let cut = self.cut.clone();
        self.tasks.spawn(
            async move {
                tokio::select! {
                    _ = work => {}
                    _ = cut.cancelled() => {}
                }
            }
            .in_current_span(),
        );
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Logs a connection kubesocks could not make, and keeps it as the last error.
    pub(crate) fn refused(&self, conn: u64, target: &str, e: &DialError) {
        let chain = crate::error_chain(e);
        tracing::warn!(conn, target, reason = %chain, "connection not forwarded");
        self.stats.record_error(format!("{target}: {chain}"));
    }
}

/// A running proxy. Dropping it stops the listeners at once; [`Engine::shutdown`]
/// lets open connections finish first.
pub struct Engine {
    shared: Arc<Shared>,
    socks: Option<SocketAddr>,
    http: Option<SocketAddr>,
    /// Stops the accept loops.
    accepting: CancellationToken,
    /// The accept loops, each owning its listener.
    listeners: TaskTracker,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.accepting.cancel();
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
        for listen in config.socks.iter().chain(config.http.iter()) {
            if !listen.addr.ip().is_loopback() && config.auth.is_none() {
                return Err(EngineError::OpenListener { addr: listen.addr });
            }
        }
        let socks = match config.socks {
            Some(listen) => Some(listen.bind().await?),
            None => None,
        };
        let http = match config.http {
            Some(listen) => Some(listen.bind().await?),
            None => None,
        };

        let cache = ClusterCache::start(cluster.client.clone(), &cluster.namespace).await?;
        let rules = Rules::new(&config.cluster_domain, &cluster.namespace);
        let shared = Arc::new(Shared {
            dialer: Dialer::new(cluster.client, cache, rules, config.passthrough),
            stats: Arc::new(Stats::default()),
            auth: config.auth,
            handshake_timeout: config.handshake_timeout,
            ids: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            cut: CancellationToken::new(),
        });
        let mut engine = Engine {
            shared,
            socks: None,
            http: None,
            accepting: CancellationToken::new(),
            listeners: TaskTracker::new(),
        };
        if let Some(listener) = socks {
            engine.socks = Some(listener.local_addr().expect("a bound listener has an address"));
            engine.spawn_accept(listener, Protocol::Socks);
        }
        if let Some(listener) = http {
            engine.http = Some(listener.local_addr().expect("a bound listener has an address"));
            engine.spawn_accept(listener, Protocol::Http);
        }
        Ok(engine)
    }

    fn spawn_accept(&self, listener: TcpListener, protocol: Protocol) {
        let shared = self.shared.clone();
        let accepting = self.accepting.clone();
        let accept_loop = async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = accepting.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Usually out of file descriptors: back off rather than spin.
                            tracing::error!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let for_task = shared.clone();
                shared.spawn_tracked(async move {
                    match protocol {
                        Protocol::Socks => crate::socks::serve(stream, peer, for_task).await,
                        Protocol::Http => crate::http::serve(stream, peer, for_task).await,
                    }
                });
            }
        };
        self.listeners.spawn(accept_loop.in_current_span());
    }

    pub fn socks_addr(&self) -> Option<SocketAddr> {
        self.socks
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The caches, e.g. to suggest a real Service in the start-up example.
    pub fn dialer(&self) -> &Dialer {
        &self.shared.dialer
    }

    /// A URL of a real Service in `namespace` (else a template), for a first try.
    pub async fn example_url(&self, namespace: &str, domain: &str) -> String {
        let snapshot = self.shared.dialer.cache().snapshot().await;
        match snapshot.example_service(namespace) {
            Some((name, port)) => format!("http://{name}.{namespace}.svc.{domain}:{port}/"),
            None => format!("http://SERVICE.{namespace}.svc.{domain}:PORT/"),
        }
    }

    /// Closes the listeners: once this returns their ports are free.
    /// Open connections go on.
    pub async fn stop_listening(&self) {
        self.accepting.cancel();
        self.listeners.close();
        self.listeners.wait().await;
    }

    /// Closes the listeners, lets open connections run for up to `grace`,
    /// then cuts them.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_listening().await;
        let tasks = &self.shared.tasks;
        tasks.close();
        let open = self.shared.stats.snapshot().active_connections;
        if open > 0 {
            tracing::info!(open, "waiting up to {grace:?} for open connections to finish");
        }
        let _ = tokio::time::timeout(grace, tasks.wait()).await;
        self.shared.cut.cancel();
        tasks.wait().await;
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Socks,
    Http,
}
