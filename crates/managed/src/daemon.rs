//! The daemon: hosts any number of managed connections (one [`Engine`] per
//! kube context, each with its own listeners, ID, kubeconfig and log file)
//! in one process, and serves the control socket ([`crate::control`]).
//!
//! It may also open one port shared by every connection (a [`Gateway`]),
//! where a name's last label, the connection's alias, picks the connection;
//! its routes follow every connect and disconnect.
//!
//! `kubesocks daemon` runs it headless; the tray app runs the very same
//! [`Daemon`] in-process, so a connection started from either side shows in
//! both. In-process hosts call its methods directly and follow
//! [`Daemon::watch`] for changes.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher as _, Hasher as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kubesocks_engine::kubeconfig::{self, Cluster, KubeError, KubeSettings, Kubeconfig, Redactor};
use kubesocks_engine::{Engine, EngineError, Gateway, GatewayConfig, Listen, Routes, alias_for, error_chain};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::control::{
    self, ConnectRequest, ConnectionActivity, ConnectionStatus, DaemonInfo, ErrorKind, Request, Response,
    SharedPortRequest, SharedPortStatus, is_valid_id,
};
use crate::state::{ConnectionRecord, DaemonLock, StateDir, StateError};

/// How long open client connections may finish after their proxy stops.
const DRAIN: Duration = Duration::from_secs(3);
/// How often live figures are pushed to watchers while they change.
const TICK: Duration = Duration::from_secs(1);

/// Why the daemon could not start, or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another process is the daemon of this state directory.
    #[error("a kubesocks daemon is already running{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning {
        /// Its pid, if it could be read.
        pid: Option<u32>,
    },
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The control socket could not be bound.
    #[error("cannot serve the control socket {}: {source}", path.display())]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Not of the form of a connection ID.
    #[error("{id:?} is not a connection ID (they are 8 hex digits)")]
    MalformedId {
        /// What was given.
        id: String,
    },
    /// No connection has this ID.
    #[error("no connection {id}")]
    UnknownConnection {
        /// What was given.
        id: String,
    },
    /// The connection has no open client connection with this ID.
    #[error("connection {id} has no open client connection {client}")]
    UnknownClient {
        /// The connection.
        id: String,
        /// The client connection asked for.
        client: u64,
    },
    /// Another request is connecting this context right now.
    #[error("context {context} is being connected by another request")]
    Busy {
        /// The context.
        context: String,
    },
    /// The context has a connection that serves something else.
    #[error("context {context} is already connected as {id} with {differs}")]
    Mismatch {
        /// The context.
        context: String,
        /// Its connection.
        id: String,
        /// What it has that the request does not ask for.
        differs: String,
    },
    /// Another connection answers to the alias asked for.
    #[error("alias {alias} is taken by connection {id} (context {context})")]
    AliasTaken {
        /// The alias.
        alias: String,
        /// The connection that has it.
        id: String,
        /// Its context.
        context: String,
    },
    /// The shared port could not be opened.
    #[error("cannot open the shared port: {0}")]
    SharedPort(#[source] EngineError),
    /// The daemon is stopping and takes no new connection.
    #[error("the daemon is stopping")]
    Stopping,
    /// The client that asked for the connection hung up before it was made.
    #[error("the connect was cancelled: its client hung up")]
    Cancelled,
    /// The request asked for neither SOCKS nor HTTP.
    #[error("nothing to serve: the request asks for no listener")]
    NoListener,
    /// The kubeconfig, credentials or API server.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The proxy could not start.
    #[error("cannot start the proxy for context {context}: {source}")]
    Engine {
        /// The context.
        context: String,
        /// Why.
        #[source]
        source: EngineError,
    },
    /// The connection's log could not be opened.
    #[error("cannot open the connection's log {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// The kind a control client is told.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DaemonError::MalformedId { .. } | DaemonError::NoListener => ErrorKind::BadRequest,
            DaemonError::UnknownConnection { .. } => ErrorKind::UnknownConnection,
            DaemonError::UnknownClient { .. } => ErrorKind::UnknownClient,
            DaemonError::Busy { .. } => ErrorKind::Busy,
            DaemonError::Mismatch { .. } | DaemonError::AliasTaken { .. } => ErrorKind::AlreadyConnected,
            DaemonError::SharedPort(_) => ErrorKind::Listen,
            DaemonError::Stopping => ErrorKind::Busy,
            DaemonError::Kube(_) => ErrorKind::Kube,
            DaemonError::Engine { source: EngineError::Cache(_), .. } => ErrorKind::Kube,
            DaemonError::Engine { .. } => ErrorKind::Listen,
            _ => ErrorKind::Internal,
        }
    }

    /// The answer a control client gets, with `redactor`'s secrets hidden.
    fn response(&self, redactor: &Redactor) -> Response {
        Response::Error { kind: self.kind(), message: redactor.redact(&error_chain(self)) }
    }
}

