//! The one task that owns a session's transport.
//!
//! It runs four loops concurrently and ends the session when the first one
//! stops, with that loop's reason: the reader (decodes frames and dispatches
//! them), the writer (sends queued control frames before queued DATA), the
//! keepalive (PINGs a peer gone silent) and the close timer (gives a GOAWAY a moment
//! to leave, then ends even if the transport is stuck).
//!
//! Flow control: SPDY/3.1 gives each stream, and the session, a 64 KiB send
//! window that the receiver widens with WINDOW_UPDATE. Kubernetes' peer
//! (moby/spdystream) never sends WINDOW_UPDATE and never checks windows, so a
//! sender that honours them stalls after 64 KiB. The writer therefore ignores
//! windows; memory stays bounded because writers wait for room in the write
//! queue. On the receiving side the reader stops reading the transport when a
//! stream's buffer and the session's receive budget are full (TCP then
//! pushes back on the peer; see `deliver`), and announces
//! consumed bytes with WINDOW_UPDATE, which is harmless to spdystream and
//! correct for a peer that does count.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::error::SessionError;
use crate::frame::{Decoder, Encoder, Frame, RstStatus};
use crate::state::{Shared, Stalled};

/// Bytes read from the transport at a time.
const READ_CHUNK: usize = 16 << 10;
/// DATA bytes the writer sends in one go (at least one frame).
const WRITE_BATCH: usize = 64 << 10;
/// Control frames the peer can make us queue (PING echoes, refusals) before
/// the reader waits for the writer.
const MAX_CONTROL_QUEUE: usize = 256;
/// DATA written after a keepalive PING that makes it an upload's (see
/// `keepalive_loop`): more than a request, less than a second of a slow link.
const BULK: u64 = 256 << 10;
/// How long a GOAWAY from [`close`](crate::Session::close) may take to leave.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

pub(crate) async fn run<T>(shared: Arc<Shared>, io: T)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let reason = tokio::select! {
        reason = read_loop(&shared, reader) => reason,
        reason = write_loop(&shared, writer) => reason,
        reason = keepalive_loop(&shared) => reason,
        reason = close_timer(&shared) => reason,
    };
    shared.finish(reason);
}

async fn read_loop<R: AsyncRead + Unpin>(shared: &Shared, mut io: R) -> SessionError {
    let mut decoder = Decoder::new(shared.config.limits);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => dispatch(shared, frame).await,
                Ok(None) => break,
                Err(e) => return SessionError::Protocol(e),
            }
        }
        buf.reserve(READ_CHUNK);
        match io.read_buf(&mut (&mut buf).limit(READ_CHUNK)).await {
            Ok(0) => return shared.lock().going_away.clone().unwrap_or(SessionError::PeerClosed),
            Ok(_) => shared.lock().last_read = Instant::now(),
            Err(e) => return SessionError::Io(Arc::new(e)),
        }
    }
}

async fn dispatch(shared: &Shared, frame: Frame) {
    match frame {
        Frame::Data { stream_id, fin, data } => deliver(shared, stream_id, fin, data).await,
        Frame::SynReply { stream_id, fin, headers } => {
            let mut state = shared.lock();
            if let Some(stream) = state.streams.get_mut(&stream_id) {
                stream.reply.get_or_insert(headers);
                stream.remote_fin |= fin;
                stream.wake();
            }
        }
        Frame::Headers { stream_id, fin, .. } => {
            let mut state = shared.lock();
            if let Some(stream) = state.streams.get_mut(&stream_id).filter(|_| fin) {
                stream.remote_fin = true;
                stream.wake();
            }
        }
        Frame::RstStream { stream_id, status } => shared.peer_reset(stream_id, status),
        Frame::SynStream { stream_id, .. } => {
            debug!(stream_id, "refusing a SPDY stream opened by the peer");
            queue_control(shared, Frame::RstStream { stream_id, status: RstStatus::RefusedStream }).await;
        }
        Frame::Ping { id } if id % 2 == 0 => queue_control(shared, Frame::Ping { id }).await,
        Frame::Ping { id } => {
            let mut state = shared.lock();
            if let Some(ping) = state.pings.remove(&id) {
                let rtt = ping.sent.elapsed();
                state.rtt = Some(rtt);
                // The asker may have given up; the figure is kept anyway.
                let _ = ping.reply.send(rtt);
            }
        }
        Frame::GoAway { last_good_stream_id, status } => shared.peer_going_away(last_good_stream_id, status),
        Frame::Settings { settings, .. } => debug!(?settings, "SPDY peer sent SETTINGS (ignored)"),
        Frame::WindowUpdate { .. } => {}
    }
}

