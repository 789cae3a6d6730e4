//! The accept loop every listener runs, an engine's or a gateway's. It
//! admits each client under the connection cap, tells from its first byte
//! whether it speaks SOCKS5 or HTTP, and hands it to `socks` or `http`.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::front_door::{Admission, FrontDoor};
use super::{http, socks};
use crate::activity::Client;

/// The accept loops of a set of listeners, stopped together.
#[derive(Default)]
pub(crate) struct Listeners {
    /// Stops the accept loops.
    accepting: CancellationToken,
    /// The accept loops, each owning its listener.
    loops: TaskTracker,
}

impl Listeners {
    /// Serves the clients of `listener` through `door` until [`Listeners::stop`].
    pub(crate) fn spawn(&self, listener: TcpListener, kind: ListenerKind, shared: Arc<FrontDoor>) {
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
                        // Who it is; its program is looked up only if someone asks.
                        let client = Client::accepted(peer, stream.local_addr().ok());
                        match Speaks::sniff(kind, &stream, &for_task).await {
                            Some(Speaks::Socks) => socks::serve(stream, client, for_task, slot).await,
                            Some(Speaks::Http(port)) => http::serve(stream, client, port, for_task, slot).await,
                            None => tracing::info!(%peer, "client sent nothing within the handshake timeout; closing"),
                        }
                    }),
                    Admission::Refused(slot) => shared.spawn_tracked(async move {
                        let _slot = slot;
                        match Speaks::sniff(kind, &stream, &for_task).await {
                            Some(Speaks::Socks) => socks::refuse_busy(stream, peer, for_task).await,
                            Some(Speaks::Http(_)) => http::refuse_busy(stream, peer, for_task).await,
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
    Http(http::Port),
}

impl Speaks {
    /// On the mixed port, the client's first byte tells: SOCKS5 starts with
    /// its version, 5, which begins no HTTP request. It is peeked, not read,
    /// so the protocol's own parser sees it. `None`: the client sent nothing
    /// (or left) within the handshake timeout.
    async fn sniff(kind: ListenerKind, stream: &TcpStream, shared: &FrontDoor) -> Option<Speaks> {
        if let ListenerKind::Http = kind {
            return Some(Speaks::Http(http::Port::Http));
        }
        let mut first = [0u8; 1];
        match tokio::time::timeout(shared.handshake_timeout, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == SOCKS5_VERSION => Some(Speaks::Socks),
            Ok(Ok(1)) => Some(Speaks::Http(http::Port::Mixed)),
            _ => None,
        }
    }
}

/// The first byte of every SOCKS5 message from a client.
const SOCKS5_VERSION: u8 = 5;
