//! Exec credential plugins (`aws eks get-token`, `gke-gcloud-auth-plugin`,
//! `kubelogin`), run by kubesocks itself rather than by kube.
//!
//! kube runs a plugin with a blocking `Command::output()`: twice while a
//! client is built (once for a client certificate, once for a token), on the
//! thread that builds it, and again on each token refresh, with no time limit.
//! In a daemon or the tray, whose one runtime serves the control socket and
//! every other context, one hung plugin would stall them all. And when a
//! plugin fails, kube's error text is the `Command`'s Debug form: every
//! variable it set, cloud keys included. So the plugin is taken out of the
//! config kube sees, and run here: as a child process awaited on the
//! runtime (never blocking a worker), within [`EXEC_TIMEOUT`] (then killed),
//! its token cached until shortly before it expires, and its errors stating
//! the command, the exit status and what it printed on stderr, with every
//! value of its environment redacted ([`Redactor`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::http::Request;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::config::{ExecConfig, ExecInteractiveMode};
use serde::Deserialize;

/// How long an exec plugin may run before it is killed and the request fails.
pub(crate) const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A token is fetched again this long before it expires (as kube and client-go do).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(60);

/// The most of a plugin's stderr an error quotes.
const MAX_STDERR: usize = 2000;

/// Replaces secrets in text with `<redacted>`: the values of the environment
/// that exec credential plugins get (cloud keys, session tokens). Errors pass
/// through it before they are logged, recorded, returned or shown.
///
/// The variables of [`NOT_SECRET`] are not secrets (`PATH` says where a
/// missing plugin was looked for, `HOME` where its files are); values shorter
/// than [`Redactor::MIN_LEN`] (`1`, `us`) are not either, and replacing them
/// would garble any text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a value that contains another is hidden whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.secrets.len())
    }
}

/// Variables whose values say where things are or how text is shown, never
/// a credential: left readable in errors.
const NOT_SECRET: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "LANG", "TERM", "SHLVL", "TMPDIR"];

impl Redactor {
    /// Values shorter than this are left alone.
    pub const MIN_LEN: usize = 4;

