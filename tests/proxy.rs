//! `kubesocks proxy-out` against the real test cluster, with real clients:
//! curl (SOCKS5 with remote names, HTTP CONNECT, plain HTTP proxy) and a raw
//! SOCKS5 client that checks reply bytes.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::json;
use support::{Backend, CurlOutput, PodSpec, Proxy, RawSocks, TestNamespace, cluster, curl, curl_env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONNECT: u8 = 1;
const BIND: u8 = 2;
const UDP_ASSOCIATE: u8 = 3;

async fn via_socks(proxy: &Proxy, url: &str) -> CurlOutput {
    curl(&["--proxy", &proxy.socks_url(), url]).await
}

fn assert_answer(out: &CurlOutput, who: &str) {
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert!(out.stdout.contains(&format!("hello from {who} ")), "expected an answer from {who}, got {:?}", out.stdout);
}

/// A namespace with a one-pod Service `web` (port 80 → named port `http` = 8080)
/// on `node`, a multi-port Service `multi` whose named targetPort differs per
/// pod, and a headless Service `db` with a StatefulSet-style pod.
struct Workload {
    ns: TestNamespace,
    _backends: Vec<Backend>,
    web_pod_ip: IpAddr,
    web_cluster_ip: IpAddr,
}

async fn workload(prefix: &str, node: &'static str) -> Workload {
    let ns = TestNamespace::new(prefix).await;
    let web = Backend::start("web-0", &[8080]).await;
    let m1 = Backend::start("multi-1", &[8080, 9100]).await;
    let m2 = Backend::start("multi-2", &[8081, 9100]).await;
    let db = Backend::start("db-0", &[5432]).await;

    let mut spec = PodSpec::new("web-0", &web, &[("http", 8080)]);
    (spec.labels, spec.node) = (json!({"app": "web"}), node);
    let web_pod = ns.pod(spec).await;
    for (name, backend, port) in [("multi-1", &m1, 8080), ("multi-2", &m2, 8081)] {
        let mut spec = PodSpec::new(name, backend, &[("web", port), ("metrics", 9100)]);
        (spec.labels, spec.node) = (json!({"app": "multi"}), node);
        ns.pod(spec).await;
    }
    let mut spec = PodSpec::new("db-0", &db, &[("pg", 5432)]);
    (spec.labels, spec.node, spec.hostname) = (json!({"app": "db"}), node, Some(("db-0", "db")));
    ns.pod(spec).await;

    let svc = ns
        .service("web", json!({"selector": {"app": "web"}, "ports": [{"name": "h", "port": 80, "targetPort": "http"}]}))
        .await;
    ns.service(
        "multi",
        json!({"selector": {"app": "multi"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "metrics", "port": 9090, "targetPort": 9100}]}),
    )
    .await;
    ns.service("db", json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]})).await;
    ns.ready_endpoints("web", 1).await;
    ns.ready_endpoints("multi", 2).await;
    ns.ready_endpoints("db", 1).await;

    let web_pod_ip = web_pod.status.unwrap().pod_ip.unwrap().parse().unwrap();
    let web_cluster_ip = svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    Workload { ns, _backends: vec![web, m1, m2, db], web_pod_ip, web_cluster_ip }
}

