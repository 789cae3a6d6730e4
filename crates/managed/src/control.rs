//! The control protocol between clients (the CLI, the tray window) and the
//! daemon that hosts managed connections.
//!
//! It runs over `control.sock` in the state directory: the client sends one
//! [`Request`] as a line of JSON, the daemon answers one [`Response`] line and
//! closes. For example:
//!
//! ```text
//! → {"op":"disconnect","id":"3f9c2a1b"}
//! ← {"result":"disconnected","connections":[{"id":"3f9c2a1b","context":"prod",...}]}
//! ```
//!
//! Both sides live here: [`call`] for clients, [`bind`] and [`serve`] for the
//! daemon, which owns the framing (one line of at most [`MAX_LINE`] bytes, a
//! request within [`REQUEST_TIMEOUT`]) and the access check: the socket file
//! is owner-only, and a peer of another uid is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kubesocks_engine::{ActivitySnapshot, Listen, ProxyConfig, StatsSnapshot};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::state::{ConnectionRecord, StateDir, StateError};

/// The longest request or response line either side reads.
pub const MAX_LINE: u64 = 1 << 20;
/// A control client must send its request within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client asks the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
// One request per control connection: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// Start a connection for a context, or report the one it already has.
    Connect(ConnectRequest),
    /// Stop one connection.
    Disconnect {
        /// Its ID.
        id: String,
    },
    /// Stop every connection.
    DisconnectAll,
    /// List the connections with their live figures.
    Status,
    /// Stop every connection, then the daemon.
    Quit,
    /// Open, move or close the port shared by every connection.
    SharedPort(SharedPortRequest),
    /// What the clients of one connection (or of all) are doing: open
    /// client connections, recent failures, traffic.
    Activity {
        /// The connection's ID; none: every connection.
        #[serde(default)]
        id: Option<String>,
    },
    /// Close one client connection of a connection (both sides are reset).
    CloseClient {
        /// The connection's ID.
        id: String,
        /// The client connection's ID, as `activity` lists it.
        client: u64,
    },
}

/// The port every connected context is reached on by its alias
/// (`web.shop.prod`), names without one going to a default context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedPortRequest {
    /// Where to listen; none: close the shared port.
    #[serde(default)]
    pub listen: Option<Listen>,
    /// The context that names without an alias go to; none: they are refused.
    #[serde(default)]
    pub default_context: Option<String>,
}

/// The shared port as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct SharedPortStatus {
    /// Where it listens (SOCKS5, HTTP and the PAC file on one port).
    pub addr: std::net::SocketAddr,
    /// `socks5h://ADDR`.
    pub socks_url: String,
    /// Its PAC file, covering every connected context.
    pub pac_url: String,
    /// The context names without an alias go to, if any.
    pub default_context: Option<String>,
}

/// What `connect` asks for: which context, and how its proxy listens and
/// resolves (absent listeners are none; the daemon refuses a request for none).
/// Its `Debug` form names the exec plugin variables but never shows their values.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// Kubeconfig files to read, merged kubectl-style; empty: the daemon's default.
    #[serde(default)]
    pub kubeconfigs: Vec<PathBuf>,
    /// Empty: the kubeconfig's current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Namespace for short names; empty: the context's.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The client's variables that exec credential plugins read (see
    /// [`kubesocks_engine::kubeconfig::exec_env`]). The daemon may have been
    /// started from another shell, so it runs this connection's plugins with these.
    #[serde(default)]
    pub exec_env: BTreeMap<String, String>,
    /// The DNS label that picks this connection on the shared port; empty:
    /// the context name made one.
    #[serde(default)]
    pub alias: Option<String>,
    /// Listeners and resolution.
    #[serde(flatten)]
    pub proxy: ProxyConfig,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden: BTreeMap<&str, &str> = self.exec_env.keys().map(|k| (k.as_str(), "<hidden>")).collect();
        f.debug_struct("ConnectRequest")
            .field("kubeconfigs", &self.kubeconfigs)
            .field("context", &self.context)
            .field("namespace", &self.namespace)
            .field("exec_env", &hidden)
            .field("alias", &self.alias)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// The daemon's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
