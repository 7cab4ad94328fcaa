//! The health agent's settings: the bounds of every probe and watch.

use serde::{Deserialize, Serialize};

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
    pub default_timeout_ms: u32,
    /// The longest timeout a request may ask for.
    pub max_timeout_ms: u32,
    /// The shortest interval a watch may ask for.
    pub min_interval_ms: u32,
    /// A watch's interval when the request gives none.
    pub default_interval_ms: u32,
    /// The longest start-up grace a watch may ask for.
    pub max_startup_grace_seconds: u32,
    /// Watches open at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_watches: usize,
    /// The longest a watch runs before the agent ends it (the caller re-opens).
    pub max_watch_seconds: u64,
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
            default_timeout_ms: 2_000,
            max_timeout_ms: 30_000,
            min_interval_ms: 100,
            default_interval_ms: 1_000,
            max_startup_grace_seconds: 3_600,
            max_watches: 1_024,
            max_watch_seconds: 24 * 3_600,
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
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return invalid("default_timeout_ms must be between 1 and max_timeout_ms");
        }
        if self.min_interval_ms == 0 || self.default_interval_ms < self.min_interval_ms {
            return invalid("min_interval_ms must be at least 1 and at most default_interval_ms");
        }
        if self.max_watches == 0 || self.max_watch_seconds == 0 {
            return invalid("max_watches and max_watch_seconds must be at least 1");
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
            default_timeout_ms: 60_000,
            ..HealthConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("default_timeout_ms")
        );
    }
}
