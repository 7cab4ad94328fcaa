//! [`Detector`]: the [`EnvDetector`] of this crate.

use std::{
    collections::HashMap,
    ffi::OsString,
    path::Path,
    time::{Instant, SystemTime},
};

use reporunner_proto::common::v1::{Environment, Gpu, Platform, Recommendations, Toolchain};
use tokio::sync::Mutex;

use crate::{
    DetectOptions, EnvDetector,
    config::EnvDetectorConfig,
    error::{EnvDetectorError, Result},
    host, platform, recommend,
    registries::RegistryProbe,
    toolchains,
};

/// What the toolchain scan found: tools and GPUs (nvidia-smi is slow enough
/// to cache with them).
#[derive(Clone, Debug)]
struct ToolScan {
    toolchains: Vec<Toolchain>,
    gpus: Vec<Gpu>,
}

/// Detects the host per [`EnvDetectorConfig`], caching toolchain and registry
/// results for `cache_ttl`.
#[derive(Debug)]
pub struct Detector {
    config: EnvDetectorConfig,
    /// The environment to read instead of the process's, for tests.
    env: Option<HashMap<String, String>>,
    registry_probe: RegistryProbe,
    tools: Mutex<Option<(Instant, ToolScan)>>,
}

impl Detector {
    /// A detector reading the process's environment variables.
    pub fn new(config: EnvDetectorConfig) -> Self {
        Self {
            registry_probe: RegistryProbe::from_config(&config),
            config,
            env: None,
            tools: Mutex::new(None),
        }
    }

    /// A detector that sees `env` instead of the process's environment
    /// variables (platform signals only; tools still run with the process's).
    pub fn with_env(config: EnvDetectorConfig, env: HashMap<String, String>) -> Self {
        Self {
            env: Some(env),
            ..Self::new(config)
        }
    }

    pub fn config(&self) -> &EnvDetectorConfig {
        &self.config
    }

    /// The environment variables platform detection looks at: the injected
    /// ones, else the process's (variables that are not valid UTF-8 are skipped).
    pub fn env_snapshot(&self) -> HashMap<String, String> {
        match &self.env {
            Some(env) => env.clone(),
            None => std::env::vars_os()
                .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
                .collect(),
        }
    }

    /// The PATH toolchains are looked for on.
    fn search_path(&self) -> OsString {
        match &self.config.extra_path {
            Some(path) => OsString::from(path),
            None => std::env::var_os("PATH").unwrap_or_default(),
        }
    }

    async fn tool_scan(&self, refresh: bool) -> ToolScan {
        let mut cache = self.tools.lock().await;
        if !refresh
            && let Some((at, scan)) = cache.as_ref()
            && at.elapsed() < self.config.cache_ttl()
        {
            return scan.clone();
        }
        let path = self.search_path();
        let timeout = self.config.toolchain_timeout();
        let nvidia_smi = toolchains::which("nvidia-smi", &path);
        let gpus = async {
            match &nvidia_smi {
                Some(program) => host::gpus_with(program, timeout).await,
                None => Vec::new(),
            }
        };
        let tools = toolchains::detect_toolchains(self.config.root.clone(), path.clone(), timeout);
        let (toolchains, gpus) = tokio::join!(tools, gpus);
        let scan = ToolScan { toolchains, gpus };
        *cache = Some((Instant::now(), scan.clone()));
        scan
    }
}

/// What the blocking part of a detection reads from files.
struct FileFacts {
    platform: Platform,
    signals: Vec<reporunner_proto::common::v1::PlatformSignal>,
    host: reporunner_proto::common::v1::HostInfo,
    model_present: bool,
}

fn read_file_facts(root: &Path, env: &HashMap<String, String>, model_dir: Option<&Path>) -> FileFacts {
    let (platform, signals) = platform::detect_platform(root, env);
    FileFacts {
        platform,
        signals,
        host: host::host_info(root),
        model_present: model_dir.is_some_and(host::embedding_model_present),
    }
}

impl EnvDetector for Detector {
    async fn detect(&self, options: DetectOptions) -> Result<(Environment, Recommendations)> {
        let started = Instant::now();
        let root = self.config.root.clone();
        tokio::fs::metadata(&root)
            .await
            .map_err(|source| EnvDetectorError::Io {
                path: root.clone(),
                source,
            })?;

        let env = self.env_snapshot();
        let model_dir = self.config.model_dir.clone();
        let files = tokio::task::spawn_blocking(move || read_file_facts(&root, &env, model_dir.as_deref()));
        let tools = self.tool_scan(options.refresh);
        let registries = async {
            if options.skip_registries {
                Vec::new()
            } else {
                self.registry_probe.probe(options.refresh).await
            }
        };
        let (files, tools, registries) = tokio::join!(files, tools, registries);
        let files = files?;

        let (platform, platform_overridden) = match options.platform_override {
            Some(platform) if platform != Platform::Unspecified => (platform, true),
            _ => (files.platform, false),
        };
        let environment = Environment {
            platform: platform as i32,
            platform_overridden,
            platform_signals: files.signals,
            host: Some(files.host),
            gpus: tools.gpus,
            toolchains: tools.toolchains,
            registries,
            detected_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        };
        let recommendations = recommend::recommend_with_model_dir(
            &environment,
            files.model_present,
            self.config.model_dir.as_deref(),
        );
        tracing::debug!(
            platform = platform.as_str_name(),
            overridden = platform_overridden,
            toolchains = environment.toolchains.len(),
            gpus = environment.gpus.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "environment detected"
        );
        Ok((environment, recommendations))
    }
}
