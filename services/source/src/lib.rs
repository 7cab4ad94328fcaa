//! The source agent: brings a repository into a content-addressed workspace
//! owned by a user, from a git URL, a local path or an uploaded archive.
//!
//! The domain lives behind [`SourceAgent`] (implemented by [`Source`]);
//! [`grpc`] is a thin adapter. Workspaces live at
//! `<root>/<owner_id>/<hex digest>` and are built in `<root>/.staging` first.
#![forbid(unsafe_code)]

pub mod config;
pub mod digest;
pub mod error;
mod extract;
/// Entry points of the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod grpc;
pub mod local;
pub mod metrics;
mod source;
mod tree;
pub mod workspace;

use std::path::PathBuf;

pub use config::{Limits, LimitsConfig, SourceConfig};
pub use error::{Result, SourceError};
use futures::Stream;
pub use grpc::SourceGrpc;
use reporunner_proto::{
    agents::source::v1::{ArchiveFormat, FetchLimits},
    common::v1::Workspace,
};
pub use source::Source;

/// How the message of an unreachable git host begins, wherever it is
/// passed on (a run's error): `the git host HOST cannot be reached: ...`.
pub const HOST_UNREACHABLE: &str = "the git host ";

/// Where a fetch takes its files from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A shallow clone of `url` at `reference` (branch, tag or full commit id;
    /// empty for the default branch).
    Git { url: String, reference: String },
    /// A copy of a directory on this host.
    Local { path: PathBuf },
}

/// One fetch.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchSpec {
    pub owner_id: String,
    pub source: SourceSpec,
    /// As sent by the orchestrator; zero fields take the configured defaults.
    pub limits: Option<FetchLimits>,
}

/// The header of one upload.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadSpec {
    pub owner_id: String,
    /// `Unspecified` means: recognise it by its first bytes.
    pub format: ArchiveFormat,
    /// The name the user gave, for messages and the origin only.
    pub file_name: String,
    pub limits: Option<FetchLimits>,
}

/// A workspace, and whether it existed already.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    pub workspace: Workspace,
    pub reused: bool,
}

/// The source agent's domain.
pub trait SourceAgent: Send + Sync + 'static {
    /// Clones or copies into a workspace.
    fn fetch(&self, request: FetchSpec) -> impl Future<Output = Result<Fetched>> + Send;

    /// Receives an archive as a stream of chunks and extracts it safely.
    fn upload<S>(&self, header: UploadSpec, chunks: S) -> impl Future<Output = Result<Fetched>> + Send
    where
        S: Stream<Item = Result<Vec<u8>>> + Send;
}
