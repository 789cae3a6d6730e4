//! The command line's shape: every command, argument and flag (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum, value_parser};
use kubesocks_engine::kubeconfig::KubeSettings;
use kubesocks_engine::{Credentials, DataPath, Protocol, ProxyConfig, loopback};

/// Reach Kubernetes Services and Pods from this machine through a local
/// SOCKS5 / HTTP proxy. Every connection is forwarded through the Kubernetes
/// API (pod port-forward): nothing to install in the cluster, no root, no
/// change to routes or DNS.
#[derive(Debug, Parser)]
#[command(name = "kubesocks", version, propagate_version = true)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace for short names (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// More logging: -v debug, -vv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a proxy in the foreground until Ctrl-C.
    ProxyOut(ProxyOutArgs),
    /// Start a background proxy for a context in the kubesocks daemon
    /// (starting the daemon if none runs) and print its ID and URL.
    Connect(ConnectArgs),
    /// Stop background proxies.
    Disconnect(DisconnectArgs),
    /// Stop every background proxy and the daemon.
    Quit,
    /// Show the background proxies and their live figures.
    Status(OutputArgs),
    /// Run the daemon that hosts background proxies, in the foreground
    /// (`connect` starts one when none runs).
    Daemon,
    /// List the kubeconfig's contexts.
    Contexts(OutputArgs),
    /// Open one port for every background proxy: a name ending in a
    /// connection's alias (`web.shop.prod`) goes to that connection, other
    /// names to the default context. Connections made later are reachable
    /// on it too.
    SharedPort(SharedPortArgs),
    /// List the client connections open through background proxies: the
    /// program that opened each, what it asked for, the pod it reached,
    /// its bytes and state. `--close` ends one (both sides are reset).
    Connections(ConnectionsArgs),
    /// List the latest refused or failed client connections of background
    /// proxies, newest first, with the reason each client was told.
    Failures(FailuresArgs),
    /// Print a shell completion script: `kubesocks completions bash >
    /// ~/.local/share/bash-completion/completions/kubesocks`.
    Completions(CompletionsArgs),
    /// Print the manual page (roff), for `man -l -`.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    /// Only this background proxy's (its ID from `status`); default: all.
    pub id: Option<String>,
    /// Close this client connection (its CONN number) of proxy ID.
    #[arg(long, value_name = "CONN", requires = "id", conflicts_with = "watch")]
    pub close: Option<u64>,
    /// Print the list again every second until Ctrl-C (with `-o json`, one
    /// JSON document per line).
    #[arg(short, long)]
    pub watch: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct FailuresArgs {
    /// Only this background proxy's (its ID from `status`); default: all.
    pub id: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct SharedPortArgs {
    /// Where to listen (SOCKS5, HTTP and the PAC file on one port).
    #[arg(value_name = "ADDR", default_value_t = loopback(ProxyConfig::DEFAULT_SHARED_PORT))]
    pub listen: SocketAddr,
    /// The context that names without an alias go to (default: none, they are refused).
    #[arg(long = "default", value_name = "CONTEXT")]
    pub default_context: Option<String>,
    /// Close the shared port.
    #[arg(long, conflicts_with_all = ["default_context"])]
    pub off: bool,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, clap::Args)]
pub struct ProxyOutArgs {
    /// SOCKS5 listen address. It is a mixed port: HTTP proxy requests and
    /// the browsers' PAC file (/proxy.pac) are served on it too.
    #[arg(long, value_name = "ADDR", default_value_t = loopback(ProxyConfig::DEFAULT_SOCKS_PORT))]
    pub listen_socks: SocketAddr,
    /// Also serve an HTTP proxy (CONNECT and plain http:// requests) on a port of its own.
    #[arg(long, value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    /// Also answer DNS questions for cluster names here (UDP and TCP,
    /// loopback only), e.g. 127.0.0.1:5353.
    #[arg(long, value_name = "ADDR")]
    pub listen_dns: Option<SocketAddr>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    #[command(flatten)]
    pub data_path: DataPathArgs,
    /// Require USER:PASSWORD from clients (required for a non-loopback
    /// listener). On the command line it is visible to every local user:
    /// prefer KUBESOCKS_AUTH or --auth-file.
    #[arg(long, value_name = "USER:PASSWORD", env = "KUBESOCKS_AUTH", hide_env_values = true)]
    pub auth: Option<Credentials>,
    /// Require the USER:PASSWORD on the first line of this file from
    /// clients; the file must be readable by its owner only.
    #[arg(long, value_name = "PATH", conflicts_with = "auth")]
    pub auth_file: Option<PathBuf>,
    /// How long open connections may run on after Ctrl-C (at most an hour).
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = value_parser!(u64).range(0..=MAX_SECONDS))]
    pub drain_seconds: u64,
    /// Drop clients that have not finished their SOCKS handshake or HTTP
    /// request head by then (1 second to an hour).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = ProxyConfig::DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
        value_parser = value_parser!(u64).range(1..=MAX_SECONDS)
    )]
    pub handshake_timeout: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Every SECONDS, print one line on stderr: client connections open
    /// (by program), opened and failed since the last line, the latest
    /// failure's reason, and the traffic each way.
    #[arg(long, value_name = "SECONDS", value_parser = value_parser!(u64).range(1..=MAX_SECONDS))]
    pub stats: Option<u64>,
    /// `json`: once listening, print one JSON line (listeners, URLs, context,
    /// namespace) on stdout for scripts, and nothing else there.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The longest drain or handshake timeout the flags take.
