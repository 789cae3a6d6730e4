//! TCP connections to pod ports through the API server's `pods/portforward`,
//! in the protocol each cluster speaks best, chosen once and logged:
//!
//! 1. [`Protocol::Tunnel`]: SPDY/3.1 inside a WebSocket (KEP-4006, what
//!    kubectl 1.31+ speaks first). One session per pod carries every
//!    connection to it as a pair of SPDY streams ([`pool`]).
//! 2. [`Protocol::Spdy`]: the same SPDY session over the legacy
//!    `Upgrade: SPDY/3.1` POST, when the tunnel is refused: by the API
//!    server, a proxy in front of it, or RBAC (the tunnel is a GET and needs
//!    `get` on `pods/portforward`; the POST needs only `create`, as kubectl's
//!    documentation asks).
//! 3. [`Protocol::WebSocket`]: `v4.channel.k8s.io`, one session per
//!    connection ([`v4`]), only when both are refused. It cannot carry a
//!    half-close or tell a broken session from a finished one.
//!
//! On SPDY a forwarded connection is two streams, paired by the kubelet
//! through their `requestid` header: an *error* stream (the kubelet writes
//! why it could not reach the pod's port there) and a *data* stream (the
//! bytes). There is no "connected" signal: the kubelet dials the pod after
//! both streams arrive and reports a failure on the error stream. So [`Forwarder::open`]
//! sends both SYN_STREAMs at once, waits for the data stream's SYN_REPLY
//! (one round trip) and then as long again (10 to 25 ms) for an error, before
//! it calls the connection made; to a pod port that took a connection lately
//! ([`accepting`]) it calls it made at the reply.
//! A client's FIN becomes the data stream's FIN and the pod's FIN reaches the
//! client; a session that breaks resets its streams, which the relay passes
//! on to clients as resets, never as a clean end.

mod accepting;
mod pool;
mod spdy;
mod upgrade;
mod v4;
mod websocket;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::Client;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::route::Endpoint;
use accepting::Accepting;
use pool::Pool;
use upgrade::UpgradeError;

/// A data-path protocol of `pods/portforward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub enum Protocol {
    /// SPDY/3.1 in a WebSocket (`SPDY/3.1+portforward.k8s.io`), one session per pod.
    Tunnel,
    /// SPDY/3.1 over the legacy `Upgrade: SPDY/3.1` POST, one session per pod.
    Spdy,
    /// `v4.channel.k8s.io`, one WebSocket per connection.
    #[serde(rename = "websocket")]
    WebSocket,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tunnel => "tunnel (SPDY/3.1 over WebSocket)",
            Protocol::Spdy => "SPDY/3.1",
            Protocol::WebSocket => "WebSocket (v4.channel.k8s.io)",
        })
    }
}

/// How the data path behaves: which protocol, and how sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPath {
    /// One protocol only; none: the best the cluster accepts.
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// How often an idle session is PINGed (keeping it alive and measuring
    /// its round trip).
    #[serde(default = "DataPath::default_keepalive", with = "crate::seconds")]
    pub keepalive: Duration,
    /// How long a session without connections stays open.
    #[serde(default = "DataPath::default_idle", with = "crate::seconds")]
    pub idle_timeout: Duration,
}

impl DataPath {
    /// The keepalive unless told otherwise (kubectl's too).
    pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
    /// The idle timeout unless told otherwise.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

    fn default_keepalive() -> Duration {
        Self::DEFAULT_KEEPALIVE
    }

    fn default_idle() -> Duration {
        Self::DEFAULT_IDLE_TIMEOUT
    }
}

impl Default for DataPath {
    fn default() -> Self {
        DataPath { protocol: None, keepalive: Self::DEFAULT_KEEPALIVE, idle_timeout: Self::DEFAULT_IDLE_TIMEOUT }
    }
}

