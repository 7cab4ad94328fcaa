//! sqlx's `query!` macros check every query against a live database while
//! the crate compiles (`DATABASE_URL`), unless the repository ships their
//! offline data (`.sqlx/`, or `sqlx-data.json` before sqlx 0.7). Such a
//! crate with PostgreSQL among its backing services is built against the
//! run's own database (the build gets the backing services' variables), with
//! its `migrations/` applied first so that the tables its queries name
//! exist. When the app applies its migrations itself (`sqlx::migrate!`), the
//! schema is emptied again after the build, so that the app finds the
//! database new, as it would on a developer's machine.

use std::path::{Path, PathBuf};

use crate::{
    Job, Report, Step,
    exec::{self, Cmd, LogSink},
};

/// At most this many files of `src/` are read, each up to [`MAX_FILE_BYTES`].
const MAX_SOURCES: usize = 2000;
const MAX_FILE_BYTES: u64 = 1 << 20;
/// At most this many migrations are applied.
const MAX_MIGRATIONS: usize = 500;

/// The macros that check a query at build time.
const CHECKED_MACROS: [&str; 5] = [
    "query!(",
    "query_as!(",
    "query_scalar!(",
    "query_file!(",
    "query_file_as!(",
];

/// What the build found it needs.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Checked {
    /// The app migrates the database itself: empty the schema after the build.
    reset_after: bool,
}

/// What a crate's sources say about sqlx.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    /// Query macros checked at build time.
    macros: usize,
    /// `migrations/*.sql` in version order (down migrations left out).
    migrations: Vec<PathBuf>,
    /// Whether the code runs `sqlx::migrate!`.
    migrates_itself: bool,
}

/// Before the build: when the crate checks queries online against a
/// PostgreSQL the run provisioned, applies its migrations to it.
pub(super) async fn prepare(job: &Job, sink: &mut LogSink, report: &Report) -> Step<Option<Checked>> {
    if !(job.backing_env.contains_key("DATABASE_URL") && job.backing_env.contains_key("PGHOST")) {
        return Ok(None);
    }
    let dir = job.dir.clone();
    let Some(found) = tokio::task::spawn_blocking(move || scan(&dir))
        .await
        .ok()
        .flatten()
    else {
        return Ok(None);
    };
    let Some(psql) = psql(&job.base_path) else {
        sink.system(
            "build",
            "sqlx checks its queries against the database at build time, and psql is not installed to apply the \
             migrations first: the queries are checked against the database as it is",
        )
        .await;
        return Ok(None);
    };
    sink.system(
        "build",
        format!(
            "sqlx checks {} queries against the database at build time and the repository has no offline query \
             data: building against the run's database, {} migration(s) of migrations/ applied first",
            found.macros,
            found.migrations.len()
        ),
    )
    .await;
    reset(job, sink, report, &psql).await?;
    for migration in &found.migrations {
        let in_one_transaction = std::fs::read_to_string(migration)
            .map(|sql| !sql.lines().next().unwrap_or_default().contains("no-transaction"))
            .unwrap_or(true);
        let mut cmd = Cmd::new(&psql, &job.dir, "build").args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
        if in_one_transaction {
            cmd = cmd.arg("--single-transaction");
        }
        let cmd = cmd
            .arg("-f")
            .arg(migration.as_os_str())
            .envs(&job.build_env(report));
        job.step(sink, report, &cmd).await?;
    }
    Ok(Some(Checked {
        reset_after: found.migrates_itself,
    }))
}

/// After the build: the app that migrates the database itself finds it new.
pub(super) async fn after_build(job: &Job, sink: &mut LogSink, report: &Report, checked: &Checked) -> Step {
    if !checked.reset_after {
        return Ok(());
    }
    let Some(psql) = psql(&job.base_path) else {
        return Ok(());
    };
    sink.system(
        "build",
        "the app applies its migrations itself (sqlx::migrate!): the database is emptied again after the build",
    )
    .await;
    reset(job, sink, report, &psql).await
}

