//! The in-process tier: the listeners' promises proven against a real
//! engine (and a gateway) over the in-memory API server of
//! [`crate::testing`], in well under a second each, with no Go, etcd or
//! kubelet. The real-cluster tests in `tests/` prove the same against the
//! real thing; these run in `tests/quick`.
//!
//! The in-memory cluster forbids every port-forward, so a name that
//! resolves ends as "not allowed" (SOCKS `0x02`, HTTP 403): what a user
//! without `pods/portforward` sees.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::cluster::kubeconfig::Cluster;
use crate::listen::Listen;
use crate::testing::api_client;
use crate::{Credentials, Engine, Gateway, GatewayConfig, ProxyConfig, Routes, loopback};

async fn engine(config: ProxyConfig) -> Engine {
    let client = api_client();
    let cluster = Cluster {
        upgrades: client.clone(),
        client,
        context: "memory".into(),
        server: "https://memory.invalid".into(),
        proxy: None,
        namespace: "default".into(),
    };
    let config = ProxyConfig {
        socks: Some(Listen::exact(loopback(0))),
        http: Some(Listen::exact(loopback(0))),
        handshake_timeout: Duration::from_secs(2),
        ..config
    };
    Engine::start(cluster, config).await.expect("the engine starts")
}

/// A SOCKS5 client's greeting offering one method; the method the proxy chose.
async fn greet(stream: &mut TcpStream, method: u8) -> u8 {
    stream.write_all(&[5, 1, method]).await.unwrap();
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice[0], 5, "a SOCKS5 answer");
    choice[1]
}

/// A SOCKS5 CONNECT to `host:port` without credentials; the reply code.
async fn socks_connect(addr: std::net::SocketAddr, host: &str, port: u16) -> u8 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(greet(&mut stream, 0).await, 0, "no authentication asked");
    request(&mut stream, host, port).await
}

async fn request(stream: &mut TcpStream, host: &str, port: u16) -> u8 {
    let mut req = vec![5, 1, 0, 3, u8::try_from(host.len()).unwrap()];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&req).await.unwrap();
    let mut reply = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut reply)).await.expect("a reply").unwrap();
    reply[1]
}

/// One HTTP request on a fresh connection; the status line and the body.
async fn http(addr: std::net::SocketAddr, head: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            // Enough once the head and the body it announces are in.
            if n == 0 || text.split_once("\r\n\r\n").is_some_and(|(head, body)| complete(head, body)) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn complete(head: &str, body: &str) -> bool {
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|n| body.len() >= n)
}

#[tokio::test]
async fn socks_reply_codes_say_why_a_connection_was_not_made() {
    let engine = engine(ProxyConfig::default()).await;
    let socks = engine.socks_addr().unwrap();
    assert_eq!(socks_connect(socks, "example.com", 80).await, 0x02, "outside the cluster: not allowed");
    assert_eq!(socks_connect(socks, "nope.default.svc", 80).await, 0x04, "no such Service: host unreachable");
    assert_eq!(socks_connect(socks, "web.default.svc", 81).await, 0x05, "a port the Service lacks: refused");
    assert_eq!(socks_connect(socks, "web.default.svc", 80).await, 0x02, "port-forward forbidden: not allowed");
    assert_eq!(socks_connect(socks, "ext.shop.svc", 5432).await, 0x02, "an ExternalName leaves the cluster");
}

#[tokio::test]
async fn http_statuses_say_why_a_connection_was_not_made() {
    let engine = engine(ProxyConfig::default()).await;
    let addr = engine.http_addr().unwrap();
    let connect = |target: &str| format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    assert!(http(addr, &connect("example.com:443")).await.0.contains(" 403 "));
    assert!(http(addr, &connect("nope.default.svc:80")).await.0.contains(" 502 "));
    let (status, body) =
        http(addr, "GET http://web.default.svc:81/ HTTP/1.1\r\nHost: web.default.svc:81\r\n\r\n").await;
    assert!(status.contains(" 502 "), "{status}");
    assert!(body.contains("does not expose port 81"), "the reason is told: {body}");
}

#[tokio::test]
async fn the_mixed_port_tells_socks_from_http_and_serves_its_own_pages() {
    let engine = engine(ProxyConfig::default()).await;
    let mixed = engine.socks_addr().unwrap();
    let mut socks = TcpStream::connect(mixed).await.unwrap();
    assert_eq!(greet(&mut socks, 0).await, 0, "SOCKS5 on the mixed port");
    let (status, body) = http(mixed, &format!("GET /proxy.pac HTTP/1.1\r\nHost: {mixed}\r\n\r\n")).await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("FindProxyForURL") && body.contains(&format!("SOCKS5 {mixed}")), "{body}");
    assert!(body.contains("\"shop\""), "the namespaces are listed: {body}");
    let (status, _) = http(mixed, &format!("GET / HTTP/1.1\r\nHost: {mixed}\r\n\r\n")).await;
    assert!(status.contains(" 200 "), "{status}");
    // Not for a page whose own name was pointed here (DNS rebinding), nor
    // for another site's page loading it as a script.
    let (status, body) = http(mixed, "GET /proxy.pac HTTP/1.1\r\nHost: evil.example\r\n\r\n").await;
    assert!(status.contains(" 403 ") && !body.contains("shop"), "{status}: {body}");
    let head = format!("GET /proxy.pac HTTP/1.1\r\nHost: {mixed}\r\nSec-Fetch-Site: cross-site\r\n\r\n");
    let (status, body) = http(mixed, &head).await;
    assert!(status.contains(" 403 ") && !body.contains("shop"), "{status}: {body}");
}

