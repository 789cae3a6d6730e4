//! The HTTP proxy listener, on hyper: `CONNECT host:port` tunnels, and
//! absolute-form requests (`GET http://svc.ns/path`) forwarded one upstream
//! connection per request, so `HTTP_PROXY=` works for plain HTTP.
//!
//! Requests for kubesocks itself (origin form, `GET /path`) are answered
//! here: `/proxy.pac` is the browsers' auto-config file ([`crate::listen::pac`]),
//! `/` a short page saying what this port is.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, Uri};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tracing::Instrument as _;

use super::front_door::{FrontDoor, Slot};
use crate::activity::{Client, Via};
use crate::dial::{DialError, Failure};
use crate::relay::{relay, reset};
use crate::route::{Escaped, Host};

type Body = BoxBody<Bytes, hyper::Error>;

/// The port a client came in on, which the PAC file it fetches names as the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// The mixed port: SOCKS5 and HTTP on one port; the PAC says `SOCKS5`.
    Mixed,
    /// A port for HTTP only; the PAC says `PROXY`.
    Http,
}

/// Serves one client connection (possibly many requests) to its end; it
/// holds `slot` under the connection cap until then (and so does a CONNECT
/// tunnel it opens, until the tunnel ends).
pub(crate) async fn serve(stream: TcpStream, client: Client, port: Port, shared: Arc<FrontDoor>, slot: Slot) {
    let peer = client.addr;
    let client = Arc::new(client);
    let shared_timeout = shared.handshake_timeout;
    // The address the client reached is the one the PAC file gives back.
    let local = stream.local_addr().ok();
    let asked = Arc::new(AtomicBool::new(false));
    let service = service_fn({
        let asked = asked.clone();
        move |req| {
            asked.store(true, Ordering::Relaxed);
            let (client, shared, slot) = (client.clone(), shared.clone(), slot.clone());
            async move { Ok::<_, Infallible>(handle(req, &client, (port, local), shared, slot).await) }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // A client that stalls before finishing its request head is dropped,
        // like a SOCKS client that stalls in its handshake. hyper applies the
        // same limit to an idle keep-alive connection waiting for its next
        // request; clients reconnect, as they do for any server's idle timeout.
        .timer(TokioTimer::new())
        .header_read_timeout(shared_timeout)
        // A client that shuts its side once its request is sent still gets
        // the answer (a refusal waits a moment for its program to be found).
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    match conn.await {
        // A client that never finished a request is worth a word, as a
        // stalled SOCKS handshake is; one that goes quiet after its requests
        // is an idle keep-alive connection, closed as usual.
        Err(e) if e.is_timeout() && !asked.load(Ordering::Relaxed) => {
            tracing::info!(%peer, "HTTP request head stalled; closing");
        }
        Err(e) => tracing::debug!(%peer, error = %e, "HTTP connection ended with an error"),
        Ok(()) => {}
    }
}

/// A client beyond the connection cap: its request head is read (within the
/// handshake timeout) and answered 503, and the connection closed.
pub(crate) async fn refuse_busy(stream: TcpStream, peer: SocketAddr, shared: Arc<FrontDoor>) {
    let max = shared.max_connections;
    let service = service_fn(move |_req| async move {
        let mut resp = text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("kubesocks: {max} client connections are open, the most allowed; try again later"),
        );
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok::<_, Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "refused HTTP client ended with an error");
    }
}

async fn handle(
    req: Request<Incoming>,
    client: &Client,
    (port, local): (Port, Option<SocketAddr>),
    shared: Arc<FrontDoor>,
    slot: Slot,
) -> Response<Body> {
    if let Some(credentials) = &shared.auth {
        let given = req.headers().get(header::PROXY_AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !given.is_some_and(|h| credentials.matches_basic(h)) {
            let mut resp = text(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "proxy authentication required");
            resp.headers_mut()
                .insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"kubesocks\""));
            return resp;
        }
    }
    if req.method() == Method::CONNECT {
        connect(req, client, shared, slot).await
    } else if req.uri().scheme().is_none() && req.uri().path().starts_with('/') {
        let mut resp = own_page(&req, port, local, &shared).await;
        // Never sniffed into a script or a style, never kept by a cache.
        let headers = resp.headers_mut();
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    } else {
        forward(req, client, shared).await
    }
}

/// A request for kubesocks itself: the PAC file, or a page saying what this is.
async fn own_page(
    req: &Request<Incoming>,
    port: Port,
    local: Option<SocketAddr>,
    shared: &FrontDoor,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "kubesocks is a proxy: send an absolute URL (http://service.namespace/...) or CONNECT",
        );
    }
    let Some(local) = local else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "kubesocks cannot tell which address it was reached at");
    };
    if let Some(reason) = page_refusal(req.headers(), local) {
        tracing::info!(path = %Escaped(req.uri().path()), reason, "a request for this port's own page was refused");
        return text(StatusCode::FORBIDDEN, &format!("kubesocks: {reason}"));
    }
    let proxy = match port {
        Port::Mixed => format!("SOCKS5 {local}"),
        Port::Http => format!("PROXY {local}"),
    };
    match req.uri().path() {
        "/proxy.pac" => {
            let routes = shared.pac_routes().await;
            let mut resp = full(StatusCode::OK, crate::listen::pac::script(&proxy, &routes));
            let headers = resp.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ns-proxy-autoconfig"));
            resp
        }
        "/" => {
            let mut resp = full(StatusCode::OK, welcome(port, local));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            resp
        }
        // Most likely a client that should have been told to use this as a proxy.
        _ => text(
            StatusCode::BAD_REQUEST,
            "kubesocks is a proxy: send an absolute URL (http://service.namespace/...) or CONNECT; \
             of its own it serves only / and /proxy.pac",
        ),
    }
}

