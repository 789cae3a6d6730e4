//! Reliability under faults and load, against the real test cluster: the API
//! server killed and restarted under a download and while idle, a proxy held
//! to 256 open files, 1000 connections streaming at once, stalled handshakes
//! and a slow reader of 1 GiB. Each test prints its figure and asserts it.
//!
//! The tests of this binary run one at a time: a restart of the API server
//! would break the others' set-up, and a load test's figures would be those
//! of the other tests' load as well. (A pod deleted mid-stream is tested in
//! `dataplane.rs`.)

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use support::managed::Managed;
use support::relay::FaultRelay;
use support::traffic::{
    TwoPods, download, echo, first_line, get, hello, open_fds, raise_own_fd_limit, read_some, read_to_end_or_error,
    sockets_to, socks, start_download, two_pods, who,
};
use support::{Backend, PodSpec, Proxy, cluster, repo_root, status_kib, stub_sessions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One test of this binary at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The download that the API server's restart breaks.
const DOWNLOAD: usize = 100 << 20;
/// How soon after the API server is ready again kubesocks must serve, new
/// Services included.
const RECOVERY: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ helpers

/// A download of `size` bytes through the proxy, without panicking: the
/// first line (`download from POD`) once it ended cleanly with all its bytes.
async fn try_download(proxy: SocketAddr, host: &str, size: usize) -> Result<String, String> {
    try_download_from(proxy, host, 80, size).await
}

/// The same from `host:port` (a pod's own port, for a pod IP).
async fn try_download_from(proxy: SocketAddr, host: &str, port: u16, size: usize) -> Result<String, String> {
    let mut s = start_download(proxy, host, port, size).await.map_err(|code| format!("SOCKS reply {code:#04x}"))?;
    let mut all = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await {
        Err(_) => return Err(format!("no end within 10 s after {} bytes", all.len())),
        Ok(Err(e)) => return Err(format!("{e} after {} bytes", all.len())),
        Ok(Ok(_)) => {}
    }
    let end = all.iter().position(|b| *b == b'\n').ok_or_else(|| format!("no first line in {} bytes", all.len()))?;
    let line = String::from_utf8_lossy(&all[..end]).into_owned();
    match all.len() - end - 1 {
        n if n == size => Ok(line),
        n => Err(format!("{line:?} then {n} of {size} bytes")),
    }
}

/// How a client fared: served (the stream), refused with a SOCKS reply code,
/// or closed by the proxy before any reply.
enum Outcome {
    Served(TcpStream),
    Refused(u8),
    Closed(String),
}

/// A SOCKS5 CONNECT that tells every ending apart instead of panicking.
async fn socks_outcome(proxy: SocketAddr, host: &str, port: u16) -> Outcome {
    let attempt = async {
        let mut s = TcpStream::connect(proxy).await?;
        s.write_all(&[5, 1, 0]).await?;
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await?;
        let mut request = vec![5, 1, 0, 3, host.len() as u8];
        request.extend_from_slice(host.as_bytes());
        request.extend_from_slice(&port.to_be_bytes());
        s.write_all(&request).await?;
        let mut reply = [0u8; 10]; // kubesocks answers with an IPv4 bound address
        s.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>((s, reply[1]))
    };
    match attempt.await {
        Ok((s, 0)) => Outcome::Served(s),
        Ok((_, code)) => Outcome::Refused(code),
        Err(e) => Outcome::Closed(e.to_string()),
    }
}

/// One echo round trip of `bytes` on an open connection.
async fn echo_round(s: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    s.write_all(bytes).await.map_err(|e| format!("write: {e}"))?;
    let mut back = vec![0u8; bytes.len()];
    s.read_exact(&mut back).await.map_err(|e| format!("read: {e}"))?;
    (back == bytes).then_some(()).ok_or_else(|| "the echo differs from what was sent".to_string())
}

/// The open-file limits of a process, soft and hard, from `/proc/PID/limits`.
fn nofile_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("the proxy runs");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("an open-file limit");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (numbers.next().expect("a soft limit"), numbers.next().expect("a hard limit"))
}

/// Waits until the test's own fd use allows `n` more client connections.
fn own_fds_for(n: usize) {
    let own = raise_own_fd_limit(4 * n as u64 + 512);
    assert!(own >= 2 * n as u64 + 256, "this test needs {} open files; the hard limit allows {own}", 2 * n + 256);
}

// ------------------------------------------------------------ API server restart

/// What `tests/cluster/restart-apiserver` reported.
struct Restart {
    /// After the kill, when the new API server was started.
    down: Duration,
    /// After the kill, when its /readyz said ok.
    ready: Duration,
}

/// Kills the cluster's API server, starts it again after `down` seconds,
/// and returns once it is ready.
async fn restart_apiserver(down: u64) -> Restart {
    let script = repo_root().join("tests/cluster/restart-apiserver");
    let out = tokio::process::Command::new(&script)
        .args(["--down", &down.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tests/cluster/restart-apiserver failed ({}): {stdout}", out.status);
    let figure = |key: &str| {
        let ms = stdout.split_whitespace().find_map(|w| w.strip_prefix(key)?.parse::<u64>().ok());
        Duration::from_millis(ms.unwrap_or_else(|| panic!("no {key} in {stdout:?}")))
    };
    Restart { down: figure("down_ms="), ready: figure("ready_ms=") }
}

/// Puts the cluster back as it was if a test failed with the API server in
/// an unknown state (`up` leaves a healthy cluster alone).
struct RestoreCluster;

impl Drop for RestoreCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let up = repo_root().join("tests/cluster/up");
            let _ = std::process::Command::new(up).stdout(Stdio::null()).status();
        }
    }
}

