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

/// Connections a SQLite store reads through, beside its one writer.
pub const SQLITE_READERS: u32 = 4;

/// A store's database: where it reads and where it writes.
///
/// On PostgreSQL both are the same pool. A SQLite file gets one writer
/// connection, so that writers queue in the pool (first come, first served)
/// instead of contending for SQLite's lock, and [`SQLITE_READERS`] read-only
/// connections, so that in WAL mode reads go on while a write transaction is
/// open. (sea-orm gives SQLite a single connection by default, through which
/// every read waited for every write.) An in-memory SQLite database is one
/// connection: a second would be another database.
#[derive(Clone, Debug)]
pub struct Db {
    write: DatabaseConnection,
    read: DatabaseConnection,
}

impl Db {
    /// Connects to `url` (`sqlite://...` or `postgres://...`); see [`connect`].
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        let write = connect(url).await?;
        if !is_sqlite_file(url) {
            return Ok(Self::from_connection(write));
        }
        let mut options = sqlite_options(url);
        options.max_connections(SQLITE_READERS);
        options.map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .read_only(true)
        });
        let read = Database::connect(options).await?;
        Ok(Self { write, read })
    }

    /// One connection (or pool) for reads and writes alike.
    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self {
            read: db.clone(),
            write: db,
        }
    }

    /// Where writes and transactions go (and migrations).
    pub fn write(&self) -> &DatabaseConnection {
        &self.write
    }

    /// Where single-statement reads go. It may not see a transaction that
    /// has not committed yet: reads that must, use the transaction.
    pub fn read(&self) -> &DatabaseConnection {
        &self.read
    }

    /// Closes both pools.
    pub async fn close(&self) -> Result<(), DbErr> {
        self.read.close_by_ref().await?;
        self.write.close_by_ref().await
    }
}

/// Whether `url` names a SQLite file (not an in-memory database).
fn is_sqlite_file(url: &str) -> bool {
    url.starts_with("sqlite:") && !url.contains(":memory:") && !url.contains("mode=memory")
}

fn sqlite_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
    options
}

/// Connects to `url` (`sqlite://...` or `postgres://...`). SQLite gets WAL
/// mode, `synchronous = NORMAL` and [`SQLITE_BUSY_TIMEOUT`] on every pooled
/// connection (see the README for what that trades), and one connection:
/// the writer of a [`Db`].
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = sqlite_options(url);
    if !url.starts_with("sqlite:") {
        options.acquire_timeout(ACQUIRE_TIMEOUT);
        options.connect_timeout(ACQUIRE_TIMEOUT);
    } else {
        options.max_connections(1);
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

    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

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

    async fn exec(db: &impl ConnectionTrait, sql: &str) -> Result<(), DbErr> {
        db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .map(drop)
    }

    async fn rows(db: &DatabaseConnection) -> Result<i64, DbErr> {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) FROM t",
            ))
            .await?
            .expect("one row");
        row.try_get_by_index::<i64>(0)
    }

    #[tokio::test]
    async fn sqlite_reads_go_on_while_a_write_transaction_is_open() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("store.db").display());
        let db = Db::connect(&url).await.expect("SQLite opens");
        exec(db.write(), "CREATE TABLE t (n INTEGER)")
            .await
            .expect("a table");
        exec(db.write(), "INSERT INTO t VALUES (1)").await.expect("a row");
        let txn = db.write().begin().await.expect("a transaction");
        exec(&txn, "INSERT INTO t VALUES (2)")
            .await
            .expect("a write in the transaction");
        // The writer's connection is held by the open transaction; a read
        // must not wait for it.
        let read = tokio::time::timeout(Duration::from_secs(5), rows(db.read()))
            .await
            .expect("the read does not wait for the write transaction")
            .expect("the read answers");
        assert_eq!(read, 1, "uncommitted rows unseen");
        txn.commit().await.expect("the commit");
        assert_eq!(
            rows(db.read()).await.expect("the read answers"),
            2,
            "committed rows seen"
        );
        // The readers cannot write.
        let err = exec(db.read(), "INSERT INTO t VALUES (3)")
            .await
            .expect_err("a reader refuses writes");
        assert!(err.to_string().contains("readonly"), "{err}");
        // Several reads at once, each on its own connection.
        let reads = (0..SQLITE_READERS).map(|_| rows(db.read()));
        for count in futures::future::join_all(reads).await {
            assert_eq!(count.expect("a read"), 2);
        }
        db.close().await.expect("closes");
    }

    #[tokio::test]
    async fn an_in_memory_sqlite_database_is_one_connection_for_reads_and_writes() {
        let db = Db::connect("sqlite::memory:").await.expect("SQLite opens");
        exec(db.write(), "CREATE TABLE t (n INTEGER)")
            .await
            .expect("a table");
        // A second connection would be another, empty, database.
        assert_eq!(
            rows(db.read()).await.expect("the reader sees the writer's table"),
            0
        );
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
