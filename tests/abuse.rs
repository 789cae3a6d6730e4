//! What a hostile local process or web page can make a running proxy do,
//! tried against the real control plane, each test named for what it tries.
//! (Reading the proxy's own pages cross-site or by DNS rebinding is tried
//! in `tests/browser.rs`, `a_web_page_cannot_read_the_pac_file`, with curl
//! and real Chromium.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Proxy, RawSocks, cluster, status_kib};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `apiserver_request_total` for access reviews, as the API server counts them.
async fn access_reviews() -> f64 {
    let client = support::admin().await;
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect("the admin may read /metrics");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("resource=\"selfsubjectaccessreviews\""))
        .collect();
    assert!(!lines.is_empty(), "no apiserver_request_total lines for selfsubjectaccessreviews in the metrics");
    lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum()
}

/// A user whose RBAC is one namespace's cannot list namespaces, so each
/// `x.<label>.svc` name is a namespace kubesocks must ask RBAC about. A
/// process (or a page through the PAC file) naming 400 made-up namespaces
/// gets them refused; the proxy asks about at most 30 namespaces a minute
/// (two access reviews each where RBAC says no), and its memory stays put.
#[tokio::test]
async fn a_flood_of_made_up_cluster_names_costs_bounded_requests_and_memory() {
    let proxy = Proxy::start(&cluster().restricted_kubeconfig(), &[]).await;
    let names = |range: std::ops::Range<usize>| range.map(|i| format!("web.made-up-{i}.svc.cluster.local"));
    // Warm-up: the allocator's first arenas are not the flood's.
    for name in names(0..20) {
        let mut socks = RawSocks::connect(proxy.socks).await;
        assert_eq!(socks.greet(&[0]).await, 0);
        socks.request_domain(1, &name, 80).await;
    }
    let (reviews_before, rss_before) = (access_reviews().await, status_kib(proxy.pid(), "VmRSS:"));
    let mut codes = std::collections::BTreeMap::new();
    for name in names(20..420) {
        let mut socks = RawSocks::connect(proxy.socks).await;
        assert_eq!(socks.greet(&[0]).await, 0);
        *codes.entry(socks.request_domain(1, &name, 80).await).or_insert(0) += 1;
    }
    let (reviews, rss) = (access_reviews().await - reviews_before, status_kib(proxy.pid(), "VmRSS:"));
    println!("400 made-up namespaces: replies {codes:?}, {reviews} access reviews, RSS {rss_before} -> {rss} KiB");
    assert_eq!(codes.values().sum::<usize>(), 400);
    assert!(!codes.contains_key(&0), "none was forwarded: {codes:?}");
    assert!(reviews <= 2.0 * 30.0, "{reviews} access reviews for 400 made-up namespaces (at most 30 probed, 2 each)");
    assert!(rss < rss_before + 8 * 1024, "RSS grew from {rss_before} to {rss} KiB");
    assert!(proxy.log().contains("namespaces were probed in the last minute"), "the refusal says why: {}", proxy.log());
}

/// Sends `input` as one client, closes the sending side, and returns what
/// came back before the proxy closed; panics if it neither answers nor
/// closes within 10 s.
async fn exchange(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the listener accepts");
    // The proxy may close before reading it all: that is an answer too.
    if stream.write_all(input).await.is_ok() {
        let _ = stream.shutdown().await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "neither an answer nor a close within 10 s for {} bytes starting {:?}",
        input.len(),
        &input[..input.len().min(16)]
    );
    answer
}

/// Oversized and malformed input on every listener (the mixed port, the
/// HTTP port, the DNS helper over UDP and TCP) is answered or closed, never
/// left hanging, and the proxy goes on serving each of them.
#[tokio::test]
async fn oversized_and_malformed_input_on_every_listener_is_answered_or_closed() {
    let proxy =
        Proxy::start(&cluster().admin_kubeconfig, &["--listen-dns", "127.0.0.1:0", "--handshake-timeout", "3"]).await;
    let (http, dns) = (proxy.http.expect("an HTTP listener"), proxy.dns.expect("a DNS helper"));
    let noise: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("255 SOCKS methods", [vec![5, 255], vec![0; 255]].concat()),
        ("a SOCKS name of 255 bytes", [vec![5, 1, 0, 5, 1, 0, 3, 255], vec![b'a'; 255], vec![0, 80]].concat()),
        ("a SOCKS address type that does not exist", vec![5, 1, 0, 5, 1, 0, 9, 1, 2, 3]),
        ("a SOCKS command that does not exist", vec![5, 1, 0, 5, 77, 0, 1, 127, 0, 0, 1, 0, 80]),
        ("64 KiB of noise", noise.clone()),
        (
            "an HTTP head of 1 MiB",
            format!("GET http://x.default/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)).into_bytes(),
        ),
        (
            "100,000 HTTP headers",
            format!("GET http://x.default/ HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(100_000)).into_bytes(),
        ),
        ("CONNECT without a target", b"CONNECT\r\n\r\n".to_vec()),
        ("an HTTP version that does not exist", b"GET / HTTP/9.9\r\n\r\n".to_vec()),
        ("a request line without an end", vec![b'G'; 70_000]),
    ];
    for (listener, addr) in [("the mixed port", proxy.socks), ("the HTTP port", http)] {
        for (what, input) in &inputs {
            let answer = exchange(addr, input).await;
            // Whatever came back is a protocol's answer, not noise.
            assert!(
                answer.is_empty() || answer[0] == 5 || answer.starts_with(b"HTTP/1."),
                "{what} on {listener}: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            );
        }
    }

    // DNS: noise over UDP, and over TCP a message shorter than it says.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for packet in [&noise[..512], &noise[..3], &[][..]] {
        udp.send_to(packet, dns).await.unwrap();
    }
    let answer = exchange(dns, &[[0u8, 200].as_slice(), &noise[..50]].concat()).await;
    assert!(answer.is_empty(), "a cut TCP DNS message gets no answer but a close: {answer:?}");
    let answer = exchange(dns, &[[255u8, 255].as_slice(), &noise[..]].concat()).await;
    assert!(answer.len() < 1024, "{} bytes back for noise", answer.len());

    // Every listener still serves.
    let mut socks = RawSocks::connect(proxy.socks).await;
    assert_eq!(socks.greet(&[0]).await, 0);
    assert_eq!(socks.request_domain(1, "example.com", 80).await, 0x02, "an outside name, refused as ever");
    let head = exchange(http, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").await;
    assert!(head.starts_with(b"HTTP/1.1 403"), "{:?}", String::from_utf8_lossy(&head));
    let dig = tokio::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns.port().to_string(),
            "+short",
            "+time=5",
            "kubernetes.default.svc.cluster.local",
        ])
        .output()
        .await
        .expect("dig is installed (tests/setup installs bind9-dnsutils)");
    let address = String::from_utf8_lossy(&dig.stdout);
    assert!(address.trim().parse::<std::net::IpAddr>().is_ok(), "the DNS helper still answers: {address:?}");
    assert!(proxy.log().lines().all(|l| !l.contains("panicked")), "{}", proxy.log());
}