// One response per request: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Response {
    /// A connection is up.
    Connected {
        /// It, with its figures.
        connection: ConnectionStatus,
        /// The context already had this connection; nothing new was started.
        existing: bool,
        /// A URL of a real Service, for a first try.
        #[serde(default)]
        example: Option<String>,
    },
    /// The connections that were stopped.
    Disconnected {
        /// As they were when stopped.
        connections: Vec<ConnectionStatus>,
    },
    /// The answer to [`Request::Status`].
    Status {
        /// Who hosts the connections.
        daemon: DaemonInfo,
        /// Oldest first.
        connections: Vec<ConnectionStatus>,
        /// The port shared by every connection, if open.
        #[serde(default)]
        shared_port: Option<SharedPortStatus>,
    },
    /// The shared port as it now is (none: closed).
    SharedPort {
        /// Where it listens, if open.
        shared_port: Option<SharedPortStatus>,
    },
    /// The daemon is stopping these connections, then itself.
    Quitting {
        /// As they were.
        connections: Vec<ConnectionStatus>,
    },
    /// The answer to [`Request::Activity`], one entry per connection, oldest first.
    Activity {
        /// Each connection's activity.
        connections: Vec<ConnectionActivity>,
    },
    /// The client connection was closed.
    ClientClosed,
    /// The request failed.
    Error {
        /// What kind of failure, for a client to act on.
        kind: ErrorKind,
        /// What went wrong, as facts (no advice: that is the client's to add).
        message: String,
    },
}

/// Which process hosts the connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Its process.
    pub pid: u32,
    /// The kubesocks version it runs.
    pub version: String,
    /// `kubesocks daemon` or the tray app.
    pub host: String,
}

/// The kinds of [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was not understood.
    BadRequest,
    /// No connection has that ID.
    UnknownConnection,
    /// The connection has no open client connection with that ID.
    UnknownClient,
    /// The context is being connected by another request right now.
    Busy,
    /// The context already has a connection with other listeners.
    AlreadyConnected,
    /// Kubeconfig, credentials or API server.
    Kube,
    /// A listener could not be opened.
    Listen,
    /// The peer is not the daemon's user.
    Forbidden,
    /// Anything else (the state directory, a log file).
    Internal,
}

/// A managed connection as `status` and the tray show it: its record and
/// its live figures, side by side in one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ConnectionStatus {
    /// What was asked for and where it listens.
    #[serde(flatten)]
    pub record: ConnectionRecord,
    /// `socks5h://ADDR`, for clients that resolve names through the proxy.
    pub socks_url: Option<String>,
    /// `http://ADDR`.
    pub http_url: Option<String>,
    /// The PAC file for browsers, on the SOCKS (mixed) port, else the HTTP one.
    pub pac_url: Option<String>,
    /// Live figures.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

impl ConnectionStatus {
    /// A record with its figures.
    pub fn new(record: ConnectionRecord, stats: StatsSnapshot) -> ConnectionStatus {
        ConnectionStatus {
            socks_url: record.socks.map(|a| format!("socks5h://{a}")),
            http_url: record.http.map(|a| format!("http://{a}")),
            pac_url: record.socks.or(record.http).map(kubesocks_engine::pac_url),
            record,
            stats,
        }
    }
}

/// What the clients of one managed connection are doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ConnectionActivity {
    /// The connection's ID.
    pub id: String,
    /// Its context.
    pub context: String,
    /// Its clients' connections, failures and traffic.
    #[serde(flatten)]
    pub activity: ActivitySnapshot,
}

/// Why a client's [`call`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket: no daemon, or one that died.
    #[error("no kubesocks daemon answers on {}", path.display())]
    NotRunning {
        /// The socket.
        path: PathBuf,
    },
    /// The state directory is not safe to use.
    #[error(transparent)]
    State(#[from] StateError),
    /// Reading or writing the socket failed.
    #[error("talking to the daemon on {} failed: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not a [`Response`].
    #[error("the daemon's answer is not understood ({reason}); it may run another kubesocks version")]
    Garbled {
        /// What serde said.
        reason: String,
    },
}