/// What a `connect` produced.
#[derive(Debug, Clone)]
pub struct ConnectOutcome {
    /// The connection, with its figures.
    pub connection: ConnectionStatus,
    /// The context was already connected; this is that connection.
    pub existing: bool,
    /// A URL of a real Service, for a first try.
    pub example: Option<String>,
}

/// A running daemon. Cheap to clone; every clone is the same daemon.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    state: StateDir,
    info: DaemonInfo,
    connections: Mutex<BTreeMap<String, Managed>>,
    next_seq: std::sync::atomic::AtomicU64,
    /// Contexts whose `connect` is under way.
    connecting: Mutex<HashSet<String>>,
    updates: watch::Sender<Vec<ConnectionStatus>>,
    /// Every connection's activity, for watchers.
    activity: watch::Sender<Vec<ConnectionActivity>>,
    /// Cancelled when a client asks the daemon to quit.
    quit: CancellationToken,
    /// Ends the control socket's accept loop and the ticker.
    stopping: CancellationToken,
    /// Proxies draining after a disconnect, and the background loops.
    tasks: TaskTracker,
    lock: Mutex<Option<DaemonLock>>,
    /// The port shared by every connection, if open. Locked before
    /// `connections` where both are.
    shared_port: Mutex<Option<SharedPort>>,
}

/// The open shared port and the context it sends names without an alias to.
struct SharedPort {
    gateway: Gateway,
    default_context: Option<String>,
}

impl SharedPort {
    fn status(&self) -> SharedPortStatus {
        let addr = self.gateway.addr();
        SharedPortStatus {
            addr,
            socks_url: format!("socks5h://{addr}"),
            pac_url: self.gateway.pac_url(),
            default_context: self.default_context.clone(),
        }
    }
}

struct Managed {
    /// Order of creation, for listings.
    seq: u64,
    record: ConnectionRecord,
    engine: Engine,
}

impl Daemon {
    /// Becomes the daemon of `state`: takes the daemon lock, clears what a
    /// dead daemon left, and serves the control socket. `host` names the
    /// hosting program in `status` (e.g. `kubesocks daemon`).
    pub async fn start(state: StateDir, host: &str) -> Result<Daemon, DaemonError> {
        let Some(mut lock) = DaemonLock::try_acquire(&state)? else {
            return Err(DaemonError::AlreadyRunning { pid: DaemonLock::holder_pid(&state) });
        };
        lock.write_pid()?;
        for stale in state.remove_stale() {
            tracing::warn!(
                id = stale.id,
                context = stale.context,
                pid = stale.pid,
                "removed a connection record left by a daemon that stopped"
            );
        }
        // No connection is live yet: every old connection log may go.
        let pruned = crate::log_files::prune_connection_logs(&state.logs(), &[], std::time::SystemTime::now());
        if pruned > 0 {
            tracing::info!(files = pruned, "removed connection logs not written for 14 days");
        }

        state.check_socket_owner()?;
        let path = state.socket();
        let listener = control::bind(&state).map_err(|source| DaemonError::Socket { path: path.clone(), source })?;

        let daemon = Daemon {
            inner: Arc::new(Inner {
                state,
                info: DaemonInfo {
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    host: host.to_string(),
                },
                connections: Mutex::default(),
                next_seq: Default::default(),
                connecting: Mutex::default(),
                updates: watch::Sender::new(Vec::new()),
                activity: watch::Sender::new(Vec::new()),
                quit: CancellationToken::new(),
                stopping: CancellationToken::new(),
                tasks: TaskTracker::new(),
                lock: Mutex::new(Some(lock)),
                shared_port: Mutex::default(),
            }),
        };
        let (stop, tasks, handler) = (daemon.inner.stopping.clone(), daemon.inner.tasks.clone(), daemon.clone());
        let handle = move |request, client_gone| {
            let daemon = handler.clone();
            async move { daemon.handle(request, client_gone).await }
        };
        daemon.inner.tasks.spawn(control::serve(listener, stop, tasks, handle).in_current_span());
        daemon.inner.tasks.spawn(daemon.clone().tick().in_current_span());
        tracing::info!(socket = %path.display(), pid = std::process::id(), "kubesocks daemon ready");
        Ok(daemon)
    }

