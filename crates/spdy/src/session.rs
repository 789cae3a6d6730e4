//! The client side of a multiplexed SPDY/3.1 session.
//!
//! A [`Session`] is a handle on state shared with one driver task (see
//! `driver`) that owns the transport. Handles and [`Stream`]s only touch that
//! state under a short-lived lock and wake the driver; the driver does all
//! I/O. Every queue in the state is bounded: outgoing DATA by
//! [`Config::write_queue`] (writers wait), incoming DATA per stream by
//! [`Config::stream_receive_buffer`] (the driver stops reading the transport),
//! control frames the peer provokes (PING replies, refusals) by a fixed count.
//! The frames the client itself queues (SYN_STREAM, RST_STREAM, WINDOW_UPDATE)
//! number at most a few per open stream.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::frame::{Frame, FrameError, GoAwayStatus, Limits, MAX_STREAM_ID, RstStatus};
use crate::headers::{Headers, encode_block};
use crate::stream::{Stream, StreamError};

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often to send a keepalive PING; `None` sends none.
    pub keepalive: Option<Duration>,
    /// How long a keepalive PING may go unanswered before the session is
    /// declared dead. Time spent not reading the transport (because a stream's
    /// reader is slow) does not count.
    pub ping_timeout: Duration,
    /// Bytes of received DATA buffered per stream before the session stops
    /// reading the transport until that stream's reader catches up.
    pub stream_receive_buffer: usize,
    /// Bytes of DATA queued for sending, all streams together, before writers wait.
    pub write_queue: usize,
    /// The largest DATA frame sent.
    pub max_data_frame: usize,
    /// Limits on what the peer may send.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keepalive: Some(Duration::from_secs(10)),
            ping_timeout: Duration::from_secs(20),
            stream_receive_buffer: 256 << 10,
            write_queue: 256 << 10,
            max_data_frame: 32 << 10,
            limits: Limits::default(),
        }
    }
}

/// Why a session ended, or why it cannot open a stream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing the transport failed.
    #[error("transport error: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The transport reached end-of-file.
    #[error("the peer closed the connection")]
    PeerClosed,
    /// The peer sent bytes that are not valid SPDY/3.1.
    #[error("protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The peer sent GOAWAY: it accepts no new streams.
    #[error("the peer sent GOAWAY ({status}, last accepted stream {last_good_stream_id})")]
    GoAway {
        /// The last stream the peer accepted.
        last_good_stream_id: u32,
        /// The reason it gave.
        status: GoAwayStatus,
    },
    /// A keepalive PING went unanswered.
    #[error("no reply to a keepalive PING within {0:?}")]
    KeepaliveTimeout(Duration),
    /// [`Session::close`] was called, or every handle was dropped.
    #[error("the session was closed")]
    Closed,
    /// All 2^30 client stream ids have been used.
    #[error("no stream ids left on this session")]
    StreamIdsExhausted,
    /// A header given to [`Session::open`] cannot be sent.
    #[error("invalid header for a new stream: {0}")]
    InvalidHeader(String),
}

/// A client SPDY/3.1 session. Cloning is cheap; the session closes (GOAWAY)
/// when the last clone and the last [`Stream`] are dropped.
#[derive(Clone)]
pub struct Session {
    handle: Arc<Handle>,
}

/// Keeps the session open while a `Session` or `Stream` exists.
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
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
        let mut ended = self.handle.shared.ended_tx.subscribe();
        let reason = match ended.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        reason.unwrap_or(SessionError::Closed)
    }

    /// Sends GOAWAY and ends the session; streams still open fail with
    /// [`SessionError::Closed`].
    pub fn close(&self) {
        self.handle.shared.close();
    }
}

/// State shared by the handles and the driver.
pub(crate) struct Shared {
    pub(crate) config: Config,
    state: Mutex<State>,
    /// Something was queued for the writer.
    pub(crate) writer_wake: Notify,
    /// A stream's reader consumed data or went away: a paused reader may go on.
    pub(crate) reader_wake: Notify,
    /// The writer took the queued control frames.
    pub(crate) control_drained: Notify,
    /// `close` was called.
    pub(crate) close_requested: Notify,
    ended_tx: watch::Sender<Option<SessionError>>,
}

