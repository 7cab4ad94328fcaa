//! One owner per data directory.
//!
//! The first process that opens a data directory (an embedded `run`,
//! `index`, `search` or `runs`, or `serve`) owns it: it holds the lock on
//! `<data>/reporunner.lock`, writes who it is into that file (pid, command,
//! address, socket), and serves the public API on the control socket
//! `<data>/reporunner.sock` (0600, see `reporunner_server::local`). Every
//! other command on that directory talks to the owner through the socket
//! instead of opening the databases itself, so no command ever marks
//! another process's live run interrupted.

use std::{
    fs::File,
    io::{Seek as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "reporunner.lock";
/// The control socket's name inside the data directory.
pub const SOCKET_FILE: &str = "reporunner.sock";

/// The longest path a Unix socket address can hold (`sun_path`, with its NUL).
const SOCKET_PATH_MAX: usize = 107;

/// How long a command waits for a new owner to say who it is.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(30);

/// Who owns a data directory, as written in its lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerInfo {
    pub pid: u32,
    /// `run`, `serve`, `runs`, ...
    pub command: String,
    /// The owner's public gRPC address (`http://127.0.0.1:PORT`).
    pub address: String,
    pub socket: PathBuf,
    /// Unix seconds.
    pub since: u64,
}

impl std::fmt::Display for OwnerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`reporunner {}` (pid {}, serving {} and {})",
            self.command,
            self.pid,
            self.address,
            self.socket.display()
        )
    }
}

/// A data directory this process owns; the lock goes with it.
#[derive(Debug)]
pub struct OwnedDir {
    lock: File,
    dir: PathBuf,
}

/// What opening a data directory found.
#[derive(Debug)]
pub enum DataDir {
    /// Nobody had it: this process owns it now.
    Owned(OwnedDir),
    /// Another process owns it.
    Taken(OwnerInfo),
}

/// Takes `data_dir` if nobody owns it, else says who does (waiting a little
/// for an owner that has just started to say so).
pub fn claim(data_dir: &Path) -> anyhow::Result<DataDir> {
    reporunner_auth::files::create_private_dir(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDir::Owned(OwnedDir {
            lock: file,
            dir: data_dir.to_owned(),
        })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(DataDir::Taken(read_owner(&path)?)),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(anyhow::anyhow!("cannot lock {}: {err}", path.display()))
        }
    }
}

/// The owner's announcement in the lock file at `path`.
fn read_owner(path: &Path) -> anyhow::Result<OwnerInfo> {
    let until = std::time::Instant::now() + ANNOUNCE_WITHIN;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(info) = serde_json::from_str::<OwnerInfo>(&text) {
            return Ok(info);
        }
        if std::time::Instant::now() > until {
            anyhow::bail!(
                "another reporunner process holds {} but has not said who it is within {} s; \
                 wait for it or use another --data-dir",
                path.display(),
                ANNOUNCE_WITHIN.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl OwnedDir {
    /// Where the control socket goes.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }

    /// Binds the control socket (replacing one a dead owner left).
    pub fn bind_socket(&self) -> anyhow::Result<tokio::net::UnixListener> {
        let path = self.socket_path();
        let length = path.as_os_str().len();
        anyhow::ensure!(
            length <= SOCKET_PATH_MAX,
            "the data directory's path is too long for its control socket \
             ({length} bytes, at most {SOCKET_PATH_MAX}): {}; use a shorter --data-dir",
            path.display()
        );
        reporunner_server::local::bind_control_socket(&path)
            .with_context(|| format!("cannot open the control socket {}", path.display()))
    }

    /// Writes who owns the directory into the lock file.
    pub fn announce(&mut self, command: &str, address: &str) -> anyhow::Result<()> {
        let info = OwnerInfo {
            pid: std::process::id(),
            command: command.to_owned(),
            address: address.to_owned(),
            socket: self.socket_path(),
            since: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let text = serde_json::to_string(&info)?;
        let write = |lock: &mut File| -> std::io::Result<()> {
            lock.set_len(0)?;
            lock.rewind()?;
            lock.write_all(text.as_bytes())?;
            lock.sync_data()
        };
        write(&mut self.lock).with_context(|| format!("cannot write {}", self.dir.join(LOCK_FILE).display()))
    }
}

impl Drop for OwnedDir {
    /// The next owner starts from an empty lock file and no socket.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.socket_path());
        let _ = self.lock.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_claim_owns_the_dir_and_the_next_learns_who() {
        let dir = tempfile::tempdir().unwrap();
        let DataDir::Owned(mut owned) = claim(dir.path()).unwrap() else {
            panic!("a fresh directory is free");
        };
        owned.announce("run", "http://127.0.0.1:1").unwrap();
        let DataDir::Taken(info) = claim(dir.path()).unwrap() else {
            panic!("the directory is owned");
        };
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.command, "run");
        assert_eq!(info.socket, dir.path().join(SOCKET_FILE));
        assert!(info.to_string().contains("http://127.0.0.1:1"), "{info}");
        drop(owned);
        assert!(matches!(claim(dir.path()).unwrap(), DataDir::Owned(_)));
    }

    #[test]
    fn a_socket_path_too_long_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(100));
        let DataDir::Owned(owned) = claim(&long).unwrap() else {
            panic!("free");
        };
        let err = owned.bind_socket().unwrap_err().to_string();
        assert!(err.contains("too long") && err.contains("--data-dir"), "{err}");
    }
}
