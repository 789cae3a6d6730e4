//! The data path through `pods/portforward`, against the real test cluster
//! and its kubelet stub: SPDY sessions shared per pod (counted from the
//! stub's log), half-close, many concurrent connections, sessions that
//! break or idle, pods deleted mid-stream, and RBAC as users have it.
//!
//! Each test prints the figure it measures.

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::traffic::{
    NODES, Serving, download, echo, first_line, get, hello, hold_fd_limit, open_fds, raise_own_fd_limit, read_some,
    read_to_end_or_error, socks, start_download, stub_logged, two_pods, who,
};
use support::{Backend, PodSpec, Proxy, StubSession, TestNamespace, cluster, status_kib, stub_sessions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The size of the downloads that sessions break under.
const DOWNLOAD: usize = 100 << 20;

/// The stub's path for a session of `protocol` to a pod on `node`: the API
/// server unwraps the tunnel for node-spdy and passes it through to node-ws.
fn stub_path(protocol: &str, node: &str) -> &'static str {
    match (protocol, node) {
        ("tunnel", "node-ws") => "tunnel",
        ("tunnel" | "spdy", _) => "spdy",
        ("websocket", _) => "websocket",
        other => panic!("no stub path for {other:?}"),
    }
}

/// Reads to the client's FIN, and only then answers how much it read.
fn answer_after_eof(name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |mut s: TcpStream| {
        let name = name.clone();
        Box::pin(async move {
            let mut sink = Vec::new();
            if s.read_to_end(&mut sink).await.is_ok() {
                let _ = s.write_all(format!("{name} read {} bytes to EOF\n", sink.len()).as_bytes()).await;
                let _ = s.shutdown().await;
            }
        })
    }
}

/// What each [`answer_early_then_count`] server read after its answer, by pod.
static READ_AFTER_ANSWER: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());

/// Answers as soon as a request head is in (a 413 before the body, say),
/// half-closes, then reads the rest to the client's FIN, as nginx's
/// lingering close does, and notes how much it read.
fn answer_early_then_count(name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |mut s: TcpStream| {
        let name = name.clone();
        Box::pin(async move {
            let Some(head) = support::read_head(&mut s).await else { return };
            if s.write_all(format!("413 from {name}\n").as_bytes()).await.is_err() || s.shutdown().await.is_err() {
                return;
            }
            let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            READ_AFTER_ANSWER.lock().unwrap().push((name, head.len() - end + rest.len()));
        })
    }
}

/// Speaks first (a banner, as SMTP, SSH or MySQL servers do), then echoes.
fn banner(name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |s: TcpStream| {
        let name = name.clone();
        Box::pin(async move {
            let (mut rx, mut tx) = s.into_split();
            if tx.write_all(format!("220 banner from {name}\r\n").as_bytes()).await.is_ok() {
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
            }
        })
    }
}

/// Sessions the stub logged for `ns` after the first `before` of them.
fn sessions_since(ns: &str, before: usize) -> Vec<StubSession> {
    stub_sessions(ns).into_iter().skip(before).collect()
}

// ------------------------------------------------------------ RBAC

/// A pod and Service in team-a (the restricted users' namespace), removed when dropped.
struct TeamAPod {
    name: String,
}

