//! One listener for every connected context: a name ending in `.<alias>`
//! goes to that context's engine (`productpage.default.prod`,
//! `web.shop.svc.cluster.local.staging`), other names to a default context.
//!
//! A [`Gateway`] owns a mixed port (SOCKS5, HTTP and the PAC file, like an
//! engine's) and no cluster: each request picks an engine from the current
//! [`Routes`], which the host replaces whenever contexts come and go, so a
//! context connected later is reachable without restarting the listener.
//! The request then runs as one of that engine's (its figures, its log).
//!
//! An alias is a context name made a DNS label ([`alias_for`](crate::alias_for)). An alias
//! that is also a namespace of the default context wins: the user named the
//! context. IP addresses carry no alias and go to the default context.

use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

use crate::config::{ProxyConfig, pac_url};
use crate::dial::routes::Routes;
use crate::error::EngineError;
use crate::listen::Listen;
use crate::listen::accept::ListenerKind;
use crate::listen::auth::Credentials;
use crate::listen::front_door::BackEnds;
use crate::listen::server::{Admitting, Server};

/// How a gateway's listener treats its clients (as an engine's does).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where it listens.
    pub listen: Listen,
    /// Required from clients when set; mandatory off loopback.
    pub auth: Option<Credentials>,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Client connections served at once.
    pub max_connections: usize,
}

impl GatewayConfig {
    /// Listening at `listen`, with the engine's defaults.
    pub fn new(listen: Listen) -> GatewayConfig {
        GatewayConfig {
            listen,
            auth: None,
            handshake_timeout: ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: ProxyConfig::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A running shared port. Dropping it stops the listener at once.
pub struct Gateway {
    server: Server,
    addr: SocketAddr,
}

impl Gateway {
    /// Binds the port and serves it with `routes`.
    pub async fn start(config: GatewayConfig, routes: Routes) -> Result<Gateway, EngineError> {
        // A client costs a descriptor here; its pod side is counted by its engine.
        let admitting = Admitting {
            auth: config.auth,
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections,
            descriptors_per_client: 1,
        };
        admitting.check([&config.listen.addr])?;
        let listener = config.listen.bind().await?;
        let server = Server::new(BackEnds::ByAlias(RwLock::new(routes)), admitting);
        let addr = server.serve(listener, ListenerKind::Mixed);
        Ok(Gateway { server, addr })
    }

    /// From now on, new requests are routed by `routes`; open ones go on.
    pub fn set_routes(&self, routes: Routes) {
        if let BackEnds::ByAlias(current) = &self.server.door.back_ends {
            *current.write().unwrap() = routes;
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of its PAC file, which covers every routed context.
    pub fn pac_url(&self) -> String {
        pac_url(self.addr)
    }

    /// Closes the listener: once this returns its port is free. Open
    /// connections go on.
    pub async fn stop_listening(&self) {
        self.server.stop_listening().await;
    }

    /// Closes the listener (its port is free once this returns), lets open
    /// connections run for up to `grace`, then cuts them.
    pub async fn shutdown(self, grace: Duration) {
        self.server.shutdown(grace).await;
    }
}
