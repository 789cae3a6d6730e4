//! A target's endpoints tried in turn: before the client is answered, and
//! once more after it, when a pod's refusal comes late.
//!
//! The kubelet gives no "connected" signal: it dials the pod's port once the
//! streams arrive and reports a failure on the error stream. The port-forward
//! waits a little for that report before it calls a connection made
//! ([`crate::portforward`]), and not at all for a port that took a
//! connection lately; so a busy kubelet, or a pod whose server just went
//! away, can report a refusal after the client has been told it is
//! connected and may have sent its request. Each first answer from a pod
//! and each refusal is told to the forwarder, which decides on that wait. Until the pod sends its first byte, a refusal means the pod's
//! port never took the connection, so nothing the client sent reached it:
//! [`Failover`] keeps what the client sent (up to [`REPLAY_LIMIT`]) and, on
//! such a late refusal, opens the next endpoint and sends it all again there.
//! Only a refusal is retried this way: the kubelet's "connection refused",
//! or both streams reset without a word before the pod sent anything (the
//! kubelet resets them right after writing why, and the why does not always
//! arrive; `open` counts that as a refusal too). After any other failure the
//! pod may have seen the request, and sending it twice could do it twice.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use kubesocks_spdy::StreamError;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use crate::portforward::{ForwardError, Forwarder, PodStream};
use crate::route::Endpoint;

/// How long one endpoint may take before the next is tried: a hung kubelet
/// must not use up the whole dial timeout.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most a client may send before the pod's first byte and still be
/// moved to another endpoint on a late refusal (a request head, a TLS
/// ClientHello, a database's start-up message fit many times over).
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// No endpoint took the connection: the last one's failure.
#[derive(Debug)]
pub(crate) struct NoEndpoint {
    pub endpoint: Endpoint,
    /// How many endpoints were tried.
    pub tried: usize,
    pub source: ForwardError,
}

/// Opens a connection to the first of `endpoints` that takes it, each within
/// [`ENDPOINT_TIMEOUT`]. Also the index of that endpoint.
async fn open_first(
    forwarder: &Forwarder,
    endpoints: &[Endpoint],
    conn: u64,
) -> Result<(PodStream, usize), NoEndpoint> {
    let mut last = None;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let target = endpoint.to_string();
        let on_late_error = move |message: String| {
            tracing::warn!(conn, %target, kubelet = %message, "port-forward failed during the connection");
        };
        let opened = tokio::time::timeout(ENDPOINT_TIMEOUT, forwarder.open(endpoint, on_late_error)).await;
        match opened.unwrap_or(Err(ForwardError::Session(format!("no answer within {ENDPOINT_TIMEOUT:?}")))) {
            Ok(stream) => {
                tracing::debug!(conn, %endpoint, "port-forward established");
                return Ok((stream, i));
            }
            Err(source) => {
                tracing::warn!(conn, %endpoint, error = %source, "port-forward failed");
                let forbidden = source.is_forbidden();
                last = Some(NoEndpoint { endpoint: endpoint.clone(), tried: i + 1, source });
                if forbidden {
                    break;
                }
            }
        }
    }
    Err(last.expect("a target has at least one endpoint"))
}

/// A connection to one of a target's endpoints that moves to the next one
/// on a late refusal (see the module docs).
pub(crate) struct Failover {
    stream: PodStream,
    /// Where `stream` goes.
    endpoint: Endpoint,
    forwarder: Arc<Forwarder>,
    /// Endpoints not tried yet, in order.
    rest: Vec<Endpoint>,
    conn: u64,
    /// What the client has sent, kept while the pod has sent nothing, it
    /// fits [`REPLAY_LIMIT`] and an endpoint is left to replay it on; `None`
    /// once it cannot be replayed (from the start for a one-pod target).
    sent: Option<Vec<u8>>,
    /// The client's FIN has been passed on (and is replayed too).
    shut: bool,
    /// The pod has sent something.
    heard: bool,
    /// Opening the next endpoint and replaying there; polled by reads.
    moving: Option<Pin<Box<dyn Future<Output = io::Result<Moved>> + Send>>>,
    /// A write that failed while a late refusal may still explain it: kept
    /// until the read side knows.
    write_failed: Option<io::Error>,
    /// The writer, parked while `moving` or `write_failed` is settled.
    writer: Option<Waker>,
}

/// A move done: the new stream, and what is left to try.
struct Moved {
    stream: PodStream,
    endpoint: Endpoint,
    rest: Vec<Endpoint>,
    sent: Vec<u8>,
}

