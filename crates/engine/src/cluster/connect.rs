//! Building the API client for one context, and a first request that
//! proves the API server is reachable and accepts the credentials: the
//! exec plugin run by kubesocks itself ([`super::exec`]), the kubeconfig's
//! `proxy-url` under the TLS ([`super::proxy_url`]), `TCP_NODELAY` on every
//! connection.
//!
//! A context gets two clients on the same credentials, as kubectl has:
//! - API requests (watches, lists, GETs, access reviews) go over HTTP/2
//!   where the API server offers it (it does, over TLS), all of them on one
//!   connection that sends a PING when it has heard nothing for
//!   [`PING_AFTER`]. A path that died without a word (a network change, a
//!   VPN or proxy losing its far side, a laptop asleep) is found within
//!   `PING_AFTER` + [`PING_TIMEOUT`]: the connection is closed, every watch
//!   on it fails and starts again on a new one at once, instead of waiting
//!   on a dead socket for minutes.
//! - Port-forwards are upgrades, which need HTTP/1.1: each one is a
//!   connection of its own, watched by its session's keepalive.

use std::time::Duration;

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::exec::{Credential, EXEC_TIMEOUT, ExecAuth, ExecAuthLayer, ExecError};
use super::kubeconfig::{KubeError, KubeSettings, choose_context, proxy_of, read};
use super::proxy_url::ProxyUrl;

/// A connected, verified cluster.
#[derive(Clone)]
pub struct Cluster {
    /// The API client, with the context's credentials: HTTP/2 with PINGs.
    pub client: Client,
    /// The client port-forwards are upgraded through (HTTP/1.1).
    pub upgrades: Client,
    /// The context's name.
    pub context: String,
    /// The API server's URL.
    pub server: String,
    /// The proxy the API server is reached through (the kubeconfig's
    /// `proxy-url`, without user and password), if any.
    pub proxy: Option<String>,
    /// Namespace for short names: `-n`, else the context's, else `default`.
    pub namespace: String,
}

/// How long the first request may take.
pub(crate) const API_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the API connection may be silent before it sends a PING. While
/// watches get events the pings are not needed; the API server answers one
/// with 17 bytes.
pub(crate) const PING_AFTER: Duration = Duration::from_secs(1);

/// How long an answer to a PING may take before the connection is taken
/// for dead. Generous for a far API server (a round trip of a second or
/// more is rare even over a VPN), and with [`PING_AFTER`] inside the
/// promise that a dead path is found within 5 s.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds a client for the chosen context and checks that the API server answers.
pub async fn connect(settings: &KubeSettings) -> Result<Cluster, KubeError> {
    let kc = read(settings)?;
    let context = choose_context(&kc, settings.context.as_deref())?;
    connect_to(kc, &context, settings.namespace.as_deref()).await
}

/// Builds a client for `context` of `kc` and checks that the API server
/// answers. `namespace` overrides the context's default namespace.
pub async fn connect_to(kc: Kubeconfig, context: &str, namespace: Option<&str>) -> Result<Cluster, KubeError> {
    connect_with(kc, context, namespace, EXEC_TIMEOUT).await
}

/// [`connect_to`], with an exec plugin given `exec_timeout` per run.
async fn connect_with(
    kc: Kubeconfig,
    context: &str,
    namespace: Option<&str>,
    exec_timeout: Duration,
) -> Result<Cluster, KubeError> {
    // kube's own error for this is a bare "No such file or directory".
    if let Some((command, path)) = missing_exec_plugin(&kc, context) {
        return Err(KubeError::ExecPluginMissing { context: context.to_string(), command, path });
    }
    let context = context.to_string();
    let proxy = proxy_of(&kc, &context).map_err(|source| KubeError::ProxyUrl { context: context.clone(), source })?;
    let options = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
    let mut config = Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|source| KubeError::Config { context: context.clone(), source })?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    if let Some(ns) = namespace {
        config.default_namespace = ns.to_string();
    }
    let namespace = config.default_namespace.clone();
    let exec = take_exec(&mut config, exec_timeout)
        .await
        .map_err(|source| KubeError::Exec { context: context.clone(), source })?;
    if let Some(proxy) = &proxy {
        tracing::info!(%server, %proxy, "the API server is reached through the kubeconfig's proxy-url");
    }
    let client_error = |source| KubeError::Client { server: server.clone(), source };
    let upgrades = client(&config, exec.clone(), proxy.as_ref(), Http::Upgrades).map_err(client_error)?;
    let client = client(&config, exec, proxy.as_ref(), Http::Api).map_err(client_error)?;
    match tokio::time::timeout(API_TIMEOUT, client.apiserver_version()).await {
        Err(_) => Err(KubeError::Timeout { server }),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 || status.code == 403 => {
            Err(KubeError::Unauthorized { server, context, code: status.code, message: status.message })
        }
        Ok(Err(source)) => Err(KubeError::Unreachable { server, source }),
        Ok(Ok(_)) => Ok(Cluster { client, upgrades, context, server, proxy: proxy.map(|p| p.to_string()), namespace }),
    }
}

