//! The PATH exec credential plugins (aws, gcloud, kubelogin, ...) are found in.
//!
//! Started from a desktop launcher or at login, the app inherits the
//! session's short PATH, not the one the user's shell profile builds, so a
//! kubeconfig whose `exec` names `kubelogin` fails although it works in a
//! terminal. At start the app asks the login shell for its PATH (bounded by a
//! timeout) and puts it first, keeps the inherited entries after it, and adds
//! the usual install dirs of those tools that exist.

use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A login shell that takes longer than this (a slow profile, a prompt) is abandoned.
const SHELL_TIMEOUT: Duration = Duration::from_secs(3);

/// The PATH the app should run with, and where its parts came from, for the log.
pub struct Resolved {
    pub path: OsString,
    pub from_shell: bool,
    pub added: Vec<PathBuf>,
}

/// Works out the PATH from the environment, the login shell and the common dirs.
pub fn resolve() -> Resolved {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let shell = std::env::var_os("SHELL").map(PathBuf::from);
    let login = shell.as_deref().and_then(|s| login_shell_path(s, SHELL_TIMEOUT));
    let home = std::env::home_dir();
    let extra: Vec<PathBuf> = home.as_deref().map(common_dirs).unwrap_or_default();
    let extra: Vec<PathBuf> = extra.into_iter().filter(|d| d.is_dir()).collect();
    let merged = merge(login.as_deref(), &inherited, &extra);
    let before: Vec<PathBuf> = std::env::split_paths(&inherited).collect();
    let added = std::env::split_paths(&merged).filter(|p| !before.contains(p)).collect();
    Resolved { path: merged, from_shell: login.is_some(), added }
}