    /// Who this daemon is, as `status` says.
    pub fn info(&self) -> &DaemonInfo {
        &self.inner.info
    }

    /// The state directory it serves.
    pub fn state(&self) -> &StateDir {
        &self.inner.state
    }

    /// Starts a connection, or returns the one the context already has.
    /// Returns once the listeners are up and the caches are synced.
    pub async fn connect(&self, request: ConnectRequest) -> Result<ConnectOutcome, DaemonError> {
        if request.proxy.socks.is_none() && request.proxy.http.is_none() {
            return Err(DaemonError::NoListener);
        }
        let sources = match request.kubeconfigs.is_empty() {
            true => KubeSettings::default().sources()?,
            false => request.kubeconfigs.clone(),
        };
        let kc = kubeconfig::read_files(&sources)?;
        let context = kubeconfig::choose_context(&kc, request.context.as_deref())?;

        let _claim = Claim::new(&self.inner, &context)?;
        if let Some(existing) = self.existing(&context, &kubeconfig::server_of(&kc, &context), &request)? {
            return Ok(ConnectOutcome { connection: existing, existing: true, example: None });
        }

        let id = self.new_id();
        let log = self.inner.state.log_path(&id);
        let span = crate::logging::connection_span(&id, &log)
            .map_err(|source| DaemonError::Log { path: log.clone(), source })?;
        // Until registered, the connection's files go if it fails, or if
        // this future is dropped (its client hung up).
        let unmade = Unmade { state: &self.inner.state, id: Some(&id) };
        let record = ConnectionRecord {
            id: id.clone(),
            context: context.clone(),
            server: String::new(),
            namespace: String::new(),
            kubeconfig: self.inner.state.kubeconfig_path(&id),
            source_kubeconfigs: sources,
            socks: None,
            http: None,
            dns: None,
            cluster_domain: request.proxy.cluster_domain.clone(),
            passthrough: request.proxy.passthrough,
            alias: alias_for(request.alias.as_deref().unwrap_or(&context)),
            pid: std::process::id(),
            log,
            started_at: unix_now(),
        };
        let started = self.start_engine(&kc, record, &request).instrument(span.clone()).await;
        match started.and_then(|(managed, example)| self.register(managed, example)) {
            Ok(outcome) => {
                unmade.made();
                self.route();
                self.publish_status();
                Ok(outcome)
            }
            Err(e) => {
                // The client's exec plugin variables (cloud keys) stay out of every log.
                let error = Redactor::for_exec_env(&request.exec_env).redact(&error_chain(&e));
                // Logged in the connection's own file too, so its log explains it.
                tracing::warn!(parent: &span, context, %error, "connect failed");
                tracing::warn!(id, context, %error, "connect failed");
                Err(e)
            }
        }
    }

