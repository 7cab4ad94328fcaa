//! The provisioner agent's errors and their gRPC classes.

use std::time::Duration;

use reporunner_error::{ErrorKind, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The request is malformed: run id, run dir, kind, resource id.
    #[error("{0}")]
    InvalidRequest(String),
    /// The kind cannot be supplied on this host (no server binary, ...).
    #[error("{0}")]
    NotAvailable(String),
    /// Too many private servers, or too many resources for one run.
    #[error("{0}; release some first")]
    TooMany(String),
    /// The configured shared server does not answer and reuse was required.
    #[error("{0}")]
    Unreachable(String),
    /// A connect, query or process start ran past its deadline.
    #[error("{0} did not finish within {1:?}")]
    Timeout(String, Duration),
    /// The configuration cannot work.
    #[error("invalid provisioner configuration: {0}")]
    InvalidConfig(String),
    /// A server refused a statement or a command failed (details logged).
    #[error("{0}")]
    Backend(String),
    /// Reading or writing the agent's own files.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ProvisionError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl ServiceError for ProvisionError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidRequest(_) => ErrorKind::InvalidArgument,
            Self::NotAvailable(_) | Self::InvalidConfig(_) => ErrorKind::FailedPrecondition,
            Self::TooMany(_) => ErrorKind::ResourceExhausted {
                retry_after: Some(Duration::from_secs(30)),
            },
            Self::Unreachable(_) => ErrorKind::Unavailable,
            Self::Timeout(..) => ErrorKind::DeadlineExceeded,
            Self::Backend(_) | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = ProvisionError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn classes_reach_the_caller() {
        let status = ProvisionError::InvalidRequest("run_id is empty".into()).to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("run_id"));
        let status = ProvisionError::NotAvailable("mongod is not installed".into()).to_status();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("mongod"));
        let status = ProvisionError::Backend("role \"x\" password 0123".into()).to_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("0123"), "internal details stay inside");
    }
}