impl Failover {
    /// Opens a connection to the first of `endpoints` (in the order given)
    /// that takes it.
    pub(crate) async fn open(
        forwarder: Arc<Forwarder>,
        mut endpoints: Vec<Endpoint>,
        conn: u64,
    ) -> Result<Failover, NoEndpoint> {
        let (stream, i) = open_first(&forwarder, &endpoints, conn).await?;
        let rest = endpoints.split_off(i + 1);
        let endpoint = endpoints.swap_remove(i);
        let sent = (!rest.is_empty()).then(Vec::new);
        Ok(Failover {
            stream,
            endpoint,
            forwarder,
            rest,
            conn,
            sent,
            shut: false,
            heard: false,
            moving: None,
            write_failed: None,
            writer: None,
        })
    }

    /// The endpoint the connection goes to now.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether a FIN toward the pod is carried (else the relay must linger).
    pub(crate) fn carries_fin(&self) -> bool {
        self.stream.carries_fin()
    }

    /// Starts opening the next endpoint, to replay what the client sent there.
    fn start_moving(&mut self, refusal: &io::Error) {
        let (forwarder, rest, sent, shut, conn) = (
            self.forwarder.clone(),
            std::mem::take(&mut self.rest),
            self.sent.take().unwrap_or_default(),
            self.shut,
            self.conn,
        );
        tracing::warn!(
            conn,
            error = %refusal,
            replayed = sent.len(),
            "the pod's port refused after the client was answered; trying the next endpoint"
        );
        self.moving = Some(Box::pin(async move {
            let (mut stream, i) = open_first(&forwarder, &rest, conn)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, e.source))?;
            stream.write_all(&sent).await?;
            if shut {
                stream.shutdown().await?;
            }
            Ok(Moved { stream, endpoint: rest[i].clone(), rest: rest[i + 1..].to_vec(), sent })
        }));
    }

    /// The writer may go on: the move is over, or the pod has spoken.
    fn release_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
    }

    /// For writes while the outcome is open: park (`Pending`) until it is settled.
    fn park(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if self.moving.is_some() {
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if self.write_failed.is_some() {
            if self.sent.is_some() {
                self.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            return Poll::Ready(Err(self.write_failed.take().expect("checked")));
        }
        Poll::Ready(Ok(()))
    }

    /// A write error: kept for the read side to settle when a late refusal
    /// may be behind it, else returned.
    fn write_error(&mut self, e: io::Error, cx: &Context<'_>) -> Poll<io::Error> {
        if self.sent.is_some() {
            self.write_failed = Some(e);
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(e)
    }
}

/// Whether a read error of a pod stream says the pod's port refused it.
fn refusal(e: &io::Error, heard: bool) -> bool {
    let inner = e.get_ref();
    let refused = inner.and_then(|e| e.downcast_ref::<ForwardError>()).is_some_and(ForwardError::is_refused);
    let silent_reset =
        inner.and_then(|e| e.downcast_ref::<StreamError>()).is_some_and(|e| matches!(e, StreamError::Reset(_)));
    refused || (silent_reset && !heard)
}

impl AsyncRead for Failover {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some(moving) = this.moving.as_mut() {
                let moved = ready!(moving.as_mut().poll(cx));
                this.moving = None;
                this.write_failed = None;
                this.release_writer();
                let moved = moved?;
                (this.stream, this.endpoint, this.rest) = (moved.stream, moved.endpoint, moved.rest);
                this.sent = (!this.rest.is_empty()).then_some(moved.sent);
                continue;
            }
            let before = buf.filled().len();
            match ready!(Pin::new(&mut this.stream).poll_read(cx, buf)) {
                Ok(()) => {
                    // The pod has spoken (or ended): its connection stands.
                    if this.sent.take().is_some() {
                        this.release_writer();
                    }
                    if !this.heard && buf.filled().len() > before {
                        this.heard = true;
                        this.forwarder.took(&this.endpoint);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) => {
                    let refused = refusal(&e, this.heard);
                    if refused {
                        this.forwarder.refused(&this.endpoint);
                    }
                    // What the client sent can go to the next endpoint.
                    if refused && this.sent.is_some() {
                        this.start_moving(&e);
                        continue;
                    }
                    this.sent = None;
                    this.release_writer();
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl AsyncWrite for Failover {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.park(cx))?;
        let n = match ready!(Pin::new(&mut this.stream).poll_write(cx, buf)) {
            Ok(n) => n,
            Err(e) => return this.write_error(e, cx).map(Err),
        };
        if let Some(sent) = this.sent.as_mut() {
            if sent.len() + n <= REPLAY_LIMIT {
                sent.extend_from_slice(&buf[..n]);
            } else {
                this.sent = None;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.park(cx))?;
        match ready!(Pin::new(&mut this.stream).poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => this.write_error(e, cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.park(cx))?;
        match ready!(Pin::new(&mut this.stream).poll_shutdown(cx)) {
            Ok(()) => {
                this.shut = true;
                Poll::Ready(Ok(()))
            }
            Err(e) => this.write_error(e, cx).map(Err),
        }
    }
}