    /// Writes the connection's own kubeconfig, connects to its cluster and
    /// starts its engine; the record then says where it listens.
    async fn start_engine(
        &self,
        kc: &Kubeconfig,
        record: ConnectionRecord,
        request: &ConnectRequest,
    ) -> Result<(Managed, Option<String>), DaemonError> {
        let cluster = self.prepare_kubeconfig(kc, &record, request).await?;
        let record =
            ConnectionRecord { server: cluster.server.clone(), namespace: cluster.namespace.clone(), ..record };
        let engine = Engine::start(cluster, request.proxy.clone())
            .await
            .map_err(|source| DaemonError::Engine { context: record.context.clone(), source })?;
        let example = engine.example_url(&record.namespace, &request.proxy.cluster_domain).await;
        let record =
            ConnectionRecord { socks: engine.socks_addr(), http: engine.http_addr(), dns: engine.dns_addr(), ..record };
        self.inner.state.write_record(&record)?;
        tracing::info!(socks = ?record.socks, http = ?record.http, "proxy ready");
        let seq = self.inner.next_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok((Managed { seq, record, engine }, Some(example)))
    }

    /// The context alone, written to the connection's kubeconfig file (what
    /// the record shows), then read with the client's exec plugin variables.
    async fn prepare_kubeconfig(
        &self,
        kc: &Kubeconfig,
        record: &ConnectionRecord,
        request: &ConnectRequest,
    ) -> Result<Cluster, DaemonError> {
        let mut own = kubeconfig::standalone(kc, &record.context)?;
        self.inner.state.write_private(&record.kubeconfig, kubeconfig::to_text(&own).as_bytes())?;
        tracing::info!(context = record.context, kubeconfig = %record.kubeconfig.display(), "connecting");
        kubeconfig::add_exec_env(&mut own, &request.exec_env);
        Ok(kubeconfig::connect_to(own, &record.context, request.namespace.as_deref()).await?)
    }

    /// Adds a started connection to the registry, unless the daemon began to
    /// stop meanwhile.
    fn register(&self, managed: Managed, example: Option<String>) -> Result<ConnectOutcome, DaemonError> {
        let connection = status_of(&managed);
        let mut connections = self.inner.connections.lock().unwrap();
        // A quit that began while this connection was starting has already
        // swept the others: do not outlive it.
        if self.inner.quit.is_cancelled() || self.inner.stopping.is_cancelled() {
            return Err(DaemonError::Stopping);
        }
        if let Some(other) = connections.values().find(|m| m.record.alias == managed.record.alias) {
            return Err(DaemonError::AliasTaken {
                alias: other.record.alias.clone(),
                id: other.record.id.clone(),
                context: other.record.context.clone(),
            });
        }
        connections.insert(managed.record.id.clone(), managed);
        Ok(ConnectOutcome { connection, existing: false, example })
    }

    /// The context's connection if it has one that serves what `request` asks;
    /// an error if it has one that differs (listeners, cluster, settings).
    fn existing(
        &self,
        context: &str,
        server: &str,
        request: &ConnectRequest,
    ) -> Result<Option<ConnectionStatus>, DaemonError> {
        let connections = self.inner.connections.lock().unwrap();
        let Some(managed) = connections.values().find(|m| m.record.context == context) else { return Ok(None) };
        let record = &managed.record;
        let fits = |asked: Option<Listen>, has: Option<std::net::SocketAddr>| match (asked, has) {
            (None, _) => true,
            (Some(_), None) => false,
            // Port 0 asks for any port.
            (Some(listen), Some(addr)) => {
                listen.or_next_free || listen.addr == addr || (listen.addr.port() == 0 && listen.addr.ip() == addr.ip())
            }
        };
        let differs = if record.server != server {
            Some(format!("another cluster ({})", record.server))
        } else if !fits(request.proxy.socks, record.socks)
            || !fits(request.proxy.http, record.http)
            || !fits(request.proxy.dns, record.dns)
        {
            Some(format!("other listeners ({})", listeners_text(record.socks, record.http)))
        } else if request.namespace.as_ref().is_some_and(|ns| *ns != record.namespace) {
            Some(format!("namespace {}", record.namespace))
        } else if request.proxy.cluster_domain != record.cluster_domain
            || request.proxy.passthrough != record.passthrough
        {
            Some(format!("cluster domain {} and passthrough {}", record.cluster_domain, record.passthrough))
        } else {
            None
        };
        match differs {
            None => Ok(Some(status_of(managed))),
            Some(differs) => {
                Err(DaemonError::Mismatch { context: context.to_string(), id: record.id.clone(), differs })
            }
        }
    }