impl Drop for TeamAPod {
    fn drop(&mut self) {
        for kind in ["pod", "service"] {
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&cluster().admin_kubeconfig)
                .args(["-n", "team-a", "delete", kind, &self.name, "--wait=false", "--ignore-not-found"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[tokio::test]
async fn a_user_with_only_create_on_portforward_is_served_over_spdy() {
    // A pod on node-ws, where the stub sees a tunnel as `tunnel` and the SPDY POST as `spdy`.
    let name = format!("dp-rbac-{}", std::process::id());
    let backend = Backend::start_serving(&name, &[8080], hello(name.clone())).await;
    let admin = support::admin().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "team-a");
    let services: Api<Service> = Api::namespaced(admin, "team-a");
    let _cleanup = TeamAPod { name: name.clone() };
    let pod = json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": {"kubesocks.test/backend": backend.ip.to_string()}},
        "spec": {"nodeName": "node-ws", "containers": [{"name": "main", "image": "x", "ports": [{"containerPort": 8080}]}]}
    });
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.expect("create pod");
    let svc = json!({"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}});
    services.create(&PostParams::default(), &serde_json::from_value(svc).unwrap()).await.expect("create service");
    let host = format!("{name}.team-a.svc");
    let sessions = || stub_sessions("team-a").into_iter().filter(|s| s.pod == name).collect::<Vec<_>>();

    // `create` only (what kubectl documents): the tunnel's GET is forbidden, the SPDY POST serves.
    let restricted = cluster().restricted_kubeconfig();
    let proxy = Proxy::start(&restricted, &["--portforward-protocol", "auto"]).await;
    let answer = support::wait_for("the create-only user's Service to answer", || async {
        get(proxy.socks, &host).await.ok().filter(|a| a.contains("hello from"))
    })
    .await;
    assert_eq!(who(&answer), name);
    let paths: Vec<_> = sessions().into_iter().map(|s| s.path).collect();
    println!("create-only user, auto: stub sessions {paths:?}");
    assert_eq!(paths, ["spdy"], "one session, over the SPDY POST (a tunnel would reach node-ws as `tunnel`)");
    assert!(proxy.logged("port-forwards use SPDY/3.1").await, "the protocol chosen is logged:\n{}", proxy.log());
    drop(proxy);

    // Forced to a GET upgrade (the v4 WebSocket, or the tunnel), it is not allowed: 0x02.
    for protocol in ["websocket", "tunnel"] {
        let proxy = Proxy::start(&restricted, &["--portforward-protocol", protocol]).await;
        // The first refusals may be the namespace cache's (team-a's caches still syncing).
        let code = support::wait_for(&format!("{protocol}: a port-forward refusal"), || async {
            let code = socks(proxy.socks, &host, 80).await.err();
            (code == Some(0x02) && proxy.log().contains("port-forward failed")).then_some(code)
        })
        .await;
        assert_eq!(code, Some(0x02), "{protocol}: not allowed");
        assert!(
            proxy.logged("cannot get resource \"pods/portforward\"").await,
            "{protocol}: the missing verb is named:\n{}",
            proxy.log()
        );
    }
    assert_eq!(sessions().len(), 1, "the refused upgrades reached no kubelet");

    // Its twin that may also `get` gets the tunnel.
    let proxy = Proxy::start(&cluster().restricted_get_kubeconfig(), &["--portforward-protocol", "auto"]).await;
    let answer = support::wait_for("the create+get user's Service to answer", || async {
        get(proxy.socks, &host).await.ok().filter(|a| a.contains("hello from"))
    })
    .await;
    assert_eq!(who(&answer), name);
    let paths: Vec<_> = sessions().into_iter().skip(1).map(|s| s.path).collect();
    println!("create+get user, auto: stub sessions {paths:?}");
    assert_eq!(paths, ["tunnel"], "the tunnel, passed through to node-ws");
}

// ------------------------------------------------------------ reuse

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_to_a_two_pod_service_share_a_few_sessions() {
    let w = two_pods("reuse", hello).await;
    let ns = w.ns.name.clone();
    for protocol in ["tunnel", "spdy"] {
        let before = stub_sessions(&ns).len();
        let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--portforward-protocol", protocol]).await;
        let started = Instant::now();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(20));
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let (limit, addr, host) = (limit.clone(), proxy.socks, w.svc());
            all.spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                get(addr, &host).await
            });
        }
        let mut answered = BTreeMap::<String, usize>::new();
        for answer in all.join_all().await {
            let answer = answer.unwrap_or_else(|e| panic!("{protocol}: a connection failed: {e}"));
            *answered.entry(who(&answer)).or_default() += 1;
        }
        let took = started.elapsed();
        let opened = sessions_since(&ns, before);
        println!(
            "{protocol}: 200 connections (20 at a time) in {took:?}, answered by {answered:?}: {} sessions opened {:?}",
            opened.len(),
            opened.iter().map(|s| format!("{} via {}", s.pod, s.path)).collect::<Vec<_>>()
        );
        assert_eq!(answered.len(), 2, "{protocol}: both pods answered: {answered:?}");
        assert!(!opened.is_empty() && opened.len() <= 4, "{protocol}: {} sessions for 200 connections", opened.len());
        for s in &opened {
            let node = NODES.iter().find(|(pod, _)| *pod == s.pod).unwrap().1;
            assert_eq!(s.path, stub_path(protocol, node), "{protocol}: session to {} reached the stub as", s.pod);
        }
    }
}