/// Why a request for the port's own pages (`/`, the PAC file) is refused,
/// if it is. They list the cluster's namespaces, aliases and addresses, and
/// a web page must not read them:
/// * through DNS rebinding, a page's own name made to point at 127.0.0.1:
///   the `Host` must name this listener itself (the address the client
///   reached, `localhost`, `127.0.0.1` or `[::1]`, with this port);
/// * by loading them from another origin (`<script src=…/proxy.pac>`, a
///   fetch from another site or another port): browsers mark such requests
///   with `Sec-Fetch-Site`, and only `none` (the user's own navigation, the
///   browser's PAC fetcher) and `same-origin` are answered.
///
/// Clients other than browsers (curl, a PAC fetcher) send neither header, or
/// the listener's own address, and are answered.
fn page_refusal(headers: &HeaderMap, local: SocketAddr) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default().to_ascii_lowercase();
        if site != "none" && site != "same-origin" {
            return Some("its pages are not for other sites' pages to read");
        }
    }
    // A client that sends no Host (HTTP/1.0, a PAC fetcher) is no browser.
    let host = headers.get(header::HOST)?;
    let Ok(authority) = host.to_str().unwrap_or_default().parse::<Authority>() else {
        return Some("the Host header is not a host and port");
    };
    let named = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let itself = named == "localhost"
        || named.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            let ip = ip.to_canonical();
            ip == local.ip().to_canonical()
                || ip == std::net::Ipv4Addr::LOCALHOST
                || ip == std::net::Ipv6Addr::LOCALHOST
        });
    if !itself || authority.port_u16().unwrap_or(80) != local.port() {
        return Some("the Host header does not name this listener; it serves its pages only at its own address");
    }
    None
}

