//! Test support: the real local control plane (`tests/cluster/up`), namespaces
//! and pods made for one test, loopback backends that play the pods' servers,
//! and a `kubesocks proxy-out` process to talk through.
//!
//! The cluster is started once per test binary (or reused if already up). If
//! it cannot start, every test fails with the reason; nothing is skipped.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod managed;
pub mod relay;
pub mod traffic;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The running test cluster, as `tests/cluster/up` described it.
pub struct Cluster {
    pub admin_kubeconfig: PathBuf,
    pub env: HashMap<String, String>,
}

impl Cluster {
    pub fn get(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("cluster.env has no {key}: {:?}", self.env.keys()))
    }

    pub fn restricted_kubeconfig(&self) -> PathBuf {
        self.admin_kubeconfig.with_file_name("restricted.kubeconfig")
    }

    /// The restricted user's twin that may also `get` pods/portforward, as
    /// WebSocket upgrades (the tunnel and v4) need; the restricted user has
    /// only `create`, what kubectl documents.
    pub fn restricted_get_kubeconfig(&self) -> PathBuf {
        self.admin_kubeconfig.with_file_name("restricted-get.kubeconfig")
    }

    /// A restricted user (team-a only) that can port-forward with the
    /// protocol the proxies are forced to: the create-only one unless that
    /// protocol is a GET upgrade.
    pub fn restricted_kubeconfig_for_protocol(&self) -> PathBuf {
        match forced_protocol() {
            Some("tunnel" | "websocket") => self.restricted_get_kubeconfig(),
            _ => self.restricted_kubeconfig(),
        }
    }

    /// The kubelet stub's log: a line per port-forward session and per stream.
    pub fn stub_log(&self) -> String {
        let path = Path::new(self.get("KUBESOCKS_LOG_DIR")).join("kubelet-stub.log");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }
}

/// `KUBESOCKS_TEST_PROTOCOL` (tunnel, spdy or websocket): the port-forward
/// protocol every [`Proxy`] is started with unless the test names one;
/// unset: `auto`.
pub fn forced_protocol() -> Option<&'static str> {
    static FORCED: OnceLock<Option<&'static str>> = OnceLock::new();
    *FORCED.get_or_init(|| {
        let value = std::env::var("KUBESOCKS_TEST_PROTOCOL").ok().filter(|v| !v.is_empty() && v != "auto")?;
        assert!(
            ["tunnel", "spdy", "websocket"].contains(&value.as_str()),
            "KUBESOCKS_TEST_PROTOCOL={value}: want tunnel, spdy or websocket"
        );
        Some(&*value.leak())
    })
}

/// Whether the proxies' port-forwards carry a client's FIN to the pod (the
/// SPDY protocols, and `auto`, which picks one for the admin user); the v4
/// WebSocket protocol cannot, so kubesocks lingers instead.
pub fn forced_protocol_carries_fin() -> bool {
    forced_protocol() != Some("websocket")
}

/// `KUBESOCKS_TEST_NODE` (node-spdy or node-ws): where pods go unless a test
/// picks a node; unset: node-spdy.
pub fn test_node() -> &'static str {
    match std::env::var("KUBESOCKS_TEST_NODE").as_deref() {
        Err(_) | Ok("" | "node-spdy") => "node-spdy",
        Ok("node-ws") => "node-ws",
        Ok(other) => panic!("KUBESOCKS_TEST_NODE={other}: want node-spdy or node-ws"),
    }
}

/// The repository's top: these tests belong to the `crates/cli` package.
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Starts the cluster (or finds it running) once per test binary.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let up = repo_root().join("tests/cluster/up");
        let out = std::process::Command::new(&up)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", up.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tests/cluster/up failed ({}); its output is above. stdout: {stdout}",
            out.status
        );
        let path = PathBuf::from(stdout.lines().last().expect("tests/cluster/up printed no kubeconfig path").trim());
        let env_file = path.with_file_name("cluster.env");
        let env = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", env_file.display()))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
            .collect();
        Cluster { admin_kubeconfig: path, env }
    })
}

/// A client for a kubeconfig. Make one per test: a client belongs to the
/// runtime it was made on, and each test has its own.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("usable kubeconfig");
    Client::try_from(config).expect("client")
}

