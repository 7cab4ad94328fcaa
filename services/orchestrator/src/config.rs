//! The orchestrator's settings.

use std::{path::Path, time::Duration};

use reporunner_server::config::format_duration;
use serde::{Deserialize, Serialize};

use crate::{OrchestratorError, Result};

/// One plugin: `[[orchestrator.plugins]]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Its name in notices and failure reasons.
    pub name: String,
    /// Where it serves `reporunner.agents.plugin.v1.PluginService`
    /// (`http://host:port`, `https://…`, `dns:///…`).
    pub endpoints: Vec<String>,
    /// Deadline of one call; past it the call is a notice in the run.
    #[serde(with = "humantime_serde", default = "plugin_deadline")]
    pub deadline: Duration,
}

fn plugin_deadline() -> Duration {
    Duration::from_secs(10)
}

/// Orchestrator settings.
///
/// Durations are humantime strings in config (`fetch_deadline = "5m 30s"`).
/// In Rust they stay integer milliseconds (`*_ms`) and seconds (`*_seconds`)
/// under their old field names, which the pipeline reads and sends in proto
/// fields of seconds; the accessors (`fetch_deadline()`) give `Duration`s.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// A sea-orm database URL (`postgres://...` or `sqlite://...`) for runs
    /// and their events. Unset means the SQLite file
    /// `<data_dir>/orchestrator.db`; see [`OrchestratorConfig::database_url`].
    pub database_url: Option<String>,
    /// External agents called at hooks of every run of a tier that allows
    /// them (see [`crate::plugins`]).
    pub plugins: Vec<PluginConfig>,
    /// Deadline of a Detect call to the env-detector (registry probes take
    /// up to a few seconds on a cold cache).
    #[serde(rename = "detect_deadline", with = "reporunner_server::config::whole_millis")]
    pub detect_deadline_ms: u64,
    /// Whether the detect step of a run skips the registry probes.
    pub detect_skip_registries: bool,
    /// Deadline of the fetch step (the Fetch call to the source agent). Keep
    /// it above `fetch_timeout`, so that the agent's own, more
    /// precise limit fires first.
    #[serde(rename = "fetch_deadline", with = "reporunner_server::config::whole_millis")]
    pub fetch_deadline_ms: u64,
    /// The time limit the source agent applies to one fetch
    /// (`FetchLimits.timeout_seconds`).
    #[serde(rename = "fetch_timeout", with = "reporunner_server::config::whole_seconds")]
    pub fetch_timeout_seconds: u32,
    /// Deadline of the analyze step (the Analyze call to the analyzer).
    #[serde(rename = "analyze_deadline", with = "reporunner_server::config::whole_millis")]
    pub analyze_deadline_ms: u64,
    /// Pipelines running at once on this orchestrator; more runs wait in
    /// PENDING for their turn.
    pub max_concurrent_pipelines: usize,
    /// How many live events a slow watcher may fall behind before it reads
    /// them back from the store.
    pub watch_buffer: usize,
    /// How often a watcher re-reads the store when no live event arrives (a
    /// run driven by another replica has no live feed here).
    #[serde(rename = "watch_poll", with = "reporunner_server::config::whole_millis")]
    pub watch_poll_ms: u64,
    /// The install time limit sent to the dependency agent
    /// (`InstallLimits.timeout_seconds`); covers the build command too.
    #[serde(rename = "install_timeout", with = "reporunner_server::config::whole_seconds")]
    pub install_timeout_seconds: u32,
    /// Deadline of one Install call (the whole stream); keep it above
    /// `install_timeout` so that the agent's own limit fires first.
    #[serde(rename = "install_deadline", with = "reporunner_server::config::whole_millis")]
    pub install_deadline_ms: u64,
    /// Deadline of a Start, Stop or Status call to the runner agent.
    #[serde(rename = "runner_deadline", with = "reporunner_server::config::whole_millis")]
    pub runner_deadline_ms: u64,
    /// Restarts the runner makes of a component that exits with a failure
    /// (restart policy ON_FAILURE) before it fails for good.
    pub max_restarts: u32,
    /// How long a started component may take to answer its health probe
    /// (`cargo run` compiles, `next dev` cold starts) before the run fails.
    #[serde(rename = "startup_grace", with = "reporunner_server::config::whole_seconds")]
    pub startup_grace_seconds: u32,
    /// Interval of the health agent's probes of a component.
    #[serde(rename = "probe_interval", with = "reporunner_server::config::whole_millis")]
    pub probe_interval_ms: u32,
    /// Consecutive failed probes before a healthy component is unhealthy.
    pub failure_threshold: u32,
    /// How often a RUNNING run asks the runner whether its processes live.
    #[serde(rename = "status_poll", with = "reporunner_server::config::whole_millis")]
    pub status_poll_ms: u64,
    /// SIGTERM → SIGKILL grace when a run's processes are stopped.
    #[serde(rename = "stop_grace", with = "reporunner_server::config::whole_seconds")]
    pub stop_grace_seconds: u32,
    /// The time limit the tester agent applies to one component's tests
    /// (`RunTestsRequest.timeout_seconds`).
    #[serde(rename = "test_timeout", with = "reporunner_server::config::whole_seconds")]
    pub test_timeout_seconds: u32,
    /// Deadline of one RunTests call; keep it above `test_timeout`
    /// so that the tester's own limit (TIMED_OUT, with counts) fires first.
    #[serde(rename = "test_deadline", with = "reporunner_server::config::whole_millis")]
    pub test_deadline_ms: u64,
    /// Lines of a component's output quoted in `Run.error` when it fails.
    pub log_tail_lines: usize,
    /// Where the provisioner keeps a run's private servers
    /// (`<provision_dir>/<run id>`); empty: in the binary a directory of the
    /// data dir's own under the system's temp dir (`reporunner-provision-<hash>`,
    /// 0711: the data dir is 0700 and private servers run as their own
    /// accounts), the system's temp dir elsewhere. Must be absolute.
    pub provision_dir: String,
    /// Deadline of a Provision or Release call (a private server's start).
    #[serde(
        rename = "provision_deadline",
        with = "reporunner_server::config::whole_millis"
    )]
    pub provision_deadline_ms: u64,
    /// Deadline of a Diagnose call to the resolver.
    #[serde(
        rename = "diagnose_deadline",
        with = "reporunner_server::config::whole_millis"
    )]
    pub diagnose_deadline_ms: u64,
    /// Deadline of one IndexRepo call to the indexer (the whole stream:
    /// embedding a large workspace on CPU takes minutes).
    #[serde(rename = "index_deadline", with = "reporunner_server::config::whole_millis")]
    pub index_deadline_ms: u64,
    /// Deadline of a Search or IndexStatus call to the indexer.
    #[serde(rename = "search_deadline", with = "reporunner_server::config::whole_millis")]
    pub search_deadline_ms: u64,
    /// Progress messages of one IndexWorkspace stream relayed at most
    /// (the indexer sends one per batch of files).
    pub max_index_messages: usize,
    /// This replica's name in the run store's leases. Runs are leased to
    /// the replica that drives them; a replica that starts under the name
    /// of one that died takes its runs over at once, others wait for the
    /// lease to expire. Empty: the host name (a pod's name on Kubernetes).
    /// Give each replica its own when several run on one host.
    pub replica_id: String,
    /// How long a run's lease lasts without renewal (renewed every third of
    /// it). After a replica dies, another takes its runs over within about
    /// this long (plus a third).
    #[serde(rename = "run_lease", with = "reporunner_server::config::whole_millis")]
    pub run_lease_ms: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            plugins: Vec::new(),
            detect_deadline_ms: 15_000,
            detect_skip_registries: true,
            fetch_deadline_ms: 330_000,
            fetch_timeout_seconds: 300,
            analyze_deadline_ms: 60_000,
            max_concurrent_pipelines: 4,
            watch_buffer: 256,
            watch_poll_ms: 1_000,
            install_timeout_seconds: 1_200,
            install_deadline_ms: 1_260_000,
            runner_deadline_ms: 30_000,
            max_restarts: 2,
            startup_grace_seconds: 180,
            probe_interval_ms: 500,
            failure_threshold: 3,
            status_poll_ms: 2_000,
            stop_grace_seconds: 5,
            test_timeout_seconds: 840,
            test_deadline_ms: 900_000,
            log_tail_lines: 20,
            provision_dir: String::new(),
            provision_deadline_ms: 90_000,
            diagnose_deadline_ms: 30_000,
            index_deadline_ms: 1_800_000,
            search_deadline_ms: 30_000,
            max_index_messages: 100_000,
            replica_id: String::new(),
            run_lease_ms: 15_000,
        }
    }
}

