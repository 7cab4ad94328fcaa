//! Entry points of the fuzz targets in `fuzz/` and of their corpus replay in
//! `tests/fuzz_replay.rs`: each takes arbitrary bytes, runs the code a
//! request runs, and panics only on a bug.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use prost::Message;
use reporunner_proto::agents::dependency::v1::InstallRequest;
use tokio::sync::{Mutex, Semaphore};

use crate::{LocalInstaller, config::DependencyConfig, python::ProbeCache};

/// An installer as configured by default, without its directories (a
/// request is checked without them) and without a sandbox.
fn installer() -> LocalInstaller {
    let data = Path::new("/nonexistent/data");
    let defaults = DependencyConfig::default();
    let config = DependencyConfig {
        cache_dir: data.join(&defaults.cache_dir),
        tools_dir: data.join(&defaults.tools_dir),
        env_dir: data.join(&defaults.env_dir),
        ..defaults
    };
    LocalInstaller {
        slots: Arc::new(Semaphore::new(config.max_concurrent_installs)),
        config: Arc::new(config),
        tool_lock: Arc::new(Mutex::new(())),
        probes: Arc::new(ProbeCache::new(Duration::from_secs(300))),
        sandbox: None,
        workspace_roots: Arc::new(Vec::new()),
    }
}

/// `path` is `root` or below it, without climbing back out.
fn below(path: &Path, root: &Path) -> bool {
    path.starts_with(root) && !path.components().any(|c| c == std::path::Component::ParentDir)
}

/// Decodes `data` as an `InstallRequest` and turns it into an install job
/// as `Install` does (names, the workspace and the component's directory,
/// limits, the owner's caches, the backing variables), without running it.
/// Whatever the request says, the job's directories stay where they belong.
pub fn validate_request(data: &[u8]) {
    let Ok(request) = InstallRequest::decode(data) else {
        return;
    };
    let installer = installer();
    let Ok(job) = installer.prepare(request) else {
        return;
    };
    let config = &installer.config;
    assert!(
        below(&job.dir, &job.workspace),
        "the component's directory {} is outside the workspace {}",
        job.dir.display(),
        job.workspace.display()
    );
    let runs: PathBuf = config.env_dir.join(&job.run_id);
    assert!(
        below(&job.env_root, &config.env_dir) && job.env_root.starts_with(&runs) && job.env_root != runs,
        "the install environment {} is outside the run's {}",
        job.env_root.display(),
        runs.display()
    );
    assert!(
        below(&job.cache_root, &config.cache_dir),
        "the cache {} is outside {}",
        job.cache_root.display(),
        config.cache_dir.display()
    );
    if let Some(owner) = &job.owner {
        assert_eq!(job.cache_root, config.cache_dir.join("owners").join(owner));
    }
}