pub(crate) struct State {
    pub(crate) streams: HashMap<u32, StreamState>,
    next_stream_id: u32,
    next_ping_id: u32,
    pub(crate) pings: HashMap<u32, PendingPing>,
    /// Control frames to send, before any DATA.
    pub(crate) control: VecDeque<Frame>,
    /// Streams (0: the session) with consumed bytes to announce in WINDOW_UPDATE.
    pub(crate) window_updates: VecDeque<u32>,
    pub(crate) session_credit: u32,
    pub(crate) session_update_queued: bool,
    pub(crate) data: VecDeque<Outgoing>,
    /// DATA bytes queued or being written.
    pub(crate) data_queued: usize,
    /// Set once no new stream may be opened (GOAWAY either way).
    pub(crate) going_away: Option<SessionError>,
    pub(crate) ended: Option<SessionError>,
    pub(crate) rtt: Option<Duration>,
    pub(crate) idle_since: Option<Instant>,
    /// The reader is waiting for a stream's buffer to drain.
    pub(crate) reader_paused: bool,
    /// How many times the reader paused, so keepalive can tell it happened.
    pub(crate) pauses: u64,
}

pub(crate) struct PendingPing {
    pub(crate) sent: Instant,
    pub(crate) reply: oneshot::Sender<Duration>,
}

/// A DATA frame waiting for the writer.
pub(crate) struct Outgoing {
    pub(crate) stream_id: u32,
    pub(crate) fin: bool,
    pub(crate) data: Bytes,
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) reply: Option<Headers>,
    /// Received DATA, copied out of the transport buffer so that it pins no
    /// more memory than its length.
    pub(crate) recv: BytesMut,
    /// Bytes consumed but not yet announced in a WINDOW_UPDATE.
    pub(crate) credit: u32,
    pub(crate) update_queued: bool,
    /// DATA bytes of this stream queued or being written.
    pub(crate) unsent: usize,
    pub(crate) remote_fin: bool,
    /// Our FIN is queued.
    pub(crate) local_fin: bool,
    pub(crate) fin_written: bool,
    pub(crate) reset: Option<StreamError>,
    /// The task waiting to read (or for the reply).
    pub(crate) read_waker: Option<Waker>,
    /// The task waiting to write, flush or shut down.
    pub(crate) write_waker: Option<Waker>,
}

impl StreamState {
    pub(crate) fn wake(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
        if let Some(waker) = self.write_waker.take() {
            waker.wake();
        }
    }
}

/// Announce consumed bytes once this many have accumulated.
const WINDOW_UPDATE_THRESHOLD: u32 = 32 << 10;

impl Shared {
    fn new(config: Config) -> Shared {
        Shared {
            config,
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_stream_id: 1,
                next_ping_id: 1,
                pings: HashMap::new(),
                control: VecDeque::new(),
                window_updates: VecDeque::new(),
                session_credit: 0,
                session_update_queued: false,
                data: VecDeque::new(),
                data_queued: 0,
                going_away: None,
                ended: None,
                rtt: None,
                idle_since: Some(Instant::now()),
                reader_paused: false,
                pauses: 0,
            }),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            control_drained: Notify::new(),
            close_requested: Notify::new(),
            ended_tx: watch::channel(None).0,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still consistent enough to end.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the session is unusable, once it is.
    pub(crate) fn end_reason(&self) -> SessionError {
        self.lock().ended.clone().unwrap_or(SessionError::Closed)
    }

