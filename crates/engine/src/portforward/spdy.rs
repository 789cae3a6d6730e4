//! One forwarded connection on a SPDY session: the error stream and the
//! data stream client-go pairs (headers `streamtype`, `port`, `requestid`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use kubesocks_spdy::{Session, Stream, StreamError};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::oneshot;

use super::ForwardError;

/// The longest kubelet error message kept.
const MAX_ERROR: u64 = 16 * 1024;
/// After the data stream's SYN_REPLY, how long to wait for an error on top:
/// as long as that reply took, within these bounds. The kubelet dials the
/// pod as it replies, so on an idle path a refusal follows the reply within
/// a fraction of that; but under load the kubelet's dial lags as the reply
/// did, and a refusal that comes after the wait reaches the client as a
/// reset instead of a refusal and is not failed over (a quarter of the
/// reply's time let that happen in CI, and so did a 2 ms floor on a busy
/// 2-core machine, where a reply on loopback takes 1 to 3 ms).
const MIN_SETTLE: Duration = Duration::from_millis(10);
const MAX_SETTLE: Duration = Duration::from_millis(25);
/// When the data stream ends, how long its error stream may take to end too
/// (the kubelet closes both at once) before the end is taken as clean.
const ERROR_GRACE: Duration = Duration::from_millis(500);

/// A SPDY session and the request IDs of its connections.
pub(crate) struct Tunnel {
    pub(crate) session: Session,
    next_request: AtomicU64,
}

impl Tunnel {
    pub(crate) fn new(session: Session) -> Tunnel {
        Tunnel { session, next_request: AtomicU64::new(0) }
    }
}

/// The data stream of a connection; the error stream is watched by a task.
pub(crate) struct SpdyStream {
    data: Stream,
    /// The kubelet's message, if it reports one before the error stream
    /// ends; taken once it has come.
    error: Option<oneshot::Receiver<Option<String>>>,
    /// Set once the data stream has ended: waiting for the error stream.
    ending: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How the data stream ended, if it was reset: returned unless the
    /// kubelet says more.
    reset: Option<std::io::Error>,
}

/// Opens a connection to `port` on `tunnel`'s pod. With `settle`, waits
/// after the data stream's reply for the kubelet to report a refusal; without
/// (a port that took a connection lately: [`super::accepting`]), a refusal
/// already there is still reported, but none is waited for.
pub(crate) async fn open(tunnel: &Tunnel, port: u16, settle: bool) -> Result<SpdyStream, ForwardError> {
    let request = tunnel.next_request.fetch_add(1, Ordering::Relaxed).to_string();
    let port = port.to_string();
    let session_failed = |e: &dyn std::fmt::Display| ForwardError::Session(e.to_string());
    let headers = |kind| [("streamtype", kind), ("port", port.as_str()), ("requestid", request.as_str())];
    let mut error = tunnel.session.open(&headers("error")).map_err(|e| session_failed(&e))?;
    let mut data = tunnel.session.open(&headers("data")).map_err(|e| session_failed(&e))?;
    let started = Instant::now();
    // Nothing goes to the kubelet on the error stream (as client-go does).
    error.shutdown().await.map_err(|e| session_failed(&e))?;

    let settled = async {
        data.reply().await.map_err(|e| match e {
            StreamError::Reset(status) => ForwardError::Reset(status.to_string()),
            e => session_failed(&e),
        })?;
        if settle {
            tokio::time::sleep(started.elapsed().clamp(MIN_SETTLE, MAX_SETTLE)).await;
        }
        Ok::<_, ForwardError>(())
    };
    tokio::select! {
        biased;
        message = read_error(&mut error) => match message {
            Ok(Some(message)) => return Err(ForwardError::Kubelet(message)),
            // The error stream ended without a word: the connection is over already.
            Ok(None) => return Err(ForwardError::Session("the kubelet closed the connection at once".into())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !tunnel.session.is_closed() => {
                return Err(ForwardError::Reset(e.to_string()));
            }
            Err(e) => return Err(session_failed(&e)),
        },
        settled = settled => if let Err(failed) = settled {
            // The kubelet resets the data stream right after writing why to
            // the error stream, and the reset can overtake the reply: the
            // message is still on its way.
            return match tokio::time::timeout(ERROR_GRACE, read_error(&mut error)).await {
                Ok(Ok(Some(message))) => Err(ForwardError::Kubelet(message)),
                _ => Err(failed),
            };
        },
    }
    let (tell, told) = oneshot::channel();
    tokio::spawn(async move {
        let _ = tell.send(read_error(&mut error).await.ok().flatten());
    });
    Ok(SpdyStream { data, error: Some(told), ending: None, reset: None })
}

/// Reads the error stream to its end: the kubelet's message, if any. The
/// kubelet resets both streams right after writing a message, so a reset
/// after some text still means "this is the message".
async fn read_error(error: &mut Stream) -> std::io::Result<Option<String>> {
    let mut text = Vec::new();
    let read = (&mut *error).take(MAX_ERROR).read_to_end(&mut text).await;
    match read {
        Err(e) if text.is_empty() => Err(e),
        _ => Ok((!text.is_empty()).then(|| String::from_utf8_lossy(&text).trim().to_string())),
    }
}

impl AsyncRead for SpdyStream {
    /// The pod's bytes; at the end, the kubelet's message as an error
    /// ([`ForwardError::Kubelet`] inside a `ConnectionReset`) if it wrote
    /// one, so that [`crate::dial::failover::Failover`] can tell a late refusal
    /// from other failures.
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.ending.is_none() {
            let before = buf.filled().len();
            match ready!(Pin::new(&mut this.data).poll_read(cx, buf)) {
                Ok(()) if buf.filled().len() > before => return Poll::Ready(Ok(())),
                Ok(()) => {}
                // The kubelet resets the data stream right after writing why
                // to the error stream (see `open`): its message says more.
                Err(e) => this.reset = Some(e),
            }
            this.ending = Some(Box::pin(tokio::time::sleep(ERROR_GRACE)));
        }
        // The data stream ended: a clean end only if the kubelet reported no
        // error and did not reset it.
        let reported = match this.error.as_mut().map(|error| Pin::new(error).poll(cx)) {
            Some(Poll::Ready(told)) => {
                this.error = None;
                told.ok().flatten()
            }
            None => None,
            Some(Poll::Pending) => match this.ending.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => None,
                _ => return Poll::Pending,
            },
        };
        Poll::Ready(match (reported, this.reset.take()) {
            (Some(message), _) => {
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, ForwardError::Kubelet(message)))
            }
            (None, Some(reset)) => Err(reset),
            (None, None) => Ok(()),
        })
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.data).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_flush(cx)
    }
    /// The client's FIN: the data stream's FIN.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.data).poll_shutdown(cx)
    }
}

use std::future::Future as _;
