//! Tracing setup: human-readable or JSON lines on stderr, filtered by
//! `RUST_LOG` or the configured level, with the trace context layer that
//! carries `traceparent` across calls (see [`crate::trace`]).

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::trace::TraceContextLayer;

/// How the process logs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. "info" or "info,reporunner_client=debug".
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (default) or `json`: one JSON object per line, for log
    /// collectors, with the fields of the enclosing spans (`trace_id`, `rpc`,
    /// …) under `span` and `spans`.
    pub format: LogFormat,
    /// The older switch for `format = "json"`; either turns JSON on.
    pub json: bool,
}

/// The shape of log lines.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info,sqlx=warn".to_owned(),
            format: LogFormat::Text,
            json: false,
        }
    }
}

impl LogConfig {
    /// Whether lines are JSON.
    pub fn is_json(&self) -> bool {
        self.json || self.format == LogFormat::Json
    }
}

/// Installs the global subscriber. Later calls are no-ops, so tests that start
/// several servers in one process can all call it.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(TraceContextLayer);
    let result = if config.is_json() {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    // Already installed: keep the first one.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_json_reads_from_config() {
        let config: LogConfig = serde_json::from_str(r#"{"format": "json"}"#).expect("valid");
        assert!(config.is_json());
        let config: LogConfig = serde_json::from_str(r#"{"json": true}"#).expect("valid");
        assert!(config.is_json());
        assert!(!LogConfig::default().is_json());
        let err = serde_json::from_str::<LogConfig>(r#"{"format": "xml"}"#).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
    }
}
