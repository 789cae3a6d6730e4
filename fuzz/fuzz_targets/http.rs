//! Any bytes an HTTP proxy client can send, through a whole engine's HTTP
//! listener (hyper's request head parser, proxy auth, CONNECT and
//! absolute-form requests: the origin-form and Host header conversion, the
//! resolution and dial) over an in-memory API server. It must answer or close
//! within a time limit and never panic (a panic in the connection's task
//! aborts the process too); whatever it answers is HTTP/1.x, and never a
//! success, as no port-forward can succeed here, but for the port's own
//! pages (`GET /` and `GET /proxy.pac`).
//!
//! Input: one byte choosing the proxy (even: no auth; odd: `user:pass`
//! required), then the client's bytes, after which it closes its side.
#![no_main]

use std::sync::LazyLock;

use kubesocks_engine::fuzz::Proxy;
use libfuzzer_sys::fuzz_target;

static OPEN: LazyLock<Proxy> = LazyLock::new(|| Proxy::start(None));
static AUTH: LazyLock<Proxy> = LazyLock::new(|| Proxy::start(Some("user:pass")));

fuzz_target!(|input: &[u8]| {
    let Some((&choice, client)) = input.split_first() else { return };
    let answer = if choice % 2 == 1 { AUTH.http(client) } else { OPEN.http(client) };
    if answer.is_empty() {
        return;
    }
    let shown = String::from_utf8_lossy(&answer);
    // hyper answers an HTTP/1.0 request in HTTP/1.0.
    let status = answer.strip_prefix(b"HTTP/1.1 ").or_else(|| answer.strip_prefix(b"HTTP/1.0 "));
    let Some(status) = status else { panic!("not HTTP/1.x: {shown:?} for {:?}", String::from_utf8_lossy(client)) };
    let own_page = shown.contains("<title>kubesocks</title>")
        || shown.to_ascii_lowercase().contains("content-type: application/x-ns-proxy-autoconfig");
    assert!(
        !status.starts_with(b"2") || own_page,
        "a success: {shown:?} for {:?}",
        String::from_utf8_lossy(client)
    );
});
