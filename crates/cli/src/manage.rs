//! The managed-mode commands of the CLI: `connect`, `disconnect`, `quit`,
//! `status` talk to the daemon over the control socket (starting a headless
//! `kubesocks daemon` when none answers); `daemon` is that daemon.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use kubesocks_engine::kubeconfig::{self, KubeSettings};
use kubesocks_engine::{HealthState, Listen, Protocol, ProxyConfig, loopback};
use kubesocks_managed::control::{
    self, ConnectRequest, ConnectionStatus, ControlError, ErrorKind, Request, Response, SharedPortRequest,
    SharedPortStatus,
};
use kubesocks_managed::daemon::{Daemon, unix_now};
use kubesocks_managed::state::{DaemonLock, StateDir};

use crate::args::{ConnectArgs, DisconnectArgs, Output, SharedPortArgs};
use crate::hints::Refused;
use crate::output::{human_bytes, human_duration, say};

/// Quick requests (status, disconnect) get this long.
const QUICK: Duration = Duration::from_secs(15);
/// `connect` waits for the API server and the first sync of the caches.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a freshly spawned daemon may take to answer.
const DAEMON_START: Duration = Duration::from_secs(15);

/// `kubesocks daemon`: serves until `quit`, Ctrl-C or SIGTERM.
pub(crate) async fn daemon(state: StateDir) -> Result<()> {
    let daemon = Daemon::start(state, "kubesocks daemon").await?;
    eprintln!("kubesocks daemon (pid {}) serving {}", std::process::id(), daemon.state().socket().display());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        _ = daemon.quit_requested() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    daemon.shutdown().await;
    Ok(())
}

pub(crate) async fn connect(state: &StateDir, kube: &KubeSettings, args: &ConnectArgs) -> Result<()> {
    // --listen-* imply their protocol; neither protocol named means SOCKS.
    let want_http = args.http || args.listen_http.is_some();
    let want_socks = args.socks || args.listen_socks.is_some() || !want_http;
    let listen = |want: bool, asked: Option<std::net::SocketAddr>, default_port: u16| {
        want.then(|| match asked {
            Some(addr) => Listen::exact(addr),
            None => Listen::or_next_free(loopback(default_port)),
        })
    };
    let request = ConnectRequest {
        kubeconfigs: kube.sources()?,
        context: kube.context.clone(),
        namespace: kube.namespace.clone(),
        exec_env: kubeconfig::exec_env(),
        alias: args.alias.clone(),
        proxy: ProxyConfig {
            socks: listen(want_socks, args.listen_socks, ProxyConfig::DEFAULT_SOCKS_PORT),
            http: listen(want_http, args.listen_http, ProxyConfig::DEFAULT_HTTP_PORT),
            dns: args.listen_dns.map(Listen::exact),
            cluster_domain: args.resolve.cluster_domain.clone(),
            passthrough: args.resolve.passthrough,
            data_path: args.data_path.data_path(),
            passthrough_local: args.resolve.passthrough_allow_local,
            max_connections: args.limits.max_connections(),
            ..ProxyConfig::default()
        },
    };
    ensure_daemon(state).await?;
    let request = Request::Connect(request);
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let (connection, existing, example) = loop {
        match control::call(state, &request, CONNECT_TIMEOUT).await? {
            Response::Connected { connection, existing, example } => break (connection, existing, example),
            // Another client is connecting this context (or the daemon is
            // stopping): its answer is worth waiting for.
            Response::Error { kind: ErrorKind::Busy, .. } if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ensure_daemon(state).await?;
            }
            other => return Err(refusal(other)),
        }
    };
    if existing {
        eprintln!("kubesocks: context {} is already connected; this is its connection", connection.record.context);
    }
    match args.output {
        Output::Json => say!("{}", serde_json::to_string_pretty(&connection)?),
        Output::Table => {
            say!(
                "Connected {} ({}), namespace {}: connection {}",
                connection.record.context,
                connection.record.server,
                connection.record.namespace,
                connection.record.id
            );
            if let Some(url) = &connection.socks_url {
                say!("SOCKS5 proxy: {url}");
            }
            if let Some(url) = &connection.http_url {
                say!("HTTP proxy:   {url}");
            }
            if let Some(url) = &connection.pac_url {
                say!("PAC URL:      {url}");
            }
            if let Some(dns) = connection.record.dns {
                say!("DNS helper:   {dns} (UDP and TCP) for *.{}", connection.record.cluster_domain);
            }
            if let (Some(url), Some(example)) = (&connection.socks_url, example) {
                say!("Try:          curl --proxy {url} {example}");
            }
            say!("Stop it with: kubesocks disconnect {}", connection.record.id);
        }
    }
    Ok(())
}

