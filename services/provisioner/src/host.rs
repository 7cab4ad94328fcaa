//! The host side of private servers: binaries, free ports, accounts,
//! directories and commands with deadlines.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use reporunner_exec::{Bounds, ExecError, run_bounded};
use tokio::process::Command;

use crate::error::{ProvisionError, Result};

/// Stderr/stdout bytes of a failed command kept for the log.
const OUTPUT_TAIL: usize = 2_000;
/// Bytes kept of each output stream of a command (a client's answer).
const MAX_OUTPUT: usize = 1024 * 1024;

/// An account a private server runs as (the agent is root).
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The account to drop to: `None` when the agent is not root (servers then
/// run as the agent's own user).
pub fn account_for(name: &str, what: &str) -> Result<Option<Account>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(Some(Account {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        Ok(None) | Err(_) => Err(ProvisionError::NotAvailable(format!(
            "a private {what} server cannot run as root and the account `{name}` does not exist; \
             create it or set private_user"
        ))),
    }
}

/// Runs `command` as `account` when given.
pub fn as_account(command: &mut Command, account: Option<&Account>) {
    if let Some(account) = account {
        command.uid(account.uid).gid(account.gid);
    }
}

/// Creates `dir` (and parents) owned by `account`, and checks that the
/// account can reach it.
pub async fn prepare_dir(dir: &Path, account: Option<&Account>) -> Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(ProvisionError::io(format!("creating {}", dir.display())))?;
    if let Some(account) = account {
        std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid))
            .map_err(ProvisionError::io(format!("chown {}", dir.display())))?;
        // Every ancestor must let the account pass.
        let mut ancestor = dir.parent();
        while let Some(path) = ancestor {
            use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode();
                let passes = mode & 0o001 != 0
                    || (meta.uid() == account.uid && mode & 0o100 != 0)
                    || (meta.gid() == account.gid && mode & 0o010 != 0);
                if !passes {
                    return Err(ProvisionError::NotAvailable(format!(
                        "the private server runs as `{}`, which cannot enter `{}` (mode {:o}); \
                         make the run directory's parents traversable (o+x)",
                        account.name,
                        path.display(),
                        mode & 0o7777
                    )));
                }
            }
            ancestor = path.parent();
        }
    }
    Ok(())
}

/// Removes `dir` and everything under it; a missing directory is fine.
pub async fn remove_dir(dir: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ProvisionError::io(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

/// A port free on 127.0.0.1 now (the OS picks it).
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(ProvisionError::io("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(ProvisionError::io("finding a free port"))
}

/// The first of `names` found in `dirs` or on `PATH`.
pub fn find_binary(names: &[&str], dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let fallback = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")];
    for name in names {
        for dir in dirs.iter().chain(&path_dirs).chain(&fallback) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The leading major version of a constraint or image tag: "15-alpine" → 15,
/// "^14.2" → 14, "latest" → None.
pub fn major_version(text: &str) -> Option<u32> {
    let digits: String = text
        .trim()
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    digits.parse().ok()
}

/// Runs a command to completion within `timeout` (see
/// [`reporunner_exec::run_bounded`]: its own process group, killed with
/// everything it started when the time is up; at most [`MAX_OUTPUT`] bytes
/// kept of each stream); a non-zero exit is an error whose output tail is
/// logged (not shown to the caller).
pub async fn run(command: Command, what: &str, timeout: Duration) -> Result<String> {
    let bounds = Bounds::within(timeout).max_output(MAX_OUTPUT);
    let output = run_bounded(command, &bounds).await.map_err(|e| match e {
        ExecError::Spawn { source, .. } => ProvisionError::io(format!("starting {what}"))(source),
        ExecError::TimedOut(_) => ProvisionError::Timeout(what.to_owned(), timeout),
        ExecError::Io(source) => ProvisionError::io(format!("waiting for {what}"))(source),
    })?;
    let mut text = output.stdout_text();
    text.push_str(&output.stderr_text());
    if !output.success() {
        let tail = tail(&text);
        tracing::warn!(command = what, status = %output.status, output = tail, "command failed");
        return Err(ProvisionError::Backend(format!(
            "{what} failed ({}): {tail}",
            output.status
        )));
    }
    Ok(text)
}

fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(OUTPUT_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim()
}

/// Runs filesystem and account look-ups off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProvisionError::Backend(format!("blocking task failed: {e}")))
}

/// Waits until `check` succeeds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProvisionError::Timeout(what.to_owned(), timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_come_from_tags_and_constraints() {
        assert_eq!(major_version("15"), Some(15));
        assert_eq!(major_version("15-alpine"), Some(15));
        assert_eq!(major_version("^14.2"), Some(14));
        assert_eq!(major_version(">=7.0"), Some(7));
        assert_eq!(major_version("latest"), None);
        assert_eq!(major_version(""), None);
    }

    #[test]
    fn tails_cut_on_char_boundaries() {
        let text = "é".repeat(OUTPUT_TAIL);
        assert!(tail(&text).len() <= OUTPUT_TAIL);
    }
}
