//! The env-detector's settings.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::error::{EnvDetectorError, Result};

/// A package registry to probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryTarget {
    /// Short name, e.g. "pypi".
    pub name: String,
    /// The URL fetched with a GET; any answer below 500 counts as reachable.
    pub url: String,
}

impl RegistryTarget {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
        }
    }
}

/// Settings of the env-detector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvDetectorConfig {
    /// The file-system root every host file (`/proc`, `/sys`, `/etc/os-release`,
    /// `/.dockerenv`, ...) is read under. `/` in production; a fixture tree in
    /// tests.
    pub root: PathBuf,
    /// The registries to probe.
    pub registries: Vec<RegistryTarget>,
    /// Time allowed to each registry probe, in milliseconds.
    #[serde(with = "humantime_serde")]
    pub registry_timeout: Duration,
    /// How long toolchain and registry results are reused, in seconds.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Time allowed to each version command (`python3 --version`, ...), in
    /// milliseconds.
    #[serde(with = "humantime_serde")]
    pub toolchain_timeout: Duration,
    /// Where embedding models live. A model is present when some directory
    /// below holds `config.json`, `tokenizer.json` and `model.safetensors`.
    pub model_dir: Option<PathBuf>,
    /// A PATH to scan for toolchains instead of the process's own.
    pub extra_path: Option<String>,
}

/// The registries probed when the configuration names none.
pub fn default_registries() -> Vec<RegistryTarget> {
    vec![
        RegistryTarget::new("pypi", "https://pypi.org/simple/pip/"),
        RegistryTarget::new("npm", "https://registry.npmjs.org/"),
        RegistryTarget::new("crates", "https://index.crates.io/config.json"),
        RegistryTarget::new("go", "https://proxy.golang.org/"),
        RegistryTarget::new("maven", "https://repo.maven.apache.org/maven2/"),
        RegistryTarget::new("debian", "https://deb.debian.org/debian/"),
    ]
}

impl Default for EnvDetectorConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            registries: default_registries(),
            registry_timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(600),
            toolchain_timeout: Duration::from_secs(3),
            model_dir: None,
            extra_path: None,
        }
    }
}

/// The most registries one configuration may name (each is probed on every
/// uncached detection).
pub const MAX_REGISTRIES: usize = 32;

impl EnvDetectorConfig {
    pub fn registry_timeout(&self) -> Duration {
        self.registry_timeout
    }

    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    pub fn toolchain_timeout(&self) -> Duration {
        self.toolchain_timeout
    }

    /// Checks what serde cannot: timeouts, registry names and URLs.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(EnvDetectorError::InvalidConfig(msg));
        if self.registry_timeout.is_zero() || self.registry_timeout > Duration::from_secs(60) {
            return invalid(format!(
                "registry_timeout is {:?}; it must be above zero and at most 1m",
                self.registry_timeout
            ));
        }
        if self.toolchain_timeout.is_zero() || self.toolchain_timeout > Duration::from_secs(60) {
            return invalid(format!(
                "toolchain_timeout is {:?}; it must be above zero and at most 1m",
                self.toolchain_timeout
            ));
        }
        if self.registries.len() > MAX_REGISTRIES {
            return invalid(format!(
                "{} registries configured; at most {MAX_REGISTRIES} are allowed",
                self.registries.len()
            ));
        }
        for target in &self.registries {
            if target.name.trim().is_empty() {
                return invalid(format!("registry with url `{}` has an empty name", target.url));
            }
            if !(target.url.starts_with("http://") || target.url.starts_with("https://")) {
                return invalid(format!(
                    "registry `{}` has url `{}`; it must start with http:// or https://",
                    target.name, target.url
                ));
            }
        }
        if !self.root.is_absolute() {
            return invalid(format!("root `{}` must be an absolute path", self.root.display()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_six_registries() {
        let config = EnvDetectorConfig::default();
        config.validate().unwrap();
        let names: Vec<_> = config.registries.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["pypi", "npm", "crates", "go", "maven", "debian"]);
        assert_eq!(config.registry_timeout(), Duration::from_secs(2));
        assert_eq!(config.cache_ttl(), Duration::from_secs(600));
        assert_eq!(config.toolchain_timeout(), Duration::from_secs(3));
    }

    #[test]
    fn missing_fields_take_defaults() {
        let config: EnvDetectorConfig =
            serde_json::from_str(r#"{"root": "/srv/fixture", "cache_ttl": "5s"}"#).unwrap();
        assert_eq!(config.root, PathBuf::from("/srv/fixture"));
        assert_eq!(config.cache_ttl, Duration::from_secs(5));
        assert_eq!(config.registries, default_registries());
        assert_eq!(config.registry_timeout, Duration::from_secs(2));
    }

    #[test]
    fn round_trips_through_json() {
        let config = EnvDetectorConfig {
            model_dir: Some("/models".into()),
            extra_path: Some("/usr/bin".into()),
            ..EnvDetectorConfig::default()
        };
        let text = serde_json::to_string(&config).unwrap();
        let back: EnvDetectorConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn rejects_bad_urls_and_timeouts() {
        let mut config = EnvDetectorConfig::default();
        config
            .registries
            .push(RegistryTarget::new("ftp", "ftp://example.org/"));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ftp://example.org/"), "{err}");

        let config = EnvDetectorConfig {
            registry_timeout: Duration::from_millis(0),
            ..EnvDetectorConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("registry_timeout")
        );
    }
}