pub async fn admin() -> Client {
    client_for(&cluster().admin_kubeconfig).await
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A namespace for one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> TestNamespace {
        let client = admin().await;
        let name = unique(prefix);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        // Pods need the namespace's default ServiceAccount, made by its controller.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(&format!("ServiceAccount default in {name}"), || async { sa.get_opt("default").await.ok().flatten() })
            .await;
        TestNamespace { name, client }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates a pod on `node` whose ports are served by `backend`, and waits
    /// until the kubelet stub reports it Running with an IP.
    pub async fn pod(&self, spec: PodSpec<'_>) -> Pod {
        let ports: Vec<_> =
            spec.ports.iter().map(|(name, port)| json!({"name": name, "containerPort": port})).collect();
        let mut annotations = json!({"kubesocks.test/backend": spec.backend.to_string()});
        if !spec.ready {
            annotations["kubesocks.test/ready"] = json!("false");
        }
        if let Some(delay) = spec.dial_delay {
            annotations["kubesocks.test/dial-delay"] = json!(delay);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": spec.name, "labels": spec.labels, "annotations": annotations},
            "spec": {
                "nodeName": spec.node,
                "hostname": spec.hostname.map(|h| h.0),
                "subdomain": spec.hostname.map(|h| h.1),
                "containers": [{"name": "main", "image": "kubesocks.test/backend", "ports": ports}]
            }
        }))
        .unwrap();
        self.pods().create(&PostParams::default(), &pod).await.expect("create pod");
        let api = self.pods();
        wait_for(&format!("pod {} Running with an IP", spec.name), || async {
            let pod = api.get(spec.name).await.ok()?;
            let status = pod.status.as_ref()?;
            (status.phase.as_deref() == Some("Running") && status.pod_ip.is_some()).then_some(pod)
        })
        .await
    }

    pub async fn service(&self, name: &str, spec: serde_json::Value) -> Service {
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
        self.services().create(&PostParams::default(), &svc).await.expect("create service")
    }

    /// Waits until the Service's EndpointSlices list `pods` ready endpoints.
    pub async fn ready_endpoints(&self, service: &str, pods: usize) -> Vec<EndpointSlice> {
        let api = self.slices();
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        wait_for(&format!("{pods} ready endpoints of service {service}"), || async {
            let slices = api.list(&lp).await.ok()?.items;
            let ready = slices
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .count();
            (ready == pods).then_some(slices)
        })
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and the runtime may be gone.
        let _ = std::process::Command::new("kubectl")
            .args(["--kubeconfig"])
            .arg(&cluster().admin_kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub struct PodSpec<'a> {
    pub name: &'a str,
    pub labels: serde_json::Value,
    pub node: &'a str,
    pub backend: IpAddr,
    pub ports: Vec<(&'a str, u16)>,
    pub ready: bool,
    pub hostname: Option<(&'a str, &'a str)>,
    /// How long the kubelet stub waits before dialling the backend (a Go duration).
    pub dial_delay: Option<&'a str>,
}

impl<'a> PodSpec<'a> {
    pub fn new(name: &'a str, backend: &Backend, ports: &[(&'a str, u16)]) -> PodSpec<'a> {
        PodSpec {
            name,
            labels: json!({}),
            node: test_node(),
            backend: backend.ip,
            ports: ports.to_vec(),
            ready: true,
            hostname: None,
            dial_delay: None,
        }
    }
}

/// Polls `probe` until it yields, for up to 30 s; then fails naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pod's server: HTTP on every given port of one loopback IP of its own,
/// answering `hello from <name> on port <port>`. Stops when dropped.
pub struct Backend {
    pub ip: IpAddr,
    pub name: String,
    /// Connections the client side closed (seen as EOF by the server).
    pub closed_by_peer: std::sync::Arc<AtomicU32>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Loopback IPs for backends: 127.<per process>.<n>, so parallel tests and
/// test binaries do not collide.
fn next_loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let p = (std::process::id() % 200) as u8 + 20;
    Ipv4Addr::new(127, p, (n / 250) as u8, (n % 250) as u8 + 2)
}