/// Where aws, gcloud, kubelogin, kubectl plugins and the like usually live.
pub fn common_dirs(home: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = [
        ".local/bin",
        "bin",
        "google-cloud-sdk/bin",
        ".krew/bin",
        ".nix-profile/bin",
        "go/bin",
        ".cargo/bin",
        ".asdf/shims",
        ".linuxbrew/bin",
    ]
    .iter()
    .map(|d| home.join(d))
    .collect();
    for d in ["/usr/local/bin", "/usr/local/sbin", "/snap/bin", "/opt/homebrew/bin", "/home/linuxbrew/.linuxbrew/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// The login shell's PATH first (it is what works in the user's terminal),
/// then the inherited entries it lacks, then `extra` dirs neither has.
/// Empty entries (which would mean the current directory) are dropped.
pub fn merge(login: Option<&std::ffi::OsStr>, inherited: &std::ffi::OsStr, extra: &[PathBuf]) -> OsString {
    let mut out: Vec<PathBuf> = Vec::new();
    let parts = login
        .into_iter()
        .flat_map(std::env::split_paths)
        .chain(std::env::split_paths(inherited))
        .chain(extra.iter().cloned());
    for part in parts {
        if !part.as_os_str().is_empty() && !out.contains(&part) {
            out.push(part);
        }
    }
    std::env::join_paths(out).unwrap_or_else(|_| inherited.to_os_string())
}

/// Asks `shell` as a login shell for its environment and reads PATH from it.
/// `env` rather than `echo $PATH`: it prints PATH colon-separated in every
/// shell (fish keeps PATH as a list), and greetings the profile prints are
/// other lines. The output goes to a file, not a pipe, so a background
/// process the profile starts (an ssh-agent, say) cannot hold it open.
fn login_shell_path(shell: &Path, timeout: Duration) -> Option<OsString> {
    let (out_path, out) = private_file(&private_dir()).ok()?;
    let result = (|| {
        let mut child = Command::new(shell)
            .args(["-l", "-c", "env"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
        path_from_env_output(&std::fs::read_to_string(&out_path).ok()?)
    })();
    let _ = std::fs::remove_file(&out_path);
    result
}

/// Where the login shell's output goes: the user's own runtime directory
/// (`$XDG_RUNTIME_DIR`, 0700) where there is one, else the temp directory.
fn private_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_dir()).unwrap_or_else(std::env::temp_dir)
}

/// A new file in `dir` that no one else can have made or can guess
/// (`mkstemp`-like): a random name, created 0600 with `O_EXCL` (which
/// follows no symlink either), another name tried if one is taken.
fn private_file(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let mut last = None;
    for _ in 0..16 {
        // std's RandomState is seeded from the OS's random source.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(CALLS.fetch_add(1, Ordering::Relaxed));
        let path = dir.join(format!("kubesocks-login-env-{:016x}", hasher.finish()));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free name")))
}

/// The value of the last `PATH=` line of `env` output.
pub fn path_from_env_output(text: &str) -> Option<OsString> {
    text.lines().rev().find_map(|l| l.strip_prefix("PATH=")).filter(|p| !p.is_empty()).map(OsString::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(s: &OsString) -> Vec<String> {
        std::env::split_paths(s).map(|p| p.display().to_string()).collect()
    }

    #[test]
    fn the_login_shell_comes_first_then_inherited_then_extra_without_duplicates() {
        let merged = merge(
            Some("/home/u/.local/bin:/usr/bin:/bin".as_ref()),
            "/usr/bin:/snap/bin::/bin".as_ref(),
            &[PathBuf::from("/home/u/google-cloud-sdk/bin"), PathBuf::from("/usr/bin")],
        );
        assert_eq!(
            paths(&merged),
            ["/home/u/.local/bin", "/usr/bin", "/bin", "/snap/bin", "/home/u/google-cloud-sdk/bin"]
        );
    }

    #[test]
    fn without_a_login_shell_the_inherited_path_is_kept_and_extended() {
        let merged = merge(None, "/usr/bin:/bin".as_ref(), &[PathBuf::from("/usr/local/bin")]);
        assert_eq!(paths(&merged), ["/usr/bin", "/bin", "/usr/local/bin"]);
    }

    #[test]
    fn path_is_read_from_env_output_despite_greetings() {
        let out = "Welcome!\nHOME=/home/u\nPATH=/a:/b\nSHELL=/bin/bash\n";
        assert_eq!(path_from_env_output(out), Some(OsString::from("/a:/b")));
        assert_eq!(path_from_env_output("HOME=/x\n"), None);
    }

    #[test]
    fn a_real_login_shell_is_asked() {
        // A stand-in login shell with a greeting and its own PATH, to see that
        // the value comes from the shell's output, not from our environment.
        let dir = std::env::temp_dir().join(format!("kubesocks-path-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shell = dir.join("fake-shell");
        std::fs::write(&shell, "#!/bin/sh\necho 'profile greeting'\nPATH=/from/the/login/shell:/usr/bin exec env\n")
            .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking while the script was being written can
        // hold its write handle for a moment, and exec then fails with "text
        // file busy": ask again a few times before judging.
        let mut got = None;
        for _ in 0..10 {
            got = login_shell_path(&shell, Duration::from_secs(5));
            if got.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(got, Some(OsString::from("/from/the/login/shell:/usr/bin")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shells_output_file_is_private_and_unguessable() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = std::env::temp_dir().join(format!("kubesocks-path-private-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, _) = private_file(&dir).unwrap();
        let (b, _) = private_file(&dir).unwrap();
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains(&std::process::id().to_string()), "{name}");
        assert_eq!(std::fs::metadata(&a).unwrap().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
            assert_eq!(private_dir(), PathBuf::from(runtime));
        }
    }

    #[test]
    fn files_planted_at_the_old_predictable_names_change_nothing() {
        // Another user of a shared /tmp can create entries there in advance
        // (directories: not even root's remove_file takes them away); the
        // login shell is asked all the same.
        for call in 0..64 {
            let planted = std::env::temp_dir().join(format!("kubesocks-login-env-{}-{call}", std::process::id()));
            let _ = std::fs::create_dir(&planted);
        }
        let dir = std::env::temp_dir().join(format!("kubesocks-path-planted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shell = dir.join("shell");
        std::fs::write(&shell, "#!/bin/sh\nPATH=/from/the/shell exec /usr/bin/env\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut got = None;
        for _ in 0..10 {
            got = login_shell_path(&shell, Duration::from_secs(5));
            if got.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for call in 0..64 {
            let _ = std::fs::remove_dir(
                std::env::temp_dir().join(format!("kubesocks-login-env-{}-{call}", std::process::id())),
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, Some(OsString::from("/from/the/shell")));
    }

    #[test]
    fn a_hanging_login_shell_is_abandoned_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("kubesocks-path-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shell = dir.join("slow-shell");
        std::fs::write(&shell, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
        let start = Instant::now();
        assert_eq!(login_shell_path(&shell, Duration::from_millis(300)), None);
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
