//! Where kubesocks keeps its files: the state directory (from `directories`,
//! or `KUBESOCKS_STATE_DIR`), created owner-only.

use std::path::PathBuf;

/// The state directory, created with mode 0700 if missing.
pub fn state_dir() -> std::io::Result<PathBuf> {
    let dir = match std::env::var_os("KUBESOCKS_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dirs = directories::ProjectDirs::from("", "", "kubesocks").ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no home directory; set KUBESOCKS_STATE_DIR")
            })?;
            // macOS and Windows have no separate state dir: the local data dir serves.
            dirs.state_dir().unwrap_or(dirs.data_local_dir()).to_path_buf()
        }
    };
    create_private(&dir)?;
    Ok(dir)
}

/// The log directory inside the state directory.
pub fn logs_dir() -> std::io::Result<PathBuf> {
    let dir = state_dir()?.join("logs");
    create_private(&dir)?;
    Ok(dir)
}

fn create_private(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
