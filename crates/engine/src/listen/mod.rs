//! The client side: everything from a client's first byte to the request
//! handed to its back end (`crate::dial`), and the answer it is given.
//!
//! * [`server`] is the lifecycle an engine and a gateway share: bind the
//!   ports, fit the connection cap to the open-file limit ([`nofile`]),
//!   serve, drain.
//! * [`accept`] runs each port's accept loop and tells SOCKS5 from HTTP by
//!   the client's first byte (the mixed port).
//! * [`front_door`] admits clients under the cap, checks credentials
//!   ([`auth`]), tracks their tasks for the drain, and sends each request to
//!   its back end.
//! * [`socks`] and [`http`] speak the protocols; a failed dial's
//!   `dial::Failure` becomes a SOCKS reply code in `socks` and an HTTP status
//!   in `http`. `http` also serves the port's own pages: `/` and the PAC
//!   file ([`pac`]).
//! * [`dns`] is the optional DNS helper, answering from the same caches.

pub(crate) mod accept;
pub(crate) mod auth;
pub(crate) mod dns;
pub(crate) mod front_door;
pub(crate) mod http;
pub(crate) mod nofile;
pub(crate) mod pac;
pub(crate) mod server;
pub(crate) mod socks;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::error::EngineError;

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
