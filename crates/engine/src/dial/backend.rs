//! The back end a client request is dialled through: one cluster's
//! [`Dialer`], with the figures, connection IDs and tracing span of the
//! engine that owns it. An engine's listeners use its own back end; a
//! gateway picks one per request by alias ([`super::routes`]), and the
//! request then counts, and logs, as that engine's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{DialError, Dialed, Dialer};
use crate::route::Host;
use crate::route::names::ClusterNames;
use crate::stats::{ActiveGuard, Stats};

/// One cluster, as the listeners dial into it.
pub(crate) struct Backend {
    dialer: Arc<Dialer>,
    pub(crate) stats: Arc<Stats>,
    ids: AtomicU64,
    /// The span the engine was started in (a managed connection's, which
    /// writes its log): every request dialled here logs in it, whichever
    /// listener it came through.
    span: tracing::Span,
}

/// One client request on its way to the cluster. It counts as an active
/// connection of its back end until dropped; `id` tags its log lines, and
/// its bytes count in `stats`.
pub(crate) struct ClientConn {
    pub(crate) id: u64,
    pub(crate) stats: Arc<Stats>,
    _active: ActiveGuard,
}

impl ClientConn {
    /// Logs a connection that could not be made or broke, and keeps it as
    /// its engine's last error.
    pub(crate) fn failed(&self, target: &str, e: &dyn std::error::Error) {
        let chain = not_forwarded(Some(self.id), target, e);
        self.stats.record_error(format!("{target}: {chain}"));
    }
}

/// Logs a request that was not forwarded; returns the reason as one line.
pub(crate) fn not_forwarded(conn: Option<u64>, target: &str, e: &dyn std::error::Error) -> String {
    let chain = crate::error_chain(e);
    // `target` is escaped already (see `Host`'s Display): shown as it is.
    tracing::warn!(conn, target = %target, reason = %chain, "connection not forwarded");
    chain
}

impl Backend {
    /// A back end over `dialer`, logging in the current span.
    pub(crate) fn new(dialer: Arc<Dialer>) -> Backend {
        Backend { dialer, stats: Arc::new(Stats::default()), ids: AtomicU64::new(0), span: tracing::Span::current() }
    }

    pub(crate) fn dialer(&self) -> &Arc<Dialer> {
        &self.dialer
    }

    /// Resolves and connects one client request (`what` names its protocol
    /// in the log). A failure is logged with its reason and kept as the last
    /// error before it is returned for the listener to answer.
    pub(crate) async fn dial(
        &self,
        what: &str,
        peer: SocketAddr,
        host: &Host,
        port: u16,
    ) -> Result<(ClientConn, Dialed), DialError> {
        let conn = ClientConn {
            id: self.ids.fetch_add(1, Ordering::Relaxed) + 1,
            stats: self.stats.clone(),
            _active: self.stats.connection(),
        };
        let target = format!("{host}:{port}");
        match self.dialer.dial(host, port, conn.id).await {
            Ok(d) => {
                tracing::info!(conn = conn.id, %peer, %target, reached = %d.reached, "{what}");
                Ok((conn, d))
            }
            Err(e) => {
                conn.failed(&target, &e);
                Err(e)
            }
        }
    }

    /// The span the engine was started in, for a request that reaches this
    /// back end through another engine's listener (a gateway).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The names and addresses this cluster answers now, for the PAC file.
    pub(crate) async fn cluster_names(&self) -> ClusterNames {
        self.dialer.cluster_names().await
    }
}