/// Every name form of SPEC §3 through socks5h, on pods of one node.
async fn every_name_form_reaches_the_right_pod(node: &'static str) {
    let w = workload("names", node).await;
    let ns = &w.ns.name;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &["-n", ns]).await;

    for host in [
        "web".to_string(),
        format!("web.{ns}"),
        format!("web.{ns}.svc"),
        format!("web.{ns}.svc.cluster.local"),
        format!("WEB.{}.SVC.Cluster.Local.", ns.to_uppercase()),
        w.web_cluster_ip.to_string(),
    ] {
        let out = via_socks(&proxy, &format!("http://{host}/")).await;
        assert_answer(&out, "web-0");
        assert!(out.stdout.contains("on port 8080"), "{host}: {}", out.stdout);
    }

    // Pod IP and its dashed DNS form go straight to the pod's port.
    let ip = w.web_pod_ip.to_string();
    assert_answer(&via_socks(&proxy, &format!("http://{ip}:8080/")).await, "web-0");
    let dashed = ip.replace('.', "-");
    assert_answer(&via_socks(&proxy, &format!("http://{dashed}.{ns}.pod.cluster.local:8080/")).await, "web-0");

    // A named targetPort resolves per pod: each pod answers on its own number.
    let mut ports = BTreeMap::new();
    for _ in 0..6 {
        let out = via_socks(&proxy, &format!("http://multi.{ns}:80/")).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let who = if out.stdout.contains("multi-1 on port 8080") {
            "multi-1:8080"
        } else if out.stdout.contains("multi-2 on port 8081") {
            "multi-2:8081"
        } else {
            panic!("unexpected answer {:?}", out.stdout)
        };
        *ports.entry(who).or_insert(0) += 1;
    }
    assert_eq!(ports.len(), 2, "both pods answered on their own port: {ports:?}");
    assert!(via_socks(&proxy, &format!("http://multi.{ns}:9090/")).await.stdout.contains("on port 9100"));

    // The per-pod name of a headless Service.
    assert_answer(&via_socks(&proxy, &format!("http://db-0.db.{ns}.svc.cluster.local:5432/")).await, "db-0");
    assert_answer(&via_socks(&proxy, &format!("http://db.{ns}:5432/")).await, "db-0");
}

#[tokio::test]
async fn name_forms_on_a_node_the_apiserver_translates_for() {
    every_name_form_reaches_the_right_pod("node-spdy").await;
}

#[tokio::test]
async fn name_forms_on_a_node_that_takes_websockets() {
    every_name_form_reaches_the_right_pod("node-ws").await;
}

