//! After warm-up, a proxied connection costs the API server no list or get:
//! resolution reads the watch caches. Measured from the API server's own
//! `apiserver_request_total` counters. In a test binary of its own so that no
//! other test's requests land in the same window.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::{Backend, PodSpec, Proxy, TestNamespace, cluster, curl};

/// Sums `apiserver_request_total` by verb for the kinds resolution reads.
async fn reads_by_verb(client: &kube::Client) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.expect("the admin may read /metrics");
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let resource =
            ["resource=\"services\"", "resource=\"endpointslices\"", "resource=\"pods\"", "resource=\"namespaces\""];
        if !resource.iter().any(|r| line.contains(r))
            || line.contains("subresource=\"") && !line.contains("subresource=\"\"")
        {
            continue;
        }
        let verb = line.split("verb=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or("?").to_string();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *sums.entry(verb).or_insert(0.0) += value;
    }
    sums
}

#[tokio::test]
async fn two_hundred_connections_cost_no_list_or_get() {
    let ns = TestNamespace::new("cost").await;
    let backend = Backend::start("cost-0", &[8080]).await;
    let mut spec = PodSpec::new("cost-0", &backend, &[("http", 8080)]);
    spec.labels = json!({"app": "cost"});
    ns.pod(spec).await;
    ns.service("cost", json!({"selector": {"app": "cost"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("cost", 1).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let url = format!("http://cost.{}/", ns.name);
    // Warm-up: the first connection may start watches.
    assert_eq!(curl(&["--proxy", &proxy.socks_url(), &url]).await.code, 0);

    let client = support::admin().await;
    let before = reads_by_verb(&client).await;
    // The proxy's own caches listed and watched these kinds at start: a scan
    // that found no such line (a renamed metric, a changed format) would
    // otherwise pass below on nothing.
    assert!(
        ["LIST", "WATCH"].iter().all(|verb| before.get(*verb).is_some_and(|n| *n > 0.0)),
        "no apiserver_request_total lines for LIST and WATCH of services, endpointslices and pods were found: {before:?}"
    );
    let mut failures = 0;
    for _ in 0..200 {
        let out = curl(&["--proxy", &proxy.socks_url(), &url]).await;
        failures += usize::from(out.code != 0 || !out.stdout.contains("hello from cost-0"));
    }
    let after = reads_by_verb(&client).await;
    assert_eq!(failures, 0, "every proxied connection succeeded");
    for verb in ["LIST", "GET"] {
        let grew = after.get(verb).copied().unwrap_or(0.0) - before.get(verb).copied().unwrap_or(0.0);
        // Controllers and the stub kubelet read a little on their own; 200
        // connections must not show up here.
        assert!(grew < 20.0, "{verb} requests grew by {grew} over 200 connections: {before:?} -> {after:?}");
        println!("{verb} requests during 200 proxied connections: {grew}");
    }
}
