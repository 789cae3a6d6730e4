//! Managed mode against the real test cluster, through real processes:
//! `kubesocks connect / status / disconnect / quit` and the `kubesocks daemon`
//! they start, each test in a state directory of its own.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::managed::{Managed, alive};
use support::{Backend, TestNamespace, cluster, curl, free_port};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn addr(connection: &Value, key: &str) -> SocketAddr {
    connection[key].as_str().unwrap_or_else(|| panic!("no {key} in {connection}")).parse().unwrap()
}

fn port_is_free(addr: SocketAddr) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// A Service `name` (port 80 → 8080) with one pod served by a backend called `who`, in `namespace`.
async fn service_in(namespace: &str, name: &str, who: &str) -> (Backend, impl AsyncFnOnce()) {
    let client = support::admin().await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), namespace);
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client, namespace);
    let backend = Backend::start(who, &[8080]).await;
    let pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {"kubesocks.test/backend": backend.ip.to_string()}},
        "spec": {"nodeName": "node-ws", "containers": [{"name": "main", "image": "x", "ports": [{"containerPort": 8080}]}]}
    }))
    .unwrap();
    let svc = serde_json::from_value(json!({
        "metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.expect("create pod");
    services.create(&Default::default(), &svc).await.expect("create service");
    let name = name.to_string();
    let cleanup = async move || {
        let _ = pods.delete(&name, &Default::default()).await;
        let _ = services.delete(&name, &Default::default()).await;
    };
    (backend, cleanup)
}

/// A Service `<test>-svc` in a namespace of the test's own (deleted with it),
/// served by a backend called `test`: `(namespace, backend, url)`. Tests make
/// their own targets: the demo objects exist only after `tests/cluster/up --demo`.
async fn own_service(test: &str) -> (TestNamespace, Backend, String) {
    let ns = TestNamespace::new(test).await;
    let name = format!("{test}-svc");
    let (backend, _) = service_in(&ns.name, &name, test).await;
    let url = format!("http://{name}.{}/", ns.name);
    (ns, backend, url)
}

/// curl through a SOCKS URL until it answers (new pods take a moment to get endpoints).
async fn answer_via(socks_url: &str, url: &str) -> String {
    support::wait_for(&format!("{url} through {socks_url}"), || async {
        let out = curl(&["--proxy", socks_url, url]).await;
        (out.code == 0).then_some(out.stdout)
    })
    .await
}

#[tokio::test]
async fn two_contexts_get_their_own_ids_ports_and_namespaces() {
    let m = Managed::new("two");
    // The same short name in each context's own namespace, served by different backends.
    let ns = TestNamespace::new("managed").await;
    let name = format!("mg-{}", std::process::id());
    let (_a, cleanup_a) = service_in(&ns.name, &name, "admin-side").await;
    let (_b, cleanup_b) = service_in("team-a", &name, "team-side").await;

    let admin = m.connect(&["--context", "kubesocks-test", "-n", &ns.name, "--listen-socks", "127.0.0.1:0"]).await;
    let team = m.connect(&["--context", "kubesocks-test-restricted", "--listen-socks", "127.0.0.1:0"]).await;
    assert_ne!(admin["id"], team["id"], "each connection has its own ID");
    assert_ne!(addr(&admin, "socks"), addr(&team, "socks"), "each connection has its own port");
    assert_eq!(team["namespace"], "team-a");

    let via_admin = answer_via(admin["socks_url"].as_str().unwrap(), &format!("http://{name}/")).await;
    let via_team = answer_via(team["socks_url"].as_str().unwrap(), &format!("http://{name}/")).await;
    cleanup_a().await;
    cleanup_b().await;
    assert!(via_admin.contains("hello from admin-side"), "admin context reaches its namespace: {via_admin}");
    assert!(via_team.contains("hello from team-side"), "restricted context reaches team-a: {via_team}");

    let status = m.status().await;
    let ids: Vec<&Value> = status["connections"].as_array().unwrap().iter().map(|c| &c["id"]).collect();
    assert_eq!(ids, [&admin["id"], &team["id"]], "status lists both, oldest first");

    // Each connection's log holds its own traffic and nothing of the other's.
    let log = |c: &Value| std::fs::read_to_string(c["log"].as_str().unwrap()).unwrap();
    let (admin_log, team_log) = (log(&admin), log(&team));
    assert!(admin_log.contains(&format!("{}/{name}", ns.name)) && !admin_log.contains("team-a/"), "{admin_log}");
    assert!(team_log.contains(&format!("team-a/{name}")) && !team_log.contains(&ns.name), "{team_log}");
}

#[tokio::test]
async fn one_shared_port_reaches_every_context_by_its_alias_and_picks_up_later_ones() {
    let m = Managed::new("shared");
    let ns = TestNamespace::new("shared").await;
    let name = format!("sh-{}", std::process::id());
    let (_a, cleanup_a) = service_in(&ns.name, &name, "admin-side").await;
    let (_b, cleanup_b) = service_in("team-a", &name, "team-side").await;
    let admin = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    assert_eq!(admin["alias"], "kubesocks-test", "the context name is the alias");

    // Opened after the first connection, with it as the default context.
    let port = format!("127.0.0.1:{}", free_port());
    let run = m.ok(&["shared-port", &port, "--default", "kubesocks-test", "-o", "json"]).await;
    let shared: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    let url = shared["socks_url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("socks5h://{port}"));
    assert_eq!(shared["pac_url"], format!("http://{port}/proxy.pac"));

    let via_alias = answer_via(&url, &format!("http://{name}.{}.kubesocks-test/", ns.name)).await;
    assert!(via_alias.contains("hello from admin-side"), "{via_alias}");
    let via_default = answer_via(&url, &format!("http://{name}.{}.svc.cluster.local/", ns.name)).await;
    assert!(via_default.contains("hello from admin-side"), "names without an alias: {via_default}");
    // The restricted context is not connected yet: its alias is no alias, and team-a no namespace of the default.
    let early = curl(&["--proxy", &url, &format!("http://{name}.team-a.restricted/")]).await;
    assert_ne!(early.code, 0, "{}", early.stdout);

    // Connected later, with an alias of its own: reachable on the same port, no restart.
    let team = m
        .connect(&["--context", "kubesocks-test-restricted", "--listen-socks", "127.0.0.1:0", "--alias", "Restricted"])
        .await;
    assert_eq!(team["alias"], "restricted");
    let via_team = answer_via(&url, &format!("http://{name}.team-a.restricted/")).await;
    assert!(via_team.contains("hello from team-side"), "{via_team}");
    let short = answer_via(&url, &format!("http://{name}.restricted/")).await;
    assert!(short.contains("hello from team-side"), "a short name in the context's own namespace: {short}");
    // Both requests counted by the connection that served them.
    let status = m.status().await;
    assert_eq!(status["shared_port"]["default_context"], "kubesocks-test");
    let total = |id: &Value| {
        let conns = status["connections"].as_array().unwrap();
        conns.iter().find(|c| c["id"] == *id).unwrap()["total_connections"].as_u64().unwrap()
    };
    assert!(total(&team["id"]) >= 2, "{status}");
    assert!(total(&admin["id"]) >= 2, "{status}");

    // The PAC file on the shared port covers both contexts.
    let pac = curl(&[shared["pac_url"].as_str().unwrap()]).await;
    assert!(
        pac.stdout.contains(r#"alias: ".restricted""#) && pac.stdout.contains(r#"alias: ".kubesocks-test""#),
        "{}",
        pac.stdout
    );

    // Disconnected: its alias is refused again; the shared port closes on request.
    m.ok(&["disconnect", team["id"].as_str().unwrap()]).await;
    let gone = curl(&["--proxy", &url, &format!("http://{name}.team-a.restricted/")]).await;
    assert_ne!(gone.code, 0, "{}", gone.stdout);
    m.ok(&["shared-port", "--off"]).await;
    assert!(port_is_free(port.parse().unwrap()), "the shared port is free once closed");
    cleanup_a().await;
    cleanup_b().await;
}

#[tokio::test]
async fn a_background_proxy_with_a_dns_helper_shows_its_address_and_answers() {
    let m = Managed::new("dns");
    let (ns, _backend, _url) = own_service("dns").await;
    let conn = m
        .connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0", "--listen-dns", "127.0.0.1:0"])
        .await;
    let dns = addr(&conn, "dns");
    let status = m.status().await;
    assert_eq!(status["connections"][0]["dns"], conn["dns"], "{status}");
    let svc: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(support::admin().await, &ns.name);
    let cluster_ip = svc.get("dns-svc").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let name = format!("dns-svc.{}.svc.cluster.local", ns.name);
    let out = tokio::process::Command::new("dig")
        .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string(), "+short", "+time=5", &name])
        .output()
        .await
        .expect("dig is installed (tests/setup installs it)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cluster_ip, "{}", String::from_utf8_lossy(&out.stderr));
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).next().is_none()
}

#[tokio::test]
async fn files_are_private_while_up_and_disconnect_keeps_only_the_log() {
    let m = Managed::new("files");
    let (ns, _backend, url) = own_service("files").await;
    // Logs of connections long stopped, and of one stopped lately.
    let logs = m.state.join("logs");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&logs).unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(15 * 24 * 3600);
    for name in ["0000000a.log", "0000000a.log.1", "0000000b.log"] {
        std::fs::write(logs.join(name), "an old line\n").unwrap();
        std::fs::File::options().write(true).open(logs.join(name)).unwrap().set_modified(long_ago).unwrap();
    }
    std::fs::write(logs.join("0000000c.log"), "a recent line\n").unwrap();
    let conn = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    for name in ["0000000a.log", "0000000a.log.1", "0000000b.log"] {
        assert!(!logs.join(name).exists(), "{name}, last written 15 days ago, is removed when the daemon starts");
    }
    assert!(logs.join("0000000c.log").exists(), "a log written lately is kept");
    assert_eq!(mode(&logs.join("daemon.log")), 0o600, "the daemon's log is owner-only");
    let id = conn["id"].as_str().unwrap();
    let kubeconfig = PathBuf::from(conn["kubeconfig"].as_str().unwrap());
    let record = m.state.join("connections").join(format!("{id}.json"));
    let log = PathBuf::from(conn["log"].as_str().unwrap());

    assert_eq!(mode(&m.state), 0o700, "the state dir is owner-only");
    assert_eq!(mode(&kubeconfig), 0o600, "the connection's kubeconfig is owner-only");
    assert_eq!(mode(&m.state.join("control.sock")), 0o600, "the control socket is owner-only");
    assert_eq!(kubeconfig, m.state.join("kubeconfig").join(format!("{id}.yaml")));
    assert!(record.exists(), "a record exists while the connection is up");
    let saved: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(saved["context"], "kubesocks-test");
    assert_eq!(saved["pid"], conn["pid"]);
    // The kubeconfig stands on its own: one context, certificates inlined, usable by kubectl.
    let out = std::process::Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "get", "namespace", "default", "-o", "name"])
        .output()
        .expect("kubectl");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "namespace/default", "{out:?}");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(!text.contains("kubesocks-test-restricted"), "only its own context is kept");

    answer_via(conn["socks_url"].as_str().unwrap(), &url).await;
    let run = m.ok(&["disconnect", id]).await;
    assert!(run.stdout.contains(&format!("disconnected {id}")), "{}", run.stdout);
    assert!(!record.exists(), "the record is deleted");
    assert!(!kubeconfig.exists(), "the kubeconfig is deleted");
    assert!(port_is_free(addr(&conn, "socks")), "the port is free");
    let logged = std::fs::read_to_string(&log).expect("the log stays after disconnect");
    let target = format!("files-svc.{}:80", ns.name);
    assert!(logged.contains(&target), "the connection's log holds its traffic to {target}:\n{logged}");
    assert!(m.status().await["connections"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn disconnect_all_and_quit_free_every_port_and_quit_ends_the_daemon() {
    let m = Managed::new("quit");
    let args = |ctx| ["--context", ctx, "--listen-socks", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"];
    let a = m.connect(&args("kubesocks-test")).await;
    let b = m.connect(&args("kubesocks-test-restricted")).await;
    let ports = |c: &Value| [addr(c, "socks"), addr(c, "http")];
    let all: Vec<SocketAddr> = ports(&a).into_iter().chain(ports(&b)).collect();
    assert!(all.iter().all(|&p| !port_is_free(p)), "every listener is up");

    let run = m.ok(&["disconnect", "--all"]).await;
    assert!(run.stdout.contains(a["id"].as_str().unwrap()) && run.stdout.contains(b["id"].as_str().unwrap()));
    for p in &all {
        assert!(port_is_free(*p), "{p} is free after disconnect --all");
    }
    assert!(is_empty_dir(&m.state.join("connections")) && is_empty_dir(&m.state.join("kubeconfig")));

    let a = m.connect(&args("kubesocks-test")).await;
    let b = m.connect(&args("kubesocks-test-restricted")).await;
    let pid = m.daemon_pid().expect("the daemon wrote its pid");
    assert!(alive(pid));
    let run = m.ok(&["quit"]).await;
    assert!(run.stdout.contains("daemon stopped"), "{}", run.stdout);
    for p in ports(&a).into_iter().chain(ports(&b)) {
        assert!(port_is_free(p), "{p} is free after quit");
    }
    support::wait_for("the daemon process to end", || async { (!alive(pid)).then_some(()) }).await;
    assert!(!m.state.join("control.sock").exists(), "the socket is removed");
    assert!(is_empty_dir(&m.state.join("connections")), "no record is left");
    assert!(is_empty_dir(&m.state.join("kubeconfig")), "no kubeconfig is left");
    let run = m.ok(&["status"]).await;
    assert!(run.stdout.contains("no kubesocks daemon is running"), "{}", run.stdout);
}

#[tokio::test]
async fn a_killed_daemon_is_reported_once_and_cleaned_up() {
    let m = Managed::new("killed");
    let conn = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    let id = conn["id"].as_str().unwrap();
    let pid = m.daemon_pid().unwrap();
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    support::wait_for("the daemon to die", || async { (!alive(pid)).then_some(()) }).await;

    let first = m.ok(&["status"]).await;
    assert!(
        first.stderr.contains(id) && first.stderr.contains("no longer running"),
        "the stale connection is reported: {}",
        first.stderr
    );
    assert!(first.stdout.contains("no kubesocks daemon is running"), "{}", first.stdout);
    assert!(!m.state.join("connections").join(format!("{id}.json")).exists(), "the record is cleaned");
    assert!(!m.state.join("kubeconfig").join(format!("{id}.yaml")).exists(), "the kubeconfig is cleaned");
    assert!(!m.state.join("control.sock").exists(), "the dead socket is cleaned");

    let second = m.ok(&["status"]).await;
    assert!(!second.stderr.contains(id), "reported only once: {}", second.stderr);
    // Managed mode works again; and `connect` after a crash reports and cleans up too.
    let again = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    assert_ne!(again["id"], conn["id"]);
    let pid = m.daemon_pid().unwrap();
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    support::wait_for("the daemon to die", || async { (!alive(pid)).then_some(()) }).await;
    let run = m.ok(&["--context", "kubesocks-test", "connect", "--listen-socks", "127.0.0.1:0"]).await;
    let again_id = again["id"].as_str().unwrap();
    assert!(run.stderr.contains(again_id) && run.stderr.contains("no longer running"), "{}", run.stderr);
    assert!(run.stdout.contains("Connected kubesocks-test"), "{}", run.stdout);
}

#[tokio::test]
async fn connect_takes_the_next_free_port_when_1080_is_taken() {
    let m = Managed::new("port");
    let (_ns, _backend, target) = own_service("port").await;
    // Another program holds 1080 (if something else already does, it is taken all the same).
    let _holder = std::net::TcpListener::bind("127.0.0.1:1080");
    assert!(!port_is_free("127.0.0.1:1080".parse().unwrap()));

    let run = m.ok(&["--context", "kubesocks-test", "connect", "--socks"]).await;
    let url = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("SOCKS5 proxy: socks5h://"))
        .unwrap_or_else(|| panic!("no SOCKS URL printed: {}", run.stdout));
    let port: u16 = url.trim().parse::<SocketAddr>().unwrap().port();
    assert!((1081..=1180).contains(&port), "the next free port above 1080, got {port}");
    let out = answer_via(&format!("socks5h://127.0.0.1:{port}"), &target).await;
    assert!(out.contains("hello from port"), "{out}");
}

#[tokio::test]
async fn status_json_has_live_figures_that_grow() {
    let m = Managed::new("figures");
    let (_ns, _backend, url) = own_service("figures").await;
    let conn = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    let before = m.status().await;
    assert_eq!(before["daemon"]["pid"], conn["pid"]);
    let c = &before["connections"][0];
    for key in [
        "id",
        "context",
        "server",
        "namespace",
        "socks",
        "http",
        "socks_url",
        "pid",
        "started_at",
        "log",
        "active_connections",
        "total_connections",
        "bytes_up",
        "bytes_down",
        "last_error",
    ] {
        assert!(c.get(key).is_some(), "status has {key}: {c}");
    }
    let (up, down) = (c["bytes_up"].as_u64().unwrap(), c["bytes_down"].as_u64().unwrap());

    answer_via(conn["socks_url"].as_str().unwrap(), &url).await;
    let refused = curl(&["--proxy", conn["socks_url"].as_str().unwrap(), "http://nothing-here.default:80/"]).await;
    assert_ne!(refused.code, 0);

    let after = &m.status().await["connections"][0];
    assert!(after["bytes_up"].as_u64().unwrap() > up, "bytes up grow: {after}");
    assert!(after["bytes_down"].as_u64().unwrap() > down, "bytes down grow: {after}");
    assert!(after["total_connections"].as_u64().unwrap() >= 2, "{after}");
    let error = &after["last_error"];
    assert!(error["message"].as_str().unwrap().contains("nothing-here"), "the last error names its target: {error}");
    assert!(error["at"].as_u64().unwrap() >= after["started_at"].as_u64().unwrap());
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_loses_nothing() {
    let m = Managed::new("bad");
    let conn = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    let id = conn["id"].as_str().unwrap();
    let still_there = async || {
        let status = m.status().await;
        assert_eq!(status["connections"][0]["id"], conn["id"], "the connection survives: {status}");
    };

    let run = m.run(&["--context", "nope", "connect"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no context \"nope\"") && run.stderr.contains("kubesocks-test"), "{}", run.stderr);
    still_there().await;

    for bad in ["abc", "../../etc/passwd", "ABCDEF12"] {
        let run = m.run(&["disconnect", bad]).await;
        assert_eq!(run.code, 1);
        assert!(run.stderr.contains("is not a connection ID"), "{bad}: {}", run.stderr);
    }
    let run = m.run(&["disconnect", "0000beef"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no connection 0000beef"), "{}", run.stderr);
    still_there().await;

    // Connecting the same context again reports the existing connection...
    let run = m.ok(&["--context", "kubesocks-test", "connect", "-o", "json"]).await;
    assert!(run.stderr.contains("already connected"), "{}", run.stderr);
    let again: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(again["id"], conn["id"]);
    // ...and refuses to move it to other listeners.
    let run = m.run(&["--context", "kubesocks-test", "connect", "--listen-socks", "127.0.0.1:1"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(&format!("already connected as {id}")), "{}", run.stderr);

    // A garbage message on the control socket is answered with an error.
    let mut raw = tokio::net::UnixStream::connect(m.state.join("control.sock")).await.unwrap();
    raw.write_all(b"\x16\x03\x01 hello?\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    let answer: Value = serde_json::from_str(answer.trim()).expect("a JSON error answer");
    assert_eq!(answer["result"], "error");
    assert_eq!(answer["kind"], "bad_request");
    still_there().await;

    // The daemon checks IDs itself, whoever the client is.
    let mut raw = tokio::net::UnixStream::connect(m.state.join("control.sock")).await.unwrap();
    raw.write_all(b"{\"op\":\"disconnect\",\"id\":\"../../x\"}\n").await.unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.contains("bad_request") && answer.contains("not a connection ID"), "{answer}");

    // A second daemon refuses to start.
    let run = m.run(&["daemon"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("already running"), "{}", run.stderr);
    still_there().await;
    assert!(m.state.join("connections").join(format!("{id}.json")).exists(), "the record is kept");
    assert!(m.state.join("kubeconfig").join(format!("{id}.yaml")).exists(), "the kubeconfig is kept");
}

#[tokio::test]
async fn a_control_socket_of_another_user_is_refused() {
    let m = Managed::new("owner");
    std::fs::create_dir_all(&m.state).unwrap();
    let socket = m.state.join("control.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // uid 65534 is "nobody": the socket now belongs to someone else.
    let chown = std::process::Command::new("chown").args(["65534", socket.to_str().unwrap()]).status().unwrap();
    assert!(chown.success(), "the tests need to chown (run as root)");

    for args in [&["status"][..], &["--context", "kubesocks-test", "connect"][..]] {
        let run = m.run(args).await;
        assert_eq!(run.code, 1, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains("owned by uid 65534"), "{args:?}: {}", run.stderr);
    }
    assert!(socket.exists(), "nothing is deleted");
}

#[tokio::test]
async fn concurrent_connects_of_one_context_share_one_daemon_and_connection() {
    let m = Managed::new("race");
    let args = ["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"];
    // Neither finds a daemon: both race to start one, and to connect the context.
    let (a, b) = tokio::join!(m.connect(&args), m.connect(&args));
    assert_eq!(a["id"], b["id"], "one connection for one context");
    assert_eq!(a["pid"], b["pid"], "one daemon");
    assert_eq!(m.status().await["connections"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn exec_plugins_run_with_the_variables_of_the_shell_that_connects() {
    let m = Managed::new("exec");
    let (_ns, _backend, url) = own_service("exec").await;
    // A credential plugin only the connecting shell can find and use: it is on
    // that shell's PATH alone, and it wants that shell's AWS_PROFILE.
    let bin = m.state.with_extension("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("kubesocks-test-credential");
    let token = cluster().get("KUBESOCKS_ADMIN_TOKEN");
    let script = format!(
        "#!/bin/sh\n[ \"$AWS_PROFILE\" = kubesocks-exec-test ] || {{ echo \"AWS_PROFILE is '$AWS_PROFILE'\" >&2; exit 1; }}\n\
         echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\"}}}}'\n"
    );
    std::fs::write(&plugin, script).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let admin = kube::config::Kubeconfig::read_from(&cluster().admin_kubeconfig).unwrap();
    let kubeconfig = bin.join("exec.kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "test", "cluster": admin.clusters[0].cluster}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "kubesocks-test-credential",
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "exec", "context": {"cluster": "test", "user": "plugin"}}]
    });
    std::fs::write(&kubeconfig, config.to_string()).unwrap();

    // The daemon starts first, from a shell that has neither.
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
        .arg("daemon")
        .env("KUBESOCKS_STATE_DIR", &m.state)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env_remove("AWS_PROFILE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start kubesocks daemon");
    let socket = m.state.join("control.sock");
    support::wait_for("the daemon's socket", || async { socket.exists().then_some(()) }).await;

    // Without the plugin on its PATH, connect says which plugin is missing.
    let args = ["--kubeconfig", kubeconfig.to_str().unwrap(), "connect", "-o", "json", "--listen-socks", "127.0.0.1:0"];
    let run = m.run_env(&args, &[]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("exec plugin \"kubesocks-test-credential\", which is not on PATH"), "{}", run.stderr);

    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let env = [("PATH", path.as_str()), ("AWS_PROFILE", "kubesocks-exec-test")];
    let run = m.run_env(&args, &env).await;
    assert_eq!(run.code, 0, "connect through the plugin failed: {}", run.stderr);
    let conn: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(conn["pid"], daemon.id().unwrap(), "the daemon started first hosts it");
    answer_via(conn["socks_url"].as_str().unwrap(), &url).await;
    let written = std::fs::read_to_string(conn["kubeconfig"].as_str().unwrap()).unwrap();
    assert!(!written.contains("kubesocks-exec-test"), "the variables stay out of the connection's kubeconfig file");
    m.ok(&["quit"]).await;
    let _ = daemon.wait().await;
    let _ = std::fs::remove_dir_all(&bin);
}

#[tokio::test]
async fn the_example_a_connect_prints_names_a_service_that_answers() {
    let m = Managed::new("example");
    let (ns, _backend, url) = own_service("example").await;
    // Sorts first by name, but has no endpoint: curl would fail on it.
    ns.service("aaa-no-endpoints", json!({"selector": {"app": "nothing-here"}, "ports": [{"port": 80}]})).await;
    let first = m.connect(&["--context", "kubesocks-test", "-n", &ns.name, "--listen-socks", "127.0.0.1:0"]).await;
    answer_via(first["socks_url"].as_str().unwrap(), &url).await;
    m.ok(&["disconnect", first["id"].as_str().unwrap()]).await;

    let run = m.ok(&["--context", "kubesocks-test", "-n", &ns.name, "connect", "--listen-socks", "127.0.0.1:0"]).await;
    let try_line = run.stdout.lines().find(|l| l.starts_with("Try:")).unwrap_or_else(|| panic!("{}", run.stdout));
    println!("{try_line}");
    assert!(try_line.contains(&format!("http://example-svc.{}.svc.cluster.local:80/", ns.name)), "{try_line}");
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => found.extend(files_under(&path)),
            Ok(t) if t.is_file() => found.push(path),
            _ => {}
        }
    }
    found
}

#[tokio::test]
async fn a_connect_whose_client_hangs_up_is_given_up_and_leaves_nothing() {
    let m = Managed::new("hangup");
    // An API server that takes connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = kube::config::Kubeconfig::read_from(&cluster().admin_kubeconfig).unwrap();
    let mut cluster_entry = serde_json::to_value(&admin.clusters[0].cluster).unwrap();
    cluster_entry["server"] = json!(format!("https://{}", silent.local_addr().unwrap()));
    let dir = m.state.with_extension("kubeconfig");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("silent.kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "silent",
        "clusters": [{"name": "silent", "cluster": cluster_entry}],
        "users": [{"name": "u", "user": {"token": "not-used"}}],
        "contexts": [{"name": "silent", "context": {"cluster": "silent", "user": "u"}}]
    });
    std::fs::write(&kubeconfig, config.to_string()).unwrap();

    // Twice: the second connect of the context is not refused as busy, so
    // the first one's claim on it went with it.
    let kubeconfigs = m.state.join("kubeconfig");
    let daemon_log = m.state.join("logs").join("daemon.log");
    for round in 1..=2 {
        let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
            .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "connect", "--listen-socks", "127.0.0.1:0"])
            .env("KUBESOCKS_STATE_DIR", &m.state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start kubesocks connect");
        // The daemon is connecting once it has written the connection's kubeconfig.
        support::wait_for("the daemon to begin connecting", || async {
            std::fs::read_dir(&kubeconfigs).ok()?.next().map(|_| ())
        })
        .await;
        // The user gives up (Ctrl-C, a closed terminal).
        client.kill().await.unwrap();
        let hung_up = std::time::Instant::now();

        // Well before the 15 s the daemon would wait for this API server.
        loop {
            let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
            if log.matches("connect cancelled: its client hung up").count() == round && is_empty_dir(&kubeconfigs) {
                break;
            }
            assert!(
                hung_up.elapsed() < Duration::from_secs(5),
                "round {round}: the connect goes on after its client hung up; daemon.log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("round {round}: the connect was given up {:?} after its client hung up", hung_up.elapsed());
    }
    assert!(is_empty_dir(&m.state.join("connections")), "no record is left");
    assert!(m.status().await["connections"].as_array().unwrap().is_empty(), "status lists no connection");
    // The daemon still serves connects of other contexts.
    let conn = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    assert_eq!(conn["context"], "kubesocks-test");
}

#[tokio::test]
async fn a_failing_exec_plugin_leaks_no_credential_anywhere() {
    failing_plugin_leaks_nothing("leak", SecretFrom::Client).await;
}

/// As the tray app is, started from a desktop session that holds the cloud
/// keys: the daemon inherits the secret and passes it on to the plugin,
/// though no client sent it and no kubeconfig names it.
#[tokio::test]
async fn a_failing_exec_plugin_leaks_no_credential_the_daemon_inherited() {
    failing_plugin_leaks_nothing("leak-inherited", SecretFrom::Daemon).await;
}

/// Whose environment holds the plugin's secret.
#[derive(Clone, Copy, PartialEq)]
enum SecretFrom {
    /// The client's, sent with `connect` (as the CLI does).
    Client,
    /// The daemon's own.
    Daemon,
}

async fn failing_plugin_leaks_nothing(name: &str, from: SecretFrom) {
    let m = Managed::new(name);
    let canary = "kubesocks-canary-AKIA-7f3e9c1d5b";
    // A plugin that fails and, like some do, prints what it was given.
    let bin = m.state.with_extension("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("kubesocks-test-failing-credential");
    let script = "#!/bin/sh\necho \"login failed for key $AWS_SECRET_ACCESS_KEY\" >&2\nenv >&2\nexit 1\n";
    std::fs::write(&plugin, script).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let admin = kube::config::Kubeconfig::read_from(&cluster().admin_kubeconfig).unwrap();
    let kubeconfig = bin.join("failing.kubeconfig");
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "failing",
        "clusters": [{"name": "test", "cluster": admin.clusters[0].cluster}],
        "users": [{"name": "plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": plugin,
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "failing", "context": {"cluster": "test", "user": "plugin"}}]
    });
    std::fs::write(&kubeconfig, config.to_string()).unwrap();

    // The daemon logs everything it can, to its files and to stderr.
    let daemon_stderr = bin.join("daemon.stderr");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"));
    daemon.arg("daemon").env("KUBESOCKS_STATE_DIR", &m.state).env("RUST_LOG", "debug");
    match from {
        SecretFrom::Daemon => daemon.env("AWS_SECRET_ACCESS_KEY", canary),
        SecretFrom::Client => daemon.env_remove("AWS_SECRET_ACCESS_KEY"),
    };
    let mut daemon = daemon
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&daemon_stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start kubesocks daemon");
    let socket = m.state.join("control.sock");
    support::wait_for("the daemon's socket", || async { socket.exists().then_some(()) }).await;

    let args = ["--kubeconfig", kubeconfig.to_str().unwrap(), "connect", "--listen-socks", "127.0.0.1:0"];
    let env: &[(&str, &str)] = match from {
        SecretFrom::Client => &[("AWS_SECRET_ACCESS_KEY", canary), ("RUST_LOG", "debug")],
        SecretFrom::Daemon => &[("RUST_LOG", "debug")],
    };
    let run = m.run_env(&args, env).await;
    assert_ne!(run.code, 0, "the plugin fails, so does connect");
    assert!(run.stderr.contains("failed (exit status: 1)"), "{}", run.stderr);
    assert!(run.stderr.contains("login failed for key <redacted>"), "the plugin had the secret: {}", run.stderr);
    let status = m.run(&["status", "-o", "json"]).await;
    m.ok(&["quit"]).await;
    let _ = daemon.wait().await;

    let mut seen = vec![("connect's stdout".to_string(), run.stdout), ("connect's stderr".to_string(), run.stderr)];
    seen.push(("status -o json".to_string(), status.stdout + &status.stderr));
    for file in files_under(&m.state).into_iter().chain([daemon_stderr]) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        seen.push((file.display().to_string(), text));
    }
    let daemon_log = seen.iter().find(|(name, _)| name.ends_with("daemon.log")).expect("a daemon.log");
    assert!(daemon_log.1.contains("connect failed"), "the failure is logged: {}", daemon_log.1);
    println!("looked in: {:?}", seen.iter().map(|(name, _)| name).collect::<Vec<_>>());
    for (name, text) in &seen {
        assert!(!text.contains(canary), "the secret reached {name}:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&bin);
}

/// A backend that sends an HTTP head announcing a 1 MiB body, one byte of
/// it, then holds the rest: a download that stays open.
async fn slow_download(mut stream: tokio::net::TcpStream) {
    let _ = support::read_head(&mut stream).await;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\nx").await;
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A SOCKS5 client in Python (no library: the handshake by hand) that asks
/// for `host:port`, sends an HTTP request and holds the connection until
/// killed: a second program, with a name of its own.
const PYTHON_CLIENT: &str = r#"
import socket, struct, sys, time
proxy_host, proxy_port, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.create_connection((proxy_host, proxy_port))
s.sendall(b"\x05\x01\x00"); assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + struct.pack(">H", port))
reply = s.recv(10)
print("reply", reply[1], flush=True)
if reply[1] == 0:
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
time.sleep(120)
"#;

#[tokio::test]
async fn connections_and_failures_name_each_program_its_target_and_why() {
    let m = Managed::new("activity");
    let ns = TestNamespace::new("activity").await;
    let backend = Backend::start_serving("slow", &[8080], slow_download).await;
    ns.pod(support::PodSpec {
        labels: json!({"app": "slow"}),
        ..support::PodSpec::new("slow", &backend, &[("http", 8080)])
    })
    .await;
    ns.service("slow", json!({"selector": {"app": "slow"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("slow", 1).await;
    let conn = m.connect(&["--context", "kubesocks-test", "-n", &ns.name, "--listen-socks", "127.0.0.1:0"]).await;
    let (id, socks_url) = (conn["id"].as_str().unwrap().to_string(), conn["socks_url"].as_str().unwrap().to_string());
    let socks = addr(&conn, "socks");

    // curl holds a download open; python holds another; curl asks for a name that does not exist.
    let mut curl_child = tokio::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--proxy", &socks_url, "http://slow/"])
        .kill_on_drop(true)
        .spawn()
        .expect("curl");
    let mut python = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_CLIENT, &socks.ip().to_string(), &socks.port().to_string(), "slow", "80"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (tests/setup installs it)");
    let refused = curl(&["--proxy", &socks_url, "http://nope/"]).await;
    assert_ne!(refused.code, 0, "an unknown name is refused");

    let listed = support::wait_for("both downloads listed open with their programs and some bytes", || async {
        let run = m.ok(&["connections", &id, "-o", "json"]).await;
        let json: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
        let open = json[0]["open"].as_array().cloned().unwrap_or_default();
        let ready = open.len() == 2
            && open
                .iter()
                .all(|c| c["program"].is_object() && c["bytes_down"].as_u64() > Some(0) && c["state"] == "open");
        ready.then_some(open)
    })
    .await;
    let by_name = |name: &str| {
        listed.iter().find(|c| c["program"]["name"] == name).unwrap_or_else(|| panic!("{name} in {listed:?}")).clone()
    };
    let (by_curl, by_python) = (by_name("curl"), by_name("python3"));
    assert_eq!(by_curl["program"]["pid"], curl_child.id().unwrap());
    assert_eq!(by_python["program"]["pid"], python.id().unwrap());
    for c in [&by_curl, &by_python] {
        assert_eq!(c["asked"], "slow:80");
        assert_eq!(c["via"], "socks5");
        assert_eq!(c["reached"], format!("service {}/slow:80", ns.name), "{c}");
        assert!(c["pod"].as_str().unwrap().starts_with(&format!("{}/slow:8080", ns.name)), "{c}");
        assert!(c["protocol"].is_string(), "{c}");
        assert_eq!(c["node"], support::test_node(), "{c}");
    }
    assert!(by_curl["bytes_up"].as_u64().unwrap() > 20, "curl's request went up: {by_curl}");

    let failures = m.ok(&["failures", &id, "-o", "json"]).await;
    let failures: Value = serde_json::from_str(&failures.stdout).unwrap();
    let newest = &failures[0]["failures"][0];
    assert_eq!(newest["asked"], "nope:80");
    assert_eq!(newest["program"]["name"], "curl");
    assert_eq!(newest["reason"], format!("no service nope in namespace {}", ns.name));
    assert_eq!(failures[0]["reasons"][0]["count"], 1);

    // The table says the same for people.
    let table = m.ok(&["connections"]).await.stdout;
    assert!(table.contains("curl (") && table.contains("python3 (") && table.contains("slow:80"), "{table}");
    let table = m.ok(&["failures"]).await.stdout;
    assert!(table.contains("nope:80") && table.contains("no service nope"), "{table}");

    // Closing curl's connection from the list resets it: curl fails at once.
    let close = by_curl["id"].as_u64().unwrap().to_string();
    m.ok(&["connections", &id, "--close", &close]).await;
    let status = tokio::time::timeout(Duration::from_secs(5), curl_child.wait()).await.expect("curl ends").unwrap();
    assert!(!status.success(), "curl saw its download cut");
    let unknown = m.run(&["connections", &id, "--close", &close]).await;
    assert_ne!(unknown.code, 0, "it is gone: {}", unknown.stdout);
    assert!(unknown.stderr.contains(&format!("no open client connection {close}")), "{}", unknown.stderr);
    let open = m.ok(&["connections", &id, "-o", "json"]).await.stdout;
    let open: Value = serde_json::from_str(&open).unwrap();
    assert_eq!(open[0]["open"].as_array().unwrap().len(), 1, "python's is left: {open}");
    let failures = m.ok(&["failures", &id, "-o", "json"]).await.stdout;
    assert!(failures.contains("closed from the connections list"), "the cut is listed among failures: {failures}");
    python.kill().await.unwrap();
    m.ok(&["quit"]).await;
}

#[tokio::test]
async fn proxy_out_stats_prints_its_connections_and_failures_every_second() {
    let (_ns, _backend, url) = own_service("stats").await;
    let proxy = support::Proxy::start(&cluster().admin_kubeconfig, &["--stats", "1"]).await;
    let answer = support::wait_for("the new Service to answer", || async {
        let out = curl(&["--proxy", &proxy.socks_url(), &url]).await;
        (out.code == 0).then_some(out.stdout)
    })
    .await;
    assert!(answer.contains("hello from stats"), "{answer}");
    assert_ne!(curl(&["--proxy", &proxy.socks_url(), "http://nope.default/"]).await.code, 0);
    let line = support::wait_for("a stats line with the refusal", || async {
        let log = proxy.log();
        log.lines()
            .find(|l| l.starts_with("stats: ") && l.contains("last failure: nope.default:80"))
            .map(str::to_string)
    })
    .await;
    assert!(line.contains("no service nope in namespace default"), "{line}");
    assert!(line.contains(" failed;"), "{line}");
    let later = support::wait_for("a stats line with nothing new", || async {
        proxy
            .log()
            .lines()
            .rev()
            .find(|l| l.starts_with("stats: 0 open") && l.contains(", 0 failed;"))
            .map(str::to_string)
    })
    .await;
    assert!(!later.contains("last failure"), "a failure is told once: {later}");
}
