use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Orchestrator settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// Deadline of a Detect call to the env-detector (registry probes take
    /// up to a few seconds on a cold cache).
    pub detect_deadline_ms: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            detect_deadline_ms: 15_000,
        }
    }
}

impl OrchestratorConfig {
    pub fn detect_deadline(&self) -> Duration {
        Duration::from_millis(self.detect_deadline_ms.max(1))
    }
}
