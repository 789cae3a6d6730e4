//! Why an engine or a gateway could not start, and how any error is shown
//! in one line.

use std::net::SocketAddr;

use crate::cluster::cache::CacheError;

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A listener's address could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        /// The address asked for (the last one tried, for a port search).
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A listener off loopback without credentials would be an open proxy.
    #[error("{addr} is not a loopback address: anyone who can reach it could use the proxy, so it needs credentials")]
    OpenListener {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The DNS helper off loopback: DNS has no authentication, so anyone
    /// who can reach it could read the cluster's names and addresses.
    #[error("{addr} is not a loopback address: the DNS helper has no authentication, so it listens on loopback only")]
    OpenDnsListener {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Neither a SOCKS nor an HTTP listener was asked for.
    #[error("no listener to serve: neither SOCKS nor HTTP was asked for")]
    NoListener,
    /// A connection cap of 0 would refuse every client.
    #[error("a connection cap of 0 would refuse every client")]
    NoConnectionsAllowed,
    /// The watch caches could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => " (another program uses this port)",
        std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
        _ => "",
    }
}

/// An error and its sources in one line (`a: b: c`), skipping a source whose
/// text its parent already includes. For logs, `status` and the tray.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}