/// Sends one request to the daemon and reads its answer.
pub async fn call(state: &StateDir, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
    state.check_socket_owner()?;
    let path = state.socket();
    let io = |source| ControlError::Io { path: path.clone(), source };
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e) if no_daemon(&e) => return Err(ControlError::NotRunning { path }),
        Err(e) => return Err(io(e)),
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request).expect("a request serializes");
        line.push('\n');
        write.write_all(line.as_bytes()).await.map_err(io)?;
        read_message(read).await.map_err(io)
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => return Err(ControlError::Timeout(timeout)),
        Ok(Err(ControlError::Io { source, .. })) if no_daemon(&source) => {
            return Err(ControlError::NotRunning { path });
        }
        Ok(answer) => answer?,
    };
    if answer.is_empty() {
        return Err(ControlError::NotRunning { path });
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::Garbled { reason: e.to_string() })
}

/// Whether a socket error means no daemon is there to answer: no socket,
/// nothing listening on it, or a daemon that died after the connection was
/// queued. The last is a reset at `connect` as well as later: a killed
/// daemon's threads exit one by one, and its listening socket, still open
/// while the last of them does, takes connections it then resets.
fn no_daemon(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, NotFound};
    matches!(e.kind(), NotFound | ConnectionRefused | ConnectionReset | BrokenPipe)
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes.
async fn read_message(read: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    BufReader::new(read.take(MAX_LINE)).read_until(b'\n', &mut bytes).await?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Binds the daemon's socket in `state`, replacing a dead daemon's, owner-only.
///
/// The socket is made in a fresh directory of its own (0700, so no one else
/// can reach it there), given mode 0600, and only then renamed into place:
/// it is never reachable by others, not even for a moment. (A restrictive
/// umask around the bind would do the same, but the umask is the whole
/// process's: a thread creating a file or directory meanwhile, as the tray
/// app's do, would get the wrong mode.)
pub fn bind(state: &StateDir) -> Result<UnixListener, std::io::Error> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let path = state.socket();
    let staging = state.root().join(format!(".control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let bound = (|| {
        let fresh = staging.join("control.sock");
        let listener = UnixListener::bind(&fresh)?;
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))?;
        // Replaces a dead daemon's socket atomically.
        std::fs::rename(&fresh, &path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

/// Serves the socket until `stop`: each client's one request goes to `handle`
/// (on a task of `tasks`), and its answer back. Peers of another uid, late or
/// oversized requests and malformed JSON are answered here, with an error.
///
/// `handle` also gets a token that is cancelled if the client closes its
/// socket before the answer (Ctrl-C on `kubesocks connect`, or its timeout):
/// work that only that client waits for may stop then.
pub async fn serve<H, F>(listener: UnixListener, stop: CancellationToken, tasks: TaskTracker, handle: H)
where
    H: Fn(Request, CancellationToken) -> F + Clone + Send + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::error!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tasks.spawn(answer(stream, handle.clone()).in_current_span());
    }
}

