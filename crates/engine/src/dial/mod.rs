//! From a client's destination to an open upstream stream: resolve the name
//! against the caches, then port-forward to an endpoint, failing over to the
//! next one; or, with `--passthrough`, dial outside names from this machine.
//!
//! * [`Dialer`] does that for one cluster; [`Failure`] is what a failed dial
//!   means to a client (the listeners turn it into a SOCKS reply code or an
//!   HTTP status).
//! * [`backend`] wraps a dialer with its engine's figures, connection IDs
//!   and log span: what a listener dials through.
//! * [`routes`] maps a gateway's aliases to back ends.
//! * [`failover`] tries a target's endpoints in turn, and moves a
//!   connection whose pod refused late (after the client was answered) to
//!   the next one, replaying what the client sent.

pub(crate) mod backend;
pub(crate) mod failover;
pub(crate) mod routes;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::activity::Tracked;
use crate::byte_stream::AsyncReadWrite;
use crate::cluster::cache::{CacheError, ClusterCache};
use crate::cluster::health::HealthState;
use crate::portforward::{ForwardError, Forwarder, Protocol};
use crate::route::{self, Endpoint, Host, Query, Refusal, RefusalKind, Rules};
use failover::{Failover, NoEndpoint};

/// How long resolving plus port-forwarding may take before the client is told.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a failed dial means to a client, whatever its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// SOCKS 0x02, HTTP 403.
    NotAllowed,
    /// SOCKS 0x04, HTTP 502.
    Unreachable,
    /// SOCKS 0x05, HTTP 502.
    Refused,
    /// SOCKS 0x04, HTTP 504.
    TimedOut,
    /// SOCKS 0x01, HTTP 502.
    General,
    /// The API server cannot be reached, so the answer may be out of date.
    /// SOCKS 0x01, HTTP 503.
    ApiUnreachable,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{endpoint}: {source}")]
    Forward {
        endpoint: Endpoint,
        tried: usize,
        #[source]
        source: ForwardError,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("dialling {target} directly failed: {source}")]
    Direct {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {DIAL_TIMEOUT:?}")]
    TimedOut,
    /// A failure that may come of the API server being away: the caches may
    /// be out of date, and a port-forward cannot be opened.
    #[error("the API server of context {context} is unreachable (for {for_secs} s; {error}): {cause}")]
    ApiUnreachable {
        context: String,
        for_secs: u64,
        /// The latest failure of a watch or of the probe.
        error: String,
        cause: Box<DialError>,
    },
}

impl From<NoEndpoint> for DialError {
    fn from(e: NoEndpoint) -> Self {
        DialError::Forward { endpoint: e.endpoint, tried: e.tried, source: e.source }
    }
}

impl DialError {
    pub fn failure(&self) -> Failure {
        match self {
            DialError::Refused(r) => match r.kind() {
                RefusalKind::NotAllowed => Failure::NotAllowed,
                RefusalKind::Unreachable => Failure::Unreachable,
                RefusalKind::Refused => Failure::Refused,
            },
            DialError::Forward { source, .. } if source.is_forbidden() => Failure::NotAllowed,
            DialError::Forward { source, .. } if source.is_refused() => Failure::Refused,
            DialError::Forward { source, .. } if source.is_not_found() => Failure::Unreachable,
            DialError::Cache(e) if e.is_forbidden() => Failure::NotAllowed,
            DialError::Forward { .. } | DialError::Cache(_) => Failure::General,
            DialError::Direct { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                Failure::Refused
            }
            DialError::Direct { .. } => Failure::Unreachable,
            DialError::TimedOut => Failure::TimedOut,
            DialError::ApiUnreachable { .. } => Failure::ApiUnreachable,
        }
    }

    /// Whether the API server being away may explain it: an answer from
    /// caches that may be out of date, or a port-forward not opened. Policy
    /// (outside the cluster, RBAC, this machine) stands either way.
    fn may_be_the_api_server(&self) -> bool {
        match self {
            DialError::Refused(r) => r.kind() != RefusalKind::NotAllowed,
            // The kubelet's own word (a refusal) came through the API server.
            DialError::Forward { source, .. } => {
                !source.is_forbidden() && !source.is_refused() && !matches!(source, ForwardError::Kubelet(_))
            }
            DialError::Cache(e) => !e.is_forbidden(),
            DialError::TimedOut => true,
            DialError::Direct { .. } | DialError::ApiUnreachable { .. } => false,
        }
    }
}

/// An open connection to where the client wanted to go.
pub(crate) enum Upstream {
    Pod(Box<Failover>),
    Direct(TcpStream),
}

/// How long a pod may stay silent after its client has closed its side
/// before the session ends (the pod cannot be told of the close; see
/// [`crate::relay::relay`]).
pub(crate) const POD_LINGER: Duration = Duration::from_secs(2);

impl Upstream {
    /// The relay's linger for this kind of upstream: a direct TCP connection
    /// and a SPDY stream carry the FIN themselves and need none.
    pub fn linger(&self) -> Option<Duration> {
        match self {
            Upstream::Pod(pod) if !pod.carries_fin() => Some(POD_LINGER),
            Upstream::Pod(_) | Upstream::Direct(_) => None,
        }
    }
}

/// A successful dial: the stream and what it reaches, for logs.
pub(crate) struct Dialed {
    pub upstream: Upstream,
    pub reached: String,
}

