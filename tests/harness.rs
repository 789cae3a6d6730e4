//! Proof that the local test cluster is a real control plane: the
//! EndpointSlice controller resolves named target ports per pod, and kube-rs
//! port-forwards reach the pods' backends through the API server, on both
//! nodes (the API server handles WebSocket port-forwards differently for each).

mod support;

use serde_json::json;
use support::{Backend, PodSpec, TestNamespace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn endpoint_slices_resolve_a_named_target_port_per_pod() {
    let ns = TestNamespace::new("slices").await;
    let a = Backend::start("web-a", &[8080]).await;
    let b = Backend::start("web-b", &[8081]).await;
    for (name, backend, port) in [("web-a", &a, 8080), ("web-b", &b, 8081)] {
        let mut spec = PodSpec::new(name, backend, &[("web", port)]);
        spec.labels = json!({"app": "web"});
        ns.pod(spec).await;
    }
    ns.service(
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
    )
    .await;

    let slices = ns.ready_endpoints("web", 2).await;
    let mut seen: Vec<(String, i32)> = Vec::new();
    for slice in &slices {
        let ports = slice.ports.clone().unwrap_or_default();
        assert_eq!(ports.len(), 1, "one port per slice: {ports:?}");
        assert_eq!(ports[0].name.as_deref(), Some("http"), "the slice port carries the Service port's name");
        for ep in slice.endpoints.iter().flatten() {
            let pod = ep.target_ref.as_ref().and_then(|r| r.name.clone()).expect("endpoints reference their pod");
            assert_eq!(ep.conditions.as_ref().and_then(|c| c.ready), Some(true));
            seen.push((pod, ports[0].port.unwrap()));
        }
    }
    seen.sort();
    assert_eq!(seen, [("web-a".to_string(), 8080), ("web-b".to_string(), 8081)]);
}

/// Port-forwards to a pod on `node` with kube-rs and reads the backend's answer.
async fn port_forward_reaches_the_backend(node: &str) {
    let ns = TestNamespace::new("pf").await;
    let backend = Backend::start("pf-pod", &[8080]).await;
    let mut spec = PodSpec::new("pf-pod", &backend, &[("http", 8080)]);
    spec.node = node;
    ns.pod(spec).await;

    let mut forwarder = ns.pods().portforward("pf-pod", &[8080]).await.expect("port-forward upgrade");
    let mut stream = forwarder.take_stream(8080).unwrap();
    let kubelet_error = forwarder.take_error(8080).unwrap();
    stream.write_all(b"GET /through-the-apiserver HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("hello from pf-pod on port 8080"), "{answer}");
    assert!(answer.contains("path /through-the-apiserver"), "{answer}");
    drop(stream);
    let reported = tokio::time::timeout(std::time::Duration::from_secs(10), kubelet_error).await;
    assert_eq!(reported, Ok(None), "the kubelet reported no error and the session ended");
}

#[tokio::test]
async fn kube_rs_port_forward_through_a_node_the_apiserver_translates_for() {
    port_forward_reaches_the_backend("node-spdy").await;
}

#[tokio::test]
async fn kube_rs_port_forward_through_a_node_that_takes_websockets() {
    port_forward_reaches_the_backend("node-ws").await;
}