// ------------------------------------------------------------ half-close

#[tokio::test]
async fn a_half_close_reaches_the_pod_and_its_answer_still_comes_back() {
    let w = two_pods("halfclose", answer_after_eof).await;
    let payload = vec![b'q'; 100 * 1024];
    for protocol in ["tunnel", "spdy"] {
        let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--portforward-protocol", protocol]).await;
        for (pod, ip) in &w.ips {
            let mut s = socks(proxy.socks, ip, 8080).await.unwrap_or_else(|c| panic!("{protocol} {pod}: {c:#04x}"));
            s.write_all(&payload).await.unwrap();
            s.shutdown().await.unwrap(); // FIN: the server answers only once it has read to EOF
            let fin = Instant::now();
            let mut answer = String::new();
            let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer)).await;
            let read = read.unwrap_or_else(|_| panic!("{protocol} {pod}: no answer within 10 s of the FIN"));
            read.unwrap_or_else(|e| panic!("{protocol} {pod}: {e} (got {answer:?})"));
            println!("{protocol} {pod}: answered {:?} after the FIN: {}", fin.elapsed(), answer.trim());
            assert_eq!(answer, format!("{pod} read {} bytes to EOF\n", payload.len()), "{protocol} {pod}");
        }
    }
}

/// The pod answers before the client is done and half-closes, reading on
/// (nginx's 413 with its lingering close). The client, still sending its
/// body for two seconds after the answer, gets the answer, no error on any
/// write, and a clean end: never a reset, which could destroy the answer
/// before it is read. What it sends goes on to the pod while the node
/// carries it (a real node, containerd, closes the pod's connection a
/// second after the pod's FIN; the test's node at once), and is read and
/// dropped after. Before, the relay ended at the pod's FIN and left the
/// client's input unread: its next writes met a reset.
#[tokio::test]
async fn a_client_still_sending_after_an_early_answer_gets_the_answer_and_a_clean_end_not_a_reset() {
    const CHUNK: usize = 16 << 10;
    const CHUNKS: usize = 40;
    let w = two_pods("early", answer_early_then_count).await;
    for protocol in ["tunnel", "spdy"] {
        let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--portforward-protocol", protocol]).await;
        for (pod, ip) in &w.ips {
            let mut s = socks(proxy.socks, ip, 8080).await.unwrap_or_else(|c| panic!("{protocol} {pod}: {c:#04x}"));
            let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", CHUNK * CHUNKS);
            s.write_all(head.as_bytes()).await.unwrap();
            let expected = format!("413 from {pod}\n");
            let mut answer = vec![0u8; expected.len()];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("{protocol} {pod}: no answer within 10 s"))
                .unwrap_or_else(|e| panic!("{protocol} {pod}: {e}"));
            assert_eq!(String::from_utf8_lossy(&answer), expected, "{protocol} {pod}");
            // The body, over two seconds: past the node's second after the pod's FIN.
            for i in 0..CHUNKS {
                s.write_all(&[b'b'; CHUNK])
                    .await
                    .unwrap_or_else(|e| panic!("{protocol} {pod}: writing chunk {i} of the body failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
                .await
                .unwrap_or_else(|_| panic!("{protocol} {pod}: no end within 10 s of the client's FIN"))
                .unwrap_or_else(|e| panic!("{protocol} {pod}: the end was {e}, not a clean one"));
            assert!(rest.is_empty(), "{protocol} {pod}: more after the answer: {rest:?}");
            let got = support::wait_for(&format!("{protocol} {pod}: the pod to end"), || async {
                let mut counts = READ_AFTER_ANSWER.lock().unwrap();
                let at = counts.iter().position(|(name, _)| name == pod)?;
                Some(counts.remove(at).1)
            })
            .await;
            println!(
                "{protocol} {pod}: the pod read {got} of {} body bytes before its connection closed",
                CHUNK * CHUNKS
            );
        }
    }
}

#[tokio::test]
async fn a_server_that_speaks_first_is_heard_before_the_client_says_anything() {
    let w = two_pods("banner", banner).await;
    for protocol in ["tunnel", "spdy", "websocket"] {
        let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--portforward-protocol", protocol]).await;
        for (pod, ip) in &w.ips {
            let started = Instant::now();
            let mut s = socks(proxy.socks, ip, 8080).await.unwrap_or_else(|c| panic!("{protocol} {pod}: {c:#04x}"));
            let (line, _) = first_line(&mut s).await;
            println!("{protocol} {pod}: banner {:?} after {:?}, nothing sent", line.trim(), started.elapsed());
            assert_eq!(line, format!("220 banner from {pod}\r"), "{protocol} {pod}");
            // And it is a conversation: what the client says comes back.
            s.write_all(b"EHLO kubesocks\r\n").await.unwrap();
            let (echoed, _) = first_line(&mut s).await;
            assert_eq!(echoed, "EHLO kubesocks\r", "{protocol} {pod}");
        }
    }
}

// ------------------------------------------------------------ many connections

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_connections_through_the_pool_all_succeed() {
    const N: usize = 500;
    // The test holds both ends (client and backend) of every connection.
    let own = raise_own_fd_limit(4 * N as u64 + 512);
    assert!(own >= 2 * N as u64 + 256, "this test needs {} open files; the hard limit allows {own}", 2 * N + 256);
    let w = two_pods("many", echo).await;
    let before = stub_sessions(&w.ns.name).len();
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    // kubesocks at the common limit of 1024, whatever it raised its own to.
    hold_fd_limit(proxy.pid(), 1024);
    let idle_fds = open_fds(proxy.pid());

    let started = Instant::now();
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(N);
    let mut all = tokio::task::JoinSet::new();
    for i in 0..N {
        let (addr, host, opened, mut done) = (proxy.socks, w.svc(), opened_tx.clone(), done_tx.subscribe());
        all.spawn(async move {
            let mut s = socks(addr, &host, 80).await.map_err(|c| format!("connection {i}: SOCKS reply {c:#04x}"))?;
            let hello = format!("hello {i}\n");
            let mut back = vec![0u8; hello.len()];
            s.write_all(hello.as_bytes()).await.map_err(|e| format!("connection {i}: {e}"))?;
            s.read_exact(&mut back).await.map_err(|e| format!("connection {i}: {e}"))?;
            let _ = opened.send(()).await;
            // Held open until all are.
            let _ = done.recv().await;
            s.write_all(b"bye\n").await.map_err(|e| format!("connection {i}: {e}"))?;
            let mut rest = Vec::new();
            s.shutdown().await.map_err(|e| format!("connection {i}: {e}"))?;
            s.read_to_end(&mut rest).await.map_err(|e| format!("connection {i}: {e}"))?;
            (back == hello.as_bytes() && rest == b"bye\n")
                .then_some(())
                .ok_or_else(|| format!("connection {i}: echoed {back:?} then {rest:?}"))
        });
    }
    drop(opened_tx);
    let mut open = 0;
    let wait = tokio::time::timeout(Duration::from_secs(60), async {
        while open < N && opened_rx.recv().await.is_some() {
            open += 1;
        }
    })
    .await;
    let took = started.elapsed();
    let busy_fds = open_fds(proxy.pid());
    let _ = done_tx.send(());
    let mut failures = Vec::new();
    while let Some(result) = all.join_next().await {
        if let Err(e) = result.unwrap() {
            failures.push(e);
        }
    }
    let sessions = sessions_since(&w.ns.name, before);
    println!(
        "{open} of {N} connections open at once after {took:?}; kubesocks descriptors {idle_fds} idle, {busy_fds} with them \
         open (limit 1024); {} sessions; {} failed",
        sessions.len(),
        failures.len()
    );
    assert!(wait.is_ok() && open == N, "only {open} of {N} connections were open at once: {failures:?}");
    assert!(failures.is_empty(), "{} of {N} failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(!proxy.log().contains("Too many open files"), "{}", proxy.log());
    // A connection costs kubesocks its client's socket only (its streams share
    // the pod's sessions), not a second one to the API server as on v4.
    assert!(busy_fds < idle_fds + N + 64, "{busy_fds} descriptors for {N} connections: more than one each");
}

// ------------------------------------------------------------ broken sessions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_broken_mid_download_resets_the_client_and_the_next_connection_works() {
    let w = two_pods("broken", download).await;
    let pods = w.ns.pods();
    let mut drops = 0;
    for protocol in ["tunnel", "spdy"] {
        let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--portforward-protocol", protocol]).await;
        for (pod, ip) in &w.ips {
            let sessions_before = stub_sessions(&w.ns.name).len();
            let mut s = start_download(proxy.socks, ip, 8080, DOWNLOAD)
                .await
                .unwrap_or_else(|c| panic!("{protocol} {pod}: {c:#04x}"));
            let (line, after) = first_line(&mut s).await;
            assert_eq!(line, format!("download from {pod}"));
            let before_drop = read_some(&mut s, after, 2 << 20).await;

            // The stub closes the pod's sessions (as a kubelet restart would), while
            // this client is not reading: nothing of the download can slip through.
            drops += 1;
            let patch = json!({"metadata": {"annotations": {"kubesocks.test/drop-sessions": drops.to_string()}}});
            pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate the pod");
            let dropped = Instant::now();
            stub_logged(&[&format!(" {}/{pod} via ", w.ns.name), &format!("drop-sessions=\"{drops}\"")]).await;
            let (rest, end) = read_to_end_or_error(&mut s).await;
            let total = before_drop + rest;
            println!(
                "{protocol} {pod}: {before_drop} bytes before the session was dropped, {rest} after; then {:?} {:?} after \
                 the drop",
                end.as_ref().map(|e| e.kind()),
                dropped.elapsed()
            );
            let e = end.unwrap_or_else(|| {
                panic!("{protocol} {pod}: the client saw a clean EOF after {total} of {DOWNLOAD} bytes, not a reset")
            });
            assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{protocol} {pod}: {e}");
            assert!(total < DOWNLOAD, "{protocol} {pod}: the whole download came through ({total} bytes)");
            assert!(
                proxy.logged("port-forward session broke").await,
                "{protocol}: a log line says why:\n{}",
                proxy.log()
            );

            // The next connection opens a new session and works.
            let mut s = start_download(proxy.socks, ip, 8080, 1 << 20)
                .await
                .unwrap_or_else(|c| panic!("{protocol} {pod} again: {c:#04x}"));
            let (line, after) = first_line(&mut s).await;
            assert_eq!(line, format!("download from {pod}"), "{protocol} {pod} again");
            let (rest, end) = read_to_end_or_error(&mut s).await;
            assert!(end.is_none() && after + rest == 1 << 20, "{protocol} {pod} again: {after}+{rest} bytes, {end:?}");
            let new = sessions_since(&w.ns.name, sessions_before);
            assert_eq!(new.len(), 2, "{protocol} {pod}: the broken session and a new one: {new:?}");
        }
    }
}

// ------------------------------------------------------------ idle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_outlives_the_idle_timeout_and_an_unused_session_is_closed() {
    let w = two_pods("idle", echo).await;
    let proxy = Proxy::start(
        &cluster().admin_kubeconfig,
        &["--portforward-protocol", "auto", "--keepalive", "1", "--idle-timeout", "2"],
    )
    .await;
    // One connection to each pod (one per node), idle together for 5 s.
    let mut conns = Vec::new();
    for (pod, ip) in &w.ips {
        let mut s = socks(proxy.socks, ip, 8080).await.unwrap_or_else(|c| panic!("{pod}: {c:#04x}"));
        s.write_all(b"before\n").await.unwrap();
        let mut back = [0u8; 7];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"before\n");
        conns.push((pod.clone(), s));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (pod, s) in &mut conns {
        s.write_all(b"after 5 s\n").await.unwrap_or_else(|e| panic!("{pod}: the idle connection broke: {e}"));
        let mut back = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("{pod}: no echo after 5 s idle"))
            .unwrap_or_else(|e| panic!("{pod}: the idle connection broke: {e}"));
        assert_eq!(&back, b"after 5 s\n", "{pod}");
    }
    let sessions = stub_sessions(&w.ns.name);
    assert_eq!(sessions.len(), 2, "one session per pod, kept while idle: {sessions:?}");
    assert!(sessions.iter().all(|s| !s.closed), "no session closed under an idle connection: {sessions:?}");
    println!("2 connections idle for 5 s (keepalive 1 s, idle timeout 2 s) still echo");

    // Without connections, the sessions close after the idle timeout.
    for (_, mut s) in conns {
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
    }
    let last = Instant::now();
    support::wait_for("the stub to log both sessions closed", || async {
        stub_sessions(&w.ns.name).iter().all(|s| s.closed).then_some(())
    })
    .await;
    let took = last.elapsed();
    println!("both sessions closed {took:?} after their last connection");
    assert!(took >= Duration::from_millis(1500), "closed after {took:?}, before the 2 s idle timeout");
    assert!(took < Duration::from_secs(6), "closed only after {took:?}");
}

