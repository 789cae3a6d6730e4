//! The tunables of a session, [`Config`].
//!
//! A module of its own because [`Session::client`](crate::Session::client)
//! takes it and the shared state (see `state`) keeps it for the driver and
//! the streams to read: kept in `session`, it would make `state` depend on
//! `session`, which depends on `state`.

use std::time::Duration;

use crate::frame::Limits;

/// Tunables of a session.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long an idle session (no open stream) may hear nothing from the
    /// peer before it sends a keepalive PING; `None` sends none, idle or not.
    pub keepalive: Option<Duration>,
    /// How long a keepalive PING of an idle session may go unanswered (with
    /// nothing else heard either) before the session is declared dead. Time
    /// spent not reading the transport (because a stream's reader is slow)
    /// does not count.
    pub ping_timeout: Duration,
    /// How long a session with open streams may hear nothing before it sends
    /// a PING: the streams' clients are waiting, so a dead path must be found
    /// in seconds.
    pub active_keepalive: Duration,
    /// How long that PING may go unanswered, with nothing else heard. While
    /// the session uploads (more than 256 KiB written since the PING), its
    /// answer may wait behind that data, and `ping_timeout` applies instead.
    pub active_ping_timeout: Duration,
    /// Bytes of received DATA a stream buffers for its reader.
    pub stream_receive_buffer: usize,
    /// Bytes of received DATA the session's streams may buffer beyond their
    /// own `stream_receive_buffer`, all of them together. Only once it is
    /// spent does a stream's slow reader make the session stop reading the
    /// transport (which holds up its other streams), so a reader that stops
    /// for a moment costs the others nothing.
    pub session_receive_budget: usize,
    /// Once that budget is spent, a stream whose reader has taken nothing for
    /// this long while the session's other streams wait behind it (any that
    /// has carried DATA either way) is reset (RST_STREAM CANCEL; its reader
    /// gets [`StreamError::Stalled`](crate::StreamError::Stalled)), so that
    /// they go on. Short: the others' clients are waiting.
    pub holdup_timeout: Duration,
    /// The same for a stream that holds up no other (the session's other
    /// streams have carried nothing, as port-forward's error streams): its
    /// client may pause longer. Bounded all the same, because a session
    /// whose reader waits hears no keepalive answers either.
    pub stall_timeout: Duration,
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
            active_keepalive: Duration::from_secs(1),
            active_ping_timeout: Duration::from_secs(2),
            stream_receive_buffer: 256 << 10,
            session_receive_budget: 4 << 20,
            holdup_timeout: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(30),
            write_queue: 256 << 10,
            max_data_frame: 32 << 10,
            limits: Limits::default(),
        }
    }
}
