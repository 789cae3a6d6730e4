//! The log files on disk, and how they are kept from growing without bound.
//!
//! A daemon (or the tray app hosting one) may run for weeks, and logs a line
//! per client connection at the default level; a browser using the PAC file
//! opens hundreds an hour. So:
//!
//! - every log file is a [`LogFile`]: past [`ROLL_AT`] bytes it is moved to
//!   `NAME.1` (replacing the one before) and started afresh, so each log
//!   takes at most twice that;
//! - connection logs are kept after their connection stops, so that what
//!   went wrong can be read, but [`prune_connection_logs`] removes those no
//!   record names that were last written more than [`KEEP_FOR`] ago.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The size at which a log file is moved aside.
pub const ROLL_AT: u64 = 8 << 20;

/// How long a stopped connection's log is kept after its last line.
pub const KEEP_FOR: Duration = Duration::from_secs(14 * 24 * 3600);

/// An append-only log file, owner-only, moved aside at [`ROLL_AT`] bytes.
///
/// Each `write` is one `write(2)` to a file opened with `O_APPEND`, so lines
/// written whole by several processes sharing a file (foreground proxies
/// share `proxy-out.log`) never interleave. For the same reason the size is
/// the file's, not what this process wrote, and a file another process has
/// moved aside is followed to its fresh successor rather than moved again.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    roll_at: u64,
}

impl LogFile {
    /// Opens (creating it 0600, appending) the log file at `path`.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        LogFile::with_limit(path, ROLL_AT)
    }

    fn with_limit(path: &Path, roll_at: u64) -> std::io::Result<LogFile> {
        Ok(LogFile { path: path.to_path_buf(), file: open_append(path)?, roll_at })
    }

    /// Makes room for `more` bytes: past the limit, the file is moved to
    /// `NAME.1` and a fresh one opened, unless another process sharing it did
    /// that already. Any failure leaves the current file in use: losing the
    /// limit beats losing the log.
    fn make_room(&mut self, more: usize) {
        let Ok(mine) = self.file.metadata() else { return };
        if mine.len() == 0 || mine.len() + more as u64 <= self.roll_at {
            return;
        }
        let at_path = std::fs::metadata(&self.path).ok();
        let moved = at_path.is_none_or(|p| (p.dev(), p.ino()) != (mine.dev(), mine.ino()));
        if !moved && std::fs::rename(&self.path, aside(&self.path)).is_err() {
            return;
        }
        if let Ok(file) = open_append(&self.path) {
            self.file = file;
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Rolled before a write, never within one: a line is never split
        // across the two files.
        self.make_room(buf.len());
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Opens `path` for appending, owner-only: created so, and made so if an
/// older kubesocks left it readable by others.
fn open_append(path: &Path) -> std::io::Result<File> {
    let file = File::options().create(true).append(true).mode(0o600).open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Where a rolled log goes: `daemon.log` → `daemon.log.1`.
fn aside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Removes connection logs (`<id>.log` and their `.1`) in `dir` that were
/// last written before `now - KEEP_FOR`, except those of the connections in
/// `live`. Returns how many files were removed. Other files (the daemon's
/// and the tray's own logs) are left alone.
pub fn prune_connection_logs(dir: &Path, live: &[String], now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(connection_of) else { continue };
        if live.iter().any(|l| l == id) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|written| now.duration_since(written).is_ok_and(|age| age > KEEP_FOR));
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The connection ID a log file's name belongs to: `0a1b2c3d.log` or
/// `0a1b2c3d.log.1`.
fn connection_of(file_name: &str) -> Option<&str> {
    let id = file_name.strip_suffix(".log.1").or_else(|| file_name.strip_suffix(".log"))?;
    crate::control::is_valid_id(id).then_some(id)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kubesocks-log-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_log_past_its_limit_moves_aside_whole_lines_and_stays_private() {
        let dir = scratch("roll");
        let path = dir.join("daemon.log");
        let mut log = LogFile::with_limit(&path, 100).unwrap();
        for i in 0..25 {
            log.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("daemon.log.1")).unwrap();
        assert!(current.len() <= 100 && old.len() <= 100, "{current:?} {old:?}");
        assert!(current.ends_with("line 24\n") && current.starts_with("line "), "{current:?}");
        // The file before holds the lines just before, whole.
        let last_old: u32 = old.lines().last().unwrap()[5..].parse().unwrap();
        let first_new: u32 = current.lines().next().unwrap()[5..].parse().unwrap();
        assert_eq!(last_old + 1, first_new);
        for p in [&path, &dir.join("daemon.log.1")] {
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn a_reopened_log_counts_what_it_already_holds() {
        let dir = scratch("reopen");
        let path = dir.join("proxy-out.log");
        std::fs::write(&path, "x".repeat(90)).unwrap();
        let mut log = LogFile::with_limit(&path, 100).unwrap();
        log.write_all(b"0123456789abcdef\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0123456789abcdef\n");
        assert_eq!(std::fs::read_to_string(dir.join("proxy-out.log.1")).unwrap().len(), 90);
    }

    #[test]
    fn processes_sharing_a_log_roll_it_once_and_lose_no_recent_line() {
        let dir = scratch("shared");
        let path = dir.join("proxy-out.log");
        let mut a = LogFile::with_limit(&path, 100).unwrap();
        let mut b = LogFile::with_limit(&path, 100).unwrap();
        for i in 0..18 {
            let log = if i % 2 == 0 { &mut a } else { &mut b };
            log.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("proxy-out.log.1")).unwrap();
        // Each holds at most the limit, counting both writers' lines, and
        // together they hold the last lines without a gap.
        assert!(current.len() <= 100 && old.len() <= 100, "{current:?} {old:?}");
        let numbers: Vec<u32> = old.lines().chain(current.lines()).map(|l| l[5..].parse().unwrap()).collect();
        let last = numbers.len() as u32;
        assert_eq!(numbers, (18 - last..18).collect::<Vec<_>>(), "{old:?} {current:?}");
        assert!(last >= 10, "only {last} lines kept: {old:?} {current:?}");
    }

    #[test]
    fn a_log_left_readable_by_others_is_made_private() {
        let dir = scratch("mode");
        let path = dir.join("daemon.log");
        std::fs::write(&path, "from an older version\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        LogFile::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn only_old_logs_of_stopped_connections_are_pruned() {
        let dir = scratch("prune");
        for name in ["0000000a.log", "0000000a.log.1", "0000000b.log", "0000000c.log", "daemon.log", "notes.txt"] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        let old = SystemTime::now() - KEEP_FOR - Duration::from_secs(60);
        for name in ["0000000a.log", "0000000a.log.1", "0000000b.log", "daemon.log", "notes.txt"] {
            File::options().write(true).open(dir.join(name)).unwrap().set_modified(old).unwrap();
        }
        // b is old but still connected; c is recent.
        let removed = prune_connection_logs(&dir, &["0000000b".to_string()], SystemTime::now());
        assert_eq!(removed, 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["0000000b.log", "0000000c.log", "daemon.log", "notes.txt"]);
    }
}
