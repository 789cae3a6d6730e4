//! The control protocol on any bytes a control client can send: the JSON of
//! a `Request` (`serde_json::from_str`, as the daemon reads it), and the
//! daemon's framing end to end (`control::serve` on a Unix socket: one line
//! of at most `MAX_LINE` bytes, UTF-8, then the JSON).
//!
//! Checked: no panic; a request that parses serialises and parses back to
//! itself (what a client sends is what the daemon reads); a connect
//! request's `Debug` form never shows its exec variables' values; the
//! daemon answers every client with exactly one line of JSON that is a
//! `Response`: the handler's answer when the first line is a request, else a
//! `bad_request` error.
//!
//! Input: the client's bytes, after which it closes its side.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use kubesocks_managed::control::{self, DaemonInfo, ErrorKind, Request, Response};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A daemon's control socket, served by `control::serve` with [`handle`].
struct Daemon {
    runtime: tokio::runtime::Runtime,
    socket: std::path::PathBuf,
}

static DAEMON: LazyLock<Daemon> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let socket = std::env::temp_dir().join(format!("kubesocks-fuzz-control-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let listener = runtime.block_on(async { tokio::net::UnixListener::bind(&socket) }).expect("bind the socket");
    runtime.spawn(control::serve(listener, CancellationToken::new(), TaskTracker::new(), |r, _gone| async move {
        handle(r)
    }));
    Daemon { runtime, socket }
});

/// What a daemon with no connections answers; a connect is refused with
/// its request's `Debug` form, which is what reaches logs.
fn handle(request: Request) -> Response {
    match request {
        Request::Connect(connect) => Response::Error { kind: ErrorKind::Kube, message: format!("{connect:?}") },
        Request::Disconnect { id } if !control::is_valid_id(&id) => {
            Response::Error { kind: ErrorKind::BadRequest, message: format!("not a connection ID: {id:?}") }
        }
        Request::Disconnect { .. } => {
            Response::Error { kind: ErrorKind::UnknownConnection, message: "no such connection".into() }
        }
        Request::DisconnectAll => Response::Disconnected { connections: Vec::new() },
        Request::Status => Response::Status {
            daemon: DaemonInfo { pid: 1, version: "fuzz".into(), host: "fuzz".into() },
            connections: Vec::new(),
            shared_port: None,
        },
        Request::Quit => Response::Quitting { connections: Vec::new() },
        Request::SharedPort(_) => Response::SharedPort { shared_port: None },
        Request::Activity { id: None } => Response::Activity { connections: Vec::new() },
        Request::Activity { id: Some(id) } | Request::CloseClient { id, .. } if !control::is_valid_id(&id) => {
            Response::Error { kind: ErrorKind::BadRequest, message: format!("not a connection ID: {id:?}") }
        }
        Request::Activity { .. } | Request::CloseClient { .. } => {
            Response::Error { kind: ErrorKind::UnknownConnection, message: "no such connection".into() }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // The JSON alone, as `answer` reads a request line.
    let parsed = std::str::from_utf8(input).ok().and_then(|text| serde_json::from_str::<Request>(text).ok());
    if let Some(request) = &parsed {
        let again = serde_json::to_string(request).expect("a request serialises");
        let back: Request = serde_json::from_str(&again).unwrap_or_else(|e| panic!("{again} does not parse back: {e}"));
        assert_eq!(&back, request, "{again}");
        if let Request::Connect(connect) = request {
            let mut blank = connect.clone();
            blank.exec_env.values_mut().for_each(|v| *v = String::new());
            assert_eq!(format!("{connect:?}"), format!("{blank:?}"), "the Debug form shows an exec variable's value");
        }
    }

    // The framing: what the daemon should make of the first line.
    let limited = &input[..input.len().min(control::MAX_LINE as usize)];
    let line = limited.split(|&b| b == b'\n').next().unwrap_or_default();
    let expected =
        std::str::from_utf8(line).ok().and_then(|text| serde_json::from_str::<Request>(text).ok()).map(handle);

    let daemon = &*DAEMON;
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(&daemon.socket).await.expect("the daemon accepts");
        if stream.write_all(input).await.is_ok() {
            let _ = stream.shutdown().await;
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let limit = control::REQUEST_TIMEOUT + Duration::from_secs(5);
    let answer = daemon
        .runtime
        .block_on(async { tokio::time::timeout(limit, exchange).await })
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"));
    let text = std::str::from_utf8(&answer).unwrap_or_else(|e| panic!("an answer that is not UTF-8 ({e}): {answer:?}"));
    let Some(json) = text.strip_suffix('\n').filter(|j| !j.contains('\n')) else {
        panic!("not one line: {text:?}");
    };
    let response: Response = serde_json::from_str(json).unwrap_or_else(|e| panic!("not a Response ({e}): {json}"));
    match (expected, response) {
        (Some(expected), response) => assert_eq!(response, expected),
        (None, Response::Error { kind: ErrorKind::BadRequest, .. }) => {}
        (None, response) => panic!("{line:?} is no request, yet the daemon answered {response:?}"),
    }
});