pub(crate) struct Dialer {
    /// The kube context, for refusals that name it.
    context: String,
    forwarder: Arc<Forwarder>,
    cache: ClusterCache,
    rules: Rules,
    passthrough: bool,
    /// Rotates the first endpoint tried, spreading connections across pods.
    next: AtomicUsize,
}

impl Dialer {
    pub fn new(context: &str, forwarder: Forwarder, cache: ClusterCache, rules: Rules, passthrough: bool) -> Dialer {
        Dialer {
            context: context.to_string(),
            forwarder: Arc::new(forwarder),
            cache,
            rules,
            passthrough,
            next: AtomicUsize::new(0),
        }
    }

    /// The port-forward protocol in use, once one has worked.
    pub fn protocol(&self) -> Option<Protocol> {
        self.forwarder.protocol()
    }

    /// The names and addresses this cluster answers now, for the PAC file.
    pub async fn cluster_names(&self) -> crate::route::names::ClusterNames {
        let snapshot = self.cache.snapshot().await;
        snapshot.cluster_names(&self.rules.cluster_domain, &self.rules.default_namespace)
    }

    pub fn cache(&self) -> &ClusterCache {
        &self.cache
    }

    /// How names are read: the DNS helper reads them the same way.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Resolves and connects, within [`DIAL_TIMEOUT`], telling `conn` (whose
    /// ID tags the logs) where it got to. While the API server cannot be
    /// reached, a failure that may come of that says so
    /// ([`DialError::ApiUnreachable`]).
    pub async fn dial(&self, host: &Host, port: u16, conn: &Tracked) -> Result<Dialed, DialError> {
        let e = match tokio::time::timeout(DIAL_TIMEOUT, self.dial_inner(host, port, conn)).await {
            Ok(Ok(dialed)) => return Ok(dialed),
            Ok(Err(e)) => e,
            Err(_) => DialError::TimedOut,
        };
        match self.cache.health() {
            HealthState::Reconnecting { since, error } if e.may_be_the_api_server() => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Err(DialError::ApiUnreachable {
                    context: self.context.clone(),
                    for_secs: now.as_secs().saturating_sub(since),
                    error,
                    cause: Box::new(e),
                })
            }
            _ => Err(e),
        }
    }

    async fn dial_inner(&self, host: &Host, port: u16, conn: &Tracked) -> Result<Dialed, DialError> {
        let query = Query::read(host, &self.rules);
        let snapshot = self.cache.snapshot_for(&query).await?;
        match route::resolve(query, port, &snapshot) {
            Ok(target) => {
                conn.resolved(&target.what);
                let upstream = self.forward(&target.endpoints, conn.id).await?;
                if let Upstream::Pod(pod) = &upstream {
                    let e = pod.endpoint();
                    conn.opened(Some(format!("{}/{}:{}", e.namespace, e.pod, e.port)), e.node.clone(), self.protocol());
                }
                Ok(Dialed { upstream, reached: target.what })
            }
            Err(Refusal::OutsideCluster { .. }) if self.passthrough => {
                conn.resolved("outside the cluster (passthrough)");
                self.direct(&host.to_string(), port).await
            }
            Err(Refusal::ExternalName { external, .. }) if self.passthrough => {
                conn.resolved(&format!("{external} (ExternalName, passthrough)"));
                self.direct(&external, port).await
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Tries each endpoint once, starting from the next in rotation (and
    /// later, on a late refusal, the ones after it: [`Failover`]).
    async fn forward(&self, endpoints: &[Endpoint], conn: u64) -> Result<Upstream, DialError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let order = endpoints.iter().cycle().skip(start % endpoints.len()).take(endpoints.len()).cloned().collect();
        let stream = Failover::open(self.forwarder.clone(), order, conn).await?;
        // The Service's other pods get a session too, so their first
        // connections are as fast as this pod's next.
        if endpoints.len() > 1 {
            self.forwarder.prewarm(endpoints);
        }
        Ok(Upstream::Pod(Box::new(stream)))
    }

    /// Dials `host` from this machine (passthrough). The name is resolved
    /// here, and refused if any address it has is this machine's own
    /// (loopback, unspecified, link-local) unless the rules allow those; the
    /// addresses checked are the ones dialled.
    async fn direct(&self, host: &str, port: u16) -> Result<Dialed, DialError> {
        let target = format!("{host}:{port}");
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|source| DialError::Direct { target: target.clone(), source })?
            .map(|a| std::net::SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        if !self.rules.passthrough_local
            && let Some(local) = addrs.iter().find(|a| route::is_this_machine(a.ip()))
        {
            return Err(Refusal::ThisMachine { host: host.to_string(), addr: local.ip() }.into());
        }
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let reached = format!("{target} ({addr}, direct, passthrough)");
                    return Ok(Dialed { upstream: Upstream::Direct(stream), reached });
                }
                Err(e) => last = e,
            }
        }
        Err(DialError::Direct { target, source: last })
    }
}

impl Upstream {
    fn pinned(self: Pin<&mut Self>) -> Pin<&mut (dyn AsyncReadWrite + Unpin)> {
        match self.get_mut() {
            Upstream::Pod(s) => Pin::new(s.as_mut()),
            Upstream::Direct(s) => Pin::new(s),
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.pinned().poll_read(cx, buf)
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.pinned().poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pinned().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pinned().poll_shutdown(cx)
    }
}