    /// Hides the values of these `(name, value)` variables.
    pub fn new<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Redactor {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(name, value)| {
                !NOT_SECRET.contains(name) && !name.starts_with("LC_") && value.len() >= Redactor::MIN_LEN
            })
            .map(|(_, value)| value.to_string())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Hides the values of a client's exec plugin variables
    /// ([`crate::kubeconfig::exec_env`]).
    pub fn for_exec_env(env: &BTreeMap<String, String>) -> Redactor {
        Redactor::new(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Hides the values of every variable an exec plugin runs with: those
    /// its config sets, and those it inherits from this process (a tray
    /// started from a desktop session has its cloud variables, which no
    /// config names), but for those the config drops.
    fn for_exec(exec: &ExecConfig) -> Redactor {
        let dropped = exec.drop_env.iter().flatten().map(String::as_str).collect::<Vec<_>>();
        let inherited: Vec<(String, String)> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        let inherited = inherited.iter().filter(|(k, _)| !dropped.contains(&k.as_str()));
        let set = exec.env.iter().flatten().filter_map(|e| Some((e.get("name")?.as_str(), e.get("value")?.as_str())));
        Redactor::new(set.chain(inherited.map(|(k, v)| (k.as_str(), v.as_str()))))
    }

    /// `text` with every secret replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }
}

/// Why an exec credential plugin gave no credential.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The plugin could not be started.
    #[error("cannot run the exec credential plugin {command:?}: {source}")]
    Start {
        /// The plugin's command.
        command: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The plugin did not finish in time; it was killed.
    #[error("the exec credential plugin {command:?} did not finish within {timeout:?}; it was stopped")]
    Timeout {
        /// The plugin's command.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The plugin exited with an error.
    #[error("the exec credential plugin {command:?} failed ({status}){}", said(stderr))]
    Failed {
        /// The plugin's command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, secrets redacted.
        stderr: String,
    },
    /// The plugin printed no credential kubesocks can use.
    #[error("the exec credential plugin {command:?} printed no usable credential: {reason}")]
    Unusable {
        /// The plugin's command.
        command: String,
        /// What is wrong with its output.
        reason: String,
    },
}

fn said(stderr: &str) -> String {
    if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
}

/// What a plugin handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A bearer token, until `expires` (none: for as long as it works).
    Token { token: String, expires: Option<SystemTime> },
    /// A client certificate and key, PEM.
    Certificate { certificate: String, key: String },
}

/// The `ExecCredential` a plugin prints (client.authentication.k8s.io).
#[derive(Deserialize)]
struct ExecCredential {
    status: Option<ExecStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecStatus {
    token: Option<String>,
    expiration_timestamp: Option<Time>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
}

/// One context's exec plugin and its cached token.
pub(crate) struct ExecAuth {
    exec: ExecConfig,
    redactor: Redactor,
    timeout: Duration,
    /// The token handed out last; refreshed under this lock, so concurrent
    /// requests wait for one run of the plugin.
    token: tokio::sync::Mutex<Option<(String, Option<SystemTime>)>>,
}

impl ExecAuth {
    pub(crate) fn new(exec: ExecConfig, timeout: Duration) -> ExecAuth {
        let redactor = Redactor::for_exec(&exec);
        ExecAuth { exec, redactor, timeout, token: tokio::sync::Mutex::new(None) }
    }

    fn command(&self) -> String {
        self.exec.command.clone().unwrap_or_default()
    }

    /// Runs the plugin once, within the timeout, and reads its credential.
    pub(crate) async fn run(&self) -> Result<Credential, ExecError> {
        let command = self.command();
        let mut cmd = tokio::process::Command::new(&command);
        cmd.args(self.exec.args.iter().flatten());
        for var in self.exec.env.iter().flatten() {
            if let (Some(name), Some(value)) = (var.get("name"), var.get("value")) {
                cmd.env(name, value);
            }
        }
        let interactive = self.exec.interactive_mode != Some(ExecInteractiveMode::Never);
        let mut spec = serde_json::json!({ "interactive": interactive });
        if self.exec.provide_cluster_info
            && let Some(cluster) = &self.exec.cluster
        {
            spec["cluster"] = serde_json::to_value(cluster).unwrap_or_default();
        }
        let info = serde_json::json!({
            "apiVersion": self.exec.api_version, "kind": "ExecCredential", "spec": spec,
        });
        cmd.env("KUBERNETES_EXEC_INFO", info.to_string());
        for name in self.exec.drop_env.iter().flatten() {
            cmd.env_remove(name);
        }
        // As kube does: an interactive plugin may ask the user on the terminal.
        let (stdin, stderr) =
            if interactive { (Stdio::inherit(), Stdio::inherit()) } else { (Stdio::null(), Stdio::piped()) };
        cmd.stdin(stdin).stderr(stderr).stdout(Stdio::piped()).kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| ExecError::Start { command: command.clone(), source })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Err(_) => return Err(ExecError::Timeout { command, timeout: self.timeout }),
            Ok(Err(source)) => return Err(ExecError::Start { command, source }),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            let text = String::from_utf8_lossy(&output.stderr);
            let text: String = text.trim().chars().take(MAX_STDERR).collect();
            return Err(ExecError::Failed {
                command,
                status: output.status.to_string(),
                stderr: self.redactor.redact(&text),
            });
        }
        parse(&output.stdout).map_err(|reason| ExecError::Unusable { command, reason })
    }

    /// The token to send, from the cache or a fresh run of the plugin.
    async fn token(&self) -> Result<String, ExecError> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = &*cached
            && expires.is_none_or(|at| SystemTime::now() + REFRESH_BEFORE_EXPIRY < at)
        {
            return Ok(token.clone());
        }
        match self.run().await? {
            Credential::Token { token, expires } => {
                *cached = Some((token.clone(), expires));
                Ok(token)
            }
            Credential::Certificate { .. } => Err(ExecError::Unusable {
                command: self.command(),
                reason: "it now hands out a client certificate instead of a token".into(),
            }),
        }
    }

