//! The analyzer agent: reads a workspace once (a bounded, .gitignore-aware
//! walk into an in-memory index), runs one detector per ecosystem and per
//! kind of evidence over it, and decides a [`RunPlan`]: components with
//! runtime, package manager, install/build/start/test commands, port, env
//! vars and backing services, each decision carrying its evidence.
//!
//! The domain lives behind [`Analyzer`] ([`RepoAnalyzer`] is the
//! implementation); [`grpc`] is a thin adapter; [`export::export_plan`]
//! renders a plan as JSON, a Dockerfile, a compose file, a devcontainer.json
//! or a Procfile.
#![forbid(unsafe_code)]

pub mod config;
mod detect;
mod draft;
pub mod error;
pub mod export;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod index;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

pub use config::AnalyzerConfig;
pub use detect::detector_passes;
pub use error::{AnalyzerError, Result};
pub use export::{ExportFormat, ExportedFile, export_plan};
use reporunner_proto::common::v1::{Environment, RunPlan};

/// The `generator` field of every plan this crate makes.
pub const GENERATOR: &str = concat!("reporunner-analyzer ", env!("CARGO_PKG_VERSION"));

/// The analyzer's domain.
pub trait Analyzer: Send + Sync + 'static {
    /// Decides how to run the workspace at `path`. `environment`, when
    /// given, lets the plan prefer runtime versions the host has.
    fn analyze(
        &self,
        path: PathBuf,
        environment: Option<Environment>,
    ) -> impl std::future::Future<Output = Result<RunPlan>> + Send;

    /// Renders a plan in another format.
    fn export(&self, plan: &RunPlan, format: ExportFormat) -> Result<ExportedFile> {
        export_plan(plan, format)
    }
}

/// The analyzer: detection runs on the blocking pool.
#[derive(Clone, Debug, Default)]
pub struct RepoAnalyzer {
    config: Arc<AnalyzerConfig>,
}

impl RepoAnalyzer {
    /// An analyzer with validated settings.
    pub fn new(config: AnalyzerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &AnalyzerConfig {
        &self.config
    }
}

impl Analyzer for RepoAnalyzer {
    async fn analyze(&self, path: PathBuf, environment: Option<Environment>) -> Result<RunPlan> {
        let config = Arc::clone(&self.config);
        tokio::task::spawn_blocking(move || analyze_dir(&path, environment.as_ref(), &config)).await?
    }
}

/// Fails unless `path` is an existing absolute directory.
fn check_workspace(path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    if shown.is_empty() {
        return Err(AnalyzerError::InvalidPath(shown, "the path is empty"));
    }
    if !path.is_absolute() {
        return Err(AnalyzerError::InvalidPath(shown, "the path must be absolute"));
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Err(AnalyzerError::NotFound(shown)),
    };
    if !meta.is_dir() {
        return Err(AnalyzerError::NotADirectory(shown));
    }
    Ok(())
}

/// Analyzes the workspace at `path` synchronously (no runtime needed).
///
/// Fails only when `path` is not an existing absolute directory; everything
/// wrong inside the workspace becomes a warning in the plan.
pub fn analyze_dir(
    path: &Path,
    environment: Option<&Environment>,
    config: &AnalyzerConfig,
) -> Result<RunPlan> {
    check_workspace(path)?;
    let started = Instant::now();
    let deadline = started + config.time_budget();
    let index = index::RepoIndex::build(path, config, deadline);
    let mut plan = detect::plan(&index, environment, config);
    plan.generator = GENERATOR.to_owned();
    tracing::debug!(
        files = index.file_count(),
        components = plan.components.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "analysis finished"
    );
    Ok(plan)
}
