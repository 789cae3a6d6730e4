//! The commands that run the engine in this process: `proxy-out` (a proxy
//! in the foreground until Ctrl-C) and `contexts`.

use std::time::Duration;

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use kubesocks_engine::kubeconfig::{self, KubeSettings};
use kubesocks_engine::{Credentials, Engine, Listen, ProxyConfig};

use crate::args::{Output, ProxyOutArgs};
use crate::output::say;

pub(crate) async fn run(kube: &KubeSettings, args: &ProxyOutArgs) -> Result<()> {
    let auth = credentials(args)?;
    let cluster = kubeconfig::connect(kube).await?;
    let (context, server, namespace) = (cluster.context.clone(), cluster.server.clone(), cluster.namespace.clone());
    let via = cluster.proxy.as_ref().map(|proxy| format!(" through proxy-url {proxy}")).unwrap_or_default();
    let config = ProxyConfig {
        socks: Some(Listen::exact(args.listen_socks)),
        http: args.listen_http.map(Listen::exact),
        dns: args.listen_dns.map(Listen::exact),
        cluster_domain: args.resolve.cluster_domain.clone(),
        passthrough: args.resolve.passthrough,
        passthrough_local: args.resolve.passthrough_allow_local,
        auth: auth.clone(),
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        data_path: args.data_path.data_path(),
        max_connections: args.limits.max_connections(),
    };
    // Take over Ctrl-C before saying it stops the proxy: a SIGINT in between
    // would otherwise end the process at once.
    let mut interrupt =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let engine = Engine::start(cluster, config).await.context("cannot start the proxy")?;

    let socks = engine.socks_addr().expect("proxy-out always listens for SOCKS");
    let user = auth.as_ref().map(|c| format!("{}:<password>@", c.user)).unwrap_or_default();
    let socks_url = format!("socks5h://{user}{socks}");
    let http_url = engine.http_addr().map(|http| format!("http://{user}{http}"));
    let pac_url = engine.pac_url().expect("proxy-out always listens for SOCKS");
    if let Output::Json = args.output {
        let ready = Ready {
            context: &context,
            server: &server,
            namespace: &namespace,
            socks: socks.to_string(),
            socks_url: &socks_url,
            http: engine.http_addr().map(|a| a.to_string()),
            http_url: http_url.as_deref(),
            pac_url: &pac_url,
            dns: engine.dns_addr().map(|a| a.to_string()),
        };
        say!("{}", serde_json::to_string(&ready)?);
        eprintln!("kubesocks proxy-out: ready; Ctrl-C stops the proxy.");
    } else {
        say!("kubesocks proxy-out: context {context} ({server}{via}), namespace {namespace}");
        say!("SOCKS5 proxy: {socks_url}   (the same port takes HTTP proxy requests)");
        if let Some(http_url) = &http_url {
            say!("HTTP proxy:   {http_url}");
        }
        say!("PAC URL:      {pac_url}   (for browsers: cluster names through kubesocks, the rest directly)");
        if let Some(dns) = engine.dns_addr() {
            say!("DNS helper:   {dns} (UDP and TCP) for *.{}", args.resolve.cluster_domain);
        }
        let example = engine.example_url(&namespace, &args.resolve.cluster_domain).await;
        say!("Try:          curl --proxy {socks_url} {example}");
        say!("Or for a whole shell: export ALL_PROXY={socks_url}");
        say!("Ctrl-C stops the proxy.");
    }

    match args.stats {
        Some(every) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                () = crate::activity::print_stats(&engine, Duration::from_secs(every)) => {}
            }
        }
        None => {
            interrupt.recv().await;
        }
    }
    eprintln!("stopping: open connections get {}s to finish", args.drain_seconds);
    engine.shutdown(Duration::from_secs(args.drain_seconds)).await;
    Ok(())
}

/// The credentials clients must present: from `--auth-file`, or `--auth`
/// (or `KUBESOCKS_AUTH`, which clap reads for it). A password typed on the
/// command line is visible to every local user (`ps`, /proc/PID/cmdline):
/// that is said once, and the proxy starts all the same.
fn credentials(args: &ProxyOutArgs) -> Result<Option<Credentials>> {
    if let Some(path) = &args.auth_file {
        return read_auth_file(path).map(Some);
    }
    // clap does not say where a value came from; the command line does.
    if args.auth.is_some() && std::env::args().any(|a| a == "--auth" || a.starts_with("--auth=")) {
        eprintln!(
            "kubesocks: warning: --auth on the command line can be read by every user of this machine \
             (ps, /proc/PID/cmdline); set KUBESOCKS_AUTH or use --auth-file instead"
        );
    }
    Ok(args.auth.clone())
}

/// `USER:PASSWORD` from the first line of `path`, which only its owner may read.
fn read_auth_file(path: &Path) -> Result<Credentials> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let mode =
        std::fs::metadata(path).with_context(|| format!("cannot read --auth-file {shown}"))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "--auth-file {shown} can be read by other users (mode {:o}); make it owner-only: chmod 600 {shown}",
            mode & 0o777
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read --auth-file {shown}"))?;
    let line = text.lines().next().unwrap_or_default().trim();
    line.parse::<Credentials>().map_err(|e| anyhow::anyhow!("--auth-file {shown}: {e}"))
}

/// `proxy-out -o json`'s one line, printed once the proxy is listening.
#[derive(serde::Serialize)]
struct Ready<'a> {
    context: &'a str,
    server: &'a str,
    namespace: &'a str,
    /// The mixed port's address (SOCKS5, HTTP proxy requests, the PAC file).
    socks: String,
    socks_url: &'a str,
    /// A separate HTTP proxy listener's address, if asked for.
    http: Option<String>,
    http_url: Option<&'a str>,
    pac_url: &'a str,
    /// The DNS helper's address (UDP and TCP), if asked for.
    dns: Option<String>,
}

pub(crate) fn contexts(kube: &KubeSettings, output: Output) -> Result<()> {
    let contexts = kubeconfig::contexts(kube)?;
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
