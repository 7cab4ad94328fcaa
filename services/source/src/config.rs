//! The source agent's settings and the limits applied to each fetch.

use std::{path::PathBuf, time::Duration};

use reporunner_proto::agents::source::v1::FetchLimits;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SourceError};

/// One set of limits, as configured (defaults or hard caps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsConfig {
    /// Bytes of file content in a workspace (and of a compressed upload).
    pub max_total_bytes: u64,
    /// Files and symlinks in a workspace (directories are bounded separately
    /// by the same number).
    pub max_files: u64,
    /// Largest ratio of extracted bytes to compressed upload bytes.
    pub max_compression_ratio: u32,
    /// Time allowed to one fetch or upload, start to finish.
    pub timeout_seconds: u32,
}

/// Settings of the source agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceConfig {
    /// Where workspaces live: `<root>/<owner_id>/<hex digest>`; work in
    /// progress lives under `<root>/.staging`.
    pub root: PathBuf,
    /// Local paths may only be copied from below one of these. Empty (the
    /// default): no local path at all, only git URLs and uploads.
    pub allowed_local_roots: Vec<PathBuf>,
    /// Local paths below these are always refused, even below an allowed
    /// root, and left out of a copy of a directory above them. The process
    /// that hosts the agent puts its data directory here; the workspace
    /// `root` is refused in any case.
    pub forbidden_local_roots: Vec<PathBuf>,
    /// Whether git may clone `file://` URLs and plain paths (tests only).
    pub allow_file_urls: bool,
    /// Fetches and uploads running at once; more wait their turn.
    pub max_concurrent_fetches: usize,
    /// The git executable.
    pub git_binary: PathBuf,
    /// Messages one upload may consist of (header included).
    pub max_upload_messages: u64,
    /// Limits used where a request leaves a field at zero.
    pub default_limits: LimitsConfig,
    /// Limits no request can raise.
    pub max_limits: LimitsConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/var/lib/reporunner/workspaces"),
            allowed_local_roots: Vec::new(),
            forbidden_local_roots: Vec::new(),
            allow_file_urls: false,
            max_concurrent_fetches: 4,
            git_binary: PathBuf::from("git"),
            max_upload_messages: 262_144,
            default_limits: LimitsConfig {
                max_total_bytes: 512 * 1024 * 1024,
                max_files: 100_000,
                max_compression_ratio: 100,
                timeout_seconds: 300,
            },
            max_limits: LimitsConfig {
                max_total_bytes: 4 * 1024 * 1024 * 1024,
                max_files: 1_000_000,
                max_compression_ratio: 1_000,
                timeout_seconds: 1_800,
            },
        }
    }
}

/// The limits in force for one fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_total_bytes: u64,
    pub max_files: u64,
    pub max_compression_ratio: u32,
    pub timeout: Duration,
}

impl Limits {
    /// These limits, as they apply to one fetch.
    pub fn from_config(config: &LimitsConfig) -> Self {
        Self {
            max_total_bytes: config.max_total_bytes,
            max_files: config.max_files,
            max_compression_ratio: config.max_compression_ratio,
            timeout: Duration::from_secs(u64::from(config.timeout_seconds)),
        }
    }
}

