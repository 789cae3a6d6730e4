//! The kubeconfig's `proxy-url`: `kubesocks proxy-out` reaches the real test
//! API server only through a real HTTP proxy (Debian's tinyproxy, also behind
//! Debian's stunnel as an `https://` proxy) or a real SOCKS5 server (Debian's
//! dante), each started here with its own config and log. The proof that nothing goes around the proxy is twofold: the proxy's
//! own log shows the connections to the API server, and while a port-forward
//! session is up, every TCP connection the kubesocks process holds goes to
//! the proxy's port and none to the API server's.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::config::Kubeconfig;
use serde_json::json;
use support::relay::FaultRelay;
use support::{Backend, PodSpec, Proxy, TestNamespace, cluster, curl, free_port};

/// A proxy server process of this test, stopped (SIGTERM, so dante's
/// children go too) and its directory removed when dropped.
struct ProxyServer {
    port: u16,
    log: PathBuf,
    dir: PathBuf,
    child: std::process::Child,
}

impl ProxyServer {
    /// A directory of its own (tests run side by side in one process).
    fn dir(name: &str) -> PathBuf {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kubesocks-proxyurl-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // dante drops to `nobody` to write its log.
        let _ = std::process::Command::new("chmod").arg("777").arg(&dir).status();
        dir
    }