    /// Keeps a token the plugin handed out at the start.
    pub(crate) async fn keep(&self, token: String, expires: Option<SystemTime>) {
        *self.token.lock().await = Some((token, expires));
    }
}

/// Reads a plugin's `ExecCredential` (JSON, as plugins print it).
fn parse(stdout: &[u8]) -> Result<Credential, String> {
    let credential: ExecCredential =
        serde_json::from_slice(stdout).map_err(|e| format!("not an ExecCredential ({e})"))?;
    let status = credential.status.ok_or("it has no status")?;
    if let (Some(certificate), Some(key)) = (status.client_certificate_data, status.client_key_data) {
        return Ok(Credential::Certificate { certificate, key });
    }
    let token = status.token.ok_or("it has neither a token nor a client certificate and key")?;
    let expires = status.expiration_timestamp.map(|t| {
        let secs = u64::try_from(t.0.as_second()).unwrap_or_default();
        UNIX_EPOCH + Duration::from_secs(secs)
    });
    Ok(Credential::Token { token, expires })
}

/// Adds `Authorization: Bearer` with the plugin's token to every request.
#[derive(Clone)]
pub(crate) struct ExecAuthLayer(pub(crate) Arc<ExecAuth>);

impl<S> tower::Layer<S> for ExecAuthLayer {
    type Service = ExecAuthService<S>;

    fn layer(&self, inner: S) -> ExecAuthService<S> {
        ExecAuthService { inner, auth: self.0.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct ExecAuthService<S> {
    inner: S,
    auth: Arc<ExecAuth>,
}

impl<S, B> tower::Service<Request<B>> for ExecAuthService<S>
where
    S: tower::Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), tower::BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was made ready is the one that is called.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        Box::pin(async move {
            let token = auth.token().await?;
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_longest_first_and_path_is_kept() {
        let r = Redactor::new([
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("AWS_SESSION_TOKEN", "wJalrXUtnFEMI/K7MDENG-and-more"),
            ("AWS_REGION", "eu"),
            ("PATH", "/usr/bin:/bin"),
        ]);
        let text = "key wJalrXUtnFEMI/K7MDENG-and-more and wJalrXUtnFEMI/K7MDENG in eu, PATH /usr/bin:/bin";
        assert_eq!(r.redact(text), "key <redacted> and <redacted> in eu, PATH /usr/bin:/bin");
        assert!(!format!("{r:?}").contains("wJalr"));
    }

    /// A plugin that fails quoting a variable it inherited (not one its
    /// config sets) has that value hidden too. `CARGO_MANIFEST_DIR` is in
    /// every test process's environment and in no plugin config.
    #[tokio::test]
    async fn a_failing_plugin_has_its_inherited_environment_redacted() {
        let inherited = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it for tests");
        let exec: ExecConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "sh",
            "args": ["-c", "echo \"denied for $CARGO_MANIFEST_DIR at $HOME\" >&2; exit 1"],
            "interactiveMode": "Never",
        }))
        .unwrap();
        let Err(e) = ExecAuth::new(exec, Duration::from_secs(10)).run().await else { panic!("the plugin fails") };
        let text = e.to_string();
        assert!(!text.contains(&inherited), "{text}");
        assert!(text.contains("denied for <redacted> at /"), "HOME stays readable: {text}");
    }

    #[test]
    fn credentials_are_read_from_the_plugins_output() {
        let token =
            parse(br#"{"kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#);
        let expires = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        assert_eq!(token, Ok(Credential::Token { token: "t".into(), expires: Some(expires) }));
        let cert = parse(br#"{"status":{"clientCertificateData":"C","clientKeyData":"K"}}"#);
        assert_eq!(cert, Ok(Credential::Certificate { certificate: "C".into(), key: "K".into() }));
        assert!(parse(b"{}").unwrap_err().contains("no status"));
        assert!(parse(b"oops").unwrap_err().contains("not an ExecCredential"));
    }
}
