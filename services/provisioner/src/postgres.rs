//! PostgreSQL: a private database and role on a shared server, or a private
//! cluster (`initdb` + `pg_ctl`) in the run's directory.
//!
//! A run's database is owned by its role and `CONNECT` is revoked from
//! `PUBLIC`, so one run's role cannot open another run's database.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::process::Command;
use tokio_postgres::{Client, Config, NoTls, config::Host};

use crate::{
    env::{Connection, Flavor},
    error::{ProvisionError, Result},
    host::{self, Account},
};

/// Where the Debian/Ubuntu packages install each major version.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// Longest unix socket path (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 100;

/// The admin URL's parts; `None` unless it is a `postgres(ql)://` URL with a
/// TCP host.
pub fn parse_admin_url(url: &str) -> Option<Config> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let config: Config = url.parse().ok()?;
    match config.get_hosts() {
        [Host::Tcp(_)] => Some(config),
        _ => None,
    }
}

/// The TCP host and port of a parsed admin config.
pub fn host_port(config: &Config) -> (String, u16) {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

/// Connects within `timeout`; the connection task is spawned.
pub async fn connect(config: &Config, timeout: Duration) -> Result<Client> {
    let mut config = config.clone();
    config.connect_timeout(timeout);
    let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| ProvisionError::Timeout("connecting to PostgreSQL".into(), timeout))?
        .map_err(|e| ProvisionError::Unreachable(format!("PostgreSQL is not reachable: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

async fn execute(client: &Client, sql: &str, timeout: Duration) -> Result<()> {
    tokio::time::timeout(timeout, client.batch_execute(sql))
        .await
        .map_err(|_| ProvisionError::Timeout("a PostgreSQL statement".into(), timeout))?
        .map_err(|e| ProvisionError::Backend(format!("postgres: {e}")))
}

/// `server_version_num`, e.g. 150004.
pub async fn server_version(client: &Client, timeout: Duration) -> Result<u32> {
    let rows = tokio::time::timeout(timeout, client.simple_query("SHOW server_version_num"))
        .await
        .map_err(|_| ProvisionError::Timeout("a PostgreSQL query".into(), timeout))?
        .map_err(|e| ProvisionError::Backend(format!("postgres: {e}")))?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .ok_or_else(|| ProvisionError::Backend("postgres: no server_version_num".into()))
}

/// The major version of a `server_version_num`.
pub fn major_of(version_num: u32) -> u32 {
    // 150004 is 15.4; 90624 is 9.6.24 (reported as 9).
    version_num / 10_000
}

/// Creates role `name` (LOGIN, `password`) and database `name` owned by it,
/// with CONNECT revoked from PUBLIC. `name` and `password` are plain
/// identifiers / hex (see [`crate::env::object_name`]).
pub async fn create_database(client: &Client, name: &str, password: &str, timeout: Duration) -> Result<()> {
    debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    debug_assert!(password.bytes().all(|b| b.is_ascii_hexdigit()));
    execute(
        client,
        &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"),
        timeout,
    )
    .await?;
    // CREATE DATABASE cannot run inside a transaction block: one statement each.
    execute(
        client,
        &format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""),
        timeout,
    )
    .await?;
    execute(
        client,
        &format!("REVOKE CONNECT, TEMPORARY ON DATABASE \"{name}\" FROM PUBLIC"),
        timeout,
    )
    .await
}

/// Drops database `database` (its connections terminated first) and role
/// `role`; both may be gone already.
pub async fn drop_database(client: &Client, database: &str, role: &str, timeout: Duration) -> Result<()> {
    let version = server_version(client, timeout).await?;
    execute(
        client,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        ),
        timeout,
    )
    .await?;
    let force = if version >= 130_000 { " WITH (FORCE)" } else { "" };
    execute(
        client,
        &format!("DROP DATABASE IF EXISTS \"{database}\"{force}"),
        timeout,
    )
    .await?;
    execute(client, &format!("DROP ROLE IF EXISTS \"{role}\""), timeout).await
}

/// The connection a run's app uses.
pub fn connection(host: String, port: u16, name: &str, password: &str) -> Connection {
    Connection {
        flavor: Flavor::Postgres,
        host,
        port,
        user: name.to_owned(),
        password: password.to_owned(),
        database: name.to_owned(),
    }
}

/// The directory holding `initdb` and `pg_ctl`: the installed major version
/// matching `major` when there is one, else the newest, else `PATH`.
pub fn find_bin_dir(major: Option<u32>) -> Option<(PathBuf, Option<u32>)> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(VERSIONED_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .take(64)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some(wanted) = major
        && let Some((v, bin)) = versions.iter().find(|(v, _)| *v == wanted)
    {
        return Some((bin.clone(), Some(*v)));
    }
    if let Some((v, bin)) = versions.pop() {
        return Some((bin, Some(v)));
    }
    let initdb = host::find_binary(&["initdb"], &[])?;
    let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
    let dir = initdb.parent()?.to_path_buf();
    dir.join("pg_ctl").is_file().then_some((dir, None))
}

/// A private cluster's files.
fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// Initialises and starts a private cluster in `dir` on `port`: trust
/// authentication, listening on 127.0.0.1 only, unix socket in `dir` when
/// its path is short enough.
pub async fn start_private(
    dir: &Path,
    bin_dir: &Path,
    account: Option<&Account>,
    port: u16,
    timeout: Duration,
) -> Result<()> {
    host::prepare_dir(dir, account).await?;
    let data = data_dir(dir);
    let mut initdb = Command::new(bin_dir.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
    ]);
    host::as_account(&mut initdb, account);
    host::run(initdb, "initdb", timeout).await?;

    let dir_text = dir.to_string_lossy();
    let socket_fits = dir_text.len() + ".s.PGSQL.65535".len() < MAX_SOCKET_PATH
        && !dir_text.contains(['\'', '"', '\\', ' ']);
    let socket = if socket_fits {
        format!("'{dir_text}'")
    } else {
        "''".to_owned()
    };
    let options =
        format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket} -c fsync=off");
    let mut pg_ctl = Command::new(bin_dir.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .args(["-w", "-t"])
        .arg(timeout.as_secs().max(1).to_string())
        .arg("-o")
        .arg(options)
        .arg("start");
    host::as_account(&mut pg_ctl, account);
    host::run(pg_ctl, "pg_ctl start", timeout + Duration::from_secs(5)).await?;
    Ok(())
}

/// Stops a private cluster (fast shutdown) and removes its directory.
pub async fn stop_private(
    dir: &Path,
    bin_dir: &Path,
    account: Option<&Account>,
    timeout: Duration,
) -> Result<()> {
    let data = data_dir(dir);
    if data.join("postmaster.pid").exists() {
        let mut pg_ctl = Command::new(bin_dir.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t"])
            .arg(timeout.as_secs().max(1).to_string())
            .arg("stop");
        host::as_account(&mut pg_ctl, account);
        if let Err(e) = host::run(pg_ctl, "pg_ctl stop", timeout + Duration::from_secs(5)).await {
            // A server that is gone already leaves a stale pid file.
            if data.join("postmaster.pid").exists() && pid_alive(&data.join("postmaster.pid")) {
                return Err(e);
            }
        }
    }
    host::remove_dir(dir).await
}

fn pid_alive(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_need_a_tcp_host() {
        let config = parse_admin_url("postgres://postgres@127.0.0.1:5432/postgres");
        assert_eq!(
            config.as_ref().map(host_port),
            Some(("127.0.0.1".to_owned(), 5432))
        );
        assert!(parse_admin_url("postgresql://u:p@db.local/x").is_some());
        assert!(parse_admin_url("host=/tmp user=x").is_none());
        assert!(parse_admin_url("mysql://root@127.0.0.1/x").is_none());
    }

    #[test]
    fn major_versions_of_server_version_num() {
        assert_eq!(major_of(150_004), 15);
        assert_eq!(major_of(90_624), 9);
        assert_eq!(major_of(170_000), 17);
    }
}
