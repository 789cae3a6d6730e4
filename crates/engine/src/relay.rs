//! Copies bytes both ways between a client and its upstream, counting them.

use std::io;
use std::sync::Arc;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::stats::Stats;

const BUF: usize = 64 * 1024;

/// Relays until the upstream has finished sending and the client has it all.
///
/// The client's FIN is passed on with `shutdown` and the upstream's FIN is
/// passed to the client. The relay ends when the upstream's side is done:
/// nothing can answer the client after that, whatever it still sends.
/// An error (above all an upstream that broke: a session reset) is returned
/// without a FIN to the client, which the caller then resets ([`reset`]),
/// so a truncated stream never looks complete.
///
/// `linger`: for upstreams that cannot carry a FIN (a pod stream, see
/// [`crate::portforward::PodStream`]) the pod never learns that the client
/// left, and a keep-alive server would hold the session open for ever. So
/// once the client has closed its side, the relay ends after the upstream has
/// been silent for `linger` (an answer still on its way keeps it going).
pub(crate) async fn relay<C, U>(client: C, upstream: U, stats: &Arc<Stats>, linger: Option<Duration>) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_rx, mut client_tx) = tokio::io::split(client);
    let (mut up_rx, mut up_tx) = tokio::io::split(Counted::new(upstream, stats.clone()));
    let (client_done, mut client_done_rx) = tokio::sync::watch::channel(false);
    let to_upstream = async {
        tokio::io::copy_buf(&mut BufReader::with_capacity(BUF, client_rx), &mut up_tx).await?;
        up_tx.shutdown().await?;
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
        client_tx.shutdown().await
    };
    tokio::pin!(to_upstream);
    tokio::select! {
        done = to_client => done,
        // A client that closed its side early is normal (half-close); only its errors end the relay here.
        Err(e) = &mut to_upstream => Err(e),
    }
}

/// Ends a client connection with a reset (RST) instead of a FIN, for a
/// relay that failed: the client must not take what it got for all there was.
pub(crate) fn reset(client: tokio::net::TcpStream) {
    if let Err(e) = client.set_zero_linger() {
        tracing::debug!(error = %e, "cannot reset the client connection");
    }
    drop(client);
}

/// An upstream stream that counts the bytes through it: reads are bytes
/// down to the client, writes are bytes up to the cluster.
pub(crate) struct Counted<T> {
    inner: T,
    stats: Arc<Stats>,
}

impl<T> Counted<T> {
    pub fn new(inner: T, stats: Arc<Stats>) -> Counted<T> {
        Counted { inner, stats }
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
        self.stats.add_down((buf.filled().len() - before) as u64);
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
            self.stats.add_up(*n as u64);
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
