//! The resolver's settings: log bounds and the optional LLM advisor.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::error::{ResolverError, Result};

/// Settings of the resolver agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Log lines looked at (the newest ones).
    pub max_log_lines: usize,
    /// Bytes looked at per log line.
    pub max_line_bytes: usize,
    /// Tried patches a request may carry.
    pub max_tried: usize,
    /// Diagnoses returned at most, best first.
    pub max_diagnoses: usize,
    pub advisor: AdvisorConfig,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            max_log_lines: 400,
            max_line_bytes: 2_048,
            max_tried: 256,
            max_diagnoses: 8,
            advisor: AdvisorConfig::default(),
        }
    }
}

/// An OpenAI-compatible chat-completions endpoint, asked only when no rule
/// matches. Off by default.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvisorConfig {
    pub enabled: bool,
    /// The API base, e.g. "http://127.0.0.1:8080/v1"; `/chat/completions`
    /// is appended unless the URL already ends with it.
    pub url: String,
    pub model: String,
    /// Sent as a bearer token when set. Never serialized back out.
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// The deadline of one advisor call, connection included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Log lines sent to the advisor (the newest ones).
    pub max_prompt_lines: usize,
    /// Bytes of the advisor's answer read at most.
    pub max_response_bytes: usize,
    /// Patches taken from one answer at most.
    pub max_patches: usize,
}

impl Default for AdvisorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: String::new(),
            model: String::new(),
            api_key: None,
            timeout: Duration::from_secs(20),
            max_prompt_lines: 120,
            max_response_bytes: 256 * 1024,
            max_patches: 4,
        }
    }
}

impl std::fmt::Debug for AdvisorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvisorConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_prompt_lines", &self.max_prompt_lines)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_patches", &self.max_patches)
            .finish()
    }
}

impl ResolverConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(ResolverError::InvalidConfig(what.to_owned()));
        if self.max_log_lines == 0 || self.max_line_bytes < 80 {
            return invalid("max_log_lines must be at least 1 and max_line_bytes at least 80");
        }
        if self.max_diagnoses == 0 {
            return invalid("max_diagnoses must be at least 1");
        }
        let advisor = &self.advisor;
        if advisor.enabled {
            if !(advisor.url.starts_with("http://") || advisor.url.starts_with("https://")) {
                return invalid("advisor.url must be an http:// or https:// URL when the advisor is enabled");
            }
            if advisor.model.trim().is_empty() {
                return invalid("advisor.model must be set when the advisor is enabled");
            }
            if advisor.timeout.is_zero() || advisor.max_prompt_lines == 0 || advisor.max_response_bytes == 0 {
                return invalid(
                    "advisor.timeout must be above zero, max_prompt_lines and max_response_bytes at least 1",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_enabled_advisor_needs_an_endpoint() {
        ResolverConfig::default().validate().expect("defaults");
        let mut config = ResolverConfig::default();
        config.advisor.enabled = true;
        assert!(config.validate().is_err());
        config.advisor.url = "http://127.0.0.1:1/v1".into();
        config.advisor.model = "m".into();
        config.advisor.api_key = Some("sk-very-secret".into());
        config.validate().expect("complete");
        assert!(!format!("{config:?}").contains("sk-very-secret"));
    }
}