/// Empties the run's database: its `public` schema, dropped and made again
/// (the run's role owns the database, so it may).
async fn reset(job: &Job, sink: &mut LogSink, report: &Report, psql: &Path) -> Step {
    let cmd = Cmd::new(psql, &job.dir, "build")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "DROP SCHEMA IF EXISTS public CASCADE",
            "-c",
            "CREATE SCHEMA public",
        ])
        .envs(&job.build_env(report));
    job.step(sink, report, &cmd).await
}

fn psql(base_path: &str) -> Option<PathBuf> {
    exec::which("psql", base_path).or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin/psql"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

fn read_bounded(path: &Path) -> Option<String> {
    exec::read_bounded(path, MAX_FILE_BYTES)
}

/// Whether the crate at `dir` checks sqlx queries online, and what it
/// migrates.
fn scan(dir: &Path) -> Option<Found> {
    let manifest = read_bounded(&dir.join("Cargo.toml"))?;
    if !manifest.contains("sqlx") || dir.join(".sqlx").is_dir() || dir.join("sqlx-data.json").is_file() {
        return None;
    }
    let mut found = Found::default();
    let mut pending = vec![dir.join("src")];
    let mut read = 0;
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "rs") {
                read += 1;
                if read > MAX_SOURCES {
                    break;
                }
                let Some(code) = read_bounded(&path) else {
                    continue;
                };
                found.macros += CHECKED_MACROS
                    .iter()
                    .map(|m| code.matches(m).count())
                    .sum::<usize>();
                found.migrates_itself |= code.contains("migrate!(");
            }
        }
    }
    if found.macros == 0 {
        return None;
    }
    let mut migrations: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("migrations"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter_map(|path| {
                    let name = path.file_name()?.to_str()?;
                    if !name.ends_with(".sql") || name.ends_with(".down.sql") {
                        return None;
                    }
                    let version: String = name.chars().take_while(char::is_ascii_digit).collect();
                    Some((version.parse().ok()?, path))
                })
                .take(MAX_MIGRATIONS)
                .collect()
        })
        .unwrap_or_default();
    migrations.sort();
    found.migrations = migrations.into_iter().map(|(_, path)| path).collect();
    Some(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn a_crate_checking_queries_online_is_found_with_its_migrations_in_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "Cargo.toml",
                    "[dependencies]\nsqlx = { version = \"0.8\", features = [\"postgres\"] }\n",
                ),
                ("src/main.rs", "fn main() { sqlx::migrate!(); }\n"),
                (
                    "src/http/users.rs",
                    "let u = sqlx::query_as!(User, \"select 1\"); let n = sqlx::query!(\"select 2\");",
                ),
                ("migrations/10_later.sql", "create table b ();"),
                ("migrations/2_first.sql", "create table a ();"),
                ("migrations/20240101000000_third.up.sql", "create table c ();"),
                ("migrations/20240101000000_third.down.sql", "drop table c;"),
                ("migrations/README.md", "not a migration"),
            ],
        );
        let found = scan(dir.path()).unwrap();
        assert_eq!(found.macros, 2);
        assert!(found.migrates_itself);
        let names: Vec<String> = found
            .migrations
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["2_first.sql", "10_later.sql", "20240101000000_third.up.sql"]
        );
    }

    #[test]
    fn offline_query_data_or_no_checked_macro_needs_no_database() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("Cargo.toml", "[dependencies]\nsqlx = \"0.8\"\n"),
                ("src/main.rs", "let rows = sqlx::query(\"select 1\");"),
            ],
        );
        assert_eq!(scan(dir.path()), None, "the unchecked query function");
        write(dir.path(), &[("src/lib.rs", "sqlx::query!(\"select 1\");")]);
        assert!(scan(dir.path()).is_some());
        write(dir.path(), &[(".sqlx/query-abc.json", "{}")]);
        assert_eq!(scan(dir.path()), None, "offline data");
    }
}