impl Backend {
    pub async fn start(name: &str, ports: &[u16]) -> Backend {
        Backend::start_with(name, ports, false, false).await
    }

    /// Like [`Backend::start`], and the answer ends with the request head as
    /// the backend received it (`head:` and its lines), to check what a
    /// proxy forwarded.
    pub async fn start_echo(name: &str, ports: &[u16]) -> Backend {
        Backend::start_with(name, ports, false, true).await
    }

    /// Like [`Backend::start`], but keeps each connection open after answering
    /// (HTTP keep-alive) until the client side closes it.
    pub async fn start_keep_alive(name: &str, ports: &[u16]) -> Backend {
        Backend::start_with(name, ports, true, false).await
    }

    async fn start_with(name: &str, ports: &[u16], keep_alive: bool, echo: bool) -> Backend {
        let closed_by_peer = std::sync::Arc::new(AtomicU32::new(0));
        let (ip, listeners) = bind_loopback(ports).await;
        let tasks = listeners
            .into_iter()
            .map(|(port, listener)| {
                let body = format!("hello from {name} on port {port}\n");
                tokio::spawn(serve_http(listener, body, keep_alive, echo, closed_by_peer.clone()))
            })
            .collect();
        Backend { ip, name: name.to_string(), closed_by_peer, tasks }
    }
}

/// Binds every port on the next free loopback IP of the tests (an IP where
/// one of them is taken is passed over).
async fn bind_loopback(ports: &[u16]) -> (IpAddr, Vec<(u16, TcpListener)>) {
    'ip: loop {
        let ip = IpAddr::V4(next_loopback());
        let mut listeners = Vec::new();
        for &port in ports {
            match TcpListener::bind((ip, port)).await {
                Ok(listener) => listeners.push((port, listener)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue 'ip,
                Err(e) => panic!("cannot bind a backend on {ip}:{port}: {e}"),
            }
        }
        return (ip, listeners);
    }
}

