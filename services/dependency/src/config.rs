//! The dependency agent's settings.
//!
//! The three directories may be relative: the integrator resolves them
//! against the agent's data dir (see [`DependencyConfig::resolve`]) before
//! building the agent, which requires absolute paths.
//!
//! - `cache_dir`: shared download caches for every install on this host
//!   (`uv/`, `pip/`, `npm/`, `pnpm-store/`, `yarn/`, `bun/`). A second install
//!   of the same dependencies links or copies from here instead of
//!   downloading. `CARGO_HOME` stays the user's.
//! - `tools_dir`: package managers the agent installed itself (`uv/` from
//!   PyPI, `pnpm@9/`, `yarn@1/`, ... from the npm registry).
//! - `env_dir`: one directory per run and component,
//!   `<env_dir>/<run_id>/<component>/`, holding the Python venv (`.venv`) or
//!   the Rust target dir (`target`). Node installs write `node_modules` into
//!   the component's own directory, where Node looks for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reporunner_proto::agents::dependency::v1::InstallLimits;
use serde::{Deserialize, Serialize};

use crate::error::{DependencyError, Result};

/// Settings of the dependency agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependencyConfig {
    /// Shared download caches.
    pub cache_dir: PathBuf,
    /// Package managers installed by the agent.
    pub tools_dir: PathBuf,
    /// Per-run environments.
    pub env_dir: PathBuf,
    /// Installs running at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_installs: usize,
    /// Install time when the request gives none, in seconds.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// The longest install time a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
    /// Disk limit of an environment when the request gives none (0: none).
    pub default_max_disk_bytes: u64,
    /// How often the environment's size is measured during an install.
    #[serde(with = "humantime_serde")]
    pub disk_check_interval: Duration,
    /// Bytes kept of one log line; the rest is cut and marked.
    pub max_line_bytes: usize,
    /// Lines of output carried in the result for diagnosis.
    pub log_tail_lines: usize,
    /// Use uv for Python when it is on PATH or can be installed from PyPI;
    /// false means pip only.
    pub use_uv: bool,
}

impl Default for DependencyConfig {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from("dependency/cache"),
            tools_dir: PathBuf::from("dependency/tools"),
            env_dir: PathBuf::from("dependency/envs"),
            max_concurrent_installs: 4,
            default_timeout: Duration::from_secs(900),
            max_timeout: Duration::from_secs(3_600),
            default_max_disk_bytes: 0,
            disk_check_interval: Duration::from_secs(2),
            max_line_bytes: 4_096,
            log_tail_lines: 50,
            use_uv: true,
        }
    }
}

/// The limits in force for one install.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub timeout: std::time::Duration,
    /// 0: no disk limit.
    pub max_disk_bytes: u64,
}

impl DependencyConfig {
    /// Makes relative directories absolute under `data_dir`.
    #[must_use]
    pub fn resolve(mut self, data_dir: &Path) -> Self {
        for dir in [&mut self.cache_dir, &mut self.tools_dir, &mut self.env_dir] {
            if dir.is_relative() {
                *dir = data_dir.join(&*dir);
            }
        }
        self
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(DependencyError::InvalidConfig(what.to_owned()));
        if [&self.cache_dir, &self.tools_dir, &self.env_dir]
            .iter()
            .any(|d| d.is_relative())
        {
            return invalid(
                "cache_dir, tools_dir and env_dir must be absolute (resolve them against the data dir)",
            );
        }
        if self.max_concurrent_installs == 0 {
            return invalid("max_concurrent_installs must be at least 1");
        }
        if self.default_timeout.is_zero() || self.default_timeout > self.max_timeout {
            return invalid("default_timeout must be above zero and at most max_timeout");
        }
        if self.max_line_bytes < 80 || self.disk_check_interval.is_zero() {
            return invalid("max_line_bytes must be at least 80 and disk_check_interval above zero");
        }
        Ok(())
    }

    /// The limits of one request: zero fields take the defaults, and the
    /// timeout is capped.
    pub fn limits(&self, requested: Option<&InstallLimits>) -> Limits {
        let requested = requested.copied().unwrap_or_default();
        let timeout = match requested.timeout_seconds {
            0 => self.default_timeout,
            s => Duration::from_secs(u64::from(s)).min(self.max_timeout),
        };
        Limits {
            timeout,
            max_disk_bytes: match requested.max_disk_bytes {
                0 => self.default_max_disk_bytes,
                b => b,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_dirs_resolve_under_the_data_dir_and_limits_are_capped() {
        let config = DependencyConfig::default().resolve(Path::new("/data"));
        config.validate().unwrap();
        assert_eq!(config.cache_dir, Path::new("/data/dependency/cache"));
        assert!(DependencyConfig::default().validate().is_err());
        let limits = config.limits(Some(&InstallLimits {
            timeout_seconds: 100_000,
            max_disk_bytes: 0,
        }));
        assert_eq!(limits.timeout.as_secs(), 3_600);
        assert_eq!(limits.max_disk_bytes, 0);
        assert_eq!(config.limits(None).timeout.as_secs(), 900);
    }
}
