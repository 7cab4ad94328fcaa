//! MySQL / MariaDB: always a private server (`mariadb-install-db` or
//! `mysqld --initialize-insecure`, then `mariadbd`/`mysqld`) in the run's
//! directory on a free port, with a database and a user for the app made
//! through the `mariadb`/`mysql` command-line client over the server's unix
//! socket. FAILED_PRECONDITION names what is missing when a piece is not
//! installed.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::Command;

use crate::{
    env::{Connection, Flavor},
    error::{ProvisionError, Result},
    host::{self, Account},
};

/// The binaries a private server needs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub server: PathBuf,
    /// `mariadb-install-db` / `mysql_install_db`; `None` means
    /// `mysqld --initialize-insecure` (MySQL 5.7+).
    pub install_db: Option<PathBuf>,
    pub client: PathBuf,
}

/// The installed binaries, or an error naming the missing one.
pub fn find_binaries() -> Result<Binaries> {
    let server = host::find_binary(&["mariadbd", "mysqld"], &[]).ok_or_else(|| {
        ProvisionError::NotAvailable(
            "MySQL is not available on this host: no mariadbd or mysqld is installed".into(),
        )
    })?;
    let client = host::find_binary(&["mariadb", "mysql"], &[]).ok_or_else(|| {
        ProvisionError::NotAvailable(
            "MySQL is not available on this host: the mariadb/mysql client is not installed".into(),
        )
    })?;
    let mariadb = server.file_name().is_some_and(|n| n == "mariadbd")
        || std::fs::canonicalize(&server).is_ok_and(|p| p.ends_with("mariadbd"));
    let install_db = host::find_binary(&["mariadb-install-db", "mysql_install_db"], &[]);
    if mariadb && install_db.is_none() {
        return Err(ProvisionError::NotAvailable(
            "MySQL is not available on this host: mariadb-install-db is not installed".into(),
        ));
    }
    Ok(Binaries {
        server,
        install_db: if mariadb { install_db } else { None },
        client,
    })
}

/// Longest unix socket path we hand to mysqld (sun_path is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// The server's unix socket: in `dir` when the path fits in `sun_path`, else
/// a short name in the temporary directory derived from `dir`, so that the
/// default data directory (deep under $HOME) works too. mysqld removes it on
/// shutdown.
fn socket(dir: &Path) -> PathBuf {
    let inside = dir.join("mysql.sock");
    if inside.as_os_str().len() < MAX_SOCKET_PATH {
        return inside;
    }
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    dir.hash(&mut hasher);
    std::env::temp_dir().join(format!("rr-mysql-{:016x}.sock", hasher.finish()))
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("mysqld.pid")
}

/// Initialises and starts a private server in `dir` on 127.0.0.1:`port`,
/// then creates database and user `name` identified by `password`.
pub async fn start_private(
    binaries: &Binaries,
    dir: &Path,
    account: Option<&Account>,
    port: u16,
    name: &str,
    password: &str,
    timeout: Duration,
) -> Result<()> {
    if socket(dir).as_os_str().len() >= MAX_SOCKET_PATH {
        return Err(ProvisionError::InvalidRequest(format!(
            "neither run_dir `{}` nor the temporary directory `{}` is short enough for a MySQL unix socket",
            dir.display(),
            std::env::temp_dir().display()
        )));
    }
    host::prepare_dir(dir, account).await?;
    let data = dir.join("data");
    let user_arg = account.map(|a| format!("--user={}", a.name));
    let mut init = match &binaries.install_db {
        Some(install_db) => {
            let mut c = Command::new(install_db);
            c.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
            c
        }
        None => {
            let mut c = Command::new(&binaries.server);
            c.arg("--no-defaults")
                .arg("--initialize-insecure")
                .arg(format!("--datadir={}", data.display()));
            c
        }
    };
    init.args(user_arg.iter());
    host::run(init, "mysql install-db", timeout).await?;

    let mut server = Command::new(&binaries.server);
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
        .arg(format!("--socket={}", socket(dir).display()))
        .arg(format!("--pid-file={}", pid_file(dir).display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .args(user_arg.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = server
        .spawn()
        .map_err(ProvisionError::io("starting the MySQL server"))?;
    // Reap it in the background when it exits; Release stops it by pid.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });

    let sql = format!(
        "CREATE DATABASE `{name}`; CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
         GRANT ALL PRIVILEGES ON `{name}`.* TO '{name}'@'%'; FLUSH PRIVILEGES;"
    );
    let probe = Duration::from_secs(2).min(timeout);
    host::wait_until("MySQL server start", timeout, || async {
        client(binaries, dir, "SELECT 1", probe).await.is_ok()
    })
    .await?;
    client(binaries, dir, &sql, timeout).await.map(drop)
}

async fn client(binaries: &Binaries, dir: &Path, sql: &str, timeout: Duration) -> Result<String> {
    let mut command = Command::new(&binaries.client);
    command
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket(dir).display()))
        .args(["-uroot", "-e", sql]);
    host::run(command, "mysql client", timeout).await
}

/// The connection a run's app uses.
pub fn connection(port: u16, name: &str, password: &str) -> Connection {
    Connection {
        flavor: Flavor::Mysql,
        host: "127.0.0.1".into(),
        port,
        user: name.to_owned(),
        password: password.to_owned(),
        database: name.to_owned(),
    }
}

/// Stops a private server (SIGTERM, SIGKILL after `timeout`) and removes `dir`.
pub async fn stop_private(dir: &Path, timeout: Duration) -> Result<()> {
    let pid = std::fs::read_to_string(pid_file(dir))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        let ours = || {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("mariadbd") || c.contains("mysqld")
            })
        };
        let target = nix::unistd::Pid::from_raw(pid);
        if ours() {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
            let gone = host::wait_until("MySQL server stop", timeout, || async { !ours() })
                .await
                .is_ok();
            if !gone && ours() {
                let _ = nix::sys::signal::killpg(target, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    host::remove_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_run_dir_gets_a_short_stable_socket() {
        let short = Path::new("/tmp/run/mysql-1");
        assert_eq!(socket(short), short.join("mysql.sock"));
        let deep = Path::new(
            "/root/.local/share/reporunner/provision/c9f2cfac-f455-4902-b66c-184b51186d49/provisioner/mysql-bf5df71e",
        );
        let chosen = socket(deep);
        assert!(chosen.as_os_str().len() < MAX_SOCKET_PATH, "{}", chosen.display());
        assert!(chosen.starts_with(std::env::temp_dir()));
        assert_eq!(chosen, socket(deep), "the client finds the server's socket again");
        assert_ne!(chosen, socket(&deep.with_file_name("mysql-00000000")));
    }
}