/// Why a connection to a pod port could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// The API server refused the upgrade: RBAC, a missing pod, an unreachable kubelet.
    #[error("the API server refused the port-forward: {0}")]
    Api(#[source] kube::Error),
    /// The upgrade went through but not to the protocol asked for.
    #[error("{0}")]
    NotSwitched(String),
    /// The kubelet's own message from the port's error stream.
    #[error("the kubelet reported: {0}")]
    Kubelet(String),
    /// The kubelet reset the connection's streams before it was made,
    /// without its message arriving. It does that when it cannot reach the
    /// pod's port (after writing why, a message that does not always come
    /// first), so this counts as a refusal.
    #[error("the kubelet reset the connection before it was made ({0}); the pod's port did not accept it")]
    Reset(String),
    /// The session to the pod failed while the streams were being opened.
    #[error("the port-forward session to the pod failed: {0}")]
    Session(String),
}

impl From<UpgradeError> for ForwardError {
    fn from(e: UpgradeError) -> Self {
        match e {
            UpgradeError::Api(e) => ForwardError::Api(e),
            e @ UpgradeError::NotSwitched { .. } => ForwardError::NotSwitched(e.to_string()),
        }
    }
}

impl ForwardError {
    /// RBAC forbids `pods/portforward`: no other endpoint will do better.
    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(self, ForwardError::Api(kube::Error::Api(s)) if s.code == 403)
    }

    pub(crate) fn is_refused(&self) -> bool {
        match self {
            ForwardError::Kubelet(m) => m.contains("connection refused"),
            ForwardError::Reset(_) => true,
            _ => false,
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ForwardError::Api(kube::Error::Api(s)) if s.code == 404)
    }
}

/// A byte stream to one pod port. Dropping it ends the connection (and, on
/// the v4 protocol, its session).
pub(crate) enum PodStream {
    /// A pair of streams in a shared SPDY session.
    Spdy(spdy::SpdyStream),
    /// A v4 WebSocket session of its own.
    V4(v4::V4Stream),
}

impl PodStream {
    /// Whether a FIN toward the pod is carried (else the relay must linger).
    pub(crate) fn carries_fin(&self) -> bool {
        matches!(self, PodStream::Spdy(_))
    }
}

/// One engine's way to pods: the protocol in use and the session pool.
pub(crate) struct Forwarder {
    client: Client,
    forced: Option<Protocol>,
    /// The protocol that worked last; tried first.
    chosen: Mutex<Option<Protocol>>,
    pool: Arc<Pool>,
    /// The pod ports that took connections lately.
    accepting: Accepting,
}

/// The order protocols are tried in when none is forced.
const PREFERENCE: [Protocol; 3] = [Protocol::Tunnel, Protocol::Spdy, Protocol::WebSocket];

impl Forwarder {
    /// `client` should have no read timeout: sessions idle for hours are
    /// kept alive by PINGs.
    pub(crate) fn new(client: Client, data_path: DataPath) -> Forwarder {
        Forwarder {
            pool: Pool::new(client.clone(), data_path),
            client,
            forced: data_path.protocol,
            chosen: Mutex::new(None),
            accepting: Accepting::default(),
        }
    }

    /// The protocol connections use now, once one has worked (or forced).
    pub(crate) fn protocol(&self) -> Option<Protocol> {
        self.forced.or(*self.chosen.lock().unwrap())
    }

