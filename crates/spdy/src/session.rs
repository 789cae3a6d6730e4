//! The client side of a multiplexed SPDY/3.1 session: [`Session`].
//!
//! A [`Session`] is a handle on the state (see `state`) it shares with its
//! [`Stream`]s and with one driver task (see `driver`) that owns the
//! transport. It starts the driver, opens streams by queueing their
//! SYN_STREAM, sends PINGs and closes the session; the driver does all I/O.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use crate::config::Config;
use crate::error::SessionError;
use crate::frame::{Frame, MAX_STREAM_ID};
use crate::headers::{Headers, encode_block};
use crate::state::{Handle, Shared, StreamState};
use crate::stream::Stream;

/// A client SPDY/3.1 session. Cloning is cheap; the session closes (GOAWAY)
/// when the last clone and the last [`Stream`] are dropped.
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

/// Connection-level headers that HTTP/1.1 uses and SPDY forbids; spdystream
/// drops the whole session when a SYN_STREAM carries one.
const FORBIDDEN_HEADERS: [&str; 5] = ["connection", "host", "keep-alive", "proxy-connection", "transfer-encoding"];

impl Session {
    /// Starts a client session over `io` (an upgraded HTTP connection, for
    /// instance) and spawns its driver task on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn client<T>(io: T, config: Config) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared::new(config));
        tokio::spawn(crate::driver::run(shared.clone(), io));
        Session { handle: Arc::new(Handle { shared }) }
    }

    /// Opens a stream: queues its SYN_STREAM at once and returns without
    /// waiting for the peer, so several streams can be opened back to back;
    /// [`Stream::reply`] waits for the answer. Header names are lowercased.
    pub fn open(&self, headers: &[(&str, &str)]) -> Result<Stream, SessionError> {
        let headers: Headers = headers.iter().copied().collect();
        if let Some((name, _)) = headers.iter().find(|(name, _)| FORBIDDEN_HEADERS.contains(name)) {
            return Err(SessionError::InvalidHeader(format!("{name:?} is not allowed in SPDY")));
        }
        encode_block(&headers).map_err(|e| SessionError::InvalidHeader(e.to_string()))?;

        let shared = &self.handle.shared;
        let mut state = shared.lock();
        if let Some(reason) = state.ended.clone().or_else(|| state.going_away.clone()) {
            return Err(reason);
        }
        let stream_id = state.next_stream_id;
        if stream_id > MAX_STREAM_ID {
            return Err(SessionError::StreamIdsExhausted);
        }
        state.next_stream_id += 2;
        state.streams.insert(stream_id, StreamState::default());
        state.idle_since = None;
        state.control.push_back(Frame::SynStream {
            stream_id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        });
        drop(state);
        shared.writer_wake.notify_one();
        debug!(stream_id, "opened SPDY stream");
        Ok(Stream::new(self.handle.clone(), stream_id))
    }

    /// Sends a PING and waits for its echo; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, SessionError> {
        let shared = &self.handle.shared;
        let reply = shared.send_ping()?;
        reply.await.map_err(|_| shared.end_reason())
    }

    /// The latest PING round-trip time measured, if any.
    pub fn rtt(&self) -> Option<Duration> {
        self.handle.shared.lock().rtt
    }

    /// The number of streams whose handles are alive.
    pub fn active_streams(&self) -> usize {
        self.handle.shared.lock().streams.len()
    }

    /// Proves the path alive now rather than at the next keepalive: unless
    /// the peer is heard from anyway, a PING goes out within a quarter of
    /// [`Config::active_keepalive`], and the session ends with
    /// [`SessionError::KeepaliveTimeout`] if it is not answered within
    /// [`Config::active_ping_timeout`] (its streams fail as on any break).
    /// For when the path may have died: the network changed, the machine
    /// woke from sleep, or another session to the same cluster broke. Does
    /// nothing without keepalive.
    ///
    /// [`Config::active_keepalive`]: crate::Config::active_keepalive
    /// [`Config::active_ping_timeout`]: crate::Config::active_ping_timeout
    pub fn check(&self) {
        self.handle.shared.lock().check_requested = true;
    }

    /// Whether the session's reader is paused: a stream's receive buffer and
    /// the session's receive budget are full because a reader is slow, and
    /// until that reader reads (or its stream is reset as stalled), no
    /// frame of any stream on this session is read (the peer does not widen
    /// windows, so this is the only back-pressure there is). A pool should
    /// open new streams on another session meanwhile.
    pub fn is_paused(&self) -> bool {
        self.handle.shared.lock().reader_paused
    }

    /// Since when the session has had no stream, or `None` while it has some.
    /// A pool closes sessions idle for too long.
    pub fn idle_since(&self) -> Option<Instant> {
        self.handle.shared.lock().idle_since
    }

    /// True once [`open`](Session::open) can no longer succeed: the session
    /// ended, was closed, or the peer sent GOAWAY.
    pub fn is_closed(&self) -> bool {
        let state = self.handle.shared.lock();
        state.ended.is_some() || state.going_away.is_some()
    }

    /// Waits until the session has ended and returns why.
    pub async fn closed(&self) -> SessionError {
        self.ended().await
    }

    /// Resolves when the session has ended, with why, like
    /// [`closed`](Session::closed); but the future holds no handle, so it
    /// does not keep the session open. A task that only reports the end of
    /// a session waits on this, and the session still closes once its last
    /// user is gone.
    pub fn ended(&self) -> impl Future<Output = SessionError> + Send + 'static {
        let mut ended = self.handle.shared.ended_tx.subscribe();
        async move {
            let reason = match ended.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            reason.unwrap_or(SessionError::Closed)
        }
    }

    /// Sends GOAWAY and ends the session; streams still open fail with
    /// [`SessionError::Closed`].
    pub fn close(&self) {
        self.handle.shared.close();
    }
}