/// The page a browser gets when it opens the proxy's own address.
fn welcome(port: Port, local: SocketAddr) -> String {
    let proxy_line = match port {
        Port::Mixed => format!(
            "<li>as a SOCKS5 proxy, names resolved by kubesocks: <code>socks5h://{local}</code> \
             (<code>curl --proxy socks5h://{local} http://SERVICE.NAMESPACE:PORT/</code>)</li>\n\
             <li>as an HTTP proxy on the same port: <code>http://{local}</code></li>"
        ),
        Port::Http => format!("<li>as an HTTP proxy: <code>http://{local}</code></li>"),
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>kubesocks</title></head><body>\n\
         <h1>kubesocks</h1>\n\
         <p>This port is a proxy into a Kubernetes cluster: connections to its Services and Pods \
         go through the Kubernetes API's port-forward. Use it</p>\n<ul>\n{proxy_line}\n\
         <li>in a browser, through its proxy auto-config file: <a href=\"/proxy.pac\">http://{local}/proxy.pac</a> \
         (cluster names go to kubesocks, the rest of the web directly)</li>\n</ul>\n</body></html>\n"
    )
}

/// `CONNECT host:port`: answer 200 once the pod is reached, then relay bytes.
async fn connect(req: Request<Incoming>, client: &Client, shared: Arc<FrontDoor>, slot: Slot) -> Response<Body> {
    let Some((host, port)) = req.uri().authority().and_then(|a| Some((Host::parse(a.host()), a.port_u16()?))) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let (conn, dialed) = match shared.dial(Via::HttpConnect, client, &host, port).await {
        Ok(dialed) => dialed,
        Err(e) => return refusal(&host, port, &e),
    };
    shared.spawn_tracked(async move {
        let _slot = slot;
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
                    relay(&mut client, upstream, &conn.tracked, linger).await
                };
                let result = early.await;
                if result.is_err() {
                    reset(client);
                }
                result
            }
            Err(upgraded) => relay(TokioIo::new(upgraded), dialed.upstream, &conn.tracked, linger).await,
        };
        if let Err(e) = result {
            conn.broke(&e);
        }
    });
    Response::new(empty())
}

/// Absolute-form request: send it to the pod in origin form and stream the answer back.
async fn forward(mut req: Request<Incoming>, client: &Client, shared: Arc<FrontDoor>) -> Response<Body> {
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
    // Origin form toward the pod, and its Host from the URL (RFC 9112 §3.2.2):
    // both are settled before anything is dialled.
    let (Some(origin), Some(host_header)) = (origin_form(&uri), host_header(&authority)) else {
        return text(StatusCode::BAD_REQUEST, "the URL's path or host cannot be forwarded");
    };
    let host = Host::parse(authority.host());
    let port = authority.port_u16().unwrap_or(80);
    let target = format!("{host}:{port}");
    // `request` counts as an active connection (and is listed) until its
    // answer has been streamed back.
    let (request, dialed) = match shared.dial(Via::Http, client, &host, port).await {
        Ok(dialed) => dialed,
        Err(e) => return refusal(&host, port, &e),
    };
    let conn = request.id;
    // The path only: a query string may carry tokens.
    tracing::debug!(conn, method = %req.method(), path = %Escaped(uri.path()), "HTTP request forwarded");

    request.tracked.set_state(crate::activity::ConnState::Open);
    let counted = crate::relay::Counted::new(dialed.upstream, request.tracked.clone());
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(counted)).await {
        Ok(parts) => parts,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("talking HTTP to {target} failed: {e}")),
    };
    let request = Arc::new(request);
    let held = request.clone();
    tokio::spawn(
        async move {
            let tracked = &held.tracked;
            // Closed from the connections list: the answer is cut, and hyper
            // closes the client's connection with it.
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(conn, error = %e, "upstream HTTP connection ended with an error");
                },
                () = tracked.closed() => tracing::info!(conn, "closed from the connections list"),
            }
        }
        .in_current_span(),
    );

    *req.uri_mut() = origin;
    strip_hop_by_hop(req.headers_mut());
    req.headers_mut().insert(header::HOST, host_header);
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => {
            request.failed(&target, &e);
            text(StatusCode::BAD_GATEWAY, &format!("{target} did not answer the request: {e}"))
        }
    }
}