/// Answers each request with `body` and closes: enough HTTP for curl and
/// for raw clients that send one request and read to the end.
async fn serve_http(
    listener: TcpListener,
    body: String,
    keep_alive: bool,
    echo: bool,
    closed: std::sync::Arc<AtomicU32>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let body = body.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let Some(request) = read_head(&mut stream).await else { return };
            let mut buf = [0u8; 4096];
            let text = String::from_utf8_lossy(&request).to_string();
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut body = format!("{}path {path}\n", body);
            if echo {
                let head = text.split("\r\n\r\n").next().unwrap_or_default();
                body.push_str(&format!("head:\n{}\n", head.replace("\r\n", "\n")));
            }
            let connection = if keep_alive { "keep-alive" } else { "close" };
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            if keep_alive {
                // Wait for the client to go away, as a keep-alive server does.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            } else {
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// A `kubesocks proxy-out` process on ephemeral ports. Killed when dropped.
pub struct Proxy {
    pub socks: SocketAddr,
    pub http: Option<SocketAddr>,
    /// The DNS helper, when `--listen-dns` was given.
    pub dns: Option<SocketAddr>,
    pub state_dir: PathBuf,
    child: tokio::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proxy {
    pub async fn start(kubeconfig: &Path, extra: &[&str]) -> Proxy {
        Proxy::try_start(kubeconfig, extra).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `kubesocks proxy-out`; `Err` carries everything it printed if it
    /// did not come up.
    pub async fn try_start(kubeconfig: &Path, extra: &[&str]) -> Result<Proxy, String> {
        Proxy::try_start_limited(kubeconfig, extra, None).await
    }

    /// Starts `kubesocks proxy-out` limited to `nofile` open files from its
    /// first instruction on, soft and hard (as `ulimit -n` in a shell would).
    pub async fn start_limited(kubeconfig: &Path, extra: &[&str], nofile: u64) -> Proxy {
        Proxy::try_start_limited(kubeconfig, extra, Some(nofile)).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_start_limited(kubeconfig: &Path, extra: &[&str], nofile: Option<u64>) -> Result<Proxy, String> {
        let state_dir = std::env::temp_dir().join(unique("kubesocks-state"));
        // Ephemeral ports unless the test picks its own.
        let mut defaults = Vec::new();
        if let Some(protocol) = forced_protocol().filter(|_| !extra.contains(&"--portforward-protocol")) {
            defaults.extend(["--portforward-protocol", protocol]);
        }
        for flag in ["--listen-socks", "--listen-http"] {
            if !extra.contains(&flag) {
                defaults.extend([flag, "127.0.0.1:0"]);
            }
        }
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"));
        // A test run killed (a soak stopped early, a CI timeout) takes its
        // proxies with it: `kill_on_drop` runs only when the test ends normally.
        // SAFETY: between fork and exec only prctl runs, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        if let Some(nofile) = nofile {
            let limit = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
            // SAFETY: between fork and exec only setrlimit runs, which is
            // async-signal-safe, on a struct copied into the closure.
            unsafe {
                command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let mut child = command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("proxy-out")
            .args(defaults)
            .args(extra)
            .env("KUBESOCKS_STATE_DIR", &state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kubesocks");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut out_lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut socks, mut http, mut dns, mut stdout) = (None, None, None, String::new());
        let started = async {
            while let Ok(Some(line)) = out_lines.next_line().await {
                stdout.push_str(&line);
                stdout.push('\n');
                if let Some(url) = line.strip_prefix("SOCKS5 proxy: socks5h://") {
                    let url = url.split_whitespace().next().unwrap_or_default();
                    socks = Some(url.rsplit('@').next().unwrap().parse::<SocketAddr>().unwrap());
                }
                if let Some(url) = line.trim().strip_prefix("HTTP proxy:") {
                    let addr = url.trim().trim_start_matches("http://");
                    http = Some(addr.rsplit('@').next().unwrap().parse::<SocketAddr>().unwrap());
                }
                if let Some(rest) = line.strip_prefix("DNS helper:") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    dns = Some(addr.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{line:?}: {e}")));
                }
                if line.starts_with("Ctrl-C") {
                    return true;
                }
            }
            false
        };
        let ok = tokio::time::timeout(Duration::from_secs(60), started).await.unwrap_or(false);
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let status = child.try_wait().ok().flatten();
            return Err(format!(
                "kubesocks proxy-out did not start (exit: {status:?})\nstdout:\n{stdout}\nstderr:\n{}",
                stderr.lock().unwrap()
            ));
        }
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out_lines.next_line().await {} });
        Ok(Proxy { socks: socks.expect("a SOCKS URL"), http, dns, state_dir, child, stderr })
    }

    pub fn socks_url(&self) -> String {
        format!("socks5h://{}", self.socks)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http.expect("an HTTP listener"))
    }

    /// Everything the proxy logged to stderr so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the log holds `text` within 5 s: a failure is logged just after
    /// the client is answered, so it may not be there yet when the answer is.
    pub async fn logged(&self, text: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.log().contains(text) {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit status.
    pub async fn interrupt(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill").args(["-INT", &self.pid().to_string()]).status();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.expect("exits after Ctrl-C").unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Reads an HTTP head, up to and including its blank line (a little more if
/// the peer sent it at once); `None` if the peer ends or fails first.
pub async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// A loopback port that was free a moment ago, for a program that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sends `request` raw to `addr` and reads the answer to its end (the
/// request should say `Connection: close`).
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("the listener accepts");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Output of a finished curl.
pub struct CurlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real curl with a short timeout.
pub async fn curl(args: &[&str]) -> CurlOutput {
    curl_env(args, &[]).await
}

pub async fn curl_env(args: &[&str], env: &[(&str, &str)]) -> CurlOutput {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("curl is installed");
    CurlOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A raw SOCKS5 client step by step, to check reply bytes exactly.
pub struct RawSocks {
    pub stream: TcpStream,
}

impl RawSocks {
    pub async fn connect(proxy: SocketAddr) -> RawSocks {
        RawSocks { stream: TcpStream::connect(proxy).await.expect("proxy accepts") }
    }

    /// Offers `methods`; returns the method the server chose (0xFF: none).
    pub async fn greet(&mut self, methods: &[u8]) -> u8 {
        let mut hello = vec![5, methods.len() as u8];
        hello.extend_from_slice(methods);
        self.stream.write_all(&hello).await.unwrap();
        let mut reply = [0u8; 2];
        self.stream.read_exact(&mut reply).await.expect("a method reply");
        assert_eq!(reply[0], 5, "SOCKS version in the method reply");
        reply[1]
    }

    /// A request for a domain name; returns the reply code.
    pub async fn request_domain(&mut self, command: u8, host: &str, port: u16) -> u8 {
        let mut req = vec![5, command, 0, 3, host.len() as u8];
        req.extend_from_slice(host.as_bytes());
        req.extend_from_slice(&port.to_be_bytes());
        self.stream.write_all(&req).await.unwrap();
        self.read_reply().await
    }

    /// A request for an IP address (IPv4 or IPv6 address type); returns the reply code.
    pub async fn request_ip(&mut self, command: u8, ip: IpAddr, port: u16) -> u8 {
        let mut req = vec![5, command, 0];
        match ip {
            IpAddr::V4(v4) => {
                req.push(1);
                req.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                req.push(4);
                req.extend_from_slice(&v6.octets());
            }
        }
        req.extend_from_slice(&port.to_be_bytes());
        self.stream.write_all(&req).await.unwrap();
        self.read_reply().await
    }

    /// Reads a full reply (any address type) and returns its code.
    pub async fn read_reply(&mut self) -> u8 {
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head).await.expect("a SOCKS reply");
        assert_eq!(head[0], 5, "SOCKS version in the reply");
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                self.stream.read_exact(&mut len).await.unwrap();
                len[0] as usize + 2
            }
            other => panic!("reply with address type {other}"),
        };
        let mut skip = vec![0u8; rest];
        self.stream.read_exact(&mut skip).await.unwrap();
        head[1]
    }
}

impl Backend {
    /// A backend that hands every connection on each of its ports to
    /// `serve`, for servers other than the HTTP one of [`Backend::start`]
    /// (servers that speak first, read to EOF, stream a download...).
    pub async fn start_serving<F, Fut>(name: &str, ports: &[u16], serve: F) -> Backend
    where
        F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (ip, listeners) = bind_loopback(ports).await;
        let tasks = listeners
            .into_iter()
            .map(|(_, listener)| {
                let serve = serve.clone();
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(serve(stream));
                    }
                })
            })
            .collect();
        let closed_by_peer = std::sync::Arc::new(AtomicU32::new(0));
        Backend { ip, name: name.to_string(), closed_by_peer, tasks }
    }
}

/// A port-forward session as the kubelet stub logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubSession {
    /// The stub's request number (`port-forward #N`).
    pub id: u64,
    pub pod: String,
    /// `spdy`, `tunnel` or `websocket`: how the session reached the stub.
    pub path: String,
    /// Whether the stub logged its end.
    pub closed: bool,
}

