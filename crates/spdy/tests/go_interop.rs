//! Interop with moby/spdystream, the SPDY implementation of the kubelet and
//! of kubectl: the Go server in `tests/go-peer` is built with `go build` and
//! run for each test. Without a Go toolchain these tests fail; they never
//! skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use kubesocks_spdy::{Config, Session, StreamError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

fn go_peer_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go-peer");
        let binary = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("spdy-go-peer");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            .status()
            .unwrap_or_else(|e| panic!("the Go toolchain (`go` on PATH) is needed to build tests/go-peer: {e}"));
        assert!(status.success(), "`go build` of {} failed: {status}", source.display());
        binary
    })
}

/// A running Go peer; it exits when dropped (its stdin closes and it is killed).
struct GoPeer {
    _child: Child,
    addr: String,
}

async fn go_peer() -> GoPeer {
    let mut child = tokio::process::Command::new(go_peer_binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Go peer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    timeout(T, BufReader::new(stdout).read_line(&mut line)).await.expect("Go peer start").expect("Go peer stdout");
    let addr = line.trim().strip_prefix("LISTEN ").unwrap_or_else(|| panic!("unexpected Go peer output {line:?}"));
    GoPeer { addr: addr.to_owned(), _child: child }
}

async fn session(peer: &GoPeer) -> Session {
    let tcp = TcpStream::connect(&peer.addr).await.expect("connect to the Go peer");
    Session::client(tcp, Config { keepalive: Some(Duration::from_millis(200)), ..Config::default() })
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 256) as u8).collect()
}

#[tokio::test]
async fn echo_two_streams_opened_back_to_back() {
    let peer = go_peer().await;
    let session = session(&peer).await;
    let headers = |kind| [("x-mode", "echo"), ("streamType", kind), ("port", "8080"), ("requestID", "0")];
    let mut error = session.open(&headers("error")).unwrap();
    let mut data = session.open(&headers("data")).unwrap();

    // Go decoded both header blocks (the second relies on the first's context) and sent them back.
    let reply = timeout(T, data.reply()).await.unwrap().unwrap();
    assert_eq!(reply.get("echo-streamtype"), Some("data"));
    assert_eq!(reply.get("echo-port"), Some("8080"));
    assert_eq!(reply.get("echo-requestid"), Some("0"));
    assert_eq!(timeout(T, error.reply()).await.unwrap().unwrap().get("echo-streamtype"), Some("error"));

    error.shutdown().await.unwrap();
    let mut nothing = Vec::new();
    timeout(T, error.read_to_end(&mut nothing)).await.unwrap().unwrap();
    assert!(nothing.is_empty());

    // 3 MiB each way, far beyond the 64 KiB window spdystream never widens.
    let sent = pattern(3 << 20, 1);
    let (mut rd, mut wr) = tokio::io::split(&mut data);
    let send = async {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let ((), read) = timeout(T, async { tokio::join!(send, rd.read_to_end(&mut echoed)) }).await.unwrap();
    read.unwrap();
    assert!(echoed == sent, "echo differs");
}

#[tokio::test]
async fn download_is_not_held_back_by_flow_control() {
    let peer = go_peer().await;
    let session = session(&peer).await;
    let size = 8 << 20;
    let size_header = size.to_string();
    let mut stream = session.open(&[("x-mode", "download"), ("x-size", &size_header)]).unwrap();
    let mut got = Vec::new();
    timeout(T, stream.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got.len(), size);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[tokio::test]
async fn reset_by_spdystream_is_a_connection_reset() {
    let peer = go_peer().await;
    let session = session(&peer).await;
    let mut stream = session.open(&[("x-mode", "reset"), ("x-size", "5")]).unwrap();
    stream.write_all(b"12345").await.unwrap();
    let e = timeout(T, stream.read_to_end(&mut Vec::new())).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(e.to_string().contains("CANCEL"), "spdystream resets with CANCEL: {e}");

    // Refused before any reply.
    let mut refused = session.open(&[("x-mode", "nonsense")]).unwrap();
    assert!(matches!(timeout(T, refused.reply()).await.unwrap(), Err(StreamError::Reset(_))));
    assert!(!session.is_closed(), "a stream error leaves the session up");
}

#[tokio::test]
async fn pings_both_ways() {
    let peer = go_peer().await;
    let session = session(&peer).await;
    let rtt = timeout(T, session.ping()).await.unwrap().unwrap();
    assert!(rtt < T);
    let mut stream = session.open(&[("x-mode", "ping")]).unwrap();
    let mut answer = String::new();
    timeout(T, stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, "pong", "spdystream's PING was answered");
    // Keepalives (every 200 ms here) keep going and are answered.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!session.is_closed());
}

#[tokio::test]
async fn many_streams_on_one_session() {
    let peer = go_peer().await;
    let session = session(&peer).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = session.open(&[("x-mode", "echo")]).unwrap();
            let sent = pattern(1000 + i * 3001, i);
            let (mut rd, mut wr) = tokio::io::split(&mut stream);
            let send = async {
                wr.write_all(&sent).await.unwrap();
                wr.shutdown().await.unwrap();
            };
            let mut echoed = Vec::new();
            let ((), read) = tokio::join!(send, rd.read_to_end(&mut echoed));
            read.unwrap();
            assert!(echoed == sent, "stream {i} differs");
        }));
    }
    for task in tasks {
        timeout(T, task).await.unwrap().unwrap();
    }
    assert_eq!(session.active_streams(), 0);
    session.close();
    assert!(matches!(timeout(T, session.closed()).await.unwrap(), kubesocks_spdy::SessionError::Closed));
}
