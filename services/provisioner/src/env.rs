//! The connection env vars a provisioned service is handed to the app in,
//! and the checks of what a request names (run ids, env var names).
//!
//! Every kind sets its usual names (`DATABASE_URL`, `POSTGRES_*`, `PG*`;
//! `REDIS_URL`, `REDIS_HOST`, ...), and every name the plan lists in
//! `BackingService.env_vars` gets the value its name asks for: a name ending
//! in `URL`, `URI` or `DSN` (or any name not matched below) gets the URL;
//! `*HOST`, `*PORT`, `*USER`/`*USERNAME`, `*PASSWORD`/`*PASS`/`*PWD`,
//! `*DB`/`*DATABASE`/`*NAME` get that part. URL schemes are `postgresql://`,
//! `redis://` and `mysql://`, except that a URL name containing `ASYNCPG`
//! gets `postgresql+asyncpg://` and one containing `JDBC` gets a JDBC URL.

use std::collections::BTreeMap;

use crate::error::{ProvisionError, Result};

/// Longest run id.
pub const MAX_RUN_ID: usize = 64;
/// Env var names read from one request, and the length of each.
const MAX_ENV_NAMES: usize = 64;
const MAX_ENV_NAME_LEN: usize = 128;

/// The database flavour of a connection, for URL forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Postgres,
    Redis,
    Mysql,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Connection {
    pub flavor: Flavor,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The database name (Redis: the logical database number).
    pub database: String,
}

impl Connection {
    /// The URL in the flavour's usual scheme.
    pub fn url(&self) -> String {
        let scheme = match self.flavor {
            Flavor::Postgres => "postgresql",
            Flavor::Redis => "redis",
            Flavor::Mysql => "mysql",
        };
        self.url_with(scheme)
    }

    fn url_with(&self, scheme: &str) -> String {
        let auth = match (self.user.is_empty(), self.password.is_empty()) {
            (true, true) => String::new(),
            (false, true) => format!("{}@", self.user),
            (_, false) => format!("{}:{}@", self.user, self.password),
        };
        format!("{scheme}://{auth}{}:{}/{}", self.host, self.port, self.database)
    }

    fn jdbc_url(&self) -> String {
        let flavor = match self.flavor {
            Flavor::Mysql => "mysql",
            Flavor::Postgres | Flavor::Redis => "postgresql",
        };
        format!(
            "jdbc:{flavor}://{}:{}/{}?user={}&password={}",
            self.host, self.port, self.database, self.user, self.password
        )
    }

    /// The value a custom env var name asks for
    /// ([`reporunner_backing::part_for`]).
    fn value_for(&self, name: &str) -> String {
        use reporunner_backing::Part;
        match reporunner_backing::part_for(name) {
            Part::JdbcUrl if self.flavor != Flavor::Redis => self.jdbc_url(),
            Part::AsyncpgUrl if self.flavor == Flavor::Postgres => self.url_with("postgresql+asyncpg"),
            Part::Url | Part::JdbcUrl | Part::AsyncpgUrl => self.url(),
            Part::Host => self.host.clone(),
            Part::Port => self.port.to_string(),
            Part::User => self.user.clone(),
            Part::Password => self.password.clone(),
            Part::Database => self.database.clone(),
        }
    }

    /// The usual names of the flavour, then every requested name.
    pub fn env(&self, requested: &[String]) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        match self.flavor {
            Flavor::Postgres => {
                set("DATABASE_URL", self.url());
                for prefix in ["POSTGRES_", "PG"] {
                    set(&format!("{prefix}HOST"), self.host.clone());
                    set(&format!("{prefix}PORT"), self.port.to_string());
                    set(&format!("{prefix}USER"), self.user.clone());
                    set(&format!("{prefix}PASSWORD"), self.password.clone());
                }
                set("POSTGRES_DB", self.database.clone());
                set("PGDATABASE", self.database.clone());
            }
            Flavor::Mysql => {
                set("DATABASE_URL", self.url());
                for prefix in ["MYSQL_", "DB_"] {
                    set(&format!("{prefix}HOST"), self.host.clone());
                    set(&format!("{prefix}PORT"), self.port.to_string());
                    set(&format!("{prefix}USER"), self.user.clone());
                    set(&format!("{prefix}PASSWORD"), self.password.clone());
                    set(&format!("{prefix}DATABASE"), self.database.clone());
                }
            }
            Flavor::Redis => {
                set("REDIS_URL", self.url());
                set("REDIS_HOST", self.host.clone());
                set("REDIS_PORT", self.port.to_string());
                set("REDIS_DB", self.database.clone());
            }
        }
        for name in requested {
            env.insert(name.clone(), self.value_for(name));
        }
        env
    }
}

