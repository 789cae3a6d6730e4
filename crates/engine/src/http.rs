//! The HTTP proxy listener, on hyper: `CONNECT host:port` tunnels, and
//! absolute-form requests (`GET http://svc.ns/path`) forwarded one upstream
//! connection per request, so `HTTP_PROXY=` works for plain HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tracing::Instrument as _;

use crate::dial::{DialError, Failure};
use crate::relay::{relay, reset};
use crate::resolve::Host;
use crate::shared::Shared;

type Body = BoxBody<Bytes, hyper::Error>;

/// Serves one client connection (possibly many requests) to its end.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let shared_timeout = shared.handshake_timeout;
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, shared).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // A client that stalls before finishing its request head is dropped,
        // like a SOCKS client that stalls in its handshake. hyper applies the
        // same limit to an idle keep-alive connection waiting for its next
        // request; clients reconnect, as they do for any server's idle timeout.
        .timer(TokioTimer::new())
        .header_read_timeout(shared_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

async fn handle(req: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Body> {
    if let Some(credentials) = &shared.auth {
        let given = req.headers().get(header::PROXY_AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !given.is_some_and(|h| credentials.matches_basic(h)) {
            let mut resp = text(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "proxy authentication required");
            resp.headers_mut()
                .insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"kubesocks\""));
            return resp;
        }
    }
    if req.method() == Method::CONNECT { connect(req, peer, shared).await } else { forward(req, peer, shared).await }
}

/// `CONNECT host:port`: answer 200 once the pod is reached, then relay bytes.
async fn connect(req: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Body> {
    let Some((host, port)) = req.uri().authority().and_then(|a| Some((Host::parse(a.host()), a.port_u16()?))) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let (conn, dialed) = shared.dial("HTTP CONNECT", peer, &host, port).await;
    let dialed = match dialed {
        Ok(dialed) => dialed,
        Err(e) => return refusal(&host, port, &e),
    };
    let for_task = shared.clone();
    shared.spawn_tracked(async move {
        let shared = for_task;
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::info!(conn = conn.id, error = %e, "CONNECT upgrade failed"),
        };
        let linger = dialed.upstream.linger();
        // Back to the client's own socket, so that a broken relay can reset it.
        let result = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let mut client = parts.io.into_inner();
                let mut upstream = dialed.upstream;
                let early = async {
                    // Bytes the client sent after its CONNECT head, already read.
                    upstream.write_all(&parts.read_buf).await?;
                    relay(&mut client, upstream, &shared.stats, linger).await
                };
                let result = early.await;
                if result.is_err() {
                    reset(client);
                }
                result
            }
            Err(upgraded) => relay(TokioIo::new(upgraded), dialed.upstream, &shared.stats, linger).await,
        };
        if let Err(e) = result {
            tracing::info!(conn = conn.id, error = %e, "connection broke; resetting the client");
        }
    });
    Response::new(empty())
}

/// Absolute-form request: send it to the pod in origin form and stream the answer back.
async fn forward(mut req: Request<Incoming>, peer: SocketAddr, shared: Arc<Shared>) -> Response<Body> {
    let uri = req.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return text(StatusCode::BAD_REQUEST, "only http:// URLs can be forwarded; use CONNECT for others"),
        None => {
            return text(
                StatusCode::BAD_REQUEST,
                "kubesocks is a proxy: send an absolute URL (http://service.namespace/...) or CONNECT",
            );
        }
    }
    let Some(authority) = uri.authority().cloned() else {
        return text(StatusCode::BAD_REQUEST, "the URL has no host");
    };
    let host = Host::parse(authority.host());
    let port = authority.port_u16().unwrap_or(80);
    let target = format!("{host}:{port}");
    // `request` counts as an active connection until its answer's head is back.
    let (request, dialed) = shared.dial("HTTP request", peer, &host, port).await;
    let dialed = match dialed {
        Ok(dialed) => dialed,
        Err(e) => return refusal(&host, port, &e),
    };
    let conn = request.id;
    tracing::debug!(conn, method = %req.method(), %uri, "HTTP request forwarded");

    let counted = crate::relay::Counted::new(dialed.upstream, shared.stats.clone());
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(counted)).await {
        Ok(parts) => parts,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("talking HTTP to {target} failed: {e}")),
    };
    tokio::spawn(
        async move {
            if let Err(e) = connection.await {
                tracing::debug!(conn, error = %e, "upstream HTTP connection ended with an error");
            }
        }
        .in_current_span(),
    );

    // Origin form toward the pod; hop-by-hop and proxy headers stay here.
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse().expect("a path taken from a valid URI");
    let headers = req.headers_mut();
    for name in ["proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "trailer", "upgrade"] {
        headers.remove(name);
    }
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, HeaderValue::from_str(authority.as_str()).expect("a valid authority"));
    }
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => {
            shared.failed(conn, &target, &e);
            text(StatusCode::BAD_GATEWAY, &format!("{target} did not answer the request: {e}"))
        }
    }
}

fn refusal(host: &Host, port: u16, e: &DialError) -> Response<Body> {
    let status = match e.failure() {
        Failure::NotAllowed => StatusCode::FORBIDDEN,
        Failure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        Failure::Unreachable | Failure::Refused | Failure::General => StatusCode::BAD_GATEWAY,
    };
    text(status, &format!("kubesocks: {host}:{port}: {e}"))
}

fn text(status: StatusCode, reason: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{}\n", reason.replace('\n', " "))));
    let mut resp = Response::new(body.map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}
