//! Copies bytes both ways between a client and its upstream, counting them.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::stats::Stats;

const BUF: usize = 64 * 1024;

/// Relays until the upstream has finished sending and the client has it all.
///
/// A client's FIN is passed on with `shutdown` (which a pod stream holds, see
/// [`crate::portforward::PodStream`]); the upstream's FIN is passed to the
/// client. The relay ends when the upstream's side is done: nothing can answer
/// the client after that, whatever it still sends.
pub async fn relay<C, U>(client: C, upstream: U, stats: &Arc<Stats>) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_rx, mut client_tx) = tokio::io::split(client);
    let (up_rx, mut up_tx) = tokio::io::split(Counted::new(upstream, stats.clone()));
    let to_upstream = async {
        tokio::io::copy_buf(&mut BufReader::with_capacity(BUF, client_rx), &mut up_tx).await?;
        up_tx.shutdown().await
    };
    let to_client = async {
        tokio::io::copy_buf(&mut BufReader::with_capacity(BUF, up_rx), &mut client_tx).await?;
        client_tx.shutdown().await
    };
    tokio::pin!(to_upstream);
    tokio::select! {
        done = to_client => done,
        // A client that closed its side early is normal (half-close); only its errors end the relay here.
        Err(e) = &mut to_upstream => Err(e),
    }
}

/// An upstream stream that counts the bytes through it: reads are bytes
/// down to the client, writes are bytes up to the cluster.
pub struct Counted<T> {
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
