//! kubesocks as a browser uses it: the mixed port (SOCKS5 and HTTP on one
//! port) and the PAC file served on it, with real clients: curl, the PAC
//! evaluated by Node's JavaScript engine, and Chromium.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::{Backend, CurlOutput, PodSpec, Proxy, TestNamespace, cluster, curl, wait_for};

/// A namespace with one Service `web` (port 80 → the pod's 8080).
struct Web {
    ns: TestNamespace,
    _backend: Backend,
    cluster_ip: IpAddr,
    pod_ip: IpAddr,
}

async fn web(prefix: &str) -> Web {
    let ns = TestNamespace::new(prefix).await;
    let backend = Backend::start("web-0", &[8080]).await;
    let mut spec = PodSpec::new("web-0", &backend, &[("http", 8080)]);
    spec.labels = json!({"app": "web"});
    let pod = ns.pod(spec).await;
    let svc = ns
        .service("web", json!({"selector": {"app": "web"}, "ports": [{"name": "h", "port": 80, "targetPort": "http"}]}))
        .await;
    ns.ready_endpoints("web", 1).await;
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let pod_ip = pod.status.unwrap().pod_ip.unwrap().parse().unwrap();
    Web { ns, _backend: backend, cluster_ip, pod_ip }
}

fn assert_answer(out: &CurlOutput, what: &str) {
    assert_eq!(out.code, 0, "{what}: curl failed: {}", out.stderr);
    assert!(out.stdout.contains("hello from web-0 "), "{what}: expected the pod's answer, got {:?}", out.stdout);
}

#[tokio::test]
async fn the_socks_port_also_takes_http_proxy_requests_and_serves_the_pac_file() {
    let w = web("mixed").await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let port = proxy.socks;
    let url = format!("http://web.{}.svc.cluster.local/", w.ns.name);

    let socks = curl(&["--socks5-hostname", &port.to_string(), &url]).await;
    assert_answer(&socks, "SOCKS5");
    let connect = curl(&["-p", "-x", &format!("http://{port}"), &url]).await;
    assert_answer(&connect, "HTTP CONNECT");
    let plain = curl(&["-x", &format!("http://{port}"), &url]).await;
    assert_answer(&plain, "plain HTTP proxying");

    let pac = curl(&["-i", &format!("http://{port}/proxy.pac")]).await;
    assert_eq!(pac.code, 0, "{}", pac.stderr);
    let head = pac.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{}", pac.stdout);
    assert!(head.contains("content-type: application/x-ns-proxy-autoconfig"), "{}", pac.stdout);
    assert!(pac.stdout.contains("function FindProxyForURL(url, host)"), "{}", pac.stdout);
    assert!(pac.stdout.contains(&format!("\"SOCKS5 {port}\"")), "the PAC names the mixed port: {}", pac.stdout);

    let page = curl(&[&format!("http://{port}/")]).await;
    assert!(page.stdout.contains("kubesocks") && page.stdout.contains("/proxy.pac"), "{}", page.stdout);
    let unknown = curl(&["-w", "%{http_code}", &format!("http://{port}/nothing-here")]).await;
    assert!(unknown.stdout.ends_with("400") && unknown.stdout.contains("kubesocks is a proxy"), "{}", unknown.stdout);

    // A separate HTTP listener serves the PAC too, naming itself as an HTTP proxy.
    let http = proxy.http.expect("an HTTP listener");
    let pac = curl(&[&format!("http://{http}/proxy.pac")]).await;
    assert!(pac.stdout.contains(&format!("\"PROXY {http}\"")), "{}", pac.stdout);
}

