//! What a hostile local process or web page can make a running proxy do,
//! tried against the real control plane, each test named for what it tries.
//! (Reading the proxy's own pages cross-site or by DNS rebinding is tried
//! in `tests/browser.rs`, with real Chromium; malformed SOCKS and HTTP
//! input in `tests/proxy.rs`, `bad_input_gets_a_clear_error_and_loses_nothing`.)

mod support;

use support::{Proxy, RawSocks, cluster};

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

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the proxy runs");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
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
    let (reviews_before, rss_before) = (access_reviews().await, rss_kib(proxy.pid()));
    let mut codes = std::collections::BTreeMap::new();
    for name in names(20..420) {
        let mut socks = RawSocks::connect(proxy.socks).await;
        assert_eq!(socks.greet(&[0]).await, 0);
        *codes.entry(socks.request_domain(1, &name, 80).await).or_insert(0) += 1;
    }
    let (reviews, rss) = (access_reviews().await - reviews_before, rss_kib(proxy.pid()));
    println!("400 made-up namespaces: replies {codes:?}, {reviews} access reviews, RSS {rss_before} -> {rss} KiB");
    assert_eq!(codes.values().sum::<usize>(), 400);
    assert!(!codes.contains_key(&0), "none was forwarded: {codes:?}");
    assert!(reviews <= 2.0 * 30.0, "{reviews} access reviews for 400 made-up namespaces (at most 30 probed, 2 each)");
    assert!(rss < rss_before + 8 * 1024, "RSS grew from {rss_before} to {rss} KiB");
    assert!(proxy.log().contains("namespaces were probed in the last minute"), "the refusal says why: {}", proxy.log());
}
