//! The lifecycle an engine and a gateway share: check what was asked, bind
//! (so a port in use fails fast), fit the connection cap to the open-file
//! limit, serve, and drain (open connections may finish, then are cut).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::accept::{ListenerKind, Listeners};
use super::auth::Credentials;
use super::front_door::{BackEnds, FrontDoor};
use super::nofile;
use crate::error::EngineError;

/// Listeners behind one front door. Dropping it stops them at once and
/// cuts their open connections; [`Server::shutdown`] lets those finish first.
pub(crate) struct Server {
    pub(crate) door: Arc<FrontDoor>,
    listeners: Listeners,
}

/// How the clients of a server are admitted.
pub(crate) struct Admitting {
    pub(crate) auth: Option<Credentials>,
    pub(crate) handshake_timeout: Duration,
    /// The cap asked for.
    pub(crate) max_connections: usize,
    /// Descriptors each client costs (two on the v4 WebSocket protocol).
    pub(crate) descriptors_per_client: u64,
}

impl Admitting {
    /// Refuses what would refuse every client, or be an open proxy: a cap of
    /// 0, or a listener off loopback without credentials.
    pub(crate) fn check<'a>(&self, addrs: impl IntoIterator<Item = &'a SocketAddr>) -> Result<(), EngineError> {
        if self.max_connections == 0 {
            return Err(EngineError::NoConnectionsAllowed);
        }
        match addrs.into_iter().find(|a| !a.ip().is_loopback()) {
            Some(addr) if self.auth.is_none() => Err(EngineError::OpenListener { addr: *addr }),
            _ => Ok(()),
        }
    }
}

impl Server {
    /// A server sending its clients' requests to `back_ends`, with the cap
    /// fitted to the open-file limit. It serves nothing until given ports.
    pub(crate) fn new(back_ends: BackEnds, admitting: Admitting) -> Server {
        let max_connections = nofile::fitting_cap(admitting.max_connections, admitting.descriptors_per_client);
        let door = FrontDoor::new(back_ends, admitting.auth, admitting.handshake_timeout, max_connections);
        Server { door: Arc::new(door), listeners: Listeners::default() }
    }

    /// Serves the clients of a bound port; returns its address.
    pub(crate) fn serve(&self, listener: TcpListener, kind: ListenerKind) -> SocketAddr {
        let addr = listener.local_addr().expect("a bound listener has an address");
        self.listeners.spawn(listener, kind, self.door.clone());
        addr
    }

    /// Runs a server of another kind (the DNS helper) with these listeners:
    /// `serve` is given the token that says when they stop.
    pub(crate) fn serve_until_stopped<F>(&self, serve: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.listeners.spawn_until_stopped(serve);
    }

    /// Closes the listeners: once this returns their ports are free. Open
    /// connections go on.
    pub(crate) async fn stop_listening(&self) {
        self.listeners.stop().await;
    }

    /// Closes the listeners, lets open connections run for up to `grace`,
    /// then cuts them.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.stop_listening().await;
        self.door.drain(grace).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.listeners.cancel();
        self.door.cut.cancel();
    }
}
