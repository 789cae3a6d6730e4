//! The fallback protocol: one `v4.channel.k8s.io` WebSocket session per
//! connection (what kube-rs speaks).
//!
//! The protocol has no "connected" signal: the kubelet dials the pod's port
//! after the upgrade and reports a failure (such as "connection refused") on the
//! port's error channel. [`open`] therefore waits briefly for such an error
//! before it calls the connection established, so that a client can be told
//! "connection refused" instead of seeing a connection that dies at once. The
//! wait is scaled to how long the upgrade took: an error travels the same path.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Portforwarder;
use kube::{Api, Client};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::ForwardError;
use crate::route::Endpoint;

const MIN_SETTLE: Duration = Duration::from_millis(2);
const MAX_SETTLE: Duration = Duration::from_millis(50);

/// A byte stream to one pod port. Dropping it ends the port-forward session.
pub(crate) struct V4Stream {
    stream: DuplexStream,
    forwarder: Portforwarder,
}

impl Drop for V4Stream {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// Opens a port-forward session to `endpoint`. `on_late_error` is called with
/// the kubelet's message if the session fails after it was established.
pub(crate) async fn open(
    client: &Client,
    endpoint: &Endpoint,
    on_late_error: impl FnOnce(String) + Send + 'static,
) -> Result<V4Stream, ForwardError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &endpoint.namespace);
    let started = Instant::now();
    let mut forwarder = api.portforward(&endpoint.pod, &[endpoint.port]).await.map_err(ForwardError::Api)?;
    let settle = started.elapsed().clamp(MIN_SETTLE, MAX_SETTLE);
    let stream = forwarder.take_stream(endpoint.port).expect("a stream per requested port");
    let mut error: BoxFuture<'static, Option<String>> =
        forwarder.take_error(endpoint.port).expect("an error channel per requested port").boxed();
    tokio::select! {
        message = &mut error => {
            if let Some(message) = message {
                forwarder.abort();
                return Err(ForwardError::Kubelet(message));
            }
        }
        _ = tokio::time::sleep(settle) => {
            tokio::spawn(
                async move {
                    if let Some(message) = error.await {
                        on_late_error(message);
                    }
                }
                .in_current_span(),
            );
        }
    }
    Ok(V4Stream { stream, forwarder })
}

impl AsyncRead for V4Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for V4Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    /// The v4 protocol cannot carry a half-close to the pod: kube-rs would end
    /// the whole session (and lose the pod's answer). So a client's FIN is held
    /// here, and the session ends when the pod closes its side.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