    /// tinyproxy on a loopback port, logging every CONNECT.
    async fn tinyproxy() -> ProxyServer {
        let dir = ProxyServer::dir("tinyproxy");
        let log = dir.join("tinyproxy.log");
        let port = free_port();
        let config = dir.join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 200\nAllow 127.0.0.1\n\
                 LogFile \"{}\"\nLogLevel Connect\n",
                log.display()
            ),
        )
        .unwrap();
        // -d: in the foreground, so this test owns the process.
        let child = spawn("tinyproxy", &["-d", "-c", &config.to_string_lossy()], &dir);
        ProxyServer::ready(ProxyServer { port, log, dir, child }).await
    }

    /// dante on a loopback port, no authentication, logging every connect.
    async fn dante() -> ProxyServer {
        let dir = ProxyServer::dir("dante");
        let log = dir.join("danted.log");
        let port = free_port();
        let config = dir.join("danted.conf");
        // As root, dante must be told whom to drop to.
        let users = if running_as_root() { "user.privileged: root\nuser.unprivileged: nobody\n" } else { "" };
        std::fs::write(
            &config,
            format!(
                "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 socksmethod: none\nclientmethod: none\n{users}\
                 client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  log: connect error\n}}\n\
                 socks pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n  command: connect\n  log: connect disconnect error\n}}\n",
                log.display()
            ),
        )
        .unwrap();
        let pid_file = dir.join("danted.pid");
        let child = spawn("danted", &["-f", &config.to_string_lossy(), "-p", &pid_file.to_string_lossy()], &dir);
        ProxyServer::ready(ProxyServer { port, log, dir, child }).await
    }

    /// stunnel on a loopback port in front of `inner`: with tinyproxy
    /// behind it, an `https://` proxy. Its certificate for 127.0.0.1 is
    /// issued by `ca_dir`'s `ca.crt`/`ca.key`.
    async fn stunnel(inner: &ProxyServer, ca_dir: &Path) -> ProxyServer {
        let dir = ProxyServer::dir("stunnel");
        let (log, port) = (dir.join("stunnel.log"), free_port());
        let (cert, key) = (dir.join("proxy.crt"), dir.join("proxy.key"));
        let issued = std::process::Command::new("openssl")
            .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-subj", "/CN=kubesocks-test-proxy", "-days", "1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "extendedKeyUsage=serverAuth"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-CA")
            .arg(ca_dir.join("ca.crt"))
            .arg("-CAkey")
            .arg(ca_dir.join("ca.key"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(issued.status.success(), "openssl: {}", String::from_utf8_lossy(&issued.stderr));
        let config = dir.join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\noutput = {}\ndebug = info\n[proxy]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
                log.display(),
                inner.port,
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let child = spawn("stunnel4", &[&config.to_string_lossy()], &dir);
        ProxyServer::ready(ProxyServer { port, log, dir, child }).await
    }

    async fn ready(mut server: ProxyServer) -> ProxyServer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the proxy server exited ({status}); its log:\n{}", server.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy server does not listen; its log:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn log_text(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        for name in ["stdout", "stderr"] {
            text.push_str(&std::fs::read_to_string(self.dir.join(name)).unwrap_or_default());
        }
        text
    }

    /// The lines of the log that record a connection to `target`
    /// (`host:port`): tinyproxy's `CONNECT host:port`, dante's
    /// `tcp/connect [: client proxy -> local host.port`.
    fn connects_to(&self, target: &str) -> Vec<String> {
        let dante_form = target.replace(':', ".");
        self.log_text()
            .lines()
            .filter(|l| {
                l.contains(&format!("CONNECT {target} ")) || (l.contains("tcp/connect [") && l.ends_with(&dante_form))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(program: &str, args: &[&str], dir: &Path) -> std::process::Child {
    // danted lives in /usr/sbin, not on every user's PATH.
    let sbin = Path::new("/usr/sbin").join(program);
    let program = if sbin.exists() { sbin } else { PathBuf::from(program) };
    std::process::Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); tests/setup installs it", program.display()))
}

fn running_as_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The test cluster's admin kubeconfig with `proxy-url` (and, if given, a
/// new `server:`) on its cluster, written to `dir`.
fn kubeconfig_with(dir: &Path, proxy_url: &str, server: Option<&str>) -> PathBuf {
    let mut kc = Kubeconfig::read_from(&cluster().admin_kubeconfig).unwrap();
    for named in &mut kc.clusters {
        let c = named.cluster.as_mut().unwrap();
        c.proxy_url = Some(proxy_url.to_string());
        if let Some(server) = server {
            c.server = Some(server.to_string());
        }
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

/// Runs `kubesocks proxy-out` with `kubeconfig`, expecting it to stop with
/// an error; returns what it printed on stderr.
async fn fails_to_start(kubeconfig: &Path) -> String {
    let state = kubeconfig.with_file_name("state");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["proxy-out", "--listen-socks", "127.0.0.1:0"])
        .env("KUBESOCKS_STATE_DIR", &state)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.expect("kubesocks stops").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kubesocks started with {}; stderr: {stderr}", kubeconfig.display());
    let _ = std::fs::remove_dir_all(&state);
    stderr
}

/// The API server's `host:port`.
fn api_server() -> String {
    let kc = Kubeconfig::read_from(&cluster().admin_kubeconfig).unwrap();
    let server = kc.clusters[0].cluster.as_ref().unwrap().server.clone().unwrap();
    server.trim_start_matches("https://").trim_end_matches('/').to_string()
}

/// Remote port → count of the TCP connections process `pid` holds (not
/// listening ones), from `/proc`.
fn tcp_peers(pid: u32) -> BTreeMap<u16, usize> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| Some(l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect();
    let mut peers = BTreeMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        // The first line is the table's header.
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (remote, state, inode) = (fields[2], fields[3], fields[9]);
            // 0A: listening.
            if state == "0A" || !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let port = u16::from_str_radix(remote.rsplit(':').next().unwrap(), 16).unwrap();
            *peers.entry(port).or_insert(0) += 1;
        }
    }
    peers
}

/// Runs kubesocks through `kubeconfig` (whose proxy-url points at port
/// `proxy_port`: `server` itself, or a TLS front of it) to a one-pod Service,
/// and proves the API traffic, watches and the port-forward all went through
/// `server`.
/// Asserts that the process `pid` reached the API server through `server`
/// only: the proxy's log shows its connections to the API server (the
/// first request and the watches at least), and while the port-forward
/// session is up (sessions are kept for reuse) every connection the process
/// holds goes to the proxy's port, none to the API server itself. Returns
/// the API server's port.
fn only_through(server: &ProxyServer, proxy_port: u16, pid: u32) -> u16 {
    let api = api_server();
    let connects = server.connects_to(&api);
    assert!(
        connects.len() >= 2,
        "the proxy's log shows {} connections to {api}:\n{}",
        connects.len(),
        server.log_text()
    );
    let api_port: u16 = api.rsplit(':').next().unwrap().parse().unwrap();
    let peers = tcp_peers(pid);
    assert!(!peers.contains_key(&api_port), "kubesocks holds connections to the API server itself: {peers:?}");
    assert!(
        peers.get(&proxy_port).copied().unwrap_or(0) >= 2,
        "kubesocks holds too few connections to the proxy (port {proxy_port}): {peers:?}"
    );
    println!(
        "{} connections to {api} in the proxy's log; kubesocks' connections by remote port: {peers:?}",
        connects.len()
    );
    api_port
}

/// A namespace with a Service `web` whose one pod answers `hello from web-0`.
async fn web_service(prefix: &str) -> (TestNamespace, Backend) {
    let ns = TestNamespace::new(prefix).await;
    let web = Backend::start("web-0", &[8080]).await;
    let mut spec = PodSpec::new("web-0", &web, &[("http", 8080)]);
    spec.labels = json!({"app": "web"});
    ns.pod(spec).await;
    ns.service("web", json!({"selector": {"app": "web"}, "ports": [{"name": "h", "port": 80, "targetPort": "http"}]}))
        .await;
    ns.ready_endpoints("web", 1).await;
    (ns, web)
}

async fn reaches_the_cluster_only_through(server: &ProxyServer, proxy_port: u16, kubeconfig: &Path, prefix: &str) {
    let (ns, _web) = web_service(prefix).await;

    let proxy = Proxy::start(kubeconfig, &["-n", &ns.name]).await;
    assert!(proxy.logged("proxy-url").await, "kubesocks does not say it uses the proxy-url:\n{}", proxy.log());

    let out = curl(&["--proxy", &proxy.socks_url(), &format!("http://web.{}/", ns.name)]).await;
    assert_eq!(out.code, 0, "curl failed: {}\nkubesocks:\n{}", out.stderr, proxy.log());
    assert!(out.stdout.contains("hello from web-0 "), "{:?}", out.stdout);

    let api_port = only_through(server, proxy_port, proxy.pid());
    // The second request reuses the port-forward session, still via the proxy.
    let out = curl(&["--proxy", &proxy.socks_url(), &format!("http://web.{}/", ns.name)]).await;
    assert!(out.stdout.contains("hello from web-0 "), "{:?} {}", out.stdout, out.stderr);
    assert!(!tcp_peers(proxy.pid()).contains_key(&api_port));
}

#[tokio::test]
async fn an_http_proxy_url_carries_every_api_connection() {
    let server = ProxyServer::tinyproxy().await;
    let kubeconfig = kubeconfig_with(&server.dir, &format!("http://127.0.0.1:{}", server.port), None);
    reaches_the_cluster_only_through(&server, server.port, &kubeconfig, "pxhttp").await;
}

#[tokio::test]
async fn an_https_proxy_url_carries_every_api_connection_inside_tls() {
    let tinyproxy = ProxyServer::tinyproxy().await;
    // kubectl's rule, and kubesocks': the proxy's certificate is checked
    // with the cluster's certificate authority.
    let pki = Path::new(cluster().get("KUBESOCKS_PKI_DIR"));
    let tls = ProxyServer::stunnel(&tinyproxy, pki).await;
    let kubeconfig = kubeconfig_with(&tls.dir, &format!("https://127.0.0.1:{}", tls.port), None);
    reaches_the_cluster_only_through(&tinyproxy, tls.port, &kubeconfig, "pxhttps").await;
    assert!(tls.log_text().contains("connected remote server"), "stunnel's log:\n{}", tls.log_text());

    // A proxy whose certificate the cluster's authority did not issue is
    // not trusted: kubesocks stops, saying so.
    let other_ca = ProxyServer::dir("other-ca");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=not-the-cluster-ca", "-days", "1"])
        .arg("-keyout")
        .arg(other_ca.join("ca.key"))
        .arg("-out")
        .arg(other_ca.join("ca.crt"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let untrusted = ProxyServer::stunnel(&tinyproxy, &other_ca).await;
    let kubeconfig = kubeconfig_with(&untrusted.dir, &format!("https://127.0.0.1:{}", untrusted.port), None);
    let stderr = fails_to_start(&kubeconfig).await;
    assert!(stderr.contains(&format!("through the proxy https://127.0.0.1:{}", untrusted.port)), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    let _ = std::fs::remove_dir_all(&other_ca);
}

#[tokio::test]
async fn a_socks5_proxy_url_carries_every_api_connection_and_resolves_the_name() {
    let server = ProxyServer::dante().await;
    // A name, not an address: the SOCKS server resolves it (the API
    // server's certificate names `localhost`).
    let api = api_server();
    let port = api.rsplit(':').next().unwrap();
    let kubeconfig = kubeconfig_with(
        &server.dir,
        &format!("socks5://127.0.0.1:{}", server.port),
        Some(&format!("https://localhost:{port}")),
    );
    reaches_the_cluster_only_through(&server, server.port, &kubeconfig, "pxsocks").await;
}

#[tokio::test]
async fn an_unsupported_proxy_scheme_is_an_error_naming_it() {
    let dir = ProxyServer::dir("socks4");
    for (url, scheme) in [("socks4://user:s3cret@127.0.0.1:1080", "socks4"), ("ftp://127.0.0.1:21", "ftp")] {
        let stderr = fails_to_start(&kubeconfig_with(&dir, url, None)).await;
        assert!(stderr.contains(&format!("the scheme \"{scheme}\"")), "{stderr}");
        assert!(stderr.contains("context kubesocks-test"), "{stderr}");
        assert!(stderr.contains("http, https and socks5"), "{stderr}");
        assert!(!stderr.contains("s3cret"), "the proxy's password is shown: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubesocks connect` (managed mode): the daemon connects with the
/// connection's own minified kubeconfig, which must keep the proxy-url.
#[tokio::test]
async fn managed_connections_keep_the_proxy_url() {
    let server = ProxyServer::tinyproxy().await;
    let proxy_url = format!("http://127.0.0.1:{}", server.port);
    let kubeconfig = kubeconfig_with(&server.dir, &proxy_url, None);
    let state = server.dir.join("state");
    let kubesocks = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
            .args(args)
            .env("KUBESOCKS_STATE_DIR", &state)
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .output()
            .expect("run kubesocks")
    };
    // Stops the daemon however the test ends.
    struct Quit<F: Fn(&[&str]) -> std::process::Output>(F);
    impl<F: Fn(&[&str]) -> std::process::Output> Drop for Quit<F> {
        fn drop(&mut self) {
            (self.0)(&["quit"]);
        }
    }
    let kubesocks = Quit(kubesocks);

    let (ns, _web) = web_service("pxmanaged").await;

    let out = (kubesocks.0)(&["connect", "-o", "json", "--listen-socks", "127.0.0.1:0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "connect failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let conn: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let own = std::fs::read_to_string(conn["kubeconfig"].as_str().unwrap()).unwrap();
    assert!(own.contains(&format!("\"proxy-url\": \"{proxy_url}\"")), "the connection's kubeconfig:\n{own}");

    let out = curl(&["--proxy", conn["socks_url"].as_str().unwrap(), &format!("http://web.{}/", ns.name)]).await;
    assert!(out.stdout.contains("hello from web-0 "), "{:?} {}", out.stdout, out.stderr);
    let daemon = conn["pid"].as_u64().expect("the daemon's pid") as u32;
    only_through(&server, server.port, daemon);
}

/// How long after `since` a GET of `url` through `proxy` first answered
/// `hello from web-0` (tried every 100 ms, each for at most 3 s, for up to
/// 30 s), and the last failure before.
async fn first_answer(proxy: &Proxy, url: &str, since: std::time::Instant) -> (Duration, Option<String>) {
    let mut last = None;
    while since.elapsed() < Duration::from_secs(30) {
        let out = curl(&["--max-time", "3", "--proxy", &proxy.socks_url(), url]).await;
        if out.code == 0 && out.stdout.contains("hello from web-0 ") {
            return (since.elapsed(), last);
        }
        last = Some(format!("curl {}: {}", out.code, out.stderr.trim()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url}: no answer within 30 s; last: {last:?}\nkubesocks:\n{}", proxy.log());
}

/// Through a proxy-url as without one, a path gone silent is found within
/// seconds: every connection between the HTTP proxy and the API server
/// freezes (a relay behind tinyproxy stops carrying bytes; tinyproxy keeps
/// kubesocks' connections open and silent), and within 5 s the Service
/// served before answers again, and a Service made after the freeze too.
#[tokio::test]
async fn through_an_http_proxy_url_a_frozen_path_is_found_and_served_again_within_5_s() {
    let (ns, _web) = web_service("pxfreeze").await;
    let server = ProxyServer::tinyproxy().await;
    let relay = FaultRelay::in_front_of(&cluster().admin_kubeconfig).await;
    let proxy_url = format!("http://127.0.0.1:{}", server.port);
    let kubeconfig = kubeconfig_with(&server.dir, &proxy_url, Some(&format!("https://{}", relay.addr())));
    let proxy = Proxy::start(&kubeconfig, &[]).await;
    let known = format!("http://web.{}/", ns.name);
    first_answer(&proxy, &known, std::time::Instant::now()).await;
    assert!(!server.connects_to(&relay.addr().to_string()).is_empty(), "kubesocks went around the proxy");

    let frozen = relay.freeze_held();
    let since = std::time::Instant::now();
    assert!(frozen >= 2, "{frozen} connection(s) through the relay: the API client's and a port-forward session");
    let made = format!("http://made-after.{}/", ns.name);
    let new = async {
        ns.service("made-after", json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}))
            .await;
        first_answer(&proxy, &made, since).await
    };
    let ((known, known_err), (new, new_err)) = tokio::join!(first_answer(&proxy, &known, since), new);
    println!(
        "through tinyproxy, {frozen} connections to the API server frozen: the known Service answered again {known:?} \
         after the freeze (last failure before: {known_err:?}), a Service made after it {new:?} (last failure before: \
         {new_err:?})"
    );
    assert!(known <= Duration::from_secs(5), "the known Service answered only {known:?} after the freeze");
    assert!(new <= Duration::from_secs(5), "a Service made after the freeze answered only {new:?} after it");
}