#[tokio::test]
async fn http_connect_and_plain_http_proxy_requests() {
    let w = workload("http", support::test_node()).await;
    let ns = &w.ns.name;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;

    let tunnel = curl(&["-p", "-x", &proxy.http_url(), &format!("http://web.{ns}/tunnelled")]).await;
    assert_answer(&tunnel, "web-0");
    assert!(tunnel.stdout.contains("path /tunnelled"), "{}", tunnel.stdout);

    let url = format!("http://web.{ns}.svc.cluster.local/plain?q=1");
    let plain = curl_env(&[&url], &[("http_proxy", &proxy.http_url())]).await;
    assert_answer(&plain, "web-0");
    assert!(plain.stdout.contains("path /plain?q=1"), "the pod sees the origin-form path: {}", plain.stdout);

    // Errors come back as HTTP statuses with a one-line reason.
    let status = |args: Vec<String>| async move {
        let mut all = vec!["-o".to_string(), "/dev/stderr".into(), "-w".into(), "%{http_code}".into()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        curl(&refs).await
    };
    let outside = status(vec!["-x".into(), proxy.http_url(), "http://example.com/".into()]).await;
    assert_eq!(outside.stdout, "403", "outside names are forbidden: {}", outside.stderr);
    assert!(outside.stderr.contains("not a name or address inside the cluster"), "{}", outside.stderr);
    let unknown = status(vec!["-x".into(), proxy.http_url(), format!("http://nothere.{ns}.svc/")]).await;
    assert_eq!(unknown.stdout, "502", "{}", unknown.stderr);
    assert!(unknown.stderr.contains("no service nothere"), "{}", unknown.stderr);
    let origin = status(vec![format!("{}/not-a-proxy-request", proxy.http_url())]).await;
    assert_eq!(origin.stdout, "400", "{}", origin.stderr);
}

#[tokio::test]
async fn connections_spread_skip_unready_pods_and_fail_over() {
    let ns = TestNamespace::new("spread").await;
    let a = Backend::start("pod-a", &[8080]).await;
    let b = Backend::start("pod-b", &[8080]).await;
    let c = Backend::start("pod-unready", &[8080]).await;
    for (name, backend, ready) in [("pod-a", &a, true), ("pod-b", &b, true), ("pod-unready", &c, false)] {
        let mut spec = PodSpec::new(name, backend, &[("http", 8080)]);
        (spec.labels, spec.ready) = (json!({"app": "spread"}), ready);
        ns.pod(spec).await;
    }
    ns.service("spread", json!({"selector": {"app": "spread"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("spread", 2).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let url = format!("http://spread.{}/", ns.name);

    let mut seen = BTreeMap::new();
    for _ in 0..50 {
        let out = via_socks(&proxy, &url).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let who = out.stdout.split_whitespace().nth(2).unwrap_or_default().to_string();
        *seen.entry(who).or_insert(0) += 1;
    }
    assert!(!seen.contains_key("pod-unready"), "a not-ready pod got traffic: {seen:?}");
    assert!(seen.get("pod-a") > Some(&0) && seen.get("pod-b") > Some(&0), "50 connections reach both pods: {seen:?}");

    // pod-b's server goes away; the pod still looks ready, so kubesocks must fail over.
    drop(b);
    for i in 0..10 {
        let out = via_socks(&proxy, &url).await;
        assert_answer(&out, "pod-a");
        assert!(out.code == 0, "connection {i} failed: {}", out.stderr);
    }
    assert!(proxy.logged("connection refused").await, "the kubelet's refusal is logged:\n{}", proxy.log());
}

#[tokio::test]
async fn socks_reply_codes_for_every_refusal() {
    let ns = TestNamespace::new("codes").await;
    let backend = Backend::start("lonely", &[8080]).await;
    let mut spec = PodSpec::new("lonely", &backend, &[("http", 8080)]);
    (spec.labels, spec.ready) = (json!({"app": "lonely"}), false);
    let pod = ns.pod(spec).await;
    ns.service("unready", json!({"selector": {"app": "lonely"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let n = &ns.name;
    let pod_ip = pod.status.unwrap().pod_ip.unwrap();

    let code = |host: String, port: u16, command: u8| {
        let proxy = proxy.socks;
        async move {
            let mut s = RawSocks::connect(proxy).await;
            assert_eq!(s.greet(&[0]).await, 0, "no-auth accepted");
            s.request_domain(command, &host, port).await
        }
    };
    assert_eq!(code(format!("nothere.{n}.svc"), 80, CONNECT).await, 0x04, "unknown Service");
    assert_eq!(code(format!("unready.{n}"), 80, CONNECT).await, 0x04, "no ready endpoint");
    assert_eq!(code("example.com".into(), 80, CONNECT).await, 0x02, "outside name");
    assert_eq!(code("8.8.8.8".into(), 53, CONNECT).await, 0x02, "outside address");
    assert_eq!(code(format!("unready.{n}"), 81, CONNECT).await, 0x05, "port the Service does not expose");
    assert_eq!(code(pod_ip.clone(), 9999, CONNECT).await, 0x05, "the pod's port refuses");
    assert_eq!(code(format!("unready.{n}"), 80, BIND).await, 0x07, "BIND");
    assert_eq!(code(format!("unready.{n}"), 80, UDP_ASSOCIATE).await, 0x07, "UDP ASSOCIATE");

    // Address type 0x05 does not exist.
    let mut s = RawSocks::connect(proxy.socks).await;
    assert_eq!(s.greet(&[0]).await, 0);
    s.stream.write_all(&[5, CONNECT, 0, 5, 1, 2, 3, 4, 0, 80]).await.unwrap();
    assert_eq!(s.read_reply().await, 0x08, "unknown address type");

    // Only GSSAPI (0x01) offered: no acceptable method.
    let mut s = RawSocks::connect(proxy.socks).await;
    assert_eq!(s.greet(&[1]).await, 0xFF, "no acceptable auth method");

    assert!(proxy.logged("connection refused").await, "the kubelet's own message is logged:\n{}", proxy.log());
    assert!(proxy.logged(&format!("nothere.{n}.svc:80")).await, "the target is logged:\n{}", proxy.log());
}

#[tokio::test]
async fn restricted_user_is_told_what_rbac_forbids() {
    // team-a is the only namespace the restricted user may read and port-forward in.
    let admin = support::admin().await;
    let team: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(admin.clone(), "team-a");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(admin.clone(), "team-a");
    let name = format!("rbac-{}", std::process::id());
    let backend = Backend::start(&name, &[8080]).await;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {"kubesocks.test/backend": backend.ip.to_string()}},
        "spec": {"nodeName": support::test_node(), "containers": [{"name": "main", "image": "x", "ports": [{"containerPort": 8080}]}]}
    }))
    .unwrap();
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    team.create(&Default::default(), &svc).await.unwrap();
    let cleanup = || async {
        let _ = pods.delete(&name, &Default::default()).await;
        let _ = team.delete(&name, &Default::default()).await;
    };

    // (The restricted user may only `create` pods/portforward, as kubectl
    // documents; forced to a GET upgrade, its twin that may also `get` is used.)
    let proxy = Proxy::start(&cluster().restricted_kubeconfig_for_protocol(), &[]).await;
    // Its own namespace works, through namespace-scoped caches.
    let ok = support::wait_for("the restricted user's service to answer", || async {
        let out = via_socks(&proxy, &format!("http://{name}.team-a.svc/")).await;
        (out.code == 0).then_some(out)
    })
    .await;
    assert_answer(&ok, &name);

    let mut s = RawSocks::connect(proxy.socks).await;
    s.greet(&[0]).await;
    let reply = s.request_domain(CONNECT, "kubernetes.default.svc.cluster.local", 443).await;
    cleanup().await;
    assert_eq!(reply, 0x02, "a namespace RBAC hides is not allowed");
    assert!(
        proxy.logged("RBAC does not allow list services in namespace default").await,
        "the missing permission is named:\n{}",
        proxy.log()
    );
}

#[tokio::test]
async fn where_rbac_allows_only_gets_names_are_looked_up_directly() {
    // The restricted user may get (not list or watch) services, endpoints and
    // pods here, and port-forward: no watch cache is possible, direct GETs are.
    let w = workload("gets", support::test_node()).await;
    let ns = &w.ns.name;
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "get-only", "namespace": ns},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]}
        ]
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "get-only", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "get-only"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "restricted"}]
    });
    let admin = support::admin().await;
    let roles: kube::Api<k8s_openapi::api::rbac::v1::Role> = kube::Api::namespaced(admin.clone(), ns);
    let bindings: kube::Api<k8s_openapi::api::rbac::v1::RoleBinding> = kube::Api::namespaced(admin, ns);
    roles.create(&Default::default(), &serde_json::from_value(role).unwrap()).await.expect("create role");
    bindings.create(&Default::default(), &serde_json::from_value(binding).unwrap()).await.expect("create binding");
    let restricted = support::client_for(&cluster().restricted_kubeconfig()).await;
    let endpoints: kube::Api<k8s_openapi::api::core::v1::Endpoints> = kube::Api::namespaced(restricted.clone(), ns);
    support::wait_for("the restricted user's GET rights", || async { endpoints.get_opt("web").await.ok()? }).await;
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(restricted, ns);
    assert!(services.list(&Default::default()).await.is_err(), "listing stays forbidden");

    let proxy = Proxy::start(&cluster().restricted_kubeconfig(), &[]).await;
    for host in [format!("web.{ns}.svc.cluster.local"), format!("web.{ns}")] {
        let out = via_socks(&proxy, &format!("http://{host}/")).await;
        assert_answer(&out, "web-0");
        assert!(out.stdout.contains("on port 8080"), "{host}: {}", out.stdout);
    }
    // The named targetPort still resolves per pod (Endpoints keep one subset per port set).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let out = via_socks(&proxy, &format!("http://multi.{ns}.svc/")).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let who = ["multi-1 on port 8080", "multi-2 on port 8081"].into_iter().find(|w| out.stdout.contains(w));
        seen.insert(who.unwrap_or_else(|| panic!("unexpected answer: {}", out.stdout)));
    }
    assert_eq!(seen.len(), 2, "both pods answer, each on its own port: {seen:?}");
    // A per-pod name, through the headless Service's Endpoints and a GET of the pod.
    assert_answer(&via_socks(&proxy, &format!("http://db-0.db.{ns}.svc.cluster.local:5432/")).await, "db-0");

    let reply = async |host: &str, port: u16| {
        let mut s = RawSocks::connect(proxy.socks).await;
        s.greet(&[0]).await;
        s.request_domain(CONNECT, host, port).await
    };
    assert_eq!(reply(&format!("nothere.{ns}.svc"), 80).await, 0x04, "an unknown Service is unreachable");
    assert_eq!(reply(&format!("web.{ns}.svc"), 81).await, 0x05, "a port the Service lacks is refused");
    let dashed = w.web_pod_ip.to_string().replace('.', "-");
    assert_eq!(reply(&format!("{dashed}.{ns}.pod.cluster.local"), 8080).await, 0x02, "no pod by IP with GETs alone");
    assert!(proxy.logged("looked up with GETs").await, "the fallback is logged:\n{}", proxy.log());
    assert!(proxy.logged("so pods there cannot be found by IP").await, "the refusal says why:\n{}", proxy.log());
}

