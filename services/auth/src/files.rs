//! Owner-only files: the data directory (0700), the SQLite database with its
//! `-wal`/`-shm`/`-journal` companions and the signing key (0600). Files are
//! created with their mode (no moment where they are readable by others)
//! and existing ones are tightened when opened.

use std::{
    io,
    path::{Path, PathBuf},
};

/// The mode of the data directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of databases and keys.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The files SQLite keeps beside a database.
pub const SQLITE_COMPANIONS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Creates `dir` (and missing parents) with mode 0700, or tightens it to
/// 0700 when it exists.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR_MODE);
    }
    builder.create(dir)?;
    set_mode(dir, PRIVATE_DIR_MODE)
}

/// Sets `path`'s permission bits (a no-op off Unix).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// The file of a `sqlite://` URL, or `None` for another database or an
/// in-memory one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Before a SQLite database is opened: creates its file with mode 0600 when
/// missing (SQLite then gives `-wal` and `-shm` the same mode), and
/// tightens an existing one and its companions to 0600. Other URLs are left
/// alone.
pub fn prepare_private_sqlite(url: &str) -> io::Result<()> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE_MODE);
    }
    drop(options.open(&path)?);
    tighten_sqlite(&path)
}

/// Sets a SQLite database and whichever companions exist to 0600.
pub fn tighten_sqlite(path: &Path) -> io::Result<()> {
    set_mode(path, PRIVATE_FILE_MODE)?;
    for suffix in SQLITE_COMPANIONS {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        match set_mode(Path::new(&companion), PRIVATE_FILE_MODE) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_from_urls() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/rr/auth.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/rr/auth.db"))
        );
        assert_eq!(sqlite_path("sqlite:rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://db/auth"), None);
    }
}
