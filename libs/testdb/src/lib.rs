//! Test databases shared by the integration tests of every service that
//! stores through sea-orm: a SQLite file in a temporary directory, or a fresh
//! PostgreSQL database (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432`) with a unique name, dropped
//! `WITH (FORCE)` when the handle goes away, even after a panic, so parallel
//! tests and reruns never collide. `REPORUNNER_SKIP_PG=1` skips the
//! PostgreSQL half where no server runs.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

use sea_orm::{ConnectionTrait, Database};

/// A database for one test; `url` is what a store's `connect` takes.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    pg: Option<PgDrop>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            pg.drop_database();
        }
    }
}

/// A SQLite database `file_name` in a temporary directory.
pub fn sqlite(file_name: &str) -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join(file_name).display());
    TestDb {
        url,
        _sqlite_dir: Some(dir),
        pg: None,
    }
}

/// `DATABASE_URL` with scheme, credentials and host kept; any database name
/// and options dropped.
fn pg_base() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let (scheme, rest) = url.split_once("://").expect("DATABASE_URL needs a scheme");
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

#[derive(Debug)]
struct PgDrop {
    admin_url: String,
    name: String,
}

impl PgDrop {
    fn drop_database(self) {
        // Drop runs outside async; use a private runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(db) = Database::connect(&self.admin_url).await {
                    let _ = db
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                            self.name
                        ))
                        .await;
                    let _ = db.close().await;
                }
            });
        })
        .join();
    }
}

/// A fresh PostgreSQL database named `<prefix>_<uuid>`, or `None` when
/// `REPORUNNER_SKIP_PG=1`. Panics with the reason when no server answers.
pub async fn postgres(prefix: &str) -> Option<TestDb> {
    if std::env::var("REPORUNNER_SKIP_PG").is_ok_and(|v| v == "1") {
        eprintln!("REPORUNNER_SKIP_PG=1: skipping the PostgreSQL test");
        return None;
    }
    let base = pg_base();
    let admin_url = format!("{base}/postgres");
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is needed (or REPORUNNER_SKIP_PG=1): {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    admin.close().await.unwrap();
    Some(TestDb {
        url: format!("{base}/{name}"),
        _sqlite_dir: None,
        pg: Some(PgDrop { admin_url, name }),
    })
}

/// A PostgreSQL server of one test's own (`initdb` and `pg_ctl` from the
/// machine's PostgreSQL), on a free loopback port, so that the test can stop
/// and start it. As root, it runs as the `postgres` user (PostgreSQL refuses
/// root). Stopped at once when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Initialises and starts a server, or `None` when the machine has no
    /// PostgreSQL binaries and `CI` is not `true` (under CI that panics).
    pub fn start() -> Option<Self> {
        let Some(bin) = pg_bindir() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and no initdb/pg_ctl found (pg_config --bindir, /usr/lib/postgresql/*/bin)"
            );
            eprintln!("no initdb/pg_ctl on this machine: skipping the private PostgreSQL test");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("reporunner-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = run_text("id", &["-u"]).trim() == "0";
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown of {} to postgres failed",
                dir.path().display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let server = Self {
            bin,
            dir,
            port,
            as_postgres,
        };
        let data = server.data_dir();
        server.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        server.start_again();
        Some(server)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of the server's programs, as `postgres` where needed; panics
    /// with its output when it fails.
    fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        };
        let out = command.args(args).env("LC_ALL", "C").output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing is lost).
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "-t", "60", "stop"],
        );
    }

    /// The URL of database `name`, created first.
    pub async fn database(&self, name: &str) -> String {
        let admin = Database::connect(&self.url("postgres")).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        admin.close().await.unwrap();
        self.url(name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&path).args(args).output()
        };
    }
}

fn run_text(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The directory of `initdb` and `pg_ctl`: `pg_config --bindir` (when it
/// names a directory that has them), else the newest
/// `/usr/lib/postgresql/<version>/bin` that does.
fn pg_bindir() -> Option<std::path::PathBuf> {
    let has_both = |dir: &std::path::Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let configured = std::path::PathBuf::from(run_text("pg_config", &["--bindir"]).trim());
    if has_both(&configured) {
        return Some(configured);
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Every table of the PostgreSQL database at `url` (schema `public`) with
/// its row count and an md5 of its rows in a stable order: equal before and
/// after a fault means no row was lost, added or changed.
pub async fn table_checksums(url: &str) -> std::collections::BTreeMap<String, (i64, String)> {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
        ))
        .await
        .unwrap();
    let mut sums = std::collections::BTreeMap::new();
    for row in tables {
        let table: String = row.try_get_by_index(0).unwrap();
        let sum = db
            .query_one_raw(sea_orm::Statement::from_string(
                backend,
                format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
                     FROM \"{table}\" t"
                ),
            ))
            .await
            .unwrap()
            .unwrap();
        sums.insert(
            table,
            (sum.try_get_by_index(0).unwrap(), sum.try_get_by_index(1).unwrap()),
        );
    }
    db.close().await.unwrap();
    sums
}
