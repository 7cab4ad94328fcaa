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
