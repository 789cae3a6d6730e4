//! Listening: binding a port ([`Listen`]), and the accept loop every
//! listener runs, an engine's or a gateway's. It admits each client under
//! the connection cap, tells from its first byte whether it speaks SOCKS5 or
//! HTTP, and hands it to `socks` or `http`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::engine::EngineError;
use crate::shared::{Admission, Shared};

/// Where a listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    /// The address asked for (port 0: any free port).
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

    pub(crate) async fn bind(self) -> Result<TcpListener, EngineError> {
        self.bind_with(TcpListener::bind).await
    }

    /// Binds with `bind`, searching for a free port if asked to.
    pub(crate) async fn bind_with<T, F, Fut>(self, bind: F) -> Result<T, EngineError>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        let mut addr = self.addr;
        loop {
            match bind(addr).await {
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

/// The accept loops of a set of listeners, stopped together.
#[derive(Default)]
pub(crate) struct Listeners {
    /// Stops the accept loops.
    accepting: CancellationToken,
    /// The accept loops, each owning its listener.
    loops: TaskTracker,
}

impl Listeners {
    /// Serves the clients of `listener` through `shared` until [`Listeners::stop`].
    pub(crate) fn spawn(&self, listener: TcpListener, kind: ListenerKind, shared: Arc<Shared>) {
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
                match shared.admit() {
                    Admission::Served(slot) => shared.spawn_tracked(async move {
                        match Speaks::sniff(kind, &stream, &for_task).await {
                            Some(Speaks::Socks) => crate::socks::serve(stream, peer, for_task, slot).await,
                            Some(Speaks::Http(port)) => crate::http::serve(stream, peer, port, for_task, slot).await,
                            None => tracing::info!(%peer, "client sent nothing within the handshake timeout; closing"),
                        }
                    }),
                    Admission::Refused(slot) => shared.spawn_tracked(async move {
                        let _slot = slot;
                        match Speaks::sniff(kind, &stream, &for_task).await {
                            Some(Speaks::Socks) => crate::socks::refuse_busy(stream, peer, for_task).await,
                            Some(Speaks::Http(_)) => crate::http::refuse_busy(stream, peer, for_task).await,
                            None => {}
                        }
                    }),
                    // Too many refusals under way as well: close it at once.
                    Admission::Dropped => drop(stream),
                }
            }
        };
        self.loops.spawn(accept_loop.in_current_span());
    }

    /// Runs a server of another kind (the DNS helper) with these listeners:
    /// `serve` is given the token that says when they stop.
    pub(crate) fn spawn_until_stopped<F>(&self, serve: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.loops.spawn(serve(self.accepting.clone()).in_current_span());
    }

    /// Stops accepting at once (the ports are freed when the loops end).
    pub(crate) fn cancel(&self) {
        self.accepting.cancel();
    }

    /// Stops accepting; once this returns the ports are free.
    pub(crate) async fn stop(&self) {
        self.accepting.cancel();
        self.loops.close();
        self.loops.wait().await;
    }
}

/// The kinds of listener.
#[derive(Clone, Copy)]
pub(crate) enum ListenerKind {
    /// SOCKS5 and HTTP on one port, told apart by the client's first byte.
    Mixed,
    /// HTTP only.
    Http,
}

/// What protocol a client speaks.
enum Speaks {
    Socks,
    Http(crate::http::Port),
}

impl Speaks {
    /// On the mixed port, the client's first byte tells: SOCKS5 starts with
    /// its version, 5, which begins no HTTP request. It is peeked, not read,
    /// so the protocol's own parser sees it. `None`: the client sent nothing
    /// (or left) within the handshake timeout.
    async fn sniff(kind: ListenerKind, stream: &TcpStream, shared: &Shared) -> Option<Speaks> {
        if let ListenerKind::Http = kind {
            return Some(Speaks::Http(crate::http::Port::Http));
        }
        let mut first = [0u8; 1];
        match tokio::time::timeout(shared.handshake_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == SOCKS5_VERSION => Some(Speaks::Socks),
            Ok(Ok(1)) => Some(Speaks::Http(crate::http::Port::Mixed)),
            _ => None,
        }
    }
}

/// The first byte of every SOCKS5 message from a client.
const SOCKS5_VERSION: u8 = 5;
