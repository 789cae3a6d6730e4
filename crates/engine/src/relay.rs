//! Copies bytes both ways between a client and its upstream, counting them.

use std::io;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::activity::{ConnState, Tracked};

const BUF: usize = 64 * 1024;

/// How long, after the upstream's FIN, the client may go on sending before
/// its connection is closed, and how long it may pause meanwhile: nginx's
/// lingering close waits as long (`lingering_time`, `lingering_timeout`).
const AFTER_UPSTREAM_FIN: Duration = Duration::from_secs(30);
const AFTER_UPSTREAM_FIN_PAUSE: Duration = Duration::from_secs(5);

/// Relays until the upstream has finished sending and the client has it all,
/// and the client has finished sending too.
///
/// The client's FIN is passed on with `shutdown` and the upstream's FIN is
/// passed to the client. What the client sends goes on to the upstream while
/// it takes it (a server that answered early, a 413 before the whole body,
/// reads the rest), and is read and dropped once it does not, until the
/// client's FIN or, after the upstream's FIN, [`AFTER_UPSTREAM_FIN`] (or a
/// pause of [`AFTER_UPSTREAM_FIN_PAUSE`]): a
/// socket closed with input unread sends a reset, which can destroy the
/// answer before the client has read it. Whether the connection failed is
/// the upstream's reading side's to say: an error there (above all an
/// upstream that broke: a session reset) is returned without a FIN to the
/// client, which the caller then resets ([`reset`]), so a truncated stream
/// never looks complete. So is a connection closed from the connections
/// list ([`Tracked::closed`]).
///
/// `linger`: for upstreams that cannot carry a FIN (a pod stream, see
/// [`crate::portforward::PodStream`]) the pod never learns that the client
/// left, and a keep-alive server would hold the session open for ever. So
/// once the client has closed its side, the relay ends after the upstream has
/// been silent for `linger` (an answer still on its way keeps it going).
pub(crate) async fn relay<C, U>(client: C, upstream: U, conn: &Arc<Tracked>, linger: Option<Duration>) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite + Unpin,
{
    conn.set_state(ConnState::Open);
    let relayed = async {
        let result = relay_both_ways(client, upstream, conn, linger).await;
        conn.set_state(ConnState::Closing);
        result
    };
    tokio::select! {
        result = relayed => result,
        () = conn.closed() => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed from the connections list")),
    }
}

async fn relay_both_ways<C, U>(client: C, upstream: U, conn: &Arc<Tracked>, linger: Option<Duration>) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_rx, mut client_tx) = tokio::io::split(client);
    let (mut up_rx, mut up_tx) = tokio::io::split(Counted::new(upstream, conn.clone()));
    let (client_done, mut client_done_rx) = tokio::sync::watch::channel(false);
    // Set once the upstream's FIN is with the client.
    let (answered, mut answered_rx) = tokio::sync::watch::channel(false);
    let to_upstream = async {
        let mut client_rx = BufReader::with_capacity(BUF, client_rx);
        // Once the upstream refuses bytes, the rest is read and dropped:
        // whether the connection failed is for its other direction to say.
        let mut upstream_takes = true;
        loop {
            let chunk = if *answered_rx.borrow() {
                match tokio::time::timeout(AFTER_UPSTREAM_FIN_PAUSE, client_rx.fill_buf()).await {
                    Ok(chunk) => chunk?,
                    Err(_) => return Ok(()),
                }
            } else {
                tokio::select! {
                    chunk = client_rx.fill_buf() => chunk?,
                    // Answered meanwhile: from now on a pause ends it.
                    _ = answered_rx.changed() => continue,
                }
            };
            let n = chunk.len();
            if n == 0 {
                break;
            }
            if upstream_takes && let Err(e) = up_tx.write_all(chunk).await {
                tracing::debug!(error = %e, "the upstream takes no more; what the client sends is dropped");
                upstream_takes = false;
            }
            client_rx.consume(n);
        }
        if upstream_takes {
            let _ = up_tx.shutdown().await;
        }
        conn.set_state(if *answered_rx.borrow() { ConnState::Closing } else { ConnState::HalfClosed });
        let _ = client_done.send(true);
        Ok::<_, io::Error>(())
    };
    let to_client = async {
        let mut buf = vec![0u8; BUF];
        // Set once the client has closed its side (and only with `linger`).
        let mut deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                read = up_rx.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        break;
                    }
                    client_tx.write_all(&buf[..n]).await?;
                    if let (Some(d), Some(linger)) = (deadline.as_mut(), linger) {
                        *d = Instant::now() + linger;
                    }
                }
                _ = client_done_rx.changed(), if deadline.is_none() && linger.is_some() => {
                    deadline = linger.map(|l| Instant::now() + l);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
            }
        }
        client_tx.shutdown().await?;
        conn.set_state(if *client_done_rx.borrow() { ConnState::Closing } else { ConnState::HalfClosed });
        let _ = answered.send(true);
        Ok::<_, io::Error>(())
    };
    tokio::pin!(to_upstream, to_client);
    let mut client_finished = false;
    loop {
        tokio::select! {
            done = &mut to_client => {
                done?;
                break;
            }
            // A client that closed its side early is normal (half-close); only its errors end the relay here.
            sent = &mut to_upstream, if !client_finished => match sent {
                Ok(()) => client_finished = true,
                Err(e) => return Err(e),
            },
        }
    }
    if !client_finished {
        // Nothing after the answer is an error (see above).
        let _ = tokio::time::timeout(AFTER_UPSTREAM_FIN, &mut to_upstream).await;
    }
    Ok(())
}

/// Ends a client connection with a reset (RST) instead of a FIN, for a
/// relay that failed: the client must not take what it got for all there was.
pub(crate) fn reset(client: tokio::net::TcpStream) {
    if let Err(e) = client.set_zero_linger() {
        tracing::debug!(error = %e, "cannot reset the client connection");
    }
    drop(client);
}

/// An upstream stream that counts the bytes through it (in its connection
/// and its engine's totals): reads are bytes down to the client, writes are
/// bytes up to the cluster.
pub(crate) struct Counted<T> {
    inner: T,
    conn: Arc<Tracked>,
}

impl<T> Counted<T> {
    pub fn new(inner: T, conn: Arc<Tracked>) -> Counted<T> {
        Counted { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.conn.add_down((buf.filled().len() - before) as u64);
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &poll {
            self.conn.add_up(*n as u64);
        }
        poll
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
