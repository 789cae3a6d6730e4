//! The back end a client request is dialled through: one cluster's
//! [`Dialer`], with the figures, connection IDs and tracing span of the
//! engine that owns it. An engine's listeners use its own back end; a
//! gateway picks one per request by alias ([`super::routes`]), and the
//! request then counts, and logs, as that engine's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{DialError, Dialed, Dialer};
use crate::activity::{Activity, Asked, Tracked};
use crate::route::Host;
use crate::route::names::ClusterNames;
use crate::stats::{ActiveGuard, Stats};

/// How long a refusal may wait for the program behind its client to be
/// found (a lookup takes a millisecond or so; a first one, reading every
/// process, some more).
const PROGRAM_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// One cluster, as the listeners dial into it.
pub(crate) struct Backend {
    dialer: Arc<Dialer>,
    pub(crate) stats: Arc<Stats>,
    /// Its open connections, recent failures and traffic.
    pub(crate) activity: Arc<Activity>,
    ids: AtomicU64,
    /// The span the engine was started in (a managed connection's, which
    /// writes its log): every request dialled here logs in it, whichever
    /// listener it came through.
    span: tracing::Span,
}

/// One client request on its way to the cluster. It counts as an active
/// connection of its back end, and is listed in its activity, until
/// dropped; `id` tags its log lines, and its bytes count in `tracked`.
pub(crate) struct ClientConn {
    pub(crate) id: u64,
    pub(crate) tracked: Arc<Tracked>,
    activity: Arc<Activity>,
    _active: ActiveGuard,
}

impl ClientConn {
    /// Logs a connection that could not be made, and keeps it as its
    /// engine's last error and among its failures.
    pub(crate) fn failed(&self, target: &str, e: &dyn std::error::Error) {
        let chain = not_forwarded(Some(self.id), target, e);
        self.tracked.stats.record_error(format!("{target}: {chain}"));
        self.activity.failed(&self.tracked, chain);
    }

    /// Logs a connection that broke after it was made (the client is reset),
    /// and keeps it among its engine's failures.
    pub(crate) fn broke(&self, e: &std::io::Error) {
        if self.tracked.was_closed() {
            tracing::info!(conn = self.id, "closed from the connections list; resetting both sides");
            self.activity.failed(&self.tracked, "closed from the connections list".into());
        } else {
            tracing::info!(conn = self.id, error = %e, "connection broke; resetting the client");
            self.activity.failed(&self.tracked, format!("the connection broke: {e}"));
        }
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.activity.remove(self.id);
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
        let stats = Arc::new(Stats::default());
        let activity = Activity::start(&stats);
        Backend { dialer, stats, activity, ids: AtomicU64::new(0), span: tracing::Span::current() }
    }

    pub(crate) fn dialer(&self) -> &Arc<Dialer> {
        &self.dialer
    }

    /// Resolves and connects one client request. A failure is logged with
    /// its reason and kept as the last error and among the failures before
    /// it is returned for the listener to answer.
    pub(crate) async fn dial(
        &self,
        asked: Asked<'_>,
        host: &Host,
        port: u16,
    ) -> Result<(ClientConn, Dialed), DialError> {
        let (what, peer) = (asked.via.log_name(), asked.client.addr);
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = ClientConn {
            id,
            _active: self.stats.connection(),
            tracked: self.activity.add(id, asked, format!("{host}:{port}"), self.stats.clone()),
            activity: self.activity.clone(),
        };
        let target = &conn.tracked.asked;
        match self.dialer.dial(host, port, &conn.tracked).await {
            Ok(d) => {
                tracing::info!(conn = conn.id, %peer, %target, reached = %d.reached, "{what}");
                Ok((conn, d))
            }
            Err(e) => {
                // Before the client is told and leaves: its program is listed with the failure.
                conn.tracked.program().find(PROGRAM_WAIT).await;
                conn.failed(target, &e);
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