const MAX_SECONDS: u64 = 3600;

/// How many clients a proxy serves at once, for `proxy-out` and `connect`.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Serve at most this many client connections at once; more are refused
    /// (SOCKS general failure, HTTP 503) until some finish.
    #[arg(
        long,
        value_name = "N",
        default_value_t = ProxyConfig::DEFAULT_MAX_CONNECTIONS as u64,
        value_parser = value_parser!(u64).range(1..=1_000_000)
    )]
    pub max_connections: u64,
}

impl LimitArgs {
    pub fn max_connections(&self) -> usize {
        usize::try_from(self.max_connections).unwrap_or(usize::MAX)
    }
}

/// How names are resolved, for `proxy-out` and `connect`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = ProxyConfig::DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Dial names and addresses outside the cluster directly from this machine
    /// instead of refusing them.
    #[arg(long)]
    pub passthrough: bool,
    /// With --passthrough, also dial this machine's own loopback,
    /// unspecified and link-local addresses (127.0.0.0/8, ::1, 0.0.0.0,
    /// 169.254.0.0/16, fe80::/10), which are refused otherwise.
    #[arg(long, requires = "passthrough")]
    pub passthrough_allow_local: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Serve SOCKS5 (the default when neither --socks nor --http is given).
    #[arg(long)]
    pub socks: bool,
    /// Serve an HTTP proxy (CONNECT and plain http:// requests).
    #[arg(long)]
    pub http: bool,
    /// SOCKS5 listen address (default: 127.0.0.1:1080, or the next free port).
    #[arg(long, value_name = "ADDR")]
    pub listen_socks: Option<SocketAddr>,
    /// HTTP listen address (default: 127.0.0.1:3128, or the next free port).
    #[arg(long, value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    /// Also answer DNS questions for cluster names here (UDP and TCP,
    /// loopback only), e.g. 127.0.0.1:5353.
    #[arg(long, value_name = "ADDR")]
    pub listen_dns: Option<SocketAddr>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    #[command(flatten)]
    pub data_path: DataPathArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The name that picks this connection on the shared port
    /// (`web.shop.ALIAS`; default: the context name made a DNS label).
    #[arg(long, value_name = "ALIAS")]
    pub alias: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How connections travel to pods, for `proxy-out` and `connect`.
#[derive(Debug, clap::Args)]
pub struct DataPathArgs {
    /// The port-forward protocol: `auto` takes the best the cluster accepts
    /// (the SPDY tunnel in a WebSocket, else SPDY, else one WebSocket per
    /// connection) and logs which.
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value_t = ProtocolArg::Auto)]
    pub portforward_protocol: ProtocolArg,
    /// Seconds between keepalive PINGs on a port-forward session.
    #[arg(long, value_name = "SECONDS", default_value_t = DataPath::DEFAULT_KEEPALIVE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keepalive: u64,
    /// Seconds a port-forward session without connections stays open.
    #[arg(long, value_name = "SECONDS", default_value_t = DataPath::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout: u64,
}

/// `--portforward-protocol`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Auto,
    Tunnel,
    Spdy,
    Websocket,
}

impl DataPathArgs {
    pub fn data_path(&self) -> DataPath {
        DataPath {
            protocol: match self.portforward_protocol {
                ProtocolArg::Auto => None,
                ProtocolArg::Tunnel => Some(Protocol::Tunnel),
                ProtocolArg::Spdy => Some(Protocol::Spdy),
                ProtocolArg::Websocket => Some(Protocol::WebSocket),
            },
            keepalive: std::time::Duration::from_secs(self.keepalive),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// The connection ID shown by `connect` and `status`.
    pub id: Option<String>,
    /// Stop every background proxy.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Cli {
    pub fn kube(&self) -> KubeSettings {
        KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }
}
