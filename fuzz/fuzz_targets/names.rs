//! The name parser and the resolution rules on any host a client can send:
//! never a panic, and only RFC 1123 labels are ever looked up (see
//! `kubesocks_engine::fuzz::name` for what else is checked).
//!
//! Input: lines of text, `host`, then optionally the port (default 80), the
//! cluster domain (default `cluster.local`) and the default namespace
//! (default `default`; one that is not a label is replaced by `default`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // SOCKS names arrive as bytes; the engine reads them as text, lossily.
    let text = String::from_utf8_lossy(input);
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or_default();
    let port = lines.next().and_then(|p| p.trim().parse().ok()).unwrap_or(80);
    let domain = lines.next().unwrap_or("cluster.local");
    let namespace = lines.next().filter(|n| is_label(n)).unwrap_or("default");
    kubesocks_engine::fuzz::name(host, port, domain, namespace);
});

fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
