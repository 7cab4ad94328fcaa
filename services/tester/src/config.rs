//! The tester agent's settings. The sandbox (bubblewrap, rlimits, hidden
//! paths) is the runner agent's: the tester takes the runner's
//! [`ProcessSettings`] beside these.
//!
//! [`ProcessSettings`]: reporunner_sandbox::process::ProcessSettings

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{Result, TesterError};

/// Settings of the tester agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TesterConfig {
    /// A test run's time limit when the request gives none.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// The longest time limit a request may ask for (longer ones are cut).
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
    /// Lines of output returned in `log_tail`.
    pub tail_lines: usize,
    /// Summary-looking lines kept for the parsers (go test -v prints one per
    /// test); the oldest go beyond this.
    pub max_summary_lines: usize,
    /// Longer output lines are cut there (bytes).
    pub max_line_bytes: usize,
    /// Test runs at once; more wait for a slot.
    pub max_concurrent: usize,
    /// Time between SIGTERM and SIGKILL when a run times out.
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
}

impl Default for TesterConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(600),
            max_timeout: Duration::from_secs(3_600),
            tail_lines: 60,
            max_summary_lines: 100_000,
            max_line_bytes: 8 * 1024,
            max_concurrent: 4,
            kill_grace: Duration::from_secs(3),
        }
    }
}

impl TesterConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(TesterError::InvalidConfig(what.to_owned()));
        if self.default_timeout.is_zero() || self.default_timeout > self.max_timeout {
            return invalid("default_timeout must be above zero and at most max_timeout");
        }
        if self.tail_lines == 0 || self.max_summary_lines == 0 || self.max_line_bytes < 256 {
            return invalid(
                "tail_lines and max_summary_lines must be at least 1, max_line_bytes at least 256",
            );
        }
        if self.max_concurrent == 0 {
            return invalid("max_concurrent must be at least 1");
        }
        Ok(())
    }

    /// The time limit of a request asking for `asked` seconds (0: default).
    pub fn timeout(&self, asked: u32) -> Duration {
        match asked {
            0 => self.default_timeout,
            n => Duration::from_secs(u64::from(n)).min(self.max_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_timeouts_are_capped() {
        let config = TesterConfig::default();
        config.validate().expect("defaults");
        assert_eq!(config.timeout(0).as_secs(), 600);
        assert_eq!(config.timeout(5).as_secs(), 5);
        assert_eq!(config.timeout(99_999).as_secs(), 3_600);
        let bad = TesterConfig {
            max_concurrent: 0,
            ..TesterConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("max_concurrent"));
    }
}
