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
//! The socket file is owner-only, and the daemon also checks the peer's uid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use crate::engine::Listen;
use crate::state::{StateDir, StateError};

/// The longest request or response line either side reads.
pub const MAX_LINE: u64 = 1 << 20;
/// The SOCKS port `connect` tries first.
pub const DEFAULT_SOCKS_PORT: u16 = 1080;
/// The HTTP proxy port `connect --http` tries first.
pub const DEFAULT_HTTP_PORT: u16 = 3128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a connection for a context, or report the one it already has.
    Connect(ConnectRequest),
    Disconnect {
        id: String,
    },
    DisconnectAll,
    Status,
    /// Stop every connection, then the daemon.
    Quit,
}

/// What `connect` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub socks: Option<Listen>,
    #[serde(default)]
    pub http: Option<Listen>,
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    #[serde(default)]
    pub passthrough: bool,
    /// The client's variables that exec credential plugins read (see
    /// [`crate::kubeconfig::exec_env`]). The daemon may have been started from
    /// another shell, so it runs this connection's plugins with these.
    #[serde(default)]
    pub exec_env: BTreeMap<String, String>,
}

fn default_domain() -> String {
    "cluster.local".into()
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
// One response per request: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Response {
    Connected {
        connection: ConnectionStatus,
        /// The context already had this connection; nothing new was started.
        existing: bool,
        /// A URL of a real Service, for a first try.
        #[serde(default)]
        example: Option<String>,
    },
    /// The connections that were stopped.
    Disconnected {
        connections: Vec<ConnectionStatus>,
    },
    Status {
        daemon: DaemonInfo,
        connections: Vec<ConnectionStatus>,
    },
    /// The daemon is stopping these connections, then itself.
    Quitting {
        connections: Vec<ConnectionStatus>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// Which process hosts the connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    /// `kubesocks daemon` or the tray app.
    pub host: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was not understood.
    BadRequest,
    UnknownConnection,
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
    Internal,
}

/// A managed connection as `status` and the tray show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    pub id: String,
    pub context: String,
    pub server: String,
    pub namespace: String,
    pub socks: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub socks_url: Option<String>,
    pub http_url: Option<String>,
    /// The process hosting it.
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub log: PathBuf,
    pub kubeconfig: PathBuf,
    pub active_connections: u64,
    pub total_connections: u64,
    /// Bytes from clients to the cluster.
    pub bytes_up: u64,
    /// Bytes from the cluster to clients.
    pub bytes_down: u64,
    pub last_error: Option<ErrorReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket: no daemon, or one that died.
    #[error("no kubesocks daemon answers on {}", path.display())]
    NotRunning { path: PathBuf },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("talking to the daemon on {} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
    #[error(
        "the daemon's answer is not understood ({reason}); it may be another kubesocks version: `kubesocks quit` and retry"
    )]
    Garbled { reason: String },
}

/// Sends one request to the daemon and reads its answer.
pub async fn call(state: &StateDir, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
    state.check_socket_owner()?;
    let path = state.socket();
    let io = |source| ControlError::Io { path: path.clone(), source };
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Err(ControlError::NotRunning { path });
        }
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
        // The daemon died between accepting and answering (or while its
        // threads were exiting): the same as finding none.
        Ok(Err(ControlError::Io { source, .. }))
            if matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
        {
            return Err(ControlError::NotRunning { path });
        }
        Ok(answer) => answer?,
    };
    if answer.is_empty() {
        return Err(ControlError::NotRunning { path });
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::Garbled { reason: e.to_string() })
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes.
pub async fn read_message(read: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    BufReader::new(read.take(MAX_LINE)).read_until(b'\n', &mut bytes).await?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Connection IDs are 8 lowercase hex digits.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(req.cluster_domain, "cluster.local");
        assert!(req.socks.is_none() && req.http.is_none() && !req.passthrough);
    }

    #[test]
    fn ids_are_checked() {
        assert!(is_valid_id("0a1b2c3d"));
        for bad in ["", "0a1b2c3", "0a1b2c3d4", "0A1B2C3D", "../../x1", "0a1b2c3g"] {
            assert!(!is_valid_id(bad), "{bad:?} accepted");
        }
    }
}