    /// Stops a connection: its listeners are closed (ports free) when this
    /// returns, and its record and kubeconfig are gone; open client
    /// connections get a moment to finish.
    pub async fn disconnect(&self, id: &str) -> Result<ConnectionStatus, DaemonError> {
        if !is_valid_id(id) {
            return Err(DaemonError::MalformedId { id: id.to_string() });
        }
        let managed = self.inner.connections.lock().unwrap().remove(id);
        let Some(managed) = managed else { return Err(DaemonError::UnknownConnection { id: id.to_string() }) };
        Ok(self.stop(managed).await)
    }

    /// Stops every connection.
    pub async fn disconnect_all(&self) -> Vec<ConnectionStatus> {
        let mut all: Vec<Managed> =
            std::mem::take(&mut *self.inner.connections.lock().unwrap()).into_values().collect();
        all.sort_by_key(|m| m.seq);
        let mut stopped = Vec::new();
        for managed in all {
            stopped.push(self.stop(managed).await);
        }
        stopped
    }

    async fn stop(&self, managed: Managed) -> ConnectionStatus {
        let status = status_of(&managed);
        let Managed { record, engine, .. } = managed;
        engine.stop_listening().await;
        self.inner.state.remove_connection(&record.id);
        self.route();
        self.publish_status();
        let id = record.id.clone();
        self.inner.tasks.spawn(
            async move {
                engine.shutdown(DRAIN).await;
                tracing::info!("stopped");
                crate::logging::close_connection_log(&id);
            }
            .instrument(tracing::info_span!("connection", id = record.id)),
        );
        tracing::info!(id = record.id, context = record.context, "disconnected");
        status
    }

    /// Opens the shared port at `request.listen` (moving it if it is open
    /// elsewhere) or, without an address, closes it. Connections made before
    /// or after are all reachable on it by their aliases.
    pub async fn set_shared_port(&self, request: SharedPortRequest) -> Result<Option<SharedPortStatus>, DaemonError> {
        let old = self.inner.shared_port.lock().unwrap().take();
        if let Some(old) = old {
            // Free the port first: the new one may be the same.
            old.gateway.stop_listening().await;
            self.inner.tasks.spawn(old.gateway.shutdown(DRAIN).in_current_span());
        }
        let Some(listen) = request.listen else {
            tracing::info!("shared port closed");
            return Ok(None);
        };
        if self.inner.stopping.is_cancelled() {
            return Err(DaemonError::Stopping);
        }
        let gateway =
            Gateway::start(GatewayConfig::new(listen), Routes::new()).await.map_err(DaemonError::SharedPort)?;
        let port = SharedPort { gateway, default_context: request.default_context };
        let status = port.status();
        tracing::info!(addr = %status.addr, default_context = ?status.default_context, "shared port open");
        *self.inner.shared_port.lock().unwrap() = Some(port);
        self.route();
        Ok(Some(status))
    }

    /// The shared port, if open.
    pub fn shared_port(&self) -> Option<SharedPortStatus> {
        self.inner.shared_port.lock().unwrap().as_ref().map(SharedPort::status)
    }

    /// Points the shared port at the connections there are now.
    fn route(&self) {
        let shared_port = self.inner.shared_port.lock().unwrap();
        let Some(port) = shared_port.as_ref() else { return };
        let connections = self.inner.connections.lock().unwrap();
        let mut routes = Routes::new();
        for managed in connections.values() {
            routes.insert(&managed.record.alias, managed.engine.route());
        }
        let default = port
            .default_context
            .as_deref()
            .and_then(|context| connections.values().find(|m| m.record.context == context));
        routes.set_default(default.map(|m| m.record.alias.as_str()));
        port.gateway.set_routes(routes);
    }

