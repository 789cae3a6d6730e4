//! Where kubesocks keeps its files, and the files themselves.
//!
//! ```text
//! <state dir>/                 0700 (`directories`, or KUBESOCKS_STATE_DIR)
//!   control.sock               the daemon's control socket, 0600
//!   daemon.lock                held (flock) by the running daemon; holds its pid
//!   connections/<id>.json      one record per managed connection
//!   kubeconfig/<id>.yaml       the connection's own kubeconfig, 0600, deleted on stop
//!   logs/daemon.log            the daemon's log
//!   logs/<id>.log              one per connection, kept 14 days after it stops
//!   logs/proxy-out.log         foreground proxies
//!   logs/*.log.1               each log's older part, moved aside at 8 MiB
//! ```
//!
//! The lock, not the pid in a record, tells whether a daemon is alive: the
//! kernel releases it when the process dies, however it dies.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot find a home directory for kubesocks' state; set KUBESOCKS_STATE_DIR")]
    NoHome,
    #[error("cannot use {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is owned by uid {owner}, not by you (uid {me}); refusing to use it", path.display())]
    NotOwner { path: PathBuf, owner: u32, me: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

/// The state directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `KUBESOCKS_STATE_DIR`, else the platform's state directory for kubesocks;
    /// created owner-only, with its subdirectories.
    pub fn locate() -> Result<StateDir, StateError> {
        let root = match std::env::var_os("KUBESOCKS_STATE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let dirs = directories::ProjectDirs::from("", "", "kubesocks").ok_or(StateError::NoHome)?;
                // macOS and Windows have no separate state dir: the local data dir serves.
                dirs.state_dir().unwrap_or(dirs.data_local_dir()).to_path_buf()
            }
        };
        StateDir::at(root)
    }

    /// The state directory at `root`, created owner-only.
    pub fn at(root: PathBuf) -> Result<StateDir, StateError> {
        let dir = StateDir { root };
        for path in [dir.root.clone(), dir.connections(), dir.kubeconfigs(), dir.logs()] {
            create_private(&path)?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    pub fn connections(&self) -> PathBuf {
        self.root.join("connections")
    }

    pub fn kubeconfigs(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn record_path(&self, id: &str) -> PathBuf {
        self.connections().join(format!("{id}.json"))
    }

    pub fn kubeconfig_path(&self, id: &str) -> PathBuf {
        self.kubeconfigs().join(format!("{id}.yaml"))
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.logs().join(format!("{id}.log"))
    }

    /// Writes `contents` readable by the owner only, replacing the file
    /// atomically so a reader never sees half of it.
    pub fn write_private(&self, path: &Path, contents: &[u8]) -> Result<(), StateError> {
        let tmp = path.with_extension("tmp");
        // Always a new file, created 0600 (`O_EXCL`): never one left over or
        // planted, with its own mode, and never through a symlink (`O_NOFOLLOW`).
        let create =
            || OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp);
        let mut file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // A crash's leftover (or a planted link: removing it touches no target).
                std::fs::remove_file(&tmp).map_err(io(&tmp))?;
                create()
            }
            other => other,
        }
        .map_err(io(&tmp))?;
        file.write_all(contents).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    pub fn write_record(&self, record: &ConnectionRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(record).expect("a record serializes");
        self.write_private(&self.record_path(&record.id), &json)
    }

    /// Every record on disk; unreadable ones are skipped with a warning.
    pub fn records(&self) -> Vec<ConnectionRecord> {
        let Ok(entries) = std::fs::read_dir(self.connections()) else { return Vec::new() };
        let mut records: Vec<ConnectionRecord> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let text = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice(&text) {
                    Ok(record) => Some(record),
                    Err(err) => {
                        tracing::warn!(path = %e.path().display(), error = %err, "ignoring an unreadable connection record");
                        None
                    }
                }
            })
            .collect();
        records.sort_by_key(|r| r.started_at);
        records
    }

    /// Deletes a connection's record and kubeconfig; its log stays.
    pub fn remove_connection(&self, id: &str) {
        for path in [self.record_path(id), self.kubeconfig_path(id)] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete");
            }
        }
    }

    /// Deletes every record and kubeconfig left behind, returning the
    /// readable records. Only call it while no daemon can be running (see
    /// [`DaemonLock`]): then everything in those directories is stale.
    pub fn remove_stale(&self) -> Vec<ConnectionRecord> {
        let records = self.records();
        for dir in [self.connections(), self.kubeconfigs()] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete");
                }
            }
        }
        records
    }

    /// Fails unless the control socket, if present, belongs to this user:
    /// a socket planted by someone else must never be sent kubeconfigs.
    pub fn check_socket_owner(&self) -> Result<(), StateError> {
        use std::os::unix::fs::MetadataExt as _;
        let path = self.socket();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.uid() != current_uid() => {
                Err(StateError::NotOwner { path, owner: meta.uid(), me: current_uid() })
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }
}

pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Creates `dir` (and its parents) owner-only from the start, or checks the
/// one there: it must be this user's, and is made owner-only if it is not.
fn create_private(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
            return Ok(());
        }
        Err(e) => return Err(StateError::Io { path: dir.to_path_buf(), source: e }),
    }
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if meta.uid() != current_uid() {
        return Err(StateError::NotOwner { path: dir.to_path_buf(), owner: meta.uid(), me: current_uid() });
    }
    if !meta.is_dir() {
        let source = std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory");
        return Err(StateError::Io { path: dir.to_path_buf(), source });
    }
    // An existing directory of this user's that others may read: close it.
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// What `connections/<id>.json` holds: enough to find and explain a
/// connection without asking the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ConnectionRecord {
    pub id: String,
    pub context: String,
    pub server: String,
    pub namespace: String,
    /// The connection's own kubeconfig (`kubeconfig/<id>.yaml`).
    pub kubeconfig: PathBuf,
    /// The kubeconfig files it was made from.
    pub source_kubeconfigs: Vec<PathBuf>,
    pub socks: Option<std::net::SocketAddr>,
    pub http: Option<std::net::SocketAddr>,
    /// The DNS helper's address (UDP and TCP), if it has one.
    #[serde(default)]
    pub dns: Option<std::net::SocketAddr>,
    /// How names resolve, so a `connect` asking otherwise is told apart.
    #[serde(default)]
    pub cluster_domain: String,
    #[serde(default)]
    pub passthrough: bool,
    /// The DNS label that picks it on the shared port (`web.shop.<alias>`).
    #[serde(default)]
    pub alias: String,
    /// The process hosting the connection (the daemon or the tray app).
    pub pid: u32,
    pub log: PathBuf,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
}

/// The daemon's exclusive lock on `daemon.lock`. Whoever holds it is the
/// daemon; released by the kernel when the holder exits or dies.
#[derive(Debug)]
pub struct DaemonLock {
    file: File,
}

impl DaemonLock {
    /// Takes the lock if no daemon holds it; `Ok(None)` when one does.
    pub fn try_acquire(state: &StateDir) -> Result<Option<DaemonLock>, StateError> {
        let path = state.lock_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(DaemonLock { file }));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock { Ok(None) } else { Err(StateError::Io { path, source: err }) }
    }

    /// Records the holder's pid in the lock file, for messages.
    pub fn write_pid(&mut self) -> Result<(), StateError> {
        let pid = std::process::id().to_string();
        let result =
            self.file.set_len(0).and_then(|()| self.file.rewind()).and_then(|()| self.file.write_all(pid.as_bytes()));
        result.map_err(|source| StateError::Io { path: PathBuf::from("daemon.lock"), source })
    }

    /// The pid the current or last holder wrote, if any.
    pub fn holder_pid(state: &StateDir) -> Option<u32> {
        let mut text = String::new();
        File::open(state.lock_file()).ok()?.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubesocks-state-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_state_dir_and_its_parents_are_owner_only() {
        let base = scratch("new");
        let state = StateDir::at(base.join("a/b")).unwrap();
        for dir in [base.join("a"), state.root().to_path_buf(), state.connections(), state.kubeconfigs(), state.logs()]
        {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_state_dir_owned_by_someone_else_is_refused() {
        let base = scratch("owner");
        std::fs::create_dir_all(&base).unwrap();
        // uid 65534 is "nobody" (the tests run as root, who may chown).
        let chown =
            unsafe { libc::chown(std::ffi::CString::new(base.to_str().unwrap()).unwrap().as_ptr(), 65534, 65534) };
        assert_eq!(chown, 0, "the tests need to chown (run as root)");
        let e = StateDir::at(base.clone()).unwrap_err();
        assert!(matches!(e, StateError::NotOwner { owner: 65534, .. }), "{e}");
        assert!(!base.join("connections").exists(), "nothing is made in it");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn private_files_never_write_through_a_planted_temp_file() {
        let base = scratch("tmp");
        let state = StateDir::at(base.clone()).unwrap();
        let target = base.join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        let path = state.kubeconfig_path("0a1b2c3d");
        std::os::unix::fs::symlink(&target, path.with_extension("tmp")).unwrap();
        state.write_private(&path, b"secret kubeconfig").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched", "written through the link");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret kubeconfig");
        assert_eq!(mode(&path), 0o600);
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());

        // A leftover temp file with a loose mode does not lend it to the new file.
        std::fs::write(path.with_extension("tmp"), "old").unwrap();
        std::fs::set_permissions(path.with_extension("tmp"), std::fs::Permissions::from_mode(0o666)).unwrap();
        state.write_private(&path, b"again").unwrap();
        assert_eq!((std::fs::read_to_string(&path).unwrap().as_str(), mode(&path)), ("again", 0o600));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn the_control_socket_is_owner_only_from_its_creation() {
        let base = scratch("socket");
        let state = StateDir::at(base.clone()).unwrap();
        let _listener = crate::control::bind(&state).unwrap();
        assert_eq!(mode(&state.socket()), 0o600);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
