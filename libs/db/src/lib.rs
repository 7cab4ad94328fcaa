//! Opens a store's database through sea-orm: the settings every store
//! shares, in one place.
#![forbid(unsafe_code)]

use std::time::Duration;

use sea_orm::{
    ConnAcquireErr, ConnectOptions, Database, DatabaseConnection, DbErr, RuntimeErr,
    sqlx::{
        self,
        sqlite::{SqliteJournalMode, SqliteSynchronous},
    },
};

/// How long a SQLite writer waits for another's lock before SQLITE_BUSY.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a call waits for a pooled PostgreSQL connection (or a new one)
/// before it fails as unavailable: while the server is down, calls fail
/// after this rather than after sqlx's 30 s default. (A SQLite file cannot
/// go away; its pool keeps the default, above the busy timeout.)
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `err` says the database cannot be reached now (refused, reset,
/// shutting down, no connection within [`ACQUIRE_TIMEOUT`]) rather than that
/// a statement failed: the first is worth retrying, and is `UNAVAILABLE` to
/// a caller; the second is a defect.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed)
        | DbErr::Conn(_) => true,
        DbErr::Exec(runtime) | DbErr::Query(runtime) => match runtime {
            RuntimeErr::SqlxError(sqlx_err) => sqlx_unavailable(sqlx_err),
            _ => false,
        },
        _ => false,
    }
}

fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL's class 08 (connection exception) and the server
        // shutting down or starting up (57P01-57P03).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// What a caller is told when [`is_unavailable`] holds for a store's error:
/// which store, and that it is worth a retry; never the address or the
/// driver's text.
pub fn unavailable_message(store: &str) -> String {
    format!("the {store} database cannot be reached right now; retry in a few seconds")
}

/// Connects to `url` (`sqlite://...` or `postgres://...`). SQLite gets WAL
/// mode, `synchronous = NORMAL` and [`SQLITE_BUSY_TIMEOUT`] on every pooled
/// connection (see the README for what that trades).
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
    if !url.starts_with("sqlite:") {
        options.acquire_timeout(ACQUIRE_TIMEOUT);
        options.connect_timeout(ACQUIRE_TIMEOUT);
    }
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
    });
    Database::connect(options).await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use sea_orm::{ConnectionTrait, Statement};

    use super::*;

    async fn pragma(db: &DatabaseConnection, name: &str) -> String {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("PRAGMA {name}"),
            ))
            .await
            .expect("the pragma answers")
            .expect("one row");
        row.try_get_by_index::<i64>(0)
            .map(|n| n.to_string())
            .or_else(|_| row.try_get_by_index::<String>(0))
            .expect("a value")
    }

    #[tokio::test]
    async fn sqlite_is_opened_in_wal_mode_with_normal_sync_and_a_busy_timeout() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display());
        let db = connect(&url).await.expect("SQLite opens");
        assert_eq!(pragma(&db, "journal_mode").await, "wal");
        // NORMAL is 1 (FULL, SQLite's default, is 2).
        assert_eq!(pragma(&db, "synchronous").await, "1");
        assert_eq!(pragma(&db, "busy_timeout").await, "10000");
    }

    #[tokio::test]
    async fn a_database_nobody_listens_for_is_unavailable_within_the_acquire_timeout() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let started = Instant::now();
        let err = connect(&format!("postgres://postgres@127.0.0.1:{port}/test"))
            .await
            .expect_err("nothing listens");
        assert!(is_unavailable(&err), "{err:?}");
        assert!(started.elapsed() < ACQUIRE_TIMEOUT * 3, "{:?}", started.elapsed());
    }

    #[test]
    fn statement_errors_are_not_unavailability() {
        assert!(!is_unavailable(&DbErr::Custom("no such table".into())));
        assert!(!is_unavailable(&DbErr::RecordNotFound("run".into())));
        assert!(is_unavailable(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)));
        let message = unavailable_message("user");
        assert!(
            message.contains("user database") && message.contains("retry"),
            "{message}"
        );
    }
}