/// A Service made after the restart (no selector, its EndpointSlice written
/// here): kubesocks must learn of it through its watches. Made by the test,
/// not the controller-manager, whose own watches recover on their own
/// schedule. Retried while the new API server settles.
async fn fresh_service(w: &TwoPods, name: &str, pod: &str) {
    let svc = json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
    let slice = json!({
        "metadata": {"name": format!("{name}-1"), "labels": {
            "kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "kubesocks-tests"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [w.ips[pod]], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "namespace": w.ns.name, "name": pod}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]
    });
    let slice: EndpointSlice = serde_json::from_value(slice).unwrap();
    let svc = serde_json::from_value(svc).unwrap();
    support::wait_for(&format!("Service {name} created"), || async {
        match w.ns.services().create(&PostParams::default(), &svc).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await;
    support::wait_for(&format!("EndpointSlice of {name} created"), || async {
        match w.ns.slices().create(&PostParams::default(), &slice).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await;
}

/// `kubectl port-forward TARGET :80` in `namespace`, and the local address it forwards from.
async fn kubectl_port_forward(
    kubeconfig: &std::path::Path,
    namespace: &str,
    target: &str,
) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", namespace, "port-forward", target, ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl is installed (tests/setup checks it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("kubectl port-forward says where it listens within 20 s")
        .unwrap()
        .expect("a line from kubectl port-forward");
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let addr = line.split_whitespace().nth(2).and_then(|a| a.parse().ok());
    let addr = addr.unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
    // Its further lines are not needed, but must be read so it never blocks on them.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Whether a kubectl port-forward on `forwarded` serves again within 10 s
/// of `since`, said for a figure.
async fn kubectl_serves_again(kubectl: &mut tokio::process::Child, forwarded: SocketAddr, since: Instant) -> String {
    while since.elapsed() < Duration::from_secs(10) {
        if direct_download(forwarded, 1024).await.is_ok() {
            return format!("served again {:?} after", since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match kubectl.try_wait() {
        Ok(Some(status)) => format!("not served again: it had exited ({status})"),
        _ => "not served again within 10 s, still running".to_string(),
    }
}

/// A download of `size` bytes straight from `addr` (a local port-forward), within 2 s.
async fn direct_download(addr: SocketAddr, size: usize) -> Result<(), String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(format!("{size}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.map_err(|e| e.to_string())?;
        let end = all.iter().position(|b| *b == b'\n').ok_or("no first line")?;
        (all.len() - end - 1 == size).then_some(()).ok_or_else(|| format!("{} bytes", all.len()))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.map_err(|_| "no end within 2 s".to_string())?
}

/// How long after `ready` (the API server ready again, or the fault) a
/// download through `host` first succeeded (tried every 50 ms, for up to
/// 30 s), and the last failure before.
async fn first_success(proxy: SocketAddr, host: &str, ready: Instant) -> (Duration, Option<String>) {
    let mut last = None;
    loop {
        match try_download(proxy, host, 1024).await {
            Ok(_) => return (ready.elapsed(), last),
            Err(e) => last = Some(e),
        }
        assert!(ready.elapsed() < Duration::from_secs(30), "{host}: nothing served within 30 s: {last:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_killed_mid_download_and_while_idle_errors_the_client_and_serves_again_within_5_s() {
    let _serial = SERIAL.lock().await;
    let _restore = RestoreCluster;
    let w = two_pods("apiserver", download).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    try_download(proxy.socks, &w.svc(), 1024).await.expect("the Service answers before the restart");

    // Under the download, a plain restart (about 3 s down). While idle, an
    // outage of about 10 s, as when a laptop's network comes back: long
    // enough for a watch back-off that keeps growing to show.
    let mut figures = Vec::new();
    for (round, (during, down)) in [("a 100 MiB download", 0), ("idle", 7)].into_iter().enumerate() {
        let mut client = None;
        if round == 0 {
            let mut s = start_download(proxy.socks, &w.svc(), 80, DOWNLOAD).await.expect("the download starts");
            let (line, after) = first_line(&mut s).await;
            assert!(line.starts_with("download from "), "{line:?}");
            let before = read_some(&mut s, after, 2 << 20).await;
            client = Some((s, before));
        }

        // The baseline: kubectl port-forward to the same Service, started afresh each round.
        let (mut kubectl, forwarded) = kubectl_port_forward(&cluster().admin_kubeconfig, &w.ns.name, "svc/svc").await;
        direct_download(forwarded, 1024).await.expect("kubectl port-forward serves before the restart");

        let restart = restart_apiserver(down).await;
        let ready = Instant::now();
        if let Some((mut s, before)) = client {
            // The client has not read since the kill: whatever the proxy had is still to come.
            let (rest, end) = read_to_end_or_error(&mut s).await;
            let total = before + rest;
            println!("{during}: {total} of {DOWNLOAD} bytes, then {:?}", end.as_ref().map(|e| e.to_string()));
            let e =
                end.unwrap_or_else(|| panic!("{during}: a clean EOF after {total} of {DOWNLOAD} bytes, not an error"));
            assert!(total < DOWNLOAD, "{during}: the whole download came through: {e}");
        }

        // Both at once: the Service known before, and one made now.
        let fresh = format!("fresh-{round}");
        let pod = if round == 0 { "pod-a" } else { "pod-b" };
        let svc = w.svc();
        let known = first_success(proxy.socks, &svc, ready);
        let made = async {
            fresh_service(&w, &fresh, pod).await;
            let created = ready.elapsed();
            let (took, last) = first_success(proxy.socks, &format!("{fresh}.{}", w.ns.name), ready).await;
            (created, took, last)
        };
        let baseline = kubectl_serves_again(&mut kubectl, forwarded, ready);
        let ((known, known_err), (created, fresh_took, fresh_err), baseline) = tokio::join!(known, made, baseline);
        let figure = format!(
            "API server killed during {during}: restarted {:?} and ready {:?} after the kill; then the known Service \
             served after {known:?}, a Service created {created:?} after the restart served after {fresh_took:?} \
             (last refusal before: {fresh_err:?}; known: {known_err:?}); kubectl port-forward: {baseline}",
            restart.down, restart.ready
        );
        println!("{figure}");
        figures.push((during, known, fresh_took));
    }
    for (during, known, fresh) in figures {
        assert!(known <= RECOVERY, "{during}: the known Service served only {known:?} after the API server was ready");
        assert!(fresh <= RECOVERY, "{during}: a new Service served only {fresh:?} after the API server was ready");
    }
    assert!(proxy.log().contains("watch failed"), "the broken watches are logged:\n{}", proxy.log());
}

// ------------------------------------------------------------ descriptors

/// A network change: every connection kubesocks holds to the API server
/// goes silent (no FIN, no RST: a VPN or proxy in the path losing its far
/// side) while new connections work. The watches must find their
/// connection dead and start again on a new one, and the port-forward
/// sessions theirs: within 5 s of the freeze, the Service served before
/// answers again and a Service made after the freeze answers too. (Before
/// HTTP/2 PINGs, the watches sat on the dead socket for minutes; before
/// sessions with open streams pinged after a second of silence, a frozen
/// session took up to 30 s to be found dead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_freeze_of_every_api_connection_a_known_and_a_new_service_answer_within_5_s() {
    let _serial = SERIAL.lock().await;
    let w = two_pods("frozen", download).await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let proxy = Proxy::start(relay.relayed_kubeconfig(), &[]).await;
    // Sessions to both pods (the second one prewarmed), and the watches.
    for _ in 0..2 {
        try_download(proxy.socks, &w.svc(), 1024).await.expect("the Service answers before the freeze");
    }
    // The baseline: kubectl port-forward to the same Service through the same relay.
    let (mut kubectl, forwarded) = kubectl_port_forward(relay.relayed_kubeconfig(), &w.ns.name, "svc/svc").await;
    direct_download(forwarded, 1024).await.expect("kubectl port-forward serves before the freeze");

    let frozen = relay.freeze_held();
    let since = Instant::now();
    assert!(frozen >= 3, "{frozen} connection(s) through the relay: the proxy's API one and a session, kubectl's");
    let svc = w.svc();
    let made = format!("made-after.{}", w.ns.name);
    let known = first_success(proxy.socks, &svc, since);
    let new = async {
        fresh_service(&w, "made-after", "pod-a").await;
        first_success(proxy.socks, &made, since).await
    };
    let baseline = async {
        while since.elapsed() < Duration::from_secs(10) {
            if direct_download(forwarded, 1024).await.is_ok() {
                return format!("served again {:?} after it", since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        "not served again within 10 s".to_string()
    };
    let ((known, known_err), (new, new_err), baseline) = tokio::join!(known, new, baseline);
    let _ = kubectl.kill().await;
    println!(
        "{frozen} connections to the API server frozen: the known Service served again {known:?} after the freeze \
         (last failure before: {known_err:?}), a Service made after it {new:?} (last failure before: {new_err:?}); \
         kubectl port-forward through the same relay: {baseline}"
    );
    assert!(known <= RECOVERY, "the known Service answered only {known:?} after the freeze");
    assert!(new <= RECOVERY, "a Service made after the freeze answered only {new:?} after it");
    assert!(relay.live() >= 1, "the proxy did not reconnect through the relay");
}

/// An address on `lo` for as long as it lives: a change of the network as
/// a VPN or Wi-Fi coming up makes one.
struct AddedAddress(&'static str);

impl AddedAddress {
    fn add(address: &'static str) -> AddedAddress {
        // Left behind by a run that was killed: taken away first, so the change still happens.
        let _ = std::process::Command::new("ip").args(["addr", "del", address, "dev", "lo"]).output();
        let out = std::process::Command::new("ip").args(["addr", "add", address, "dev", "lo"]).output();
        let out = out.expect("`ip` runs (Debian's iproute2)");
        assert!(
            out.status.success(),
            "this test changes the network as a laptop's does, with `ip addr add {address} dev lo`, which needs root \
             or CAP_NET_ADMIN: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        AddedAddress(address)
    }
}

impl Drop for AddedAddress {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["addr", "del", self.0, "dev", "lo"]).status();
    }
}

/// A network change makes every port-forward session prove its path at
/// once: an idle session whose path went silent is found dead within 5 s,
/// where its keepalive alone (a PING after 10 s of silence, answered within
/// 20 s) would take up to 30 s, and the next connection would wait on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_network_change_an_idle_session_whose_path_died_is_found_dead_within_5_s() {
    let _serial = SERIAL.lock().await;
    let w = two_pods("netchange", download).await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let proxy = Proxy::start(relay.relayed_kubeconfig(), &[]).await;
    try_download(proxy.socks, &w.svc(), 1024).await.expect("the Service answers before the change");
    // The connection is over; its session idles, heard from a moment ago.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!proxy.log().contains("port-forward session broke"), "{}", proxy.log());

    relay.freeze_held();
    let changed = Instant::now();
    let _address = AddedAddress::add("127.83.0.1/32");
    let mut found = None;
    while changed.elapsed() < Duration::from_secs(15) {
        if proxy.log().contains("port-forward session broke") {
            found = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("an idle session whose path went silent at a network change: found dead after {found:?}");
    let found = found.unwrap_or_else(|| panic!("not found dead within 15 s:\n{}", proxy.log()));
    assert!(found <= Duration::from_secs(5), "found dead only after {found:?}");
    assert!(proxy.log().contains("the network changed: checking every port-forward session"), "{}", proxy.log());
}

/// The API server out of reach (every connection to it reset, new ones
/// refused, for 30 s): `status` says `reconnecting` within 5 s, a client
/// asking for a name kubesocks cannot know meanwhile is told why (SOCKS
/// 0x01, HTTP 503 naming the context), and within 5 s of the API server
/// being reachable again a Service made while it was away answers and
/// `status` says `connected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_out_of_reach_shows_as_reconnecting_clients_are_told_why_and_all_works_again_within_5_s() {
    const AWAY: Duration = Duration::from_secs(30);
    let _serial = SERIAL.lock().await;
    let w = two_pods("away", download).await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let kubeconfig = relay.relayed_kubeconfig().to_str().unwrap();
    let m = Managed::new("away");
    let conn =
        m.connect(&["--kubeconfig", kubeconfig, "--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
    let socks: SocketAddr = conn["socks"].as_str().expect("a SOCKS address").parse().unwrap();
    // The SOCKS port is mixed: it takes HTTP proxy requests too.
    let http = socks;
    try_download(socks, &w.svc(), 1024).await.expect("the Service answers before");
    // The baseline: kubectl port-forward to the same Service through the same relay.
    let (mut kubectl, forwarded) = kubectl_port_forward(relay.relayed_kubeconfig(), &w.ns.name, "svc/svc").await;
    direct_download(forwarded, 1024).await.expect("kubectl port-forward serves before");
    let health = async || m.status().await["connections"][0]["health"].clone();
    assert_eq!(health().await["state"], "connected");

    relay.refuse_new(true);
    relay.reset_held();
    let away = Instant::now();
    let seen = loop {
        let h = health().await;
        if h["state"] == "reconnecting" {
            assert!(h["error"].as_str().is_some_and(|e| !e.is_empty()), "no reason given: {h}");
            break away.elapsed();
        }
        assert!(away.elapsed() < RECOVERY, "status still says {h} {:?} after the API server went away", away.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let table = m.ok(&["status"]).await.stdout;
    assert!(table.contains("reconnecting") && table.contains("the API server is unreachable"), "{table}");

    // A Service made while kubesocks cannot hear of it.
    let fresh = format!("made-away.{}", w.ns.name);
    fresh_service(&w, "made-away", "pod-b").await;
    match socks_outcome(socks, &fresh, 80).await {
        Outcome::Refused(code) => assert_eq!(code, 0x01, "{fresh}: SOCKS reply {code:#04x}"),
        Outcome::Served(_) => panic!("{fresh} was served with the API server away"),
        Outcome::Closed(e) => panic!("{fresh}: closed without a reply: {e}"),
    }
    let answer =
        support::raw_http(http, &format!("GET http://{fresh}/ HTTP/1.1\r\nHost: {fresh}\r\nConnection: close\r\n\r\n"))
            .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("the API server of context kubesocks-test is unreachable"), "{answer}");

    tokio::time::sleep(AWAY.saturating_sub(away.elapsed())).await;
    relay.refuse_new(false);
    let back = Instant::now();
    let svc = w.svc();
    let known = first_success(socks, &svc, back);
    let made = first_success(socks, &fresh, back);
    let ((known, known_err), (made, made_err)) = tokio::join!(known, made);
    let connected = loop {
        let h = health().await;
        if h["state"] == "connected" {
            break back.elapsed();
        }
        assert!(back.elapsed() < RECOVERY, "status still says {h} {:?} after the API server came back", back.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let baseline = kubectl_serves_again(&mut kubectl, forwarded, back).await;
    println!(
        "API server out of reach for {AWAY:?}: status said reconnecting after {seen:?}; once reachable, the known \
         Service served after {known:?} (before: {known_err:?}), a Service made while away after {made:?} (before: \
         {made_err:?}), status connected after {connected:?}; kubectl port-forward through the same relay: {baseline}"
    );
    assert!(known <= RECOVERY && made <= RECOVERY, "served only {known:?} and {made:?} after the API server came back");
}

/// An engine that stops leaves nothing behind: connect and disconnect
/// cycles in one daemon (10 here; `tests/soak/run` makes it 100), each with
/// traffic to both pods of a Service (so a port-forward session to each).
/// After each disconnect the daemon holds no connection to the API server
/// within 5 s, and its descriptors are back where they were after the
/// first; after the last its threads are back within 15 s (tokio's idle
/// blocking threads linger 10 s), and its RSS is printed beside the first
/// round's (and, in a soak of 100 or more, grew by at most 16 MiB); and the
/// kubelet's log shows every port-forward session it served closed.
/// (Sessions outlived their engine before: a task that logged a session's
/// end kept it open, pinging.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_disconnect_cycles_leave_no_api_connection_or_descriptor_behind() {
    let _serial = SERIAL.lock().await;
    let rounds: usize = match std::env::var("KUBESOCKS_CYCLES") {
        Ok(n) => n.parse().unwrap_or_else(|_| panic!("KUBESOCKS_CYCLES={n} is not a count")),
        Err(_) => 10,
    };
    let w = two_pods("cycles", download).await;
    let api_port = FaultRelay::server_of(&cluster().admin_kubeconfig).port();
    let m = Managed::new("cycles");
    let mut baseline = None;
    let mut first_rss = None;
    let mut pid = 0;
    for round in 0..rounds {
        let conn = m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0"]).await;
        let socks: SocketAddr = conn["socks"].as_str().expect("a SOCKS address").parse().unwrap();
        pid = conn["pid"].as_u64().expect("the daemon's pid") as u32;
        let id = conn["id"].as_str().expect("an ID").to_string();
        for _ in 0..2 {
            try_download(socks, &w.svc(), 1024).await.expect("the Service answers");
        }
        let held = sockets_to(pid, api_port);
        assert!(held >= 2, "round {round}: the daemon holds {held} connection(s) to the API server while in use");
        m.ok(&["disconnect", &id]).await;
        let since = Instant::now();
        while sockets_to(pid, api_port) > 0 {
            assert!(
                since.elapsed() < RECOVERY,
                "round {round}: {} connection(s) to the API server left {:?} after disconnect ({held} in use)",
                sockets_to(pid, api_port),
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fds = open_fds(pid);
        let (baseline_fds, baseline_threads) = *baseline.get_or_insert((fds, status_kib(pid, "Threads:")));
        assert!(
            fds <= baseline_fds + 2,
            "round {round}: {fds} descriptors after disconnect, {baseline_fds} after the first"
        );
        first_rss.get_or_insert(status_kib(pid, "VmRSS:"));
        if round + 1 == rounds {
            let since = Instant::now();
            while status_kib(pid, "Threads:") > baseline_threads + 2 {
                assert!(
                    since.elapsed() < Duration::from_secs(15),
                    "{} threads after {rounds} rounds, {baseline_threads} after the first",
                    status_kib(pid, "Threads:")
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // The kubelet's side agrees: every session the daemon opened has ended there.
    let since = Instant::now();
    let (open, served) = loop {
        let sessions = stub_sessions(&w.ns.name);
        assert!(
            sessions.len() >= rounds,
            "{} port-forward sessions in the kubelet's log for {rounds} rounds",
            sessions.len()
        );
        let open: Vec<_> = sessions.iter().filter(|s| !s.closed).map(|s| format!("#{} {}", s.id, s.pod)).collect();
        if open.is_empty() || since.elapsed() > RECOVERY {
            break (open, sessions.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(open.is_empty(), "sessions the kubelet still holds {RECOVERY:?} after the last disconnect: {open:?}");
    let (first, last) = (first_rss.unwrap_or_default(), status_kib(pid, "VmRSS:"));
    println!(
        "{rounds} connect/disconnect cycles: RSS {} MiB after the first, {} MiB after the last; \
         {served} port-forward sessions, all closed at the kubelet",
        first / 1024,
        last / 1024
    );
    if rounds >= 100 {
        assert!(last <= first + 16 * 1024, "RSS grew from {first} to {last} KiB over {rounds} cycles");
    }
}

/// On the v4 fallback (one WebSocket per connection), a session that breaks
/// mid-download (its connection reset) reaches the client as a reset, never
/// as a clean but short end. Before, the in-memory stream kube-rs hands out
/// ended the same way for both, and the client got a clean FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_v4_fallback_a_session_broken_mid_download_resets_the_client() {
    let _serial = SERIAL.lock().await;
    let w = two_pods("v4broken", download).await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let proxy = Proxy::start(relay.relayed_kubeconfig(), &["--portforward-protocol", "websocket"]).await;
    let mut s = start_download(proxy.socks, &w.svc(), 80, DOWNLOAD).await.expect("the download starts");
    let (line, after) = first_line(&mut s).await;
    assert!(line.starts_with("download from "), "{line:?}");
    let before = read_some(&mut s, after, 2 << 20).await;
    relay.reset_held();
    let (rest, end) = read_to_end_or_error(&mut s).await;
    let total = before + rest;
    println!(
        "v4 session reset: the client got {total} of {DOWNLOAD} bytes, then {:?}",
        end.as_ref().map(|e| e.to_string())
    );
    let e = end.unwrap_or_else(|| panic!("a clean end after {total} of {DOWNLOAD} bytes, not a reset"));
    assert!(total < DOWNLOAD, "the whole download came through: {e}");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}

/// A laptop asleep: the proxy stopped (SIGSTOP) for 60 s while every
/// connection it holds to the API server goes silent and its Service's pods
/// are replaced. Within 5 s of waking (SIGCONT) it serves the new pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sixty_seconds_asleep_with_its_paths_frozen_it_serves_the_replaced_pods_within_5_s() {
    const ASLEEP: Duration = Duration::from_secs(60);
    let _serial = SERIAL.lock().await;
    let w = two_pods("asleep", hello).await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let proxy = Proxy::start(relay.relayed_kubeconfig(), &[]).await;
    let svc = w.svc();
    for _ in 0..2 {
        let answer = get(proxy.socks, &svc).await.expect("the Service answers before the sleep");
        assert!(["pod-a", "pod-b"].contains(&who(&answer).as_str()), "{answer}");
    }

    let signal = |sig: libc::c_int| {
        // SAFETY: a signal to the proxy process this test started.
        assert_eq!(unsafe { libc::kill(proxy.pid() as libc::pid_t, sig) }, 0, "cannot signal the proxy");
    };
    signal(libc::SIGSTOP);
    let slept = Instant::now();
    relay.freeze_held();
    // Meanwhile the Service's pods are replaced by pod-c.
    let backend = Backend::start_serving("pod-c", &[8080], hello("pod-c".into())).await;
    let mut spec = PodSpec::new("pod-c", &backend, &[("http", 8080)]);
    spec.labels = json!({"app": "svc"});
    w.ns.pod(spec).await;
    for pod in ["pod-a", "pod-b"] {
        w.ns.pods().delete(pod, &DeleteParams::default()).await.expect("delete a pod");
    }
    w.ns.ready_endpoints("svc", 1).await;
    tokio::time::sleep(ASLEEP.saturating_sub(slept.elapsed())).await;

    signal(libc::SIGCONT);
    let woke = Instant::now();
    let mut last = None;
    let took = loop {
        match get(proxy.socks, &svc).await {
            Ok(answer) if who(&answer) == "pod-c" => break woke.elapsed(),
            Ok(answer) => last = Some(format!("answered by {}", who(&answer))),
            Err(e) => last = Some(e),
        }
        assert!(woke.elapsed() < Duration::from_secs(30), "pod-c not served 30 s after waking: {last:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("asleep {ASLEEP:?} with its paths frozen: served the new pod {took:?} after waking (before: {last:?})");
    assert!(took <= RECOVERY, "the new pod was served only {took:?} after waking; the log:\n{}", proxy.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_limit_of_256_open_files_excess_clients_are_refused_and_the_proxy_serves_again() {
    const CLIENTS: usize = 400;
    let _serial = SERIAL.lock().await;
    own_fds_for(CLIENTS);
    let w = two_pods("nofile", echo).await;
    let proxy = Proxy::start_limited(&cluster().admin_kubeconfig, &[], 256).await;
    assert_eq!(nofile_limits(proxy.pid()), (256, 256), "started under ulimit -n 256");
    let idle_fds = open_fds(proxy.pid());

    // All at once, each held open once served; none may hang.
    let started = Instant::now();
    let mut all = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (addr, host) = (proxy.socks, w.svc());
        all.spawn(async move {
            let outcome = tokio::time::timeout(Duration::from_secs(15), socks_outcome(addr, &host, 80)).await;
            let outcome = outcome.map_err(|_| format!("client {i}: no answer within 15 s"))?;
            if let Outcome::Served(mut s) = outcome {
                echo_round(&mut s, format!("hello {i}\n").as_bytes()).await.map_err(|e| format!("client {i}: {e}"))?;
                return Ok::<_, String>((Outcome::Served(s), started.elapsed()));
            }
            Ok((outcome, started.elapsed()))
        });
    }
    let (mut held, mut refused, mut closed, mut hung) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut slowest_refusal = Duration::ZERO;
    while let Some(result) = all.join_next().await {
        match result.unwrap() {
            Ok((Outcome::Served(s), _)) => held.push(s),
            Ok((Outcome::Refused(code), after)) => {
                refused.push(code);
                slowest_refusal = slowest_refusal.max(after);
            }
            Ok((Outcome::Closed(e), after)) => {
                closed.push(e);
                slowest_refusal = slowest_refusal.max(after);
            }
            Err(e) => hung.push(e),
        }
    }
    let busy_fds = open_fds(proxy.pid());
    println!(
        "ulimit -n 256, {CLIENTS} clients at once: {} served and held, {} refused with SOCKS {:?}, {} closed before \
         any reply ({:?}), the last of these after {slowest_refusal:?}; {} without an answer; kubesocks descriptors \
         {idle_fds} idle, {busy_fds} busy",
        held.len(),
        refused.len(),
        refused.iter().collect::<std::collections::BTreeSet<_>>(),
        closed.len(),
        closed.first(),
        hung.len(),
    );
    assert!(hung.is_empty(), "{} clients got no answer, e.g. {:?}", hung.len(), &hung[..hung.len().min(5)]);
    assert!(held.len() >= 100, "only {} of {CLIENTS} served under 256 open files", held.len());
    assert!(!refused.is_empty(), "no client was refused: the limit was not reached");
    assert!(refused.iter().all(|&c| c == 0x01), "refusals are SOCKS general failures: {refused:?}");
    // Beyond the refusals answered at once, the rest are closed at once (a flood is not answered one by one).
    assert!(slowest_refusal < Duration::from_secs(5), "a refusal took {slowest_refusal:?}");
    assert!(busy_fds < 256, "kubesocks reached its open-file limit: {busy_fds}");
    assert!(
        proxy.logged("the open-file limit (256) leaves room for").await,
        "the lowered cap is logged at start:\n{}",
        proxy.log()
    );
    assert!(
        proxy.logged("client connections are open, the most allowed").await,
        "the refusals are logged with their reason:\n{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("Too many open files"), "{}", proxy.log());

    // Load drops: served again.
    drop(held);
    let dropped = Instant::now();
    support::wait_for("a connection once the load dropped", || async {
        let mut s = socks(proxy.socks, &w.svc(), 80).await.ok()?;
        echo_round(&mut s, b"again\n").await.ok()
    })
    .await;
    let after = open_fds(proxy.pid());
    println!("load dropped: a new connection served {:?} later; {after} descriptors", dropped.elapsed());
    assert!(!proxy.log().contains("panicked"), "{}", proxy.log());
}

// ------------------------------------------------------------ load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_stream_at_once_and_descriptors_and_active_return_to_their_baseline() {
    const N: usize = 1000;
    /// What each connection streams (echoed back) once all are open.
    const STREAM: usize = 64 * 1024;
    let _serial = SERIAL.lock().await;
    own_fds_for(N);
    let w = two_pods("load", echo).await;
    let m = Managed::new("load");
    let conn =
        m.connect(&["--context", "kubesocks-test", "--listen-socks", "127.0.0.1:0", "--idle-timeout", "2"]).await;
    let addr: SocketAddr = conn["socks"].as_str().expect("a SOCKS address").parse().unwrap();
    let pid = conn["pid"].as_u64().expect("the daemon's pid") as u32;
    let active = async || m.status().await["connections"][0]["active_connections"].as_u64().expect("active");
    let idle_fds = open_fds(pid);
    assert_eq!(active().await, 0);

    let started = Instant::now();
    let (go_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(N);
    let (streamed_tx, mut streamed_rx) = tokio::sync::mpsc::channel(N);
    let mut all = tokio::task::JoinSet::new();
    for i in 0..N {
        let (host, opened, streamed) = (w.svc(), opened_tx.clone(), streamed_tx.clone());
        let (mut go, mut done) = (go_tx.subscribe(), done_tx.subscribe());
        all.spawn(async move {
            let fail = |e: String| format!("connection {i}: {e}");
            let mut s = socks(addr, &host, 80).await.map_err(|c| fail(format!("SOCKS reply {c:#04x}")))?;
            echo_round(&mut s, format!("hello {i}\n").as_bytes()).await.map_err(fail)?;
            let _ = opened.send(()).await;
            let _ = go.recv().await;
            // All open: each streams its share, 4 KiB at a time, while the others do.
            let chunk: Vec<u8> = (0..4096).map(|b| (b + i) as u8).collect();
            for _ in 0..STREAM / chunk.len() {
                echo_round(&mut s, &chunk).await.map_err(fail)?;
            }
            let _ = streamed.send(()).await;
            let _ = done.recv().await;
            s.shutdown().await.map_err(|e| fail(e.to_string()))?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.map_err(|e| fail(e.to_string()))?;
            rest.is_empty().then_some(()).ok_or_else(|| fail(format!("{} bytes after the FIN", rest.len())))
        });
    }
    drop((opened_tx, streamed_tx));
    let count = async |rx: &mut tokio::sync::mpsc::Receiver<()>| {
        let mut n = 0;
        let _ = tokio::time::timeout(Duration::from_secs(120), async {
            while n < N && rx.recv().await.is_some() {
                n += 1;
            }
        })
        .await;
        n
    };
    let open = count(&mut opened_rx).await;
    let opened_in = started.elapsed();
    let (busy_fds, busy_active) = (open_fds(pid), active().await);
    let _ = go_tx.send(());
    let streaming = Instant::now();
    let streamed = count(&mut streamed_rx).await;
    let streamed_in = streaming.elapsed();
    let _ = done_tx.send(());
    let mut failures = Vec::new();
    while let Some(result) = all.join_next().await {
        if let Err(e) = result.unwrap() {
            failures.push(e);
        }
    }
    println!(
        "{open} of {N} connections open at once after {opened_in:?} (active {busy_active}, {busy_fds} descriptors, \
         {idle_fds} before); {streamed} streamed {} KiB each way each in {streamed_in:?}; {} failed",
        STREAM / 1024,
        failures.len()
    );
    assert!(failures.is_empty(), "{} of {N} failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert_eq!((open, streamed), (N, N), "all held open at once, and all streamed");
    assert!(busy_active >= N as u64, "status showed {busy_active} active with {N} open");

    // Afterwards: nothing left over once the idle sessions have closed (2 s).
    // Two descriptors of slack: the API client's pooled connections come and go.
    let settled = Instant::now();
    let (fds, now_active) = support::wait_for("descriptors and active back to their baseline", || async {
        let (fds, now_active) = (open_fds(pid), active().await);
        (now_active == 0 && fds <= idle_fds + 2).then_some((fds, now_active))
    })
    .await;
    println!(
        "{:?} after the last close: active {now_active}, {fds} descriptors ({idle_fds} before)",
        settled.elapsed()
    );
    let mut s = socks(addr, &w.svc(), 80).await.expect("a new connection after the load");
    echo_round(&mut s, b"still here\n").await.expect("a new connection echoes");
}

// ------------------------------------------------------------ slow clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_dropped_at_the_timeout_while_a_normal_client_is_served() {
    const EACH: usize = 500;
    let _serial = SERIAL.lock().await;
    own_fds_for(2 * EACH);
    let w = two_pods("stalled", hello).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &["--handshake-timeout", "2"]).await;
    let http = proxy.http.expect("an HTTP listener");
    get(proxy.socks, &w.svc()).await.expect("served before");

    // A SOCKS greeting cut after its version byte, and an HTTP head without its end.
    let stalls = [
        ("SOCKS", proxy.socks, b"\x05".to_vec()),
        ("HTTP", http, format!("GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\n", w.svc()).into_bytes()),
    ];
    let started = Instant::now();
    let mut all = tokio::task::JoinSet::new();
    for (kind, addr, stall) in stalls {
        for _ in 0..EACH {
            let stall = stall.clone();
            all.spawn(async move {
                let mut s = TcpStream::connect(addr).await.map_err(|e| format!("{kind}: connect: {e}"))?;
                let connected = Instant::now();
                s.write_all(&stall).await.map_err(|e| format!("{kind}: {e}"))?;
                let mut answer = Vec::new();
                let end = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer)).await;
                end.map_err(|_| format!("{kind}: still open after 15 s"))?.ok();
                Ok::<_, String>((kind, connected.elapsed(), String::from_utf8_lossy(&answer).into_owned()))
            });
        }
    }
    // Meanwhile, normal clients over both listeners.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let normal = Instant::now();
    let answer = get(proxy.socks, &w.svc()).await.expect("a normal SOCKS client is served meanwhile");
    let socks_took = normal.elapsed();
    assert!(who(&answer).starts_with("pod-"), "{answer}");
    let normal = Instant::now();
    let request = format!("GET http://{0}/ HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n", w.svc());
    let answer = support::raw_http(http, &request).await;
    let http_took = normal.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("hello from"), "{answer}");
    let meanwhile = started.elapsed();

    let mut dropped: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    let mut answers = std::collections::BTreeSet::new();
    for result in all.join_all().await {
        let (kind, after, answer) = result.unwrap_or_else(|e| panic!("{e}"));
        dropped.entry(kind).or_default().push(after);
        answers.insert(format!("{kind}: {:?}", answer.lines().next().unwrap_or("(nothing)")));
    }
    for (kind, times) in &dropped {
        let (min, max) = (times.iter().min().unwrap(), times.iter().max().unwrap());
        println!("{} stalled {kind} handshakes dropped {min:?} to {max:?} after they connected", times.len());
        assert_eq!(times.len(), EACH, "{kind}");
        // From the client's side the clock starts a little late under a burst of 1000 connects.
        assert!(*min >= Duration::from_millis(1500), "{kind}: one was dropped before the 2 s timeout: {min:?}");
        assert!(*max <= Duration::from_secs(5), "{kind}: one was held {max:?} with a 2 s timeout");
    }
    println!(
        "meanwhile ({meanwhile:?} into the stall) a SOCKS client was served in {socks_took:?}, an HTTP one in \
         {http_took:?}; the stalled got {answers:?}"
    );
    for stalled in ["SOCKS handshake stalled", "HTTP request head stalled"] {
        assert!(proxy.logged(stalled).await, "the stalls are logged ({stalled}):\n{}", proxy.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_1_gib_keeps_the_proxy_memory_bounded_and_loses_nothing() {
    const SIZE: usize = 1 << 30;
    /// The reader's pace: 64 KiB per millisecond at most, and one pause of 3 s.
    const READ: usize = 64 * 1024;
    let _serial = SERIAL.lock().await;
    let w = two_pods("slowreader", download).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    try_download(proxy.socks, &w.svc(), 1 << 20).await.expect("a first download");
    let (rss_before, hwm_before) = (status_kib(proxy.pid(), "VmRSS:"), status_kib(proxy.pid(), "VmHWM:"));

    let started = Instant::now();
    let mut s = start_download(proxy.socks, &w.svc(), 80, SIZE).await.expect("the download starts");
    let (line, mut got) = first_line(&mut s).await;
    assert!(line.starts_with("download from "), "{line:?}");
    let mut buf = vec![0u8; READ];
    let mut paused = false;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("data within 30 s")
            .expect("the download goes on");
        if n == 0 {
            break;
        }
        got += n;
        if !paused && got >= SIZE / 4 {
            paused = true;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    let hwm = status_kib(proxy.pid(), "VmHWM:");
    println!(
        "1 GiB read slowly in {took:?} ({:.0} MiB/s, one 3 s pause): {got} bytes, {} lost; kubesocks RSS {} MiB before, \
         peak {} MiB (peak before {} MiB)",
        SIZE as f64 / took.as_secs_f64() / f64::from(1 << 20),
        SIZE.saturating_sub(got),
        rss_before / 1024,
        hwm / 1024,
        hwm_before / 1024
    );
    assert_eq!(got, SIZE, "every byte arrived");
    assert!(hwm <= rss_before + 64 * 1024, "the proxy's peak RSS grew from {rss_before} KiB to {hwm} KiB");
}

/// Mixed traffic for a while, with the network changing under it every few
/// minutes as on a laptop: small and large downloads by Service name and
/// small ones by pod IP, from three clients at once, while every so often
/// each connection to the API server goes silent (the relay freezes them)
/// and an address comes or goes on `lo`. Only what was in flight around a
/// change may fail; the Service answers again within 5 s of each change;
/// RSS, descriptors and threads are printed every minute, and after a run
/// of 10 minutes or more the anonymous part of RSS has grown by at most
/// 16 MiB since the first minute. Half a minute with one change here; `tests/soak/run MINUTES`
/// runs it for longer (`KUBESOCKS_SOAK_MINUTES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_through_network_changes_keeps_being_served_with_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let minutes: f64 = match std::env::var("KUBESOCKS_SOAK_MINUTES") {
        Ok(m) => m.parse().unwrap_or_else(|_| panic!("KUBESOCKS_SOAK_MINUTES={m} is not a number of minutes")),
        Err(_) => 0.5,
    };
    let length = Duration::from_secs_f64(minutes * 60.0);
    // Every 3 minutes in a soak; once, half-way, in a short run.
    let change_every = Duration::from_secs(180).min(length / 2);
    let w = two_pods("soak", download).await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let proxy = Proxy::start(relay.relayed_kubeconfig(), &[]).await;
    let pid = proxy.pid();
    try_download(proxy.socks, &w.svc(), 1024).await.expect("the Service answers before the soak");

    let started = Instant::now();
    // Each client: (host, port, size) in turn, its outcomes as (start, result).
    let svc = w.svc();
    let pod_ip = w.ips["pod-a"].clone();
    let plans: Vec<Vec<(String, u16, usize)>> = vec![
        vec![(svc.clone(), 80, 1024)],
        vec![(svc.clone(), 80, 8 << 20), (svc.clone(), 80, 64 << 10)],
        vec![(pod_ip, 8080, 1024), (svc.clone(), 80, 1024)],
    ];
    let clients: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let socks = proxy.socks;
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for (host, port, size) in plan.iter().cycle() {
                    if started.elapsed() >= length {
                        break;
                    }
                    let at = started.elapsed();
                    outcomes.push((at, try_download_from(socks, host, *port, *size).await.map(|_| *size)));
                    // Bulk now and then, not a load test.
                    let pause = if *size >= 1 << 20 { 250 } else { 20 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                outcomes
            })
        })
        .collect();

    let mut changes = Vec::new();
    let mut samples = Vec::new();
    let mut address = None;
    let mut next_change = change_every;
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < length {
        let now = started.elapsed();
        if now >= next_change {
            let frozen = relay.freeze_held();
            // An address comes, or goes: the kernel announces a change either way.
            address = match address.take() {
                None => Some(AddedAddress::add("127.83.0.2/32")),
                Some(added) => {
                    drop(added);
                    None
                }
            };
            println!("{:>6.1} s: network change, {frozen} connections to the API server frozen", now.as_secs_f64());
            changes.push(now);
            next_change += change_every;
        }
        if now >= next_sample {
            // RSS counts the pages of the binary's code too (30 MiB of a debug
            // build, paged in as paths first run): leaks show in RssAnon.
            let sample =
                (status_kib(pid, "VmRSS:"), status_kib(pid, "RssAnon:"), open_fds(pid), status_kib(pid, "Threads:"));
            println!(
                "{:>6.1} s: RSS {} MiB ({} MiB anonymous), {} descriptors, {} threads",
                now.as_secs_f64(),
                sample.0 / 1024,
                sample.1 / 1024,
                sample.2,
                sample.3
            );
            samples.push((now, sample));
            next_sample += Duration::from_secs(60).min(length / 3);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(address);
    let mut outcomes: Vec<(Duration, Result<usize, String>)> = Vec::new();
    for client in clients {
        outcomes.extend(client.await.expect("a client panicked"));
    }
    outcomes.sort_by_key(|(at, _)| *at);

    // What started from 10 s before a change (the longest a download may
    // take) to RECOVERY after it may fail; nothing else may.
    let near_change = |at: Duration| changes.iter().any(|&c| at + Duration::from_secs(10) >= c && at <= c + RECOVERY);
    let served: usize = outcomes.iter().filter_map(|(_, r)| r.as_ref().ok()).sum();
    let ok = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    let at_changes = outcomes.iter().filter(|(at, r)| r.is_err() && near_change(*at)).count();
    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(at, r)| r.is_err() && !near_change(*at))
        .map(|(at, r)| format!("{:.1} s: {}", at.as_secs_f64(), r.as_ref().unwrap_err()))
        .collect();
    // After each change, how soon a download that started after it succeeded.
    let recoveries: Vec<Option<Duration>> =
        changes.iter().map(|&c| outcomes.iter().find(|(at, r)| *at >= c && r.is_ok()).map(|(at, _)| *at - c)).collect();
    // Memory is compared from the first minute on: the first sample is taken before any traffic.
    let warm = samples.iter().find(|(at, _)| *at >= Duration::from_secs(60)).or(samples.last());
    let (first, last) = (warm.map(|s| s.1).unwrap_or_default(), samples.last().map(|s| s.1).unwrap_or_default());
    println!(
        "{:.1} min of mixed traffic, {} network changes: {ok} downloads served ({} MiB), {at_changes} failed around \
         a change, {} at other times; served again after each change in {recoveries:?}; from the first minute \
         on, RSS {} -> {} MiB, anonymous {} -> {} MiB, descriptors {} -> {}, threads {} -> {}",
        minutes,
        changes.len(),
        served >> 20,
        unexpected.len(),
        first.0 / 1024,
        last.0 / 1024,
        first.1 / 1024,
        last.1 / 1024,
        first.2,
        last.2,
        first.3,
        last.3
    );
    assert!(!changes.is_empty(), "no network change in {minutes} min");
    assert!(unexpected.is_empty(), "downloads failed away from any network change: {unexpected:#?}");
    for (c, r) in changes.iter().zip(&recoveries) {
        let r = r.unwrap_or_else(|| panic!("nothing served after the change at {c:?}"));
        // The first download after the change started at most RECOVERY later.
        assert!(r <= RECOVERY, "served again only {r:?} after the change at {c:?}");
    }
    if length >= Duration::from_secs(600) {
        assert!(last.1 <= first.1 + 16 * 1024, "anonymous memory grew from {} to {} KiB", first.1, last.1);
    }
}
