//! Any bytes a SOCKS client can send, through a whole engine's SOCKS5
//! listener (fast-socks5's handshake, RFC 1929 auth, the CONNECT, its
//! resolution and dial) over an in-memory API server. It must answer or
//! close within a time limit, never panic (a panic in the connection's task
//! aborts the process too), and never report success: no port-forward can
//! succeed here. The listener is a mixed port: a client whose first byte is
//! not SOCKS5's version 5 is answered as HTTP.
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
    let auth = choice % 2 == 1;
    let answer = if auth { AUTH.socks(client) } else { OPEN.socks(client) };
    check(auth, client, &answer);
});

/// The answer must be SOCKS5 replies in order: method selection, then (with
/// auth) the RFC 1929 status, then a refusal of the command.
fn check(auth: bool, client: &[u8], answer: &[u8]) {
    let fail = |why: &str| -> ! { panic!("{why}: client sent {client:?}, proxy answered {answer:?}") };
    if client.first().is_some_and(|&first| first != 5) {
        // An HTTP client: an HTTP answer (a 400 for most bytes; HTTP/1.0 to
        // an HTTP/1.0 request), or none.
        if !answer.is_empty() && !answer.starts_with(b"HTTP/1.") {
            fail("not an HTTP answer to a client that did not start with SOCKS5's version");
        }
        return;
    }
    let Some(method) = answer.get(..2) else {
        if !answer.is_empty() {
            fail("a partial reply");
        }
        return;
    };
    if method[0] != 5 {
        fail("not a SOCKS5 method selection");
    }
    let mut rest = &answer[2..];
    match (method[1], auth) {
        (0xFF, _) => return assert!(rest.is_empty(), "more after refusing every method: {answer:?}"),
        (0x00, false) => {}
        (0x02, true) => {
            let Some(status) = rest.get(..2) else { return assert!(rest.is_empty(), "partial: {answer:?}") };
            if status[0] != 1 {
                fail("not an RFC 1929 status");
            }
            if status[1] != 0 {
                return assert!(rest.len() == 2, "more after rejecting the password: {answer:?}");
            }
            rest = &rest[2..];
        }
        _ => fail("a method that was not offered"),
    }
    if let Some(reply) = rest.get(..2) {
        if reply[0] != 5 {
            fail("not a SOCKS5 reply");
        }
        if reply[1] == 0 {
            fail("success, though no port-forward can succeed");
        }
    }
}
