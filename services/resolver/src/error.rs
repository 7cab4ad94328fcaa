//! The resolver's errors and their gRPC classes. A failure the resolver does
//! not recognise is not an error: it is an empty response.

use reporunner_error::{ErrorKind, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// The request carries nothing to diagnose, or too much.
    #[error("{0}")]
    InvalidRequest(String),
    /// The configuration cannot work.
    #[error("invalid resolver configuration: {0}")]
    InvalidConfig(String),
    /// The advisor's HTTP client could not be built.
    #[error("advisor client: {0}")]
    Advisor(String),
    /// The blocking rule matcher died.
    #[error("rule matching failed: {0}")]
    Matcher(String),
}

impl ServiceError for ResolverError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::InvalidConfig(_) => ErrorKind::FailedPrecondition,
            Self::Advisor(_) | Self::Matcher(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = ResolverError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn empty_requests_are_the_callers_mistake_and_internals_do_not_leak() {
        let status = ResolverError::InvalidRequest("no log tail and no exit code".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("no log tail"));
        let status = ResolverError::Matcher("task 7 panicked at src/x.rs".into()).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("src/x.rs"));
    }
}
