//! The state a session's handles, its streams and its driver share.
//!
//! A [`Session`](crate::Session) or [`Stream`](crate::Stream) holds a
//! [`Handle`] on one [`Shared`]; the driver task (see `driver`), which owns
//! the transport, holds the [`Shared`] itself. Handles and streams only touch
//! the [`State`] under a short-lived lock and wake the driver through a
//! [`Notify`]; the driver does all I/O. Every queue in the state is bounded:
//! outgoing DATA by [`Config::write_queue`] (writers wait), incoming DATA per
//! stream by [`Config::stream_receive_buffer`] and, beyond that, per session
//! by [`Config::session_receive_budget`] (then the driver stops reading the
//! transport), control frames the peer provokes (PING replies, refusals) by
//! a fixed count. The frames the client itself queues (SYN_STREAM, RST_STREAM,
//! WINDOW_UPDATE) number at most a few per open stream.
//!
//! A module of its own, below `session`, `stream` and `driver`, so that all
//! three use it and none of them needs another's internals.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::config::Config;
use crate::error::{SessionError, StreamError};
use crate::frame::{Frame, GoAwayStatus, MAX_STREAM_ID, RstStatus};
use crate::headers::Headers;

/// Keeps the session open while a `Session` or `Stream` exists.
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
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
    /// Why the session ended, once it has.
    pub(crate) ended_tx: watch::Sender<Option<SessionError>>,
}

pub(crate) struct State {
    pub(crate) streams: HashMap<u32, StreamState>,
    /// The id `Session::open` gives the next stream (odd: client ids).
    pub(crate) next_stream_id: u32,
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
    /// When the transport last gave the reader bytes: the peer's latest sign of life.
    pub(crate) last_read: Instant,
    /// DATA bytes written to the transport so far.
    pub(crate) data_written: u64,
    /// [`Session::check`](crate::Session::check) was called.
    pub(crate) check_requested: bool,
}

impl State {
    /// Drops a stream's queued DATA and queues RST_STREAM CANCEL for it.
    pub(crate) fn cancel(&mut self, stream_id: u32) {
        let mut dropped = 0;
        self.data.retain(|out| {
            let keep = out.stream_id != stream_id;
            if !keep {
                dropped += out.data.len();
            }
            keep
        });
        self.data_queued = self.data_queued.saturating_sub(dropped);
        self.control.push_back(Frame::RstStream { stream_id, status: RstStatus::Cancel });
    }
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
    /// When the reader last took bytes (or the stream opened): a stream
    /// whose reader stopped is reset once it holds up the others.
    pub(crate) last_taken: Instant,
    /// DATA went either way: a connection in use, which a stalled
    /// neighbour would hold up (an error stream carries none).
    pub(crate) carried_data: bool,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            reply: None,
            recv: BytesMut::new(),
            credit: 0,
            update_queued: false,
            unsent: 0,
            remote_fin: false,
            local_fin: false,
            fin_written: false,
            reset: None,
            read_waker: None,
            write_waker: None,
            last_taken: Instant::now(),
            carried_data: false,
        }
    }
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

/// What [`Shared::reset_stalled`] did.
pub(crate) enum Stalled {
    /// It reset at least one stream.
    Reset,
    /// None has stalled yet; the first may have by then.
    NotBefore(Instant),
}

/// Announce consumed bytes once this many have accumulated.
const WINDOW_UPDATE_THRESHOLD: u32 = 32 << 10;

impl Shared {
    pub(crate) fn new(config: Config) -> Shared {
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
                last_read: Instant::now(),
                data_written: 0,
                check_requested: false,
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

    /// With the session's receive budget spent and `blocked` unable to take
    /// its DATA, resets the streams holding up the others (`blocked` itself,
    /// and those buffering beyond their own buffer) whose readers took
    /// nothing for [`Config::holdup_timeout`] (if another stream that carries
    /// data waits behind them) or [`Config::stall_timeout`] (if none does).
    /// Their buffers are freed, and RST_STREAM CANCEL queued (the caller
    /// wakes the writer).
    pub(crate) fn reset_stalled(&self, state: &mut State, blocked: u32) -> Stalled {
        let limit = self.config.stream_receive_buffer;
        let holding_up = |id: u32, stream: &StreamState| id == blocked || stream.recv.len() > limit;
        let others_wait = state
            .streams
            .iter()
            .any(|(&id, s)| !holding_up(id, s) && s.carried_data && s.reset.is_none() && !s.remote_fin);
        let timeout = if others_wait { self.config.holdup_timeout } else { self.config.stall_timeout };
        let now = Instant::now();
        let mut first_due: Option<Instant> = None;
        let mut reset = Vec::new();
        for (&id, stream) in state.streams.iter_mut() {
            if !holding_up(id, stream) || stream.reset.is_some() {
                continue;
            }
            let due = stream.last_taken + timeout;
            if due <= now {
                stream.reset = Some(StreamError::Stalled(timeout));
                stream.recv = BytesMut::new();
                stream.wake();
                reset.push(id);
            } else {
                first_due = Some(first_due.map_or(due, |d| d.min(due)));
            }
        }
        if reset.is_empty() {
            return Stalled::NotBefore(first_due.unwrap_or(now + timeout));
        }
        let others = state.streams.len() - reset.len();
        for &id in &reset {
            tracing::warn!(
                stream_id = id,
                other_streams = others,
                "SPDY stream reset: its reader took nothing for {timeout:?} while holding up the session"
            );
            state.cancel(id);
        }
        Stalled::Reset
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
