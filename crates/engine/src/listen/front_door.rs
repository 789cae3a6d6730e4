//! The front door of a listener, an engine's or a gateway's: what every
//! client meets before its request is dialled. It admits clients under the
//! connection cap (or says how to refuse them), holds the credentials and
//! the handshake timeout, tracks each client's task so a drain can wait for
//! it, and sends each request to its back end: the engine's own, or on a
//! gateway the one the name's alias picks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::auth::Credentials;
use super::pac;
use crate::activity::{Asked, Client, Via};
use crate::dial::backend::{Backend, ClientConn, not_forwarded};
use crate::dial::routes::Routes;
use crate::dial::{DialError, Dialed};
use crate::route::Host;

/// Where the requests of a listener go.
pub(crate) enum BackEnds {
    /// An engine's listener: into its own cluster.
    One(Arc<Backend>),
    /// A gateway's: into the engine whose alias the name ends in.
    ByAlias(RwLock<Routes>),
}

/// The state a listener's clients share (an engine's listeners share one).
pub(crate) struct FrontDoor {
    pub(crate) back_ends: BackEnds,
    pub(crate) auth: Option<Credentials>,
    pub(crate) handshake_timeout: Duration,
    /// Every client connection and every CONNECT tunnel, so a drain waits for them.
    tasks: TaskTracker,
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

impl FrontDoor {
    pub(crate) fn new(
        back_ends: BackEnds,
        auth: Option<Credentials>,
        handshake_timeout: Duration,
        max_connections: usize,
    ) -> FrontDoor {
        FrontDoor {
            back_ends,
            auth,
            handshake_timeout,
            tasks: TaskTracker::new(),
            cut: CancellationToken::new(),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            over_cap: AtomicU64::new(0),
            over_cap_logged: Mutex::new(None),
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
            // An engine's figures show it; a gateway's cap is its own log's.
            if let BackEnds::One(backend) = &self.back_ends {
                backend.stats.record_error(message);
            }
        }
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => Admission::Refused(permit),
            Err(_) => Admission::Dropped,
        }
    }

    /// Runs one client's work behind this door: drains wait for it, and it
    /// is cut when a drain ends. It logs in the caller's tracing span.
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

    /// Resolves and connects one client request through its back end
    /// (`via` names its protocol in the log). A failure has been logged
    /// when it is returned, for the listener to answer.
    pub(crate) async fn dial(
        &self,
        via: Via,
        client: &Client,
        host: &Host,
        port: u16,
    ) -> Result<(ClientConn, Dialed), DialError> {
        match &self.back_ends {
            BackEnds::One(backend) => backend.dial(Asked { client, via, shared_port: false }, host, port).await,
            BackEnds::ByAlias(routes) => {
                let picked = routes.read().unwrap().pick(host);
                match picked {
                    // The request runs as one of that engine's: in its log and its activity.
                    Ok((backend, host)) => {
                        let span = backend.span().clone();
                        backend.dial(Asked { client, via, shared_port: true }, &host, port).instrument(span).await
                    }
                    Err(refusal) => {
                        let e = DialError::from(refusal);
                        not_forwarded(None, &format!("{host}:{port}"), &e);
                        Err(e)
                    }
                }
            }
        }
    }

    /// What the PAC file served behind this door lists: the engine's
    /// cluster, or every context of a gateway.
    pub(crate) async fn pac_routes(&self) -> Vec<pac::Route> {
        let backends = match &self.back_ends {
            BackEnds::One(backend) => vec![(None, backend.clone())],
            BackEnds::ByAlias(routes) => routes.read().unwrap().backends(),
        };
        let mut out = Vec::with_capacity(backends.len());
        for (alias, backend) in backends {
            out.push(pac::Route { alias, names: backend.cluster_names().await });
        }
        out
    }
}
