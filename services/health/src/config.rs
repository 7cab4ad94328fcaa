//! The health agent's settings: the bounds of every probe and watch.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{HealthError, Result};

/// Settings of the health agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Probes in one request.
    pub max_probes: usize,
    /// Candidate paths in one HTTP probe.
    pub max_http_paths: usize,
    /// A probe's timeout when the request gives none.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// The longest timeout a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
    /// The shortest interval a watch may ask for.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// A watch's interval when the request gives none.
    #[serde(with = "humantime_serde")]
    pub default_interval: Duration,
    /// The longest start-up grace a watch may ask for.
    #[serde(with = "humantime_serde")]
    pub max_startup_grace: Duration,
    /// Watches open at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_watches: usize,
    /// The longest a watch runs before the agent ends it (the caller re-opens).
    #[serde(with = "humantime_serde")]
    pub max_watch: Duration,
    /// Log lines read per log probe (the newest ones).
    pub log_tail_lines: usize,
    /// Patterns in one log probe, and the size of each.
    pub max_log_patterns: usize,
    pub max_pattern_bytes: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            max_probes: 8,
            max_http_paths: 8,
            default_timeout: Duration::from_secs(2),
            max_timeout: Duration::from_secs(30),
            min_interval: Duration::from_millis(100),
            default_interval: Duration::from_secs(1),
            max_startup_grace: Duration::from_secs(3_600),
            max_watches: 1_024,
            max_watch: Duration::from_secs(24 * 3_600),
            log_tail_lines: 500,
            max_log_patterns: 16,
            max_pattern_bytes: 512,
        }
    }
}

impl HealthConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(HealthError::InvalidConfig(what.to_owned()));
        if self.max_probes == 0 || self.max_http_paths == 0 {
            return invalid("max_probes and max_http_paths must be at least 1");
        }
        if self.default_timeout.is_zero() || self.default_timeout > self.max_timeout {
            return invalid("default_timeout must be above zero and at most max_timeout");
        }
        if self.min_interval.is_zero() || self.default_interval < self.min_interval {
            return invalid("min_interval must be above zero and at most default_interval");
        }
        if self.max_watches == 0 || self.max_watch.is_zero() {
            return invalid("max_watches and max_watch must be above zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        HealthConfig::default().validate().unwrap();
        let bad = HealthConfig {
            default_timeout: Duration::from_secs(60),
            ..HealthConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("default_timeout")
        );
    }
}
