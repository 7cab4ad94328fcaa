//! The source agent's errors and their gRPC classes.

use std::path::PathBuf;

use reporunner_error::{ErrorKind, ServiceError};

/// What can go wrong while bringing a repository into a workspace.
///
/// Client mistakes (bad ids, unsafe archives, limits) carry messages a user
/// can act on; I/O failures on our side stay internal.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A request field is missing or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// An archive entry, a copied file or a checkout entry is unsafe.
    #[error("{what} {entry:?} {reason}")]
    UnsafeEntry {
        /// "archive entry" or "file".
        what: &'static str,
        entry: String,
        reason: String,
    },
    /// A size, file-count or compression-ratio limit was reached.
    #[error("{what} {entry:?} {reason}")]
    LimitExceeded {
        what: &'static str,
        entry: String,
        reason: String,
    },
    /// The archive is not something this agent can read.
    #[error("{0}")]
    BadArchive(String),
    /// A local path does not exist.
    #[error("local path {} does not exist", .0.display())]
    PathNotFound(PathBuf),
    /// This agent copies no local path at all.
    #[error(
        "local paths are disabled on this server (source.allowed_local_roots is empty); give a git URL or upload an archive"
    )]
    LocalPathsDisabled,
    /// A local path may not be read by this agent.
    #[error("local path {} is not allowed: {reason}", path.display())]
    PathNotAllowed { path: PathBuf, reason: String },
    /// The git repository or ref does not exist (or is not accessible).
    #[error("{0}")]
    GitNotFound(String),
    /// The git remote could not be reached or the clone failed.
    #[error("{0}")]
    GitUnavailable(String),
    /// The network path to the git host is not there (no DNS answer, no
    /// route, refused, timed out): this agent works, the remote it was sent
    /// to does not answer from this host. The message starts with
    /// [`HOST_UNREACHABLE`](crate::HOST_UNREACHABLE) and names the host.
    #[error("the git host {host} cannot be reached: {detail}")]
    GitHostUnreachable { host: String, detail: String },
    /// The fetch did not finish within its time limit.
    #[error("the fetch did not finish within {0} seconds")]
    Timeout(u64),
    /// The upload stream broke off.
    #[error("the upload stream failed: {0}")]
    UploadAborted(String),
    /// The configuration cannot work.
    #[error("invalid source configuration: {0}")]
    InvalidConfig(String),
    /// A file operation on our side failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("a blocking source task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

impl SourceError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }
}

impl ServiceError for SourceError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_)
            | Self::UnsafeEntry { .. }
            | Self::LimitExceeded { .. }
            | Self::BadArchive(_) => ErrorKind::InvalidArgument,
            Self::PathNotFound(_) | Self::GitNotFound(_) => ErrorKind::NotFound,
            Self::PathNotAllowed { .. } => ErrorKind::PermissionDenied,
            Self::GitUnavailable(_) => ErrorKind::Unavailable,
            Self::Timeout(_) => ErrorKind::DeadlineExceeded,
            Self::UploadAborted(_) => ErrorKind::Aborted,
            Self::InvalidConfig(_) | Self::LocalPathsDisabled | Self::GitHostUnreachable { .. } => {
                ErrorKind::FailedPrecondition
            }
            Self::Io { .. } | Self::Spawn { .. } | Self::Task(_) => ErrorKind::Internal,
        }
    }
}

/// The source agent's result.
pub type Result<T, E = SourceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn unsafe_entries_name_the_entry() {
        let err = SourceError::UnsafeEntry {
            what: "archive entry",
            entry: "../../etc/passwd".into(),
            reason: "escapes the workspace".into(),
        };
        let status = err.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            r#"archive entry "../../etc/passwd" escapes the workspace"#
        );
    }

    #[test]
    fn io_errors_are_internal_and_hide_the_path() {
        let err = SourceError::io("write", "/srv/ws/.staging/x", std::io::Error::other("disk full"));
        let status = err.to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/srv/ws"));
    }

    #[test]
    fn timeouts_and_missing_paths_have_their_codes() {
        assert_eq!(SourceError::Timeout(3).to_status().code(), Code::DeadlineExceeded);
        let status = SourceError::PathNotFound("/no/such".into()).to_status();
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("/no/such"));
    }
}
