//! What a proxy is asked to be: [`ProxyConfig`] and the defaults every
//! shell uses.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::listen::Listen;
use crate::listen::auth::Credentials;
use crate::portforward::DataPath;

/// How a proxy should listen and resolve. The defaults every shell uses are
/// the associated constants and [`ProxyConfig::default`].
///
/// As JSON (a managed connection's request), an absent listener is none and
/// other absent fields take their defaults; credentials are never serialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// The SOCKS5 listener, if any. It is a mixed port: it answers HTTP
    /// proxy requests and serves the PAC file too.
    #[serde(default)]
    pub socks: Option<Listen>,
    /// The HTTP proxy listener (CONNECT and absolute-form requests), if any.
    #[serde(default)]
    pub http: Option<Listen>,
    /// The DNS helper (UDP and TCP on one address), if any: cluster names
    /// answered from the caches. Loopback only: DNS has no authentication.
    #[serde(default)]
    pub dns: Option<Listen>,
    /// The cluster's DNS domain.
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    /// Dial names outside the cluster from this machine instead of refusing them.
    #[serde(default)]
    pub passthrough: bool,
    /// Let passthrough dial this machine's own loopback, unspecified and
    /// link-local addresses too (refused otherwise).
    #[serde(default)]
    pub passthrough_local: bool,
    /// Required from clients when set; mandatory for a non-loopback listener.
    #[serde(skip)]
    pub auth: Option<Credentials>,
    /// A client that has not finished its handshake by then is dropped.
    #[serde(default = "default_handshake_timeout", with = "crate::seconds")]
    pub handshake_timeout: Duration,
    /// The port-forward protocol and session settings.
    #[serde(default)]
    pub data_path: DataPath,
    /// Client connections served at once; beyond it new clients are refused
    /// (SOCKS `0x01`, HTTP 503) until some finish. At least 1. Lowered at
    /// start where the open-file limit leaves room for fewer.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl ProxyConfig {
    /// The SOCKS port a proxy listens on unless told otherwise.
    pub const DEFAULT_SOCKS_PORT: u16 = 1080;
    /// The HTTP proxy port managed connections try first.
    pub const DEFAULT_HTTP_PORT: u16 = 3128;
    /// The DNS helper port the tray offers.
    pub const DEFAULT_DNS_PORT: u16 = 5353;
    /// The port shared by every managed connection, unless told otherwise.
    pub const DEFAULT_SHARED_PORT: u16 = 1090;
    /// The cluster DNS domain unless told otherwise.
    pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
    /// How long a client may take over its handshake unless told otherwise.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// How many client connections are served at once unless told otherwise.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
}

fn default_max_connections() -> usize {
    ProxyConfig::DEFAULT_MAX_CONNECTIONS
}

fn default_domain() -> String {
    ProxyConfig::DEFAULT_CLUSTER_DOMAIN.to_string()
}

fn default_handshake_timeout() -> Duration {
    ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT
}

/// The URL of the PAC file served at `addr`.
pub fn pac_url(addr: SocketAddr) -> String {
    format!("http://{addr}/proxy.pac")
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            socks: Some(Listen::exact(loopback(ProxyConfig::DEFAULT_SOCKS_PORT))),
            http: None,
            dns: None,
            cluster_domain: default_domain(),
            passthrough: false,
            passthrough_local: false,
            auth: None,
            handshake_timeout: ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT,
            data_path: DataPath::default(),
            max_connections: ProxyConfig::DEFAULT_MAX_CONNECTIONS,
        }
    }
}