/// Hands DATA to its stream. A stream buffers up to its
/// `stream_receive_buffer`, and beyond that while the session's
/// `session_receive_budget` lasts. Past both, the reader waits for the
/// stream's reader to take some, which holds up every stream of the session;
/// so a stream holding up the others whose reader took nothing for
/// `holdup_timeout` (`stall_timeout` when no other stream is in use) is
/// reset instead.
async fn deliver(shared: &Shared, stream_id: u32, fin: bool, data: Bytes) {
    let config = &shared.config;
    let limit = config.stream_receive_buffer;
    loop {
        let recheck_at = {
            let mut state = shared.lock();
            let Some(stream) = state.streams.get(&stream_id) else {
                trace!(stream_id, "DATA for a closed SPDY stream dropped");
                return;
            };
            if stream.reset.is_some() || stream.remote_fin {
                trace!(stream_id, "DATA after the end of a SPDY stream dropped");
                return;
            }
            let held = stream.recv.len();
            let more_over_limit = (held + data.len()).saturating_sub(limit) - held.saturating_sub(limit);
            // Only a stream past its own buffer pays for a look at the others'.
            let over_limit = || state.streams.values().map(|s| s.recv.len().saturating_sub(limit)).sum::<usize>();
            let fits =
                held == 0 || more_over_limit == 0 || over_limit() + more_over_limit <= config.session_receive_budget;
            if fits && let Some(stream) = state.streams.get_mut(&stream_id) {
                if held == 0 {
                    // The reader has had nothing to take until now.
                    stream.last_taken = Instant::now();
                }
                stream.recv.extend_from_slice(&data);
                stream.carried_data |= !data.is_empty();
                stream.remote_fin = fin;
                stream.wake();
                state.reader_paused = false;
                return;
            }
            match shared.reset_stalled(&mut state, stream_id) {
                Stalled::Reset => {
                    drop(state);
                    shared.writer_wake.notify_one();
                    continue;
                }
                Stalled::NotBefore(at) => {
                    if !state.reader_paused {
                        state.reader_paused = true;
                        state.pauses += 1;
                        trace!(stream_id, "SPDY receive budget spent: pausing the transport reader");
                    }
                    at
                }
            }
        };
        tokio::select! {
            _ = shared.reader_wake.notified() => {}
            _ = tokio::time::sleep_until(recheck_at) => {}
        }
    }
}

async fn queue_control(shared: &Shared, frame: Frame) {
    loop {
        {
            let mut state = shared.lock();
            if state.control.len() < MAX_CONTROL_QUEUE {
                state.control.push_back(frame);
                drop(state);
                shared.writer_wake.notify_one();
                return;
            }
        }
        shared.control_drained.notified().await;
    }
}

/// What the writer took from the queues in one go.
#[derive(Default)]
struct Batch {
    frames: Vec<Frame>,
    /// (stream, bytes, fin) for each DATA frame, to account for once written.
    data: Vec<(u32, usize, bool)>,
    goaway: bool,
}

async fn write_loop<W: AsyncWrite + Unpin>(shared: &Shared, mut io: W) -> SessionError {
    let mut encoder = match Encoder::new() {
        Ok(encoder) => encoder,
        Err(e) => return SessionError::Protocol(e),
    };
    let mut out = BytesMut::with_capacity(WRITE_BATCH + 1024);
    loop {
        let batch = take_batch(shared);
        if batch.frames.is_empty() {
            shared.writer_wake.notified().await;
            continue;
        }
        out.clear();
        for frame in &batch.frames {
            // Frames are built valid; an error here is a bug, reported rather than sent.
            if let Err(e) = encoder.encode(frame, &mut out) {
                return SessionError::Protocol(e);
            }
        }
        if let Err(e) = async {
            io.write_all(&out).await?;
            io.flush().await
        }
        .await
        {
            return SessionError::Io(Arc::new(e));
        }
        written(shared, &batch);
        if batch.goaway {
            let _ = io.shutdown().await;
            return SessionError::Closed;
        }
    }
}

