//! The provisioner agent's settings: where shared servers are, when to start
//! private ones, and the bounds of every connect, query and process start.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::error::{ProvisionError, Result};

/// How a backing service kind is supplied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reuse the configured server when it answers, else start a private one.
    #[default]
    Auto,
    /// Always reuse the configured server (UNAVAILABLE when it does not answer).
    Reuse,
    /// Always start a private server in the run's directory.
    Private,
}

/// PostgreSQL settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    pub mode: Mode,
    /// A superuser (or CREATEROLE + CREATEDB) connection to the shared server.
    pub admin_url: String,
    /// The unprivileged account private servers run as when the agent runs
    /// as root (PostgreSQL refuses to run as root).
    pub private_user: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            admin_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            private_user: "postgres".into(),
        }
    }
}

/// Redis settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub mode: Mode,
    /// The shared server, `redis://host:port` (no password, no path).
    pub url: String,
    /// The logical databases handed to runs, inclusive. Database 0 is never
    /// handed out: it holds the claims (`reporunner:provisioner:db:<n>`).
    pub first_db: u32,
    pub last_db: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            url: "redis://127.0.0.1:6379".into(),
            first_db: 1,
            last_db: 15,
        }
    }
}

/// MySQL / MariaDB settings. MySQL is always a private server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MysqlConfig {
    /// The account the private server runs as when the agent runs as root.
    pub private_user: String,
}

impl Default for MysqlConfig {
    fn default() -> Self {
        Self {
            private_user: "mysql".into(),
        }
    }
}

/// Settings of the provisioner agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionerConfig {
    /// One JSON file per run saying what was created, so that Release after
    /// a restart still cleans up. Relative paths are resolved against the
    /// data directory by [`ProvisionerConfig::resolve`].
    pub state_dir: PathBuf,
    pub postgres: PostgresConfig,
    pub redis: RedisConfig,
    pub mysql: MysqlConfig,
    /// Private servers (PostgreSQL, Redis, MySQL) alive at once, all runs
    /// together; more are refused with RESOURCE_EXHAUSTED.
    pub max_private_servers: usize,
    /// Resources one run may hold.
    pub max_resources_per_run: usize,
    /// Deadline of a connection to a server.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one query or command.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Deadline of starting (or stopping) a private server, initdb included.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("provisioner"),
            postgres: PostgresConfig::default(),
            redis: RedisConfig::default(),
            mysql: MysqlConfig::default(),
            max_private_servers: 8,
            max_resources_per_run: 16,
            connect_timeout: Duration::from_secs(3),
            query_timeout: Duration::from_secs(10),
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl ProvisionerConfig {
    /// Makes a relative `state_dir` relative to the service's data directory.
    #[must_use]
    pub fn resolve(mut self, data_dir: &Path) -> Self {
        if self.state_dir.is_relative() {
            self.state_dir = data_dir.join(&self.state_dir);
        }
        self
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn query_timeout(&self) -> Duration {
        self.query_timeout
    }

    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(ProvisionError::InvalidConfig(what));
        if !self.state_dir.is_absolute() {
            return invalid(format!(
                "state_dir `{}` must be absolute (resolve it against the data directory first)",
                self.state_dir.display()
            ));
        }
        if self.connect_timeout.is_zero() || self.query_timeout.is_zero() || self.start_timeout.is_zero() {
            return invalid("connect_timeout, query_timeout and start_timeout must be above zero".into());
        }
        if self.max_resources_per_run == 0 {
            return invalid("max_resources_per_run must be at least 1".into());
        }
        if crate::postgres::parse_admin_url(&self.postgres.admin_url).is_none() {
            return invalid(
                "postgres.admin_url must look like postgres://user[:password]@host:port/database".into(),
            );
        }
        if crate::redis::parse_url(&self.redis.url).is_none() {
            return invalid("redis.url must look like redis://host:port".into());
        }
        if self.redis.first_db == 0 || self.redis.first_db > self.redis.last_db || self.redis.last_db > 1_000
        {
            return invalid("redis.first_db..=last_db must lie within 1..=1000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_resolve_and_validate() {
        let config = ProvisionerConfig::default().resolve(Path::new("/var/lib/rr"));
        assert_eq!(config.state_dir, Path::new("/var/lib/rr/provisioner"));
        config.validate().unwrap();
        assert!(
            ProvisionerConfig::default().validate().is_err(),
            "relative state_dir"
        );
    }

    #[test]
    fn nonsense_is_refused() {
        let base = ProvisionerConfig::default().resolve(Path::new("/d"));
        let bad = ProvisionerConfig {
            redis: RedisConfig {
                first_db: 0,
                ..RedisConfig::default()
            },
            ..base.clone()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("first_db"));
        let bad = ProvisionerConfig {
            postgres: PostgresConfig {
                admin_url: "mysql://x".into(),
                ..PostgresConfig::default()
            },
            ..base
        };
        assert!(bad.validate().unwrap_err().to_string().contains("admin_url"));
    }
}
