//! SPDY/3.1 client sessions, as Kubernetes port-forward speaks them.
//!
//! `kubectl port-forward` does not open one connection per forwarded TCP
//! connection. It upgrades one HTTP connection to the API server's
//! `pods/{name}/portforward` into a SPDY/3.1 session (`Upgrade: SPDY/3.1`
//! with `X-Stream-Protocol-Version: portforward.k8s.io`, or the same bytes
//! tunnelled over a WebSocket, `SPDY/3.1+portforward.k8s.io`), which the API
//! server relays to the kubelet. Every forwarded connection then opens two
//! streams on that session, both carrying the headers `streamtype`, `port`
//! and `requestid`:
//!
//! * `streamtype: error`: the kubelet writes a message there if forwarding
//!   fails; the client half-closes it at once and reads it to the end.
//! * `streamtype: data`: the bytes of the TCP connection, both ways.
//!
//! The kubelet pairs the two by `requestid` and connects to `port` in the pod
//! once it has both.
//!
//! # Design
//!
//! * [`frame`] is the wire format: every SPDY/3.1 frame, an [`frame::Encoder`]
//!   and an incremental [`frame::Decoder`], header blocks compressed with the
//!   SPDY/3 zlib dictionary, one compression context per direction.
//! * [`Session`] is the client side of a session: one driver task owns the
//!   transport and does all reading and writing; [`Session::open`] queues a
//!   SYN_STREAM and returns a [`Stream`] at once (no round trip), which is an
//!   [`AsyncRead`](tokio::io::AsyncRead) + [`AsyncWrite`](tokio::io::AsyncWrite)
//!   byte pipe.
//! * Every buffer is bounded. A stream whose reader falls behind buffers
//!   its own share and then draws on a budget shared by the session; once
//!   that is spent too, the driver stops reading the transport
//!   (backpressure reaches the peer through TCP, and every stream of the
//!   session waits), and a stream holding the others up whose reader has
//!   taken nothing for a moment (half a second by default; 30 s when no
//!   other stream of the session is in use) is reset. A full write queue makes
//!   writers wait; control frames go before DATA, so PING echoes and resets
//!   are never stuck behind it.
//! * No send-side flow control: Kubernetes' SPDY peer (moby/spdystream) never
//!   sends WINDOW_UPDATE, so waiting on the 64 KiB initial window would stall
//!   every stream. The session sends without waiting, ignores WINDOW_UPDATE
//!   received, and announces what it consumed with WINDOW_UPDATE.
//! * A stream that did not end with the peer's FIN never reads as a clean
//!   end-of-file: RST_STREAM, GOAWAY, a transport error or a keepalive timeout
//!   fail reads and writes with [`std::io::ErrorKind::ConnectionReset`], so a
//!   proxy can reset its client rather than pass on a truncated stream as
//!   complete.
//! * Keepalive PINGs (see [`Config`]) detect a dead session and keep an idle
//!   one alive through load balancers; an idle session otherwise lives
//!   forever, with no read timeout.
//!
//! # Example
//!
//! ```no_run
//! use kubesocks_spdy::{Config, Session};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn forward(upgraded: tokio::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::client(upgraded, Config::default());
//! let headers = |kind| [("streamtype", kind), ("port", "8080"), ("requestid", "0")];
//! // Both streams go out back to back; then wait for both replies.
//! let mut error = session.open(&headers("error"))?;
//! let mut data = session.open(&headers("data"))?;
//! error.reply().await?;
//! data.reply().await?;
//! error.shutdown().await?;
//!
//! data.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
//! data.shutdown().await?;
//! let mut response = Vec::new();
//! data.read_to_end(&mut response).await?; // an Err here means the stream was cut
//!
//! let mut message = String::new();
//! error.read_to_string(&mut message).await?;
//! if !message.is_empty() {
//!     eprintln!("the kubelet says: {message}");
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod compress;
mod config;
mod driver;
mod error;
pub mod frame;
mod frame_error;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod headers;
mod session;
mod state;
mod stream;

pub use config::Config;
pub use error::{SessionError, StreamError};
pub use headers::Headers;
pub use session::Session;
pub use stream::Stream;
