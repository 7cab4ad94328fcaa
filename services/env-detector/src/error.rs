//! The env-detector's errors and their gRPC classes.

use std::path::PathBuf;

use reporunner_error::{ErrorKind, ServiceError};

/// What can go wrong in a detection.
///
/// Almost every probe is best effort (a missing file or tool is a fact about
/// the host, not an error); these are the failures that stop a detection.
#[derive(Debug, thiserror::Error)]
pub enum EnvDetectorError {
    /// The caller named a platform that does not exist.
    #[error(
        "platform {0} is not a known platform; use one of local, container, kubernetes, colab, aws, gcp, azure"
    )]
    InvalidPlatform(String),
    /// The configuration cannot work.
    #[error("invalid env-detector configuration: {0}")]
    InvalidConfig(String),
    /// A file the detection cannot do without could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking detection task panicked or was cancelled.
    #[error("a detection task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

impl ServiceError for EnvDetectorError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidPlatform(_) => ErrorKind::InvalidArgument,
            Self::InvalidConfig(_) => ErrorKind::FailedPrecondition,
            Self::Io { .. } | Self::Task(_) => ErrorKind::Internal,
        }
    }
}

/// The env-detector's result.
pub type Result<T, E = EnvDetectorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn invalid_platform_is_the_callers_mistake_and_says_so() {
        let status = EnvDetectorError::InvalidPlatform("42".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("42"));
        assert!(status.message().contains("kubernetes"));
    }

    #[test]
    fn io_errors_are_internal_and_hide_the_path() {
        let err = EnvDetectorError::Io {
            path: "/secret/place".into(),
            source: std::io::Error::other("denied"),
        };
        let status = err.to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("/secret/place"));
    }
}
