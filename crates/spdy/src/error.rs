//! How sessions and streams fail: [`SessionError`] and [`StreamError`].
//!
//! Both are recorded in the state shared by a session's handles, its streams
//! and its driver, and each of those reports them, so they live below all of
//! them. A stream's error can carry its session's, and a stream's error
//! becomes an [`io::Error`] of kind [`io::ErrorKind::ConnectionReset`], so a
//! stream that was cut never passes for one that ended cleanly.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::{FrameError, GoAwayStatus, RstStatus};

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
    /// [`Session::close`](crate::Session::close) was called, or every handle was dropped.
    #[error("the session was closed")]
    Closed,
    /// All 2^30 client stream ids have been used.
    #[error("no stream ids left on this session")]
    StreamIdsExhausted,
    /// A header given to [`Session::open`](crate::Session::open) cannot be sent.
    #[error("invalid header for a new stream: {0}")]
    InvalidHeader(String),
}

/// Why a stream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The peer sent RST_STREAM.
    #[error("stream reset by the peer ({0})")]
    Reset(RstStatus),
    /// The peer sent GOAWAY without having accepted this stream.
    #[error("stream not accepted: the peer sent GOAWAY after stream {last_good_stream_id}")]
    GoneAway {
        /// The last stream the peer accepted.
        last_good_stream_id: u32,
    },
    /// Its reader took nothing for this long (see
    /// [`Config::holdup_timeout`]) while the session's receive budget was
    /// spent, holding up the session: the session reset it.
    ///
    /// [`Config::holdup_timeout`]: crate::Config::holdup_timeout
    #[error("stream reset: its reader took nothing for {0:?} while the session waited for it")]
    Stalled(Duration),
    /// The session ended before the stream did.
    #[error("SPDY session ended: {0}")]
    Session(SessionError),
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}
