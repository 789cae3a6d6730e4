//! One name for "a byte stream both ways", so streams of different kinds
//! (a pod's, a direct TCP connection, an upgraded HTTP connection) can be
//! boxed and used alike.

use tokio::io::{AsyncRead, AsyncWrite};

/// Both directions of a byte stream.
pub(crate) trait AsyncReadWrite: AsyncRead + AsyncWrite {}
impl<T: AsyncRead + AsyncWrite> AsyncReadWrite for T {}
