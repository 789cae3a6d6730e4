//! Opening a byte stream to a pod's kubelet for SPDY: the two upgrades of
//! `pods/NAME/portforward` the API server offers for it.
//!
//! * [`Protocol::Tunnel`]: a WebSocket upgrade (a GET) asking for the
//!   subprotocol `SPDY/3.1+portforward.k8s.io` (KEP-4006). The API server,
//!   or a kubelet that declares `ExtendWebSocketsToKubelet`, unwraps it and
//!   speaks SPDY on; SPDY frames travel as a byte stream in binary messages.
//! * [`Protocol::Spdy`]: the legacy `Upgrade: SPDY/3.1` (a POST, so it needs
//!   only `create` on `pods/portforward`), with SPDY directly on the upgraded
//!   connection.
//!
//! Both are sent through the kube client's own service stack (its auth,
//! TLS and connector), with [`kube::Client::send`].

use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::core::Status;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::Protocol;
use super::websocket::WebSocketBytes;
use crate::byte_stream::AsyncReadWrite;

/// The WebSocket subprotocol of the SPDY tunnel.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY upgrade's stream protocol.
const PORTFORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// A connection that carries SPDY frames to the kubelet.
pub(crate) type Transport = Box<dyn AsyncReadWrite + Send + Unpin>;

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The API server answered with an error status (RBAC, no such pod, an
    /// unreachable kubelet), as a kube API error so callers read it alike.
    #[error(transparent)]
    Api(kube::Error),
    /// The upgrade was answered but not switched to the protocol asked for:
    /// the API server (or a proxy in front of it) does not speak it.
    #[error("the API server did not switch to {protocol}: {detail}")]
    NotSwitched { protocol: &'static str, detail: String },
}

impl UpgradeError {
    /// Whether another protocol might succeed where this one failed: the
    /// server refused the upgrade itself (as kubectl decides), not the pod.
    pub(crate) fn may_fall_back(&self) -> bool {
        match self {
            UpgradeError::NotSwitched { .. } => true,
            UpgradeError::Api(kube::Error::Api(s)) => matches!(s.code, 400 | 403 | 405 | 426 | 501),
            UpgradeError::Api(_) => false,
        }
    }
}

fn path(namespace: &str, pod: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward")
}

/// Opens a SPDY transport to `pod` with `protocol` (tunnel or legacy SPDY).
pub(crate) async fn open(
    client: &Client,
    protocol: Protocol,
    namespace: &str,
    pod: &str,
) -> Result<Transport, UpgradeError> {
    match protocol {
        Protocol::Tunnel => tunnel(client, namespace, pod).await,
        Protocol::Spdy | Protocol::WebSocket => spdy(client, namespace, pod).await,
    }
}

async fn tunnel(client: &Client, namespace: &str, pod: &str) -> Result<Transport, UpgradeError> {
    let key = generate_key();
    let request = Request::builder()
        .method(Method::GET)
        .uri(path(namespace, pod))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, &key)
        .header(header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL)
        .body(kube::client::Body::from(Vec::new()))
        .expect("a request of valid parts");
    let response = send(client, request).await?;
    let not_switched = |detail: String| UpgradeError::NotSwitched { protocol: TUNNEL_PROTOCOL, detail };
    let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if accept.map(HeaderValue::as_bytes) != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(not_switched("a wrong Sec-WebSocket-Accept".into()));
    }
    let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    if chosen != Some(TUNNEL_PROTOCOL) {
        return Err(not_switched(format!("it chose subprotocol {chosen:?}")));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| not_switched(e.to_string()))?;
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    Ok(Box::new(WebSocketBytes::new(ws)))
}

async fn spdy(client: &Client, namespace: &str, pod: &str) -> Result<Transport, UpgradeError> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path(namespace, pod))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PORTFORWARD_PROTOCOL)
        .body(kube::client::Body::from(Vec::new()))
        .expect("a request of valid parts");
    let response = send(client, request).await?;
    let not_switched = |detail: String| UpgradeError::NotSwitched { protocol: "SPDY/3.1", detail };
    let version = response.headers().get("X-Stream-Protocol-Version").and_then(|v| v.to_str().ok());
    if version != Some(PORTFORWARD_PROTOCOL) {
        return Err(not_switched(format!("it chose stream protocol {version:?}")));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| not_switched(e.to_string()))?;
    Ok(Box::new(TokioIo::new(upgraded)))
}

/// Sends an upgrade request; anything but `101 Switching Protocols` is an error.
async fn send(
    client: &Client,
    request: Request<kube::client::Body>,
) -> Result<http::Response<kube::client::Body>, UpgradeError> {
    let response = client.send(request).await.map_err(UpgradeError::Api)?;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    if status.is_success() || status.is_redirection() {
        return Err(UpgradeError::NotSwitched { protocol: "an upgrade", detail: format!("HTTP {status}") });
    }
    // Errors are a `metav1.Status`, or text from a proxy in front.
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let code = status.as_u16();
    let status = match serde_json::from_slice::<Status>(&body) {
        Ok(status) if status.code != 0 => status,
        Ok(status) => status.with_code(code),
        Err(_) => Status::failure(String::from_utf8_lossy(&body).trim(), "").with_code(code),
    };
    Err(UpgradeError::Api(kube::Error::Api(status.boxed())))
}