#[tokio::test]
async fn early_data_and_half_close_still_get_the_full_answer() {
    let w = workload("early", support::test_node()).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let host = format!("web.{}", w.ns.name);

    // Greeting, CONNECT and the HTTP request in one write, then FIN.
    let mut all = vec![5, 1, 0, 5, CONNECT, 0, 3, host.len() as u8];
    all.extend_from_slice(host.as_bytes());
    all.extend_from_slice(&80u16.to_be_bytes());
    all.extend_from_slice(b"GET /early HTTP/1.1\r\nHost: web\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(proxy.socks).await.unwrap();
    stream.write_all(&all).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the answer arrives and the connection closes")
        .unwrap();
    assert_eq!(&answer[..2], &[5, 0], "no-auth chosen");
    assert_eq!(&answer[2..4], &[5, 0], "CONNECT succeeded");
    let http = String::from_utf8_lossy(&answer[12..]);
    assert!(http.starts_with("HTTP/1.1 200 OK"), "{http}");
    assert!(http.contains("hello from web-0 on port 8080") && http.contains("path /early"), "{http}");
}

#[tokio::test]
async fn credentials_guard_the_proxy_and_never_reach_the_log() {
    let w = workload("auth", support::test_node()).await;
    let kubeconfig = &cluster().admin_kubeconfig;

    let open = Proxy::try_start(kubeconfig, &["--listen-http", "0.0.0.0:0"]).await;
    let err = open.err().expect("a non-loopback listener without --auth is refused");
    assert!(err.contains("set credentials (KUBESOCKS_AUTH=USER:PASSWORD or --auth-file FILE)"), "{err}");

    let proxy = Proxy::start(kubeconfig, &["--auth", "alice:wonder-land"]).await;
    assert!(
        proxy.log().contains("--auth on the command line can be read by every user of this machine"),
        "a password on the command line is warned of: {}",
        proxy.log()
    );
    let url = format!("http://web.{}/", w.ns.name);
    let good = format!("socks5h://alice:wonder-land@{}", proxy.socks);
    assert_answer(&curl(&["--proxy", &good, &url]).await, "web-0");
    let bad = format!("socks5h://alice:nope@{}", proxy.socks);
    assert_ne!(curl(&["--proxy", &bad, &url]).await.code, 0, "a wrong password is rejected");
    assert_ne!(via_socks(&proxy, &url).await.code, 0, "no credentials, no proxy");
    let http = proxy.http.unwrap();
    assert_answer(&curl(&["-x", &format!("http://alice:wonder-land@{http}"), &url]).await, "web-0");
    let denied = curl(&["-w", "%{http_code}", "-o", "/dev/null", "-x", &format!("http://{http}"), &url]).await;
    assert_eq!(denied.stdout, "407");
    assert!(!proxy.log().contains("wonder-land"), "the password never appears in the log");
}

/// The safe ways to give the proxy its password: a file only its owner can
/// read (anything else is refused, saying why), or `KUBESOCKS_AUTH`. Neither
/// is warned of; neither shows on the command line.
#[tokio::test]
async fn credentials_come_from_an_owner_only_file_or_the_environment() {
    use std::os::unix::fs::PermissionsExt as _;
    let w = workload("authfile", support::test_node()).await;
    let kubeconfig = &cluster().admin_kubeconfig;
    let file = std::env::temp_dir().join(format!("kubesocks-auth-{}", std::process::id()));
    std::fs::write(&file, "carol:from-a-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    let err = Proxy::try_start(kubeconfig, &["--auth-file", path]).await.err().expect("a file others can read");
    assert!(err.contains("can be read by other users (mode 644)") && !err.contains("from-a-file"), "{err}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let proxy = Proxy::start(kubeconfig, &["--auth-file", path]).await;
    let url = format!("http://web.{}/", w.ns.name);
    assert_answer(&curl(&["--proxy", &format!("socks5h://carol:from-a-file@{}", proxy.socks), &url]).await, "web-0");
    assert_ne!(via_socks(&proxy, &url).await.code, 0, "no credentials, no proxy");
    assert!(!proxy.log().contains("warning"), "{}", proxy.log());
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn start_up_errors_say_what_went_wrong() {
    let kubeconfig = &cluster().admin_kubeconfig;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let err = Proxy::try_start(kubeconfig, &["--listen-http", &port]).await.err().expect("port in use");
    assert!(
        err.contains(&format!("cannot listen on {port}")) && err.contains("another program uses this port"),
        "{err}"
    );

    let err = Proxy::try_start(kubeconfig, &["--context", "no-such-context"]).await.err().expect("unknown context");
    assert!(err.contains("no context \"no-such-context\"") && err.contains("kubesocks-test"), "{err}");

    // A kubeconfig whose server is not listening.
    let dead = std::env::temp_dir().join(format!("dead-{}.kubeconfig", std::process::id()));
    let text = std::fs::read_to_string(kubeconfig)
        .unwrap()
        .replace(cluster().get("KUBESOCKS_APISERVER"), "https://127.0.0.1:1");
    std::fs::write(&dead, text).unwrap();
    let err = Proxy::try_start(&dead, &[]).await.err().expect("dead API server");
    let _ = std::fs::remove_file(&dead);
    assert!(err.contains("cannot reach the API server at https://127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn ctrl_c_stops_the_proxy_cleanly() {
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let addr = proxy.socks;
    let status = proxy.interrupt().await;
    assert!(status.success(), "exit status after Ctrl-C: {status}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port is closed after exit");
}

#[tokio::test]
async fn a_client_that_leaves_does_not_keep_its_pod_session_open() {
    let ns = TestNamespace::new("linger").await;
    let backend = Backend::start_keep_alive("kept", &[8080]).await;
    let mut spec = PodSpec::new("kept", &backend, &[("http", 8080)]);
    spec.labels = json!({"app": "kept"});
    ns.pod(spec).await;
    ns.service("kept", json!({"selector": {"app": "kept"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("kept", 1).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;

    // curl reads the answer and closes; the keep-alive server would wait for ever.
    assert_answer(&via_socks(&proxy, &format!("http://kept.{}/", ns.name)).await, "kept");
    let left = std::time::Instant::now();
    let closed = backend.closed_by_peer.clone();
    support::wait_for("the pod's server to see its client go", || async {
        (closed.load(std::sync::atomic::Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    let took = left.elapsed();
    println!("the pod's server saw its client go {took:?} after it left");
    if support::forced_protocol_carries_fin() {
        // SPDY: the client's FIN is the stream's FIN, at once, not after the 2 s linger.
        assert!(took < std::time::Duration::from_secs(1), "the FIN reached the pod only after {took:?}");
    } else {
        // v4 cannot carry a FIN: the session ends once the pod was silent for the 2 s linger.
        assert!(took < std::time::Duration::from_secs(5), "the linger ended the session only after {took:?}");
    }
}

#[tokio::test]
async fn clients_that_stall_in_their_handshake_are_dropped() {
    let proxy =
        Proxy::start(&cluster().admin_kubeconfig, &["--listen-http", "127.0.0.1:0", "--handshake-timeout", "1"]).await;
    // Half a SOCKS greeting; half an HTTP request head.
    let stalls: [(SocketAddr, &[u8]); 2] =
        [(proxy.socks, &[5, 2]), (proxy.http.unwrap(), b"GET http://web.default/ HTTP/1.1\r\nHost: w")];
    for (addr, partial) in stalls {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(partial).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(15), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "{addr}: a stalled client is dropped after the handshake timeout");
    }
}

/// A namespace with one Service `web` (port 80 → 8080) on one pod served by `backend`.
async fn one_service(prefix: &str, backend: &Backend) -> (TestNamespace, IpAddr) {
    let ns = TestNamespace::new(prefix).await;
    let mut spec = PodSpec::new("web-0", backend, &[("http", 8080)]);
    spec.labels = json!({"app": "web"});
    ns.pod(spec).await;
    let svc = ns.service("web", json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("web", 1).await;
    (ns, svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap())
}

#[tokio::test]
async fn plain_http_requests_are_forwarded_as_the_url_says() {
    let backend = Backend::start_echo("echo-0", &[8080]).await;
    let (ns, _) = one_service("fwd", &backend).await;
    let n = &ns.name;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &["-v"]).await;
    let http = proxy.http.unwrap();

    // No path, only a query: the pod is asked for `/?x=1` (this used to panic the connection's task).
    let answer = support::raw_http(
        http,
        &format!("GET http://web.{n}?x=1 HTTP/1.1\r\nHost: web.{n}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("path /?x=1"), "{answer}");

    // The Host comes from the URL; headers `Connection` names stay here; the token stays out of the log.
    let request = format!(
        "GET http://web.{n}:80/echo?token=kubesocks-query-secret HTTP/1.1\r\nHost: evil.example\r\n\
         Connection: close, X-Hop\r\nX-Hop: drop-me\r\nProxy-Connection: keep-alive\r\nX-Keep: kept\r\n\r\n"
    );
    let answer = support::raw_http(http, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let head =
        answer.split("head:\n").nth(1).unwrap_or_else(|| panic!("no echoed head: {answer}")).to_ascii_lowercase();
    assert!(head.starts_with("get /echo?token=kubesocks-query-secret http/1.1"), "{head}");
    assert!(head.contains(&format!("\nhost: web.{n}:80\n")), "the Host is the URL's: {head}");
    assert!(!head.contains("evil.example"), "the client's Host is replaced: {head}");
    assert!(!head.contains("x-hop") && !head.contains("drop-me"), "headers named in Connection are removed: {head}");
    assert!(!head.contains("proxy-connection") && !head.contains("\nconnection:"), "{head}");
    assert!(head.contains("\nx-keep: kept\n"), "{head}");
    assert!(proxy.logged(&format!("web.{n}:80")).await, "{}", proxy.log());
    assert!(!proxy.log().contains("kubesocks-query-secret"), "query strings are never logged:\n{}", proxy.log());
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_until_some_finish() {
    let backend = Backend::start_keep_alive("capped", &[8080]).await;
    let (ns, _) = one_service("cap", &backend).await;
    let host = format!("web.{}", ns.name);
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--max-connections", "5"]).await;

    let mut held = Vec::new();
    for i in 0..5 {
        let mut s = RawSocks::connect(proxy.socks).await;
        assert_eq!(s.greet(&[0]).await, 0);
        assert_eq!(s.request_domain(CONNECT, &host, 80).await, 0x00, "connection {i} under the cap");
        held.push(s);
    }
    println!("connections held: {}", held.len());
    let mut sixth = RawSocks::connect(proxy.socks).await;
    assert_eq!(sixth.greet(&[0]).await, 0, "a client over the cap is still told why");
    assert_eq!(sixth.request_domain(CONNECT, &host, 80).await, 0x01, "the 6th is refused: general failure");
    let busy = support::raw_http(
        proxy.http.unwrap(),
        &format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(busy.starts_with("HTTP/1.1 503"), "HTTP over the cap gets 503: {busy:?}");
    assert!(busy.contains("5 client connections are open"), "{busy}");
    assert!(proxy.logged("new clients are refused until some finish").await, "{}", proxy.log());
    assert_eq!(proxy.log().matches("new clients are refused").count(), 1, "logged once, not per client");

    // One client leaves: a new one is served again.
    drop(held.pop());
    let start = std::time::Instant::now();
    support::wait_for("a connection to be served again", || async {
        let mut s = RawSocks::connect(proxy.socks).await;
        s.greet(&[0]).await;
        (s.request_domain(CONNECT, &host, 80).await == 0x00).then_some(s)
    })
    .await;
    println!("served again {:?} after one connection closed", start.elapsed());
}

#[tokio::test]
async fn passthrough_does_not_dial_this_machine_unless_allowed() {
    // Something on this machine that passthrough must not hand out.
    let local = Backend::start("local-only", &[8080]).await;
    let backend = Backend::start("mapped", &[8080]).await;
    let (ns, cluster_ip) = one_service("local", &backend).await;
    // A name that resolves to this machine: an ExternalName for localhost (a
    // short `localhost` is a Service name, never dialled directly).
    ns.service("ext", json!({"type": "ExternalName", "externalName": "localhost", "ports": [{"port": 8080}]})).await;
    let ext = format!("ext.{}", ns.name);
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--passthrough"]).await;
    let IpAddr::V4(local_v4) = local.ip else { panic!("an IPv4 loopback backend") };

    let code = async |host: &str, port: u16| {
        let mut s = RawSocks::connect(proxy.socks).await;
        s.greet(&[0]).await;
        s.request_domain(CONNECT, host, port).await
    };
    let ip_code = async |ip: IpAddr, port: u16| {
        let mut s = RawSocks::connect(proxy.socks).await;
        s.greet(&[0]).await;
        s.request_ip(CONNECT, ip, port).await
    };
    let v4 = local_v4.to_string();
    let dashed_short = format!("{}.{}", local_v4.octets()[0], u32::from(local_v4) & 0xff_ffff);
    for host in
        [v4.as_str(), ext.as_str(), "127.1", dashed_short.as_str(), "0.0.0.0", "::1", "[::1]", "::", "169.254.169.254"]
    {
        assert_eq!(code(host, 8080).await, 0x02, "{host} is this machine: not allowed");
    }
    assert_eq!(ip_code(local.ip, 8080).await, 0x02, "IPv4 address type");
    assert_eq!(ip_code(IpAddr::V6(local_v4.to_ipv6_mapped()), 8080).await, 0x02, "IPv4-mapped IPv6 address type");
    assert!(proxy.logged("an address of this machine").await, "the refusal says why:\n{}", proxy.log());
    let url = format!("http://{ext}:8080/");
    let http = curl(&["--noproxy", "", "-o", "/dev/stderr", "-w", "%{http_code}", "-x", &proxy.http_url(), &url]).await;
    assert_eq!(http.stdout, "403", "{}", http.stderr);
    assert!(http.stderr.contains("localhost is 127.0.0.1, an address of this machine"), "{}", http.stderr);

    // An IPv4-mapped ClusterIP is the Service, through the cluster.
    let mapped = IpAddr::V6(match cluster_ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    });
    assert_eq!(ip_code(mapped, 80).await, 0x00, "::ffff:{cluster_ip} is the Service");
    let out = curl(&["--proxy", &proxy.socks_url(), &format!("http://[{mapped}]/")]).await;
    assert_answer(&out, "mapped");

    // Named explicitly, this machine is dialled.
    let allowed = Proxy::start(&cluster().admin_kubeconfig, &["--passthrough", "--passthrough-allow-local"]).await;
    let out = curl(&["--proxy", &allowed.socks_url(), &format!("http://{v4}:8080/")]).await;
    assert_answer(&out, "local-only");
    let err = Proxy::try_start(&cluster().admin_kubeconfig, &["--passthrough-allow-local"]).await.err().unwrap();
    assert!(err.contains("--passthrough"), "the flag needs --passthrough: {err}");
}

#[tokio::test]
async fn client_chosen_names_reach_the_log_escaped_and_without_colour_codes() {
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let mut s = RawSocks::connect(proxy.socks).await;
    s.greet(&[0]).await;
    let name = "evil\n2026-01-01T00:00:00Z  INFO forged line\x1b[31m.example";
    assert_eq!(s.request_domain(CONNECT, name, 80).await, 0x02, "not a cluster name");
    let escaped = "evil\\n2026-01-01T00:00:00Z  INFO forged line\\u{1b}[31m.example:80";
    assert!(proxy.logged(escaped).await, "the name is logged escaped:\n{}", proxy.log());
    let log = proxy.log();
    assert!(!log.contains("\nINFO forged") && !log.contains("\n2026-01-01T00:00:00Z  INFO forged"), "{log}");
    assert!(!log.contains("\x1b["), "stderr is not a terminal here: no colour codes:\n{log:?}");
}

#[tokio::test]
async fn out_of_range_settings_are_refused_with_the_range() {
    for (args, says) in [
        (&["proxy-out", "--handshake-timeout", "0"][..], "invalid value '0' for '--handshake-timeout <SECONDS>'"),
        (&["proxy-out", "--max-connections", "0"][..], "invalid value '0' for '--max-connections <N>'"),
        (
            &["proxy-out", "--drain-seconds", "99999999999"][..],
            "invalid value '99999999999' for '--drain-seconds <SECONDS>'",
        ),
        (&["connect", "--max-connections", "0"][..], "invalid value '0' for '--max-connections <N>'"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks")).args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says) && stderr.contains("is not in"), "{args:?}: {stderr}");
    }
}
