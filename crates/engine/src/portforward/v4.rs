//! The fallback protocol: one `v4.channel.k8s.io` WebSocket session per
//! connection (what kube-rs speaks).
//!
//! The protocol has no "connected" signal: the kubelet dials the pod's port
//! after the upgrade and reports a failure (such as "connection refused") on the
//! port's error channel. [`open`] therefore waits briefly for such an error
//! before it calls the connection established, so that a client can be told
//! "connection refused" instead of seeing a connection that dies at once. The
//! wait is scaled to how long the upgrade took: an error travels the same path.
//!
//! The session's bytes come through kube-rs' `Portforwarder` as a plain
//! in-memory stream, which ends the same way whether the pod closed or the
//! session broke. So at its end [`V4Stream`] asks how the session ended: a
//! kubelet error (reported late, after the connection was made) or a
//! broken WebSocket is a `ConnectionReset`, which the relay passes on as a
//! reset, never as a clean but short end.

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

/// How long, once the data ended, a late kubelet error or the session
/// task's failure may take to arrive. Both come with the end of the data or
/// before it (kube-rs sends the kubelet's error before the Close, and ends
/// its task at once when the WebSocket breaks); after a clean close the
/// task waits for this side to close too, so every clean end waits this
/// long: it is kept short.
const END_GRACE: Duration = Duration::from_millis(20);

/// A byte stream to one pod port. Dropping it ends the port-forward session.
pub(crate) struct V4Stream {
    stream: DuplexStream,
    /// Until the data ends; then its end is asked about in `ending`.
    forwarder: Option<Portforwarder>,
    /// The kubelet's late error, once it came (and was passed to `on_late_error`).
    late: Option<tokio::sync::oneshot::Receiver<String>>,
    /// Once the data ended: whether the session ended well.
    ending: Option<BoxFuture<'static, Result<(), ForwardError>>>,
}

impl Drop for V4Stream {
    fn drop(&mut self) {
        if let Some(forwarder) = &self.forwarder {
            forwarder.abort();
        }
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
        _ = tokio::time::sleep(settle) => {}
    }
    let (late_tx, late) = tokio::sync::oneshot::channel();
    tokio::spawn(
        async move {
            if let Some(message) = error.await {
                on_late_error(message.clone());
                let _ = late_tx.send(message);
            }
        }
        .in_current_span(),
    );
    Ok(V4Stream { stream, forwarder: Some(forwarder), late: Some(late), ending: None })
}

/// How a session whose data ended did end: a late kubelet error, else the
/// session task's failure, each given [`END_GRACE`] to come.
async fn how_it_ended(
    forwarder: Portforwarder,
    late: Option<tokio::sync::oneshot::Receiver<String>>,
) -> Result<(), ForwardError> {
    let joined = tokio::time::timeout(END_GRACE, forwarder.join());
    let late = async move {
        match late {
            Some(late) => tokio::time::timeout(END_GRACE, late).await.ok().and_then(Result::ok),
            None => None,
        }
    };
    let (joined, late) = tokio::join!(joined, late);
    if let Some(message) = late {
        return Err(ForwardError::Kubelet(message));
    }
    match joined {
        Ok(Err(e)) => Err(ForwardError::Session(format!("it broke: {e}"))),
        // Ended well, or still waiting for this side after a clean close.
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

impl AsyncRead for V4Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.ending.is_none() {
            let before = buf.filled().len();
            futures::ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            let Some(forwarder) = this.forwarder.take() else { return Poll::Ready(Ok(())) };
            this.ending = Some(how_it_ended(forwarder, this.late.take()).boxed());
        }
        let ended = futures::ready!(this.ending.as_mut().expect("set above").as_mut().poll(cx));
        // Asked once; later reads see the end again.
        this.ending = Some(futures::future::ready(Ok(())).boxed());
        Poll::Ready(ended.map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionReset, e)))
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