/// The file name of the default SQLite store under the data directory.
pub const DATABASE_FILE: &str = "orchestrator.db";

impl OrchestratorConfig {
    pub fn provision_deadline(&self) -> Duration {
        Duration::from_millis(self.provision_deadline_ms.max(1))
    }

    pub fn diagnose_deadline(&self) -> Duration {
        Duration::from_millis(self.diagnose_deadline_ms.max(1))
    }

    /// The run directory given to the provisioner.
    pub fn provision_run_dir(&self, run_id: &str) -> std::path::PathBuf {
        let base = if self.provision_dir.is_empty() {
            std::env::temp_dir().join("reporunner-provision")
        } else {
            std::path::PathBuf::from(&self.provision_dir)
        };
        base.join(run_id)
    }

    pub fn index_deadline(&self) -> Duration {
        Duration::from_millis(self.index_deadline_ms.max(1))
    }

    pub fn search_deadline(&self) -> Duration {
        Duration::from_millis(self.search_deadline_ms.max(1))
    }

    pub fn detect_deadline(&self) -> Duration {
        Duration::from_millis(self.detect_deadline_ms.max(1))
    }

    pub fn fetch_deadline(&self) -> Duration {
        Duration::from_millis(self.fetch_deadline_ms.max(1))
    }

    pub fn analyze_deadline(&self) -> Duration {
        Duration::from_millis(self.analyze_deadline_ms.max(1))
    }