/// The exec plugin of `context`'s user, with the PATH it was looked for on,
/// when it cannot be found there (the plugin's own `env` PATH, else ours).
fn missing_exec_plugin(kc: &Kubeconfig, context: &str) -> Option<(String, String)> {
    let user = kc.contexts.iter().find(|c| c.name == context)?.context.as_ref()?.user.clone()?;
    let exec = kc.auth_infos.iter().find(|u| u.name == user)?.auth_info.as_ref()?.exec.as_ref()?;
    let command = exec.command.clone()?;
    let own_path = exec.env.iter().flatten().find(|e| e.get("name").map(String::as_str) == Some("PATH"));
    let path = match own_path.and_then(|e| e.get("value")) {
        Some(path) => path.clone(),
        None => std::env::var("PATH").unwrap_or_default(),
    };
    let runnable = |p: &std::path::Path| p.metadata().is_ok_and(|m| m.is_file());
    let found = if command.contains('/') {
        runnable(std::path::Path::new(&command))
    } else {
        std::env::split_paths(&path).any(|dir| runnable(&dir.join(&command)))
    };
    (!found).then_some((command, path))
}

/// Takes the exec plugin out of `config`, where kube would run it (see
/// [`crate::cluster::exec`]), and runs it once: a client certificate goes back into
/// `config` for kube's TLS setup; a token is kept by the returned layer,
/// which refreshes it. Only a plugin that kube would use is taken (kube
/// prefers a token, a token file, a password or an auth provider).
async fn take_exec(config: &mut Config, timeout: Duration) -> Result<Option<ExecAuthLayer>, ExecError> {
    let user = &mut config.auth_info;
    if user.auth_provider.is_some() || user.username.is_some() || user.token.is_some() || user.token_file.is_some() {
        return Ok(None);
    }
    let Some(exec) = user.exec.take() else { return Ok(None) };
    let auth = ExecAuth::new(exec, timeout);
    match auth.run().await? {
        Credential::Certificate { certificate, key } => {
            // The kubeconfig's fields hold PEM in base64; the plugin hands out PEM.
            let base64 = |pem: String| base64::engine::general_purpose::STANDARD.encode(pem);
            user.client_certificate_data = Some(base64(certificate));
            user.client_key_data = Some(base64(key).into());
            Ok(None)
        }
        Credential::Token { token, expires } => {
            auth.keep(token, expires).await;
            Ok(Some(ExecAuthLayer(std::sync::Arc::new(auth))))
        }
    }
}

/// What a client is for, which decides its HTTP version.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Http {
    /// API requests: HTTP/2 where offered, with PINGs (see the module docs).
    Api,
    /// Port-forward upgrades: HTTP/1.1.
    Upgrades,
}

/// kube's own client stack (base URI, retries, credentials, extra headers,
/// timeouts) on a connector with `TCP_NODELAY`, through `proxy` when the
/// kubeconfig names one, with `exec` for a context whose exec plugin
/// kubesocks runs itself. Every port-forward is a new TLS connection, and
/// without `TCP_NODELAY` the request that follows the TLS handshake waits
/// for the server's delayed ACK: about 40 ms on each connection.
fn client(
    config: &Config,
    exec: Option<ExecAuthLayer>,
    proxy: Option<&ProxyUrl>,
    http: Http,
) -> Result<Client, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt as _;

    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    match proxy {
        None => stack(config, exec, tcp, http),
        Some(proxy) => {
            // kubectl's TLS to an https:// proxy: the cluster's own settings.
            let proxy_tls = config.rustls_client_config()?;
            stack(config, exec, proxy.dialer(tcp, proxy_tls), http)
        }
    }
}

