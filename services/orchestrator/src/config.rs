//! The orchestrator's settings.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{OrchestratorError, Result};

/// Orchestrator settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// A sea-orm database URL (`postgres://...` or `sqlite://...`) for runs
    /// and their events. Unset means the SQLite file
    /// `<data_dir>/orchestrator.db`; see [`OrchestratorConfig::database_url`].
    pub database_url: Option<String>,
    /// Deadline of a Detect call to the env-detector (registry probes take
    /// up to a few seconds on a cold cache).
    pub detect_deadline_ms: u64,
    /// Whether the detect step of a run skips the registry probes.
    pub detect_skip_registries: bool,
    /// Deadline of the fetch step (the Fetch call to the source agent). Keep
    /// it above `fetch_timeout_seconds`, so that the agent's own, more
    /// precise limit fires first.
    pub fetch_deadline_ms: u64,
    /// The time limit the source agent applies to one fetch
    /// (`FetchLimits.timeout_seconds`).
    pub fetch_timeout_seconds: u32,
    /// Deadline of the analyze step (the Analyze call to the analyzer).
    pub analyze_deadline_ms: u64,
    /// Pipelines running at once on this orchestrator; more runs wait in
    /// PENDING for their turn.
    pub max_concurrent_pipelines: usize,
    /// How many live events a slow watcher may fall behind before it reads
    /// them back from the store.
    pub watch_buffer: usize,
    /// How often a watcher re-reads the store when no live event arrives (a
    /// run driven by another replica has no live feed here).
    pub watch_poll_ms: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            detect_deadline_ms: 15_000,
            detect_skip_registries: true,
            fetch_deadline_ms: 330_000,
            fetch_timeout_seconds: 300,
            analyze_deadline_ms: 60_000,
            max_concurrent_pipelines: 4,
            watch_buffer: 256,
            watch_poll_ms: 1_000,
        }
    }
}

/// The file name of the default SQLite store under the data directory.
pub const DATABASE_FILE: &str = "orchestrator.db";

impl OrchestratorConfig {
    pub fn detect_deadline(&self) -> Duration {
        Duration::from_millis(self.detect_deadline_ms.max(1))
    }

    pub fn fetch_deadline(&self) -> Duration {
        Duration::from_millis(self.fetch_deadline_ms.max(1))
    }

    pub fn analyze_deadline(&self) -> Duration {
        Duration::from_millis(self.analyze_deadline_ms.max(1))
    }

    pub fn watch_poll(&self) -> Duration {
        Duration::from_millis(self.watch_poll_ms.max(10))
    }

    /// The database to open: `database_url` when set, else the SQLite file
    /// `<data_dir>/orchestrator.db` (created when missing).
    pub fn database_url(&self, data_dir: &Path) -> String {
        match self.database_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => url.to_owned(),
            _ => format!("sqlite://{}?mode=rwc", data_dir.join(DATABASE_FILE).display()),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(OrchestratorError::InvalidConfig(message));
        if let Some(url) = &self.database_url
            && !url.trim().is_empty()
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return invalid("database_url must be a sqlite:// or postgres:// URL".into());
        }
        for (name, value) in [
            ("detect_deadline_ms", self.detect_deadline_ms),
            ("fetch_deadline_ms", self.fetch_deadline_ms),
            ("analyze_deadline_ms", self.analyze_deadline_ms),
            ("watch_poll_ms", self.watch_poll_ms),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be above zero"));
            }
        }
        if self.fetch_timeout_seconds == 0 {
            return invalid("fetch_timeout_seconds must be above zero".into());
        }
        if self.fetch_deadline_ms <= u64::from(self.fetch_timeout_seconds) * 1_000 {
            return invalid(format!(
                "fetch_deadline_ms ({}) must exceed fetch_timeout_seconds ({} s), so that the \
                 source agent's own limit fires first",
                self.fetch_deadline_ms, self.fetch_timeout_seconds
            ));
        }
        if !(1..=1024).contains(&self.max_concurrent_pipelines) {
            return invalid(format!(
                "max_concurrent_pipelines is {}; it must be between 1 and 1024",
                self.max_concurrent_pipelines
            ));
        }
        if !(1..=65_536).contains(&self.watch_buffer) {
            return invalid(format!(
                "watch_buffer is {}; it must be between 1 and 65536",
                self.watch_buffer
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_sqlite_in_the_data_dir() {
        let config = OrchestratorConfig::default();
        config.validate().expect("defaults");
        assert_eq!(
            config.database_url(Path::new("/srv/rr")),
            "sqlite:///srv/rr/orchestrator.db?mode=rwc"
        );
        let pg = OrchestratorConfig {
            database_url: Some("postgres://db/rr".into()),
            ..config
        };
        assert_eq!(pg.database_url(Path::new("/srv/rr")), "postgres://db/rr");
    }

    #[test]
    fn refuses_a_fetch_deadline_below_the_agents_limit_and_zero_pipelines() {
        let config = OrchestratorConfig {
            fetch_deadline_ms: 10_000,
            ..OrchestratorConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("fetch_timeout_seconds"), "{message}");
        let config = OrchestratorConfig {
            max_concurrent_pipelines: 0,
            ..OrchestratorConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_concurrent_pipelines")
        );
        let config = OrchestratorConfig {
            database_url: Some("mysql://x".into()),
            ..OrchestratorConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