/// A run id is one path segment of at most [`MAX_RUN_ID`] bytes of
/// `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_run_id(run_id: &str) -> Result<()> {
    let ok = !run_id.is_empty()
        && run_id.len() <= MAX_RUN_ID
        && run_id != "."
        && run_id != ".."
        && !run_id.starts_with('.')
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::InvalidRequest(format!(
            "run_id must be 1 to {MAX_RUN_ID} characters of [A-Za-z0-9._-], not starting with a dot"
        )))
    }
}

/// Env var names: `[A-Za-z_][A-Za-z0-9_]*`, bounded in number and length.
pub fn validate_env_names(names: &[String]) -> Result<()> {
    if names.len() > MAX_ENV_NAMES {
        return Err(ProvisionError::InvalidRequest(format!(
            "{} env var names; at most {MAX_ENV_NAMES}",
            names.len()
        )));
    }
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= MAX_ENV_NAME_LEN
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ProvisionError::InvalidRequest(format!(
                "env var name `{}` is not [A-Za-z_][A-Za-z0-9_]* of at most {MAX_ENV_NAME_LEN} characters",
                name.chars().take(MAX_ENV_NAME_LEN).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// A database/role name for the run: `rr_<run id, lowercased, other
/// characters as _, at most 40>_<6 hex>`: at most 50 bytes, always a plain
/// PostgreSQL/MySQL identifier.
pub fn object_name(run_id: &str, suffix: &str) -> String {
    let short: String = run_id
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("rr_{short}_{suffix}")
}

/// `n` random bytes in hex.
pub fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pg() -> Connection {
        Connection {
            flavor: Flavor::Postgres,
            host: "127.0.0.1".into(),
            port: 5432,
            user: "rr_a_1".into(),
            password: "pw".into(),
            database: "rr_a_1".into(),
        }
    }

    #[test]
    fn postgres_gets_the_usual_names() {
        let env = pg().env(&[]);
        assert_eq!(
            env["DATABASE_URL"],
            "postgresql://rr_a_1:pw@127.0.0.1:5432/rr_a_1"
        );
        assert_eq!(env["PGPORT"], "5432");
        assert_eq!(env["POSTGRES_DB"], "rr_a_1");
        assert_eq!(env["PGPASSWORD"], "pw");
    }

    #[test]
    fn custom_names_get_the_part_they_name() {
        let names: Vec<String> = [
            "SQLALCHEMY_DATABASE_URI",
            "ASYNCPG_DSN",
            "DB_HOST",
            "APP_DB_PORT",
            "DB_USERNAME",
            "DB_PASS",
            "DB_NAME",
            "SPRING_DATASOURCE_JDBC_URL",
            "WHATEVER",
        ]
        .map(String::from)
        .to_vec();
        let env = pg().env(&names);
        assert_eq!(env["SQLALCHEMY_DATABASE_URI"], pg().url());
        assert!(env["ASYNCPG_DSN"].starts_with("postgresql+asyncpg://rr_a_1:pw@"));
        assert_eq!(env["DB_HOST"], "127.0.0.1");
        assert_eq!(env["APP_DB_PORT"], "5432");
        assert_eq!(env["DB_USERNAME"], "rr_a_1");
        assert_eq!(env["DB_PASS"], "pw");
        assert_eq!(env["DB_NAME"], "rr_a_1");
        assert!(
            env["SPRING_DATASOURCE_JDBC_URL"].starts_with("jdbc:postgresql://127.0.0.1:5432/rr_a_1?user=")
        );
        assert_eq!(env["WHATEVER"], pg().url());
    }

    #[test]
    fn redis_urls_name_the_database() {
        let redis = Connection {
            flavor: Flavor::Redis,
            host: "127.0.0.1".into(),
            port: 6379,
            user: String::new(),
            password: String::new(),
            database: "3".into(),
        };
        let env = redis.env(&["CELERY_BROKER_URL".into(), "CACHE_REDIS_DB".into()]);
        assert_eq!(env["REDIS_URL"], "redis://127.0.0.1:6379/3");
        assert_eq!(env["CELERY_BROKER_URL"], "redis://127.0.0.1:6379/3");
        assert_eq!(env["CACHE_REDIS_DB"], "3");
    }

    #[test]
    fn run_ids_are_one_bounded_segment() {
        validate_run_id("run-1.a_b").unwrap();
        for bad in ["", ".", "..", "a/b", ".hidden", "a b", &"x".repeat(65)] {
            assert!(validate_run_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_names_are_checked() {
        validate_env_names(&["DATABASE_URL".into(), "_X1".into()]).unwrap();
        assert!(validate_env_names(&["1X".into()]).is_err());
        assert!(validate_env_names(&["A=B".into()]).is_err());
    }

    #[test]
    fn object_names_are_plain_identifiers() {
        let name = object_name(&"Run-ID.".repeat(20), "abcdef");
        assert!(name.len() <= 50);
        assert!(name.starts_with("rr_run_id_"));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }
}