/// The client stack of [`client`] on `tcp`, the connector under the TLS.
fn stack<C>(config: &Config, exec: Option<ExecAuthLayer>, tcp: C, http: Http) -> Result<Client, kube::Error>
where
    C: tower::Service<http::Uri> + Clone + Send + Sync + 'static,
    C::Response:
        hyper_util::client::legacy::connect::Connection + hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use kube::client::ConfigExt as _;
    use kube::client::retry::RetryPolicy;

    let https = match http {
        // kube's connector offers HTTP/1.1 only.
        Http::Upgrades => config.rustls_https_connector_with_connector(tcp)?,
        Http::Api => {
            // The same TLS as kube's connector, offering h2 as well. kube's
            // builds first, for its own error on a bad tls-server-name.
            config.rustls_https_connector_with_connector(tcp.clone())?;
            let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config.rustls_client_config()?)
                .https_or_http();
            if let Some(name) = config.tls_server_name.clone().and_then(|name| name.try_into().ok()) {
                builder = builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
            }
            builder.enable_http1().enable_http2().wrap_connector(tcp)
        }
    };
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let mut builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.timer(hyper_util::rt::TokioTimer::new());
    if http == Http::Api {
        builder
            .http2_keep_alive_interval(PING_AFTER)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .http2_keep_alive_while_idle(true);
    }
    let http_client = builder.build::<_, kube::client::Body>(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .option_layer(exec)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace.clone()))
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::cluster::kubeconfig::add_exec_env;

    #[test]
    fn a_missing_exec_plugin_is_named_with_the_path_searched() {
        let kc = |command: &str, path: &str| -> Kubeconfig {
            serde_json::from_value(serde_json::json!({
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "users": [{"name": "u", "user": {"exec": {"command": command, "env": [{"name": "PATH", "value": path}]}}}]
            }))
            .unwrap()
        };
        assert_eq!(
            missing_exec_plugin(&kc("no-such-plugin", "/usr/bin:/bin"), "c"),
            Some(("no-such-plugin".into(), "/usr/bin:/bin".into()))
        );
        assert_eq!(missing_exec_plugin(&kc("sh", "/usr/bin:/bin"), "c"), None, "found on the plugin's PATH");
        assert_eq!(missing_exec_plugin(&kc("/bin/sh", ""), "c"), None, "a path is taken as it is");
        assert!(missing_exec_plugin(&kc("/nowhere/aws", "/bin"), "c").is_some());
    }

    #[test]
    fn a_bad_proxy_url_names_the_context() {
        let kc: Kubeconfig = serde_json::from_value(serde_json::json!({
            "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443", "proxy-url": "socks4://b:1080"}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}]
        }))
        .unwrap();
        let e = tokio::runtime::Runtime::new().unwrap().block_on(connect_to(kc, "c", None)).err().unwrap();
        assert_eq!(
            crate::error_chain(&e),
            "the cluster of context c names a proxy-url kubesocks cannot use: proxy-url \"socks4://b:1080\" has the \
             scheme \"socks4\", which kubesocks does not support (it supports http, https and socks5)"
        );
    }

    /// An API server on plain HTTP that answers every request with its
    /// version and records the `Authorization` header of each.
    async fn fake_api_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let auth = head
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")));
                    record.lock().unwrap().push(auth.unwrap_or("none").trim().to_string());
                    let body =
                        serde_json::json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0", "gitCommit": "x",
                        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.26",
                        "compiler": "gc", "platform": "linux/amd64"})
                        .to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, seen)
    }

    /// A kubeconfig for `server` whose user's credentials come from the
    /// shell script `script` (written to a directory of the test's own).
    fn exec_kubeconfig(test: &str, server: &str, script: &str) -> (Kubeconfig, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("kubesocks-exec-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let plugin = dir.join("plugin");
        std::fs::write(&plugin, format!("#!/bin/sh\ncd {}\n{script}\n", dir.display())).unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kc = serde_json::from_value(serde_json::json!({
            "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": server}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                "command": plugin, "interactiveMode": "Never"}}}]
        }))
        .unwrap();
        (kc, dir)
    }

    fn token_script(expires: &str) -> String {
        format!(
            "n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count\n\
             echo \"{{\\\"apiVersion\\\":\\\"client.authentication.k8s.io/v1\\\",\\\"kind\\\":\\\"ExecCredential\\\",\
             \\\"status\\\":{{\\\"token\\\":\\\"tok-$n\\\"{expires}}}}}\""
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_exec_plugin_runs_without_blocking_the_runtime() {
        let (server, seen) = fake_api_server().await;
        let (kc, dir) = exec_kubeconfig("blocking", &server, &format!("sleep 1\n{}", token_script("")));
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let cluster = connect_to(kc, "c", None).await.unwrap();
        ticker.abort();
        let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
        // The plugin sleeps a second: a runtime it does not block ticks all along.
        assert!(ticks >= 50, "the one runtime thread ticked only {ticks} times while the plugin ran");
        assert_eq!(*seen.lock().unwrap(), ["Bearer tok-1"]);
        assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap().trim(), "1", "the plugin ran once");
        drop(cluster);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_hung_exec_plugin_is_stopped_at_the_timeout() {
        let (server, _) = fake_api_server().await;
        let (kc, dir) = exec_kubeconfig("hung", &server, "echo $$ > pid\nexec sleep 60");
        let start = std::time::Instant::now();
        let e = connect_with(kc, "c", None, Duration::from_millis(500)).await.err().expect("no credentials");
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        assert!(matches!(&e, KubeError::Exec { source: ExecError::Timeout { .. }, .. }), "{e}");
        assert!(crate::error_chain(&e).contains("did not finish within 500ms"), "{e}");
        let pid = std::fs::read_to_string(dir.join("pid")).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&stat).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
        {
            assert!(std::time::Instant::now() < deadline, "the plugin still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn tokens_are_kept_until_they_are_about_to_expire() {
        let (server, seen) = fake_api_server().await;
        let soon = "$(date -u -d @$(( $(date +%s) + 30 )) +%Y-%m-%dT%H:%M:%SZ)";
        let (kc, dir) =
            exec_kubeconfig("refresh", &server, &token_script(&format!(",\\\"expirationTimestamp\\\":\\\"{soon}\\\"")));
        let cluster = connect_to(kc, "c", None).await.unwrap();
        cluster.client.apiserver_version().await.unwrap();
        // A token that expires within a minute is fetched again for each request.
        assert_eq!(*seen.lock().unwrap(), ["Bearer tok-2", "Bearer tok-3"]);
        std::fs::remove_dir_all(&dir).unwrap();

        let (server, seen) = fake_api_server().await;
        let later = ",\\\"expirationTimestamp\\\":\\\"2099-01-01T00:00:00Z\\\"";
        let (kc, dir) = exec_kubeconfig("keep", &server, &token_script(later));
        let cluster = connect_to(kc, "c", None).await.unwrap();
        cluster.client.apiserver_version().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["Bearer tok-1", "Bearer tok-1"]);
        assert_eq!(std::fs::read_to_string(dir.join("count")).unwrap().trim(), "1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failing_plugin_is_reported_without_the_secrets_it_was_given() {
        let (server, _) = fake_api_server().await;
        let script = "echo \"cannot log in with key $AWS_SECRET_ACCESS_KEY\" >&2\nexit 1";
        let (mut kc, dir) = exec_kubeconfig("secret", &server, script);
        let canary = "kubesocks-canary-5ecret-7a1e";
        let env = BTreeMap::from([
            ("AWS_SECRET_ACCESS_KEY".to_string(), canary.to_string()),
            ("PATH".to_string(), std::env::var("PATH").unwrap()),
        ]);
        add_exec_env(&mut kc, &env);
        let e = connect_to(kc, "c", None).await.err().expect("the plugin fails");
        let text = crate::error_chain(&e);
        assert!(!text.contains(canary) && !format!("{e:?}").contains(canary), "{text}");
        assert!(text.contains("failed (exit status: 1): cannot log in with key <redacted>"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
