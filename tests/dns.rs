//! The DNS helper (`proxy-out --listen-dns`) against the real test cluster,
//! asked by the real `dig` over UDP and TCP; then an app's path through it:
//! resolve a cluster name with `dig`, connect with plain `socks5://` (curl
//! resolves nothing itself) to the address, and reach the Service.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::{Backend, PodSpec, Proxy, TestNamespace, cluster, curl, wait_for};

/// What `dig` said: the response code and the answer records as
/// `(name, ttl, type, data)`.
#[derive(Debug)]
struct Dig {
    status: String,
    answers: Vec<(String, u32, String, String)>,
}

impl Dig {
    /// The data of the answers of one type, sorted.
    fn data(&self, kind: &str) -> Vec<String> {
        let mut data: Vec<String> = self.answers.iter().filter(|a| a.2 == kind).map(|a| a.3.clone()).collect();
        data.sort();
        data
    }
}

/// Asks the DNS helper at `server` with the real `dig` (`+tcp` when `tcp`).
async fn dig(server: SocketAddr, name: &str, kind: &str, tcp: bool) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=1", "+time=5", "+noall", "+comments", "+answer"])
        .args(tcp.then_some("+tcp"))
        .args([name, kind])
        .output()
        .await
        .expect("dig is installed (Debian's bind9-dnsutils; tests/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig {name} {kind} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's output: {text}"))
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 5 && f[2] == "IN", "unexpected answer line {l:?}");
            (f[0].to_string(), f[1].parse().unwrap(), f[3].to_string(), f[4..].join(" "))
        })
        .collect();
    Dig { status, answers }
}

