//! The analyzer's settings: the bounds of one analysis.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{AnalyzerError, Result};

/// Settings of the analyzer. Every field bounds work done on outside input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyzerConfig {
    /// The most directory entries the walk indexes; past it the walk stops
    /// and the plan carries a warning.
    pub max_entries: usize,
    /// The deepest directory level the walk enters (the root is 0).
    pub max_depth: usize,
    /// Files larger than this are read only up to this many bytes.
    pub max_file_bytes: u64,
    /// Wall-clock budget of one analysis, in milliseconds. When it runs out
    /// the analysis returns what it has, with a warning.
    #[serde(with = "humantime_serde")]
    pub time_budget: Duration,
    /// The most components one plan may hold.
    pub max_components: usize,
    /// The most source files read to find app objects and env reads, over
    /// the whole analysis.
    pub max_source_files: usize,
    /// Source files larger than this are not scanned for app objects or env
    /// reads.
    pub max_source_bytes: u64,
    /// Directory names never entered (in addition to .gitignore rules).
    pub skip_dirs: Vec<String>,
}

/// Directory names the walk never enters: vendored code, build output,
/// virtual environments and caches.
pub fn default_skip_dirs() -> Vec<String> {
    [
        ".git",
        ".hg",
        ".svn",
        "node_modules",
        "target",
        ".venv",
        "venv",
        "dist",
        "build",
        "vendor",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".next",
        ".nuxt",
        ".svelte-kit",
        ".turbo",
        ".cache",
        ".gradle",
        ".idea",
        "bower_components",
        "site-packages",
        ".eggs",
        "coverage",
        ".terraform",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            max_entries: 200_000,
            max_depth: 24,
            max_file_bytes: 1024 * 1024,
            time_budget: Duration::from_secs(20),
            max_components: 24,
            max_source_files: 600,
            max_source_bytes: 256 * 1024,
            skip_dirs: default_skip_dirs(),
        }
    }
}

impl AnalyzerConfig {
    pub fn time_budget(&self) -> Duration {
        self.time_budget
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(AnalyzerError::InvalidConfig(msg));
        if self.max_entries == 0 {
            return invalid("max_entries must be at least 1".into());
        }
        if self.max_file_bytes == 0 || self.max_file_bytes > 64 * 1024 * 1024 {
            return invalid(format!(
                "max_file_bytes is {}; it must be between 1 and 67108864",
                self.max_file_bytes
            ));
        }
        if self.time_budget.is_zero() || self.time_budget > Duration::from_secs(600) {
            return invalid(format!(
                "time_budget is {}; it must be above zero and at most 10m",
                humantime_serde::re::humantime::format_duration(self.time_budget)
            ));
        }
        if self.max_components == 0 {
            return invalid("max_components must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_skip_vendored_dirs() {
        let config = AnalyzerConfig::default();
        config.validate().unwrap();
        assert!(config.skip_dirs.iter().any(|d| d == "node_modules"));
        assert_eq!(config.max_file_bytes, 1024 * 1024);
    }

    #[test]
    fn rejects_a_zero_budget_and_takes_defaults_for_missing_fields() {
        let config: AnalyzerConfig = serde_json::from_str(r#"{"time_budget": "0s"}"#).unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("time_budget"));
        assert_eq!(config.max_depth, 24);
    }
}
