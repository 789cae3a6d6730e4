//! Clients and pod servers for data-path tests: SOCKS connects, downloads
//! and the reads that tell a reset from a clean EOF, a two-pod Service with
//! servers of several kinds, and the descriptor counts and limits of
//! processes. Shared by the data-path and reliability tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Backend, PodSpec, RawSocks, TestNamespace, cluster, wait_for};

/// The SOCKS5 CONNECT command.
pub const CONNECT: u8 = 1;

/// A SOCKS5 CONNECT through `proxy`: the stream once the proxy said 0x00,
/// else the reply code.
pub async fn socks(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream, u8> {
    let mut s = RawSocks::connect(proxy).await;
    assert_eq!(s.greet(&[0]).await, 0, "no-auth accepted");
    match s.request_domain(CONNECT, host, port).await {
        0 => Ok(s.stream),
        code => Err(code),
    }
}

/// One HTTP GET through the proxy: the answer's body.
pub async fn get(proxy: SocketAddr, host: &str) -> Result<String, String> {
    let mut s = socks(proxy, host, 80).await.map_err(|code| format!("SOCKS reply {code:#04x}"))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => Ok(String::from_utf8_lossy(&answer).into_owned()),
        Ok(Err(e)) => Err(format!("{e} after {} bytes", answer.len())),
        Err(_) => Err(format!("no end within 20 s after {} bytes", answer.len())),
    }
}

/// Which pod answered: `hello from NAME ...` or `... from NAME\n` lines.
pub fn who(answer: &str) -> String {
    let from = answer.split("from ").nth(1).unwrap_or_else(|| panic!("no `from` in {answer:?}"));
    from.split_whitespace().next().unwrap_or_default().to_string()
}

/// The pods of [`two_pods`], one per node.
pub const NODES: [(&str, &str); 2] = [("pod-a", "node-spdy"), ("pod-b", "node-ws")];

/// A namespace with a Service `svc` (port 80 → 8080) on two pods, `pod-a`
/// on node-spdy and `pod-b` on node-ws, each served by its own `backend`.
pub struct TwoPods {
    pub ns: TestNamespace,
    _backends: Vec<Backend>,
    /// Pod name → pod IP.
    pub ips: BTreeMap<String, String>,
}

impl TwoPods {
    pub fn svc(&self) -> String {
        format!("svc.{}", self.ns.name)
    }
}

pub async fn two_pods<F, Fut>(prefix: &str, serve: impl Fn(String) -> F) -> TwoPods
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let ns = TestNamespace::new(prefix).await;
    let (mut backends, mut ips) = (Vec::new(), BTreeMap::new());
    for (name, node) in NODES {
        let backend = Backend::start_serving(name, &[8080], serve(name.to_string())).await;
        let mut spec = PodSpec::new(name, &backend, &[("http", 8080)]);
        (spec.labels, spec.node) = (json!({"app": "svc"}), node);
        let pod = ns.pod(spec).await;
        ips.insert(name.to_string(), pod.status.unwrap().pod_ip.unwrap());
        backends.push(backend);
    }
    ns.service("svc", json!({"selector": {"app": "svc"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("svc", 2).await;
    TwoPods { ns, _backends: backends, ips }
}
// ------------------------------------------------------------ servers

/// A backend server's handling of one connection.
pub type Serving = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// HTTP: answers each request `hello from NAME` and closes.
pub fn hello(name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |mut s: TcpStream| {
        let name = name.clone();
        Box::pin(async move {
            if super::read_head(&mut s).await.is_none() {
                return;
            }
            let body = format!("hello from {name}\n");
            let answer =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        })
    }
}

/// Echoes every byte until the client's FIN, then closes.
pub fn echo(_name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |s: TcpStream| {
        Box::pin(async move {
            let (mut rx, mut tx) = s.into_split();
            let _ = tokio::io::copy(&mut rx, &mut tx).await;
            let _ = tx.shutdown().await;
        })
    }
}

/// A download: the client asks for `BYTES\n`; it gets `download from
/// NAME\n`, then that many bytes, then FIN; stops when the client goes.
pub fn download(name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |mut s: TcpStream| {
        let name = name.clone();
        Box::pin(async move {
            let mut ask = Vec::new();
            let mut byte = [0u8; 1];
            while !ask.ends_with(b"\n") {
                match s.read(&mut byte).await {
                    Ok(1) => ask.push(byte[0]),
                    _ => return,
                }
            }
            let Ok(size) = String::from_utf8_lossy(&ask).trim().parse::<usize>() else { return };
            if s.write_all(format!("download from {name}\n").as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'.'; 64 * 1024];
            let mut sent = 0;
            while sent < size {
                let n = chunk.len().min(size - sent);
                if s.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                sent += n;
            }
            let _ = s.shutdown().await;
        })
    }
}

// ------------------------------------------------------------ helpers

/// Connects through `proxy` and asks the download backend for `size` bytes.
pub async fn start_download(proxy: SocketAddr, host: &str, port: u16, size: usize) -> Result<TcpStream, u8> {
    let mut s = socks(proxy, host, port).await?;
    s.write_all(format!("{size}\n").as_bytes()).await.expect("the request is sent");
    Ok(s)
}

/// Reads the first line (`... from NAME`), returning it and any bytes after it.
pub async fn first_line(s: &mut TcpStream) -> (String, usize) {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !got.contains(&b'\n') {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a first line within 10 s")
            .expect("a first line");
        assert!(n > 0, "EOF before a first line: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let end = got.iter().position(|b| *b == b'\n').unwrap();
    (String::from_utf8_lossy(&got[..end]).into_owned(), got.len() - end - 1)
}

/// Reads until `at_least` bytes (after the first line) have come.
pub async fn read_some(s: &mut TcpStream, mut have: usize, at_least: usize) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    while have < at_least {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("download data within 10 s")
            .expect("download data");
        assert!(n > 0, "the download ended after {have} bytes");
        have += n;
    }
    have
}

/// Reads to the end: the bytes read and how it ended (`None`: a clean EOF).
pub async fn read_to_end_or_error(s: &mut TcpStream) -> (usize, Option<std::io::Error>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Err(_) => panic!("the connection neither ended nor failed within 30 s ({total} bytes)"),
            Ok(Ok(0)) => return (total, None),
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return (total, Some(e)),
        }
    }
}

/// Waits (up to 30 s) for the stub's log to hold a line with all of `words`.
pub async fn stub_logged(words: &[&str]) {
    wait_for(&format!("the kubelet stub to log {words:?}"), || async {
        cluster().stub_log().lines().any(|l| words.iter().all(|w| l.contains(w))).then_some(())
    })
    .await
}

/// The open descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// How many TCP sockets process `pid` holds with a peer on `port` (any state:
/// a socket half-closed and never closed counts too).
pub fn sockets_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let port = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9 && fields[2].ends_with(&format!(":{port}")) && inodes.contains(fields[9])
        })
        .count()
}

/// Raises this process's soft open-file limit to `want` (within the hard
/// limit): the test's own clients and backends hold two descriptors per
/// connection.
pub fn raise_own_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "{}", std::io::Error::last_os_error());
        }
    }
    limit.rlim_cur
}

/// Holds a running process to `limit` open files, soft and hard (kubesocks
/// raises its soft limit to the hard one at start; this undoes that).
pub fn hold_fd_limit(pid: u32, limit: u64) {
    let new = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: prlimit reads the struct we own; no old value is asked for.
    let rc = unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}
