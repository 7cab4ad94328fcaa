//! The tester agent's errors and their gRPC classes. Tests that fail are
//! not an error: they are a FAILED outcome. These are the requests that
//! cannot be run at all.

use reporunner_error::{ErrorKind, ServiceError};
use reporunner_sandbox::SandboxError;

#[derive(Debug, thiserror::Error)]
pub enum TesterError {
    /// The request is malformed (no test command, a path outside the
    /// workspace, a bad env name).
    #[error("{0}")]
    InvalidArgument(String),
    /// The workspace or working directory does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The configuration cannot work.
    #[error("invalid tester configuration: {0}")]
    InvalidConfig(String),
    /// The sandbox is required and cannot be used.
    #[error("the tests cannot run: {0}")]
    Sandbox(String),
    /// The process could not be started or watched.
    #[error("the test command could not be run: {0}")]
    Spawn(String),
}

impl From<SandboxError> for TesterError {
    fn from(err: SandboxError) -> Self {
        match err {
            SandboxError::Unavailable(why) => Self::Sandbox(why),
            err @ (SandboxError::Prepare { .. } | SandboxError::Spawn { .. }) => Self::Spawn(err.to_string()),
        }
    }
}

impl ServiceError for TesterError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::InvalidConfig(_) | Self::Sandbox(_) => ErrorKind::FailedPrecondition,
            Self::Spawn(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = TesterError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn bad_requests_are_the_callers_mistake() {
        let status = TesterError::InvalidArgument("component api has no test command".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("no test command"));
        assert_eq!(
            TesterError::NotFound("no workspace".into()).to_status().code(),
            Code::NotFound
        );
        assert_eq!(
            TesterError::Sandbox("bubblewrap missing".into())
                .to_status()
                .code(),
            Code::FailedPrecondition
        );
    }
}
