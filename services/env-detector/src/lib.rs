//! The env-detector agent: where the host runs (platform), what it has (OS,
//! CPUs, memory, GPUs, toolchains, reachable registries) and what it can
//! afford (recommendations).
//!
//! The domain lives behind [`EnvDetector`]; [`grpc`] is a thin adapter.
#![forbid(unsafe_code)]

pub mod config;
mod detector;
pub mod error;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod host;
pub mod platform;
pub mod recommend;
pub mod registries;
pub mod toolchains;

pub use config::EnvDetectorConfig;
pub use detector::Detector;
pub use error::{EnvDetectorError, Result};

use reporunner_proto::common::v1::{Environment, Platform, Recommendations};

/// What a caller may ask of a detection.
#[derive(Clone, Debug, Default)]
pub struct DetectOptions {
    /// Report this platform instead of the detected one (signals are kept).
    pub platform_override: Option<Platform>,
    /// Leave the registry probes out.
    pub skip_registries: bool,
    /// Ignore cached toolchain and registry results.
    pub refresh: bool,
}

/// The env-detector's domain: one operation.
pub trait EnvDetector: Send + Sync + 'static {
    fn detect(
        &self,
        options: DetectOptions,
    ) -> impl std::future::Future<Output = Result<(Environment, Recommendations)>> + Send;
}