    /// What the clients of connection `id` (none: of every connection,
    /// oldest first) are doing.
    pub async fn activity(&self, id: Option<&str>) -> Result<Vec<ConnectionActivity>, DaemonError> {
        let pending: Vec<_> = {
            let connections = self.inner.connections.lock().unwrap();
            let mut picked: Vec<&Managed> = match id {
                Some(id) => match connections.get(id) {
                    Some(managed) => vec![managed],
                    None if !is_valid_id(id) => return Err(DaemonError::MalformedId { id: id.to_string() }),
                    None => return Err(DaemonError::UnknownConnection { id: id.to_string() }),
                },
                None => connections.values().collect(),
            };
            picked.sort_by_key(|m| m.seq);
            picked.into_iter().map(|m| (m.record.id.clone(), m.record.context.clone(), m.engine.activity())).collect()
        };
        let mut all = Vec::with_capacity(pending.len());
        for (id, context, activity) in pending {
            all.push(ConnectionActivity { id, context, activity: activity.await });
        }
        Ok(all)
    }

    /// Closes client connection `client` of connection `id`, resetting both sides.
    pub fn close_client(&self, id: &str, client: u64) -> Result<(), DaemonError> {
        if !is_valid_id(id) {
            return Err(DaemonError::MalformedId { id: id.to_string() });
        }
        let connections = self.inner.connections.lock().unwrap();
        let Some(managed) = connections.get(id) else {
            return Err(DaemonError::UnknownConnection { id: id.to_string() });
        };
        if managed.engine.close_client(client) {
            tracing::info!(id, client, "client connection closed on request");
            Ok(())
        } else {
            Err(DaemonError::UnknownClient { id: id.to_string(), client })
        }
    }

    /// Every connection's activity, re-sent about once a second while it
    /// changes and someone watches (the tray's window): nothing is
    /// gathered while no one does.
    pub fn watch_activity(&self) -> watch::Receiver<Vec<ConnectionActivity>> {
        self.inner.activity.subscribe()
    }

    /// Every connection with its live figures, oldest first.
    pub fn status(&self) -> Vec<ConnectionStatus> {
        let connections = self.inner.connections.lock().unwrap();
        let mut all: Vec<_> = connections.values().collect();
        all.sort_by_key(|m| m.seq);
        all.into_iter().map(status_of).collect()
    }

    /// The connections, re-sent on every connect and disconnect and, while
    /// figures change, about once a second.
    pub fn watch(&self) -> watch::Receiver<Vec<ConnectionStatus>> {
        self.inner.updates.subscribe()
    }

    /// Asks whoever hosts the daemon to stop it (as a client's `quit` does).
    pub fn request_quit(&self) {
        self.inner.quit.cancel();
    }

    /// Resolves once a client (or [`Daemon::request_quit`]) asked the daemon to quit.
    pub async fn quit_requested(&self) {
        self.inner.quit.cancelled().await;
    }

    /// Stops every connection (letting open client connections drain
    /// briefly), closes the control socket and releases the daemon lock.
    pub async fn shutdown(&self) {
        self.inner.stopping.cancel();
        let _ = self.set_shared_port(SharedPortRequest { listen: None, default_context: None }).await;
        self.disconnect_all().await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        // Nothing can have started since (`connect` checks `stopping`), but be sure.
        self.disconnect_all().await;
        let _ = std::fs::remove_file(self.inner.state.socket());
        self.inner.lock.lock().unwrap().take();
        tracing::info!("kubesocks daemon stopped");
    }

