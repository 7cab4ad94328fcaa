//! Opens a store's database through sea-orm: the settings every store
//! shares, in one place.
#![forbid(unsafe_code)]

use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbErr,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

/// How long a SQLite writer waits for another's lock before SQLITE_BUSY.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url` (`sqlite://...` or `postgres://...`). SQLite gets WAL
/// mode, `synchronous = NORMAL` and [`SQLITE_BUSY_TIMEOUT`] on every pooled
/// connection (see the README for what that trades).
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
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
}