/// Reads one request from a control client and writes the answer.
async fn answer<H, F>(stream: UnixStream, handle: H)
where
    H: Fn(Request, CancellationToken) -> F,
    F: Future<Output = Response>,
{
    let me = crate::state::current_uid();
    let peer = stream.peer_cred().map(|c| c.uid());
    let (mut read, mut write) = stream.into_split();
    let response = match peer {
        Ok(uid) if uid != me => {
            tracing::warn!(uid, "refused a control client of another user");
            error(ErrorKind::Forbidden, format!("this daemon serves uid {me} only, not uid {uid}"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused a control client whose user cannot be told");
            error(ErrorKind::Forbidden, format!("cannot tell who you are: {e}"))
        }
        Ok(_) => match tokio::time::timeout(REQUEST_TIMEOUT, read_message(&mut read)).await {
            Err(_) => error(ErrorKind::BadRequest, format!("no request within {REQUEST_TIMEOUT:?}")),
            Ok(Err(e)) => error(ErrorKind::BadRequest, format!("unreadable request: {e}")),
            Ok(Ok(line)) => match serde_json::from_str::<Request>(&line) {
                Ok(request) => {
                    let gone = CancellationToken::new();
                    let handled = handle(request, gone.clone());
                    tokio::pin!(handled);
                    tokio::select! {
                        response = &mut handled => response,
                        () = hung_up(&mut read) => {
                            gone.cancel();
                            handled.await
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "malformed control request");
                    error(
                        ErrorKind::BadRequest,
                        format!(
                            "malformed request ({e}); the control socket takes one JSON request per line, e.g. {{\"op\":\"status\"}}"
                        ),
                    )
                }
            },
        },
    };
    let mut line = serde_json::to_string(&response).expect("a response serializes");
    line.push('\n');
    let _ = write.write_all(line.as_bytes()).await;
}

/// Resolves once the client has closed its socket. A client that only
/// shuts down its sending side (as `socat` does after its input) still waits
/// for the answer, so a half-close alone does not resolve this; its close,
/// later, does (within [`HANG_UP_CHECK`]). Anything the client sends after
/// its request is read and dropped.
async fn hung_up(read: &mut tokio::net::unix::OwnedReadHalf) {
    let mut scrap = [0u8; 256];
    while let Ok(1..) = read.read(&mut scrap).await {}
    // At end of input, a half-close and a close look alike to a reader; only
    // a close sets POLLHUP (Linux). Nothing wakes a reader on the close that
    // follows a half-close, hence the checks.
    while !peer_closed(read.as_ref()) {
        tokio::time::sleep(HANG_UP_CHECK).await;
    }
}

/// How often a half-closed client is checked for having closed.
const HANG_UP_CHECK: Duration = Duration::from_secs(1);

/// Whether the peer of a Unix stream socket has closed it (POLLHUP).
fn peer_closed(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd as _;
    let mut fd = libc::pollfd { fd: stream.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: one valid pollfd, and a zero timeout: poll only reads the
    // descriptor's state. (An EINTR reads as "not closed"; the next check
    // asks again.)
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & libc::POLLHUP != 0
}

fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error { kind, message }
}

/// Connection IDs are 8 lowercase hex digits.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_half_close_is_not_a_hang_up_but_a_close_is() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let (mut read, _write) = server.into_split();
        client.write_all(b"after the request\n").await.unwrap();
        client.shutdown().await.unwrap();
        let watch = hung_up(&mut read);
        tokio::pin!(watch);
        let waited = tokio::time::timeout(Duration::from_millis(200), &mut watch).await;
        assert!(waited.is_err(), "a client that only stopped sending still waits for its answer");
        // The same watch sees the close that follows.
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), watch).await.expect("a closed client has hung up");
    }

    #[test]
    fn requests_are_tagged_json() {
        let json = serde_json::to_string(&Request::Disconnect { id: "0a1b2c3d".into() }).unwrap();
        assert_eq!(json, r#"{"op":"disconnect","id":"0a1b2c3d"}"#);
        let parsed: Request = serde_json::from_str(r#"{"op":"status"}"#).unwrap();
        assert_eq!(parsed, Request::Status);
    }

    #[test]
    fn a_minimal_connect_takes_defaults() {
        let parsed: Request = serde_json::from_str(r#"{"op":"connect","context":"kind"}"#).unwrap();
        let Request::Connect(req) = parsed else { panic!("not a connect: {parsed:?}") };
        assert_eq!(req.context.as_deref(), Some("kind"));
        assert_eq!(req.proxy.cluster_domain, "cluster.local");
        assert!(req.proxy.socks.is_none() && req.proxy.http.is_none() && !req.proxy.passthrough);
    }

    #[test]
    fn a_connect_requests_debug_form_hides_the_exec_variables_values() {
        let json = r#"{"op":"connect","context":"prod","exec_env":{"AWS_SECRET_ACCESS_KEY":"s3cr3t-canary"}}"#;
        let request: Request = serde_json::from_str(json).unwrap();
        let shown = format!("{request:?} {request:#?}");
        assert!(!shown.contains("s3cr3t-canary"), "{shown}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY") && shown.contains("prod"), "{shown}");
    }

    #[test]
    fn ids_are_checked() {
        assert!(is_valid_id("0a1b2c3d"));
        for bad in ["", "0a1b2c3", "0a1b2c3d4", "0A1B2C3D", "../../x1", "0a1b2c3g"] {
            assert!(!is_valid_id(bad), "{bad:?} accepted");
        }
    }
}
