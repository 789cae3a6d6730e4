//! What the listeners of one engine (or of a gateway) share, and the one
//! path every client request takes through it, whatever its protocol: an ID
//! for the logs, a count in the figures, the dial, and on failure one log
//! line and the last error. `socks` and `http` only speak their protocol
//! around it.
//!
//! An engine's listeners dial into its own cluster. A gateway's listener
//! ([`crate::gateway`]) first picks the engine a name's alias points to, and
//! the request then counts in that engine's figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::auth::Credentials;
use crate::dial::{DialError, Dialed, Dialer};
use crate::gateway::Routes;
use crate::pac;
use crate::resolve::Host;
use crate::stats::{ActiveGuard, Stats};

/// Where the requests of a listener go.
pub(crate) enum Upstream {
    /// Into this engine's cluster.
    Cluster(Arc<Dialer>),
    /// Into the engine whose alias the name ends in (a gateway).
    Contexts(std::sync::RwLock<Routes>),
}

/// The state one engine's (or one gateway's) listeners share.
pub(crate) struct Shared {
    pub(crate) upstream: Upstream,
    pub(crate) stats: Arc<Stats>,
    pub(crate) auth: Option<Credentials>,
    pub(crate) handshake_timeout: Duration,
    ids: AtomicU64,
    /// Every client connection and every CONNECT tunnel, so a drain waits for them.
    pub(crate) tasks: TaskTracker,
    /// Cuts whatever is still open when a drain ends.
    pub(crate) cut: CancellationToken,
    /// One permit per client connection served: the connection cap.
    slots: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    /// Clients beyond the cap being told so; past these, they are just closed.
    refusals: Arc<Semaphore>,
    /// Clients refused for the cap, and when that was last logged.
    over_cap: AtomicU64,
    over_cap_logged: Mutex<Option<Instant>>,
    /// The span the engine was started in (a managed connection's, which
    /// writes its log): a gateway dials into the engine in it.
    span: tracing::Span,
}

/// A client connection's place under the connection cap, held (shared by a
/// CONNECT tunnel that outlives its HTTP request) until it ends.
pub(crate) type Slot = Arc<OwnedSemaphorePermit>;

/// What the accept loop does with a new client.
pub(crate) enum Admission {
    /// Serve it.
    Served(Slot),
    /// Over the cap: answer it with a refusal (SOCKS 0x01, HTTP 503).
    Refused(OwnedSemaphorePermit),
    /// Over the cap, and too many refusals under way: close it.
    Dropped,
}

/// How many over-the-cap clients are answered at once.
pub(crate) const MAX_REFUSALS: usize = 64;
/// The cap is logged (and kept as the last error) at most this often.
const OVER_CAP_LOG_EVERY: Duration = Duration::from_secs(5);

/// One client request on its way to the cluster. It counts as an active
/// connection of the engine that dialled it until dropped; `id` tags its
/// log lines, and its bytes count in `stats`.
pub(crate) struct ClientConn {
    pub(crate) id: u64,
    pub(crate) stats: Arc<Stats>,
    _active: ActiveGuard,
}

impl ClientConn {
    /// Logs a connection that could not be made or broke, and keeps it as
    /// its engine's last error.
    pub(crate) fn failed(&self, target: &str, e: &dyn std::error::Error) {
        let chain = crate::error_chain(e);
        // `target` is escaped already (see `Host`'s Display): shown as it is.
        tracing::warn!(conn = self.id, target = %target, reason = %chain, "connection not forwarded");
        self.stats.record_error(format!("{target}: {chain}"));
    }
}

impl Shared {
    pub(crate) fn new(
        upstream: Upstream,
        auth: Option<Credentials>,
        handshake_timeout: Duration,
        max_connections: usize,
    ) -> Shared {
        Shared {
            upstream,
            stats: Arc::new(Stats::default()),
            auth,
            handshake_timeout,
            ids: AtomicU64::new(0),
            tasks: TaskTracker::new(),
            cut: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            over_cap: AtomicU64::new(0),
            over_cap_logged: Mutex::new(None),
            span: tracing::Span::current(),
        }
    }