fn take_batch(shared: &Shared) -> Batch {
    let mut state = shared.lock();
    let state = &mut *state;
    let mut batch = Batch::default();
    batch.frames.extend(state.control.drain(..));
    batch.goaway = batch.frames.iter().any(|f| matches!(f, Frame::GoAway { .. }));
    while let Some(stream_id) = state.window_updates.pop_front() {
        let delta = if stream_id == 0 {
            state.session_update_queued = false;
            std::mem::take(&mut state.session_credit)
        } else if let Some(stream) = state.streams.get_mut(&stream_id) {
            stream.update_queued = false;
            std::mem::take(&mut stream.credit)
        } else {
            0
        };
        if delta > 0 {
            batch.frames.push(Frame::WindowUpdate { stream_id, delta: delta.min(0x7fff_ffff) });
        }
    }
    let mut bytes = 0;
    while bytes < WRITE_BATCH
        && let Some(out) = state.data.pop_front()
    {
        bytes += out.data.len();
        batch.data.push((out.stream_id, out.data.len(), out.fin));
        batch.frames.push(Frame::Data { stream_id: out.stream_id, fin: out.fin, data: out.data });
    }
    if !batch.frames.is_empty() {
        shared.control_drained.notify_one();
    }
    batch
}

/// Accounts for DATA that reached the transport and wakes who waited for it.
fn written(shared: &Shared, batch: &Batch) {
    if batch.data.is_empty() {
        return;
    }
    let mut state = shared.lock();
    for &(stream_id, len, fin) in &batch.data {
        state.data_queued = state.data_queued.saturating_sub(len);
        state.data_written += len as u64;
        if let Some(stream) = state.streams.get_mut(&stream_id) {
            stream.unsent = stream.unsent.saturating_sub(len);
            stream.fin_written |= fin;
        }
    }
    // Room was made in the queue: every waiting writer may go on.
    for stream in state.streams.values_mut() {
        if let Some(waker) = stream.write_waker.take() {
            waker.wake();
        }
    }
}

/// Finds a dead path. A peer that has been silent for a while (the
/// keepalive when idle, [`Config::active_keepalive`] while streams are open)
/// gets a PING; if neither its answer nor anything else arrives within the
/// timeout, the session ends. Anything read proves the path alive, so a busy
/// session sends no PINGs, and a PING's answer stuck behind a download is
/// never mistaken for silence. While the reader is paused (a stream's reader
/// is slow), the peer's bytes wait unread, so nothing counts.
///
/// An upload is the other way round: the peer may say nothing back, and the
/// PING waits behind the data the kernel holds and, at the kubelet, behind
/// the pod's slow reading. Once more than [`BULK`] was written after a PING,
/// its answer gets the idle timeout, so a busy upload is not taken for a
/// dead path (a dead one is then found that much later).
///
/// [`Config::active_keepalive`]: crate::Config::active_keepalive
async fn keepalive_loop(shared: &Shared) -> SessionError {
    let config = &shared.config;
    let Some(idle) = config.keepalive else {
        return std::future::pending().await;
    };
    // Fine enough to keep the promise of the shorter interval.
    let tick = (config.active_keepalive.min(idle) / 4).max(Duration::from_millis(10));
    // A PING sent: when, the reader's pauses then, the DATA written by
    // then, and whether it answers a check (`Session::check`).
    let mut outstanding: Option<(Instant, u64, u64, bool)> = None;
    loop {
        tokio::time::sleep(tick).await;
        let (last_read, paused, pauses, active, written, check) = {
            let mut state = shared.lock();
            let check = std::mem::take(&mut state.check_requested);
            (state.last_read, state.reader_paused, state.pauses, !state.streams.is_empty(), state.data_written, check)
        };
        if paused {
            outstanding = None;
            continue;
        }
        if let Some((.., checking)) = &mut outstanding {
            *checking |= check;
        }
        // The timeout is the one for the session as it is now: a PING sent
        // while idle is waited for no longer than an active one once a
        // connection comes (as on waking from sleep, when the first
        // connection finds its session silent), or when it was checked.
        let (silence, timeout) =
            if active { (config.active_keepalive, config.active_ping_timeout) } else { (idle, config.ping_timeout) };
        match outstanding {
            Some((sent, at_pauses, ..)) if last_read >= sent || pauses != at_pauses => outstanding = None,
            Some((sent, _, at_written, checking)) => {
                let timeout = if checking { config.active_ping_timeout } else { timeout };
                let timeout = if written - at_written > BULK { timeout.max(config.ping_timeout) } else { timeout };
                if sent.elapsed() >= timeout {
                    return SessionError::KeepaliveTimeout(timeout);
                }
            }
            None if check || last_read.elapsed() >= silence => {
                // The answer is counted as a read; the RTT is recorded on arrival.
                if let Err(reason) = shared.send_ping() {
                    return reason;
                }
                outstanding = Some((Instant::now(), pauses, written, check));
            }
            None => {}
        }
    }
}

async fn close_timer(shared: &Shared) -> SessionError {
    shared.close_requested.notified().await;
    tokio::time::sleep(CLOSE_GRACE).await;
    SessionError::Closed
}
