//! The command line, shared by the `kubesocks` binary and the tray app's
//! headless mode: parse with [`Cli`], run with [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::auth::Credentials;
use crate::engine::{Engine, Listen, ProxyConfig};
use crate::kubeconfig::{self, KubeSettings};

/// `println!` for command output that ends the command quietly when stdout
/// is closed (`kubesocks status | head -1`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*)
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }};
}
pub(crate) use say;

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
}

#[derive(Debug, clap::Args)]
pub struct ProxyOutArgs {
    /// SOCKS5 listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1080")]
    pub listen_socks: SocketAddr,
    /// Also serve an HTTP proxy (CONNECT and plain http:// requests) here.
    #[arg(long, value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    /// Require USER:PASSWORD from clients (required for a non-loopback listener).
    #[arg(long, value_name = "USER:PASSWORD", env = "KUBESOCKS_AUTH", hide_env_values = true)]
    pub auth: Option<Credentials>,
    /// How long open connections may run on after Ctrl-C.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Drop clients that have not finished their SOCKS handshake or HTTP
    /// request head by then.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub handshake_timeout: u64,
}

/// How names are resolved, for `proxy-out` and `connect`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Dial names and addresses outside the cluster directly from this machine
    /// instead of refusing them.
    #[arg(long)]
    pub passthrough: bool,
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
    #[command(flatten)]
    pub resolve: ResolveArgs,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
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

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<()> {
    // Long-running commands log to a file too; the others only to stderr.
    let log_file = match cli.command {
        Command::ProxyOut(_) => Some("proxy-out.log"),
        Command::Daemon => Some("daemon.log"),
        _ => None,
    };
    let state = || crate::state::StateDir::locate().context("cannot use kubesocks' state directory");
    // proxy-out also runs where no state dir can be made (containers, CI):
    // then it logs to stderr only. The daemon needs one.
    let log_dir = match cli.command {
        Command::ProxyOut(_) => state().ok().map(|s| s.logs()),
        Command::Daemon => Some(state()?.logs()),
        _ => None,
    };
    let _guard = crate::logging::init(cli.verbose, true, log_dir.as_deref(), log_file.unwrap_or_default());
    match &cli.command {
        Command::ProxyOut(args) => proxy_out(&cli, args).await,
        Command::Contexts(out) => contexts(&cli, out.output),
        Command::Connect(args) => crate::manage::connect(&state()?, &cli.kube(), args).await,
        Command::Disconnect(args) => crate::manage::disconnect(&state()?, args).await,
        Command::Quit => crate::manage::quit(&state()?).await,
        Command::Status(out) => crate::manage::status(&state()?, out.output).await,
        Command::Daemon => crate::manage::daemon(state()?).await,
    }
}

async fn proxy_out(cli: &Cli, args: &ProxyOutArgs) -> Result<()> {
    let cluster = kubeconfig::connect(&cli.kube()).await?;
    let (context, server, namespace) = (cluster.context.clone(), cluster.server.clone(), cluster.namespace.clone());
    let config = ProxyConfig {
        socks: Some(Listen::exact(args.listen_socks)),
        http: args.listen_http.map(Listen::exact),
        cluster_domain: args.resolve.cluster_domain.clone(),
        passthrough: args.resolve.passthrough,
        auth: args.auth.clone(),
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
    };
    // Take over Ctrl-C before saying it stops the proxy: a SIGINT in between
    // would otherwise end the process at once.
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let engine = Engine::start(cluster, config).await.context("cannot start the proxy")?;

    let socks = engine.socks_addr().expect("proxy-out always listens for SOCKS");
    let user = args.auth.as_ref().map(|c| format!("{}:<password>@", c.user)).unwrap_or_default();
    let socks_url = format!("socks5h://{user}{socks}");
    say!("kubesocks proxy-out: context {context} ({server}), namespace {namespace}");
    say!("SOCKS5 proxy: {socks_url}");
    if let Some(http) = engine.http_addr() {
        say!("HTTP proxy:   http://{user}{http}");
    }
    let example = engine.example_url(&namespace, &args.resolve.cluster_domain).await;
    say!("Try:          curl --proxy {socks_url} {example}");
    say!("Or for a whole shell: export ALL_PROXY={socks_url}");
    say!("Ctrl-C stops the proxy.");

    interrupt.recv().await;
    eprintln!("stopping: open connections get {}s to finish", args.drain_seconds);
    engine.shutdown(Duration::from_secs(args.drain_seconds)).await;
    Ok(())
}

fn contexts(cli: &Cli, output: Output) -> Result<()> {
    let contexts = kubeconfig::contexts(&cli.kube())?;
    match output {
        Output::Json => say!("{}", serde_json::to_string_pretty(&contexts)?),
        Output::Table => {
            say!("{:<2}{:<32} {:<24} {:<16} SERVER", "", "NAME", "CLUSTER", "NAMESPACE");
            for c in contexts {
                let mark = if c.current { "*" } else { "" };
                say!("{:<2}{:<32} {:<24} {:<16} {}", mark, c.name, c.cluster, c.namespace, c.server);
            }
        }
    }
    Ok(())
}
