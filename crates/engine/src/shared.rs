//! What the listeners of one engine share, and the one path every client
//! request takes through it, whatever its protocol: an ID for the logs, a
//! count in the figures, the dial, and on failure one log line and the last
//! error. `socks` and `http` only speak their protocol around it.

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
use crate::resolve::Host;
use crate::stats::{ActiveGuard, Stats};

/// The state one engine's listeners share.
pub(crate) struct Shared {
    pub(crate) dialer: Dialer,
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
/// connection until dropped; `id` tags its log lines.
pub(crate) struct ClientConn {
    pub(crate) id: u64,
    _active: ActiveGuard,
}

impl Shared {
    pub(crate) fn new(
        dialer: Dialer,
        auth: Option<Credentials>,
        handshake_timeout: Duration,
        max_connections: usize,
    ) -> Shared {
        Shared {
            dialer,
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
        let conn = ClientConn { id: self.ids.fetch_add(1, Ordering::Relaxed) + 1, _active: self.stats.connection() };
        let target = format!("{host}:{port}");
        let dialed = self.dialer.dial(host, port, conn.id).await;
        match &dialed {
            Ok(d) => tracing::info!(conn = conn.id, %peer, %target, reached = %d.reached, "{what}"),
            Err(e) => self.failed(conn.id, &target, e),
        }
        (conn, dialed)
    }

    /// Logs a connection that could not be made or broke, and keeps it as the last error.
    pub(crate) fn failed(&self, conn: u64, target: &str, e: &dyn std::error::Error) {
        let chain = crate::error_chain(e);
        // `target` is escaped already (see `Host`'s Display): shown as it is.
        tracing::warn!(conn, target = %target, reason = %chain, "connection not forwarded");
        self.stats.record_error(format!("{target}: {chain}"));
    }
}