    /// Admits a new client under the connection cap, or says how to refuse it.
    pub(crate) fn admit(&self) -> Admission {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Admission::Served(Arc::new(permit));
        }
        let refused = self.over_cap.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.over_cap_logged.lock().unwrap();
        if logged.is_none_or(|at| at.elapsed() >= OVER_CAP_LOG_EVERY) {
            *logged = Some(Instant::now());
            let message = format!(
                "{} client connections are open, the most allowed: new clients are refused until some finish ({refused} refused so far)",
                self.max_connections
            );
            tracing::warn!(max_connections = self.max_connections, refused, "{message}");
            self.stats.record_error(message);
        }
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => Admission::Refused(permit),
            Err(_) => Admission::Dropped,
        }
    }

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

    /// Once the listeners are closed: lets open connections run for up to
    /// `grace`, then cuts them.
    pub(crate) async fn drain(&self, grace: Duration) {
        self.tasks.close();
        let open = self.tasks.len();
        if open > 0 {
            tracing::info!(open, "waiting up to {grace:?} for open connections to finish");
        }
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.cut.cancel();
        self.tasks.wait().await;
    }

    /// Resolves and connects one client request (`what` names its protocol in
    /// the log). A failure is logged with its reason and kept as the last
    /// error before it is returned for the listener to answer.
    pub(crate) async fn dial(
        &self,
        what: &str,
        peer: SocketAddr,
        host: &Host,
        port: u16,
    ) -> (ClientConn, Result<Dialed, DialError>) {
        match &self.upstream {
            Upstream::Cluster(dialer) => self.dial_cluster(dialer, what, peer, host, port).await,
            Upstream::Contexts(routes) => {
                let picked = routes.read().unwrap().pick(host);
                match picked {
                    Ok((engine, host)) => {
                        let Upstream::Cluster(dialer) = &engine.upstream else {
                            unreachable!("a gateway routes only to engines")
                        };
                        let span = engine.span.clone();
                        engine.dial_cluster(dialer, what, peer, &host, port).instrument(span).await
                    }
                    Err(refusal) => {
                        let conn = self.client_conn();
                        let e = DialError::from(refusal);
                        conn.failed(&format!("{host}:{port}"), &e);
                        (conn, Err(e))
                    }
                }
            }
        }
    }

    async fn dial_cluster(
        &self,
        dialer: &Dialer,
        what: &str,
        peer: SocketAddr,
        host: &Host,
        port: u16,
    ) -> (ClientConn, Result<Dialed, DialError>) {
        let conn = self.client_conn();
        let target = format!("{host}:{port}");
        let dialed = dialer.dial(host, port, conn.id).await;
        match &dialed {
            Ok(d) => tracing::info!(conn = conn.id, %peer, %target, reached = %d.reached, "{what}"),
            Err(e) => conn.failed(&target, e),
        }
        (conn, dialed)
    }

    fn client_conn(&self) -> ClientConn {
        ClientConn {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            stats: self.stats.clone(),
            _active: self.stats.connection(),
        }
    }

    /// What the PAC file served on these listeners lists: this engine's
    /// cluster, or every context of a gateway.
    pub(crate) async fn pac_routes(&self) -> Vec<pac::Route> {
        match &self.upstream {
            Upstream::Cluster(dialer) => vec![pac::Route { alias: None, names: dialer.cluster_names().await }],
            Upstream::Contexts(routes) => {
                let engines = routes.read().unwrap().engines();
                let mut out = Vec::new();
                for (alias, engine) in engines {
                    if let Upstream::Cluster(dialer) = &engine.upstream {
                        out.push(pac::Route { alias, names: dialer.cluster_names().await });
                    }
                }
                out
            }
        }
    }
}
