//! Managed mode through real processes: a state directory of its own per
//! test, `kubesocks connect / status / quit` run in it, and the daemon they
//! start stopped when the test ends.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::cluster;

/// One user's kubesocks: a state directory and the kubeconfig files of both
/// test contexts (`kubesocks-test`: admin, `kubesocks-test-restricted`: team-a).
/// Dropping it stops its daemon.
pub struct Managed {
    pub state: PathBuf,
    pub kubeconfig: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Managed {
    pub fn new(name: &str) -> Managed {
        let state = std::env::temp_dir().join(format!("kubesocks-managed-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let admin = &cluster().admin_kubeconfig;
        let kubeconfig = format!("{}:{}", admin.display(), cluster().restricted_kubeconfig().display());
        Managed { state, kubeconfig }
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[]).await
    }

    /// Runs `kubesocks` with `env` set on top of the test's own environment.
    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
            .args(args)
            .env("KUBESOCKS_STATE_DIR", &self.state)
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .unwrap_or_else(|_| panic!("kubesocks {args:?} did not finish"))
            .expect("run kubesocks");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed.
    pub async fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args).await;
        assert_eq!(run.code, 0, "kubesocks {args:?} failed:\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
        run
    }

    /// `connect -o json` with extra arguments; the connection as JSON.
    pub async fn connect(&self, args: &[&str]) -> Value {
        let mut all = vec!["connect", "-o", "json"];
        all.extend(args);
        let run = self.ok(&all).await;
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("connect printed no JSON ({e}): {}", run.stdout))
    }

    pub async fn status(&self) -> Value {
        let run = self.ok(&["status", "-o", "json"]).await;
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status printed no JSON ({e}): {}", run.stdout))
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state.join("daemon.lock")).ok()?.trim().parse().ok()
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_kubesocks"))
            .arg("quit")
            .env("KUBESOCKS_STATE_DIR", &self.state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = self.daemon_pid().filter(|&pid| alive(pid)) {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Whether a process runs (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
