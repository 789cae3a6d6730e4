//! One SPDY stream as a byte pipe.
//!
//! [`Stream`] implements [`AsyncRead`] and [`AsyncWrite`] on top of the
//! session's shared state: reads take from the stream's receive buffer,
//! writes append DATA frames to the session's write queue. The one rule a
//! proxy relies on: a stream that did not end with the peer's FIN never reads
//! as a clean end-of-file. A reset stream, or one cut off because the session
//! broke, fails reads and writes with [`io::ErrorKind::ConnectionReset`]
//! carrying a [`StreamError`] that says why.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use crate::error::{SessionError, StreamError};
use crate::headers::Headers;
use crate::state::{Handle, Outgoing, State, StreamState};

/// An emptied receive buffer larger than this is freed.
const RELEASE_ABOVE: usize = 64 << 10;

/// A stream opened by [`Session::open`](crate::Session::open).
///
/// Dropping it before both directions have finished (our
/// [`shutdown`](tokio::io::AsyncWriteExt::shutdown) and the peer's FIN) sends
/// RST_STREAM CANCEL.
pub struct Stream {
    handle: Arc<Handle>,
    id: u32,
}

impl Stream {
    pub(crate) fn new(handle: Arc<Handle>, id: u32) -> Stream {
        Stream { handle, id }
    }

    /// The stream id (odd: the client opened it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Waits for the peer's SYN_REPLY and returns its headers (again on later
    /// calls). A peer that never answers leaves this waiting, so callers bound
    /// it with a timeout (client-go waits 30 s).
    pub async fn reply(&mut self) -> Result<Headers, StreamError> {
        poll_fn(|cx| {
            let shared = &self.handle.shared;
            let mut guard = shared.lock();
            let ended = guard.ended.clone();
            let stream = match stream_state(&mut guard, self.id) {
                Ok(stream) => stream,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if let Some(headers) = &stream.reply {
                return Poll::Ready(Ok(headers.clone()));
            }
            if let Some(e) = failure(stream, ended) {
                return Poll::Ready(Err(e));
            }
            stream.read_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

fn stream_state(state: &mut State, id: u32) -> Result<&mut StreamState, StreamError> {
    // A handle's state lives until the handle drops; a miss would be a bug, not a panic.
    state.streams.get_mut(&id).ok_or(StreamError::Session(SessionError::Closed))
}

/// Why the stream cannot go on, if it cannot.
fn failure(stream: &StreamState, ended: Option<SessionError>) -> Option<StreamError> {
    stream.reset.clone().or_else(|| ended.map(StreamError::Session))
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let shared = &self.handle.shared;
        let mut guard = shared.lock();
        let ended = guard.ended.clone();
        let stream = stream_state(&mut guard, self.id)?;
        if !stream.recv.is_empty() {
            let n = stream.recv.len().min(buf.remaining());
            buf.put_slice(&stream.recv[..n]);
            stream.recv.advance(n);
            stream.last_taken = Instant::now();
            if stream.recv.is_empty() && stream.recv.capacity() > RELEASE_ABOVE {
                // A burst is over: give the memory back rather than keep it per idle stream.
                stream.recv = BytesMut::new();
            }
            shared.consumed(&mut guard, self.id, n);
            return Poll::Ready(Ok(()));
        }
        if stream.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = failure(stream, ended) {
            return Poll::Ready(Err(e.into()));
        }
        stream.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let shared = &self.handle.shared;
        let mut guard = shared.lock();
        let ended = guard.ended.clone();
        let room = shared.config.write_queue.saturating_sub(guard.data_queued);
        let paused = guard.reader_paused;
        let state = &mut *guard;
        let stream = stream_state(state, self.id)?;
        if let Some(e) = failure(stream, ended) {
            return Poll::Ready(Err(e.into()));
        }
        if stream.local_fin {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "write after shutdown")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if room == 0 {
            stream.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(room).min(shared.config.max_data_frame.max(1));
        // A reader paused behind a stalled neighbour now has one more stream
        // waiting, which shortens how long the neighbour may stall.
        let rejudge = !stream.carried_data && paused;
        stream.carried_data = true;
        stream.unsent += n;
        state.data.push_back(Outgoing { stream_id: self.id, fin: false, data: Bytes::copy_from_slice(&buf[..n]) });
        state.data_queued += n;
        drop(guard);
        shared.writer_wake.notify_one();
        if rejudge {
            shared.reader_wake.notify_one();
        }
        Poll::Ready(Ok(n))
    }

    /// Waits until this stream's queued DATA has been written to the transport.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = self.handle.shared.lock();
        let ended = guard.ended.clone();
        let stream = stream_state(&mut guard, self.id)?;
        if stream.unsent == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = failure(stream, ended) {
            return Poll::Ready(Err(e.into()));
        }
        stream.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends FIN (an empty DATA frame with FLAG_FIN) and waits until it is
    /// written. Reading goes on until the peer's FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &self.handle.shared;
        let mut guard = shared.lock();
        let ended = guard.ended.clone();
        let state = &mut *guard;
        let stream = stream_state(state, self.id)?;
        if stream.fin_written {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = failure(stream, ended) {
            return Poll::Ready(Err(e.into()));
        }
        stream.write_waker = Some(cx.waker().clone());
        if !stream.local_fin {
            stream.local_fin = true;
            state.data.push_back(Outgoing { stream_id: self.id, fin: true, data: Bytes::new() });
            drop(guard);
            shared.writer_wake.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        let mut guard = shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.remove(&self.id) else { return };
        let finished = stream.local_fin && stream.remote_fin;
        let cancel = !finished && stream.reset.is_none() && state.ended.is_none();
        if cancel {
            state.cancel(self.id);
        }
        if state.streams.is_empty() {
            state.idle_since = Some(Instant::now());
        }
        let paused = state.reader_paused;
        drop(guard);
        if cancel {
            shared.writer_wake.notify_one();
        }
        if paused {
            shared.reader_wake.notify_one();
        }
        let outcome = match (&stream.reset, finished, cancel) {
            (Some(e), _, _) => e.to_string(),
            (None, true, _) => "finished".to_owned(),
            (None, false, true) => "cancelled (RST_STREAM sent)".to_owned(),
            (None, false, false) => "session ended".to_owned(),
        };
        debug!(stream_id = self.id, %outcome, "closed SPDY stream");
    }
}