/// The port-forward sessions to pods in `namespace` in the stub's log (the
/// lines `port-forward #N NS/POD via PATH (...)`, not the per-stream
/// `#N.M` ones), in the order they were opened.
pub fn stub_sessions(namespace: &str) -> Vec<StubSession> {
    let mut sessions: Vec<StubSession> = Vec::new();
    for line in cluster().stub_log().lines() {
        let Some(rest) = line.split_once("port-forward #").map(|(_, r)| r) else { continue };
        let mut words = rest.split(' ');
        let (Some(id), Some(target), Some("via"), Some(path)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(id) = id.parse::<u64>() else { continue }; // `#N.M`: a stream
        let Some((ns, pod)) = target.split_once('/') else { continue };
        if ns != namespace {
            continue;
        }
        if words.next().is_some_and(|w| w.starts_with("(node")) {
            sessions.push(StubSession { id, pod: pod.to_string(), path: path.to_string(), closed: false });
        } else if rest.ends_with(": connection closed") {
            let path = path.trim_end_matches(':');
            if let Some(s) = sessions.iter_mut().rev().find(|s| s.id == id && s.pod == pod && s.path == path) {
                s.closed = true;
            }
        }
    }
    sessions
}

/// A line of `/proc/PID/status` in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the proxy runs");
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}