    /// Opens a connection to `endpoint`. `on_late_error` is called with the
    /// kubelet's message if it fails after it was made (v4 only: on SPDY the
    /// stream itself then fails).
    pub(crate) async fn open(
        &self,
        endpoint: &Endpoint,
        on_late_error: impl FnOnce(String) + Send + 'static,
    ) -> Result<PodStream, ForwardError> {
        let order: Vec<Protocol> = match (self.forced, *self.chosen.lock().unwrap()) {
            (Some(p), _) => vec![p],
            (None, Some(p)) => std::iter::once(p).chain(PREFERENCE.into_iter().filter(|q| *q != p)).collect(),
            (None, None) => PREFERENCE.to_vec(),
        };
        let mut last = None;
        for (i, protocol) in order.iter().copied().enumerate() {
            let attempt = match protocol {
                Protocol::WebSocket => v4::open(&self.client, endpoint, on_late_error).await.map(PodStream::V4),
                Protocol::Tunnel | Protocol::Spdy => match self.pool.session(endpoint, protocol).await {
                    Ok(session) => self.open_on(session, endpoint, protocol).await,
                    Err(e) if e.may_fall_back() && i + 1 < order.len() => {
                        tracing::debug!(%endpoint, %protocol, error = %e, "port-forward protocol refused; trying the next");
                        last = Some(e.into());
                        continue;
                    }
                    Err(e) => Err(e.into()),
                },
            };
            match &attempt {
                Ok(_) => self.chose(protocol),
                Err(e) if e.is_refused() => self.refused(endpoint),
                Err(_) => {}
            }
            return attempt;
        }
        Err(last.unwrap_or_else(|| ForwardError::NotSwitched("no port-forward protocol to try".into())))
    }

    /// The pod behind `endpoint` answered a connection: the next ones there
    /// need not wait for a refusal.
    pub(crate) fn took(&self, endpoint: &Endpoint) {
        self.accepting.took(endpoint, Instant::now());
    }

    /// `endpoint` refused a connection (perhaps after it was answered).
    pub(crate) fn refused(&self, endpoint: &Endpoint) {
        self.accepting.refused(endpoint);
    }

    /// Opens the stream pair on `tunnel`; if that session turns out to have
    /// broken (an API server restart the pool had not noticed yet), once
    /// more on a new one.
    async fn open_on(
        &self,
        tunnel: Arc<spdy::Tunnel>,
        endpoint: &Endpoint,
        protocol: Protocol,
    ) -> Result<PodStream, ForwardError> {
        let settle = !self.accepting.takes(endpoint, Instant::now());
        match spdy::open(&tunnel, endpoint.port, settle).await {
            Err(ForwardError::Session(reason)) if tunnel.session.is_closed() => {
                tracing::debug!(%endpoint, reason, "port-forward session had broken; opening a new one");
                let tunnel = self.pool.session(endpoint, protocol).await?;
                spdy::open(&tunnel, endpoint.port, settle).await.map(PodStream::Spdy)
            }
            // On a session's very first streams the kubelet's message can be
            // lost behind its reset; asked once more, it says why.
            Err(ForwardError::Reset(reason)) => {
                tracing::debug!(%endpoint, reason, "the kubelet reset a new connection without a word; asking again");
                spdy::open(&tunnel, endpoint.port, true).await.map(PodStream::Spdy)
            }
            opened => opened.map(PodStream::Spdy),
        }
    }

    /// Opens sessions to these endpoints in the background (a Service's
    /// other pods after its first connection), so their first connections
    /// need no upgrade either.
    pub(crate) fn prewarm(&self, endpoints: &[Endpoint]) {
        if let Some(protocol) = self.protocol().filter(|p| *p != Protocol::WebSocket) {
            self.pool.prewarm(endpoints, protocol);
        }
    }

    fn chose(&self, protocol: Protocol) {
        let mut chosen = self.chosen.lock().unwrap();
        if *chosen != Some(protocol) {
            tracing::info!(%protocol, "port-forwards use {protocol}");
            *chosen = Some(protocol);
        }
    }
}

impl AsyncRead for PodStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PodStream::Spdy(s) => Pin::new(s).poll_read(cx, buf),
            PodStream::V4(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PodStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PodStream::Spdy(s) => Pin::new(s).poll_write(cx, buf),
            PodStream::V4(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PodStream::Spdy(s) => Pin::new(s).poll_flush(cx),
            PodStream::V4(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PodStream::Spdy(s) => Pin::new(s).poll_shutdown(cx),
            PodStream::V4(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