pub(crate) async fn disconnect(state: &StateDir, args: &DisconnectArgs) -> Result<()> {
    let request = match (&args.id, args.all) {
        (_, true) => Request::DisconnectAll,
        (Some(id), false) if control::is_valid_id(id) => Request::Disconnect { id: id.clone() },
        (Some(id), false) => {
            bail!("{id:?} is not a connection ID (they are 8 hex digits, as `kubesocks status` shows)")
        }
        (None, false) => bail!("which connection? give its ID (see `kubesocks status`) or --all"),
    };
    let Some(response) = call_running(state, &request).await? else {
        return match request {
            Request::Disconnect { id } => Err(anyhow!("no connection {id}: no kubesocks daemon is running")),
            _ => {
                say!("no connections: no kubesocks daemon is running");
                Ok(())
            }
        };
    };
    match response {
        Response::Disconnected { connections } if connections.is_empty() => say!("no connections to stop"),
        Response::Disconnected { connections } => {
            for c in connections {
                say!(
                    "disconnected {} ({}); its log stays at {}",
                    c.record.id,
                    c.record.context,
                    c.record.log.display()
                );
            }
        }
        other => return Err(refusal(other)),
    }
    Ok(())
}

pub(crate) async fn quit(state: &StateDir) -> Result<()> {
    let Some(response) = call_running(state, &Request::Quit).await? else {
        say!("no kubesocks daemon is running");
        return Ok(());
    };
    let connections = match response {
        Response::Quitting { connections } => connections,
        other => return Err(refusal(other)),
    };
    // The daemon is gone when its lock is free.
    let deadline = tokio::time::Instant::now() + QUICK;
    loop {
        if DaemonLock::try_acquire(state)?.is_some() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the daemon was asked to quit but is still running after {QUICK:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in &connections {
        say!("disconnected {} ({})", c.record.id, c.record.context);
    }
    say!("kubesocks daemon stopped");
    Ok(())
}

pub(crate) async fn status(state: &StateDir, output: Output) -> Result<()> {
    let (daemon, connections, shared_port) = match call_running(state, &Request::Status).await? {
        Some(Response::Status { daemon, connections, shared_port }) => (Some(daemon), connections, shared_port),
        Some(other) => return Err(refusal(other)),
        None => (None, Vec::new(), None),
    };
    match output {
        Output::Json => {
            let json = serde_json::json!({ "daemon": daemon, "connections": connections, "shared_port": shared_port });
            say!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Table if daemon.is_none() => say!("no connections (no kubesocks daemon is running)"),
        Output::Table => {
            if let Some(port) = &shared_port {
                print_shared_port(port);
            }
            if connections.is_empty() {
                say!("no connections; start one with `kubesocks connect`");
            } else {
                print_table(&connections);
            }
        }
    }
    Ok(())
}

pub(crate) async fn shared_port(state: &StateDir, args: &SharedPortArgs) -> Result<()> {
    let request = SharedPortRequest {
        listen: (!args.off).then(|| Listen::exact(args.listen)),
        default_context: args.default_context.clone(),
    };
    let request = Request::SharedPort(request);
    let shared_port = if args.off {
        match call_running(state, &request).await? {
            None => None,
            Some(Response::SharedPort { shared_port }) => shared_port,
            Some(other) => return Err(refusal(other)),
        }
    } else {
        ensure_daemon(state).await?;
        match control::call(state, &request, QUICK).await? {
            Response::SharedPort { shared_port } => shared_port,
            other => return Err(refusal(other)),
        }
    };
    match (args.output, &shared_port) {
        (Output::Json, _) => say!("{}", serde_json::to_string_pretty(&shared_port)?),
        (Output::Table, Some(port)) => {
            print_shared_port(port);
            say!(
                "Reach a connection with its alias as the last label: curl --proxy {} http://SERVICE.NAMESPACE.ALIAS/",
                port.socks_url
            );
        }
        (Output::Table, None) => say!("shared port closed"),
    }
    Ok(())
}

fn print_shared_port(port: &SharedPortStatus) {
    let default = port.default_context.as_deref().unwrap_or("none: names need an alias");
    say!("Shared port:  {} (PAC {}), default context {default}", port.socks_url, port.pac_url);
}

fn print_table(connections: &[ConnectionStatus]) {
    let dash = |a: Option<std::net::SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
    say!(
        "{:<9} {:<24} {:<16} {:<16} {:<16} {:<9} {:<20} {:>6} {:>6} {:>9} {:>9} {:>8}  LAST ERROR",
        "ID",
        "CONTEXT",
        "ALIAS",
        "SOCKS",
        "HTTP",
        "PROTOCOL",
        "HEALTH",
        "ACTIVE",
        "TOTAL",
        "UP",
        "DOWN",
        "UPTIME"
    );
    let now = unix_now();
    for c in connections {
        let (health, health_error) = health_cells(&c.stats.health, now);
        let error = health_error.unwrap_or_else(|| {
            c.stats
                .last_error
                .as_ref()
                .map_or("-".to_string(), |e| format!("{} ago: {}", human_duration(now.saturating_sub(e.at)), e.message))
        });
        say!(
            "{:<9} {:<24} {:<16} {:<16} {:<16} {:<9} {:<20} {:>6} {:>6} {:>9} {:>9} {:>8}  {}",
            c.record.id,
            c.record.context,
            c.record.alias,
            dash(c.record.socks),
            dash(c.record.http),
            protocol_name(c.stats.portforward_protocol),
            health,
            c.stats.active_connections,
            c.stats.total_connections,
            human_bytes(c.stats.bytes_up),
            human_bytes(c.stats.bytes_down),
            human_duration(now.saturating_sub(c.record.started_at)),
            error
        );
    }
}

/// A context's health in a table cell ("reconnecting 12s"), and, unless
/// connected, why, which the last-error cell shows instead of the last
/// failed connection.
fn health_cells(health: &HealthState, now: u64) -> (String, Option<String>) {
    match health {
        HealthState::Connected => ("connected".into(), None),
        // Names answer meanwhile; those that need what is listed wait for it.
        HealthState::Syncing { .. } => ("syncing".into(), None),
        HealthState::Reconnecting { since, error } => (
            format!("reconnecting {}", human_duration(now.saturating_sub(*since))),
            Some(format!("the API server is unreachable: {error}")),
        ),
        HealthState::Degraded { watch, since, error } => (
            format!("degraded {}", human_duration(now.saturating_sub(*since))),
            Some(format!("watching {watch} fails: {error}")),
        ),
    }
}

/// A port-forward protocol in a table cell; `-` until the first connection chose one.
fn protocol_name(protocol: Option<Protocol>) -> &'static str {
    match protocol {
        Some(Protocol::Tunnel) => "tunnel",
        Some(Protocol::Spdy) => "spdy",
        Some(Protocol::WebSocket) => "websocket",
        None => "-",
    }
}

/// Sends a request to the running daemon. `None` when no daemon runs; if one
/// died, what it left behind is cleaned up and reported first.
pub(crate) async fn call_running(state: &StateDir, request: &Request) -> Result<Option<Response>> {
    let deadline = tokio::time::Instant::now() + DAEMON_START;
    loop {
        match control::call(state, request, QUICK).await {
            Ok(response) => return Ok(Some(response)),
            Err(ControlError::NotRunning { .. }) => {
                if clean_stale(state)? {
                    return Ok(None);
                }
                // A daemon holds the lock but does not answer: it is starting or dying.
                if tokio::time::Instant::now() > deadline {
                    let pid = DaemonLock::holder_pid(state).map_or("?".to_string(), |p| p.to_string());
                    bail!(
                        "the kubesocks daemon (pid {pid}) does not answer on {}; if it hangs, stop it with `kill {pid}`",
                        state.socket().display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// When no daemon is alive, removes the records, kubeconfigs and socket a
/// dead one left, saying so once per connection. Returns false when a
/// daemon is alive (it holds the lock).
fn clean_stale(state: &StateDir) -> Result<bool> {
    let Some(_lock) = DaemonLock::try_acquire(state)? else { return Ok(false) };
    for r in state.remove_stale() {
        let listeners: Vec<String> = r.socks.iter().chain(r.http.iter()).map(|a| a.to_string()).collect();
        eprintln!(
            "kubesocks: connection {} (context {}, {}) was left by a daemon that is no longer running (pid {}); removed its record and kubeconfig, its log stays at {}",
            r.id,
            r.context,
            listeners.join(", "),
            r.pid,
            r.log.display()
        );
    }
    match std::fs::remove_file(state.socket()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the dead daemon's socket {}", state.socket().display()))
        }
        _ => Ok(true),
    }
}

/// Makes sure a daemon answers on the control socket, starting one if none
/// is alive (and waiting for one that another client is starting).
async fn ensure_daemon(state: &StateDir) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DAEMON_START;
    let mut child = None;
    loop {
        match control::call(state, &Request::Status, QUICK).await {
            Ok(_) => return Ok(()),
            Err(ControlError::NotRunning { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let log = state.logs().join("daemon.log");
        match &mut child {
            None if clean_stale(state)? => child = Some(spawn_daemon()?),
            None => {}
            Some(c) => {
                if let Some(status) = c.try_wait().ok().flatten() {
                    // It may have lost a race with a daemon another client
                    // started: then wait for that one.
                    if DaemonLock::try_acquire(state)?.is_some() {
                        bail!("the kubesocks daemon exited at start ({status}); see {}", log.display());
                    }
                    child = None;
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no kubesocks daemon answered on {} within {DAEMON_START:?}; see {}",
                state.socket().display(),
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts `kubesocks daemon` detached from this terminal: its own session,
/// no standard streams (it logs to `logs/daemon.log`).
fn spawn_daemon() -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find the kubesocks executable to start the daemon")?;
    let mut command = std::process::Command::new(&exe);
    command
        .arg("daemon")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Not in the caller's working directory: it would keep it busy (e.g. an
    // unmountable drive). Kubeconfig paths are absolute by then.
    command.current_dir("/");
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command.spawn().with_context(|| format!("cannot start `{} daemon`", exe.display()))
}

/// An error or unexpected answer from the daemon, as an error.
pub(crate) fn refusal(response: Response) -> anyhow::Error {
    match response {
        Response::Error { kind, message } => Refused { kind, message }.into(),
        other => anyhow!("the daemon gave an unexpected answer: {other:?}"),
    }
}
