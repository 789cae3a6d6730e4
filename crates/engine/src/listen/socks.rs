//! The SOCKS5 listener (RFC 1928, with RFC 1929 user/password auth), on
//! fast-socks5's server protocol state machine.
//!
//! fast-socks5 reads the handshake straight from the socket, without a
//! buffer, so bytes a client sends right after its CONNECT request are still
//! in the socket when the relay starts: nothing sent early is lost.

use std::net::SocketAddr;
use std::sync::Arc;

use fast_socks5::server::{
    AuthMethodSuccessState, NoAuthentication, PasswordAuthentication, Socks5ServerProtocol, SocksServerError,
};
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::net::TcpStream;

use super::front_door::{FrontDoor, Slot};
use crate::activity::{Client, Via};
use crate::dial::Failure;
use crate::relay::{relay, reset};
use crate::route::Host;

type Authenticated = Socks5ServerProtocol<TcpStream, fast_socks5::server::states::Authenticated>;

/// Serves one client connection to its end; it holds `_slot` under the
/// connection cap until then.
pub(crate) async fn serve(stream: TcpStream, client: Client, shared: Arc<FrontDoor>, _slot: Slot) {
    let peer = client.addr;
    let handshake = async {
        let proto = authenticate(stream, &shared).await?;
        proto.read_command().await
    };
    let (proto, command, target) = match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) => {
            // fast-socks5 has already sent the matching reply (0xFF, 0x07, 0x08...).
            tracing::info!(%peer, error = %e, "SOCKS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "SOCKS handshake stalled; closing");
            return;
        }
    };
    if command != Socks5Command::TCPConnect {
        tracing::info!(%peer, ?command, "only CONNECT is supported");
        let _ = proto.reply_error(&ReplyError::CommandNotSupported).await;
        return;
    }
    let (host, port) = match &target {
        TargetAddr::Ip(addr) => (Host::Ip(addr.ip()), addr.port()),
        TargetAddr::Domain(name, port) => (Host::parse(name), *port),
    };
    let (conn, dialed) = match shared.dial(Via::Socks5, &client, &host, port).await {
        Ok(dialed) => dialed,
        Err(e) => {
            let reply = match e.failure() {
                Failure::NotAllowed => ReplyError::ConnectionNotAllowed,
                Failure::Unreachable | Failure::TimedOut => ReplyError::HostUnreachable,
                Failure::Refused => ReplyError::ConnectionRefused,
                Failure::General | Failure::ApiUnreachable => ReplyError::GeneralFailure,
            };
            let _ = proto.reply_error(&reply).await;
            return;
        }
    };
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut stream = match proto.reply_success(unspecified).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(conn = conn.id, error = %e, "client left before the reply");
            return;
        }
    };
    let linger = dialed.upstream.linger();
    if let Err(e) = relay(&mut stream, dialed.upstream, &conn.tracked, linger).await {
        conn.broke(&e);
        reset(stream);
    }
    tracing::debug!(conn = conn.id, "closed");
}

/// A client beyond the connection cap: its handshake is read as usual (so it
/// is told, not cut off), and its request answered with a general failure.
pub(crate) async fn refuse_busy(stream: TcpStream, peer: SocketAddr, shared: Arc<FrontDoor>) {
    let handshake = async {
        let proto = authenticate(stream, &shared).await?;
        proto.read_command().await
    };
    if let Ok(Ok((proto, _, target))) = tokio::time::timeout(shared.handshake_timeout, handshake).await {
        tracing::debug!(%peer, target = %target_text(&target), "refused: too many connections");
        let _ = proto.reply_error(&ReplyError::GeneralFailure).await;
    }
}

/// A SOCKS target for logs, its name escaped.
fn target_text(target: &TargetAddr) -> String {
    match target {
        TargetAddr::Ip(addr) => addr.to_string(),
        TargetAddr::Domain(name, port) => format!("{}:{port}", Host::parse(name)),
    }
}

async fn authenticate(stream: TcpStream, shared: &FrontDoor) -> Result<Authenticated, SocksServerError> {
    let start = Socks5ServerProtocol::start(stream);
    let Some(credentials) = &shared.auth else {
        return Ok(start.negotiate_auth(&[NoAuthentication]).await?.finish_auth());
    };
    let (user, password, auth) =
        start.negotiate_auth(&[PasswordAuthentication]).await?.read_username_password().await?;
    if credentials.matches(&user, &password) {
        Ok(auth.accept().await?.finish_auth())
    } else {
        // The user name is safe to log; the password never is.
        tracing::warn!(user, "SOCKS authentication failed");
        auth.reject().await?;
        Err(SocksServerError::AuthenticationRejected)
    }
}