#[tokio::test]
async fn proxy_out_json_prints_one_ready_line_with_the_pac_url() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
        .arg("--kubeconfig")
        .arg(&cluster().admin_kubeconfig)
        .args(["proxy-out", "--listen-socks", "127.0.0.1:0", "-o", "json"])
        .env("KUBESOCKS_STATE_DIR", std::env::temp_dir().join(format!("kubesocks-json-{}", std::process::id())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.unwrap().unwrap().unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let socks = ready["socks"].as_str().unwrap();
    assert_eq!(ready["context"], "kubesocks-test");
    assert_eq!(ready["namespace"], "default");
    assert_eq!(ready["socks_url"], format!("socks5h://{socks}"));
    assert_eq!(ready["pac_url"], format!("http://{socks}/proxy.pac"));
    assert!(ready["http"].is_null(), "{line}");
    // It is live: the PAC URL it printed answers.
    let pac = curl(&[ready["pac_url"].as_str().unwrap()]).await;
    assert!(pac.stdout.contains("FindProxyForURL"), "{}", pac.stdout);
    // Nothing more on stdout.
    child.start_kill().unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(rest, None, "only one line on stdout");
}

/// What FindProxyForURL returns for each host, evaluated by Node.
async fn evaluate_pac(pac_url: &str, hosts: &[String]) -> BTreeMap<String, String> {
    let pac = curl(&[pac_url]).await;
    assert_eq!(pac.code, 0, "{}", pac.stderr);
    let file = std::env::temp_dir().join(format!("kubesocks-{}-{}.pac", std::process::id(), rand_suffix()));
    std::fs::write(&file, &pac.stdout).unwrap();
    let script = support::repo_root().join("tests/support/pac-eval.js");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&file)
        .args(hosts)
        .output()
        .await
        .expect("node is installed (it builds the tray's UI)");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "the PAC file failed in Node: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[tokio::test]
async fn the_pac_file_sends_cluster_names_and_addresses_to_kubesocks_and_all_else_direct() {
    let w = web("pac").await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let socks5 = format!("SOCKS5 {}", proxy.socks);
    let ns = &w.ns.name;
    let dashed = w.pod_ip.to_string().replace('.', "-");
    let table: Vec<(String, &str)> = vec![
        (format!("web.{ns}"), &socks5),
        (format!("WEB.{}", ns.to_uppercase()), &socks5),
        (format!("web.{ns}.svc"), &socks5),
        (format!("web.{ns}.svc.cluster.local"), &socks5),
        (format!("web.{ns}.svc.cluster.local."), &socks5),
        (format!("db-0.db.{ns}.svc.cluster.local"), &socks5),
        (format!("{dashed}.{ns}.pod.cluster.local"), &socks5),
        (w.cluster_ip.to_string(), &socks5),
        (w.pod_ip.to_string(), &socks5),
        ("web.default".into(), &socks5),
        ("example.com".into(), "DIRECT"),
        ("www.example.org".into(), "DIRECT"),
        (format!("web.{ns}.example.com"), "DIRECT"),
        ("svc.cluster.local.example.com".into(), "DIRECT"),
        ("localhost".into(), "DIRECT"),
        ("web".into(), "DIRECT"),
        ("10.255.255.254".into(), "DIRECT"),
        ("127.0.0.1".into(), "DIRECT"),
        ("fd00::1234".into(), "DIRECT"),
    ];
    // `example.com` would be Service `example` in namespace `com`: there is none.
    let com: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(support::admin().await);
    assert!(com.get_opt("com").await.unwrap().is_none(), "a namespace `com` exists; the table assumes none");

    let hosts: Vec<String> = table.iter().map(|(h, _)| h.clone()).collect();
    let got = evaluate_pac(&format!("http://{}/proxy.pac", proxy.socks), &hosts).await;
    let wrong: Vec<String> = table
        .iter()
        .filter(|(host, want)| got.get(host).map(String::as_str) != Some(*want))
        .map(|(host, want)| format!("{host}: want {want:?}, got {:?}", got.get(host)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // A namespace made after the proxy started is in the next PAC file fetched.
    let later = TestNamespace::new("pac-later").await;
    let name = format!("anything.{}", later.name);
    let url = format!("http://{}/proxy.pac", proxy.socks);
    wait_for("the new namespace in the PAC file", || async {
        let got = evaluate_pac(&url, std::slice::from_ref(&name)).await;
        (got.get(&name).map(String::as_str) == Some(socks5.as_str())).then_some(())
    })
    .await;
}

/// Runs headless Chromium with `pac_url` as its proxy configuration on
/// `url`, `outside` resolving to `outside_ip`; returns the page's DOM.
async fn chromium(pac_url: &str, url: &str, outside: &str, outside_ip: IpAddr, profile: &Path) -> String {
    let args = [
        format!("--proxy-pac-url={pac_url}"),
        // The browser's own resolver finds the outside name (no /etc/hosts edit).
        format!("--host-resolver-rules=MAP {outside} {outside_ip}"),
    ];
    chromium_dom(&args, url, profile).await
}

/// Runs headless Chromium with `args` on `url`; returns the page's DOM.
async fn chromium_dom(args: &[String], url: &str, profile: &Path) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .args(["--dump-dom", url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within a minute")
    .expect("chromium is installed (tests/setup installs Debian's package)");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr).lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    dom
}

/// Serves `page` as HTML to every request on a free loopback port, as
/// another local web app would; returns its address.
async fn serve_page(page: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// What a web page can read of the port's own pages: nothing. The PAC file
/// lists every namespace, alias and address; a page must get it neither by
/// DNS rebinding (its own name pointed at 127.0.0.1, so the `Host` is
/// another's) nor by loading it from its own origin as a script. The tries
/// are curl's with the headers a browser sends, then real Chromium loading
/// the PAC as a script from another local origin. A browser fetching the PAC
/// as its proxy configuration still gets it (the Chromium test above).
#[tokio::test]
async fn a_web_page_cannot_read_the_pac_file() {
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let port = proxy.socks;
    let pac_url = format!("http://{port}/proxy.pac");
    let status = |out: &CurlOutput| out.stdout.lines().next().unwrap_or_default().to_string();

    let fetched = curl(&["-i", &pac_url]).await;
    assert!(status(&fetched).contains(" 200"), "{}", fetched.stdout);
    let head = fetched.stdout.to_ascii_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"), "{}", fetched.stdout);
    assert!(head.contains("cache-control: no-store"), "{}", fetched.stdout);

    for headers in [
        vec!["Host: evil.example".to_string()],
        vec![format!("Host: evil.example:{}", port.port())],
        vec![
            format!("Host: 127.0.0.1:{}", port.port()),
            "Sec-Fetch-Site: cross-site".into(),
            "Sec-Fetch-Dest: script".into(),
        ],
        vec!["Host: evil.example".into(), "Sec-Fetch-Site: cross-site".into(), "Sec-Fetch-Dest: script".into()],
        vec![
            format!("Host: 127.0.0.1:{}", port.port()),
            "Sec-Fetch-Site: same-site".into(),
            "Sec-Fetch-Dest: script".into(),
        ],
    ] {
        let mut args = vec!["-i".to_string()];
        for header in &headers {
            args.extend(["-H".to_string(), header.clone()]);
        }
        for path in ["/proxy.pac", "/"] {
            let mut call = args.clone();
            call.push(format!("http://{port}{path}"));
            let call: Vec<&str> = call.iter().map(String::as_str).collect();
            let out = curl(&call).await;
            assert!(status(&out).contains(" 403"), "{path} with {headers:?}: {}", out.stdout);
            assert!(!out.stdout.contains("FindProxyForURL"), "{path} with {headers:?}: {}", out.stdout);
        }
    }

    // Another local web app's page loads the PAC file as a script and looks
    // for what it would define.
    let page = format!(
        "<!doctype html><p id=probe>not run</p><script src=\"{pac_url}\"></script>\
         <script>document.getElementById('probe').textContent = 'probe ' + typeof FindProxyForURL;</script>"
    );
    let other_app = serve_page(page).await;
    let profile = tempdir("chromium-pac-script");
    let dom = chromium_dom(&[], &format!("http://{other_app}/"), &profile).await;
    assert!(dom.contains("probe undefined"), "the page read the PAC file as a script: {dom}");
    let _ = std::fs::remove_dir_all(&profile);
}

#[tokio::test]
async fn chromium_with_the_pac_file_reaches_the_cluster_by_name_and_the_rest_directly() {
    let w = web("chromium").await;
    // A web server outside the cluster, on this machine.
    let outside = Backend::start("outside", &[8088]).await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let pac_url = format!("http://{}/proxy.pac", proxy.socks);
    let profile = tempdir("chromium-profile");

    let cluster_url = format!("http://web.{}.svc.cluster.local/", w.ns.name);
    let dom = chromium(&pac_url, &cluster_url, "outside.example", outside.ip, &profile).await;
    assert!(dom.contains("hello from web-0 "), "the cluster page through kubesocks: {dom}");

    let dom = chromium(&pac_url, "http://outside.example:8088/", "outside.example", outside.ip, &profile).await;
    assert!(dom.contains("hello from outside "), "the outside page, directly: {dom}");

    // kubesocks saw the cluster request and not the outside one.
    assert!(proxy.logged(&format!("web.{}.svc.cluster.local:80", w.ns.name)).await, "{}", proxy.log());
    assert!(!proxy.log().contains("outside.example"), "the outside page went through kubesocks: {}", proxy.log());
    let _ = std::fs::remove_dir_all(&profile);
}

/// Firefox, given the PAC URL as its automatic proxy configuration, sends a
/// cluster name through kubesocks: it runs the PAC file kubesocks serves
/// (its data kept inside `FindProxyForURL`) as Chromium does. Firefox is
/// stopped once kubesocks has seen the request; a headless Firefox on this
/// closed network may not exit by itself.
#[tokio::test]
async fn firefox_with_the_pac_file_sends_cluster_names_through_kubesocks() {
    let w = web("firefox").await;
    let proxy = Proxy::start(&cluster().admin_kubeconfig, &[]).await;
    let profile = tempdir("firefox-profile");
    let prefs = [
        ("network.proxy.type", "2".to_string()),
        ("network.proxy.autoconfig_url", format!("\"http://{}/proxy.pac\"", proxy.socks)),
        // Plain http:// as asked, not upgraded to https:// first.
        ("dom.security.https_first", "false".to_string()),
        ("browser.shell.checkDefaultBrowser", "false".to_string()),
        ("app.update.enabled", "false".to_string()),
        ("datareporting.policy.dataSubmissionEnabled", "false".to_string()),
        ("network.captive-portal-service.enabled", "false".to_string()),
        ("network.connectivity-service.enabled", "false".to_string()),
    ];
    let user_js: String = prefs.iter().map(|(name, value)| format!("user_pref(\"{name}\", {value});\n")).collect();
    std::fs::write(profile.join("user.js"), user_js).unwrap();
    let url = format!("http://web.{}.svc.cluster.local/", w.ns.name);
    let mut firefox = tokio::process::Command::new("firefox-esr")
        .args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg("--screenshot")
        .arg(profile.join("page.png"))
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("firefox-esr is installed (tests/setup installs Debian's package)");
    let target = format!("web.{}.svc.cluster.local:80", w.ns.name);
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        while !proxy.log().contains(&target) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let _ = firefox.kill().await;
    assert!(seen.is_ok(), "Firefox sent no request for {target} through kubesocks within 60 s: {}", proxy.log());
    let log = proxy.log();
    assert!(
        log.lines().any(|line| line.contains(&target) && line.contains("reached=")),
        "the request reached the pod: {log}"
    );
    let _ = std::fs::remove_dir_all(&profile);
}

fn tempdir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kubesocks-{prefix}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
