//! The command line, shared by the `kubesocks` binary and the tray app's
//! headless mode: parse with [`Cli`], run with [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::auth::Credentials;
use crate::engine::{Engine, ProxyConfig};
use crate::kubeconfig::{self, KubeSettings};

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
    /// Start a background proxy for a context in the kubesocks daemon.
    Connect(ConnectArgs),
    /// Stop background proxies.
    Disconnect(DisconnectArgs),
    /// Stop every background proxy and the daemon.
    Quit,
    /// Show the background proxies.
    Status(OutputArgs),
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
    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Dial names and addresses outside the cluster directly from this machine
    /// instead of refusing them.
    #[arg(long)]
    pub passthrough: bool,
    /// Require USER:PASSWORD from clients (required for a non-loopback listener).
    #[arg(long, value_name = "USER:PASSWORD", env = "KUBESOCKS_AUTH", hide_env_values = true)]
    pub auth: Option<Credentials>,
    /// How long open connections may run on after Ctrl-C.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// Serve SOCKS5.
    #[arg(long)]
    pub socks: bool,
    /// Also serve an HTTP proxy.
    #[arg(long)]
    pub http: bool,
    #[arg(long, value_name = "ADDR")]
    pub listen_socks: Option<SocketAddr>,
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
    fn kube(&self) -> KubeSettings {
        KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> Result<()> {
    let log_dir = crate::state::logs_dir().ok();
    let _guard = crate::logging::init(cli.verbose, log_dir.as_deref(), "proxy-out.log");
    match &cli.command {
        Command::ProxyOut(args) => proxy_out(&cli, args).await,
        Command::Contexts(out) => contexts(&cli, out.output),
        Command::Connect(_) | Command::Disconnect(_) | Command::Quit | Command::Status(_) => {
            bail!(
                "managed mode (connect, disconnect, quit, status) is not available in this build yet; run `kubesocks proxy-out` in a terminal instead"
            )
        }
    }
}

async fn proxy_out(cli: &Cli, args: &ProxyOutArgs) -> Result<()> {
    let cluster = kubeconfig::connect(&cli.kube()).await?;
    let (context, server, namespace) = (cluster.context.clone(), cluster.server.clone(), cluster.namespace.clone());
    let config = ProxyConfig {
        socks: Some(args.listen_socks),
        http: args.listen_http,
        cluster_domain: args.cluster_domain.clone(),
        passthrough: args.passthrough,
        auth: args.auth.clone(),
        ..ProxyConfig::default()
    };
    let engine = Engine::start(cluster, config).await.context("cannot start the proxy")?;

    let socks = engine.socks_addr().expect("proxy-out always listens for SOCKS");
    let user = args.auth.as_ref().map(|c| format!("{}:<password>@", c.user)).unwrap_or_default();
    let socks_url = format!("socks5h://{user}{socks}");
    println!("kubesocks proxy-out: context {context} ({server}), namespace {namespace}");
    println!("SOCKS5 proxy: {socks_url}");
    if let Some(http) = engine.http_addr() {
        println!("HTTP proxy:   http://{user}{http}");
    }
    let example = example_url(&engine, &namespace, &args.cluster_domain).await;
    println!("Try:          curl --proxy {socks_url} {example}");
    println!("Or for a whole shell: export ALL_PROXY={socks_url}");
    println!("Ctrl-C stops the proxy.");

    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    eprintln!("stopping: open connections get {}s to finish", args.drain_seconds);
    engine.shutdown(Duration::from_secs(args.drain_seconds)).await;
    Ok(())
}

/// A URL of a real Service in the default namespace, for the start-up example.
async fn example_url(engine: &Engine, namespace: &str, domain: &str) -> String {
    let snapshot = engine.dialer().cache().snapshot().await;
    match snapshot.example_service(namespace) {
        Some((name, port)) => format!("http://{name}.{namespace}.svc.{domain}:{port}/"),
        None => format!("http://SERVICE.{namespace}.svc.{domain}:PORT/"),
    }
}

fn contexts(cli: &Cli, output: Output) -> Result<()> {
    let contexts = kubeconfig::contexts(&cli.kube())?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&contexts)?),
        Output::Table => {
            println!("{:<2}{:<32} {:<24} {:<16} SERVER", "", "NAME", "CLUSTER", "NAMESPACE");
            for c in contexts {
                let mark = if c.current { "*" } else { "" };
                println!("{:<2}{:<32} {:<24} {:<16} {}", mark, c.name, c.cluster, c.namespace, c.server);
            }
        }
    }
    Ok(())
}