#[tokio::test]
async fn credentials_are_required_when_set() {
    let config = ProxyConfig { auth: Some("user:secret".parse::<Credentials>().unwrap()), ..ProxyConfig::default() };
    let engine = engine(config).await;
    let mut socks = TcpStream::connect(engine.socks_addr().unwrap()).await.unwrap();
    assert_eq!(greet(&mut socks, 0).await, 0xFF, "no acceptable method without credentials");
    let addr = engine.http_addr().unwrap();
    let (status, _) = http(addr, "CONNECT web.default.svc:80 HTTP/1.1\r\nHost: web.default.svc:80\r\n\r\n").await;
    assert!(status.contains(" 407 "), "{status}");
}

#[tokio::test]
async fn clients_over_the_cap_are_told_so() {
    let engine = engine(ProxyConfig { max_connections: 1, ..ProxyConfig::default() }).await;
    let socks = engine.socks_addr().unwrap();
    let mut first = TcpStream::connect(socks).await.unwrap();
    assert_eq!(greet(&mut first, 0).await, 0, "the first client is served");
    let mut second = TcpStream::connect(socks).await.unwrap();
    assert_eq!(greet(&mut second, 0).await, 0, "the second is heard out");
    assert_eq!(request(&mut second, "web.default.svc", 80).await, 0x01, "and refused: general failure");
    let (status, _) = http(engine.http_addr().unwrap(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(status.contains(" 503 "), "HTTP over the cap: {status}");
}

#[tokio::test]
async fn a_gateway_routes_by_alias_and_refuses_names_without_one() {
    let engine = engine(ProxyConfig::default()).await;
    let mut routes = Routes::new();
    routes.insert("Lab", engine.route());
    let gateway = Gateway::start(GatewayConfig::new(Listen::exact(loopback(0))), routes.clone()).await.unwrap();
    let addr = gateway.addr();
    assert_eq!(socks_connect(addr, "web.default.lab", 81).await, 0x05, "routed to the engine, which refuses the port");
    assert_eq!(socks_connect(addr, "web.default.svc", 80).await, 0x02, "no alias and no default context");
    routes.set_default(Some("lab"));
    gateway.set_routes(routes);
    assert_eq!(socks_connect(addr, "web.default.svc", 81).await, 0x05, "the default context takes it now");
    let (status, body) = http(addr, &format!("GET /proxy.pac HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    assert!(status.contains(" 200 ") && body.contains("lab"), "the PAC lists the alias: {body}");
}

#[tokio::test]
async fn refused_connections_are_listed_with_the_program_that_asked_and_the_reason_it_was_told() {
    let engine = engine(ProxyConfig::default()).await;
    let socks = engine.socks_addr().unwrap();
    assert_eq!(socks_connect(socks, "nope.default.svc", 80).await, 0x04);
    assert_eq!(socks_connect(socks, "web.default.svc", 80).await, 0x02);
    let (status, _) =
        http(engine.http_addr().unwrap(), "GET http://nope.default.svc/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(status.contains(" 502 "), "{status}");
    let this = std::process::id();
    let activity = engine.activity().await;
    let seen: Vec<_> = activity.failures.iter().map(|f| (f.via, f.asked.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            (crate::Via::Http, "nope.default.svc:80"),
            (crate::Via::Socks5, "web.default.svc:80"),
            (crate::Via::Socks5, "nope.default.svc:80"),
        ],
        "newest first"
    );
    for failure in &activity.failures {
        assert_eq!(failure.program.as_ref().map(|p| p.pid), Some(this), "this test asked: {failure:?}");
    }
    assert!(activity.failures[1].reason.contains("forbidden"), "{:?}", activity.failures[1]);
    assert!(activity.failures[2].reason.contains("no service nope"), "{:?}", activity.failures[2]);
    assert_eq!(activity.reasons.len(), 2, "one reason for both unknown names: {:?}", activity.reasons);
    assert_eq!(activity.reasons[0].count, 2);
    assert!(activity.open.is_empty(), "nothing stays open: {:?}", activity.open);
}

#[tokio::test]
async fn a_connection_through_a_gateway_is_its_engines_and_says_it_came_through_the_shared_port() {
    let engine = engine(ProxyConfig::default()).await;
    let mut routes = Routes::new();
    routes.insert("lab", engine.route());
    let gateway = Gateway::start(GatewayConfig::new(Listen::exact(loopback(0))), routes).await.unwrap();
    assert_eq!(socks_connect(gateway.addr(), "web.default.lab", 81).await, 0x05);
    let failures = engine.activity().await.failures;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].asked, "web.default:81", "the name without its alias, as the engine reads it");
    assert!(failures[0].shared_port);
    assert_eq!(socks_connect(engine.socks_addr().unwrap(), "web.default", 81).await, 0x05);
    assert!(!engine.activity().await.failures[0].shared_port, "its own port");
}