    /// Answers one control request from a client of the socket. A connect
    /// whose client hangs up before it is made is given up: no one would
    /// know of the connection (`Cancelled`).
    async fn handle(&self, request: Request, client_gone: CancellationToken) -> Response {
        match request {
            Request::Connect(req) => {
                let redactor = Redactor::for_exec_env(&req.exec_env);
                let context = req.context.clone().unwrap_or_default();
                let connected = tokio::select! {
                    connected = self.connect(req) => connected,
                    () = client_gone.cancelled() => {
                        tracing::info!(context, "connect cancelled: its client hung up");
                        Err(DaemonError::Cancelled)
                    }
                };
                match connected {
                    Ok(o) => Response::Connected { connection: o.connection, existing: o.existing, example: o.example },
                    Err(e) => e.response(&redactor),
                }
            }
            Request::Disconnect { id } => match self.disconnect(&id).await {
                Ok(status) => Response::Disconnected { connections: vec![status] },
                Err(e) => e.response(&Redactor::default()),
            },
            Request::DisconnectAll => Response::Disconnected { connections: self.disconnect_all().await },
            Request::Status => Response::Status {
                daemon: self.inner.info.clone(),
                connections: self.status(),
                shared_port: self.shared_port(),
            },
            Request::Activity { id } => match self.activity(id.as_deref()).await {
                Ok(connections) => Response::Activity { connections },
                Err(e) => e.response(&Redactor::default()),
            },
            Request::CloseClient { id, client } => match self.close_client(&id, client) {
                Ok(()) => Response::ClientClosed,
                Err(e) => e.response(&Redactor::default()),
            },
            Request::SharedPort(req) => match self.set_shared_port(req).await {
                Ok(shared_port) => Response::SharedPort { shared_port },
                Err(e) => e.response(&Redactor::default()),
            },
            Request::Quit => {
                self.request_quit();
                Response::Quitting { connections: self.status() }
            }
        }
    }

    /// Pushes the connections' figures to watchers, if they changed.
    fn publish_status(&self) {
        let now = self.status();
        self.inner.updates.send_if_modified(|current| {
            let changed = *current != now;
            *current = now;
            changed
        });
    }

    /// Pushes the figures and, while someone watches it, the activity.
    async fn publish(&self) {
        self.publish_status();
        if self.inner.activity.receiver_count() > 0 {
            let now = self.activity(None).await.unwrap_or_default();
            self.inner.activity.send_if_modified(|current| {
                let changed = *current != now;
                *current = now;
                changed
            });
        }
    }

    /// Pushes changed figures to watchers.
    async fn tick(self) {
        let mut interval = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = self.inner.stopping.cancelled() => return,
                _ = interval.tick() => self.publish().await,
            }
        }
    }

    /// A fresh connection ID, unique among this daemon's connections and
    /// the logs on disk (so a new connection never appends to an old log).
    fn new_id(&self) -> String {
        loop {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
            let id = format!("{:08x}", hasher.finish() as u32);
            if !self.inner.connections.lock().unwrap().contains_key(&id) && !self.inner.state.log_path(&id).exists() {
                return id;
            }
        }
    }
}

/// A connection being made: unless [`Unmade::made`] is called, dropping it
/// deletes the connection's record and kubeconfig and closes its log.
struct Unmade<'a> {
    state: &'a StateDir,
    id: Option<&'a str>,
}

impl Unmade<'_> {
    /// The connection is registered: its files are the registry's now.
    fn made(mut self) {
        self.id = None;
    }
}

impl Drop for Unmade<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.state.remove_connection(id);
            crate::logging::close_connection_log(id);
        }
    }
}

/// Marks a context as being connected until dropped, so two `connect`s of
/// one context cannot both start a proxy.
struct Claim<'a> {
    inner: &'a Inner,
    context: String,
}

impl<'a> Claim<'a> {
    fn new(inner: &'a Inner, context: &str) -> Result<Claim<'a>, DaemonError> {
        if !inner.connecting.lock().unwrap().insert(context.to_string()) {
            return Err(DaemonError::Busy { context: context.to_string() });
        }
        Ok(Claim { inner, context: context.to_string() })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.inner.connecting.lock().unwrap().remove(&self.context);
    }
}

fn status_of(managed: &Managed) -> ConnectionStatus {
    ConnectionStatus::new(managed.record.clone(), managed.engine.stats())
}

fn listeners_text(socks: Option<std::net::SocketAddr>, http: Option<std::net::SocketAddr>) -> String {
    let parts: Vec<String> =
        socks.map(|a| format!("SOCKS {a}")).into_iter().chain(http.map(|a| format!("HTTP {a}"))).collect();
    parts.join(", ")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}