    pub fn install_deadline(&self) -> Duration {
        Duration::from_millis(self.install_deadline_ms.max(1))
    }

    pub fn runner_deadline(&self) -> Duration {
        Duration::from_millis(self.runner_deadline_ms.max(1))
    }

    /// The start-up grace, plus time for the probes after it.
    pub fn probe_deadline(&self) -> Duration {
        Duration::from_secs(u64::from(self.startup_grace_seconds) + 30)
    }

    pub fn status_poll(&self) -> Duration {
        Duration::from_millis(self.status_poll_ms.max(100))
    }

    pub fn test_deadline(&self) -> Duration {
        Duration::from_millis(self.test_deadline_ms.max(1))
    }

    /// How long a run's lease lasts without renewal.
    pub fn run_lease(&self) -> Duration {
        Duration::from_millis(self.run_lease_ms.max(300))
    }

    /// This replica's lease name: `replica_id`, else the host name.
    pub fn replica(&self) -> String {
        let configured = self.replica_id.trim();
        if !configured.is_empty() {
            return configured.to_owned();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "orchestrator".to_owned())
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
        let millis = |ms: u64| format_duration(Duration::from_millis(ms));
        let seconds = |s: u32| format_duration(Duration::from_secs(u64::from(s)));
        if let Some(url) = &self.database_url
            && !url.trim().is_empty()
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return invalid("database_url must be a sqlite:// or postgres:// URL".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for plugin in &self.plugins {
            if plugin.name.trim().is_empty() || !names.insert(plugin.name.as_str()) {
                return invalid(format!(
                    "plugins: every plugin needs a name of its own (`{}` is empty or repeated)",
                    plugin.name
                ));
            }
            if plugin.endpoints.is_empty() {
                return invalid(format!("plugins: plugin `{}` has no endpoints", plugin.name));
            }
            if plugin.deadline.is_zero() {
                return invalid(format!("plugins: plugin `{}` has a zero deadline", plugin.name));
            }
        }
        for (name, value) in [
            ("detect_deadline", self.detect_deadline_ms),
            ("fetch_deadline", self.fetch_deadline_ms),
            ("analyze_deadline", self.analyze_deadline_ms),
            ("watch_poll", self.watch_poll_ms),
            ("install_deadline", self.install_deadline_ms),
            ("runner_deadline", self.runner_deadline_ms),
            ("status_poll", self.status_poll_ms),
            ("test_deadline", self.test_deadline_ms),
            ("index_deadline", self.index_deadline_ms),
            ("search_deadline", self.search_deadline_ms),
            ("run_lease", self.run_lease_ms),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be above zero"));
            }
        }
        if self.fetch_timeout_seconds == 0 {
            return invalid("fetch_timeout must be above zero".into());
        }
        if self.fetch_deadline_ms <= u64::from(self.fetch_timeout_seconds) * 1_000 {
            return invalid(format!(
                "fetch_deadline ({}) must exceed fetch_timeout ({}), so that the \
                 source agent's own limit fires first",
                millis(self.fetch_deadline_ms),
                seconds(self.fetch_timeout_seconds)
            ));
        }
        if self.install_timeout_seconds == 0 || self.startup_grace_seconds == 0 || self.probe_interval_ms == 0
        {
            return invalid("install_timeout, startup_grace and probe_interval must be above zero".into());
        }
        if self.install_deadline_ms <= u64::from(self.install_timeout_seconds) * 1_000 {
            return invalid(format!(
                "install_deadline ({}) must exceed install_timeout ({}), so that the \
                 dependency agent's own limit fires first",
                millis(self.install_deadline_ms),
                seconds(self.install_timeout_seconds)
            ));
        }
        if self.test_timeout_seconds == 0
            || self.test_deadline_ms <= u64::from(self.test_timeout_seconds) * 1_000
        {
            return invalid(format!(
                "test_deadline ({}) must exceed test_timeout ({}, above zero), so that \
                 the tester's own limit fires first",
                millis(self.test_deadline_ms),
                seconds(self.test_timeout_seconds)
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
        if self.run_lease_ms < 300 {
            return invalid(format!(
                "run_lease is {}; it must be at least 300ms (it is renewed every third of it)",
                millis(self.run_lease_ms)
            ));
        }
        if self.replica_id.len() > 253 || self.replica_id.chars().any(char::is_control) {
            return invalid("replica_id must be at most 253 characters with no control characters".into());
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
    fn durations_are_humantime_strings_under_keys_without_units() {
        let config: OrchestratorConfig = serde_json::from_str(
            r#"{"fetch_deadline": "6m", "fetch_timeout": "5m", "probe_interval": "250ms",
                "stop_grace": "10s"}"#,
        )
        .unwrap();
        assert_eq!(config.fetch_deadline(), Duration::from_secs(360));
        assert_eq!(config.fetch_timeout_seconds, 300);
        assert_eq!(config.probe_interval_ms, 250);
        assert_eq!(config.stop_grace_seconds, 10);
        let text = serde_json::to_string(&OrchestratorConfig::default()).unwrap();
        assert!(text.contains(r#""fetch_deadline":"5m 30s""#), "{text}");
        let err = serde_json::from_str::<OrchestratorConfig>(r#"{"stop_grace": "1500ms"}"#).unwrap_err();
        assert!(err.to_string().contains("not a whole number of seconds"), "{err}");
        let err = serde_json::from_str::<OrchestratorConfig>(r#"{"stop_grace_seconds": 5}"#).unwrap_err();
        assert!(err.to_string().contains("stop_grace_seconds"), "{err}");
    }

    #[test]
    fn refuses_a_fetch_deadline_below_the_agents_limit_and_zero_pipelines() {
        let config = OrchestratorConfig {
            fetch_deadline_ms: 10_000,
            ..OrchestratorConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("fetch_timeout"), "{message}");
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

    #[test]
    fn the_install_deadline_must_leave_room_for_the_agents_own_limit() {
        let config = OrchestratorConfig {
            install_timeout_seconds: 600,
            install_deadline_ms: 600_000,
            ..OrchestratorConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("install_timeout"), "{message}");
        let config = OrchestratorConfig {
            startup_grace_seconds: 0,
            ..OrchestratorConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("startup_grace")
        );
        let config = OrchestratorConfig {
            test_timeout_seconds: 900,
            ..OrchestratorConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("test_timeout")
        );
        assert_eq!(
            OrchestratorConfig::default().probe_deadline(),
            Duration::from_secs(210)
        );
    }
}
