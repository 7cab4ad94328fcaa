//! The dependency agent's errors and their gRPC classes. An install that
//! fails (a resolver conflict, a timeout, a disk limit, no interpreter for
//! the constraint) is not an error: it is a FAILED `InstallResult` with the
//! tool's own output. These are the requests that cannot be attempted.

use reporunner_error::{ErrorKind, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum DependencyError {
    /// The request is malformed: no component, a relative or missing
    /// workspace path, a component path that leaves the workspace.
    #[error("{0}")]
    InvalidRequest(String),
    /// The component's language has no installer here.
    #[error("installing {0} components is not supported by the dependency agent")]
    Unsupported(String),
    /// Too many installs are running.
    #[error("{0} installs are running, the most this agent allows; retry later")]
    Busy(usize),
    /// The configuration cannot work.
    #[error("invalid dependency configuration: {0}")]
    InvalidConfig(String),
    /// The agent's own directories cannot be prepared.
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl DependencyError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl ServiceError for DependencyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::Unsupported(_) => ErrorKind::Unimplemented,
            Self::Busy(_) => ErrorKind::ResourceExhausted {
                retry_after: Some(std::time::Duration::from_secs(10)),
            },
            Self::InvalidConfig(_) => ErrorKind::FailedPrecondition,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = DependencyError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn bad_requests_are_the_callers_mistake_and_io_stays_private() {
        let status = DependencyError::InvalidRequest("workspace_path must be absolute".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("absolute"));
        assert_eq!(
            DependencyError::Busy(2).to_status().code(),
            Code::ResourceExhausted
        );
        let io = DependencyError::io(std::path::Path::new("/secret/dir"), std::io::Error::other("boom"))
            .to_status();
        assert_eq!(io.code(), Code::Internal);
        assert!(!io.message().contains("/secret"));
    }
}