    /// Queues a PING and returns where its echo will be announced.
    pub(crate) fn send_ping(&self) -> Result<oneshot::Receiver<Duration>, SessionError> {
        let mut state = self.lock();
        if let Some(reason) = &state.ended {
            return Err(reason.clone());
        }
        // Client PING ids are odd; skip any still in flight after wrapping.
        let id = loop {
            let id = state.next_ping_id;
            state.next_ping_id = if id >= MAX_STREAM_ID - 1 { 1 } else { id + 2 };
            if !state.pings.contains_key(&id) {
                break id;
            }
        };
        let (reply, received) = oneshot::channel();
        state.pings.insert(id, PendingPing { sent: Instant::now(), reply });
        state.control.push_back(Frame::Ping { id });
        drop(state);
        self.writer_wake.notify_one();
        Ok(received)
    }

    /// Records that a stream's reader consumed `n` bytes: maybe announce them,
    /// and let a paused transport reader go on.
    pub(crate) fn consumed(&self, state: &mut State, stream_id: u32, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut wake_writer = false;
        if let Some(stream) = state.streams.get_mut(&stream_id) {
            stream.credit = stream.credit.saturating_add(n);
            if stream.credit >= WINDOW_UPDATE_THRESHOLD && !stream.update_queued && !stream.remote_fin {
                stream.update_queued = true;
                state.window_updates.push_back(stream_id);
                wake_writer = true;
            }
        }
        state.session_credit = state.session_credit.saturating_add(n);
        if state.session_credit >= WINDOW_UPDATE_THRESHOLD && !state.session_update_queued {
            state.session_update_queued = true;
            state.window_updates.push_back(0);
            wake_writer = true;
        }
        if wake_writer {
            self.writer_wake.notify_one();
        }
        if state.reader_paused {
            self.reader_wake.notify_one();
        }
    }

    /// Queues GOAWAY; the driver ends the session once it is written.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        if state.ended.is_some() || matches!(state.going_away, Some(SessionError::Closed)) {
            return;
        }
        state.going_away = Some(SessionError::Closed);
        state.control.push_back(Frame::GoAway { last_good_stream_id: 0, status: GoAwayStatus::Ok });
        drop(state);
        self.writer_wake.notify_one();
        self.close_requested.notify_one();
    }

    /// Ends the session: fails what waits on it and announces the reason.
    pub(crate) fn finish(&self, reason: SessionError) {
        let mut state = self.lock();
        if state.ended.is_some() {
            return;
        }
        state.ended = Some(reason.clone());
        state.pings.clear();
        state.control.clear();
        state.window_updates.clear();
        state.data.clear();
        state.data_queued = 0;
        for stream in state.streams.values_mut() {
            stream.wake();
        }
        let active = state.streams.len();
        drop(state);
        match reason {
            SessionError::Closed => debug!(active_streams = active, "SPDY session closed"),
            SessionError::PeerClosed | SessionError::GoAway { .. } if active == 0 => {
                tracing::info!("idle SPDY session ended: {reason}")
            }
            _ => tracing::warn!(active_streams = active, "SPDY session broke: {reason}"),
        }
        self.ended_tx.send_replace(Some(reason));
    }

    /// Marks the streams the peer did not accept before its GOAWAY as failed.
    pub(crate) fn peer_going_away(&self, last_good_stream_id: u32, status: GoAwayStatus) {
        let mut state = self.lock();
        let reason = SessionError::GoAway { last_good_stream_id, status };
        tracing::info!("SPDY peer sent GOAWAY: {reason}");
        if !matches!(state.going_away, Some(SessionError::Closed)) {
            state.going_away = Some(reason);
        }
        for (&id, stream) in state.streams.iter_mut() {
            if id > last_good_stream_id && stream.reset.is_none() {
                stream.reset = Some(StreamError::GoneAway { last_good_stream_id });
                stream.wake();
            }
        }
    }

    /// A stream's RST_STREAM from the peer.
    pub(crate) fn peer_reset(&self, stream_id: u32, status: RstStatus) {
        let mut state = self.lock();
        if let Some(stream) = state.streams.get_mut(&stream_id) {
            debug!(stream_id, %status, "SPDY stream reset by the peer");
            stream.reset.get_or_insert(StreamError::Reset(status));
            stream.wake();
        }
    }
}