impl SourceConfig {
    /// The request's value where it is non-zero, else the default; never
    /// above the cap.
    pub fn effective_limits(&self, requested: Option<&FetchLimits>) -> Limits {
        let requested = requested.copied().unwrap_or_default();
        let pick = |asked: u64, default: u64, cap: u64| if asked == 0 { default } else { asked }.min(cap);
        let d = &self.default_limits;
        let m = &self.max_limits;
        Limits {
            max_total_bytes: pick(requested.max_total_bytes, d.max_total_bytes, m.max_total_bytes),
            max_files: pick(requested.max_files, d.max_files, m.max_files),
            max_compression_ratio: u32::try_from(pick(
                requested.max_compression_ratio.into(),
                d.max_compression_ratio.into(),
                m.max_compression_ratio.into(),
            ))
            .unwrap_or(u32::MAX),
            timeout: Duration::from_secs(pick(
                requested.timeout_seconds.into(),
                d.timeout_seconds.into(),
                m.timeout_seconds.into(),
            )),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(SourceError::InvalidConfig(msg));
        if !self.root.is_absolute() {
            return invalid(format!("root `{}` must be an absolute path", self.root.display()));
        }
        for (name, roots) in [
            ("allowed_local_roots", &self.allowed_local_roots),
            ("forbidden_local_roots", &self.forbidden_local_roots),
        ] {
            if let Some(bad) = roots.iter().find(|p| !p.is_absolute()) {
                return invalid(format!(
                    "{name} entry `{}` must be an absolute path",
                    bad.display()
                ));
            }
        }
        if self.max_concurrent_fetches == 0 || self.max_concurrent_fetches > 1024 {
            return invalid(format!(
                "max_concurrent_fetches is {}; it must be between 1 and 1024",
                self.max_concurrent_fetches
            ));
        }
        if self.max_upload_messages == 0 {
            return invalid("max_upload_messages must be at least 1".into());
        }
        if self.git_binary.as_os_str().is_empty() {
            return invalid("git_binary must not be empty".into());
        }
        for (name, limits) in [
            ("default_limits", &self.default_limits),
            ("max_limits", &self.max_limits),
        ] {
            if limits.max_total_bytes == 0
                || limits.max_files == 0
                || limits.max_compression_ratio == 0
                || limits.timeout_seconds == 0
            {
                return invalid(format!("every field of {name} must be above zero"));
            }
        }
        let (d, m) = (&self.default_limits, &self.max_limits);
        if d.max_total_bytes > m.max_total_bytes
            || d.max_files > m.max_files
            || d.max_compression_ratio > m.max_compression_ratio
            || d.timeout_seconds > m.timeout_seconds
        {
            return invalid("default_limits must not exceed max_limits".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SourceConfig::default().validate().unwrap();
        assert!(!SourceConfig::default().allow_file_urls);
        // No local path is allowed until an operator names where from.
        assert!(SourceConfig::default().allowed_local_roots.is_empty());
    }

    #[test]
    fn request_values_win_but_never_pass_the_cap() {
        let config = SourceConfig::default();
        let asked = FetchLimits {
            max_total_bytes: 1_000,
            max_files: 0,
            max_compression_ratio: 1_000_000,
            timeout_seconds: 7,
        };
        let limits = config.effective_limits(Some(&asked));
        assert_eq!(limits.max_total_bytes, 1_000);
        assert_eq!(limits.max_files, config.default_limits.max_files);
        assert_eq!(
            limits.max_compression_ratio,
            config.max_limits.max_compression_ratio
        );
        assert_eq!(limits.timeout, Duration::from_secs(7));
        let none = config.effective_limits(None);
        assert_eq!(none.timeout, Duration::from_secs(300));
    }

    #[test]
    fn rejects_relative_roots_and_defaults_above_caps() {
        let config = SourceConfig {
            root: "workspaces".into(),
            ..SourceConfig::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("workspaces"));
        let config = SourceConfig {
            forbidden_local_roots: vec!["data".into()],
            ..SourceConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("forbidden_local_roots entry `data`"), "{err}");
        let mut config = SourceConfig::default();
        config.default_limits.max_files = config.max_limits.max_files + 1;
        assert!(config.validate().unwrap_err().to_string().contains("max_limits"));
    }

    #[test]
    fn missing_fields_take_defaults() {
        let config: SourceConfig =
            serde_json::from_str(r#"{"root": "/srv/ws", "allow_file_urls": true}"#).unwrap();
        assert_eq!(config.root, PathBuf::from("/srv/ws"));
        assert!(config.allow_file_urls);
        assert_eq!(config.max_concurrent_fetches, 4);
    }
}