// ------------------------------------------------------------ pod deleted

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_mid_stream_resets_its_client_and_the_service_fails_over() {
    let w = two_pods("deleted", download).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let mut s = start_download(proxy.socks, &w.svc(), 80, DOWNLOAD).await.unwrap_or_else(|c| panic!("{c:#04x}"));
    let (line, after) = first_line(&mut s).await;
    let victim = line.strip_prefix("download from ").unwrap_or_else(|| panic!("{line:?}")).to_string();
    let survivor = if victim == "pod-a" { "pod-b" } else { "pod-a" };
    let before = read_some(&mut s, after, 2 << 20).await;

    // Deleted while its client is not reading.
    w.ns.pods().delete(&victim, &DeleteParams::default()).await.expect("delete the pod");
    let deleted = Instant::now();
    stub_logged(&[&format!("pod {}/{victim}: deleted; resetting", w.ns.name)]).await;
    let (rest, end) = read_to_end_or_error(&mut s).await;
    println!(
        "{victim} deleted after {before} bytes; {rest} more, then {:?} {:?} after the delete",
        end.as_ref().map(|e| e.kind()),
        deleted.elapsed()
    );
    let e = end.unwrap_or_else(|| panic!("a clean EOF after {} of {DOWNLOAD} bytes, not an error", before + rest));
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert!(before + rest < DOWNLOAD);

    // The Service's next connections reach the pod that is left.
    let started = Instant::now();
    let mut answered = BTreeMap::<String, usize>::new();
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let one = Instant::now();
        let mut s = start_download(proxy.socks, &w.svc(), 80, 0)
            .await
            .unwrap_or_else(|c| panic!("connection {i}: SOCKS reply {c:#04x}"));
        let (line, after) = first_line(&mut s).await;
        let (rest, end) = read_to_end_or_error(&mut s).await;
        assert!(end.is_none() && after + rest == 0, "connection {i}: {line:?}, {after}+{rest} bytes, {end:?}");
        slowest = slowest.max(one.elapsed());
        *answered.entry(who(&line)).or_default() += 1;
    }
    println!("30 connections after the delete in {:?} (slowest {slowest:?}): {answered:?}", started.elapsed());
    assert_eq!(answered, BTreeMap::from([(survivor.to_string(), 30)]), "all 30 on the pod left");
    // One that tried the deleted pod first was told at once (the pod is gone), not after a timeout.
    assert!(slowest < Duration::from_secs(3), "a connection took {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_refuses_after_the_client_was_answered_hands_the_connection_to_the_next() {
    let ns = TestNamespace::new("late").await;
    let good = Backend::start_serving("pod-good", &[8080], answer_after_eof("pod-good".into())).await;
    // Nothing listens on pod-late's 8080, and its kubelet dials 300 ms late:
    // long after kubesocks has told the client it is connected.
    let refusing = Backend::start("pod-late", &[8081]).await;
    for (name, backend, delay, labels) in [
        ("pod-good", &good, None, json!({"app": "late"})),
        ("pod-late", &refusing, Some("300ms"), json!({"app": "late", "alone": "yes"})),
    ] {
        let mut spec = PodSpec::new(name, backend, &[("http", 8080)]);
        (spec.labels, spec.dial_delay) = (labels, delay);
        ns.pod(spec).await;
    }
    ns.service("late", json!({"selector": {"app": "late"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.service("alone", json!({"selector": {"alone": "yes"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("late", 2).await;
    ns.ready_endpoints("alone", 1).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;

    // Each client sends its request and its FIN before the refusal comes;
    // both must reach pod-good, whichever pod was tried first.
    for i in 0..8 {
        let mut s = socks(proxy.socks, &format!("late.{}", ns.name), 80)
            .await
            .unwrap_or_else(|c| panic!("connection {i}: SOCKS reply {c:#04x}"));
        let request = format!("request {i}; ").repeat(500);
        s.write_all(request.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let (line, after) = first_line(&mut s).await;
        let (rest, end) = read_to_end_or_error(&mut s).await;
        assert_eq!(line, format!("pod-good read {} bytes to EOF", request.len()), "connection {i}");
        assert!(end.is_none() && after + rest == 0, "connection {i}: {after}+{rest} bytes more, {end:?}");
    }
    let moved = proxy.log().matches("refused after the client was answered").count();
    println!("8 connections, {moved} of them moved from pod-late to pod-good after the client was answered");
    assert!(moved > 0, "no connection tried pod-late first:\n{}", proxy.log());

    // With no other endpoint, the late refusal reaches the client as a
    // reset: what it got must not look like a whole answer.
    let mut s = socks(proxy.socks, &format!("alone.{}", ns.name), 80).await.unwrap_or_else(|c| panic!("{c:#04x}"));
    s.write_all(b"hello?").await.unwrap();
    let (got, end) = read_to_end_or_error(&mut s).await;
    let e = end.unwrap_or_else(|| panic!("a clean end after {got} bytes, not a reset"));
    assert_eq!((got, e.kind()), (0, ErrorKind::ConnectionReset), "{e}");
}

/// `echo\n` and then an echo of everything, or `BYTES\n` and a download.
fn echo_or_download(name: String) -> impl Fn(TcpStream) -> Serving + Clone + Send + 'static {
    move |mut s: TcpStream| {
        let name = name.clone();
        Box::pin(async move {
            let mut ask = [0u8; 5];
            // Both asks are at least 5 bytes, sent at once; they may come in pieces.
            while s.peek(&mut ask).await.is_ok_and(|n| n > 0 && n < 5) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if &ask == b"echo\n" {
                let _ = s.read_exact(&mut ask).await;
                echo(name)(s).await
            } else {
                download(name)(s).await
            }
        })
    }
}

/// A connection open to a pod, and then a download from the same pod whose
/// client stops reading: on a shared SPDY session, the download draws on the
/// session's receive budget and, once that is spent, is reset when it has
/// read nothing for half a second, because the open connection waits behind
/// it. The open connection answers every request within a second meanwhile
/// and loses nothing; the proxy's memory stays bounded. (A v4 WebSocket
/// carries one connection, so nothing is shared there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_an_open_connection_to_its_pod_for_no_more_than_a_second() {
    let ns = TestNamespace::new("hol").await;
    let backend = Backend::start_serving("pod-a", &[8080], echo_or_download("pod-a".into())).await;
    let mut spec = PodSpec::new("pod-a", &backend, &[("http", 8080)]);
    spec.labels = json!({"app": "hol"});
    ns.pod(spec).await;
    ns.service("hol", json!({"selector": {"app": "hol"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("hol", 1).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let svc = format!("hol.{}", ns.name);
    async fn round(s: &mut TcpStream, what: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(what).await?;
        let mut back = vec![0u8; what.len()];
        s.read_exact(&mut back).await.map(|_| back)
    }

    let mut open = socks(proxy.socks, &svc, 80).await.unwrap_or_else(|c| panic!("{c:#04x}"));
    open.write_all(b"echo\n").await.unwrap();
    assert_eq!(round(&mut open, b"one").await.unwrap(), b"one");
    let rss_before = status_kib(proxy.pid(), "VmRSS:");

    let mut stalled = start_download(proxy.socks, &svc, 80, DOWNLOAD).await.unwrap_or_else(|c| panic!("{c:#04x}"));
    let (_, mut got) = first_line(&mut stalled).await;
    let shared = support::forced_protocol() != Some("websocket");
    if shared {
        let sessions = stub_sessions(&ns.name).len();
        assert_eq!(sessions, 1, "the download went to a session of its own: nothing to hold up");
    }
    // Its client reads no more: the kernel's buffers fill, then its stream's,
    // then the budget. The open connection asks every 100 ms meanwhile.
    let mut longest = Duration::ZERO;
    let asking = Instant::now();
    for i in 0..30 {
        let ask = format!("r{i:02}");
        let asked = Instant::now();
        let back = tokio::time::timeout(Duration::from_secs(45), round(&mut open, ask.as_bytes()))
            .await
            .unwrap_or_else(|_| panic!("request {i} was held up for good"))
            .unwrap_or_else(|e| panic!("request {i}: the open connection was cut: {e}"));
        assert_eq!(back, ask.as_bytes());
        longest = longest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_after = status_kib(proxy.pid(), "VmRSS:");
    println!(
        "requests on an open connection beside a neighbour that stopped reading (shared session: {shared}): \
         the longest took {longest:?} over {:?}; proxy RSS {rss_before} -> {rss_after} KiB",
        asking.elapsed()
    );
    assert!(longest <= Duration::from_secs(1), "a request was held up {longest:?}");
    assert!(rss_after < rss_before + (32 << 10), "RSS grew from {rss_before} to {rss_after} KiB");

    // The stalled download ends with a reset, never a clean end; the open connection goes on.
    if shared {
        let (rest, end) = read_to_end_or_error(&mut stalled).await;
        got += rest;
        let end = end.unwrap_or_else(|| panic!("a clean end after {got} bytes of {DOWNLOAD}"));
        assert_eq!(end.kind(), ErrorKind::ConnectionReset, "{end}");
        assert!(got < DOWNLOAD, "{got}");
    }
    assert_eq!(round(&mut open, b"three").await.unwrap(), b"three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_up_new_connections_to_its_pod() {
    let ns = TestNamespace::new("stalled").await;
    let backend = Backend::start_serving("pod-a", &[8080], download("pod-a".into())).await;
    let mut spec = PodSpec::new("pod-a", &backend, &[("http", 8080)]);
    spec.labels = json!({"app": "stalled"});
    ns.pod(spec).await;
    ns.service("stalled", json!({"selector": {"app": "stalled"}, "ports": [{"port": 80, "targetPort": 8080}]})).await;
    ns.ready_endpoints("stalled", 1).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let svc = format!("stalled.{}", ns.name);

    // A download whose client reads its first line and then nothing: its
    // stream's buffer fills and the session's reader pauses behind it.
    let mut slow = start_download(proxy.socks, &svc, 80, DOWNLOAD).await.unwrap_or_else(|c| panic!("{c:#04x}"));
    let (_, after) = first_line(&mut slow).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Other clients of the same pod are served meanwhile, on another session.
    let started = Instant::now();
    for i in 0..5 {
        let mut s = start_download(proxy.socks, &svc, 80, 1 << 20)
            .await
            .unwrap_or_else(|c| panic!("connection {i}: SOCKS reply {c:#04x}"));
        let (line, got) = first_line(&mut s).await;
        let (rest, end) = read_to_end_or_error(&mut s).await;
        assert_eq!((line.as_str(), got + rest, end.map(|e| e.kind())), ("download from pod-a", 1 << 20, None));
    }
    let took = started.elapsed();
    let sessions = stub_sessions(&ns.name).len();
    println!("5 downloads of 1 MiB beside a stalled one: {took:?}, {sessions} sessions to the pod");
    assert!(took < Duration::from_secs(5), "5 downloads took {took:?}");
    assert!(sessions >= 2, "the stalled session was used for new connections ({sessions} sessions)");

    // The stalled client loses nothing when it reads again.
    let (rest, end) = read_to_end_or_error(&mut slow).await;
    assert_eq!((after + rest, end.map(|e| e.kind())), (DOWNLOAD, None));
}
