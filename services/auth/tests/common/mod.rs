//! The auth tests' databases: a SQLite file in a temporary directory, or a
//! fresh PostgreSQL database `auth_test_<uuid>` dropped afterwards
//! (`reporunner-testdb`; `REPORUNNER_SKIP_PG=1` skips PostgreSQL).
#![allow(dead_code)]

pub use reporunner_testdb::TestDb;

/// A SQLite database in a temporary directory.
pub fn sqlite() -> TestDb {
    reporunner_testdb::sqlite("auth.db")
}

/// A fresh PostgreSQL database, or `None` when `REPORUNNER_SKIP_PG=1`.
pub async fn postgres() -> Option<TestDb> {
    reporunner_testdb::postgres("auth_test").await
}