/// The origin form of an absolute URL: its path and query, `/` for no path
/// (`http://web?x=1` asks for `/?x=1`). `None` if that is no URI.
fn origin_form(uri: &Uri) -> Option<Uri> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    if path_and_query.starts_with('/') {
        Uri::try_from(path_and_query).ok()
    } else {
        Uri::try_from(format!("/{path_and_query}")).ok()
    }
}

/// The Host header for a request to `authority`: its host and port as the
/// URL gives them, never its user info.
fn host_header(authority: &Authority) -> Option<HeaderValue> {
    let value = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_string(),
    };
    HeaderValue::from_str(&value).ok()
}

/// Removes the headers that belong to the hop to kubesocks: the standard
/// hop-by-hop ones, the proxy's own, and every header `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "trailer", "upgrade"] {
        headers.remove(name);
    }
}

fn refusal(host: &Host, port: u16, e: &DialError) -> Response<Body> {
    let status = match e.failure() {
        Failure::NotAllowed => StatusCode::FORBIDDEN,
        Failure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        Failure::ApiUnreachable => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Unreachable | Failure::Refused | Failure::General => StatusCode::BAD_GATEWAY,
    };
    text(status, &format!("kubesocks: {host}:{port}: {e}"))
}

fn text(status: StatusCode, reason: &str) -> Response<Body> {
    let mut resp = full(status, format!("{}\n", reason.replace('\n', " ")));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn full(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(pairs: &[(&str, &str)]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        page_refusal(&headers, "127.0.0.1:1080".parse().unwrap())
    }

    #[test]
    fn own_pages_answer_only_their_own_address() {
        for host in ["127.0.0.1:1080", "localhost:1080", "LocalHost:1080", "[::1]:1080"] {
            assert_eq!(refusal(&[("host", host)]), None, "{host}");
        }
        assert_eq!(refusal(&[]), None, "a client that sends no Host (HTTP/1.0, a PAC fetcher)");
        for host in [
            "evil.example:1080",
            "evil.example",
            "127.0.0.1:1081",
            "127.0.0.1",
            "localhost.evil:1080",
            "10.0.0.1:1080",
            "%%",
        ] {
            assert!(refusal(&[("host", host)]).is_some(), "{host}");
        }
    }

    #[test]
    fn own_pages_are_not_for_other_sites() {
        let own = ("host", "127.0.0.1:1080");
        assert_eq!(refusal(&[own, ("sec-fetch-site", "none")]), None, "the user's own navigation");
        assert_eq!(refusal(&[own, ("sec-fetch-site", "same-origin")]), None);
        for site in ["cross-site", "same-site", "Cross-Site", "anything"] {
            assert!(refusal(&[own, ("sec-fetch-site", site), ("sec-fetch-dest", "script")]).is_some(), "{site}");
        }
    }

    fn origin(url: &str) -> String {
        origin_form(&url.parse().unwrap()).unwrap().to_string()
    }

    #[test]
    fn the_origin_form_has_a_path_even_when_the_url_has_none() {
        assert_eq!(origin("http://web.default?x=1"), "/?x=1");
        assert_eq!(origin("http://web.default"), "/");
        assert_eq!(origin("http://web.default/"), "/");
        assert_eq!(origin("http://web.default:8080/a/b?token=t&y"), "/a/b?token=t&y");
    }

    #[test]
    fn the_host_header_is_the_urls_host_and_port_without_user_info() {
        let host = |url: &str| {
            let uri: Uri = url.parse().unwrap();
            host_header(uri.authority().unwrap()).unwrap()
        };
        assert_eq!(host("http://web.default/"), "web.default");
        assert_eq!(host("http://web.default:8080/"), "web.default:8080");
        assert_eq!(host("http://user:secret@web.default:81/"), "web.default:81");
        assert_eq!(host("http://[fd00::10]:80/"), "[fd00::10]:80");
    }

    #[test]
    fn headers_named_in_connection_are_hop_by_hop() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, X-Hop"),
            ("connection", "x-other"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("x-keep", "3"),
            ("proxy-authorization", "Basic x"),
            ("keep-alive", "timeout=5"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
    }
}