/// Asks over UDP and over TCP; both must say the same.
async fn ask(server: SocketAddr, name: &str, kind: &str) -> Dig {
    let udp = dig(server, name, kind, false).await;
    let tcp = dig(server, name, kind, true).await;
    assert_eq!((&udp.status, &udp.answers), (&tcp.status, &tcp.answers), "{name} {kind}: UDP and TCP differ");
    for (owner, ttl, ..) in &udp.answers {
        assert_eq!(owner.trim_end_matches('.'), name.trim_end_matches('.'), "{name} {kind}");
        assert_eq!(*ttl, 5, "{name} {kind}: answers carry a short TTL");
    }
    udp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_gets_every_record_kind_and_a_socks5_client_reaches_the_address() {
    let ns = TestNamespace::new("dns").await;
    let n = &ns.name;
    let web = Backend::start("web-0", &[8080]).await;
    let db0 = Backend::start("db-0", &[5432]).await;
    let db1 = Backend::start("db-1", &[5432]).await;
    let mut spec = PodSpec::new("web-0", &web, &[("http", 8080)]);
    spec.labels = json!({"app": "web"});
    let web_pod = ns.pod(spec).await;
    let mut spec = PodSpec::new("db-0", &db0, &[("pg", 5432)]);
    (spec.labels, spec.hostname) = (json!({"app": "db"}), Some(("db-0", "db")));
    let db0_pod = ns.pod(spec).await;
    let mut spec = PodSpec::new("db-1", &db1, &[("pg", 5432)]);
    (spec.labels, spec.hostname, spec.ready) = (json!({"app": "db"}), Some(("db-1", "db")), false);
    let db1_pod = ns.pod(spec).await;
    let svc = ns
        .service(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        )
        .await;
    ns.service("db", json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432}]}))
        .await;
    ns.ready_endpoints("web", 1).await;
    // Both db pods listed, one of them not ready: the DNS helper must leave that one out.
    let slices = ns.slices();
    wait_for("both db pods in the slices of db, db-0 ready", || async {
        let lp = kube::api::ListParams::default().labels("kubernetes.io/service-name=db");
        let endpoints: Vec<_> =
            slices.list(&lp).await.ok()?.items.into_iter().flat_map(|s| s.endpoints.into_iter().flatten()).collect();
        let ready = endpoints.iter().filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true)).count();
        (endpoints.len() == 2 && ready == 1).then_some(())
    })
    .await;
    let ip_of = |pod: &k8s_openapi::api::core::v1::Pod| pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let (web_ip, db0_ip, db1_ip) = (ip_of(&web_pod), ip_of(&db0_pod), ip_of(&db1_pod));
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();

    let proxy = Proxy::start(&cluster().admin_kubeconfig, &["-n", n, "--listen-dns", "127.0.0.1:0"]).await;
    let server = proxy.dns.expect("proxy-out prints the DNS helper's address");
    assert!(server.ip().is_loopback() && server.port() != 0, "{server}");

    // A: a ClusterIP Service by its full name and its `svc.ns` name.
    for name in [format!("web.{n}.svc.cluster.local"), format!("web.{n}.svc.cluster.local."), format!("web.{n}")] {
        let answer = ask(server, &name, "A").await;
        assert_eq!((answer.status.as_str(), answer.data("A")), ("NOERROR", vec![cluster_ip.clone()]), "{name}");
    }
    // A: a headless Service: its ready endpoint only.
    let answer = ask(server, &format!("db.{n}.svc.cluster.local"), "A").await;
    assert_eq!(answer.data("A"), std::slice::from_ref(&db0_ip), "db-1 ({db1_ip}) is not ready");
    // A: a per-pod name and a dashed pod-IP name.
    let answer = ask(server, &format!("db-0.db.{n}.svc.cluster.local"), "A").await;
    assert_eq!(answer.data("A"), std::slice::from_ref(&db0_ip));
    let dashed = web_ip.replace('.', "-");
    let answer = ask(server, &format!("{dashed}.{n}.pod.cluster.local"), "A").await;
    assert_eq!(answer.data("A"), std::slice::from_ref(&web_ip));

    // AAAA: the test cluster is single-stack IPv4, so an existing name has
    // no AAAA record (NODATA: NOERROR without answers).
    let answer = ask(server, &format!("web.{n}.svc.cluster.local"), "AAAA").await;
    assert_eq!((answer.status.as_str(), answer.answers.len()), ("NOERROR", 0), "{answer:?}");
    // So has a type it does not serve.
    let answer = ask(server, &format!("web.{n}.svc.cluster.local"), "MX").await;
    assert_eq!((answer.status.as_str(), answer.answers.len()), ("NOERROR", 0), "{answer:?}");

    // SRV for named ports: the Service's own name, or each ready pod's name for a headless one.
    let answer = ask(server, &format!("_http._tcp.web.{n}.svc.cluster.local"), "SRV").await;
    assert_eq!(answer.data("SRV"), [format!("0 100 80 web.{n}.svc.cluster.local.")]);
    let answer = ask(server, &format!("_pg._tcp.db.{n}.svc.cluster.local"), "SRV").await;
    assert_eq!(answer.data("SRV"), [format!("0 100 5432 db-0.db.{n}.svc.cluster.local.")]);
    let answer = ask(server, &format!("_grpc._tcp.web.{n}.svc.cluster.local"), "SRV").await;
    assert_eq!(answer.status, "NXDOMAIN", "{answer:?}");

    // NXDOMAIN for unknown cluster names, REFUSED for the rest of the world.
    for name in [format!("nothere.{n}.svc.cluster.local"), format!("nothere.{n}"), "a.b.c.d.e.cluster.local".into()] {
        let answer = ask(server, &name, "A").await;
        assert_eq!((answer.status.as_str(), answer.answers.len()), ("NXDOMAIN", 0), "{name}: {answer:?}");
    }
    for name in ["example.com", "www.example.com", "web"] {
        let answer = ask(server, name, "A").await;
        assert_eq!((answer.status.as_str(), answer.answers.len()), ("REFUSED", 0), "{name}: {answer:?}");
    }

    // An app's path: resolve through the DNS helper, then connect with plain
    // socks5:// (the address, not the name, goes to the proxy).
    let socks = format!("socks5://{}", proxy.socks);
    let resolved = ask(server, &format!("web.{n}.svc.cluster.local"), "A").await.data("A");
    let port = ask(server, &format!("_http._tcp.web.{n}.svc.cluster.local"), "SRV").await.data("SRV")[0]
        .split(' ')
        .nth(2)
        .unwrap()
        .to_string();
    let out = curl(&["--proxy", &socks, &format!("http://{}:{port}/", resolved[0])]).await;
    assert_eq!(out.code, 0, "curl via {socks}: {}", out.stderr);
    assert!(out.stdout.contains("hello from web-0 on port 8080"), "{:?}", out.stdout);
    let resolved = ask(server, &format!("db-0.db.{n}.svc.cluster.local"), "A").await.data("A");
    let out = curl(&["--proxy", &socks, &format!("http://{}:5432/", resolved[0])]).await;
    assert_eq!(out.code, 0, "curl via {socks}: {}", out.stderr);
    assert!(out.stdout.contains("hello from db-0 on port 5432"), "{:?}", out.stdout);
    drop((web, db0, db1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_helper_off_loopback_is_refused_and_a_taken_port_fails_fast() {
    let out = Proxy::try_start(&cluster().admin_kubeconfig, &["--listen-dns", "0.0.0.0:0"])
        .await
        .err()
        .expect("a DNS helper on 0.0.0.0 is refused");
    assert!(out.contains("the DNS helper has no authentication, so it listens on loopback only"), "{out}");
    assert!(out.contains("give --listen-dns a loopback address"), "{out}");

    // A port whose UDP side is taken.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Proxy::try_start(&cluster().admin_kubeconfig, &["--listen-dns", &addr]).await.err().expect("refused");
    assert!(out.contains(&format!("cannot listen on {addr}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_user_gets_its_own_namespace_and_refusals_for_what_rbac_hides() {
    // team-a is the only namespace the restricted user may read: its caches
    // there are namespace-scoped, and default is hidden from it.
    let team: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(support::admin().await, "team-a");
    let name = format!("dns-{}", std::process::id());
    let svc =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80}]}}))
            .unwrap();
    let svc = team.create(&Default::default(), &svc).await.unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();

    let proxy = Proxy::start(&cluster().restricted_kubeconfig(), &["--listen-dns", "127.0.0.1:0"]).await;
    let server = proxy.dns.expect("the DNS helper's address");
    let own = ask(server, &format!("{name}.team-a.svc.cluster.local"), "A").await;
    let srv = ask(server, &format!("_http._tcp.{name}.team-a.svc.cluster.local"), "SRV").await;
    let hidden = ask(server, "kubernetes.default.svc.cluster.local", "A").await;
    let _ = team.delete(&name, &Default::default()).await;
    assert_eq!(own.data("A"), [cluster_ip], "{own:?}");
    assert_eq!(srv.data("SRV"), [format!("0 100 80 {name}.team-a.svc.cluster.local.")]);
    assert_eq!((hidden.status.as_str(), hidden.answers.len()), ("REFUSED", 0), "{hidden:?}");
}
